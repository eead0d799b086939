#!/usr/bin/env bash
# Issue 28: ECMP collisions. 4 hosts round robin over 2 leaves (every ring hop crosses leaves,
# each leaf sends 2 ring flows up at once) and 2 spines at 100 Mbit/s, run again and again: the
# counters say how many ring flows shared the busiest uplink, the calibrated model predicts the
# sync for that mapping. One sitting; prints one row a run.
cd "$(dirname "$0")/../.."
lscpu | grep -E "Model name|^CPU family|^Model:"
job="-- --cpu --threads 1 --limit 2560 --epochs 1"
printf 'run\thash\tplacement\tflows on busiest uplink\tpredicted ms\tmeasured ms (last to arrive)\terror\n'
n=0
for hash in ${HASHES:-l4 l4 l4 l4 l4 l3 l3 l3}; do
    for placement in rr; do
        n=$((n + 1))
        out=$(scripts/lab --hosts 4 --leaves 2 --spines 2 --hash $hash --placement $placement \
            --host-rate 100mbit --uplink-rate 100mbit --out /tmp/ecmp-rows $job 2>&1)
        k=$(echo "$out" | awk '/ring flows/ {on = 1; next} on && /-s[0-9] (tx|rx)/ {if ($NF > m) m = $NF} END {print m + 0}')
        line=$(echo "$out" | grep "over these steps: predicted")
        p=$(echo "$line" | sed -E 's/.*predicted ([0-9.]+) ms.*/\1/')
        m=$(echo "$line" | sed -E 's/.*measured ([0-9.]+) ms.*/\1/')
        e=$(echo "$line" | sed -E 's/.*arrived last: ([-+0-9]+ %).*/\1/')
        printf '%d\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$hash" "$placement" "$k" "$p" "$m" "$e"
    done
done
