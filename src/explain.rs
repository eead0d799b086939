//! `gpu-train explain`: the chapters' worked examples, computed rather than quoted.
//!
//! * Chapter 2: the two-neuron network, one forward pass, the backward pass and the second
//!   forward pass with every weight updated.
//! * Chapter 3: the forward pass of one real MNIST image through the 784-128-10 network, the
//!   SoftMax table, the cross-entropy loss, the output gradient, and one hidden neuron's
//!   gradient and weight adjustment.
//! * The model summary (weights, biases, memory), derived from the layer shapes.

use crate::cpu::reference::{self, Params};
use crate::data::{Dataset, CLASSES, PIXELS};
use crate::model::{Model, Summary, LAYERS};
use std::fmt::Write;

/// Chapter 2's network: neuron a takes x (3 inputs + a bias input of 1.0), neuron b takes a's
/// output (+ a bias input of 1.0); ReLU on both; loss MSE = ½(y − ŷ)².
#[derive(Debug, Clone, PartialEq)]
pub struct TwoNeuron {
    pub x: [f64; 3],
    /// wa1..wa3 on the inputs, then wa0 on the bias input.
    pub wa: [f64; 3],
    pub wa_bias: f64,
    pub wb: f64,
    pub wb_bias: f64,
    pub target: f64,
    pub lr: f64,
}

/// Everything one iteration computes.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoNeuronPass {
    pub za: f64,
    pub a: f64,
    pub zb: f64,
    pub y_hat: f64,
    pub mse: f64,
    /// ŷ − y: the derivative of ½(y − ŷ)² with respect to ŷ.
    pub output_error: f64,
    /// Error terms δ = ∂MSE/∂z of neurons b and a.
    pub delta_b: f64,
    pub delta_a: f64,
    /// Adjustments −lr·δ·input, in the order wb, wb_bias, wa1, wa2, wa3, wa_bias.
    pub adjustments: [f64; 6],
    /// The network after adding the adjustments.
    pub updated: TwoNeuron,
}

fn relu(v: f64) -> f64 {
    v.max(0.0)
}
fn relu_prime(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else {
        0.0
    }
}

impl TwoNeuron {
    /// The chapter's numbers.
    pub fn chapter() -> Self {
        TwoNeuron {
            x: [0.2, 0.1, 0.4],
            wa: [0.1, 0.2, 0.3],
            wa_bias: 0.6,
            wb: 0.4,
            wb_bias: 0.5,
            target: 1.0,
            lr: 0.6,
        }
    }

    pub fn iterate(&self) -> TwoNeuronPass {
        let za: f64 = self.x.iter().zip(&self.wa).map(|(x, w)| x * w).sum::<f64>() + self.wa_bias;
        let a = relu(za);
        let zb = a * self.wb + self.wb_bias;
        let y_hat = relu(zb);
        let mse = 0.5 * (self.target - y_hat).powi(2);
        let output_error = y_hat - self.target;
        let delta_b = output_error * relu_prime(zb);
        let delta_a = delta_b * self.wb * relu_prime(za);
        let adj = |delta: f64, input: f64| -self.lr * delta * input;
        let adjustments = [
            adj(delta_b, a),
            adj(delta_b, 1.0),
            adj(delta_a, self.x[0]),
            adj(delta_a, self.x[1]),
            adj(delta_a, self.x[2]),
            adj(delta_a, 1.0),
        ];
        let mut updated = self.clone();
        updated.wb += adjustments[0];
        updated.wb_bias += adjustments[1];
        for i in 0..3 {
            updated.wa[i] += adjustments[2 + i];
        }
        updated.wa_bias += adjustments[5];
        TwoNeuronPass {
            za,
            a,
            zb,
            y_hat,
            mse,
            output_error,
            delta_b,
            delta_a,
            adjustments,
            updated,
        }
    }
}

/// Chapter 2, printed step by step.
pub fn chapter2() -> String {
    let net = TwoNeuron::chapter();
    let first = net.iterate();
    let second = first.updated.iterate();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== Chapter 2: backpropagation on a two-neuron network =="
    );
    let _ = writeln!(
        s,
        "inputs x = ({}, {}, {}) plus a bias input 1.0; target y = {}; ReLU on both neurons; \
         MSE = ½(y − ŷ)²; learning rate {} (the chapter writes −{} and adds the adjustment: the same step)",
        net.x[0], net.x[1], net.x[2], net.target, net.lr, net.lr
    );
    let _ = writeln!(s, "\nforward pass 1:");
    let _ = writeln!(
        s,
        "  neuron a: z = {}·{} + {}·{} + {}·{} + 1.0·{} = {:.6}   a = ReLU(z) = {:.6}",
        net.x[0],
        net.wa[0],
        net.x[1],
        net.wa[1],
        net.x[2],
        net.wa[2],
        net.wa_bias,
        first.za,
        first.a
    );
    let _ = writeln!(
        s,
        "  neuron b: z = {:.6}·{} + 1.0·{} = {:.6}   ŷ = ReLU(z) = {:.6}",
        first.a, net.wb, net.wb_bias, first.zb, first.y_hat
    );
    let _ = writeln!(
        s,
        "  MSE = ½({} − {:.6})² = {:.6}",
        net.target, first.y_hat, first.mse
    );
    let _ = writeln!(s, "\nbackward pass:");
    let _ = writeln!(s, "  output error ŷ − y = {:.6}", first.output_error);
    let _ = writeln!(
        s,
        "  error term of b: δb = (ŷ − y)·ReLU′(zb) = {:.6}",
        first.delta_b
    );
    let _ = writeln!(
        s,
        "  error term of a: δa = δb·wb·ReLU′(za) = {:.6}",
        first.delta_a
    );
    let names = ["wb", "wb0 (bias)", "wa1", "wa2", "wa3", "wa0 (bias)"];
    let inputs = [first.a, 1.0, net.x[0], net.x[1], net.x[2], 1.0];
    let deltas = [
        first.delta_b,
        first.delta_b,
        first.delta_a,
        first.delta_a,
        first.delta_a,
        first.delta_a,
    ];
    let old = [
        net.wb,
        net.wb_bias,
        net.wa[0],
        net.wa[1],
        net.wa[2],
        net.wa_bias,
    ];
    let u = &first.updated;
    let new = [u.wb, u.wb_bias, u.wa[0], u.wa[1], u.wa[2], u.wa_bias];
    for i in 0..6 {
        let _ = writeln!(
            s,
            "  {:<10}  adjustment = −{}·({:.6})·{:.6} = {:+.6}   new weight {} → {:.6}",
            names[i], net.lr, deltas[i], inputs[i], first.adjustments[i], old[i], new[i]
        );
    }
    let _ = writeln!(s, "\nforward pass 2 (every weight updated):");
    let _ = writeln!(s, "  neuron a: z = {:.6}   a = {:.6}", second.za, second.a);
    let _ = writeln!(
        s,
        "  neuron b: z = {:.6}   ŷ = {:.5}",
        second.zb, second.y_hat
    );
    let _ = writeln!(s, "  MSE = {:.6}", second.mse);
    let _ = writeln!(
        s,
        "  note: the chapter prints ŷ = 0.9982 and MSE = 0.0017 for this pass; those do not follow \
         from its first pass. With every weight updated the arithmetic gives ŷ = {:.5} and MSE = {:.6}.",
        second.y_hat, second.mse
    );
    s
}

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

/// The numbers of the data-parallel example, computed.
#[derive(Debug, Clone, PartialEq)]
pub struct DataParallelExample {
    pub replicas: usize,
    pub global_batch: usize,
    /// Values one replica sends and receives per step: one gradient per parameter.
    pub gradient_values: usize,
    pub gradient_bytes: usize,
    /// Bytes one replica sends per step in a ring all-reduce, for 2, 4 and 8 replicas.
    pub ring_bytes: Vec<(usize, u64)>,
    /// Error terms δ (hidden + output neurons × this replica's examples) that stay local.
    pub local_deltas: usize,
    /// Largest |difference| between the replicas' all-reduced gradient and the gradient of one
    /// device on the whole global batch.
    pub max_difference: f32,
    /// Largest gradient value, for scale.
    pub max_gradient: f32,
}

/// Runs one data-parallel step on real images: `replicas` CPU replicas each compute the
/// gradient of their share of a global batch of the training default (64 images, the
/// chapter's mini-batch), the ring sums them, and the sum is set beside one device's gradient
/// on the whole batch.
pub fn data_parallel_example(
    model: &Model,
    data: &Dataset,
    replicas: usize,
) -> DataParallelExample {
    use crate::cpu::engine::CpuEngine;
    use crate::engine::Engine;
    use crate::model::ParamLayout;
    use crate::parallel::ring::Ring;
use crate::parallel::all_reduce::{part, AllReduce};
    let global = crate::config::DEFAULT_BATCH.min(data.len());
    let batch: Vec<u32> = (0..global as u32).collect();
    let packed = ParamLayout::packed_for(model.hidden());
    let params = packed.total;
    let gradient = |engine: &mut CpuEngine, rows: &[u32]| {
        let mut g = vec![0.0f32; packed.total];
        engine
            .step(
                data,
                rows,
                crate::engine::Target::Gradient {
                    global_rows: global,
                    loss_scale: 1.0,
                },
            )
            .and_then(|_| engine.read_gradient(0..packed.total, &mut g))
            .expect("the CPU engine does not fail");
        g
    };
    let mut one = CpuEngine::new(model.clone(), 1);
    let want = gradient(&mut one, &batch);
    let mut grads: Vec<Vec<f32>> = (0..replicas)
        .map(|r| {
            gradient(
                &mut CpuEngine::new(model.clone(), 1),
                &batch[part(global, replicas, r)],
            )
        })
        .collect();
    let mut views: Vec<&mut [f32]> = grads.iter_mut().map(|g| g.as_mut_slice()).collect();
    let traffic = Ring::new(replicas)
        .all_reduce(0, &mut views)
        .expect("in-process ring");
    let max_difference = grads[0]
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    let ring_bytes = [2usize, 4, 8]
        .iter()
        .map(|&n| {
            let mut g: Vec<Vec<f32>> = vec![vec![0.0; params]; n];
            let mut v: Vec<&mut [f32]> = g.iter_mut().map(|g| g.as_mut_slice()).collect();
            let t = Ring::new(n).all_reduce(0, &mut v).expect("in-process ring");
            (n, t[0].sent)
        })
        .collect();
    let _ = traffic;
    DataParallelExample {
        replicas,
        global_batch: global,
        gradient_values: params,
        gradient_bytes: params * 4,
        ring_bytes,
        local_deltas: (global / replicas) * (model.hidden() + CLASSES),
        max_difference,
        max_gradient: want.iter().fold(0.0, |m, v| m.max(v.abs())),
    }
}

/// The chapter's data-parallel example (Figures 2-12 and 3-7), computed, with the places where
/// the text's arithmetic differs.
pub fn data_parallel(model: &Model, data: &Dataset) -> String {
    use crate::model::thousands;
    let e = data_parallel_example(model, data, 2);
    let per = e.global_batch / e.replicas;
    let mut s = String::from("Data parallelism (chapter 3, Figures 2-12 and 3-7), computed\n");
    let _ = writeln!(
        s,
        "{} replicas, each with its own copy of the weights and {per} of a global batch of {} images:",
        e.replicas, e.global_batch
    );
    let _ = writeln!(
        s,
        "  each replica: forward pass, SoftMax, δ2 = (p − onehot)/{} (the GLOBAL batch), δ1 = (W2ᵀ·δ2) ⊙ ReLU′,",
        e.global_batch
    );
    let _ = writeln!(
        s,
        "  and the gradient of every parameter: {} values, {} bytes in FP32, whatever the batch size.",
        thousands(e.gradient_values),
        thousands(e.gradient_bytes)
    );
    let _ = writeln!(
        s,
        "  synchronised: those {} weight and bias gradients, summed over the replicas by an all-reduce;",
        thousands(e.gradient_values)
    );
    let _ = writeln!(
        s,
        "    since each replica divided by the global batch, the sum IS the average over all {} images.",
        e.global_batch
    );
    let _ = writeln!(
        s,
        "  kept local: each image's error terms δ ({per} images × 138 neurons = {} values per replica);",
        thousands(e.local_deltas)
    );
    let _ = writeln!(
        s,
        "    δ1 is computed from the replica's OWN δ2, not from averaged values: δ belongs to one image."
    );
    let _ = writeln!(
        s,
        "  check, on these images: |all-reduced gradient − one device's gradient on all {}| ≤ {:.1e} \
         (largest gradient {:.3e}; only the order of the float additions differs)",
        e.global_batch, e.max_difference, e.max_gradient
    );
    let _ = writeln!(
        s,
        "  then every replica applies the same update w −= lr·g to the same weights, so the copies stay \
         identical with no weights sent (gpu-train checks this each epoch with a hash of every weight)."
    );
    s += "  bytes one replica sends per step in a ring all-reduce, 2(N−1)/N × the gradient:";
    for (n, b) in &e.ring_bytes {
        let _ = write!(s, "  N={n}: {}", thousands(*b as usize));
    }
    s += "\n";
    // The chapter's claims are about its own network, 784-128-10, whatever weights are loaded.
    // Its mini-batch is 64 images, the trainer's default batch.
    let neurons = crate::model::HIDDEN + CLASSES;
    let batch = crate::config::DEFAULT_BATCH;
    let macs = LAYERS.iter().map(|l| l.weights()).sum::<usize>() * batch;
    let _ = writeln!(s, "Where the chapter's text differs:");
    let _ = writeln!(
        s,
        "  \"768 neurons (64 x 138)\": {batch} × {neurons} = {} neuron outputs per mini-batch; the network has {neurons} neurons.",
        thousands(batch * neurons)
    );
    let _ = writeln!(
        s,
        "  \"6,422,528 weight parameters (128x64x784) + (10x64x128)\": the two terms add to {} (6,422,528 is the first \
         alone), and they count multiply-adds of one forward pass; the weights are shared by all {batch} images: {}.",
        thousands(macs),
        thousands(Summary::of(&LAYERS).weights)
    );
    let _ = writeln!(
        s,
        "  \"8,832 bias weight parameters\": {batch} × {neurons} = {} bias additions; the network has {neurons} biases.",
        thousands(batch * neurons)
    );
    let _ = writeln!(
        s,
        "  \"averaged gradients\" flowing back into the preceding layer's δ, and updated weights \"also synchronized\":"
    );
    let _ = writeln!(
        s,
        "    in data parallelism only the weight gradients are summed, once, after the backward pass (layer by layer, \
         so the output layer's sum can start early: --overlap); δ stays local and no weights travel."
    );
    s
}
