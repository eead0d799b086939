#!/usr/bin/env bash
# Issue 28: the lab's rows for the calibrated α-β-γ model, one after another in one sitting.
# Each row: its own calibration (α, γ fitted to allreduce-bench --mpi on the job's own ranks and
# hosts), then a CPU job; `gpu-train network` predicts each traced step's sync.
cd "$(dirname "$0")/../.."
job="-- --cpu --threads 1 --limit 2560 --epochs 1"
row() {
    local name=$1; shift
    echo "=== $name: scripts/lab $*"
    scripts/lab --out /tmp/lab-rows/$name "$@" 2>&1 |
        grep -E "^lab: ([0-9]+ hosts)|α =|β =|over these steps: predicted|busiest uplink|^ +h[0-9]+ tx .*%"
}
lscpu | grep -E "Model name|^CPU family|^Model:"
row 2h-100m --hosts 2 --host-rate 100mbit $job
row 2h-1g --hosts 2 --host-rate 1gbit $job
row 2h-10g --hosts 2 --host-rate 10gbit $job
row 4h-100m --hosts 4 --host-rate 100mbit $job
row 4h-1g --hosts 4 --host-rate 1gbit $job
row 8h-100m --hosts 8 --host-rate 100mbit $job
row 4h-100m-straggler --hosts 4 --host-rate 100mbit --slow-host 4=50mbit $job
row 4h-2l-1s-100m-2to1 --hosts 4 --leaves 2 --spines 1 --host-rate 100mbit --uplink-rate 100mbit $job
row 8h-2l-1s-100m-4to1 --hosts 8 --leaves 2 --spines 1 --host-rate 100mbit --uplink-rate 100mbit $job
row 4h-2l-1s-100m-rr-2to1 --hosts 4 --leaves 2 --spines 1 --placement rr --host-rate 100mbit --uplink-rate 100mbit $job
row 2h-100m-compute --hosts 2 --host-rate 100mbit -- --cpu --threads 1 --batch-size 1024 --limit 20480 --epochs 1 --trace-steps 2..12
row 4h-10g --hosts 4 --host-rate 10gbit $job
row 8h-1g --hosts 8 --host-rate 1gbit $job
row 8h-10g --hosts 8 --host-rate 10gbit $job
