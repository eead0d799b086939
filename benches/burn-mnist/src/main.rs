//! Burn 0.22 on wgpu training gpu-train's model the same way: 784 → 128 ReLU → 10,
//! SoftMax cross-entropy, plain SGD at lr 0.1, batches of 64 in gpu-train's epoch order, on the
//! bundled MNIST sample. Prints each epoch's time and images/s (the first epoch includes Burn's
//! kernel compiles and autotune) and the test accuracy at the end.
//!
//! ```text
//! cd benches/burn-mnist && cargo run --release -- [EPOCHS]
//! ```
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use gpu_train::data::{self, Dataset, PIXELS};
use std::time::Instant;

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    activation: Relu,
    output: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Mlp {
            hidden: LinearConfig::new(PIXELS, 128).init(device),
            activation: Relu::new(),
            output: LinearConfig::new(128, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.output
            .forward(self.activation.forward(self.hidden.forward(x)))
    }
}

/// Rows `rows` of `set` as a (rows, 784) batch of values in [0, 1] and its labels.
fn batch(set: &Dataset, rows: &[u32], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let mut x = Vec::with_capacity(rows.len() * PIXELS);
    let mut y = Vec::with_capacity(rows.len());
    for &i in rows {
        x.extend(set.image(i as usize).iter().map(|&p| p as f32 / 255.0));
        y.push(set.labels[i as usize] as i32);
    }
    (
        Tensor::from_data(TensorData::new(x, [rows.len(), PIXELS]), device),
        Tensor::from_data(TensorData::new(y, [rows.len()]), device),
    )
}

fn main() {
    let epochs: usize = std::env::args().nth(1).map_or(5, |e| e.parse().unwrap());
    let split = data::load_dir(&data::bundled_dir()).unwrap();
    // wgpu's default adapter: the Vulkan one where there is one (lavapipe here, as gpu-train's
    // adapter 0).
    let device = Device::wgpu(Default::default()).autodiff();
    let mut model = Mlp::new(&device);
    let mut optim = SgdConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let n = split.train.len();
    println!("Burn 0.22 on wgpu: {n} training images, batch 64, lr 0.1");
    for epoch in 1..=epochs {
        let start = Instant::now();
        let mut last = None;
        for rows in data::epoch_order(n, 42, epoch).chunks(64) {
            let (x, y) = batch(&split.train, rows, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.1, model, grads);
            last = Some(loss);
        }
        // Reading the last loss waits for the device to finish the epoch.
        let loss: f32 = last.expect("a batch").into_scalar::<f32>();
        let s = start.elapsed().as_secs_f64();
        println!(
            "epoch {epoch}: {s:.3} s, {:.0} images/s, last batch loss {loss:.4}",
            n as f64 / s
        );
    }
    let (x, y) = batch(
        &split.test,
        &(0..split.test.len() as u32).collect::<Vec<_>>(),
        &device,
    );
    let predicted = model.forward(x).argmax(1).squeeze::<1>();
    let correct: i64 = predicted.equal(y).int().sum().into_scalar::<i64>();
    println!(
        "test accuracy {:.2} %",
        100.0 * correct as f64 / split.test.len() as f64
    );
}
