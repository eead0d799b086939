#!/bin/bash
# The serial bias sum: HEAD before it (PREV) against the working tree (NEW), alternately.
cd /work/main
NEW=./target/release/gpu-train PREV=/tmp/gpu-train-prev
lscpu | grep -E "Model name|^CPU family|^Model:"
for caps in "" avx; do
  if [ -n "$caps" ]; then export GALLIUM_OVERRIDE_CPU_CAPS=$caps; else unset GALLIUM_OVERRIDE_CPU_CAPS; fi
  tag=${caps:-avx512}
  export XDG_CACHE_HOME=/tmp/bf/cache2-$tag
  for round in 1 2; do
    for b in PREV NEW; do
      echo "== $tag $b round $round"
      ${!b} bench --replicas 0 --epochs 3 --warmup 1 2>&1 | grep -E "^(cpu|gpu)|^b1|^b2|a real staged"
    done
  done
done
