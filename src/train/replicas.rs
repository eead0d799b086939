//! The workers of a run: one engine, or N replicas and the all-reduce that joins them; the
//! shard each replica trains on; and the data-parallel step in its three verbs.
//!
//! The choice between the fused step (one replica alone: forward, backward and update in one
//! go, no gradient buffer) and the three verbs is made here, once, when the replicas are
//! built; the training loop only calls [`Replicas::step`].

use super::{LossScaler, StepSplit, Timeline};
use crate::data::{Dataset, PIXELS};
use crate::engine::{Counters, Engine, Target};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout};
use crate::parallel::all_reduce::{self, AllReduce, Identity, Traffic};
use serde_json::json;
use std::ops::Range;
use std::time::{Duration, Instant};

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

/// What one step did besides computing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stepped {
    /// What local replica 0 sent and received in the all-reduce.
    pub traffic: Traffic,
    /// --precision f16: the gradients overflowed, the update was skipped.
    pub skipped: bool,
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
    /// --trace: where the phases of traced steps go.
    timeline: Option<&'a mut dyn Timeline>,
    /// The global step being traced, if the current one is.
    traced: Option<u64>,
    /// Each replica's counters taken early (to trace a step's GPU timing), not yet reported.
    pending: Vec<Counters>,
    /// This epoch's shard of each local replica (empty on the fused path).
    shards: Vec<Shard>,
    /// Where this epoch's time went so far.
    split: StepSplit,
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
            timeline: None,
            traced: None,
            pending: vec![Counters::default()],
            shards: Vec::new(),
            split: StepSplit::default(),
        }
    }

    /// Data-parallel replicas (one or more) joined by `all_reduce`, which must know as many
    /// local replicas as `engines` holds. Every engine must start from the same weights.
    pub fn data_parallel(
        mut engines: Vec<&'a mut dyn Engine>,
        all_reduce: Box<dyn AllReduce + 'a>,
        overlap: bool,
    ) -> Result<Self> {
        if engines.is_empty() {
            return Err(Error::Config("at least one replica is needed".into()));
        }
        let hidden = engines[0].model()?.hidden();
        for e in engines.iter_mut().skip(1) {
            let h = e.model()?.hidden();
            if h != hidden {
                return Err(Error::Config(format!(
                    "replicas of different widths ({hidden} and {h} hidden neurons)"
                )));
            }
        }
        let layout = ParamLayout::packed_for(hidden);
        let n = engines.len();
        Ok(Replicas {
            engines,
            all_reduce,
            fused: false,
            overlap,
            grads: vec![vec![0.0; layout.total]; n],
            buckets: buckets_of(&layout),
            scaler: None,
            timeline: None,
            traced: None,
            pending: vec![Counters::default(); n],
            shards: Vec::new(),
            split: StepSplit::default(),
        })
    }

    /// Records the phases of the steps `timeline` wants.
    pub fn with_timeline(mut self, timeline: &'a mut dyn Timeline) -> Self {
        self.timeline = Some(timeline);
        self
    }

    /// Trains in mixed precision with dynamic loss scaling, starting at `scaler`.
    pub fn with_loss_scaling(mut self, scaler: LossScaler) -> Self {
        self.scaler = Some(scaler);
        self
    }

    /// The loss scaler's state (--precision f16).
    pub fn scaler(&self) -> Option<LossScaler> {
        self.scaler
    }

    /// Continues loss scaling from a resumed snapshot's state (if this run scales at all).
    pub(super) fn resume_scaler(&mut self, resumed: Option<LossScaler>) {
        if let (Some(r), Some(s)) = (resumed, self.scaler.as_mut()) {
            *s = r;
        }
    }

    /// The all-reduce, for what it knows of the job (its size, MPI's gathers).
    pub fn all_reduce(&mut self) -> &mut dyn AllReduce {
        &mut *self.all_reduce
    }

    /// Local replicas in this process.
    pub fn local(&self) -> usize {
        self.engines.len()
    }

    /// Replicas in the whole job.
    pub fn world(&self) -> usize {
        if self.fused {
            1
        } else {
            self.all_reduce.world()
        }
    }

    /// Whether this is one replica alone on the fused step.
    pub fn fused(&self) -> bool {
        self.fused
    }

    /// The engine of local replica 0 (it evaluates, and its weights go into snapshots).
    pub fn first(&mut self) -> &mut dyn Engine {
        &mut *self.engines[0]
    }

    /// What sets this run's rounding, for snapshots: replica 0's engine (`{:#}`) and the step
    /// (fused, or separated into gradient, all-reduce and update). A run resumed on another
    /// goes on correctly but not bit for bit as the first would have.
    pub fn arithmetic(&self) -> String {
        let step = if self.fused { "fused" } else { "separated" };
        format!("{:#}, {step} step", self.engines[0])
    }

    pub fn describe(&self) -> String {
        let mut s = self.engines[0].to_string();
        if self.engines.len() > 1 {
            s += &format!(" (replica 0 of {})", self.engines.len());
            for (i, e) in self.engines.iter().enumerate().skip(1) {
                s += &format!("\n        replica {i}: {e}");
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

    /// Deals this epoch's shards: local replica i is replica first_replica() + i of the job,
    /// and trains on its part of every global batch of `order`.
    pub(super) fn deal(&mut self, train: &Dataset, order: &[u32], global: usize) {
        if self.fused {
            return;
        }
        let (base, world) = (self.all_reduce.first_replica(), self.all_reduce.world());
        self.shards = (0..self.engines.len())
            .map(|i| Shard::deal(train, order, global, world, base + i))
            .collect();
    }

    /// What the engines counted since the last call, summed over the local replicas (bytes
    /// per replica: the mean of theirs).
    pub fn take_counters(&mut self) -> Result<Counters> {
        let n = self.engines.len() as u64;
        let mut sum = Counters::default();
        for (e, pending) in self.engines.iter_mut().zip(&mut self.pending) {
            let mut c = std::mem::take(pending);
            c.merge(e.take_counters()?);
            sum.merge(c);
        }
        sum.staged_bytes = sum.staged_bytes.map(|b| b / n);
        sum.readback_bytes = sum.readback_bytes.map(|b| b / n);
        Ok(sum)
    }

    /// This epoch's time split so far (reset).
    pub(super) fn take_split(&mut self) -> Option<StepSplit> {
        let split = std::mem::take(&mut self.split);
        (!self.fused).then_some(split)
    }

    /// Reads every local replica's weights, checks they are the same, bit for bit, and that
    /// every process of the job holds the same (`when` names the moment for the message).
    pub(super) fn check_same_weights(&mut self, when: &str) -> Result<()> {
        if self.fused {
            return Ok(());
        }
        let first: Model = self.engines[0].model()?;
        let hash = first.bit_hash();
        for (i, e) in self.engines.iter_mut().enumerate().skip(1) {
            let h = e.model()?.bit_hash();
            if h != hash {
                return Err(Error::Replicas(format!(
                    "replica {i} holds different weights from replica 0 {when} \
                     (weight hashes {h:016x} and {hash:016x}): the replicas have drifted apart"
                )));
            }
        }
        self.all_reduce.agree(when, hash)
    }

    /// One training step on global batch `batch` (step `step` of the epoch, `global_step` of
    /// the run), at learning rate `lr`.
    pub(super) fn step(
        &mut self,
        data: &Dataset,
        step: usize,
        batch: &[u32],
        global_step: u64,
        lr: f32,
    ) -> Result<Stepped> {
        self.traced = self
            .timeline
            .as_ref()
            .filter(|t| t.wants(global_step))
            .map(|_| global_step);
        if self.fused {
            let t = Instant::now();
            self.engines[0].step(data, batch, Target::Update { lr })?;
            self.mark("stage + record the fused step", 0, t, json!({}));
            return Ok(Stepped::default());
        }
        // The chapter's step: forward and backward, the all-reduce, the update.
        let t0 = Instant::now();
        self.forward_backward(step, batch.len())?;
        let (traffic, skipped, syncing) = self.all_reduce_gradients(global_step)?;
        let t1 = Instant::now();
        if !skipped {
            self.update(lr)?;
        }
        self.split.compute += (t1 - t0).saturating_sub(syncing);
        self.split.all_reduce += syncing;
        self.split.update += t1.elapsed();
        self.trace_gpu()?;
        Ok(Stepped { traffic, skipped })
    }

    /// Verb 1, on every local replica: forward and backward on its part of the global batch
    /// of `global_rows` examples, its gradient into its own flat buffer.
    fn forward_backward(&mut self, step: usize, global_rows: usize) -> Result<()> {
        let loss_scale = self.scaler.map_or(1.0, |s| s.scale);
        let target = Target::Gradient {
            global_rows,
            loss_scale,
        };
        for i in 0..self.engines.len() {
            let t = Instant::now();
            let shard = &self.shards[i];
            let batch = shard.batch(step);
            self.engines[i].step(&shard.data, batch, target)?;
            let rows = batch.len();
            self.mark(
                "stage + record forward/backward",
                i,
                t,
                json!({"rows": rows}),
            );
        }
        Ok(())
    }

    /// Verb 2: the gradients summed across every replica of the job, bucket by bucket, the
    /// output layer's first, and the sum written back into every local replica. Returns what
    /// replica 0 moved, whether the step is to be skipped (mixed precision's overflow), and
    /// the time spent summing and writing (the rest of the time is waiting for gradients).
    fn all_reduce_gradients(&mut self, global_step: u64) -> Result<(Traffic, bool, Duration)> {
        // Mixed precision reads the gradient back even alone: the host checks it for
        // overflow and unscales it. One FP32 replica alone has nothing to sum.
        if self.all_reduce.world() == 1 && self.scaler.is_none() {
            return Ok((Traffic::default(), false, Duration::ZERO));
        }
        let buckets = self.buckets.clone();
        let names = ["output layer", "hidden layer"];
        // Without --overlap every bucket is read before any is summed (the host waits for the
        // whole backward pass); with it, the output layer's sum runs while the GPUs are still
        // computing the hidden layer's gradient.
        if !self.overlap {
            for (b, name) in buckets.iter().zip(names) {
                self.read_bucket(b, name)?;
            }
        }
        let (mut traffic, mut syncing) = (Traffic::default(), Duration::ZERO);
        for (b, name) in buckets.iter().zip(names) {
            if self.overlap {
                self.read_bucket(b, name)?;
            }
            if self.all_reduce.world() > 1 {
                let t = Instant::now();
                let mut views: Vec<&mut [f32]> =
                    self.grads.iter_mut().map(|g| &mut g[b.clone()]).collect();
                let moved = self.all_reduce.all_reduce(global_step, &mut views)?;
                syncing += t.elapsed();
                traffic += moved[0];
                let (peers, bytes_are) = (self.all_reduce.world(), self.all_reduce.bytes_are());
                for (i, m) in moved.iter().enumerate() {
                    let args = json!({"bytes_sent": m.sent, "bytes_received": m.received,
                        "messages": m.messages, "peers": peers, "bytes_are": bytes_are});
                    self.mark(&format!("all-reduce: {name}"), i, t, args);
                }
            }
        }
        let t = Instant::now();
        if !self.unscale() {
            return Ok((traffic, true, syncing + t.elapsed()));
        }
        for i in 0..self.engines.len() {
            let tw = Instant::now();
            self.engines[i].write_gradient(&self.grads[i])?;
            self.mark("write gradient", i, tw, json!({}));
        }
        Ok((traffic, false, syncing + t.elapsed()))
    }

    /// Reads bucket `b` of every local replica's gradient onto the host.
    fn read_bucket(&mut self, b: &Range<usize>, name: &str) -> Result<()> {
        for i in 0..self.engines.len() {
            let t = Instant::now();
            self.engines[i].read_gradient(b.clone(), &mut self.grads[i][b.clone()])?;
            let what = format!("wait for gradient: {name}");
            self.mark(&what, i, t, json!({"bytes": 4 * b.len()}));
        }
        Ok(())
    }

    /// --precision f16: unscales the summed gradient, or says to skip the step (false) when it
    /// overflowed. Every replica holds the same sum, so one look decides for all (and every MPI
    /// rank decides alike).
    fn unscale(&mut self) -> bool {
        let Some(scaler) = &mut self.scaler else {
            return true;
        };
        let (first, rest) = self.grads.split_at_mut(1);
        if !scaler.unscale(&mut first[0]) {
            return false;
        }
        for g in rest {
            g.copy_from_slice(&first[0]);
        }
        true
    }

    /// Verb 3, on every local replica: the same update, so the copies stay identical.
    fn update(&mut self, lr: f32) -> Result<()> {
        for i in 0..self.engines.len() {
            let t = Instant::now();
            self.engines[i].apply_update(lr)?;
            self.mark("update", i, t, json!({"lr": lr}));
        }
        Ok(())
    }

    /// A span from `start` to now on local replica `i`'s track, if this step is traced.
    fn mark(&mut self, name: &str, i: usize, start: Instant, mut args: serde_json::Value) {
        let (Some(step), Some(t)) = (self.traced, self.timeline.as_mut()) else {
            return;
        };
        args["step"] = json!(step);
        let track = self.all_reduce.first_replica() + i;
        t.span(name, track, start, Instant::now(), args);
    }

    /// A traced step's GPU passes, as each GPU timed them, on its replica's GPU track (the
    /// rest of the counters wait in `pending` for the next report).
    fn trace_gpu(&mut self) -> Result<()> {
        let (Some(step), Some(t)) = (self.traced, self.timeline.as_mut()) else {
            return Ok(());
        };
        let base = self.all_reduce.first_replica();
        for (i, (e, pending)) in self.engines.iter_mut().zip(&mut self.pending).enumerate() {
            let mut c = e.take_counters()?;
            for s in std::mem::take(&mut c.gpu_spans) {
                let args = json!({"step": step, "clock": "GPU timestamps"});
                t.span(s.what, GPU_TRACK + base + i, s.start, s.start + s.dur, args);
            }
            pending.merge(c);
        }
        Ok(())
    }
}

/// One replica's part of an epoch: its examples, copied into its own buffer in the order it
/// will train on them, and where each step's batch starts.
pub(super) struct Shard {
    pub(super) data: Dataset,
    /// Shard-local indices 0, 1, 2, ... (a batch is a slice of them).
    pub(super) indices: Vec<u32>,
    /// Step s trains on indices[starts[s]..starts[s + 1]].
    pub(super) starts: Vec<usize>,
}

impl Shard {
    /// Deals replica `r`'s part of every global batch of `order` into its own shard.
    pub(super) fn deal(
        train: &Dataset,
        order: &[u32],
        global: usize,
        world: usize,
        r: usize,
    ) -> Shard {
        let mut picked: Vec<u32> = Vec::with_capacity(order.len() / world + global);
        let mut starts = vec![0];
        for batch in order.chunks(global) {
            picked.extend_from_slice(&batch[all_reduce::part(batch.len(), world, r)]);
            starts.push(picked.len());
        }
        let mut images = Vec::with_capacity(picked.len() * PIXELS);
        for &i in &picked {
            images.extend_from_slice(train.image(i as usize));
        }
        let labels = picked.iter().map(|&i| train.labels[i as usize]).collect();
        Shard {
            data: Dataset::of(images, labels),
            indices: (0..picked.len() as u32).collect(),
            starts,
        }
    }

    pub(super) fn batch(&self, step: usize) -> &[u32] {
        &self.indices[self.starts[step]..self.starts[step + 1]]
    }
}
