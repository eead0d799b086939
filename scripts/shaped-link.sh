#!/usr/bin/env bash
# Runs a command over a real, rate-limited link: in a private network namespace (so nothing
# outside it is touched) whose loopback is shaped with tc's token bucket filter to RATE.
#
#   scripts/shaped-link.sh RATE -- COMMAND ...
#   scripts/shaped-link.sh 1gbit -- mpirun --mca btl self,tcp --mca btl_tcp_if_include lo \
#       --mca oob_tcp_if_include lo -np 2 target/release/gpu-train --mpi --cpu
#
# RATE is tc's notation: 100mbit, 1gbit, 10gbit, ... Needs root (or CAP_NET_ADMIN) for unshare
# and tc (Debian: iproute2). The namespace, and the shaping with it, disappears when COMMAND
# ends. Every byte between processes inside it crosses this one shaped loopback, so N ranks
# share RATE, as N servers behind one uplink would.
set -euo pipefail
if [ $# -lt 3 ] || [ "$2" != "--" ]; then
    echo "usage: $0 RATE -- COMMAND ...   (RATE as tc writes it: 1gbit, 10gbit, 100mbit)" >&2
    exit 2
fi
rate=$1
shift 2
for tool in unshare ip tc; do
    command -v $tool >/dev/null || { echo "$0: $tool is missing (apt-get install iproute2 util-linux)" >&2; exit 2; }
done
# The burst is the bytes the bucket may send at once (256 KB, about 2 ms at 1 Gbit/s); latency
# bounds how long a packet may queue before it is dropped.
exec unshare -n -- bash -c '
    ip link set lo up
    tc qdisc add dev lo root tbf rate "$0" burst 256kb latency 100ms
    exec "$@"
' "$rate" "$@"
