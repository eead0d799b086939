#!/usr/bin/env bash
# The test suite, as CI runs it. GPU tests run on whatever adapter 0 is (lavapipe in CI) and,
# with GPU_TRAIN_REQUIRE_GPU=1, fail rather than skip when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-adapter.sh
GPU_TRAIN_REQUIRE_GPU=1 cargo test --release
