//! The chapters' worked examples, as computed by the engine.

use gpu_train::data;
use gpu_train::explain::{self, TwoNeuron};
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
    let text = explain::chapter2();
    assert!(
        text.contains("0.9982") && text.contains("1.01738"),
        "{text}"
    );
}

#[test]
fn chapter3_softmax_table_is_consistent() {
    let split = data::load_dir(&data::bundled_dir()).unwrap();
    let e = explain::image_example(&Model::init(42), &split.test, 0, 0.1);
    assert_eq!(e.label, split.test.labels[0] as usize);
    let sum: f64 = e.probs.iter().sum();
    assert!((sum - 1.0).abs() < 1e-12);
    for c in 0..10 {
        assert!((e.probs[c] - e.exps[c] / e.sum).abs() < 1e-12);
    }
    assert!((e.loss + e.probs[e.label].ln()).abs() < 1e-12);
    assert!(e.probs[e.predicted] >= *e.probs.iter().max_by(|a, b| a.total_cmp(b)).unwrap());
    assert!((e.output_grad[e.label] - (e.probs[e.label] - 1.0)).abs() < 1e-12);
    assert!((e.adjustment + 0.1 * e.neuron_grad * e.pixel_value).abs() < 1e-15);
    let text = explain::chapter3(&Model::init(42), &split.test, 0, 0.1, "test");
    assert!(text.contains("1.709") && text.contains("0.742"), "{text}");
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
    let e = explain::image_example(&model, &split.test, image, lr.into());
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
    let text = explain::chapter3(&model, &split.test, image, lr.into(), "test");
    for v in [e.output_new_weight, e.hidden_new_weight] {
        assert!(
            text.contains(&format!("= {v:+.6}")),
            "{v} missing from {text}"
        );
    }
}

#[test]
fn summary_reports_the_chapters_counts() {
    let s = Summary::of(&LAYERS);
    let text = s.render();
    // The chapter's figures appear because the shapes produce them.
    for figure in ["100,352", "1,280", "101,632", "138", "406,528"] {
        assert!(text.contains(figure), "{figure} missing from:\n{text}");
    }
    assert_eq!(s.weight_bytes(2) * 2, s.weight_bytes(4));
    assert_eq!(s.weight_bytes(8), 2 * s.weight_bytes(4));
}

#[test]
fn data_parallel_example_is_computed_from_the_shapes_and_a_real_step() {
    let data = gpu_train::data::load_dir(&gpu_train::data::bundled_dir()).unwrap();
    let model = gpu_train::model::Model::init(42);
    let e = explain::data_parallel_example(&model, &data.test, 2);
    let s = gpu_train::model::Summary::of(&gpu_train::model::LAYERS);
    // What one replica sends is the gradient of every weight and bias, not of the batch.
    assert_eq!(e.gradient_values, 101_770, "101,632 weights + 138 biases");
    assert_eq!(e.gradient_values, s.weights + s.biases);
    assert_eq!(e.gradient_bytes, 4 * e.gradient_values);
    // A ring sends 2(N−1)/N of it per replica (replica 0's chunks may be one float off the
    // exact share when N does not divide the gradient's length).
    for &(n, bytes) in &e.ring_bytes {
        let exact = 2.0 * (n as f64 - 1.0) / n as f64 * e.gradient_bytes as f64;
        assert!(
            (bytes as f64 - exact).abs() <= 8.0 * n as f64,
            "N={n}: {bytes} vs {exact}"
        );
    }
    // The all-reduced gradient of 2 × 32 images is the one device's gradient of 64, up to
    // the order of float additions.
    assert!(e.max_gradient > 1e-3);
    assert!(e.max_difference <= 1e-6 * e.max_gradient.max(1.0), "{e:?}");
    let text = explain::data_parallel(&model, &data.test);
    assert!(
        text.contains("101,770 values") && text.contains("6,504,448"),
        "{text}"
    );
}
