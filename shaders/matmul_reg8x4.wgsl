// matmul_reg8x4: the same product and epilogue as matmul.wgsl, blocked for CPU-like adapters
// (lavapipe, llvmpipe), where there is no fast workgroup memory to gain from and barriers cost.
//
//   acc[m, n]  = Σ_k A(m, k) · B(k, n)                  k over this workgroup's K-slice
//   splits = 1:  C[m, n] = epilogue(acc)
//   splits > 1:  C[z, m, n] = acc   (raw partial sums, which head.wgsl adds up)
//   epilogue(v) = alpha·v + beta·C[m, n] (+ bias[n]) (then ReLU) (then ⊙ [mask[m, n] > 0])
//   A(m, k) = a[m·a_rs + k·a_cs],  B(k, n) = b[k·b_rs + n·b_cs]   (strides, as in matmul.wgsl)
//
// A, B, the bias and the mask are `Elem`, C is `Out`: f32 and f32, or under --precision f16
// f16 and f16 (the activations h and δ1) or f16 and f32 (the logits, whose range SoftMax wants,
// and the weight gradients, which the f32 masters take). A one-line prelude chosen at pipeline
// creation defines them (abi::Elems::prelude); every value is widened to f32 as it is loaded.
// The products are accumulated in f32 (mixed precision, as tensor cores and PyTorch's AMP do):
// an f16 product of two f16 values is exact in f32, and f32 sums lose nothing to the 784 terms
// of the hidden layer, where an f16 accumulator (11 bits) would. Only the stored result is
// rounded to f16. K is never split under f16 (no f16 partial sums: the variant's max_splits is 1).
//
//
// One thread: an 8×4 block of C held in 32 registers, rows row0, row0+8, ..., columns col0,
// col0+8, ... (a stride of LANES, so that neighbouring threads, which a CPU adapter runs side by
// side in one SIMD register, touch neighbouring columns). Each step of k loads 8 values of A and
// 4 of B and does 32 multiply-adds: 0.375 loads per multiply-add, against 2 (from workgroup
// memory) in matmul.wgsl's 16×16 tiles. A workgroup: 8×8 threads over a 64×32 block of C.
// No workgroup memory and no barriers: on llvmpipe (8 lanes of AVX2 per thread) this ran the
// hidden layer's product 4-5× faster than matmul.wgsl; on a big GPU it leaves most of the card
// idle, which is why the trainer times both at start-up and keeps the faster (gpu/autotune).
// Tried and measured (BENCHMARKS.md): 4×4, 4×8, 8×8 blocks, and clamping each load.

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

@group(0) @binding(0) var<storage, read> a: array<Elem>;
@group(0) @binding(1) var<storage, read> b: array<Elem>;
@group(0) @binding(2) var<storage, read> bias: array<Elem>;
@group(0) @binding(3) var<storage, read> mask: array<Elem>;
@group(0) @binding(4) var<storage, read_write> c: array<Out>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(LANES, LANES)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * LANES * R + lid.y;
    let col0 = wid.x * LANES * CC + lid.x;
    let k_begin = wid.z * params.k_per_split;
    let k_end = min(k_begin + params.k_per_split, params.k);

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
            if params.splits > 1u {
                c[wid.z * params.m * params.n + idx] = Out(acc[i][j]);
                continue;
            }
            // The epilogue (kept identical to matmul.wgsl's).
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
            if (params.flags & MASK) != 0u && f32(mask[idx]) <= 0.0 {
                v = 0.0;
            }
            c[idx] = Out(v);
        }
    }
}
