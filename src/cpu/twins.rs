//! One CPU twin per WGSL kernel, written loop-for-loop like the shader, with the arguments in
//! the shader's binding order (inputs, outputs, params). The kernel tests run a shader and its
//! twin on the same random inputs and compare.
//!
//! The `Params` structs are shared with the GPU side: they are the uniform buffers' layouts.

use crate::abi::{BiasParams, MatmulParams, SgdParams, SoftmaxParams, UnpackParams, HAS_BIAS, MASK, RELU, WORKGROUP};

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

/// The epilogue shared by `matmul.wgsl` and `splitk_reduce.wgsl`.
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

/// Twin of `shaders/splitk_reduce.wgsl`.
pub fn splitk_reduce(partial: &[f32], bias: &[f32], mask: &[f32], c: &mut [f32], p: &MatmulParams) {
    let size = (p.m * p.n) as usize;
    for i in 0..size {
        let mut acc = 0.0f32;
        for z in 0..p.splits as usize {
            acc += partial[z * size + i];
        }
        let col = i % p.n as usize;
        let (bv, mv) = (
            bias.get(col).copied().unwrap_or(0.0),
            mask.get(i).copied().unwrap_or(0.0),
        );
        c[i] = epilogue(acc, c[i], bv, mv, p);
    }
}

/// Twin of `shaders/softmax_xent.wgsl`.
pub fn softmax_xent(
    logits: &[f32],
    labels: &[u32],
    dlogits: &mut [f32],
    accum: &mut [f32],
    p: &SoftmaxParams,
) {
    let k = p.classes as usize;
    let (mut loss, mut correct) = (0.0f32, 0.0f32);
    for r in 0..p.rows as usize {
        let row = &logits[r * k..(r + 1) * k];
        let (mut best, mut max_z) = (0, row[0]);
        for (c, &v) in row.iter().enumerate().skip(1) {
            if v > max_z {
                (best, max_z) = (c, v);
            }
        }
        let sum: f32 = row.iter().map(|&v| (v - max_z).exp()).sum();
        let y = labels[r] as usize;
        loss += sum.ln() - (row[y] - max_z);
        if best == y {
            correct += 1.0;
        }
        if p.divisor != 0 {
            for c in 0..k {
                let onehot = if c == y { 1.0 } else { 0.0 };
                let prob = (row[c] - max_z).exp() / sum;
                dlogits[r * k + c] = (prob - onehot) / p.divisor as f32 * p.scale;
            }
        }
    }
    accum[p.at as usize] += loss;
    accum[p.at as usize + 1] += correct;
}

/// Twin of `shaders/bias_update.wgsl`: per bias, WORKGROUP partial sums over strided rows,
/// then the same tree.
pub fn bias_update(delta: &[f32], out: &mut [f32], p: &BiasParams) {
    let wg = WORKGROUP as usize;
    for n in 0..p.cols as usize {
        let mut part = vec![0.0f32; wg];
        for (t, sum) in part.iter_mut().enumerate() {
            for r in (t..p.rows as usize).step_by(wg) {
                *sum += delta[r * p.cols as usize + n];
            }
        }
        let mut s = wg / 2;
        while s > 0 {
            for t in 0..s {
                part[t] += part[t + s];
            }
            s /= 2;
        }
        let mut v = p.alpha * part[0];
        if p.beta != 0.0 {
            v += p.beta * out[n];
        }
        out[n] = v;
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

/// Twin of `shaders/softmax_xent.wgsl` under f16: the same sums, δ2 scaled and rounded to f16.
pub fn softmax_xent_f16(
    logits: &[f32],
    labels: &[u32],
    dlogits: &mut [half::f16],
    accum: &mut [f32],
    p: &SoftmaxParams,
) {
    let mut d32 = vec![0.0f32; dlogits.len()];
    softmax_xent(logits, labels, &mut d32, accum, p);
    if p.divisor != 0 {
        for (d, v) in dlogits.iter_mut().zip(&d32) {
            *d = r16(*v);
        }
    }
}

/// Twin of `shaders/bias_update.wgsl` under f16: the tree over f16 error terms.
pub fn bias_grad_f16(delta: &[half::f16], out: &mut [f32], p: &BiasParams) {
    let d32: Vec<f32> = delta.iter().map(|v| v.to_f32()).collect();
    bias_update(&d32, out, p);
}

/// Twin of `shaders/sgd_update.wgsl` under f16 (`HALF`: the working copy written too).
pub fn sgd_update_f16(grad: &[f32], param: &mut [f32], param16: &mut [half::f16], p: &SgdParams) {
    for i in 0..p.len as usize {
        param[i] -= p.lr * grad[i];
        param16[i] = r16(param[i]);
    }
}
