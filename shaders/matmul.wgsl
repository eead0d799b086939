// matmul: the one matrix-product kernel, used for every product of the forward and backward pass.
//
//   acc[m, n]  = Σ_k A(m, k) · B(k, n)                  k over this workgroup's K-slice
//   splits = 1:  C[m, n] = epilogue(acc)
//   splits > 1:  C[z, m, n] = acc   (raw partial sums; head.wgsl, their consumer, adds them and
//                                    applies the hidden layer's epilogue: + b1, ReLU)
//   epilogue(v) = alpha·v + beta·C[m, n] (+ bias[n]) (then ReLU) (then ⊙ [mask[m, n] > 0])
//
// A(m, k) = a[m·a_rs + k·a_cs] and B(k, n) = b[k·b_rs + n·b_cs]: the strides say how each
// matrix is laid out, so a transposed operand is the same buffer with its strides swapped.
// In this trainer (x (B,784), h (B,128), W1 (128,784), W2 (10,128), δ2 (B,10), δ1 (B,128)):
//   hidden   h  = ReLU(x · W1ᵀ + b1)        epilogue: bias, ReLU        (split over K = 784)
//   output   z  = h · W2ᵀ + b2              epilogue: bias              (split over K = 128)
//   backward δ1 = (δ2 · W2) ⊙ [h > 0]       epilogue: mask
//   update   W2 = W2 − lr · δ2ᵀ · h         epilogue: alpha = −lr, beta = 1
//   update   W1 = W1 − lr · δ1ᵀ · x         epilogue: alpha = −lr, beta = 1
// The last two fuse "gradient" and "update": the gradient never exists as a buffer.
//
// One thread: one element of C. A workgroup: a TILE×TILE block of C, looping over its K-slice
// in TILE-wide steps, staging a block of A and of B in workgroup memory so that each value
// fetched from VRAM is used TILE times.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // Number of K-slices (workgroups along z); the slice length is k_per_split.
    splits: u32,
    k_per_split: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    alpha: f32,
    beta: f32,
    // Bit set of the epilogue's optional parts, below.
    flags: u32,
}

const HAS_BIAS: u32 = 1u;
const RELU: u32 = 2u;
const MASK: u32 = 4u;

// 16×16 = 256 threads, the largest workgroup WebGPU guarantees; a 16-wide tile means each
// element loaded into workgroup memory is reused 16 times.
const TILE: u32 = 16u;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

var<workgroup> a_tile: array<array<f32, TILE>, TILE>;
var<workgroup> b_tile: array<array<f32, TILE>, TILE>;

@compute @workgroup_size(TILE, TILE)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.y * TILE + lid.y;
    let col = wid.x * TILE + lid.x;
    let k_begin = wid.z * params.k_per_split;
    let k_end = min(k_begin + params.k_per_split, params.k);

    var acc = 0.0;
    for (var t = k_begin; t < k_end; t += TILE) {
        // Each thread loads one element of the A block and one of the B block (zero outside).
        let ak = t + lid.x;
        var av = 0.0;
        if row < params.m && ak < k_end {
            av = a[row * params.a_rs + ak * params.a_cs];
        }
        a_tile[lid.y][lid.x] = av;
        let bk = t + lid.y;
        var bv = 0.0;
        if bk < k_end && col < params.n {
            bv = b[bk * params.b_rs + col * params.b_cs];
        }
        b_tile[lid.y][lid.x] = bv;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i++) {
            acc += a_tile[lid.y][i] * b_tile[i][lid.x];
        }
        workgroupBarrier();
    }

    if row >= params.m || col >= params.n {
        return;
    }
    let i = row * params.n + col;
    if params.splits > 1u {
        c[wid.z * params.m * params.n + i] = acc;
        return;
    }
    // The epilogue (split K: head.wgsl adds the slices and applies this one's bias and ReLU).
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
