//! The data-parallel step in its three verbs, the chapter's: every replica computes the
//! gradient of its part of the global batch (forward_backward), the all-reduce sums the
//! gradients across every replica of the job, and every replica applies the same update.
//! One replica of a job may run it too (`--replicas 1`, `--precision f16`, an MPI rank).

use super::report::StepSplit;
use super::shard::Shard;
use super::watch::Watch;
use crate::engine::{Counters, Engine, LossScaler, Target};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout};
use crate::parallel::all_reduce::{AllReduce, Traffic};
use serde_json::json;
use std::ops::Range;
use std::time::{Duration, Instant};

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

/// N replicas in this process and the all-reduce that joins them to the job's others.
pub struct DataParallel<'a> {
    pub(super) engines: Vec<&'a mut dyn Engine>,
    pub(super) all_reduce: Box<dyn AllReduce + 'a>,
    /// Start the output layer's all-reduce before the hidden layer's gradient is read, so it
    /// runs while the GPU still computes (PyTorch DDP's gradient buckets).
    pub(super) overlap: bool,
    /// Each local replica's gradient on the host, packed layout (allocated once).
    grads: Vec<Vec<f32>>,
    /// The gradient's buckets in that layout, output layer first.
    buckets: [Range<usize>; 2],
    /// --precision f16: dynamic loss scaling (the gradients are then always read back).
    pub(super) scaler: Option<LossScaler>,
    /// This epoch's shard of each local replica.
    pub(super) shards: Vec<Shard>,
    /// Where this epoch's time went so far.
    pub(super) split: StepSplit,
    pub(super) watch: Watch<'a>,
}

impl<'a> DataParallel<'a> {
    /// Replicas of a `hidden`-neuron network (one or more) joined by `all_reduce`, which must
    /// know as many local replicas as `engines` holds. Every engine must start from the same
    /// weights.
    pub fn new(engines: Vec<&'a mut dyn Engine>, all_reduce: Box<dyn AllReduce + 'a>, overlap: bool, hidden: usize) -> Result<Self> {
        if engines.is_empty() {
            return Err(Error::Config("at least one replica is needed".into()));
        }
        let layout = ParamLayout::packed_for(hidden);
        let n = engines.len();
        Ok(DataParallel {
            engines,
            all_reduce,
            overlap,
            grads: vec![vec![0.0; layout.total]; n],
            buckets: buckets_of(&layout),
            scaler: None,
            shards: Vec::new(),
            split: StepSplit::default(),
            watch: Watch::default(),
        })
    }

    /// One training step on global batch `batch` (step `step` of the epoch, `global_step` of
    /// the run), at learning rate `lr`: the chapter's three verbs.
    pub(super) fn step(&mut self, step: usize, batch: &[u32], global_step: u64, lr: f32) -> Result<Stepped> {
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
        Ok(Stepped { traffic, skipped })
    }

    /// Verb 1, on every local replica: forward and backward on its part of the global batch
    /// of `global_rows` examples, its gradient into its own flat buffer.
    fn forward_backward(&mut self, step: usize, global_rows: usize) -> Result<()> {
        let loss_scale = self.scaler.map_or(1.0, |s| s.scale);
        let target = Target::Gradient { global_rows, loss_scale };
        for (i, (engine, shard)) in self.engines.iter_mut().zip(&self.shards).enumerate() {
            let batch = shard.batch(step);
            let args = json!({"rows": batch.len()});
            self.watch.verb("stage + record forward/backward", i, args, || engine.step(&shard.data, batch, target))?;
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
                let mut views: Vec<&mut [f32]> = self.grads.iter_mut().map(|g| &mut g[b.clone()]).collect();
                let moved = self.all_reduce.all_reduce(global_step, &mut views)?;
                syncing += t.elapsed();
                traffic += moved[0];
                let (peers, bytes_are) = (self.all_reduce.world(), self.all_reduce.bytes_are());
                for (i, m) in moved.iter().enumerate() {
                    let args = json!({"bytes_sent": m.sent, "bytes_received": m.received,
                        "messages": m.messages, "peers": peers, "bytes_are": bytes_are});
                    self.watch.span(&format!("all-reduce: {name}"), i, t, args);
                }
            }
        }
        let t = Instant::now();
        if !self.unscale() {
            return Ok((traffic, true, syncing + t.elapsed()));
        }
        for (i, (engine, grad)) in self.engines.iter_mut().zip(&self.grads).enumerate() {
            self.watch.verb("write gradient", i, json!({}), || engine.write_gradient(grad))?;
        }
        Ok((traffic, false, syncing + t.elapsed()))
    }

    /// Reads bucket `b` of every local replica's gradient onto the host.
    fn read_bucket(&mut self, b: &Range<usize>, name: &str) -> Result<()> {
        let what = format!("wait for gradient: {name}");
        for (i, (engine, grad)) in self.engines.iter_mut().zip(&mut self.grads).enumerate() {
            let args = json!({"bytes": 4 * b.len()});
            self.watch.verb(&what, i, args, || engine.read_gradient(b.clone(), &mut grad[b.clone()]))?;
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
        for (i, engine) in self.engines.iter_mut().enumerate() {
            self.watch.verb("update", i, json!({"lr": lr}), || engine.apply_update(lr))?;
        }
        Ok(())
    }

    /// What the engines counted since the last call, summed over the local replicas (bytes
    /// per replica: the mean of theirs); their GPU spans go to the watch.
    pub(super) fn take_counters(&mut self) -> Result<Counters> {
        let n = self.engines.len() as u64;
        let mut sum = Counters::default();
        for (i, e) in self.engines.iter_mut().enumerate() {
            let mut c = e.take_counters()?;
            self.watch.gpu_spans(i, &std::mem::take(&mut c.gpu_spans));
            sum.merge(c);
        }
        self.watch.filed();
        sum.staged_bytes = sum.staged_bytes.map(|b| b / n);
        sum.readback_bytes = sum.readback_bytes.map(|b| b / n);
        Ok(sum)
    }

    /// Reads every local replica's weights, checks they are the same, bit for bit, and that
    /// every process of the job holds the same (`when` names the moment for the message).
    pub(super) fn check_same_weights(&mut self, when: &str) -> Result<()> {
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
}
