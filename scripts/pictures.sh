#!/usr/bin/env bash
# Regenerates docs/pictures from today's code: the training curves (`gpu-train plot` of a
# metrics file) and the link-utilisation pictures (`gpu-train network` of a trace of two
# lavapipe replicas on the bundled sample). The lab's pictures (lab-*.png) come from a lab run
# as root: `scripts/lab --leaves 2 --spines 2 --hosts 4 --rate 100mbit` writes them into its
# output folder (README, "The network lab"), and this script copies them when given that
# folder: scripts/pictures.sh [LAB_OUTPUT_DIR].
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=target/release/gpu-train
out=docs/pictures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${DISPLAY:-}" ]; then
    export WAYLAND_DISPLAY=/dev/null/no-display EGL_PLATFORM=surfaceless
fi
# Training curves: 10 epochs on the CPU, a metrics record every 25 steps.
"$bin" --cpu --epochs 10 --metrics "$work/m.jsonl" --metrics-every 25 >/dev/null
"$bin" plot "$work/m.jsonl" -o "$work/plots" >/dev/null
cp "$work"/plots/{loss,accuracy}-by-{epoch,step}.{png,svg} "$out/"
# The link: two replicas on adapter 0, 32 images each, 5 traced steps after the warm-up.
"$bin" --devices 0,0 --batch-size 32 --epochs 1 --limit 2000 --trace "$work/t.json" --trace-steps 1..6 >/dev/null
for link in 1gbit 100gbit; do
    "$bin" network "$work/t.json" --link "$link" -o "$work/net-$link" >/dev/null
    cp "$work/net-$link/link-utilisation.png" "$out/link-utilisation-$link.png"
    cp "$work/net-$link/link-utilisation.svg" "$out/link-utilisation-$link.svg"
done
if [ -n "${1:-}" ]; then
    for f in "$1"/*.png; do
        case "$(basename "$f")" in
            topology.png) cp "$f" "$out/lab-4-hosts-2-leaves-topology.png" ;;
            link-heatmap.png) cp "$f" "$out/lab-link-heatmap.png" ;;
        esac
    done
fi
echo "docs/pictures regenerated:"; ls -l "$out"
