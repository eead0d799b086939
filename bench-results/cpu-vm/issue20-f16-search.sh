#!/bin/bash
# f16 search, before/after, AVX-512 and masked; alternating binaries.
cd /work/main
NEW=./target/release/gpu-train OLD=/tmp/gpu-train-old
lscpu | grep -E "Model name|^CPU family|^Model:" 
for caps in "" avx; do
  if [ -n "$caps" ]; then export GALLIUM_OVERRIDE_CPU_CAPS=$caps; else unset GALLIUM_OVERRIDE_CPU_CAPS; fi
  tag=${caps:-avx512}
  for b in NEW OLD; do
    export XDG_CACHE_HOME=/tmp/bf/cache-$b-$tag; rm -rf $XDG_CACHE_HOME
    for prec in f32 f16; do
      GPU_TRAIN_SEARCH_SECONDS=200 ${!b} --device 0 --precision $prec --epochs 1 --limit 640 2>&1 | grep "^engine" | sed "s/^/[$tag $b $prec warm-up] /"
    done
  done
  for round in 1 2; do
    for b in NEW OLD; do
      export XDG_CACHE_HOME=/tmp/bf/cache-$b-$tag
      echo "== $tag $b round $round"
      ${!b} bench --replicas 0 --epochs 3 --warmup 1 --no-profile 2>&1 | grep -E "^(cpu|gpu)"
    done
  done
done
