#!/usr/bin/env bash
# The test suite, as CI runs it. GPU tests run on whatever adapter 0 is (lavapipe in CI) and,
# with GPU_TRAIN_REQUIRE_GPU=1, fail rather than skip when there is none. The MPI tests
# (tests/mpi.rs, mpirun with 2-4 ranks) need Open MPI and clang (for the mpi crate's bindings):
# installed here when missing, as root with apt. The network lab's test (tests/lab.rs:
# scripts/lab, network namespaces) needs the mpi feature, root, iproute2, ethtool, nftables
# (--loss) and util-linux (flock, setsid).
# Under CI (CI=true, as .ci/run sets it) a part of the suite that cannot be built or run is a
# failure: this exits 1 with one line saying what is missing, and the tests themselves fail
# rather than skip (tests/common: skip). Elsewhere it says what is left out and goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
MPI_PACKAGES="libopenmpi-dev openmpi-bin libclang-dev clang"
LAB_PACKAGES="iproute2 ethtool nftables"
# strace: tests/last_inputs.rs counts the write calls of an error line (one, so the lines of
# two MPI ranks cannot interleave). python3-venv: the venv of TensorBoard's reader (below).
TOOL_PACKAGES="strace python3-venv"
ci() { [ "${CI:-}" = "true" ]; }
# The packages of "$@" that dpkg does not list as installed.
missing() {
    local p out=""
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || out="$out $p"
    done
    echo "${out# }"
}
why_not_installed=""
if [ -n "$(missing $MPI_PACKAGES $LAB_PACKAGES $TOOL_PACKAGES)" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        why_not_installed="not root, so apt-get cannot install them"
    elif ! command -v apt-get >/dev/null; then
        why_not_installed="no apt-get to install them with"
    else
        log=$(mktemp)
        echo "installing Open MPI and clang for the MPI tests, iproute2 and ethtool for the lab, strace ($(missing $MPI_PACKAGES $LAB_PACKAGES $TOOL_PACKAGES); apt-get's output: $log)" >&2
        if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q $MPI_PACKAGES $LAB_PACKAGES $TOOL_PACKAGES; } >"$log" 2>&1; then
            why_not_installed="apt-get failed (its output: $log)"
        else
            rm -f "$log"
        fi
    fi
fi
FEATURES=""
mpi_missing=$(missing $MPI_PACKAGES)
if [ -z "$mpi_missing" ]; then
    FEATURES="--features mpi"
elif ci; then
    echo "scripts/test.sh: CI=true, but the MPI tests and the lab cannot be built: missing $mpi_missing (${why_not_installed:-not installed})" >&2
    exit 1
else
    echo "NOTE: the MPI tests and the lab are not built: missing $mpi_missing (${why_not_installed:-not installed})" >&2
fi
# The lab: root (or the capabilities to make network namespaces) and its tools.
lab_missing=""
for tool in ip tc ethtool nft mpirun flock setsid; do
    command -v $tool >/dev/null || lab_missing="$lab_missing $tool"
done
lab_missing=${lab_missing# }
if [ -n "$lab_missing" ]; then
    lab_problem="missing the commands $lab_missing (apt-get install iproute2 ethtool nftables openmpi-bin util-linux)"
elif ! ip netns add gpu-train-test-sh-probe 2>/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        lab_problem="not root, and without CAP_NET_ADMIN and CAP_SYS_ADMIN no network namespace can be made"
    else
        lab_problem="root, but network namespaces cannot be made here (ip netns add failed)"
    fi
else
    ip netns delete gpu-train-test-sh-probe
    lab_problem=""
fi
if [ -n "$lab_problem" ]; then
    if ci; then
        echo "scripts/test.sh: CI=true, but the network lab's tests cannot run: $lab_problem" >&2
        exit 1
    fi
    echo "NOTE: the network lab's tests will say they skipped: $lab_problem" >&2
fi
# tests/tensorboard.rs reads --tensorboard's event files back with TensorBoard's own reader:
# the tensorboard Python package, installed with pip into a venv under target/ when missing,
# and handed to the test as GPU_TRAIN_TEST_PYTHON.
TB_VENV=target/tb-venv
TB_READER="import tensorboard.backend.event_processing.event_accumulator"
tb_problem=""
if ! "$TB_VENV/bin/python" -c "$TB_READER" >/dev/null 2>&1; then
    log=$(mktemp)
    echo "installing the tensorboard Python package into $TB_VENV for tests/tensorboard.rs (pip's output: $log)" >&2
    if { python3 -m venv "$TB_VENV" && "$TB_VENV/bin/pip" install -q tensorboard &&
        "$TB_VENV/bin/python" -c "$TB_READER"; } >"$log" 2>&1; then
        rm -f "$log"
    else
        tb_problem="python3 -m venv or pip install tensorboard failed (their output: $log)"
    fi
fi
if [ -z "$tb_problem" ]; then
    export GPU_TRAIN_TEST_PYTHON="$PWD/$TB_VENV/bin/python"
elif ci; then
    echo "scripts/test.sh: CI=true, but TensorBoard's reader for tests/tensorboard.rs cannot be installed: $tb_problem" >&2
    exit 1
else
    echo "NOTE: tests/tensorboard.rs will say it skipped: $tb_problem" >&2
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
