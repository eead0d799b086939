#!/bin/bash
# f16 search with texture members: full search log, then bench (NEW only; OLD figures from run.sh).
cd /work/main
NEW=./target/release/gpu-train
lscpu | grep -E "Model name|^CPU family|^Model:"
for caps in "" avx; do
  if [ -n "$caps" ]; then export GALLIUM_OVERRIDE_CPU_CAPS=$caps; else unset GALLIUM_OVERRIDE_CPU_CAPS; fi
  tag=${caps:-avx512}
  export XDG_CACHE_HOME=/tmp/bf/cache2-$tag; rm -rf $XDG_CACHE_HOME
  for prec in f32 f16; do
    GPU_TRAIN_SEARCH_SECONDS=200 RUST_LOG=gpu_train=debug $NEW --device 0 --precision $prec --epochs 1 --limit 640 2>&1 | grep -E "^engine|search:" | sed "s/^/[$tag $prec] /"
  done
  for round in 1 2; do
    echo "== $tag NEW round $round"
    $NEW bench --replicas 0 --epochs 3 --warmup 1 --no-profile 2>&1 | grep -E "^(cpu|gpu)"
  done
done
