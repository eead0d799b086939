#!/usr/bin/env bash
# Runs ON a lent GPU machine, from the repository root, with .device/ (scripts/device-prepare.sh)
# and .gl/ (the Vulkan loader .debs, see BENCHMARKS.md) carried along. It checks the GPU against
# the CPU (kernel twins on random inputs, weights after K steps, epoch accuracy), then benchmarks,
# printing a short table last. Results go to $OUT (or /tmp/device-out). Every part has its own
# time limit, so the whole ends within 8 minutes on an H200 (issue 31).
set -uo pipefail
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT"
if ! ldconfig -p | grep -q libvulkan; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
D=.device
if ! $D/gpu-train devices 2>/dev/null | grep -q '^0: '; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; $D/gpu-train devices; } 2>&1 | tee "$OUT/devices.txt"
export GPU_TRAIN_REQUIRE_GPU=1
# The start-up search on a hardware adapter (issue 31): let the first run finish it (compiles are
# fast on a real GPU), and print what it picked and how long each pick took.
export GPU_TRAIN_SEARCH_SECONDS=60
timeout 120 $D/gpu-train --epochs 1 -v 2>&1 | grep -E 'engine|note|matmul per product|epoch|final' | tee "$OUT/search.txt"
timeout 90 $D/kernels --nocapture --test-threads 1 2>&1 | grep -E 'worst|test result|panicked|FAILED' | tee "$OUT/kernels.txt"
timeout 90 $D/training gpu --nocapture --test-threads 1 2>&1 | grep -E 'worst|GPU|test result|panicked|FAILED' | tee "$OUT/training.txt"
[ -x $D/kernels-bench ] && timeout 60 $D/kernels-bench 2>&1 | grep -v XDG | tee "$OUT/kernels-bench.txt"
timeout 60 $D/gpu-train --epochs 10 2>&1 | grep -E 'engine|epoch|final' | tee "$OUT/train-mnist-gpu.txt"
timeout 60 $D/gpu-train --epochs 5 --resident --data-dir $D/fashion 2>&1 | grep -E 'engine|epoch|final' | tee "$OUT/train-fashion-gpu.txt"
# The CPU baseline on this host at several thread counts (epoch 3 of 3, Fashion-MNIST).
for t in 1 2 4 8 16; do
    echo "threads $t: $(timeout 30 $D/gpu-train --cpu --threads $t --epochs 3 --data-dir $D/fashion 2>/dev/null | grep 'epoch  3/3')"
done | tee "$OUT/cpu-threads.txt"
# Published peaks (FP32 without tensor cores, HBM bandwidth) for the kernels' floors.
case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)" in
    *H200*) peaks="--peak-tflops 67 --peak-tbs 4.8" ;;
    *H100*) peaks="--peak-tflops 67 --peak-tbs 3.35" ;;
    *) peaks="" ;;
esac
# Fashion-MNIST's 60k: staged and resident, f32 and f16, 1 and 2 replicas, then the profile
# with the card's floors.
timeout 180 $D/gpu-train bench --data-dir $D/fashion --epochs 3 --warmup 1 --replicas 1,2 $peaks --json "$OUT/bench-fashion.json" 2>&1 | grep -v XDG | tee "$OUT/bench-fashion.txt"
# Resume on the GPU is exact: resume from a mid-epoch snapshot and compare the final files.
rm -rf /tmp/snap-a /tmp/snap-b && mkdir -p /tmp/snap-b
$D/gpu-train --epochs 3 --snapshot-dir /tmp/snap-a --snapshot-every 50 --keep 100 >/dev/null 2>&1
mid=$(ls /tmp/snap-a/snapshot-*.safetensors | sed -n 5p)  # step 207: the middle of epoch 2
cp "$mid" /tmp/snap-b/
$D/gpu-train --epochs 3 --snapshot-dir /tmp/snap-b --resume 2>&1 | grep -E 'resuming|final' | tee "$OUT/resume-gpu.txt"
last=$(ls /tmp/snap-a/snapshot-*.safetensors | tail -1)
# Compare the tensors and the training state (the JSON header's key order varies between runs).
python3 - "$last" "/tmp/snap-b/$(basename "$last")" <<'PY' | tee -a "$OUT/resume-gpu.txt"
import json, struct, sys
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__")
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}, meta
(a, ma), (b, mb) = load(sys.argv[1]), load(sys.argv[2])
print("GPU resume: final tensors identical bit for bit:", a == b, "| training state identical:", ma == mb)
PY
