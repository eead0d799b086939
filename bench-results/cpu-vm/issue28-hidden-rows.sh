#!/usr/bin/env bash
# Issue 28, item 9: bigger gradients. 2 hosts on one switch at 1 and 10 Gbit/s, --hidden 32 to
# 2048 (the gradient 102 KB to 6.5 MB), from the latency-bound regime to the bandwidth-bound
# one; the calibrated model's crossover α/(β + γ) beside each.
cd "$(dirname "$0")/../.."
lscpu | grep -E "Model name|^CPU family|^Model:"
for rate in 1gbit 10gbit; do
    for hidden in 32 128 512 2048; do
        echo "=== $rate --hidden $hidden"
        scripts/lab --hosts 2 --host-rate $rate --out /tmp/hidden-rows -- --cpu --threads 1 \
            --limit 1280 --epochs 1 --hidden $hidden 2>&1 |
            grep -E "crossover|over these steps: predicted|^ +0 +[0-9]+ +[0-9]+ " | sed 's/^/  /'
    done
done
