//! One CPU twin per WGSL kernel, written loop-for-loop like the shader, with the arguments in
//! the shader's binding order (inputs, outputs, params). The kernel tests run a shader and its
//! twin on the same random inputs and compare.
//!
//! The `Params` structs are shared with the GPU side: they are the uniform buffers' layouts.

use crate::abi::{BackwardParams, HeadParams, MatmulParams, SgdParams, UnpackParams, HAS_BIAS, MASK, RELU, WORKGROUP};
use crate::data::CLASSES;

/// Twin of `shaders/unpack_batch.wgsl`. `pixels` is the u8 view of the packed words.
pub fn unpack_batch(
    pixels: &[u8],
    labels: &[u32],
    indices: &[u32],
    x: &mut [f32],
    batch_labels: &mut [u32],
    p: &UnpackParams,
) {
    let bytes_per_image = 4 * p.words_per_image as usize;
    for r in 0..p.rows as usize {
        let src = indices[r] as usize;
        for i in 0..bytes_per_image {
            x[r * bytes_per_image + i] = pixels[src * bytes_per_image + i] as f32 / 255.0;
        }
        batch_labels[r] = labels[src];
    }
}

/// The epilogue of `matmul.wgsl` (and `matmul_reg8x4.wgsl`, and the generated family).
fn epilogue(acc: f32, old: f32, bias: f32, mask: f32, p: &MatmulParams) -> f32 {
    let mut v = p.alpha * acc;
    if p.beta != 0.0 {
        v += p.beta * old;
    }
    if p.flags & HAS_BIAS != 0 {
        v += bias;
    }
    if p.flags & RELU != 0 {
        v = v.max(0.0);
    }
    if p.flags & MASK != 0 && mask <= 0.0 {
        v = 0.0;
    }
    v
}

/// Twin of `shaders/matmul.wgsl` (splits = 1: the whole product with its epilogue;
/// splits > 1: the raw partial sums of each K-slice into `c`, (splits, m, n)).
pub fn matmul(a: &[f32], b: &[f32], bias: &[f32], mask: &[f32], c: &mut [f32], p: &MatmulParams) {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let kps = p.k_per_split as usize;
    for z in 0..p.splits as usize {
        for row in 0..m {
            for col in 0..n {
                let mut acc = 0.0f32;
                for kk in z * kps..((z + 1) * kps).min(k) {
                    acc += a[row * p.a_rs as usize + kk * p.a_cs as usize]
                        * b[kk * p.b_rs as usize + col * p.b_cs as usize];
                }
                let i = row * n + col;
                if p.splits > 1 {
                    c[z * m * n + i] = acc;
                } else {
                    let (bv, mv) = (
                        bias.get(col).copied().unwrap_or(0.0),
                        mask.get(i).copied().unwrap_or(0.0),
                    );
                    c[i] = epilogue(acc, c[i], bv, mv, p);
                }
            }
        }
    }
}

/// A value a kernel stores as `Elem`: f32, or `half::f16` under --precision f16. The fused
/// kernels' twins are written once over it, as their shaders are.
pub trait Elem: Copy {
    fn get(self) -> f32;
    fn put(v: f32) -> Self;
}

impl Elem for f32 {
    fn get(self) -> f32 {
        self
    }
    fn put(v: f32) -> Self {
        v
    }
}

impl Elem for half::f16 {
    fn get(self) -> f32 {
        self.to_f32()
    }
    fn put(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// Twin of `shaders/head.wgsl` with `rows_per_thread` (its ROWS_PER_THREAD): per row, (with
/// splits) h from the hidden layer's K-slices, the logits, SoftMax, loss, accuracy and δ2; the
/// totals summed per thread (its blocks of rows in order) and then as the shader's tree.
#[allow(clippy::too_many_arguments)]
pub fn head<E: Elem>(
    h: &mut [E],
    weights: &[E],
    partial: &[f32],
    labels: &[u32],
    dlogits: &mut [E],
    accum: &mut [f32],
    p: &HeadParams,
    rows_per_thread: u32,
) {
    let (rows, hid) = (p.rows as usize, p.hidden as usize);
    let (w2, b2, b1) = (p.w2_at as usize, p.b2_at as usize, p.b1_at as usize);
    let wg = WORKGROUP as usize;
    let (mut loss, mut correct) = (vec![0.0f32; wg], vec![0.0f32; wg]);
    for r in 0..rows {
        if p.splits > 1 {
            for j in 0..hid {
                let mut acc = 0.0f32;
                for s in 0..p.splits as usize {
                    acc += partial[s * rows * hid + r * hid + j];
                }
                h[r * hid + j] = E::put((acc + weights[b1 + j].get()).max(0.0));
            }
        }
        let mut z = [0.0f32; CLASSES];
        for (c, zc) in z.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for j in 0..hid {
                acc += h[r * hid + j].get() * weights[w2 + c * hid + j].get();
            }
            *zc = acc + weights[b2 + c].get();
        }
        let (mut best, mut max_z) = (0, z[0]);
        for (c, &v) in z.iter().enumerate().skip(1) {
            if v > max_z {
                (best, max_z) = (c, v);
            }
        }
        let mut sum = 0.0f32;
        for &v in &z {
            sum += (v - max_z).exp();
        }
        let y = labels[r] as usize;
        // The thread that computed row r: blocks of rows_per_thread rows, dealt round the
        // workgroup's threads.
        let t = (r / rows_per_thread as usize) % wg;
        loss[t] += sum.ln() - (z[y] - max_z);
        if best == y {
            correct[t] += 1.0;
        }
        if p.divisor != 0 {
            for c in 0..CLASSES {
                let onehot = if c == y { 1.0 } else { 0.0 };
                let prob = (z[c] - max_z).exp() / sum;
                dlogits[r * CLASSES + c] = E::put((prob - onehot) / p.divisor as f32 * p.scale);
            }
        }
    }
    let mut s = wg / 2;
    while s > 0 {
        for t in 0..s {
            loss[t] += loss[t + s];
            correct[t] += correct[t + s];
        }
        s /= 2;
    }
    accum[p.at as usize] += loss[0];
    accum[p.at as usize + 1] += correct[0];
}

/// Twin of `shaders/backward.wgsl`: per hidden neuron j, δ1's column, ∂W2's column and ∂b1[j];
/// per class, ∂b2; each stored as `dest = alpha · ∂ + beta · dest`.
pub fn backward<E: Elem>(
    dlogits: &[E],
    h: &[E],
    weights: &[E],
    dh: &mut [E],
    dest: &mut [f32],
    p: &BackwardParams,
) {
    let (rows, hid) = (p.rows as usize, p.hidden as usize);
    let store = |dest: &mut [f32], i: usize, sum: f32| {
        let mut v = p.alpha * sum;
        if p.beta != 0.0 {
            v += p.beta * dest[i];
        }
        dest[i] = v;
    };
    let (w2, t_w2, t_b2, t_b1) = (p.w2_at as usize, p.t_w2_at as usize, p.t_b2_at as usize, p.t_b1_at as usize);
    for j in 0..hid {
        let w: [f32; CLASSES] = std::array::from_fn(|c| match p.in_place {
            0 => weights[w2 + c * hid + j].get(),
            _ => dest[t_w2 + c * hid + j],
        });
        let (mut gw, mut gb) = ([0.0f32; CLASSES], 0.0f32);
        for r in 0..rows {
            let hv = h[r * hid + j].get();
            let mut acc = 0.0f32;
            for c in 0..CLASSES {
                let d = dlogits[r * CLASSES + c].get();
                acc += d * w[c];
                gw[c] += d * hv;
            }
            let stored = E::put(if hv > 0.0 { acc } else { 0.0 });
            dh[r * hid + j] = stored;
            gb += stored.get();
        }
        for (c, &g) in gw.iter().enumerate() {
            store(dest, t_w2 + c * hid + j, g);
        }
        store(dest, t_b1 + j, gb);
    }
    for c in 0..CLASSES {
        let mut acc = 0.0f32;
        for r in 0..rows {
            acc += dlogits[r * CLASSES + c].get();
        }
        store(dest, t_b2 + c, acc);
    }
}

/// Twin of `shaders/sgd_update.wgsl`.
pub fn sgd_update(grad: &[f32], param: &mut [f32], p: &SgdParams) {
    for i in 0..p.len as usize {
        param[i] -= p.lr * grad[i];
    }
}

// Twins of the --precision f16 kernels. f16 buffers are `half::f16` slices; the arithmetic is
// done in f32 exactly where the shaders do it, and f16 results are rounded by the half crate
// (round to nearest even; a GPU may round a value halfway between two f16s the other way, so
// the tests allow one f16 step).

fn r16(v: f32) -> half::f16 {
    half::f16::from_f32(v)
}

/// Twin of `shaders/unpack_batch.wgsl` under f16 (`Elem = f16`).
pub fn unpack_batch_f16(
    pixels: &[u8],
    labels: &[u32],
    indices: &[u32],
    x: &mut [half::f16],
    batch_labels: &mut [u32],
    p: &UnpackParams,
) {
    let bytes_per_image = 4 * p.words_per_image as usize;
    for r in 0..p.rows as usize {
        let src = indices[r] as usize;
        for i in 0..bytes_per_image {
            x[r * bytes_per_image + i] = r16(pixels[src * bytes_per_image + i] as f32 / 255.0);
        }
        batch_labels[r] = labels[src];
    }
}

/// The f16 matmul kernels' product and epilogue in f32 (`splits` must be 1).
fn matmul_f16_value(
    a: &[half::f16],
    b: &[half::f16],
    bias: &[half::f16],
    mask: &[half::f16],
    old: f32,
    (row, col): (usize, usize),
    p: &MatmulParams,
) -> f32 {
    let mut acc = 0.0f32;
    for kk in 0..p.k as usize {
        acc += a[row * p.a_rs as usize + kk * p.a_cs as usize].to_f32()
            * b[kk * p.b_rs as usize + col * p.b_cs as usize].to_f32();
    }
    let i = row * p.n as usize + col;
    let bv = bias.get(col).map_or(0.0, |v| v.to_f32());
    let mv = mask.get(i).map_or(0.0, |v| v.to_f32());
    epilogue(acc, old, bv, mv, p)
}

/// Twin of `shaders/matmul_reg8x4.wgsl` under f16 (`Elem = Out = f16`).
pub fn matmul_f16(
    a: &[half::f16],
    b: &[half::f16],
    bias: &[half::f16],
    mask: &[half::f16],
    c: &mut [half::f16],
    p: &MatmulParams,
) {
    for row in 0..p.m as usize {
        for col in 0..p.n as usize {
            let i = row * p.n as usize + col;
            c[i] = r16(matmul_f16_value(
                a,
                b,
                bias,
                mask,
                c[i].to_f32(),
                (row, col),
                p,
            ));
        }
    }
}

/// Twin of `shaders/matmul_reg8x4.wgsl` under f16 with an f32 result (`Elem = f16`, `Out = f32`).
pub fn matmul_f16_f32out(
    a: &[half::f16],
    b: &[half::f16],
    bias: &[half::f16],
    mask: &[half::f16],
    c: &mut [f32],
    p: &MatmulParams,
) {
    for row in 0..p.m as usize {
        for col in 0..p.n as usize {
            let i = row * p.n as usize + col;
            c[i] = matmul_f16_value(a, b, bias, mask, c[i], (row, col), p);
        }
    }
}

/// Twin of `shaders/sgd_update.wgsl` under f16 (`HALF`: the working copy written too).
pub fn sgd_update_f16(grad: &[f32], param: &mut [f32], param16: &mut [half::f16], p: &SgdParams) {
    for i in 0..p.len as usize {
        param[i] -= p.lr * grad[i];
        param16[i] = r16(param[i]);
    }
}
