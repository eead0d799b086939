// bias_update: the bias gradient and the SGD update of a layer's biases, fused.
//
//   bias[n] = bias[n] − lr · Σ_r delta[r, n]
//
// A bias's input is the constant 1, so its gradient is the sum over the batch of its neuron's
// error term δ (already divided by the batch size by softmax_xent.wgsl).
// Shapes: delta is (rows, cols), bias is (cols). One thread: one bias.

struct Params {
    rows: u32,
    cols: u32,
    lr: f32,
    _pad: u32,
}

// 64 threads: a multiple of every GPU's SIMD width; 128 hidden biases make two workgroups.
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> delta: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= params.cols {
        return;
    }
    var sum = 0.0;
    for (var r = 0u; r < params.rows; r++) {
        sum += delta[r * params.cols + n];
    }
    bias[n] -= params.lr * sum;
}
