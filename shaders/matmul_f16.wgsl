// matmul_f16: the product of matmul.wgsl in half precision, with an f16 result: the forward
// activations h = ReLU(x·W1ᵀ + b1) and the error terms δ1 = (δ2·W2) ⊙ ReLU′ of --precision f16.
//
//   acc[m, n]  = Σ_k f32(A(m, k)) · f32(B(k, n))            A, B, bias, mask in f16
//   C[m, n]    = f16(epilogue(acc))                          epilogue as in matmul.wgsl, in f32
//
// The products are accumulated in f32 (mixed precision, as tensor cores and PyTorch's AMP do):
// an f16 product of two f16 values is exact in f32, and f32 sums lose nothing to the 784 terms
// of the hidden layer, where an f16 accumulator (11 bits) would. Only the stored result is
// rounded to f16. K is never split (no f16 partial sums).
// Blocking as matmul_reg8x4.wgsl: one thread an 8×4 block of C in registers, 8×8 threads.
// Compiled without wgpu's bounds checks, as matmul_reg8x4.wgsl is: every index is clamped to
// the matrix or guarded, and the host checks each product against its buffers first.

enable f16;

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

// 8 threads along each side: 64 a workgroup, 8 of them fill one AVX2 register of llvmpipe.
const LANES: u32 = 8u;
// Rows and columns of C per thread.
const R: u32 = 8u;
const CC: u32 = 4u;

@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read> bias: array<f16>;
@group(0) @binding(3) var<storage, read> mask: array<f16>;
@group(0) @binding(4) var<storage, read_write> c: array<f16>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(LANES, LANES)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * LANES * R + lid.y;
    let col0 = wid.x * LANES * CC + lid.x;
    let k_begin = 0u;
    let k_end = params.k;

    // Rows and columns past the matrix read a clamped (valid) address; their sums are never
    // written, so no test is needed inside the loop.
    var aoff: array<u32, R>;
    var boff: array<u32, CC>;
    for (var i = 0u; i < R; i++) {
        aoff[i] = min(row0 + i * LANES, params.m - 1u) * params.a_rs;
    }
    for (var j = 0u; j < CC; j++) {
        boff[j] = min(col0 + j * LANES, params.n - 1u) * params.b_cs;
    }
    var acc: array<array<f32, CC>, R>;
    for (var kk = k_begin; kk < k_end; kk++) {
        let ka = kk * params.a_cs;
        let kb = kk * params.b_rs;
        var av: array<f32, R>;
        for (var i = 0u; i < R; i++) {
            av[i] = f32(a[aoff[i] + ka]);
        }
        for (var j = 0u; j < CC; j++) {
            let bv = f32(b[kb + boff[j]]);
            for (var i = 0u; i < R; i++) {
                acc[i][j] += av[i] * bv;
            }
        }
    }

    for (var i = 0u; i < R; i++) {
        let row = row0 + i * LANES;
        for (var j = 0u; j < CC; j++) {
            let col = col0 + j * LANES;
            if row >= params.m || col >= params.n {
                continue;
            }
            let idx = row * params.n + col;
            // The epilogue of matmul.wgsl, in f32; K is never split here (splits = 1).
            var v = params.alpha * acc[i][j];
            if params.beta != 0.0 {
                v += params.beta * f32(c[idx]);
            }
            if (params.flags & HAS_BIAS) != 0u {
                v += f32(bias[col]);
            }
            if (params.flags & RELU) != 0u {
                v = max(v, 0.0);
            }
            if (params.flags & MASK) != 0u && mask[idx] <= 0.0h {
                v = 0.0;
            }
            c[idx] = f16(v);
        }
    }
}
