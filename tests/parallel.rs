//! Data parallelism: N replicas, each with its own shard, a ring all-reduce, one update.
//!
//! * N replicas with batch B end where one device with batch N·B ends, on the same examples
//!   (only the order of the floating-point sums differs);
//! * every replica holds the same weights, bit for bit, and a drift is caught and named;
//! * GPU replicas agree with CPU replicas within the kernels' tolerance;
//! * the separated step (gradient buffer → all-reduce → sgd_update) agrees with the fused one;
//! * 2 and 4 replicas reach the accuracy of one device with the same global batch.

mod common;
use common::gpu_train;
use gpu_train::cpu::engine::CpuEngine;
use gpu_train::data::{self, DataSplit};
use gpu_train::engine::{Counters, Engine, Target, Totals};
use gpu_train::error::Error;
use gpu_train::gpu::engine::state::GpuEngine;
use gpu_train::gpu::buffers::GpuOptions;
use gpu_train::model::{Model, PARAMS};
use gpu_train::parallel::ring::Ring;
use gpu_train::train::{self, Start};
use gpu_train::train::report::{EpochReport, Quiet};
use gpu_train::train::replicas::Replicas;
use gpu_train::config::TrainConfig;

fn sample(n: usize) -> DataSplit {
    let mut d = data::load_dir(&data::bundled_dir()).unwrap();
    d.train = d.train.take(n);
    d.test = d.test.take(1000);
    d
}

fn cfg(epochs: usize, batch_size: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size,
        lr: 0.1,
        seed,
    }
}

fn cpu_engines(n: usize, model: &Model) -> Vec<Box<dyn Engine>> {
    (0..n)
        .map(|_| Box::new(CpuEngine::new(model.clone(), 1)) as Box<dyn Engine>)
        .collect()
}

/// Trains `engines` as data-parallel replicas (ring all-reduce); returns the reports and
/// every replica's final weights.
fn run_parallel(
    engines: &mut [Box<dyn Engine>],
    data: &DataSplit,
    cfg: &TrainConfig,
    overlap: bool,
) -> Result<(Vec<EpochReport>, Vec<Model>), Error> {
    let n = engines.len();
    let list: Vec<&mut dyn Engine> = engines
        .iter_mut()
        .map(|e| -> &mut dyn Engine { e.as_mut() })
        .collect();
    let mut replicas = Replicas::data_parallel(list, Box::new(Ring::new(n)), overlap, gpu_train::model::HIDDEN)?;
    let reports = train::train_from(&mut replicas, data, cfg, Start::FRESH, None, &mut Quiet)?;
    drop(replicas);
    let models = engines.iter_mut().map(|e| e.model().unwrap()).collect();
    Ok((reports, models))
}

/// |a − b| ≤ abs + rel·|b| for every parameter, else panic naming the worst.
fn assert_models_close(what: &str, a: &Model, b: &Model, abs: f32, rel: f32) -> f32 {
    let mut worst = 0.0f32;
    for ((name, _, x), (_, _, y)) in a.tensors().iter().zip(b.tensors().iter()) {
        let got: Vec<f32> = x.to_vec();
        worst = worst.max(common::assert_close(
            &format!("{what}: {name}"),
            &got,
            y,
            abs,
            rel,
        ));
    }
    worst
}

#[test]
fn n_replicas_end_where_one_device_with_n_times_the_batch_ends() {
    // 1,001 images: with a global batch of 64 the last batch has 41 examples, split 21/20
    // over 2 replicas and 11/10/10/10 over 4; with 3 replicas of 21 (global 63) it is 56.
    let data = sample(1001);
    let model = Model::init(3);
    let mut worst = 0.0f32;
    for (n, b) in [(1usize, 64usize), (2, 32), (4, 16), (3, 21)] {
        let global = n * b;
        let mut one = CpuEngine::new(model.clone(), 1);
        let single = train::train(&mut one, &data, &cfg(2, global, 7), &mut Quiet).unwrap();
        let mut engines = cpu_engines(n, &model);
        let (reports, models) = run_parallel(&mut engines, &data, &cfg(2, b, 7), false).unwrap();
        for m in &models[1..] {
            assert!(*m == models[0], "{n} replicas: replicas disagree");
        }
        assert_eq!(reports[1].replicas, n);
        assert_eq!(reports[1].global_batch, global);
        assert_eq!(
            reports[1].train.seen, 1001,
            "every example trained once per epoch"
        );
        // Same examples, same global steps: only the summation order differs (the replicas'
        // partial gradients are added by the ring, the single device sums inside its GEMM).
        worst = worst.max(assert_models_close(
            &format!("{n} replicas × {b} vs 1 × {global}"),
            &models[0],
            &one.model().unwrap(),
            2e-6,
            1e-4,
        ));
        assert!((reports[1].test.accuracy() - single[1].test.accuracy()).abs() <= 0.2);
    }
    eprintln!("N replicas vs one big batch, 2 epochs: worst relative difference {worst:e}");
}

#[test]
fn a_global_batch_smaller_than_the_replicas_leaves_some_replicas_idle() {
    // 130 images, 4 replicas of 32 (global 128): the last global batch has 2 examples, so two
    // replicas contribute a zero gradient in that step.
    let data = sample(130);
    let model = Model::init(4);
    let mut one = CpuEngine::new(model.clone(), 1);
    train::train(&mut one, &data, &cfg(1, 128, 1), &mut Quiet).unwrap();
    let mut engines = cpu_engines(4, &model);
    let (_, models) = run_parallel(&mut engines, &data, &cfg(1, 32, 1), false).unwrap();
    assert_models_close(
        "4 replicas, short last batch",
        &models[0],
        &one.model().unwrap(),
        2e-6,
        1e-4,
    );
}

#[test]
fn the_traffic_counted_is_what_the_ring_sent() {
    let data = sample(640);
    let model = Model::init(1);
    for n in [2usize, 4] {
        let mut engines = cpu_engines(n, &model);
        let (reports, _) = run_parallel(&mut engines, &data, &cfg(1, 32, 1), false).unwrap();
        let r = &reports[0];
        let steps = 640usize.div_ceil(32 * n) as u64;
        // Each replica sends 2(N−1) chunks of a 1/N of the gradient per step (the gradient
        // splits into N nearly equal chunks, so a replica's share is within 2(N−1) floats of
        // the exact 2(N−1)/N × 407,080 bytes).
        let exact = 2.0 * (n as f64 - 1.0) / n as f64 * (PARAMS * 4) as f64 * steps as f64;
        assert!(
            (r.traffic.sent as f64 - exact).abs() <= (steps * 8 * n as u64) as f64,
            "{n} replicas: sent {} bytes, 2(N−1)/N × gradient × steps = {exact}",
            r.traffic.sent
        );
        // Two buckets (output layer, hidden layer), each its own ring all-reduce.
        let buckets = gpu_train::train::data_parallel::buckets().len() as u64;
        assert_eq!(r.traffic.messages, steps * buckets * 2 * (n as u64 - 1));
        // The three parts are disjoint slices of the epoch's training time (each step's
        // clock readings split it), so they add up to no more than it (the next test checks
        // that each holds its own part).
        let split = r
            .split
            .expect("the data-parallel path reports its time split");
        let parts = split.compute + split.all_reduce + split.update;
        assert!(
            parts <= r.train_time,
            "{split:?} add up past {:?}",
            r.train_time
        );
    }
}

/// A CPU engine that takes at least `compute` for each forward/backward and at least
/// `update` for each update: known times for the step's parts.
struct Sleepy {
    engine: CpuEngine,
    compute: std::time::Duration,
    update: std::time::Duration,
}

impl std::fmt::Display for Sleepy {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "sleepy CPU engine")
    }
}

impl Engine for Sleepy {
    fn step(&mut self, d: &data::Dataset, b: &[u32], t: Target) -> gpu_train::error::Result<()> {
        std::thread::sleep(self.compute);
        self.engine.step(d, b, t)
    }
    fn take_counters(&mut self) -> gpu_train::error::Result<Counters> {
        self.engine.take_counters()
    }
    fn evaluate(&mut self, d: &data::Dataset, b: usize) -> gpu_train::error::Result<Totals> {
        self.engine.evaluate(d, b)
    }
    fn model(&mut self) -> gpu_train::error::Result<Model> {
        self.engine.model()
    }
    fn set_model(&mut self, m: &Model) -> gpu_train::error::Result<()> {
        self.engine.set_model(m)
    }
    fn read_gradient(
        &mut self,
        r: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> gpu_train::error::Result<()> {
        self.engine.read_gradient(r, out)
    }
    fn write_gradient(&mut self, g: &[f32]) -> gpu_train::error::Result<()> {
        self.engine.write_gradient(g)
    }
    fn apply_update(&mut self, lr: f32) -> gpu_train::error::Result<()> {
        std::thread::sleep(self.update);
        self.engine.apply_update(lr)
    }
}

/// The time split puts each part's time in its own slot: with every forward/backward made to
/// take at least 3 ms, every ring message delayed 1 ms and every update at least 2 ms, each
/// part is at least what those delays add up to over the epoch (counted here from the steps,
/// replicas and messages), and the three together stay within the epoch's training time.
#[test]
fn the_time_split_holds_at_least_the_time_each_part_was_made_to_take() {
    use gpu_train::parallel::ring::Faults;
    use std::time::Duration;
    let data = sample(640);
    let model = Model::init(1);
    let (compute, message, update) = (
        Duration::from_millis(3),
        Duration::from_millis(1),
        Duration::from_millis(2),
    );
    for n in [2usize, 4] {
        let mut engines: Vec<Box<dyn Engine>> = (0..n)
            .map(|_| {
                Box::new(Sleepy {
                    engine: CpuEngine::new(model.clone(), 1),
                    compute,
                    update,
                }) as Box<dyn Engine>
            })
            .collect();
        let list: Vec<&mut dyn Engine> = engines
            .iter_mut()
            .map(|e| -> &mut dyn Engine { e.as_mut() })
            .collect();
        let ring = Ring::new(n).with_faults(Faults {
            slow: Some(message),
            timeout: Duration::from_secs(2),
            ..Faults::default()
        });
        let mut replicas = Replicas::data_parallel(list, Box::new(ring), false, gpu_train::model::HIDDEN).unwrap();
        let cfg = cfg(1, 32, 1);
        let reports =
            train::train_from(&mut replicas, &data, &cfg, Start::FRESH, None, &mut Quiet).unwrap();
        let r = &reports[0];
        let split = r
            .split
            .expect("the data-parallel path reports its time split");
        // The replicas take their steps one after another on this thread: n forward/backward
        // passes and n updates a step; each of the 2 buckets is one ring all-reduce in which
        // every replica sends 2(N−1) messages.
        let steps = 640u32.div_ceil(32 * n as u32);
        let n32 = n as u32;
        let want = [
            ("compute", split.compute, compute * steps * n32),
            (
                "all-reduce",
                split.all_reduce,
                message * steps * 2 * n32 * 2 * (n32 - 1),
            ),
            ("update", split.update, update * steps * n32),
        ];
        for (part, got, at_least) in want {
            assert!(
                got >= at_least,
                "{n} replicas: {part} {got:?}, but its delays alone took {at_least:?} ({split:?})"
            );
        }
        let parts = split.compute + split.all_reduce + split.update;
        assert!(
            parts <= r.train_time,
            "{n} replicas: {split:?} add up past {:?}",
            r.train_time
        );
    }
}

/// An engine whose gradient is corrupted on one replica: the replicas drift apart, and the
/// epoch's check names the replica.
struct Drifting(CpuEngine);

impl std::fmt::Display for Drifting {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "drifting CPU engine")
    }
}

impl Engine for Drifting {
    fn step(&mut self, d: &data::Dataset, b: &[u32], t: Target) -> gpu_train::error::Result<()> {
        self.0.step(d, b, t)
    }
    fn take_counters(&mut self) -> gpu_train::error::Result<Counters> {
        self.0.take_counters()
    }
    fn evaluate(&mut self, d: &data::Dataset, b: usize) -> gpu_train::error::Result<Totals> {
        self.0.evaluate(d, b)
    }
    fn model(&mut self) -> gpu_train::error::Result<Model> {
        self.0.model()
    }
    fn set_model(&mut self, m: &Model) -> gpu_train::error::Result<()> {
        self.0.set_model(m)
    }
    fn read_gradient(
        &mut self,
        r: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> gpu_train::error::Result<()> {
        self.0.read_gradient(r, out)
    }
    fn write_gradient(&mut self, g: &[f32]) -> gpu_train::error::Result<()> {
        // Damaged on the way in: this replica applies a slightly different update.
        let mut g = g.to_vec();
        g[5] += 1e-3;
        self.0.write_gradient(&g)
    }
    fn apply_update(&mut self, lr: f32) -> gpu_train::error::Result<()> {
        self.0.apply_update(lr)
    }
}

#[test]
fn replicas_that_drift_apart_stop_the_run_naming_the_replica() {
    let data = sample(256);
    let model = Model::init(2);
    let mut engines = cpu_engines(3, &model);
    engines[2] = Box::new(Drifting(CpuEngine::new(model.clone(), 1)));
    let Err(err) = run_parallel(&mut engines, &data, &cfg(1, 32, 1), false) else {
        panic!("replicas with different weights were not noticed");
    };
    let msg = err.to_string();
    assert!(matches!(err, Error::Replicas(_)), "{msg}");
    assert!(
        msg.contains("replica 2") && msg.contains("epoch 1"),
        "{msg}"
    );
}

#[test]
fn the_separated_step_agrees_with_the_fused_step_on_the_cpu() {
    // One replica through step(Gradient) → (identity) → apply_update against step(Update):
    // W += −lr·(δᵀx) in one GEMM against g = δᵀx, then W −= lr·g.
    let data = sample(500);
    let model = Model::init(6);
    let mut fused = CpuEngine::new(model.clone(), 2);
    train::train(&mut fused, &data, &cfg(1, 64, 2), &mut Quiet).unwrap();
    let mut engines: Vec<Box<dyn Engine>> = vec![Box::new(CpuEngine::new(model, 2))];
    let (_, models) = run_parallel(&mut engines, &data, &cfg(1, 64, 2), false).unwrap();
    let worst = assert_models_close(
        "separated vs fused",
        &models[0],
        &fused.model().unwrap(),
        1e-6,
        1e-4,
    );
    eprintln!("separated vs fused step (CPU, 1 epoch): worst relative difference {worst:e}");
}

#[test]
fn two_and_four_replicas_reach_the_accuracy_of_one_device_with_the_same_global_batch() {
    // 10 epochs on the bundled sample, global batch 64; CPU replicas (lavapipe would take
    // minutes; the GPU replicas are checked against these weight for weight below).
    let data = data::load_dir(&data::bundled_dir()).unwrap();
    let model = Model::init(42);
    let mut one = CpuEngine::new(model.clone(), 2);
    let single = train::train(&mut one, &data, &cfg(10, 64, 42), &mut Quiet).unwrap();
    let want = single.last().unwrap().test.accuracy();
    for n in [2usize, 4] {
        let mut engines = cpu_engines(n, &model);
        let (reports, _) = run_parallel(&mut engines, &data, &cfg(10, 64 / n, 42), false).unwrap();
        let got = reports.last().unwrap().test.accuracy();
        eprintln!(
            "{n} replicas × {}: {got:.2} % (one device, batch 64: {want:.2} %)",
            64 / n
        );
        assert!(
            (got - want).abs() <= 0.5,
            "{n} replicas: {got:.2} % against {want:.2} %"
        );
    }
}

fn gpu_engines(n: usize, model: &Model, data: &DataSplit, resident: bool) -> Vec<Box<dyn Engine>> {
    (0..n)
        .map(|_| {
            let g = common::gpu("gpu").unwrap();
            let opts = GpuOptions {
                batch: 32,
                resident,
                ring: 4,
                ..GpuOptions::default()
            };
            Box::new(GpuEngine::new(g, model, opts, &data.train).unwrap()) as Box<dyn Engine>
        })
        .collect()
}

#[test]
fn gpu_replicas_agree_with_cpu_replicas_and_with_each_other() {
    if common::gpu("gpu_replicas_agree_with_cpu_replicas").is_none() {
        return;
    }
    // Two devices opened on adapter 0, 300 images: 5 global steps of 64 (the last of 44).
    let data = sample(300);
    let model = Model::init(8);
    let c = cfg(1, 32, 3);
    let mut cpu = cpu_engines(2, &model);
    let (_, cpu_models) = run_parallel(&mut cpu, &data, &c, false).unwrap();
    let mut staged = gpu_engines(2, &model, &data, false);
    let (reports, staged_models) = run_parallel(&mut staged, &data, &c, false).unwrap();
    assert!(
        staged_models[0] == staged_models[1],
        "GPU replicas disagree"
    );
    assert_eq!(
        reports[0].staged_bytes,
        Some(150 * (784 + 4)),
        "each replica staged its shard"
    );
    // Same kernels as the one-device path, so the tolerance of the GPU-vs-CPU training test.
    let worst = assert_models_close(
        "GPU vs CPU replicas",
        &staged_models[0],
        &cpu_models[0],
        1e-5,
        1e-3,
    );
    eprintln!("GPU vs CPU replicas after 5 steps: worst relative difference {worst:e}");
    // Resident shards and --overlap change where the data lives and when the host waits, not
    // the arithmetic: bit-identical.
    let mut resident = gpu_engines(2, &model, &data, true);
    let (_, resident_models) = run_parallel(&mut resident, &data, &c, true).unwrap();
    assert!(
        resident_models[0] == staged_models[0],
        "resident + overlap changed the weights"
    );
}

#[test]
fn gpu_separated_step_agrees_with_the_fused_step() {
    if common::gpu("gpu_separated_step_agrees_with_the_fused_step").is_none() {
        return;
    }
    let data = sample(200);
    let model = Model::init(9);
    let c = cfg(1, 32, 4);
    let mut fused = gpu_engines(1, &model, &data, false);
    train::train(fused[0].as_mut(), &data, &c, &mut Quiet).unwrap();
    let mut separated = gpu_engines(1, &model, &data, false);
    let (_, models) = run_parallel(&mut separated, &data, &c, false).unwrap();
    assert_models_close(
        "GPU separated vs fused",
        &models[0],
        &fused[0].model().unwrap(),
        1e-6,
        1e-4,
    );
}

#[test]
fn cli_trains_replicas_and_reports_them() {
    let (code, out, err) = gpu_train(&[
        "--cpu",
        "--replicas",
        "4",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--limit",
        "640",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("global batch 64"), "{out}");
    assert!(
        out.contains("ring payload") && out.contains("4 replicas × 16"),
        "{out}"
    );
    assert!(out.contains("ring all-reduce between 4"), "{out}");
    // Flags that cannot work together: one line, exit 2.
    for args in [
        vec!["--cpu", "--replicas", "0", "--epochs", "1"],
        vec!["--cpu", "--overlap", "--epochs", "1"],
        vec!["--cpu", "--replicas", "100", "--epochs", "1"],
    ] {
        let (code, _, err) = gpu_train(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn cli_gpu_replicas_train_on_one_adapter_opened_twice() {
    if common::gpu("cli_gpu_replicas_train_on_one_adapter_opened_twice").is_none() {
        return;
    }
    let (code, out, err) = gpu_train(&[
        "--devices",
        "0,0",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--limit",
        "256",
        "--overlap",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 replicas here, all the same") && out.contains("global batch 64"),
        "{out}"
    );
    assert!(out.contains("staged 0.1 MB/replica"), "{out}");
}

#[test]
fn resuming_with_another_replica_count_only_at_an_epoch_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let s = snaps.to_str().unwrap();
    // 2 replicas of 32 over 640 images: 10 steps an epoch; a snapshot every 3 steps.
    let common_args = [
        "--cpu",
        "--limit",
        "640",
        "--batch-size",
        "32",
        "--snapshot-dir",
        s,
    ];
    let mut args = common_args.to_vec();
    args.extend([
        "--replicas",
        "2",
        "--epochs",
        "2",
        "--snapshot-every",
        "3",
        "--keep",
        "100",
    ]);
    let (code, _, err) = gpu_train(&args);
    assert_eq!(code, 0, "{err}");
    let mut files: Vec<_> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // snapshot-000000003 is mid-epoch (epoch 1, step 3); snapshot-000000010 ends epoch 1.
    let mid = files
        .iter()
        .find(|p| p.to_str().unwrap().ends_with("000000003.safetensors"))
        .unwrap();
    let end = files
        .iter()
        .find(|p| p.to_str().unwrap().ends_with("000000010.safetensors"))
        .unwrap();
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "640",
        "--replicas",
        "4",
        "--epochs",
        "2",
        "--resume",
        mid.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("mid-epoch") && err.contains("2 replica(s)"),
        "{err}"
    );
    let (code, out, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "640",
        "--replicas",
        "4",
        "--epochs",
        "2",
        "--resume",
        end.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("global batch becomes 128"), "{out}");
    // The same count mid-epoch is fine, and exact (tests/snapshots.rs checks the bits).
    let (code, _, err) = gpu_train(&[
        "--cpu",
        "--limit",
        "640",
        "--replicas",
        "2",
        "--epochs",
        "2",
        "--resume",
        mid.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// A timeline that traces every step and keeps what it is given.
struct Recorder {
    spans: Vec<(String, usize, u64)>,
}

impl gpu_train::train::report::Timeline for Recorder {
    fn wants(&self, _step: u64) -> bool {
        true
    }
    fn span(&mut self, name: &str, track: usize, _: std::time::Instant, _: std::time::Instant, args: serde_json::Value) {
        self.spans.push((name.to_string(), track, args["step"].as_u64().unwrap()));
    }
}

/// Tracing watches the step and changes nothing in it (issue 30): two GPU replicas trained
/// traced and untraced end with the same weights, bit for bit, after the same number of
/// read-backs from the devices; and the traced run's trace holds every step's verbs (and,
/// where the adapter has timestamp queries, the GPU's own spans of every step).
#[test]
fn a_traced_run_does_the_same_read_backs_and_ends_with_the_same_weights() {
    let Some(g) = common::gpu("a_traced_run_does_the_same_read_backs") else {
        return;
    };
    let timestamps = g.features.contains(wgpu::Features::TIMESTAMP_QUERY);
    drop(g);
    // 320 images, 2 replicas × 32: 5 global steps.
    let data = sample(320);
    let model = Model::init(12);
    let c = cfg(1, 32, 5);
    let run = |trace: Option<&mut Recorder>| {
        let mut engines = gpu_engines(2, &model, &data, false);
        let list: Vec<&mut dyn Engine> = engines.iter_mut().map(|e| -> &mut dyn Engine { e.as_mut() }).collect();
        let mut replicas = Replicas::data_parallel(list, Box::new(Ring::new(2)), false, model.hidden()).unwrap();
        if let Some(t) = trace {
            replicas = replicas.with_timeline(t);
        }
        let reports = train::train_from(&mut replicas, &data, &c, Start::FRESH, None, &mut Quiet).unwrap();
        drop(replicas);
        (reports[0].readbacks, engines[0].model().unwrap())
    };
    let (plain_readbacks, plain) = run(None);
    let mut recorder = Recorder { spans: Vec::new() };
    let (traced_readbacks, traced) = run(Some(&mut recorder));
    assert!(plain == traced, "tracing changed the weights");
    // Per step: each replica's two gradient buckets (5 steps × 2 × 2 = 20), then the epoch's
    // counters (totals, and the timestamps where there are some) and the weight check.
    assert!(plain_readbacks >= 20, "{plain_readbacks} read-backs for 5 steps of 2 replicas");
    assert_eq!(traced_readbacks, plain_readbacks, "tracing added read-backs");
    for step in 0..5u64 {
        for replica in 0..2 {
            let has = |name: &str, track: usize| recorder.spans.iter().any(|s| s.0 == name && s.1 == track && s.2 == step);
            assert!(has("stage + record forward/backward", replica), "step {step} replica {replica}: {:?}", recorder.spans);
            assert!(has("update", replica), "step {step} replica {replica}");
            if timestamps {
                let gpu = gpu_train::train::watch::GPU_TRACK + replica;
                assert!(has("GPU: hidden layer's gradient", gpu), "step {step} replica {replica}: no GPU span");
            }
        }
    }
}
