//! The backward pass against finite differences, and the fast CPU trainer against the f64
//! reference.

use gpu_train::cpu::engine::CpuEngine;
use gpu_train::cpu::reference::{self, Params};
use gpu_train::data::{self, Dataset};
use gpu_train::engine::{Engine, Target};
use gpu_train::model::Model;
use rand::{Rng, SeedableRng};

/// A small random network (inputs 6, hidden 5, classes 4) and a batch of 3.
fn small_problem() -> (Params, Vec<f64>, Vec<f64>, usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let (n_in, n_h, n_c, rows) = (6, 5, 4, 3);
    let mut r = |n: usize| {
        (0..n)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect::<Vec<f64>>()
    };
    let p = Params {
        w1: r(n_h * n_in),
        b1: r(n_h),
        w2: r(n_c * n_h),
        b2: r(n_c),
        inputs: n_in,
        hidden: n_h,
        classes: n_c,
    };
    let x = r(rows * n_in);
    let mut y = vec![0.0; rows * n_c];
    for row in 0..rows {
        y[row * n_c + (row * 3) % n_c] = 1.0;
    }
    (p, x, y, rows)
}

#[test]
fn analytic_gradients_match_finite_differences() {
    let (p, x, y, rows) = small_problem();
    let f = reference::forward(&p, &x, &y, rows);
    // No hidden pre-activation may sit at the ReLU kink, where the derivative is undefined.
    assert!(f.z1.iter().all(|z| z.abs() > 1e-3));
    let g = reference::backward(&p, &x, &y, rows, &f);
    let eps = 1e-6;
    let mut worst = (0.0f64, String::new());
    let mut checked = 0;
    for which in 0..4 {
        let n = [p.w1.len(), p.b1.len(), p.w2.len(), p.b2.len()][which];
        for i in 0..n {
            let field = |q: &mut Params| -> *mut f64 {
                match which {
                    0 => &mut q.w1[i],
                    1 => &mut q.b1[i],
                    2 => &mut q.w2[i],
                    _ => &mut q.b2[i],
                }
            };
            let mut plus = p.clone();
            unsafe { *field(&mut plus) += eps };
            let mut minus = p.clone();
            unsafe { *field(&mut minus) -= eps };
            let numeric = (reference::forward(&plus, &x, &y, rows).loss
                - reference::forward(&minus, &x, &y, rows).loss)
                / (2.0 * eps);
            let analytic = [&g.w1, &g.b1, &g.w2, &g.b2][which][i];
            let err = (numeric - analytic).abs() / (1e-8 + numeric.abs().max(analytic.abs()));
            if err > worst.0 {
                worst = (
                    err,
                    format!("tensor {which} index {i}: numeric {numeric}, analytic {analytic}"),
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 30 + 5 + 20 + 4);
    assert!(
        worst.0 < 1e-5,
        "worst relative error {}: {}",
        worst.0,
        worst.1
    );
}

#[test]
fn fast_cpu_trainer_matches_the_f64_reference() {
    let split = data::load_dir(&data::bundled_dir()).unwrap();
    let train: Dataset = split.train.take(300);
    let model = Model::init(5);
    let mut reference = Params::from_model(&model);
    let mut fast = CpuEngine::new(model, 2);
    let lr = 0.1;
    // 5 steps, including a short last batch (300 = 4·64 + 44) and odd sizes.
    let order = data::epoch_order(train.len(), 9, 1);
    let mut steps = 0;
    for batch in order.chunks(64) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        train.gather_batch(batch, &mut x, &mut y);
        let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let y: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        reference::sgd_step(&mut reference, &x, &y, batch.len(), lr);
        fast.step(&train, batch, Target::Update { lr: lr as f32 })
            .unwrap();
        steps += 1;
    }
    assert_eq!(steps, 5);
    let fast = fast.model().unwrap();
    let want = reference.to_model();
    let tensors = fast.tensors();
    for (got, exp) in tensors.iter().zip(want.tensors().iter()) {
        let (mut worst, mut at) = (0.0f32, 0);
        for (i, (a, b)) in got.2.iter().zip(exp.2.iter()).enumerate() {
            let err = (a - b).abs() - 1e-3 * b.abs();
            if err > worst {
                (worst, at) = (err, i);
            }
        }
        assert!(
            worst < 1e-5,
            "{}[{at}]: fast {} vs reference {}",
            got.0,
            got.2[at],
            exp.2[at]
        );
    }
}
