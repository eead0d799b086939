#!/usr/bin/env bash
# The MPI step split (compute / all-reduce / update per step) for 1, 2 and 4 ranks over shared
# memory, TCP on loopback, and a loopback shaped to 10 and 1 Gbit/s (scripts/shaped-link.sh),
# CPU replicas, one thread each, batch 64 per rank, 3 epochs of 2,000 images (the last epoch's
# line is kept). Needs a build with --features mpi, Open MPI, and root for the shaped link.
# Output: one line per run, for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bin=$PWD/target/release/gpu-train
train=(--mpi --cpu --threads 1 --epochs 3 --limit 2000)
tcp=(--mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo)
run() { # LABEL RANKS [PREFIX ...] :: MPIRUN-ARGS
    local label=$1 np=$2; shift 2
    local prefix=()
    while [ "$1" != "::" ]; do prefix+=("$1"); shift; done
    shift
    local line
    line=$("${prefix[@]}" mpirun --oversubscribe -np "$np" "$@" "$bin" "${train[@]}" 2>/dev/null | grep '^epoch  3/3')
    echo "$label, $np rank(s): $line"
}
for np in 1 2 4; do
    run "shared memory" $np :: --mca btl self,vader
    run "TCP loopback" $np :: "${tcp[@]}"
    run "shaped 10gbit" $np scripts/shaped-link.sh 10gbit -- :: "${tcp[@]}"
    run "shaped 1gbit" $np scripts/shaped-link.sh 1gbit -- :: "${tcp[@]}"
done
