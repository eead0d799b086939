# Sourced by train.sh and test.sh: build, and make sure wgpu can see at least one adapter.
cargo build --release --quiet
if ./target/release/gpu-train devices 2>/dev/null | grep -q '^no GPU adapter found'; then
    echo "no GPU adapter: installing the software Vulkan adapter (mesa-vulkan-drivers)" >&2
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "cannot install it here (needs root and apt-get); run with --cpu or install a Vulkan driver" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mesa-vulkan-drivers
fi
