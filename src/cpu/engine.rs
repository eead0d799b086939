//! The fast CPU trainer: the benchmark baseline the GPU is measured against.
//!
//! The same step as the GPU's, with the three big matrix products done by a SIMD GEMM
//! (`matrixmultiply`, which packs panels and runs AVX/FMA micro-kernels) and split across the
//! cores with `rayon::join`:
//! ```text
//! hT = ReLU(W1 · xᵀ + b1)        (128,784)·(784,B)  split by rows of W1
//! z  = h · W2ᵀ + b2               (B,128)·(128,10)
//! p  = SoftMax(z); δ2 = (p − onehot)/B; loss, correct
//! δ1ᵀ = (W2ᵀ · δ2ᵀ) ⊙ ReLU′(h)    uses W2 before its update
//! W2 -= lr · δ2ᵀ · h;  b2 -= lr · Σ δ2
//! W1 -= lr · δ1ᵀ · x;  b1 -= lr · Σ δ1   (128,B)·(B,784)  split by rows of W1
//! ```
//! The hidden activations and their error terms are kept transposed, (128, B), so that both
//! big products split W1 by rows: each core reads and updates only its own half of W1, which
//! then stays in that core's cache from the forward pass to the update.
//! The gradient is never stored: GEMM's `C = αAB + βC` with α = −lr and β = 1 adds the
//! weight adjustment straight into the weights.

use crate::data::{Dataset, CLASSES, PIXELS};
use crate::error::Result;
use crate::model::{Model, HIDDEN};
use crate::train::{Engine, Totals};

/// Scratch buffers sized for the largest batch, allocated once.
pub struct CpuEngine {
    model: Model,
    threads: usize,
    x: Vec<f32>,
    y: Vec<f32>,
    /// Hidden outputs, transposed: (128, B).
    h: Vec<f32>,
    z: Vec<f32>,
    d2: Vec<f32>,
    /// Hidden error terms, transposed: (128, B).
    d1: Vec<f32>,
    totals: Totals,
}

/// `c (m,n) = alpha · a (m,k) · b (k,n) + beta · c`, every matrix given by its row and column
/// strides, so a transpose is just swapped strides.
#[allow(clippy::too_many_arguments)]
fn gemm(
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

/// Runs `f` on `parts` row-chunks of `out` (each `row_len` long) in parallel, passing the
/// index of the chunk's first row.
fn par_rows(out: &mut [f32], row_len: usize, parts: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let rows = out.len() / row_len;
    if parts <= 1 || rows < 2 {
        f(0, out);
        return;
    }
    let split = rows.div_ceil(2);
    let (lo, hi) = out.split_at_mut(split * row_len);
    rayon::join(
        || par_rows(lo, row_len, parts / 2, &|r, c| f(r, c)),
        || par_rows(hi, row_len, parts - parts / 2, &|r, c| f(split + r, c)),
    );
}

impl CpuEngine {
    /// `threads`: how many cores to split the big products over (1 = single-threaded).
    pub fn new(model: Model, threads: usize) -> Self {
        CpuEngine {
            model,
            threads: threads.max(1),
            x: Vec::new(),
            y: Vec::new(),
            h: Vec::new(),
            z: Vec::new(),
            d2: Vec::new(),
            d1: Vec::new(),
            totals: Totals::default(),
        }
    }

    /// Forward pass of the batch already in `self.x` (rows of 784): fills hT and z (logits).
    fn forward(&mut self, rows: usize) {
        let m = &self.model;
        self.h.resize(HIDDEN * rows, 0.0);
        self.z.resize(rows * CLASSES, 0.0);
        let x = &self.x;
        // hT = ReLU(W1 · xᵀ + b1), (128, B): each core takes a block of neurons, i.e. of W1's
        // rows, so it reads (and in the update, writes) only its own half of W1.
        par_rows(&mut self.h, rows, self.threads, &|j0, ht| {
            let j = ht.len() / rows;
            for (row, &b) in ht.chunks_mut(rows).zip(&m.b1[j0..j0 + j]) {
                row.fill(b);
            }
            gemm(
                (j, PIXELS, rows),
                1.0,
                &m.w1[j0 * PIXELS..],
                (PIXELS, 1),
                x,
                (1, PIXELS),
                1.0,
                ht,
                rows,
            );
            for v in ht.iter_mut() {
                *v = v.max(0.0);
            }
        });
        // z = h · W2ᵀ + b2, (B, 10), with h read through hT's transposed strides.
        for row in self.z.chunks_mut(CLASSES) {
            row.copy_from_slice(&m.b2);
        }
        gemm(
            (rows, HIDDEN, CLASSES),
            1.0,
            &self.h,
            (1, rows),
            &m.w2,
            (1, HIDDEN),
            1.0,
            &mut self.z,
            CLASSES,
        );
    }

    /// SoftMax + cross-entropy on the logits in `self.z`; writes δ2 = (p − onehot)/rows into
    /// `self.d2` (if `grad`) and returns (summed loss, correct predictions).
    fn softmax_xent(&mut self, labels: &[u8], grad: bool) -> (f64, u64) {
        let rows = labels.len();
        self.d2.resize(rows * CLASSES, 0.0);
        let (mut loss, mut correct) = (0.0f64, 0u64);
        for (r, &label) in labels.iter().enumerate() {
            let z = &self.z[r * CLASSES..(r + 1) * CLASSES];
            let (mut best, mut max) = (0, z[0]);
            for (c, &v) in z.iter().enumerate().skip(1) {
                if v > max {
                    (best, max) = (c, v);
                }
            }
            let sum: f32 = z.iter().map(|&v| (v - max).exp()).sum();
            // −ln p[label] = ln Σ exp(z − max) − (z[label] − max), without forming p.
            loss += (sum.ln() - (z[label as usize] - max)) as f64;
            correct += (best == label as usize) as u64;
            if grad {
                let d = &mut self.d2[r * CLASSES..(r + 1) * CLASSES];
                for c in 0..CLASSES {
                    let p = (z[c] - max).exp() / sum;
                    let onehot = if c == label as usize { 1.0 } else { 0.0 };
                    d[c] = (p - onehot) / rows as f32;
                }
            }
        }
        (loss, correct)
    }

    fn gather(&mut self, data: &Dataset, batch: &[u32]) -> Vec<u8> {
        data.gather_batch(batch, &mut self.x, &mut self.y);
        batch.iter().map(|&i| data.labels[i as usize]).collect()
    }
}

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        format!(
            "CPU (matrixmultiply SGEMM, {} thread{})",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }

    fn train_step(&mut self, data: &Dataset, batch: &[u32], lr: f32) -> Result<()> {
        let rows = batch.len();
        let labels = self.gather(data, batch);
        self.forward(rows);
        let (loss, correct) = self.softmax_xent(&labels, true);
        self.totals.add(loss, correct, rows as u64);

        // δ1ᵀ = (W2ᵀ · δ2ᵀ) ⊙ ReLU′, (128, B): computed before W2 changes.
        self.d1.resize(HIDDEN * rows, 0.0);
        gemm(
            (HIDDEN, CLASSES, rows),
            1.0,
            &self.model.w2,
            (1, HIDDEN),
            &self.d2,
            (1, CLASSES),
            0.0,
            &mut self.d1,
            rows,
        );
        for (d, &h) in self.d1.iter_mut().zip(&self.h) {
            if h <= 0.0 {
                *d = 0.0;
            }
        }

        let m = &mut self.model;
        // W2 += −lr · δ2ᵀ · h   (10,B)·(B,128)
        gemm(
            (CLASSES, rows, HIDDEN),
            -lr,
            &self.d2,
            (1, CLASSES),
            &self.h,
            (1, rows),
            1.0,
            &mut m.w2,
            HIDDEN,
        );
        for r in 0..rows {
            for c in 0..CLASSES {
                m.b2[c] -= lr * self.d2[r * CLASSES + c];
            }
        }
        for (j, b) in m.b1.iter_mut().enumerate() {
            for r in 0..rows {
                *b -= lr * self.d1[j * rows + r];
            }
        }
        // W1 += −lr · δ1ᵀ · x   (128,B)·(B,784), split by rows of W1 (neurons) as in forward.
        let (d1, x) = (&self.d1, &self.x);
        par_rows(&mut m.w1, PIXELS, self.threads, &|j0, w| {
            let j = w.len() / PIXELS;
            gemm(
                (j, rows, PIXELS),
                -lr,
                &d1[j0 * rows..],
                (rows, 1),
                x,
                (PIXELS, 1),
                1.0,
                w,
                PIXELS,
            );
        });
        Ok(())
    }

    fn take_train_totals(&mut self) -> Result<Totals> {
        Ok(std::mem::take(&mut self.totals))
    }

    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Totals> {
        let mut t = Totals::default();
        let all: Vec<u32> = (0..data.len() as u32).collect();
        for batch in all.chunks(batch_size) {
            let labels = self.gather(data, batch);
            self.forward(batch.len());
            let (loss, correct) = self.softmax_xent(&labels, false);
            t.add(loss, correct, batch.len() as u64);
        }
        Ok(t)
    }

    fn model(&mut self) -> Result<Model> {
        Ok(self.model.clone())
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        self.model = model.clone();
        Ok(())
    }
}
