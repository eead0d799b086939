//! The fast CPU trainer: the benchmark baseline the GPU is measured against.
//!
//! The same step as the GPU's, with the big matrix products done by a SIMD GEMM
//! (`matrixmultiply`, which packs panels and runs AVX/FMA micro-kernels), and the hidden
//! neurons split into one block per core:
//! ```text
//! per block J of neurons (in parallel):
//!     hT[J] = ReLU(W1[J] · xᵀ + b1[J])              (|J|,784)·(784,B)
//! z  = h · W2ᵀ + b2;  p = SoftMax(z);  δ2 = (p − onehot)/B;  loss, correct
//! per block J (in parallel):
//!     δ1ᵀ[J] = (W2[:,J]ᵀ · δ2ᵀ) ⊙ ReLU′(hT[J])       uses W2 before its update
//!     b1[J] −= lr · Σ δ1[J];  W1[J] −= lr · δ1ᵀ[J] · x  (|J|,B)·(B,784)
//! W2 −= lr · δ2ᵀ · h;  b2 −= lr · Σ δ2
//! ```
//! The hidden activations and error terms are kept transposed, (128, B), so a block of neurons
//! is a block of rows everywhere: each core reads and updates only its own rows of W1, which stay
//! in that core's cache from the forward pass to the update. The gradient is never stored:
//! GEMM's `C = αAB + βC` with α = −lr and β = 1 adds the adjustment straight into the weights.
//! The cores are driven by [`Workers`], which busy-wait between the two regions of a step.
//!
//! As a data-parallel replica the same products write the gradient instead (α = 1, β = 0 into
//! a flat gradient in [`ParamLayout::packed`] order), δ2 is divided by the global batch, and
//! `apply_update` applies `w −= lr·g` afterwards, loop for loop like `sgd_update.wgsl`.

use super::gemm::{block_start, blocks, gemm, r16, round_into, round_model};
use super::workers::Workers;
use crate::data::{scale_pixel, Dataset, CLASSES, PIXELS};
use crate::engine::{Counters, Engine, Precision, Target, Totals};
use crate::error::Result;
use crate::model::{Model, ParamLayout};
use std::ops::Range;

/// Scratch buffers sized for the largest batch, allocated once.
pub struct CpuEngine {
    model: Model,
    workers: Workers,
    /// The batch's pixels, (B, 784), and the same transposed, (784, B).
    x: Vec<f32>,
    xt: Vec<f32>,
    /// The batch's labels.
    labels: Vec<u8>,
    /// Hidden outputs, transposed: (128, B).
    h: Vec<f32>,
    z: Vec<f32>,
    d2: Vec<f32>,
    /// Hidden error terms, transposed: (128, B).
    d1: Vec<f32>,
    /// The gradient of every parameter, packed layout (the data-parallel step).
    grad: Vec<f32>,
    totals: Totals,
    /// --precision f16: the working copy of the weights, every value rounded to f16 (the
    /// masters stay in `model`). With it, the inputs, hidden outputs and error terms are
    /// rounded to f16 where the GPU's f16 kernels store them, and the products, summed in f32
    /// by SGEMM, are the same products of f16 values: this engine is the f16 path's twin.
    model16: Option<Model>,
}

impl CpuEngine {
    /// `threads`: how many cores to split the step over (1 = single-threaded).
    pub fn new(model: Model, threads: usize) -> Self {
        let hidden = model.hidden();
        CpuEngine {
            model,
            workers: Workers::new(threads.clamp(1, hidden.max(1))),
            x: Vec::new(),
            xt: Vec::new(),
            labels: Vec::new(),
            h: Vec::new(),
            z: Vec::new(),
            d2: Vec::new(),
            d1: Vec::new(),
            grad: vec![0.0; ParamLayout::packed_for(hidden).total],
            totals: Totals::default(),
            model16: None,
        }
    }

    /// The same engine computing in mixed precision (--precision f16).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.model16 = match precision {
            Precision::F16 => Some(round_model(&self.model)),
            Precision::F32 => None,
        };
        self
    }

    /// Forward pass of the batch already in `self.x` (rows of 784): fills hT and z (logits).
    fn forward(&mut self, rows: usize) {
        let parts = self.workers.parts();
        let hidden = self.model.hidden();
        let half = self.model16.is_some();
        let m = self.model16.as_ref().unwrap_or(&self.model);
        self.h.resize(hidden * rows, 0.0);
        self.z.resize(rows * CLASSES, 0.0);
        let xt = &self.xt;
        let ht_blocks = blocks(&mut self.h, rows, parts);
        self.workers.run(&|p| {
            let Some(block) = ht_blocks.get(p) else {
                return;
            };
            let mut ht = block.lock().unwrap_or_else(|e| e.into_inner());
            let (j0, j) = (block_start(p, hidden, parts), ht.len() / rows);
            for (row, &b) in ht.chunks_mut(rows).zip(&m.b1[j0..j0 + j]) {
                row.fill(b);
            }
            gemm(
                (j, PIXELS, rows),
                1.0,
                &m.w1[j0 * PIXELS..],
                (PIXELS, 1),
                xt,
                (rows, 1),
                1.0,
                &mut ht,
                rows,
            );
            for v in ht.iter_mut() {
                *v = v.max(0.0);
                if half {
                    *v = r16(*v);
                }
            }
        });
        drop(ht_blocks);
        // z = h · W2ᵀ + b2, (B, 10), with h read through hT's transposed strides.
        for row in self.z.chunks_mut(CLASSES) {
            row.copy_from_slice(&m.b2);
        }
        gemm(
            (rows, hidden, CLASSES),
            1.0,
            &self.h,
            (1, rows),
            &m.w2,
            (1, hidden),
            1.0,
            &mut self.z,
            CLASSES,
        );
    }

    /// SoftMax + cross-entropy on the logits in `self.z` against `self.labels`; writes
    /// δ2 = (p − onehot)/divisor into `self.d2` (if divisor > 0: the global batch) and returns
    /// (summed loss, correct).
    fn softmax_xent(&mut self, divisor: usize, scale: f32) -> (f64, u64) {
        let half = self.model16.is_some();
        let rows = self.labels.len();
        self.d2.resize(rows * CLASSES, 0.0);
        let (mut loss, mut correct) = (0.0f64, 0u64);
        for (r, &label) in self.labels.iter().enumerate() {
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
            if divisor > 0 {
                let d = &mut self.d2[r * CLASSES..(r + 1) * CLASSES];
                for c in 0..CLASSES {
                    let p = (z[c] - max).exp() / sum;
                    let onehot = if c == label as usize { 1.0 } else { 0.0 };
                    d[c] = (p - onehot) / divisor as f32;
                    if half {
                        // head.wgsl under f16: scaled by the loss scale, stored in f16.
                        d[c] = r16(d[c] * scale);
                    } else if scale != 1.0 {
                        d[c] *= scale;
                    }
                }
            }
        }
        (loss, correct)
    }

    /// Gathers the batch as floats in [0,1] into x (B, 784) and xᵀ (784, B), in parallel:
    /// part p fills its block of x's rows and its block of xᵀ's rows. The forward product reads
    /// x by columns, and GEMM packs a contiguous xᵀ much faster than a strided x.
    fn gather(&mut self, data: &Dataset, batch: &[u32]) {
        let (rows, parts) = (batch.len(), self.workers.parts());
        let half = self.model16.is_some();
        self.x.resize(rows * PIXELS, 0.0);
        self.xt.resize(PIXELS * rows, 0.0);
        let x_blocks = blocks(&mut self.x, PIXELS, parts);
        let xt_blocks = blocks(&mut self.xt, rows, parts);
        self.workers.run(&|p| {
            if let Some(x) = x_blocks.get(p) {
                let mut x = x.lock().unwrap_or_else(|e| e.into_inner());
                let r0 = block_start(p, rows, parts);
                for (r, xrow) in x.chunks_mut(PIXELS).enumerate() {
                    for (v, &px) in xrow.iter_mut().zip(data.image(batch[r0 + r] as usize)) {
                        *v = if half {
                            r16(scale_pixel(px))
                        } else {
                            scale_pixel(px)
                        };
                    }
                }
            }
            if let Some(xt) = xt_blocks.get(p) {
                let mut xt = xt.lock().unwrap_or_else(|e| e.into_inner());
                let k0 = block_start(p, PIXELS, parts);
                // Row k of xᵀ is pixel k of every image: contiguous writes, and the batch's
                // 64 images (50 KB) stay in cache while we read across them.
                for (kk, xt_row) in xt.chunks_mut(rows).enumerate() {
                    for (v, &i) in xt_row.iter_mut().zip(batch) {
                        let p = scale_pixel(data.images[i as usize * PIXELS + k0 + kk]);
                        *v = if half { r16(p) } else { p };
                    }
                }
            }
        });
        self.labels.clear();
        self.labels
            .extend(batch.iter().map(|&i| data.labels[i as usize]));
    }

    /// One step (the products are listed in the module doc): forward, backward, and the
    /// weight products into the weights (`Target::Update`) or into the gradient.
    fn products(&mut self, data: &Dataset, batch: &[u32], target: Target) {
        let rows = batch.len();
        let (divisor, scale) = match target {
            Target::Update { .. } => (rows, 1.0),
            Target::Gradient {
                global_rows,
                loss_scale,
            } => (global_rows, loss_scale),
        };
        self.gather(data, batch);
        self.forward(rows);
        let (loss, correct) = self.softmax_xent(divisor, scale);
        self.totals.add(loss, correct, rows as u64);
        // α·product + β·old: into the weights (the fused update) or into the gradient.
        let ab = match target {
            Target::Update { lr } => (-lr, 1.0),
            Target::Gradient { .. } => (1.0, 0.0),
        };
        // The hidden layer's first: its δ1 reads W2 before the output layer's update changes it.
        self.hidden_products(rows, target, ab);
        self.output_products(rows, target, ab);
    }

    /// Per block of hidden neurons J: δ1ᵀ[J] = (W2[:,J]ᵀ·δ2ᵀ) ⊙ ReLU′, then b1[J] and W1[J]
    /// (their gradient, or their fused update), on the worker threads. W2 is only read.
    fn hidden_products(&mut self, rows: usize, target: Target, (alpha, beta): (f32, f32)) {
        let half = self.model16.is_some();
        let hidden = self.model.hidden();
        let layout = ParamLayout::packed_for(hidden);
        let (g_hidden, _) = self.grad.split_at_mut(layout.offsets[2]);
        let (gw1, gb1) = g_hidden.split_at_mut(layout.offsets[1]);
        let parts = self.workers.parts();
        self.d1.resize(hidden * rows, 0.0);
        let Model { w1, b1, w2, .. } = &mut self.model;
        let (dw1, db1): (&mut [f32], &mut [f32]) = match target {
            Target::Update { .. } => (w1, b1),
            Target::Gradient { .. } => (gw1, gb1),
        };
        // δ1 reads the working copy of W2 (f16 values under --precision f16).
        let w2_read: &[f32] = match &self.model16 {
            Some(m16) => &m16.w2,
            None => &*w2,
        };
        let (d2, h, x) = (&self.d2, &self.h, &self.x);
        let d1_blocks = blocks(&mut self.d1, rows, parts);
        let w1_blocks = blocks(dw1, PIXELS, parts);
        let b1_blocks = blocks(db1, 1, parts);
        self.workers.run(&|p| {
            let (Some(d1), Some(w1), Some(b1)) =
                (d1_blocks.get(p), w1_blocks.get(p), b1_blocks.get(p))
            else {
                return;
            };
            let (mut d1, mut w1, mut b1) = (
                d1.lock().unwrap_or_else(|e| e.into_inner()),
                w1.lock().unwrap_or_else(|e| e.into_inner()),
                b1.lock().unwrap_or_else(|e| e.into_inner()),
            );
            let (j0, j) = (block_start(p, hidden, parts), b1.len());
            // δ1ᵀ[J] = W2[:,J]ᵀ · δ2ᵀ, (|J|, B), then ⊙ ReLU′: zero where the neuron was off.
            gemm(
                (j, CLASSES, rows),
                1.0,
                &w2_read[j0..],
                (1, hidden),
                d2,
                (1, CLASSES),
                0.0,
                &mut d1,
                rows,
            );
            for (d, &hv) in d1.iter_mut().zip(&h[j0 * rows..(j0 + j) * rows]) {
                if hv <= 0.0 {
                    *d = 0.0;
                } else if half {
                    *d = r16(*d);
                }
            }
            // b1[J] = α·Σ δ1 + β·b1[J]: the bias gradient, or the fused update b1 −= lr·Σ δ1.
            for (b, drow) in b1.iter_mut().zip(d1.chunks(rows)) {
                let sum = drow.iter().sum::<f32>();
                *b = if beta != 0.0 {
                    alpha * sum + *b
                } else {
                    alpha * sum
                };
            }
            // W1[J] = α · δ1ᵀ[J] · x + β · W1[J]   (|J|,B)·(B,784)
            gemm(
                (j, rows, PIXELS),
                alpha,
                &d1,
                (rows, 1),
                x,
                (PIXELS, 1),
                beta,
                &mut w1,
                PIXELS,
            );
        });
    }

    /// The output layer's W2 and b2 (their gradient, or their fused update), after every block
    /// of the hidden layer has read the old W2.
    fn output_products(&mut self, rows: usize, target: Target, (alpha, beta): (f32, f32)) {
        let hidden = self.model.hidden();
        let layout = ParamLayout::packed_for(hidden);
        let (_, g_output) = self.grad.split_at_mut(layout.offsets[2]);
        let (gw2, gb2) = g_output.split_at_mut(layout.lens[2]);
        let Model { w2, b2, .. } = &mut self.model;
        // W2 = α · δ2ᵀ · h + β · W2   (10,B)·(B,128).
        let (dw2, db2): (&mut [f32], &mut [f32]) = match target {
            Target::Update { .. } => (w2, b2),
            Target::Gradient { .. } => (gw2, gb2),
        };
        gemm(
            (CLASSES, rows, hidden),
            alpha,
            &self.d2,
            (1, CLASSES),
            &self.h,
            (1, rows),
            beta,
            dw2,
            hidden,
        );
        match target {
            // The fused step subtracts row by row (the order the CPU baseline has always used).
            Target::Update { lr } => {
                for d2_row in self.d2.chunks(CLASSES).take(rows) {
                    for (b, d) in db2.iter_mut().zip(d2_row) {
                        *b -= lr * d;
                    }
                }
            }
            Target::Gradient { .. } => {
                db2.fill(0.0);
                for d2_row in self.d2.chunks(CLASSES).take(rows) {
                    for (b, d) in db2.iter_mut().zip(d2_row) {
                        *b += d;
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for CpuEngine {
    /// `{:#}`: only what sets the arithmetic's rounding (for snapshots: "CPU").
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if f.alternate() {
            return write!(f, "CPU");
        }
        write!(
            f,
            "CPU (matrixmultiply SGEMM, {} thread{}{})",
            self.workers.parts(),
            if self.workers.parts() == 1 { "" } else { "s" },
            if self.model16.is_some() {
                ", mixed precision: f16 activations, f32 masters"
            } else {
                ""
            }
        )
    }
}

impl Engine for CpuEngine {
    fn step(&mut self, data: &Dataset, batch: &[u32], target: Target) -> Result<()> {
        if let (Target::Update { .. }, Some(_)) = (target, &self.model16) {
            return Err(crate::error::Error::Config(
                "--precision f16 trains with the separated step (gradient, loss scaling, update)"
                    .into(),
            ));
        }
        if batch.is_empty() {
            // A replica left without examples contributes a zero gradient.
            self.grad.fill(0.0);
        } else {
            self.products(data, batch, target);
        }
        Ok(())
    }

    fn read_gradient(&mut self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        out.copy_from_slice(&self.grad[range]);
        Ok(())
    }

    fn write_gradient(&mut self, grad: &[f32]) -> Result<()> {
        self.grad.copy_from_slice(grad);
        Ok(())
    }

    /// `w −= lr·g`, tensor by tensor: `sgd_update.wgsl`'s loop.
    fn apply_update(&mut self, lr: f32) -> Result<()> {
        let layout = ParamLayout::packed_for(self.model.hidden());
        let m = &mut self.model;
        for (i, w) in [&mut m.w1, &mut m.b1, &mut m.w2, &mut m.b2]
            .into_iter()
            .enumerate()
        {
            for (w, g) in w.iter_mut().zip(&self.grad[layout.range(i)]) {
                *w -= lr * g;
            }
        }
        if let Some(model16) = &mut self.model16 {
            // sgd_update.wgsl under f16: the working copy follows the masters.
            round_into(&self.model, model16);
        }
        Ok(())
    }

    fn take_counters(&mut self) -> Result<Counters> {
        Ok(Counters {
            totals: std::mem::take(&mut self.totals),
            ..Counters::default()
        })
    }

    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Totals> {
        let mut t = Totals::default();
        let all: Vec<u32> = (0..data.len() as u32).collect();
        for batch in all.chunks(batch_size) {
            self.gather(data, batch);
            self.forward(batch.len());
            let (loss, correct) = self.softmax_xent(0, 1.0);
            t.add(loss, correct, batch.len() as u64);
        }
        Ok(t)
    }

    fn model(&mut self) -> Result<Model> {
        Ok(self.model.clone())
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        self.model = model.clone();
        if self.model16.is_some() {
            self.model16 = Some(round_model(model));
        }
        Ok(())
    }
}
