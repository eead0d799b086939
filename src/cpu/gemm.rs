//! The CPU trainer's arithmetic helpers: the SIMD GEMM (matrixmultiply's sgemm, strides as
//! arguments), the row blocks the cores split a product into, and rounding to f16 as the
//! GPU's f16 buffers store values (the CPU path's --precision f16).

use crate::model::Model;
use std::sync::Mutex;

/// A value rounded to the nearest f16 (as the GPU's f16 buffers store it), back in f32.
#[inline]
pub(super) fn r16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Rounds `from` into `to`, buffer for buffer, without allocating (once a step under f16).
pub(super) fn round_into(from: &Model, to: &mut Model) {
    for (dst, src) in [
        (&mut to.w1, &from.w1),
        (&mut to.b1, &from.b1),
        (&mut to.w2, &from.w2),
        (&mut to.b2, &from.b2),
    ] {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = r16(s);
        }
    }
}

pub(super) fn round_model(m: &Model) -> Model {
    let r = |v: &[f32]| v.iter().map(|&x| r16(x)).collect();
    Model {
        w1: r(&m.w1),
        b1: r(&m.b1),
        w2: r(&m.w2),
        b2: r(&m.b2),
    }
}

/// `c (m,n) = alpha · a (m,k) · b (k,n) + beta · c`, every matrix given by its row and column
/// strides, so a transpose is just swapped strides.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn gemm(
    (m, k, n): (usize, usize, usize),
    alpha: f32,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The bounds the strides reach must lie inside the slices: checked, so the unsafe call
    // below cannot read or write out of bounds.
    assert!((m - 1) * rsa + (k.max(1) - 1) * csa < a.len().max(1) || k == 0);
    assert!((k.max(1) - 1) * rsb + (n - 1) * csb < b.len().max(1) || k == 0);
    assert!((m - 1) * rsc + (n - 1) < c.len());
    // SAFETY: the asserts above keep every index matrixmultiply forms inside the slices.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        );
    }
}

/// Cuts `v`, rows of `row_len`, into `parts` blocks of whole rows, each behind its own
/// (never contended) lock so that part p of a parallel job can write block p.
pub(super) fn blocks(v: &mut [f32], row_len: usize, parts: usize) -> Vec<Mutex<&mut [f32]>> {
    let rows = v.len() / row_len;
    let per = rows.div_ceil(parts).max(1);
    v.chunks_mut(per * row_len).map(Mutex::new).collect()
}

/// The first row of block `p` when `rows` rows are cut as [`blocks`] cuts them.
#[inline]
pub(super) fn block_start(p: usize, rows: usize, parts: usize) -> usize {
    p * rows.div_ceil(parts).max(1)
}

