#!/usr/bin/env bash
# Issue 28: the lab's rows for the calibrated α-β-γ model, one after another in one sitting.
# Each row: its own calibration (α, γ fitted to allreduce-bench --mpi between h1 and h2), then
# a CPU job of 20 steps; `gpu-train network` predicts each traced step's sync.
cd "$(dirname "$0")/../.."
job="-- --cpu --threads 1 --limit 2560 --epochs 1"
row() {
    local name=$1; shift
    echo "=== $name: scripts/lab $*"
    scripts/lab "$@" --out /tmp/lab-rows/$name $job 2>&1 |
        grep -E "^lab: (routed|2 hosts|4 hosts|[0-9]+ hosts)|α =|β =|over these steps: predicted|busiest uplink|spine [0-9]: "
}
lscpu | grep -E "Model name|^CPU family|^Model:"
row 2h-100m --hosts 2 --host-rate 100mbit
row 2h-1g --hosts 2 --host-rate 1gbit
row 2h-10g --hosts 2 --host-rate 10gbit
row 4h-1g --hosts 4 --host-rate 1gbit
row 2h-100m-straggler --hosts 2 --host-rate 100mbit --slow-host 2=50mbit
row 4h-2l-1s-1g --hosts 4 --leaves 2 --spines 1 --host-rate 1gbit --uplink-rate 1gbit
row 4h-2l-2s-l4-1g --hosts 4 --leaves 2 --spines 2 --hash l4 --host-rate 1gbit --uplink-rate 1gbit
row 4h-2l-2s-l3-1g --hosts 4 --leaves 2 --spines 2 --hash l3 --host-rate 1gbit --uplink-rate 1gbit
row 4h-2l-2s-l4-100m --hosts 4 --leaves 2 --spines 2 --hash l4 --host-rate 100mbit --uplink-rate 100mbit
