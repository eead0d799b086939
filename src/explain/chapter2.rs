//! Chapter 2: the two-neuron network, one forward pass, the backward pass and the second
//! forward pass with every weight updated.

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

