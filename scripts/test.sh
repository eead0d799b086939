#!/usr/bin/env bash
# The test suite, as CI runs it. GPU tests run on whatever adapter 0 is (lavapipe in CI) and,
# with GPU_TRAIN_REQUIRE_GPU=1, fail rather than skip when there is none. The MPI tests
# (tests/mpi.rs, mpirun with 2-4 ranks) need Open MPI and clang (for the mpi crate's bindings):
# installed here when missing, as root with apt; elsewhere they are left out, and this says so.
# The network lab's test (tests/lab.rs: scripts/lab, network namespaces) needs root, iproute2,
# ethtool and nftables (--loss); without root it says so and does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
MPI_PACKAGES="libopenmpi-dev openmpi-bin libclang-dev clang"
LAB_PACKAGES="iproute2 ethtool nftables"
# strace: tests/last_inputs.rs counts the write calls of an error line (one, so the lines of
# two MPI ranks cannot interleave).
TOOL_PACKAGES="strace"
if ! dpkg -s $MPI_PACKAGES $LAB_PACKAGES $TOOL_PACKAGES >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "installing Open MPI and clang for the MPI tests, iproute2 and ethtool for the lab, strace ($MPI_PACKAGES $LAB_PACKAGES $TOOL_PACKAGES)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q $MPI_PACKAGES $LAB_PACKAGES $TOOL_PACKAGES
    fi
fi
FEATURES=""
if dpkg -s $MPI_PACKAGES >/dev/null 2>&1; then
    FEATURES="--features mpi"
else
    echo "NOTE: Open MPI or clang is missing and cannot be installed here: the MPI tests are not built" >&2
fi
export FEATURES
source scripts/ensure-adapter.sh
# The in-process GPU tests open adapters as the binary does, but without src/main.rs's quieting
# of Mesa's look for a Wayland display: on a machine with no display each look printed "error:
# XDG_RUNTIME_DIR is invalid or not set in the environment", dozens of lines in a passing run.
# The same two settings as main.rs (a Wayland display that cannot exist, EGL's surfaceless
# platform), only where there is no display; tests/cli.rs checks the binary without them.
if [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${DISPLAY:-}" ]; then
    export WAYLAND_DISPLAY=/dev/null/no-display
    export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}"
fi
GPU_TRAIN_REQUIRE_GPU=1 cargo test --release $FEATURES
