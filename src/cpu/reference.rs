//! The obviously-correct reference: the forward pass, the loss and the backward pass written
//! as plain loops in f64, straight from the chapter's formulas. Slow, and only used to check the
//! fast paths (CPU and GPU) and, through finite differences, itself.
//!
//! Shapes: x is (rows, 784), y is (rows, 10) one-hot, w1 (128, 784), w2 (10, 128), row-major.

// Index loops on purpose: they read like the formulas.
#![allow(clippy::needless_range_loop)]

use crate::model::Model;

/// The parameters in f64, same layout as [`Model`].
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub w1: Vec<f64>,
    pub b1: Vec<f64>,
    pub w2: Vec<f64>,
    pub b2: Vec<f64>,
    pub inputs: usize,
    pub hidden: usize,
    pub classes: usize,
}

impl Params {
    pub fn from_model(m: &Model) -> Self {
        let up = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        Params {
            w1: up(&m.w1),
            b1: up(&m.b1),
            w2: up(&m.w2),
            b2: up(&m.b2),
            inputs: m.w1.len() / m.b1.len(),
            hidden: m.b1.len(),
            classes: m.b2.len(),
        }
    }

    pub fn to_model(&self) -> Model {
        let down = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Model {
            w1: down(&self.w1),
            b1: down(&self.b1),
            w2: down(&self.w2),
            b2: down(&self.b2),
        }
    }
}

/// Everything the forward pass computes for a batch.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Hidden pre-activations, (rows, hidden).
    pub z1: Vec<f64>,
    /// Hidden outputs after ReLU, (rows, hidden).
    pub h: Vec<f64>,
    /// Logits, (rows, classes).
    pub z2: Vec<f64>,
    /// SoftMax probabilities, (rows, classes).
    pub p: Vec<f64>,
    /// Mean cross-entropy loss over the rows: mean of -ln p[true class].
    pub loss: f64,
}

/// SoftMax of one row of logits, stable: subtracting the row maximum changes nothing
/// mathematically but keeps exp() from overflowing.
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

pub fn forward(p: &Params, x: &[f64], y: &[f64], rows: usize) -> Forward {
    let (n_in, n_h, n_c) = (p.inputs, p.hidden, p.classes);
    let mut z1 = vec![0.0; rows * n_h];
    let mut h = vec![0.0; rows * n_h];
    let mut z2 = vec![0.0; rows * n_c];
    let mut probs = vec![0.0; rows * n_c];
    let mut loss = 0.0;
    for r in 0..rows {
        for j in 0..n_h {
            let mut s = p.b1[j];
            for k in 0..n_in {
                s += x[r * n_in + k] * p.w1[j * n_in + k];
            }
            z1[r * n_h + j] = s;
            h[r * n_h + j] = s.max(0.0);
        }
        for c in 0..n_c {
            let mut s = p.b2[c];
            for j in 0..n_h {
                s += h[r * n_h + j] * p.w2[c * n_h + j];
            }
            z2[r * n_c + c] = s;
        }
        let row = softmax(&z2[r * n_c..(r + 1) * n_c]);
        for c in 0..n_c {
            probs[r * n_c + c] = row[c];
            if y[r * n_c + c] == 1.0 {
                loss -= row[c].ln();
            }
        }
    }
    Forward {
        z1,
        h,
        z2,
        p: probs,
        loss: loss / rows as f64,
    }
}

/// Gradients of the mean loss with respect to every parameter.
pub fn backward(p: &Params, x: &[f64], y: &[f64], rows: usize, f: &Forward) -> Params {
    let (n_in, n_h, n_c) = (p.inputs, p.hidden, p.classes);
    let mut g = Params {
        w1: vec![0.0; p.w1.len()],
        b1: vec![0.0; n_h],
        w2: vec![0.0; p.w2.len()],
        b2: vec![0.0; n_c],
        ..*p
    };
    for r in 0..rows {
        // Output error term: SoftMax minus one-hot, divided by rows because the loss is a mean.
        let d2: Vec<f64> = (0..n_c)
            .map(|c| (f.p[r * n_c + c] - y[r * n_c + c]) / rows as f64)
            .collect();
        // Hidden error term: (W2ᵀ · δ2) ⊙ ReLU′(z1).
        let d1: Vec<f64> = (0..n_h)
            .map(|j| {
                let back: f64 = (0..n_c).map(|c| p.w2[c * n_h + j] * d2[c]).sum();
                if f.z1[r * n_h + j] > 0.0 {
                    back
                } else {
                    0.0
                }
            })
            .collect();
        // A weight's gradient is its neuron's error term times the input on that weight.
        for c in 0..n_c {
            g.b2[c] += d2[c];
            for j in 0..n_h {
                g.w2[c * n_h + j] += d2[c] * f.h[r * n_h + j];
            }
        }
        for j in 0..n_h {
            g.b1[j] += d1[j];
            for k in 0..n_in {
                g.w1[j * n_in + k] += d1[j] * x[r * n_in + k];
            }
        }
    }
    g
}

/// One plain SGD step: w <- w - lr * gradient, for every parameter. Returns the batch loss.
pub fn sgd_step(p: &mut Params, x: &[f64], y: &[f64], rows: usize, lr: f64) -> f64 {
    let f = forward(p, x, y, rows);
    let g = backward(p, x, y, rows, &f);
    for (w, d) in [
        (&mut p.w1, &g.w1),
        (&mut p.b1, &g.b1),
        (&mut p.w2, &g.w2),
        (&mut p.b2, &g.b2),
    ] {
        for (wi, di) in w.iter_mut().zip(d) {
            *wi -= lr * di;
        }
    }
    f.loss
}
