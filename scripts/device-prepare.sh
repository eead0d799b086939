#!/usr/bin/env bash
# Run HERE (the build machine) before scripts/device-check.sh runs on a lent GPU machine, which
# has no network and no crates: builds, strips and copies into .device/ (git-ignored) the binary,
# the GPU test binaries, and Fashion-MNIST (60k images) for the full-size benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .device && mkdir -p .device/fashion
cargo build --release --quiet
cp target/release/gpu-train .device/
for t in kernels training; do
    exe=$(cargo test --release --no-run --test "$t" 2>&1 | sed -n "s/.*Executable tests\/$t.rs (\(.*\))/\1/p")
    cp "$exe" ".device/$t"
done
bench=$(cargo bench --no-run --bench kernels 2>&1 | sed -n 's/.*Executable benches\/kernels.rs (\(.*\))/\1/p')
cp "$bench" .device/kernels-bench
strip .device/gpu-train .device/kernels .device/training .device/kernels-bench
cp /usr/share/datasets/fashion-mnist/*.gz .device/fashion/
du -sh .device
