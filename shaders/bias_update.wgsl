// bias_update: a layer's bias gradient, or (fused) its SGD update.
//
//   out[n] = alpha · Σ_r f32(delta[r, n])  (+ beta · out[n])
//   gradient only (the data-parallel step):  alpha = 1,   beta = 0  → out = ∂loss/∂bias
//   fused gradient + update (one replica):   alpha = −lr, beta = 1  → bias −= lr · ∂loss/∂bias
//
// A bias's input is the constant 1, so its gradient is the sum over the batch of its neuron's
// error term δ (already divided by the batch size by softmax_xent.wgsl).
// Shapes: delta is (rows, cols), bias is (cols).
// delta is Elem (f32, or f16 under --precision f16), which a
// one-line prelude chosen at pipeline creation defines (abi::Elems::prelude).
// Under f16 the sums are f32 (the gradient buffer is f32): alpha = 1, beta = 0, the gradient.
// One workgroup: one bias. Thread t adds up rows t, t + WORKGROUP, ..., then the workgroup adds
// the threads' sums in workgroup memory (a tree). A first version gave each bias one thread that
// walked all rows alone: 64 loads in a row, about 16 µs on an H200 for 10 biases; this way each
// thread makes one load and the sum takes log2(WORKGROUP) steps.

struct Params {
    rows: u32,
    cols: u32,
    alpha: f32,
    beta: f32,
}

// 64 threads: one row each for the default batch of 64; a power of two for the tree sum.
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> delta: array<Elem>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> part: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = wid.x;
    if n >= params.cols {
        return;
    }
    let t = lid.x;
    var sum = 0.0;
    for (var r = t; r < params.rows; r += WORKGROUP) {
        sum += f32(delta[r * params.cols + n]);
    }
    part[t] = sum;
    workgroupBarrier();
    for (var s = WORKGROUP / 2u; s > 0u; s = s / 2u) {
        if t < s {
            part[t] += part[t + s];
        }
        workgroupBarrier();
    }
    if t == 0u {
        var v = params.alpha * part[0];
        if params.beta != 0.0 {
            v += params.beta * out[n];
        }
        out[n] = v;
    }
}
