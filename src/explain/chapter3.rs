//! Chapter 3: the forward pass of one real MNIST image through the 784-128-10 network, the
//! SoftMax table, the cross-entropy loss, the output gradient, and one hidden neuron's
//! gradient and weight adjustment; and the model summary (weights, biases, memory), derived
//! from the layer shapes.

use crate::cpu::reference::{self, Params};
use crate::data::{Dataset, CLASSES, PIXELS};
use crate::model::{Model, Summary, LAYERS};
use std::fmt::Write;

/// Chapter 3's forward pass for one image, computed with the f64 reference.
#[derive(Debug, Clone)]
pub struct ImageExample {
    pub label: usize,
    pub logits: Vec<f64>,
    pub exps: Vec<f64>,
    pub sum: f64,
    pub probs: Vec<f64>,
    pub predicted: usize,
    /// −ln p(label).
    pub loss: f64,
    /// p − onehot (for one image, no batch averaging).
    pub output_grad: Vec<f64>,
    /// The hidden neuron shown, its gradient δ1, and its weight from pixel `pixel`:
    /// adjustment = −lr·δ1·x, new weight = weight + adjustment (Figures 3-5 and 3-6).
    pub neuron: usize,
    pub neuron_grad: f64,
    pub pixel: usize,
    pub pixel_value: f64,
    pub hidden_weight: f64,
    pub adjustment: f64,
    pub hidden_new_weight: f64,
    /// The output neuron shown (the chapter's neuron 9), its error term δ2 = p − onehot, and
    /// its weight from the hidden neuron shown, whose output h is that weight's input:
    /// adjustment = −lr·δ2·h, new weight = weight + adjustment.
    pub output_neuron: usize,
    pub output_delta: f64,
    pub hidden_value: f64,
    pub output_weight: f64,
    pub output_adjustment: f64,
    pub output_new_weight: f64,
}

/// The output neuron Figures 3-5 and 3-6 follow.
pub const CHAPTER_OUTPUT_NEURON: usize = 9;

/// The SoftMax table for `model` on `image` of `data`; `lr` for the adjustment shown.
pub fn image_example(model: &Model, data: &Dataset, image: usize, lr: f64) -> ImageExample {
    let p = Params::from_model(model);
    let mut x = Vec::new();
    let mut y = Vec::new();
    data.gather_batch(&[image as u32], &mut x, &mut y);
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let f = reference::forward(&p, &x, &y, 1);
    let label = data.labels[image] as usize;
    let max = f.z2.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = f.z2.iter().map(|z| (z - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let predicted = (0..CLASSES).fold(0, |b, c| if f.p[c] > f.p[b] { c } else { b });
    let g = reference::backward(&p, &x, &y, 1, &f);
    // Show the active hidden neuron with the largest gradient, and its weight from the
    // brightest pixel: the adjustment is −lr · δ1 · x.
    let neuron = (0..p.hidden)
        .filter(|&j| f.z1[j] > 0.0)
        .max_by(|&a, &b| g.b1[a].abs().total_cmp(&g.b1[b].abs()))
        .unwrap_or(0);
    let pixel = (0..PIXELS)
        .max_by(|&a, &b| x[a].total_cmp(&x[b]))
        .unwrap_or(0);
    let hidden_weight = p.w1[neuron * PIXELS + pixel];
    let adjustment = -lr * g.b1[neuron] * x[pixel];
    // The output layer's update, for the chapter's neuron 9 and its weight from that neuron.
    let out = CHAPTER_OUTPUT_NEURON;
    let output_delta = f.p[out] - y[out];
    let hidden_value = f.h[neuron];
    let output_weight = p.w2[out * p.hidden + neuron];
    let output_adjustment = -lr * output_delta * hidden_value;
    ImageExample {
        label,
        logits: f.z2.clone(),
        exps,
        sum,
        probs: f.p.clone(),
        predicted,
        loss: -f.p[label].ln(),
        output_grad: (0..CLASSES).map(|c| f.p[c] - y[c]).collect(),
        neuron,
        neuron_grad: g.b1[neuron],
        pixel,
        pixel_value: x[pixel],
        hidden_weight,
        adjustment,
        hidden_new_weight: hidden_weight + adjustment,
        output_neuron: out,
        output_delta,
        hidden_value,
        output_weight,
        output_adjustment,
        output_new_weight: output_weight + output_adjustment,
    }
}

/// The SoftMax table (class, logit, exponential, probability), as the chapter's Figure 3-2,
/// with the predicted class and (if known) the true class marked.
pub fn softmax_table(logits: &[f64], label: Option<usize>) -> String {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let probs: Vec<f64> = exps.iter().map(|e| e / sum).collect();
    let predicted = (0..probs.len()).fold(0, |b, c| if probs[c] > probs[b] { c } else { b });
    let mut s = format!(
        "  {:>5}  {:>10}  {:>12}  {:>11}\n",
        "class", "logit", "exp(z−max)", "probability"
    );
    for c in 0..logits.len() {
        let mark = match (c == predicted, Some(c) == label) {
            (true, true) => "  ← predicted, true class",
            (true, false) => "  ← predicted",
            (false, true) => "  ← true class",
            _ => "",
        };
        let _ = writeln!(
            s,
            "  {c:>5}  {:>10.4}  {:>12.6}  {:>11.4}{mark}",
            logits[c], exps[c], probs[c]
        );
    }
    let _ = writeln!(
        s,
        "  {:>5}  {:>10}  {:>12.6}  {:>11.4}",
        "sum",
        "",
        sum,
        probs.iter().sum::<f64>()
    );
    s
}

/// Chapter 3, printed.
pub fn chapter3(model: &Model, data: &Dataset, image: usize, lr: f64, what: &str) -> String {
    let e = image_example(model, data, image, lr);
    // The trainer's lr is an f32; shown as one (0.1, not its f64 widening 0.10000000149...).
    let lr = lr as f32;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== Chapter 3: one MNIST image through 784 → {} ReLU → 10 → SoftMax ==",
        model.hidden()
    );
    let _ = writeln!(s, "test image {image} (true class {}), {what}", e.label);
    s += &softmax_table(&e.logits, Some(e.label));
    let _ = writeln!(
        s,
        "  predicted class {} with p = {:.4}",
        e.predicted, e.probs[e.predicted]
    );
    let pt = e.probs[e.label];
    let _ = writeln!(
        s,
        "cross-entropy loss = −ln p(true class) = −ln {pt:.4} = {:.4}",
        e.loss
    );
    let _ = writeln!(
        s,
        "  note: the chapter takes p = 0.181 to a loss of 0.734; −ln 0.181 = {:.3} (and −log10 0.181 = {:.3}), \
         so its figure is neither.",
        -(0.181f64).ln(),
        -(0.181f64).log10()
    );
    let grads: Vec<String> = e.output_grad.iter().map(|g| format!("{g:+.4}")).collect();
    let _ = writeln!(
        s,
        "output gradient δ2 = p − onehot = [{}]",
        grads.join(", ")
    );
    let _ = writeln!(
        s,
        "weight adjustment = −lr × gradient × input, new weight = weight + adjustment (Figures 3-5, 3-6; \
         lr {lr}, the training default; one image, so δ2 is not divided by a batch):"
    );
    let _ = writeln!(
        s,
        "  output neuron {}: δ2 = p − onehot = {:+.6}; its weight from hidden neuron {} (output h = {:.4}):\n    \
         adjustment −lr·δ2·h = −{lr}·({:+.6})·{:.4} = {:+.6};  new weight {:+.6} + ({:+.6}) = {:+.6}",
        e.output_neuron,
        e.output_delta,
        e.neuron,
        e.hidden_value,
        e.output_delta,
        e.hidden_value,
        e.output_adjustment,
        e.output_weight,
        e.output_adjustment,
        e.output_new_weight
    );
    let _ = writeln!(
        s,
        "  hidden neuron {}: δ1 = (W2ᵀ·δ2)·ReLU′(z) = {:+.6}; its weight from pixel {} (value {:.4}):\n    \
         adjustment −lr·δ1·x = −{lr}·({:+.6})·{:.4} = {:+.6};  new weight {:+.6} + ({:+.6}) = {:+.6}",
        e.neuron,
        e.neuron_grad,
        e.pixel,
        e.pixel_value,
        e.neuron_grad,
        e.pixel_value,
        e.adjustment,
        e.hidden_weight,
        e.adjustment,
        e.hidden_new_weight
    );
    s
}

/// The model summary.
pub fn summary() -> String {
    Summary::of(&LAYERS).render()
}

/// The model summary of a network with `hidden` hidden neurons (`--hidden`).
pub fn summary_for(hidden: usize) -> String {
    Summary::of(&crate::model::layers(hidden)).render()
}

