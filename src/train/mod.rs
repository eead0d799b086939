//! The training loop: the same for the CPU and the GPU, and for one device or many, which
//! differ only in the [`Engine`]s that compute and the
//! [`AllReduce`](crate::parallel::AllReduce) that joins them.
//!
//! ```text
//! for each epoch:
//!     order = a seeded shuffle of the training examples
//!     deal: each replica's part of every global batch (N replicas × batch_size examples)
//!           is copied into that replica's own shard in RAM
//!     for each global batch:
//!         every replica:  forward_backward(its part)   gradient of the mean loss, into a flat buffer
//!         all_reduce:     sum the replicas' gradients   (layer by layer: output first)
//!         every replica:  apply_update(lr)              w −= lr·g, the same on every replica
//!     train totals  (loss and accuracy accumulated during the epoch, read once)
//!     test totals   (forward pass over the test set, on replica 0)
//!     check that every replica holds the same weights, bit for bit
//! ```
//! One replica on its own (`--device`, `--cpu`) takes the fused path: `train_step` runs
//! forward, backward and the update in one go, with no gradient buffer (faster, same math).

mod precision;
mod replicas;
mod report;

pub use precision::{LossScaler, Precision};
pub use replicas::{buckets, buckets_of, GpuSpan, Replicas, GPU_TRACK};
pub use report::{EpochReport, Observer, Quiet, StepSplit};

use crate::checkpoint::{Position, SnapshotDir, TrainState};
use crate::data::{epoch_order, DataSplit, Dataset, PIXELS};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::parallel::Traffic;
use replicas::Shard;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Loss and accuracy counts accumulated over some examples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Sum over the examples of −ln p[true class].
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
}

impl Totals {
    pub fn add(&mut self, loss_sum: f64, correct: u64, seen: u64) {
        self.loss_sum += loss_sum;
        self.correct += correct;
        self.seen += seen;
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }
    /// Accuracy in percent.
    pub fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.seen.max(1) as f64
    }
}

/// What performs the steps: the CPU or one GPU. A handful of methods, nothing more.
pub trait Engine {
    /// One line naming the engine (and the adapter, for a GPU).
    fn describe(&self) -> String;
    /// Neurons in the hidden layer of the network it trains.
    fn hidden(&self) -> usize;
    /// One SGD step on the examples of `data` at the indices `batch`.
    /// A GPU engine only records the work here; nothing waits for the device.
    fn train_step(&mut self, data: &Dataset, batch: &[u32], lr: f32) -> Result<()>;
    /// Loss and accuracy of the training steps since the last call (the one place a GPU
    /// engine waits for the device during training).
    fn take_train_totals(&mut self) -> Result<Totals>;
    /// Loss and accuracy of the current weights on `data`.
    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Totals>;
    /// The current weights (a read-back, for a GPU).
    fn model(&mut self) -> Result<Model>;
    /// Replaces the weights (to resume from a snapshot).
    fn set_model(&mut self, model: &Model) -> Result<()>;
    /// Bytes of batch data copied from RAM into device memory since the last call; `None` for
    /// an engine that computes where the data already is (the CPU).
    fn take_staged_bytes(&mut self) -> Option<u64> {
        None
    }
    /// The GPU's own timing of the last `forward_backward`, where the adapter has timestamp
    /// queries: (what, start in seconds from its first timestamp, duration). Waits for it.
    fn gpu_times(&mut self) -> Result<Option<Vec<GpuSpan>>> {
        Ok(None)
    }
    /// Bytes read back from device memory to RAM since the last call; `None` for the CPU.
    fn take_readback_bytes(&mut self) -> Option<u64> {
        None
    }

    // The data-parallel step, in three verbs (forward_backward → all-reduce → apply_update).

    /// Forward and backward on the examples of `data` at `batch` (possibly none), writing the
    /// gradient of the mean loss over a global batch of `global_rows` examples into the
    /// engine's flat gradient ([`ParamLayout`] order). The weights do not change.
    /// `loss_scale` multiplies δ2 (and so every gradient) under --precision f16; 1 otherwise.
    ///
    /// [`ParamLayout`]: crate::model::ParamLayout
    fn forward_backward(
        &mut self,
        data: &Dataset,
        batch: &[u32],
        global_rows: usize,
        loss_scale: f32,
    ) -> Result<()>;
    /// Copies gradient elements `range` ([`ParamLayout::packed`] indices) into `out`, waiting
    /// only for the work that produces them.
    ///
    /// [`ParamLayout::packed`]: crate::model::ParamLayout::packed
    fn read_gradient(&mut self, range: Range<usize>, out: &mut [f32]) -> Result<()>;
    /// Replaces the whole gradient (packed layout) with `grad`: the all-reduced sum.
    fn write_gradient(&mut self, grad: &[f32]) -> Result<()>;
    /// `w −= lr·g` for every parameter.
    fn apply_update(&mut self, lr: f32) -> Result<()>;
    /// This epoch's shard of the training set, before its first step (a resident GPU replica
    /// uploads it to VRAM; others stage from it batch by batch).
    fn load_shard(&mut self, _shard: &Dataset) -> Result<()> {
        Ok(())
    }
}

/// The most epochs a run may ask for.
pub const MAX_EPOCHS: usize = 1_000_000;
/// The largest batch: 2^20 images (3.3 GB of f32 pixels; far more than any data set here).
pub const MAX_BATCH: usize = 1 << 20;
/// The test pass's batch (at least): it is forward only, so a batch larger than training's
/// means fewer, larger dispatches for the same arithmetic (on lavapipe the test pass of 10,000
/// images took 0.44-0.63 s at batch 64).
pub const EVAL_BATCH: usize = 256;
/// A run whose mean training loss over a check window exceeds this multiple of ln 10 (the loss
/// of a uniform guess over 10 classes, 2.303) has diverged, even with finite numbers.
pub const DIVERGED_LOSS_MULTIPLE: f64 = 2.0;

/// Set by a Ctrl-C handler: the loop stops after the step (or snapshot) in progress.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The validated settings of one training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub seed: u64,
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::Config("--epochs must be at least 1".into()));
        }
        if self.epochs > MAX_EPOCHS {
            return Err(Error::Config(format!(
                "--epochs {} is more than gpu-train runs ({MAX_EPOCHS}); a run that long is a mistake",
                self.epochs
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::Config("--batch-size must be at least 1".into()));
        }
        if self.batch_size > MAX_BATCH {
            return Err(Error::Config(format!(
                "--batch-size {} is more than gpu-train takes ({MAX_BATCH} images, {} MB of f32 pixels a batch)",
                self.batch_size,
                MAX_BATCH * PIXELS * 4 / 1_000_000
            )));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        Ok(())
    }

    /// The global batch of `replicas` replicas: each trains on `batch_size` examples a step.
    pub fn global_batch(&self, replicas: usize) -> Result<usize> {
        self.batch_size.checked_mul(replicas.max(1)).ok_or_else(|| {
            Error::Config(format!(
                "--batch-size {} × {replicas} replicas is too large",
                self.batch_size
            ))
        })
    }

    /// Steps in one epoch over `n` examples with `replicas` replicas (the last batch may be
    /// smaller).
    pub fn steps_per_epoch(&self, n: usize, replicas: usize) -> usize {
        n.div_ceil(self.batch_size.saturating_mul(replicas.max(1)))
    }
}

/// A link fault's message, with what it costs: the last snapshot and the steps since.
/// `last`: the snapshot's step count and the training time from it to the failed step's start
/// (not through the receiver's timeout).
fn lost_work(what: String, step: u64, last: Option<(u64, Duration)>, snapshots: bool) -> String {
    match last {
        Some((s, t)) => format!(
            "{what}; the step's gradients were not applied. The last snapshot was taken after {s} steps: global steps {s}-{step} \
             ({:.1} s of training) must be redone: resume with --resume",
            t.as_secs_f64()
        ),
        None if snapshots => format!(
            "{what}; the step's gradients were not applied. No snapshot had been written yet: the run must start over"
        ),
        None => format!(
            "{what}; the step's gradients were not applied. No snapshot was written: the run must start over (--snapshot-dir makes a run resumable)"
        ),
    }
}

/// Trains `engine` alone (fused step) on `data.train`, scoring it on `data.test` every epoch.
pub fn train(
    engine: &mut dyn Engine,
    data: &DataSplit,
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochReport>> {
    train_from(
        &mut Replicas::one(engine),
        data,
        cfg,
        Start::FRESH,
        None,
        observer,
    )
}

/// Snapshots during a run: where, and every how many steps (plus one at every epoch's end).
pub struct Snapshots<'a> {
    pub dir: &'a SnapshotDir,
    /// 0: only at epoch ends.
    pub every: usize,
}

/// Where a run starts: the position, and the steps already done before it (which name the
/// snapshot files, and keep counting across a resume with another replica count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    pub at: Position,
    pub global_step: u64,
    /// --precision f16: the loss scaler's state at that point (None: start it afresh).
    pub scaler: Option<LossScaler>,
}

impl Start {
    pub const FRESH: Start = Start {
        at: Position::START,
        global_step: 0,
        scaler: None,
    };
}

/// Trains `replicas` from `start` for `cfg.epochs` epochs, writing snapshots if asked.
/// `cfg.batch_size` is each replica's batch; the global batch is that times the replicas.
pub fn train_from(
    replicas: &mut Replicas,
    data: &DataSplit,
    cfg: &TrainConfig,
    start: Start,
    snapshots: Option<Snapshots>,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochReport>> {
    cfg.validate()?;
    if let (Some(resumed), Some(_)) = (start.scaler, replicas.scaler) {
        replicas.scaler = Some(resumed);
    }
    let n = data.train.len();
    let world = replicas.world();
    let global = cfg.global_batch(world)?;
    let steps = n.div_ceil(global);
    let mut reports = Vec::new();
    // The data set's identity for snapshots: hashed once (47 MB for 60k images), not per snapshot.
    let fingerprint = snapshots
        .as_ref()
        .map(|_| data.train.fingerprint())
        .unwrap_or(0);
    let mut global_step = start.global_step;
    // The training loss so far this epoch, gathered at every check: a run that stays finite
    // but far above a uniform guess has diverged, and its weights must not be snapshotted.
    let limit = DIVERGED_LOSS_MULTIPLE * std::f64::consts::LN_10;
    let check = |replicas: &mut Replicas,
                 so_far: &mut Totals,
                 epoch: usize,
                 step: usize|
     -> Result<Totals> {
        let mut window = Totals::default();
        for e in replicas.engines.iter_mut() {
            let t = e.take_train_totals()?;
            window.add(t.loss_sum, t.correct, t.seen);
        }
        so_far.add(window.loss_sum, window.correct, window.seen);
        let loss = window.mean_loss();
        // NaN and infinity count as diverged too.
        if window.seen > 0 && (loss.is_nan() || loss > limit) {
            return Err(Error::Diverged {
                epoch,
                step,
                what: format!(
                    "the mean training loss over the last {} examples is {loss:.4e}, above {DIVERGED_LOSS_MULTIPLE}·ln 10 = {limit:.2} \
                     ({DIVERGED_LOSS_MULTIPLE}× the loss of a uniform guess)",
                    window.seen
                ),
            });
        }
        Ok(window)
    };
    // Bytes moved since the last call, per replica (staged RAM → VRAM, read back VRAM → RAM).
    // (None for an engine that stages nothing: the CPU.)
    let take_moved = |replicas: &mut Replicas| -> (Option<u64>, u64) {
        let n = replicas.engines.len().max(1) as u64;
        let (mut staged, mut read) = (None, 0);
        for e in replicas.engines.iter_mut() {
            if let Some(b) = e.take_staged_bytes() {
                *staged.get_or_insert(0) += b;
            }
            read += e.take_readback_bytes().unwrap_or(0);
        }
        (staged.map(|b| b / n), read / n)
    };
    let started = Instant::now();
    let every = observer.metrics_every();
    let mut last_snapshot: Option<(u64, Instant)> = None;
    let snapshot = |replicas: &mut Replicas, next: Position, global_step: u64| -> Result<()> {
        let Some(s) = &snapshots else { return Ok(()) };
        let state = TrainState {
            next,
            global_step,
            seed: cfg.seed,
            lr: cfg.lr,
            batch_size: cfg.batch_size,
            replicas: world,
            train_len: n,
            train_fingerprint: fingerprint,
            loss_scale: replicas.scaler.map(|s| (s.scale, s.good_steps)),
        };
        save_snapshot(replicas.first(), s.dir, &state)
    };
    for epoch in start.at.epoch..=cfg.epochs {
        let start_time = Instant::now();
        let order = epoch_order(n, cfg.seed, epoch);
        let first = if epoch == start.at.epoch {
            start.at.step
        } else {
            0
        };
        let mut traffic = Traffic::default();
        let mut split = StepSplit::default();
        let mut train = Totals::default();
        let mut skipped = 0u64;
        // Deal this epoch's shards: local replica i is replica first_replica() + i of the job.
        let shards: Vec<Shard> = if replicas.fused {
            Vec::new()
        } else {
            let base = replicas.all_reduce.first_replica();
            let shards: Vec<Shard> = (0..replicas.engines.len())
                .map(|i| Shard::deal(&data.train, &order, global, world, base + i))
                .collect();
            for (e, s) in replicas.engines.iter_mut().zip(&shards) {
                e.load_shard(&s.data)?;
            }
            shards
        };
        let (mut window_traffic, mut window_moved) = (Traffic::default(), (0u64, 0u64));
        let mut epoch_moved = (0u64, 0u64);
        for (step, batch) in order.chunks(global).enumerate().skip(first) {
            if replicas.fused {
                let t = Instant::now();
                replicas.engines[0].train_step(&data.train, batch, cfg.lr)?;
                if let Some(tr) = replicas.trace.as_mut().filter(|tr| tr.wants(global_step)) {
                    tr.span(
                        "stage + record the fused step",
                        0,
                        t,
                        Instant::now(),
                        serde_json::json!({"step": global_step}),
                    );
                }
            } else {
                let step_start = Instant::now();
                let (moved, skip) = match replicas.step(
                    &shards,
                    step,
                    batch.len(),
                    global_step,
                    cfg.lr,
                    &mut split,
                ) {
                    Err(Error::LinkFault(what)) => {
                        let last = last_snapshot.map(|(s, t)| (s, step_start.duration_since(t)));
                        return Err(Error::LinkFault(lost_work(
                            what,
                            global_step,
                            last,
                            snapshots.is_some(),
                        )));
                    }
                    other => other?,
                };
                traffic += moved;
                window_traffic += moved;
                skipped += skip as u64;
            }
            global_step += 1;
            observer.step(epoch, step + 1, steps);
            if every > 0 && global_step.is_multiple_of(every) && step + 1 < steps {
                let window = check(replicas, &mut train, epoch, step + 1)?;
                let (staged, read) = take_moved(replicas);
                let moved = (staged.unwrap_or(0), read);
                epoch_moved = (epoch_moved.0 + moved.0, epoch_moved.1 + moved.1);
                window_moved = (window_moved.0 + moved.0, window_moved.1 + moved.1);
                observer.record(&crate::network::metrics::Record {
                    kind: "step",
                    epoch,
                    global_step,
                    replicas: world,
                    global_batch: global,
                    train_loss: window.mean_loss(),
                    train_accuracy: window.accuracy(),
                    time_s: started.elapsed().as_secs_f64(),
                    staged_bytes: window_moved.0,
                    allreduce_sent_bytes: window_traffic.sent,
                    allreduce_received_bytes: window_traffic.received,
                    readback_bytes: window_moved.1,
                    test_loss: None,
                    test_accuracy: None,
                    epoch_time_s: None,
                });
                (window_traffic, window_moved) = (Traffic::default(), (0, 0));
            }
            if let Some(s) = &snapshots {
                if s.every > 0 && global_step.is_multiple_of(s.every as u64) && step + 1 < steps {
                    check(replicas, &mut train, epoch, step + 1)?;
                    let next = Position {
                        epoch,
                        step: step + 1,
                    };
                    let t = Instant::now();
                    snapshot(replicas, next, global_step)?;
                    last_snapshot = Some((global_step, Instant::now()));
                    if let Some(tr) = replicas
                        .trace
                        .as_mut()
                        .filter(|tr| tr.wants(global_step - 1))
                    {
                        tr.span(
                            "snapshot write",
                            0,
                            t,
                            Instant::now(),
                            serde_json::json!({"step": global_step}),
                        );
                    }
                }
            }
            if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::Interrupted(format!(
                    "interrupted at epoch {epoch}, step {} of {steps} (global step {global_step})",
                    step + 1
                )));
            }
        }
        check(replicas, &mut train, epoch, steps)?;
        // Under MPI each process saw its own replicas' examples: the epoch line shows the job's.
        let train = replicas.all_reduce.sum_totals(train)?;
        if !replicas.fused {
            // Every replica here, then every process of the job, holds the same weights (the
            // read-back this takes is counted in this epoch's bytes, just below).
            let model = replicas.check_in_step(epoch, steps)?;
            replicas
                .all_reduce
                .agree(&format!("after epoch {epoch}"), model.bit_hash())?;
        }
        let (rest_staged, rest_read) = take_moved(replicas);
        let staged_bytes = rest_staged.map(|b| b + epoch_moved.0);
        let readback_bytes = epoch_moved.1 + rest_read;
        let train_time = start_time.elapsed();
        let test_start = Instant::now();
        let test = replicas
            .first()
            .evaluate(&data.test, cfg.batch_size.max(EVAL_BATCH))?;
        let test_time = test_start.elapsed();
        snapshot(
            replicas,
            Position {
                epoch: epoch + 1,
                step: 0,
            },
            global_step,
        )?;
        if snapshots.is_some() {
            last_snapshot = Some((global_step, Instant::now()));
        }
        let report = EpochReport {
            epoch,
            train,
            test,
            train_time,
            test_time,
            staged_bytes,
            replicas: world,
            global_batch: global,
            traffic,
            split: (!replicas.fused).then_some(split),
            skipped_steps: skipped,
            loss_scale: replicas.scaler.map(|s| s.scale),
            readback_bytes,
            time_s: started.elapsed().as_secs_f64(),
            global_step,
        };
        observer.epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Reads the weights back and writes a snapshot, unless they are no longer finite: then the
/// run has diverged and the snapshots already on disk are left as they are.
fn save_snapshot(engine: &mut dyn Engine, dir: &SnapshotDir, state: &TrainState) -> Result<()> {
    let model = engine.model()?;
    if let Some((name, _, _)) = model
        .tensors()
        .iter()
        .find(|t| t.2.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Diverged {
            epoch: state.next.epoch,
            step: state.next.step,
            what: format!("{name} holds non-finite values"),
        });
    }
    let path = dir.save(&model, state)?;
    log::info!(
        "snapshot {} (next: epoch {}, step {})",
        path.display(),
        state.next.epoch,
        state.next.step
    );
    Ok(())
}
