#!/usr/bin/env bash
# Builds gpu-train and runs it (default: train on GPU adapter 0 with the bundled MNIST sample).
# On a machine with no GPU adapter at all it first installs Mesa's software Vulkan adapter,
# lavapipe (needs root and Debian/Ubuntu's apt). Extra arguments go to gpu-train.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-adapter.sh
exec ./target/release/gpu-train "$@"
