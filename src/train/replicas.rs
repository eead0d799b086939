//! The workers of a run, as the two kinds of step they take: one engine alone on the fused
//! step (forward, backward and update in one go, no gradient buffer), or data-parallel
//! replicas on the three verbs (train/data_parallel.rs). Which one is chosen once, when the
//! replicas are built; the training loop only calls [`Replicas::step`].

use super::data_parallel::{DataParallel, Stepped};
use super::report::{StepSplit, Timeline};
use super::shard::Shard;
use super::watch::Watch;
use crate::data::Dataset;
use crate::engine::{Counters, Engine, LossScaler, Target};
use crate::error::Result;
use crate::parallel::all_reduce::{AllReduce, Identity};
use serde_json::json;

/// One engine on its own: the fused step.
pub struct Fused<'a> {
    engine: &'a mut dyn Engine,
    /// The fused step has nothing to sum; the loop still asks an all-reduce what the job is.
    identity: Identity,
    watch: Watch<'a>,
}

/// The workers of a run and the step they take.
pub enum Replicas<'a> {
    /// One engine alone, forward, backward and the update fused (FP32 only).
    Fused(Fused<'a>),
    /// Replicas on the three verbs: forward_backward → all-reduce → apply_update.
    DataParallel(DataParallel<'a>),
}

impl<'a> Replicas<'a> {
    /// One engine on its own, fused step.
    pub fn one(engine: &'a mut dyn Engine) -> Self {
        Replicas::Fused(Fused {
            engine,
            identity: Identity,
            watch: Watch::default(),
        })
    }

    /// Data-parallel replicas of a `hidden`-neuron network (one or more) joined by
    /// `all_reduce`, which must know as many local replicas as `engines` holds. Every engine
    /// must start from the same weights.
    pub fn data_parallel(engines: Vec<&'a mut dyn Engine>, all_reduce: Box<dyn AllReduce + 'a>, overlap: bool, hidden: usize) -> Result<Self> {
        Ok(Replicas::DataParallel(DataParallel::new(engines, all_reduce, overlap, hidden)?))
    }

    /// Records the phases of the steps `timeline` wants.
    pub fn with_timeline(mut self, timeline: &'a mut dyn Timeline) -> Self {
        match &mut self {
            Replicas::Fused(f) => f.watch = Watch::new(timeline, 0),
            Replicas::DataParallel(d) => d.watch = Watch::new(timeline, d.all_reduce.first_replica()),
        }
        self
    }

    /// Trains in mixed precision with dynamic loss scaling, starting at `scaler` (the
    /// data-parallel step only: the fused one applies the gradient unseen, and the
    /// configuration refuses f16 there).
    pub fn with_loss_scaling(mut self, scaler: LossScaler) -> Self {
        if let Replicas::DataParallel(d) = &mut self {
            d.scaler = Some(scaler);
        }
        self
    }

    /// The loss scaler's state (--precision f16).
    pub fn scaler(&self) -> Option<LossScaler> {
        match self {
            Replicas::Fused(_) => None,
            Replicas::DataParallel(d) => d.scaler,
        }
    }

    /// Continues loss scaling from a resumed snapshot's state (if this run scales at all).
    pub(super) fn resume_scaler(&mut self, resumed: Option<LossScaler>) {
        if let (Some(r), Replicas::DataParallel(DataParallel { scaler: Some(s), .. })) = (resumed, self) {
            *s = r;
        }
    }

    /// The all-reduce, for what it knows of the job (its size, MPI's gathers).
    pub fn all_reduce(&mut self) -> &mut dyn AllReduce {
        match self {
            Replicas::Fused(f) => &mut f.identity,
            Replicas::DataParallel(d) => &mut *d.all_reduce,
        }
    }

    /// Local replicas in this process.
    pub fn local(&self) -> usize {
        match self {
            Replicas::Fused(_) => 1,
            Replicas::DataParallel(d) => d.engines.len(),
        }
    }

    /// Replicas in the whole job.
    pub fn world(&self) -> usize {
        match self {
            Replicas::Fused(_) => 1,
            Replicas::DataParallel(d) => d.all_reduce.world(),
        }
    }

    /// The engine of local replica 0 (it evaluates, and its weights go into snapshots).
    pub fn first(&mut self) -> &mut dyn Engine {
        match self {
            Replicas::Fused(f) => &mut *f.engine,
            Replicas::DataParallel(d) => &mut *d.engines[0],
        }
    }

    /// What sets this run's rounding, for snapshots: replica 0's engine (`{:#}`) and the step
    /// (fused, or separated into gradient, all-reduce and update). A run resumed on another
    /// goes on correctly but not bit for bit as the first would have.
    pub fn arithmetic(&self) -> String {
        match self {
            Replicas::Fused(f) => format!("{:#}, fused step", f.engine),
            Replicas::DataParallel(d) => format!("{:#}, separated step", d.engines[0]),
        }
    }

    /// The engines as the start-up prints them, one short line each: replica 0's engine, the
    /// others (one line when they are alike), replica 0's notes, its details when `verbose`,
    /// and the all-reduce where there is something to sum.
    pub fn describe(&self, verbose: bool) -> Vec<String> {
        let (engines, all_reduce): (Vec<&dyn Engine>, _) = match self {
            Replicas::Fused(f) => (vec![&*f.engine], None),
            Replicas::DataParallel(d) => (d.engines.iter().map(|e| &**e).collect(), Some(d)),
        };
        let first = engines[0].to_string();
        let n = engines.len();
        let mut lines = vec![first.clone()];
        if engines.iter().all(|e| e.to_string() == first) {
            if n > 1 {
                lines.push(format!("  {n} replicas here, all the same (replica 0's line above)"));
            }
        } else {
            lines.extend(engines.iter().enumerate().skip(1).map(|(i, e)| format!("  replica {i}: {e}")));
        }
        lines.extend(engines[0].notes().into_iter().map(|l| format!("  note: {l}")));
        if verbose {
            lines.extend(engines[0].details().into_iter().map(|l| format!("  {l}")));
        }
        if let Some(d) = all_reduce.filter(|d| d.all_reduce.world() > 1 || d.all_reduce.spans_processes()) {
            let overlap = if d.overlap { ", the output layer's sync overlapped with the backward" } else { "" };
            lines.push(format!("  all-reduce: {}{overlap}", d.all_reduce.describe()));
        }
        lines
    }

    /// Deals this epoch's shards: local replica i is replica first_replica() + i of the job,
    /// and trains on its part of every global batch of `order`.
    pub(super) fn deal(&mut self, train: &Dataset, order: &[u32], global: usize) {
        let Replicas::DataParallel(d) = self else {
            return;
        };
        let (base, world) = (d.all_reduce.first_replica(), d.all_reduce.world());
        d.shards = (0..d.engines.len())
            .map(|i| Shard::deal(train, order, global, world, base + i))
            .collect();
    }

    /// What the engines counted since the last call (see [`DataParallel`]'s).
    pub fn take_counters(&mut self) -> Result<Counters> {
        match self {
            Replicas::Fused(f) => {
                let mut c = f.engine.take_counters()?;
                f.watch.gpu_spans(0, &std::mem::take(&mut c.gpu_spans));
                f.watch.filed();
                Ok(c)
            }
            Replicas::DataParallel(d) => d.take_counters(),
        }
    }

    /// This epoch's time split so far (reset); `None` on the fused step.
    pub(super) fn take_split(&mut self) -> Option<StepSplit> {
        match self {
            Replicas::Fused(_) => None,
            Replicas::DataParallel(d) => Some(std::mem::take(&mut d.split)),
        }
    }

    /// Checks that every replica, here and in the job, holds the same weights.
    pub(super) fn check_same_weights(&mut self, when: &str) -> Result<()> {
        match self {
            Replicas::Fused(_) => Ok(()),
            Replicas::DataParallel(d) => d.check_same_weights(when),
        }
    }

    /// One training step on global batch `batch` of `data` (step `step` of the epoch,
    /// `global_step` of the run), at learning rate `lr`.
    pub(super) fn step(&mut self, data: &Dataset, step: usize, batch: &[u32], global_step: u64, lr: f32) -> Result<Stepped> {
        match self {
            Replicas::Fused(f) => {
                f.watch.begin(global_step);
                let engine = &mut f.engine;
                let stepped = f.watch.verb("stage + record the fused step", 0, json!({}), || engine.step(data, batch, Target::Update { lr }));
                f.watch.end();
                stepped.map(|_| Stepped::default())
            }
            Replicas::DataParallel(d) => {
                d.watch.begin(global_step);
                let stepped = d.step(step, batch, global_step, lr);
                d.watch.end();
                stepped
            }
        }
    }
}
