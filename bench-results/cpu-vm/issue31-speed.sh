#!/usr/bin/env bash
# Issue 31's speed check: lavapipe's one-replica epoch with the step in 9 dispatches (main before
# issue 31, at 89423e5) and in 5 (head.wgsl, backward.wgsl), the two binaries alternately on an
# otherwise idle machine. Each first searches its kernels afresh with no time bound, in a cache
# of its own. Bundled MNIST sample (10,000 images), batch 64; 3 timed epochs after 1 warm-up
# (the median), staged and resident, ROUNDS runs each (default 5). A second pass with GALLIUM_OVERRIDE_CPU_CAPS=avx
# (llvmpipe's code for a CPU without AVX2/AVX-512) when called with "avx" as third argument.
# Each line: binary, path, epoch seconds, test accuracy %.
set -euo pipefail
before=${1:-/tmp/gpu-train-before}
after=${2:-/tmp/gpu-train-after}
export WAYLAND_DISPLAY=/dev/null/no-display EGL_PLATFORM=surfaceless
common=(bench --replicas 0 --no-f16 --no-profile --gpu-only)
export XDG_CACHE_HOME=$(mktemp -d)
passes=("")
[ "${3:-}" = avx ] && passes+=(avx)
for caps in "${passes[@]}"; do
    if [ -n "$caps" ]; then export GALLIUM_OVERRIDE_CPU_CAPS=$caps; echo "# GALLIUM_OVERRIDE_CPU_CAPS=$caps"; fi
    for b in "$before" "$after"; do
        GPU_TRAIN_SEARCH_SECONDS=600 "$b" "${common[@]}" --epochs 1 --warmup 0 >/dev/null 2>&1
        "$b" --epochs 1 --limit 640 -v 2>&1 | grep -o 'matmul per product: [^(]*' | sed "s|^|$(basename "$b") |"
    done
    for i in $(seq ${ROUNDS:-5}); do
        for b in "$before" "$after"; do
            "$b" "${common[@]}" --epochs 3 --warmup 1 2>/dev/null |
                awk -v b="$(basename "$b")" '/^gpu staged/{print b, "staged", $9, $12} /^gpu resident/{print b, "resident", $9, $12}'
        done
    done
done
