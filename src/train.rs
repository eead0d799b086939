//! The training loop: the same for the CPU and the GPU, and for one device or many, which
//! differ only in the [`Engine`]s that compute and the [`AllReduce`] that joins them.
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

use crate::checkpoint::{Position, SnapshotDir, TrainState};
use crate::data::{epoch_order, DataSplit, Dataset, PIXELS};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout};
use crate::parallel::{self, AllReduce, Identity, Traffic};
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
    fn forward_backward(
        &mut self,
        data: &Dataset,
        batch: &[u32],
        global_rows: usize,
        loss_scale: f32,
    ) -> Result<()>;
    /// Copies gradient elements `range` ([`ParamLayout::packed`] indices) into `out`, waiting
    /// only for the work that produces them.
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

/// The number format the network computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Everything in FP32.
    #[default]
    F32,
    /// Mixed precision: inputs, activations, error terms and a working copy of the weights in
    /// FP16, products accumulated in FP32, FP32 master weights and gradients, dynamic loss
    /// scaling (PyTorch AMP's recipe).
    F16,
}

/// Dynamic loss scaling, as PyTorch's GradScaler does it: the loss (so every gradient) is
/// multiplied by `scale` so that small FP16 error terms do not round to zero; a step whose
/// gradients overflowed (inf or NaN) is skipped and the scale halved; after `GROWTH_INTERVAL`
/// good steps in a row the scale doubles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    pub scale: f32,
    /// Good steps in a row since the scale last changed.
    pub good_steps: u32,
}

impl LossScaler {
    /// GradScaler's defaults: 2^16, doubled after 2,000 good steps.
    pub const INITIAL: f32 = 65536.0;
    pub const GROWTH_INTERVAL: u32 = 2000;

    pub fn new(scale: f32) -> Self {
        LossScaler {
            scale,
            good_steps: 0,
        }
    }

    /// Looks at the summed, still scaled gradient: unscales it and returns true if every
    /// value is finite (apply it), else halves the scale and returns false (skip the step).
    pub fn unscale(&mut self, grad: &mut [f32]) -> bool {
        if grad.iter().any(|g| !g.is_finite()) {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            return false;
        }
        let inv = 1.0 / self.scale;
        for g in grad.iter_mut() {
            *g *= inv;
        }
        self.good_steps += 1;
        if self.good_steps == Self::GROWTH_INTERVAL {
            self.scale = (self.scale * 2.0).min(f32::MAX / 4.0);
            self.good_steps = 0;
        }
        true
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

/// Where the time of a data-parallel epoch went, by the host's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepSplit {
    /// Forward and backward: recording the work and waiting for the gradients.
    pub compute: Duration,
    /// The all-reduce itself (gradients already on the host), and writing the sum back.
    pub all_reduce: Duration,
    /// Recording the update.
    pub update: Duration,
}

/// One epoch's results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochReport {
    /// Counted from 1.
    pub epoch: usize,
    pub train: Totals,
    pub test: Totals,
    /// Time of the training steps (including the one read-back of the totals), not the test.
    pub train_time: Duration,
    /// Time of the test pass (forward only, the whole test set).
    pub test_time: Duration,
    /// Bytes of training batches sent from RAM to device memory this epoch, per replica (GPU only).
    pub staged_bytes: Option<u64>,
    /// Replicas in the job and the global batch (replicas × batch size).
    pub replicas: usize,
    pub global_batch: usize,
    /// What the all-reduce moved this epoch, per replica (replica 0's count; the ring loads
    /// every replica alike). Zero for one replica.
    pub traffic: Traffic,
    /// The data-parallel step's time split; `None` on the fused one-replica path.
    pub split: Option<StepSplit>,
    /// --precision f16: steps skipped because their gradients overflowed, and the loss scale
    /// at the epoch's end.
    pub skipped_steps: u64,
    pub loss_scale: Option<f32>,
    /// Bytes read back from device memory this epoch, per replica (totals, gradients, weights).
    pub readback_bytes: u64,
    /// Seconds since the run started, at the epoch's end.
    pub time_s: f64,
    /// Steps done in the whole run at the epoch's end.
    pub global_step: u64,
}

impl EpochReport {
    /// The epoch as a line of the metrics file.
    pub fn record(&self) -> crate::network::metrics::Record {
        crate::network::metrics::Record {
            kind: "epoch",
            epoch: self.epoch,
            global_step: self.global_step,
            replicas: self.replicas,
            global_batch: self.global_batch,
            train_loss: self.train.mean_loss(),
            train_accuracy: self.train.accuracy(),
            time_s: self.time_s,
            staged_bytes: self.staged_bytes.unwrap_or(0),
            allreduce_sent_bytes: self.traffic.sent,
            allreduce_received_bytes: self.traffic.received,
            readback_bytes: self.readback_bytes,
            test_loss: Some(self.test.mean_loss()),
            test_accuracy: Some(self.test.accuracy()),
            epoch_time_s: Some(self.train_time.as_secs_f64()),
        }
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

impl EpochReport {
    pub fn images_per_sec(&self) -> f64 {
        self.train.seen as f64 / self.train_time.as_secs_f64().max(1e-9)
    }

    pub fn line(&self, epochs: usize) -> String {
        let parallel = self.split.is_some();
        let staged = match self.staged_bytes {
            Some(b) => format!(
                "  staged {:.1} MB{}, read back {:.2} MB",
                b as f64 / 1e6,
                if parallel { "/replica" } else { "" },
                self.readback_bytes as f64 / 1e6
            ),
            None => String::new(),
        };
        let replicas = if parallel {
            let split = self.split.unwrap_or_default();
            let steps = self
                .train
                .seen
                .div_ceil(self.global_batch.max(1) as u64)
                .max(1) as f64;
            let us = |d: Duration| d.as_secs_f64() * 1e6 / steps;
            format!(
                "  all-reduced {:.1} MB/replica  |  step µs: compute {:.0}, all-reduce {:.0}, update {:.0}  |  {} replica{} × {} = global batch {}",
                self.traffic.sent as f64 / 1e6,
                us(split.compute),
                us(split.all_reduce),
                us(split.update),
                self.replicas,
                if self.replicas == 1 { "" } else { "s" },
                self.global_batch / self.replicas.max(1),
                self.global_batch,
            )
        } else {
            String::new()
        };
        let scaling = match self.loss_scale {
            Some(scale) => format!(
                "  |  f16: loss scale {scale}, {} step{} skipped",
                self.skipped_steps,
                if self.skipped_steps == 1 { "" } else { "s" }
            ),
            None => String::new(),
        };
        format!(
            "epoch {:>2}/{epochs}  train loss {:.4}  acc {:5.2}%  |  test loss {:.4}  acc {:5.2}% ({:.2} s)  |  {:.3} s  {:>9.0} images/s{staged}{replicas}{scaling}",
            self.epoch,
            self.train.mean_loss(),
            self.train.accuracy(),
            self.test.mean_loss(),
            self.test.accuracy(),
            self.test_time.as_secs_f64(),
            self.train_time.as_secs_f64(),
            self.images_per_sec()
        )
    }
}

/// Things the loop tells whoever runs it (progress bars, logs, metrics).
pub trait Observer {
    /// Every how many steps to hand [`Observer::record`] a metrics record (0: never; each
    /// record reads the training totals back, a wait for the GPU).
    fn metrics_every(&self) -> u64 {
        0
    }
    /// A metrics record of the steps since the previous one.
    fn record(&mut self, _record: &crate::network::metrics::Record) {}
    /// Called after every step with the step number within the epoch (from 1).
    fn step(&mut self, _epoch: usize, _step: usize, _steps: usize) {}
    /// Called after every epoch.
    fn epoch(&mut self, _report: &EpochReport) {}
}

/// An observer that does nothing (tests, benchmarks).
pub struct Quiet;
impl Observer for Quiet {}

/// A pass as the GPU timed it: (what, start in seconds from its first timestamp, duration).
pub type GpuSpan = (&'static str, f64, f64);

/// Trace tracks of the GPUs' own timestamps: replica r's is GPU_TRACK + r.
pub const GPU_TRACK: usize = 1000;

/// The gradient's buckets, in the order the all-reduce takes them: the output layer's first,
/// because backpropagation finishes it first (the chapter synchronises layer by layer).
pub fn buckets_of(l: &ParamLayout) -> [Range<usize>; 2] {
    [l.offsets[2]..l.total, 0..l.offsets[2]]
}

/// [`buckets_of`] the default network.
pub fn buckets() -> [Range<usize>; 2] {
    buckets_of(&ParamLayout::packed())
}

/// The workers of a run: one engine, or N replicas with the all-reduce that joins them.
pub struct Replicas<'a> {
    engines: Vec<&'a mut dyn Engine>,
    all_reduce: Box<dyn AllReduce + 'a>,
    /// One replica alone takes the fused step.
    fused: bool,
    /// Start the output layer's all-reduce before the hidden layer's gradient is read, so it
    /// runs while the GPU still computes (PyTorch DDP's gradient buckets).
    overlap: bool,
    /// Each local replica's gradient on the host, packed layout (allocated once).
    grads: Vec<Vec<f32>>,
    /// The gradient's buckets in that layout, output layer first.
    buckets: [Range<usize>; 2],
    /// --precision f16: dynamic loss scaling (the gradients are then always read back).
    scaler: Option<LossScaler>,
    /// --trace: the timeline being recorded.
    trace: Option<crate::network::trace::Trace>,
}

impl<'a> Replicas<'a> {
    /// One engine on its own, fused step.
    pub fn one(engine: &'a mut dyn Engine) -> Self {
        Replicas {
            engines: vec![engine],
            all_reduce: Box::new(Identity),
            fused: true,
            overlap: false,
            grads: Vec::new(),
            buckets: buckets(),
            scaler: None,
            trace: None,
        }
    }

    /// Records a timeline of the steps `trace` asks for.
    pub fn with_trace(mut self, trace: crate::network::trace::Trace) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The recorded timeline, once training is over.
    pub fn take_trace(&mut self) -> Option<crate::network::trace::Trace> {
        self.trace.take()
    }

    /// The all-reduce, for what it knows of the job (its size, MPI's gathers).
    pub fn all_reduce(&mut self) -> &mut dyn AllReduce {
        &mut *self.all_reduce
    }

    /// Local replicas in this process.
    pub fn local(&self) -> usize {
        self.engines.len()
    }

    /// Trains in mixed precision with dynamic loss scaling, starting at `scaler`.
    pub fn with_loss_scaling(mut self, scaler: LossScaler) -> Self {
        self.scaler = Some(scaler);
        self
    }

    /// Data-parallel replicas (one or more) joined by `all_reduce`, which must know as many
    /// local replicas as `engines` holds. Every engine must start from the same weights.
    pub fn data_parallel(
        engines: Vec<&'a mut dyn Engine>,
        all_reduce: Box<dyn AllReduce + 'a>,
        overlap: bool,
    ) -> Result<Self> {
        if engines.is_empty() {
            return Err(Error::Config("at least one replica is needed".into()));
        }
        let hidden = engines[0].hidden();
        if let Some(e) = engines.iter().find(|e| e.hidden() != hidden) {
            return Err(Error::Config(format!(
                "replicas of different widths ({} and {} hidden neurons)",
                hidden,
                e.hidden()
            )));
        }
        let layout = ParamLayout::packed_for(hidden);
        let grads = vec![vec![0.0; layout.total]; engines.len()];
        Ok(Replicas {
            engines,
            all_reduce,
            fused: false,
            overlap,
            grads,
            buckets: buckets_of(&layout),
            scaler: None,
            trace: None,
        })
    }

    /// Replicas in the whole job.
    pub fn world(&self) -> usize {
        if self.fused {
            1
        } else {
            self.all_reduce.world()
        }
    }

    /// The engine of local replica 0 (it evaluates, and its weights go into snapshots).
    pub fn first(&mut self) -> &mut dyn Engine {
        &mut *self.engines[0]
    }

    pub fn describe(&self) -> String {
        let mut s = self.engines[0].describe();
        if self.engines.len() > 1 {
            s += &format!(" (replica 0 of {})", self.engines.len());
            for (i, e) in self.engines.iter().enumerate().skip(1) {
                s += &format!("\n        replica {i}: {}", e.describe());
            }
        }
        if !self.fused {
            s += &format!(
                "\n  all-reduce: {}{}",
                self.all_reduce.describe(),
                if self.overlap {
                    ", output layer's sync overlapped with the hidden layer's backward"
                } else {
                    ""
                }
            );
        }
        s
    }

    /// Reads every replica's weights and checks they are the same, bit for bit.
    pub fn check_in_step(&mut self, epoch: usize, step: usize) -> Result<Model> {
        let first = self.engines[0].model()?;
        let hash = first.bit_hash();
        for (i, e) in self.engines.iter_mut().enumerate().skip(1) {
            let h = e.model()?.bit_hash();
            if h != hash {
                return Err(Error::Replicas(format!(
                    "replica {i} holds different weights from replica 0 after epoch {epoch}, step {step} \
                     (weight hashes {h:016x} and {hash:016x}): the replicas have drifted apart"
                )));
            }
        }
        Ok(first)
    }

    /// One data-parallel step: every local replica's part of `global` (shard-local indices in
    /// `local[i]`), the all-reduce, the update. Returns what replica 0 sent and received.
    fn step(
        &mut self,
        shards: &[Shard],
        step: usize,
        global_rows: usize,
        global_step: u64,
        lr: f32,
        split: &mut StepSplit,
    ) -> Result<(Traffic, bool)> {
        let t0 = Instant::now();
        let scale = self.scaler.map_or(1.0, |s| s.scale);
        // The timeline, if this step is traced: one track per replica.
        let mut trace = self.trace.take();
        let traced = trace.as_ref().is_some_and(|t| t.wants(global_step));
        let mut span = |name: &str, replica: usize, start: Instant, args: serde_json::Value| {
            if let Some(t) = trace.as_mut().filter(|_| traced) {
                t.span(name, replica, start, Instant::now(), args);
            }
        };
        let base = self.all_reduce.first_replica();
        let mut submitted = Vec::with_capacity(self.engines.len());
        // 1. forward + backward on every replica: each writes its gradient.
        for (i, (engine, shard)) in self.engines.iter_mut().zip(shards).enumerate() {
            let t = Instant::now();
            let batch = shard.batch(step);
            engine.forward_backward(&shard.data, batch, global_rows, scale)?;
            submitted.push(Instant::now());
            span(
                "stage + record forward/backward",
                base + i,
                t,
                serde_json::json!({"step": global_step, "rows": batch.len()}),
            );
        }
        let mut traffic = Traffic::default();
        let mut result = Ok((Traffic::default(), false));
        // Mixed precision reads the gradient back even alone: the host checks it for
        // overflow and unscales it.
        if self.all_reduce.world() > 1 || self.scaler.is_some() {
            // 2. all-reduce, bucket by bucket: the output layer's gradient first. Without
            // --overlap every bucket is read before any is summed (the host waits for the
            // whole backward pass); with it, the output layer's sum runs while the GPUs are
            // still computing the hidden layer's gradient.
            let mut t_reduce = Duration::ZERO;
            let buckets = self.buckets.clone();
            let names = ["output layer", "hidden layer"];
            let read = |engines: &mut Vec<&'a mut dyn Engine>,
                        grads: &mut Vec<Vec<f32>>,
                        b: &Range<usize>,
                        name: &str,
                        span: &mut dyn FnMut(&str, usize, Instant, serde_json::Value)|
             -> Result<()> {
                for (i, (e, g)) in engines.iter_mut().zip(grads.iter_mut()).enumerate() {
                    let t = Instant::now();
                    e.read_gradient(b.clone(), &mut g[b.clone()])?;
                    span(
                        &format!("wait for gradient: {name}"),
                        base + i,
                        t,
                        serde_json::json!({"bytes": 4 * b.len()}),
                    );
                }
                Ok(())
            };
            if !self.overlap {
                for (b, name) in buckets.iter().zip(names) {
                    read(&mut self.engines, &mut self.grads, b, name, &mut span)?;
                }
            }
            for (b, name) in buckets.iter().zip(names) {
                if self.overlap {
                    read(&mut self.engines, &mut self.grads, b, name, &mut span)?;
                }
                let t = Instant::now();
                if self.all_reduce.world() > 1 {
                    let mut views: Vec<&mut [f32]> =
                        self.grads.iter_mut().map(|g| &mut g[b.clone()]).collect();
                    let moved = self.all_reduce.all_reduce(global_step, &mut views);
                    let moved = match moved {
                        Ok(m) => m,
                        Err(e) => {
                            self.trace = trace;
                            return Err(e);
                        }
                    };
                    traffic += moved[0];
                    let peers = self.all_reduce.world();
                    for (i, m) in moved.iter().enumerate() {
                        span(
                            &format!("all-reduce: {name}"),
                            base + i,
                            t,
                            serde_json::json!({
                                "bytes_sent": m.sent, "bytes_received": m.received, "messages": m.messages, "peers": peers,
                            }),
                        );
                    }
                }
                t_reduce += t.elapsed();
            }
            let mut skip = false;
            if let Some(scaler) = &mut self.scaler {
                // Every replica holds the same sum, so one look decides for all (and every
                // MPI rank decides alike).
                let (first, rest) = self.grads.split_at_mut(1);
                if !scaler.unscale(&mut first[0]) {
                    skip = true;
                } else {
                    for g in rest {
                        g.copy_from_slice(&first[0]);
                    }
                }
            }
            if skip {
                split.compute += t0.elapsed() - t_reduce;
                split.all_reduce += t_reduce;
                result = Ok((traffic, true));
            } else {
                let t = Instant::now();
                for (i, (e, g)) in self.engines.iter_mut().zip(&self.grads).enumerate() {
                    let tw = Instant::now();
                    e.write_gradient(g)?;
                    span("write gradient", base + i, tw, serde_json::json!({}));
                }
                t_reduce += t.elapsed();
                split.compute += t0.elapsed() - t_reduce;
                split.all_reduce += t_reduce;
            }
        } else {
            split.compute += t0.elapsed();
        }
        if let Ok((_, true)) = result {
            self.trace = trace.or(self.trace.take());
            return result;
        }
        // 3. the same update on every replica.
        let t = Instant::now();
        for (i, e) in self.engines.iter_mut().enumerate() {
            let tu = Instant::now();
            e.apply_update(lr)?;
            span("update", base + i, tu, serde_json::json!({"lr": lr}));
        }
        split.update += t.elapsed();
        if traced {
            // The GPU's own clock, where it has one: its passes on a track of their own,
            // anchored at the host's submission (the GPU cannot start before it).
            for (i, (e, &at)) in self.engines.iter_mut().zip(&submitted).enumerate() {
                if let (Some(times), Some(t)) = (e.gpu_times()?, trace.as_mut()) {
                    let t0 = t.now_us(at);
                    for (name, start, dur) in times {
                        t.span_at(
                            name,
                            GPU_TRACK + base + i,
                            t0 + start * 1e6,
                            dur * 1e6,
                            serde_json::json!({"step": global_step, "clock": "GPU timestamps"}),
                        );
                    }
                }
            }
        }
        self.trace = trace.or(self.trace.take());
        Ok((traffic, false))
    }
}

/// One replica's part of an epoch: its examples, copied into its own buffer in the order it
/// will train on them, and where each step's batch starts.
struct Shard {
    data: Dataset,
    /// Shard-local indices 0, 1, 2, ... (a batch is a slice of them).
    indices: Vec<u32>,
    /// Step s trains on indices[starts[s]..starts[s + 1]].
    starts: Vec<usize>,
}

impl Shard {
    /// Deals replica `r`'s part of every global batch of `order` into its own shard.
    fn deal(train: &Dataset, order: &[u32], global: usize, world: usize, r: usize) -> Shard {
        let mut picked: Vec<u32> = Vec::with_capacity(order.len() / world + global);
        let mut starts = vec![0];
        for batch in order.chunks(global) {
            picked.extend_from_slice(&batch[parallel::part(batch.len(), world, r)]);
            starts.push(picked.len());
        }
        let mut images = Vec::with_capacity(picked.len() * PIXELS);
        for &i in &picked {
            images.extend_from_slice(train.image(i as usize));
        }
        let labels = picked.iter().map(|&i| train.labels[i as usize]).collect();
        Shard {
            data: Dataset { images, labels },
            indices: (0..picked.len() as u32).collect(),
            starts,
        }
    }

    fn batch(&self, step: usize) -> &[u32] {
        &self.indices[self.starts[step]..self.starts[step + 1]]
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
