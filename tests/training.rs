//! Training end to end on real data: the CPU reaches the accuracy PyTorch reaches with the same
//! settings; the GPU agrees with the CPU step for step and epoch for epoch.

mod common;
use common::{assert_close, gpu};
use gpu_train::cpu::engine::CpuEngine;
use gpu_train::data::{self, DataSplit};
use gpu_train::engine::{Engine, Target};
use gpu_train::abi::Site;
use gpu_train::gpu::engine::state::GpuEngine;
use gpu_train::gpu::buffers::GpuOptions;
use gpu_train::model::{Model, ParamLayout};
use gpu_train::train;
use gpu_train::train::report::Quiet;
use gpu_train::config::TrainConfig;

fn sample() -> DataSplit {
    data::load_dir(&data::bundled_dir()).unwrap()
}

/// Final-epoch accuracy at lr 0.1 moves by about ±0.7 points from seed to seed (91.7-93.1 % on
/// seeds 1-6 here), so the claim is checked on the median of five seeds, not on one lucky one.
#[test]
fn cpu_reaches_92_5_percent_on_the_mnist_sample_in_10_epochs() {
    let data = sample();
    let mut finals = Vec::new();
    for seed in 1..=5 {
        let cfg = TrainConfig {
            epochs: 10,
            batch_size: 64,
            lr: 0.1,
            seed,
        };
        let mut engine = CpuEngine::new(Model::init(cfg.seed), 2);
        let reports = train::train(&mut engine, &data, &cfg, &mut Quiet).unwrap();
        let last = reports.last().unwrap();
        assert_eq!((last.test.seen, last.train.seen), (10_000, 10_000));
        // Training loss falls from the first epoch to the last.
        assert!(reports[0].train.mean_loss() > last.train.mean_loss());
        finals.push(last.test.accuracy());
    }
    finals.sort_by(f64::total_cmp);
    // PyTorch with the same settings: 93.0 % after 10 epochs on this sample.
    assert!(
        finals[2] >= 92.5,
        "median test accuracy {:.2}% (all: {finals:?})",
        finals[2]
    );
    assert!(finals[0] >= 91.0, "worst seed {:.2}%", finals[0]);
}

#[test]
fn gpu_weights_match_the_cpu_after_k_steps_and_staged_equals_resident() {
    let Some(g) = gpu("gpu_weights_match_the_cpu_after_k_steps") else {
        return;
    };
    drop(g);
    let mut data = sample();
    data.train = data.train.take(200); // 4 steps of 64 and one of 8: the short batch included
    let model = Model::init(1);
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        lr: 0.1,
        seed: 2,
    };
    let order = data::epoch_order(data.train.len(), cfg.seed, 1);
    let mut cpu = CpuEngine::new(model.clone(), 2);
    let run_gpu = |resident| {
        let g = common::gpu("gpu").unwrap();
        let opts = GpuOptions {
            batch: 64,
            resident,
            ring: 3,
            ..GpuOptions::default()
        };
        let mut e = GpuEngine::new(g, &model, opts, &data.train).unwrap();
        for batch in order.chunks(cfg.batch_size) {
            e.step(&data.train, batch, Target::Update { lr: cfg.lr })
                .unwrap();
        }
        let counters = e.take_counters().unwrap();
        (
            e.model().unwrap(),
            counters.totals,
            counters.staged_bytes.unwrap(),
        )
    };
    let (staged, staged_totals, staged_bytes) = run_gpu(false);
    let (resident, resident_totals, resident_bytes) = run_gpu(true);
    for batch in order.chunks(cfg.batch_size) {
        cpu.step(&data.train, batch, Target::Update { lr: cfg.lr })
            .unwrap();
    }
    let cpu_totals = cpu.take_counters().unwrap().totals;
    let want = cpu.model().unwrap();
    // Same kernels on the same bytes: the two data paths are bit-identical.
    assert_eq!(staged, resident, "staged and resident runs differ");
    assert_eq!(staged_totals, resident_totals);
    // Staging sends every image (784 B) and label (4 B); resident sends only indices (4 B).
    assert_eq!(staged_bytes, 200 * (784 + 4));
    assert_eq!(resident_bytes, 200 * 4);
    // Against the CPU: f32 sums in a different order, so a tolerance. The weights move by
    // about 1e-2 in these steps; 1e-5 absolute is a thousand times finer.
    for (got, exp) in staged.tensors().iter().zip(want.tensors().iter()) {
        let worst = assert_close(got.0, got.2, exp.2, 1e-5, 1e-4);
        eprintln!("{}: worst relative error {worst:e}", got.0);
    }
    assert_ne!(staged, model, "training changed nothing");
    assert_eq!(staged_totals.correct, cpu_totals.correct);
    assert!((staged_totals.loss_sum - cpu_totals.loss_sum).abs() < 1e-3 * cpu_totals.loss_sum);
}

#[test]
fn gpu_epoch_accuracy_matches_the_cpu_within_half_a_point() {
    let Some(g) = gpu("gpu_epoch_accuracy_matches_the_cpu") else {
        return;
    };
    let mut data = sample();
    // Small enough for lavapipe in CI: 2,000 training images, the first 2,000 test images.
    data.train = data.train.take(2000);
    data.test = data.test.take(2000);
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        lr: 0.1,
        seed: 42,
    };
    let model = Model::init(cfg.seed);
    let mut gpu_engine = GpuEngine::new(g, &model, GpuOptions::default(), &data.train).unwrap();
    let gpu_report = train::train(&mut gpu_engine, &data, &cfg, &mut Quiet).unwrap()[0];
    let mut cpu = CpuEngine::new(model, 2);
    let cpu_report = train::train(&mut cpu, &data, &cfg, &mut Quiet).unwrap()[0];
    let (a, b) = (gpu_report.test.accuracy(), cpu_report.test.accuracy());
    eprintln!("one epoch on 2,000 images: GPU {a:.2}%, CPU {b:.2}%");
    assert!((a - b).abs() <= 0.5, "GPU {a:.2}% vs CPU {b:.2}%");
    assert!(a > 50.0, "the GPU did not learn (chance is 10 %): {a:.2}%");
    assert_eq!(gpu_report.test.seen, 2000);
    // One epoch stages each training image (784 B) and label (4 B) once; the test pass's
    // batches are not counted as training traffic. The CPU stages nothing.
    assert_eq!(gpu_report.staged_bytes, Some(2000 * (784 + 4)));
    assert_eq!(cpu_report.staged_bytes, None);
}

/// The values that change between steps (the learning rate, the global batch δ2 is divided
/// by, the loss scale) are rewritten inside the plans, never baked into a new one: the plans
/// built stay at one per (rows, pass), and every new value takes effect exactly.
#[test]
fn changing_the_learning_rate_loss_scale_or_global_batch_rebuilds_no_plan() {
    let Some(g) = gpu("changing_the_learning_rate_loss_scale_or_global_batch_rebuilds_no_plan")
    else {
        return;
    };
    let data = sample().train.take(64);
    let batch: Vec<u32> = (0..64).collect();
    let opts = GpuOptions {
        batch: 64,
        ring: 2,
        ..GpuOptions::default()
    };
    let mut e = GpuEngine::new(g, &Model::init(3), opts, &data).unwrap();
    let update = |e: &mut GpuEngine, lr| {
        e.step(&data, &batch, Target::Update { lr }).unwrap();
        e.model().unwrap()
    };
    let m1 = update(&mut e, 0.1);
    // lr 0: w −= 0·g leaves every weight as it was, bit for bit.
    assert_eq!(
        update(&mut e, 0.0),
        m1,
        "a learning rate of 0 changed the weights"
    );
    assert_ne!(
        update(&mut e, 0.05),
        m1,
        "a learning rate of 0.05 changed nothing"
    );
    let gradient = |e: &mut GpuEngine, global_rows, loss_scale| {
        let target = Target::Gradient {
            global_rows,
            loss_scale,
        };
        e.step(&data, &batch, target).unwrap();
        let mut g = vec![0.0; gpu_train::model::ParamLayout::packed().total];
        e.read_gradient(0..g.len(), &mut g).unwrap();
        g
    };
    let g64 = gradient(&mut e, 64, 1.0);
    // Scaling by a power of two is exact in f32: twice the loss scale, twice every value;
    // twice the global batch, half of every value.
    let twice: Vec<f32> = g64.iter().map(|v| 2.0 * v).collect();
    let half: Vec<f32> = g64.iter().map(|v| 0.5 * v).collect();
    assert_eq!(
        gradient(&mut e, 64, 2.0),
        twice,
        "the loss scale was not applied"
    );
    assert_eq!(
        gradient(&mut e, 128, 1.0),
        half,
        "the global batch was not applied"
    );
    assert_eq!(gradient(&mut e, 64, 1.0), g64);
    // One plan for the fused step, one for the gradient step.
    assert_eq!(e.plans_built(), 2);
}

/// The variants that read x, W1 and δ1 through texture mirrors (gpu/mirror.rs) need copies
/// between a step's passes: after the unpack (x, W1) and after δ1 is computed. Forced one at a
/// time, each must give reg8x4's bits through the fused step, the test pass, and the separated
/// step's gradient: a mirror copied late or from the wrong place would show here.
#[test]
fn kernels_reading_texture_mirrors_train_to_reg8x4s_bits() {
    let Some(g) = gpu("kernels_reading_texture_mirrors_train_to_reg8x4s_bits") else {
        return;
    };
    drop(g);
    let mut data = sample();
    data.train = data.train.take(200); // 3 steps of 64 and one of 8
    data.test = data.test.take(300); // a test batch of 256 and one of 44
    let model = Model::init(5);
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 64,
        lr: 0.1,
        seed: 3,
    };
    let run = |kernels: &'static str, site: Site| {
        let opts = GpuOptions {
            batch: 64,
            ring: 3,
            kernels: Some(kernels),
            ..GpuOptions::default()
        };
        let mut e = GpuEngine::new(gpu("gpu").unwrap(), &model, opts, &data.train).unwrap();
        // Forced where it fits, else the fallback: it must fit where it is meant to.
        let picked = e.matmul_choice().variants()[site as usize].name;
        assert_eq!(
            picked,
            kernels,
            "{kernels} is not the pick at {}",
            site.name()
        );
        let reports = train::train(&mut e, &data, &cfg, &mut Quiet).unwrap();
        let tested: Vec<_> = reports.iter().map(|r| (r.train, r.test)).collect();
        // One separated step: the gradient of the first 64 images, read back whole.
        let batch: Vec<u32> = (0..64).collect();
        let target = Target::Gradient {
            global_rows: 64,
            loss_scale: 1.0,
        };
        e.step(&data.train, &batch, target).unwrap();
        let mut grad = vec![0f32; ParamLayout::packed_for(model.hidden()).total];
        e.read_gradient(0..grad.len(), &mut grad).unwrap();
        e.apply_update(0.1).unwrap();
        (e.model().unwrap(), tested, grad)
    };
    let (want_model, want_tests, want_grad) = run("reg8x4", Site::Hidden);
    assert_ne!(want_model, model, "training changed nothing");
    // tk4_8x8 reads x and W1 in the hidden layer's product; tmn4_8x8 reads δ1 and x in ∂W1.
    for (name, site) in [("tk4_8x8", Site::Hidden), ("tmn4_8x8", Site::GradW1)] {
        let (got_model, got_tests, got_grad) = run(name, site);
        assert!(
            got_model == want_model,
            "{name}: weights differ from reg8x4's"
        );
        assert_eq!(got_tests, want_tests, "{name}: test passes differ");
        let same = got_grad
            .iter()
            .zip(&want_grad)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name}: the separated step's gradient differs");
    }
}

/// Issue 31: a training step in at most five dispatches, counted from the plan the engine
/// builds for it, in f32 and (where the adapter has f16) f16, staged and resident, and with
/// the hidden layer's product split along K (tiled16 at batch 64: its slices are added up
/// inside head, not by a dispatch of their own).
#[test]
fn a_training_step_takes_at_most_five_dispatches() {
    use gpu_train::engine::Precision;
    let Some(g) = gpu("a_training_step_takes_at_most_five_dispatches") else {
        return;
    };
    let f16 = g.features.contains(wgpu::Features::SHADER_F16);
    drop(g);
    let mut data = sample();
    data.train = data.train.take(256);
    let mut cases = vec![
        (false, Precision::F32, Some("reg8x4")),
        (true, Precision::F32, Some("reg8x4")),
        (false, Precision::F32, Some("tiled16")),
    ];
    if f16 {
        cases.extend([(false, Precision::F16, Some("reg8x4")), (true, Precision::F16, Some("reg8x4"))]);
    }
    for (resident, precision, kernels) in cases {
        let opts = GpuOptions {
            batch: 64,
            resident,
            ring: 2,
            kernels,
            precision,
        };
        let g = gpu("gpu").unwrap();
        let mut e = GpuEngine::new(g, &Model::init(1), opts, &data.train).unwrap();
        let what = format!("{precision:?}, resident {resident}, {kernels:?}");
        let hidden = e.matmul_choice().picks[Site::Hidden as usize].variant;
        if kernels == Some("tiled16") {
            assert!(hidden.forward_splits(64, 128, 784) > 1, "{what}: the product was meant to split");
        }
        assert!(e.dispatches_per_step() <= 5, "{what}: {} dispatches", e.dispatches_per_step());
        let said = format!("a step is {} dispatches", e.dispatches_per_step());
        assert!(e.notes().iter().any(|n| n.contains(&said)), "{what}: {:?}", e.notes());
        // And the step it counts trains: the loss of a few steps is finite.
        let target = match precision {
            Precision::F32 => Target::Update { lr: 0.1 },
            Precision::F16 => Target::Gradient { global_rows: 64, loss_scale: 1024.0 },
        };
        let batch: Vec<u32> = (0..64).collect();
        e.step(&data.train, &batch, target).unwrap();
        let totals = e.take_counters().unwrap().totals;
        assert!(totals.seen == 64 && totals.loss_sum.is_finite(), "{what}: {totals:?}");
    }
}

/// A short batch may be split along K more ways than a full one (fewer rows, fewer blocks, so
/// more slices to fill the GPU): the split-K buffer is sized for the batch that needs the most.
/// With tiled16, a batch of 300 takes 1 slice and the test pass's last batch of 100 takes 4; the
/// buffer was sized for 300 rows alone, and the short batch's product was refused with a panic.
#[test]
fn a_short_batch_split_more_ways_fits_the_split_k_buffer() {
    let Some(g) = gpu("a_short_batch_split_more_ways_fits_the_split_k_buffer") else {
        return;
    };
    let mut data = sample();
    data.train = data.train.take(400);
    let opts = GpuOptions {
        batch: 300,
        ring: 2,
        kernels: Some("tiled16"),
        ..GpuOptions::default()
    };
    let hidden = gpu_train::gpu::matmul::MatmulVariant::by_name("tiled16").unwrap();
    assert!(hidden.forward_splits(100, 128, 784) > hidden.forward_splits(300, 128, 784));
    let mut e = GpuEngine::new(g, &Model::init(1), opts, &data.train).unwrap();
    let totals = e.evaluate(&data.train, 300).unwrap();
    assert_eq!(totals.seen, 400);
    let mut cpu = CpuEngine::new(Model::init(1), 1);
    let want = cpu.evaluate(&data.train, 300).unwrap();
    assert_eq!(totals.correct, want.correct);
}
