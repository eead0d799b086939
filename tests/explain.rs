//! The chapters' worked examples, as computed by the engine.

use gpu_train::data;
use gpu_train::explain::chapter2::TwoNeuron;
use gpu_train::model::{Model, Summary, LAYERS};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn chapter2_first_pass_gives_the_chapters_numbers() {
    let net = TwoNeuron::chapter();
    let p = net.iterate();
    // Recomputed here by hand from the chapter's inputs and weights, independently of iterate().
    let za = 0.2 * 0.1 + 0.1 * 0.2 + 0.4 * 0.3 + 0.6;
    let zb = za * 0.4 + 0.5;
    assert!(close(p.za, za) && close(p.zb, zb));
    // The chapter's printed figures, to the digits it prints.
    assert_eq!(format!("{:.2}", p.za), "0.76");
    assert_eq!(format!("{:.3}", p.zb), "0.804");
    assert_eq!(format!("{:.6}", p.mse), "0.019208");
    assert_eq!(format!("{:.3}", p.output_error), "-0.196");
    assert_eq!(format!("{:.3}", p.delta_b), "-0.196");
    assert_eq!(format!("{:.4}", p.delta_a), "-0.0784");
    // Each adjustment is −lr·δ·input.
    assert!(close(p.adjustments[0], -0.6 * p.delta_b * p.a));
    assert!(close(p.adjustments[5], -0.6 * p.delta_a));
    assert!(close(p.updated.wb, 0.4 + p.adjustments[0]));
}

#[test]
fn chapter2_second_pass_differs_from_the_text() {
    let second = TwoNeuron::chapter().iterate().updated.iterate();
    // The reference notes give ŷ = 1.01738 and MSE = 0.000151, not the text's 0.9982 / 0.0017.
    assert_eq!(format!("{:.5}", second.y_hat), "1.01738");
    assert_eq!(format!("{:.6}", second.mse), "0.000151");
    let text = gpu_train::explain::chapter2::chapter2();
    assert!(
        text.contains("0.9982") && text.contains("1.01738"),
        "{text}"
    );
}

/// The chapter's network, 784 → 128 ReLU → 10, run forward on one image by plain f64 loops
/// written here (not the library's reference): (z1, z2), the hidden pre-activations and the
/// logits.
fn forward_by_hand(model: &Model, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (inputs, hidden, classes) = (784, model.b1.len(), 10);
    let z1: Vec<f64> = (0..hidden)
        .map(|j| {
            let row = &model.w1[j * inputs..(j + 1) * inputs];
            model.b1[j] as f64 + row.iter().zip(x).map(|(&w, &v)| w as f64 * v).sum::<f64>()
        })
        .collect();
    let z2: Vec<f64> = (0..classes)
        .map(|c| {
            let row = &model.w2[c * hidden..(c + 1) * hidden];
            let h = z1.iter().map(|&z| if z > 0.0 { z } else { 0.0 });
            model.b2[c] as f64 + row.iter().zip(h).map(|(&w, h)| w as f64 * h).sum::<f64>()
        })
        .collect();
    (z1, z2)
}

#[test]
fn chapter3_softmax_table_is_the_one_the_logits_give() {
    let split = data::load_dir(&data::bundled_dir()).unwrap();
    let model = Model::init(42);
    let (image, lr) = (0, 0.1);
    let e = gpu_train::explain::chapter3::image_example(&model, &split.test, image, lr);
    let label = split.test.labels[image] as usize;
    assert_eq!(e.label, label);
    // The image as the trainer sees it, and the forward pass recomputed here.
    let (mut x, mut onehot) = (Vec::new(), Vec::new());
    split
        .test
        .gather_batch(&[image as u32], &mut x, &mut onehot);
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (z1, z2) = forward_by_hand(&model, &x);
    for c in 0..10 {
        assert!(
            (e.logits[c] - z2[c]).abs() < 1e-9,
            "logit {c}: {} vs {} by hand",
            e.logits[c],
            z2[c]
        );
    }
    // SoftMax as the chapter writes it, p_c = e^z_c / Σ e^z_j (no max subtracted: these logits
    // are small), the loss −ln p(label), the prediction as the largest logit, δ2 = p − onehot.
    let exps: Vec<f64> = z2.iter().map(|z| z.exp()).collect();
    let total: f64 = exps.iter().sum();
    let p: Vec<f64> = exps.iter().map(|v| v / total).collect();
    for c in 0..10 {
        assert!(
            (e.probs[c] - p[c]).abs() < 1e-12,
            "p[{c}]: {} vs {} by hand",
            e.probs[c],
            p[c]
        );
        let want = p[c] - if c == label { 1.0 } else { 0.0 };
        assert!((e.output_grad[c] - want).abs() < 1e-12, "δ2[{c}]");
        // The table's exponentials are e^(z − max): the same ratios.
        assert!((e.exps[c] / e.sum - p[c]).abs() < 1e-12, "exp column {c}");
    }
    let loss = -p[label].ln();
    assert!((e.loss - loss).abs() < 1e-12, "{} vs {loss}", e.loss);
    let predicted = (0..10).max_by(|&a, &b| z2[a].total_cmp(&z2[b])).unwrap();
    assert_eq!(e.predicted, predicted);
    // The hidden neuron shown: δ1 = (W2ᵀ·δ2)·ReLU′(z1), its weight from the brightest pixel,
    // adjustment −lr·δ1·x.
    let j = e.neuron;
    assert!(z1[j] > 0.0, "the neuron shown is active");
    let delta1: f64 = (0..10)
        .map(|c| {
            model.w2[c * model.b1.len() + j] as f64 * (p[c] - if c == label { 1.0 } else { 0.0 })
        })
        .sum();
    assert!(
        (e.neuron_grad - delta1).abs() < 1e-12,
        "{} vs {delta1}",
        e.neuron_grad
    );
    assert_eq!(e.pixel_value, x[e.pixel]);
    assert!(x.iter().all(|&v| v <= x[e.pixel]), "the brightest pixel");
    let adjustment = -lr * delta1 * x[e.pixel];
    assert!(adjustment != 0.0);
    assert!(
        (e.adjustment - adjustment).abs() < 1e-15,
        "{} vs {adjustment}",
        e.adjustment
    );
    // The printed chapter: the table's probabilities and the loss line carry these numbers.
    let text = gpu_train::explain::chapter3::chapter3(&model, &split.test, image, lr, "test");
    for (c, pc) in p.iter().enumerate() {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&c.to_string()))
            .unwrap_or_else(|| panic!("no row for class {c} in:\n{text}"));
        assert!(
            row.contains(&format!("{pc:.4}")),
            "class {c}: {pc:.4} not in {row:?}"
        );
    }
    let loss_line = format!("= −ln {:.4} = {loss:.4}", p[label]);
    assert!(
        text.contains(&loss_line),
        "{loss_line} missing from:\n{text}"
    );
    // The chapter takes p = 0.181 to a loss of 0.734: neither −ln nor −log10 of 0.181 gives
    // that, and the text says which numbers they do give.
    let (ln, log10) = (-(0.181f64).ln(), -(0.181f64).log10());
    for v in [ln, log10] {
        assert_ne!(format!("{v:.3}"), "0.734");
        assert!(
            text.contains(&format!("{v:.3}")),
            "{v:.3} missing from:\n{text}"
        );
    }
}

/// Figures 3-5 and 3-6: the new weights `explain` prints are the ones a real SGD step on that
/// image gives, for the output neuron and for the hidden one.
#[test]
fn chapter3_weight_updates_are_the_ones_a_training_step_makes() {
    use gpu_train::cpu::engine::CpuEngine;
    use gpu_train::engine::{Engine, Target};
    let split = data::load_dir(&data::bundled_dir()).unwrap();
    let model = Model::init(gpu_train::config::DEFAULT_SEED);
    let lr = gpu_train::config::DEFAULT_LR;
    let image = 3;
    let e = gpu_train::explain::chapter3::image_example(&model, &split.test, image, lr.into());
    assert_eq!(
        e.output_neuron, 9,
        "the chapter's Figure 3-5 follows output neuron 9"
    );
    assert_eq!(e.output_delta, e.output_grad[9]);
    // One image through the CPU trainer's fused step, at the training default's lr.
    let mut engine = CpuEngine::new(model.clone(), 1);
    engine
        .step(&split.test, &[image as u32], Target::Update { lr })
        .unwrap();
    let after = engine.model().unwrap();
    let hidden = model.hidden();
    let w2 = after.w2[e.output_neuron * hidden + e.neuron] as f64;
    let w1 = after.w1[e.neuron * 784 + e.pixel] as f64;
    assert_eq!(
        e.output_weight,
        model.w2[e.output_neuron * hidden + e.neuron] as f64
    );
    assert_eq!(e.hidden_weight, model.w1[e.neuron * 784 + e.pixel] as f64);
    assert!(e.output_adjustment != 0.0 && e.adjustment != 0.0, "{e:?}");
    // f32 training against the f64 reference: equal to f32 rounding of the weight.
    assert!(
        (w2 - e.output_new_weight).abs() < 1e-6,
        "{w2} vs {}",
        e.output_new_weight
    );
    assert!(
        (w1 - e.hidden_new_weight).abs() < 1e-6,
        "{w1} vs {}",
        e.hidden_new_weight
    );
    let text = gpu_train::explain::chapter3::chapter3(&model, &split.test, image, lr.into(), "test");
    for v in [e.output_new_weight, e.hidden_new_weight] {
        assert!(
            text.contains(&format!("= {v:+.6}")),
            "{v} missing from {text}"
        );
    }
}

/// 101632 → "101,632", written here so the expected text does not come from the code under
/// test.
fn commas(n: usize) -> String {
    let d = n.to_string();
    let head = d.len() % 3;
    let mut parts: Vec<&str> = if head > 0 { vec![&d[..head]] } else { vec![] };
    parts.extend((head..d.len()).step_by(3).map(|i| &d[i..i + 3]));
    parts.join(",")
}

/// The chapter's network by hand: 784 inputs, 128 hidden neurons, 10 outputs.
const BY_HAND: (usize, usize, usize) = (784, 128, 10);

#[test]
fn summary_reports_the_chapters_counts() {
    let (inputs, hidden, outputs) = BY_HAND;
    let (w1, w2) = (hidden * inputs, outputs * hidden);
    let (weights, biases) = (w1 + w2, hidden + outputs);
    // The chapter's figures, against the arithmetic on its shapes.
    for (figure, counted) in [
        ("100,352", w1),
        ("1,280", w2),
        ("101,632", weights),
        ("138", biases),
        ("406,528", 4 * weights),
    ] {
        assert_eq!(commas(counted), figure);
    }
    let s = Summary::of(&LAYERS);
    assert_eq!((s.weights, s.biases), (weights, biases));
    for (bytes, name) in [(2, "FP16"), (4, "FP32"), (8, "FP64")] {
        assert_eq!(s.weight_bytes(bytes), bytes * weights, "{name}");
    }
    let text = s.render();
    assert!(
        text.contains(&format!("{} hidden ({hidden}x{inputs})", commas(w1)))
            && text.contains(&format!("{} output ({outputs}x{hidden})", commas(w2))),
        "{text}"
    );
    for (bytes, name) in [(2, "FP16"), (4, "FP32"), (8, "FP64")] {
        let line = format!(
            "weights in {name}: {} bytes ({} with biases)",
            commas(bytes * weights),
            commas(bytes * (weights + biases))
        );
        assert!(text.contains(&line), "{line} missing from:\n{text}");
    }
}

#[test]
fn data_parallel_example_is_computed_from_the_shapes_and_a_real_step() {
    let data = gpu_train::data::load_dir(&gpu_train::data::bundled_dir()).unwrap();
    let model = gpu_train::model::Model::init(42);
    let e = gpu_train::explain::data_parallel::data_parallel_example(&model, &data.test, 2);
    // What one replica sends is the gradient of every weight and bias, not of the batch:
    // 784·128 + 128 + 128·10 + 10 values, 4 bytes each in FP32.
    let (inputs, hidden, outputs) = BY_HAND;
    let values = inputs * hidden + hidden + hidden * outputs + outputs;
    assert_eq!(e.gradient_values, values);
    assert_eq!(e.gradient_bytes, 4 * values);
    // A ring sends 2(N−1) chunks of about 1/N of it per replica: 2(N−1)/N of the gradient,
    // each chunk within a float of the exact share when N does not divide the length.
    let ns: Vec<usize> = e.ring_bytes.iter().map(|&(n, _)| n).collect();
    assert_eq!(ns, [2, 4, 8]);
    for &(n, bytes) in &e.ring_bytes {
        let exact = 2.0 * (n as f64 - 1.0) / n as f64 * (4 * values) as f64;
        let slack = 2.0 * (n as f64 - 1.0) * 4.0;
        assert!(
            (bytes as f64 - exact).abs() <= slack,
            "N={n}: {bytes} vs {exact}"
        );
    }
    // The all-reduced gradient of 2 × 32 images is the one device's gradient of 64, up to
    // the order of float additions.
    assert!(e.max_gradient > 1e-3);
    assert!(e.max_difference <= 1e-6 * e.max_gradient.max(1.0), "{e:?}");
    let text = gpu_train::explain::data_parallel::data_parallel(&model, &data.test);
    // The chapter's "(128x64x784) + (10x64x128)" are the multiply-adds of one forward pass on
    // its mini-batch of 64; the text gives their sum, and the first alone is its 6,422,528.
    let batch = 64;
    let (first, second) = (hidden * batch * inputs, outputs * batch * hidden);
    assert_eq!(commas(first), "6,422,528");
    for figure in [
        format!("{} values", commas(values)),
        commas(first + second),
        format!("{} bytes in FP32", commas(4 * values)),
    ] {
        assert!(text.contains(&figure), "{figure} missing from:\n{text}");
    }
}
