# Sourced by train.sh and test.sh: build, and make sure wgpu can see a Vulkan adapter.
# A fresh Debian machine already has Mesa's OpenGL llvmpipe (libgl1-mesa-dri), but the Vulkan
# one, lavapipe, is faster and offers more (timestamps, f16): install it whenever wgpu finds no
# Vulkan adapter, even if a GL one exists. `gpu-train devices` lists both.
cargo build --release --quiet ${FEATURES:-}
if ! ./target/release/gpu-train devices 2>/dev/null | grep -q '\[Vulkan,'; then
    echo "no Vulkan adapter: installing the software Vulkan adapter, lavapipe (mesa-vulkan-drivers)" >&2
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "cannot install it here (needs root and apt-get); run with --cpu or install a Vulkan driver" >&2
        if ! ./target/release/gpu-train devices 2>/dev/null | grep -q '^0:'; then
            exit 1
        fi
        echo "going on with the adapters there are" >&2
    else
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q mesa-vulkan-drivers
    fi
fi
