//! The workers of a run: one engine, or N replicas and the all-reduce that joins them; and
//! the shard each replica trains on.

use super::{Engine, LossScaler, StepSplit};
use crate::data::{Dataset, PIXELS};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout};
use crate::parallel::{self, AllReduce, Identity, Traffic};
use std::ops::Range;
use std::time::{Duration, Instant};

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
    pub(super) engines: Vec<&'a mut dyn Engine>,
    pub(super) all_reduce: Box<dyn AllReduce + 'a>,
    /// One replica alone takes the fused step.
    pub(super) fused: bool,
    /// Start the output layer's all-reduce before the hidden layer's gradient is read, so it
    /// runs while the GPU still computes (PyTorch DDP's gradient buckets).
    pub(super) overlap: bool,
    /// Each local replica's gradient on the host, packed layout (allocated once).
    pub(super) grads: Vec<Vec<f32>>,
    /// The gradient's buckets in that layout, output layer first.
    pub(super) buckets: [Range<usize>; 2],
    /// --precision f16: dynamic loss scaling (the gradients are then always read back).
    pub(super) scaler: Option<LossScaler>,
    /// --trace: the timeline being recorded.
    pub(super) trace: Option<crate::network::trace::Trace>,
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
    pub(super) fn step(
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

    pub(super) fn batch(&self, step: usize) -> &[u32] {
        &self.indices[self.starts[step]..self.starts[step + 1]]
    }
}
