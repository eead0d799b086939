// splitk_reduce: finish a split-K matrix product.
//
//   C[m, n] = epilogue( Σ_z partial[z, m, n] )          z = 0 .. splits-1
//   epilogue(v) = alpha·v + beta·C[m, n] (+ bias[n]) (then ReLU) (then ⊙ [mask[m, n] > 0])
//
// Why split K at all: the hidden layer's product is (B,784)·(784,128). With B = 64 its output
// has only 8,192 elements, 32 tiles of 16×16, far too few workgroups to fill a big GPU, and each
// would walk all 784 values of K alone. Splitting K into slices gives splits× more workgroups;
// this kernel then adds the slices. Shapes: partial is (splits, m, n), C is (m, n).
// One thread: one element of C. Params is matmul.wgsl's, so one struct describes both halves.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    splits: u32,
    k_per_split: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    alpha: f32,
    beta: f32,
    flags: u32,
}

const HAS_BIAS: u32 = 1u;
const RELU: u32 = 2u;
const MASK: u32 = 4u;

// 64 threads: a multiple of every GPU's SIMD width.
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let size = params.m * params.n;
    if i >= size {
        return;
    }
    var acc = 0.0;
    for (var z = 0u; z < params.splits; z++) {
        acc += partial[z * size + i];
    }
    let col = i % params.n;
    // The epilogue (kept identical to matmul.wgsl's).
    var v = params.alpha * acc;
    if params.beta != 0.0 {
        v += params.beta * c[i];
    }
    if (params.flags & HAS_BIAS) != 0u {
        v += bias[col];
    }
    if (params.flags & RELU) != 0u {
        v = max(v, 0.0);
    }
    if (params.flags & MASK) != 0u && mask[i] <= 0.0 {
        v = 0.0;
    }
    c[i] = v;
}
