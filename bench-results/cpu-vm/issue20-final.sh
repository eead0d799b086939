#!/bin/bash
# Final figures for README: the build at HEAD, full searches first, one bench each way.
cd /work/main
lscpu | grep -E "Model name|^CPU family|^Model:"
for caps in "" avx; do
  if [ -n "$caps" ]; then export GALLIUM_OVERRIDE_CPU_CAPS=$caps; else unset GALLIUM_OVERRIDE_CPU_CAPS; fi
  tag=${caps:-avx512}
  export XDG_CACHE_HOME=/tmp/bf/cache4-$tag; rm -rf $XDG_CACHE_HOME
  for prec in f32 f16; do
    GPU_TRAIN_SEARCH_SECONDS=200 ./target/release/gpu-train --precision $prec --epochs 1 --limit 640 2>&1 | grep "^engine" | sed "s/^/[$tag $prec] /"
  done
  for round in 1 2; do
    echo "== $tag round $round"
    ./target/release/gpu-train bench --replicas 0 --epochs 3 --warmup 1 --no-profile 2>&1 | grep -E "^(cpu|gpu)"
  done
done
