#!/usr/bin/env bash
# Issue 30's speed check: the one-replica CPU and lavapipe epoch before the house was cleaned
# (main at 0f4db76) and after, the two binaries alternately on an otherwise idle machine, each
# warmed once first: each searches its kernels afresh on the idle machine, with no time bound
# (a pick measured while the machine was busy, as a cached one may have been, is no pick).
# Bundled MNIST sample (10,000 images), batch 64.
# Each line: the binary and its epoch time in seconds (the median of its run's timed epochs).
set -euo pipefail
before=${1:-/tmp/gpu-train-before}
after=${2:-/tmp/gpu-train-after}
export WAYLAND_DISPLAY=/dev/null/no-display EGL_PLATFORM=surfaceless
common=(bench --replicas 0 --no-f16 --no-profile)
export XDG_CACHE_HOME=$(mktemp -d)
for b in "$before" "$after"; do
    GPU_TRAIN_SEARCH_SECONDS=600 "$b" "${common[@]}" --epochs 1 --warmup 0 >/dev/null 2>&1
    "$b" --epochs 1 --limit 640 2>&1 | grep -o 'matmul per product: [^(]*' | sed "s|^|$(basename "$b") |"
done
echo "# CPU (2 threads): 20 timed epochs after 2 warm-up, 6 runs each"
for i in 1 2 3 4 5 6; do
    for b in "$before" "$after"; do
        echo "$(basename "$b") cpu $("$b" "${common[@]}" --cpu-only --epochs 20 --warmup 2 2>/dev/null | awk '/^cpu /{print $7}')"
    done
done
echo "# lavapipe: 5 timed epochs after 1 warm-up, staged and resident, 5 runs each"
for i in 1 2 3 4 5; do
    for b in "$before" "$after"; do
        "$b" "${common[@]}" --gpu-only --epochs 5 --warmup 1 2>/dev/null |
            awk -v b="$(basename "$b")" '/^gpu staged/{print b, "staged", $9} /^gpu resident/{print b, "resident", $9}'
    done
done
