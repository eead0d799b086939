#!/usr/bin/env bash
# Issue 28: TCP congestion control as a knob: the lossy and the congested rows with each of
# cubic, bbr and reno. One sitting; the sync of the rank that arrived last, and rank 0's.
cd "$(dirname "$0")/../.."
lscpu | grep -E "Model name|^CPU family|^Model:"
job="-- --cpu --threads 1 --limit 2560 --epochs 1"
for cc in cubic bbr reno; do
    for fabric in "--hosts 2 --host-rate 100mbit --loss 1" \
                  "--hosts 4 --leaves 2 --spines 1 --placement rr --host-rate 100mbit --uplink-rate 100mbit"; do
        echo "=== --cc $cc $fabric"
        scripts/lab --cc $cc $fabric --out /tmp/cc-rows $job 2>&1 |
            grep -E "over these steps: predicted|^  h1 " | sed 's/^/  /'
    done
done
