//! The training loop: the same for the CPU and the GPU, and for one device or many, which
//! differ only in the [`Engine`]s that compute and the
//! [`AllReduce`](crate::parallel::all_reduce::AllReduce) that joins them.
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
//! One replica on its own (`--device`, `--cpu`) takes the fused path: its engine's step runs
//! forward, backward and the update in one go, with no gradient buffer (faster, same math).
//! [`Replicas`] chooses, once; this loop does not know which it has. A trace is an observer
//! of the verbs (train/watch.rs), not a part of them.

pub mod data_parallel;
pub mod replicas;
pub mod report;
pub mod shard;
pub mod watch;

use crate::config::TrainConfig;
use crate::engine::LossScaler;
use replicas::Replicas;
use report::{EpochReport, Observer, Record};

use crate::checkpoint::{Position, TrainState};
use crate::snapshots::SnapshotDir;
use crate::data::{epoch_order, DataSplit};
use crate::engine::{Engine, Totals, EVAL_BATCH};
use crate::error::{Error, Result};
use crate::parallel::all_reduce::Traffic;
use std::time::Instant;

/// A run whose mean training loss over a check window exceeds this multiple of ln 10 (the loss
/// of a uniform guess over 10 classes, 2.303) has diverged, even with finite numbers.
pub const DIVERGED_LOSS_MULTIPLE: f64 = 2.0;
/// The fewest training examples a divergence judgment looks at: with `--batch-size 1` and a
/// check every step, one example's loss says nothing about the run (a healthy run meets single
/// examples with a loss far above the limit); the mean over this many does.
pub const DIVERGENCE_WINDOW: u64 = 1000;

/// Set by a Ctrl-C handler: the loop stops after the step (or snapshot) in progress.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
    replicas.resume_scaler(start.scaler);
    // The configuration was checked at the command line's edge (config::RunConfig::validate).
    let global = cfg.batch_size.saturating_mul(replicas.world());
    let mut run = Run {
        cfg,
        data,
        global,
        steps: data.train.len().div_ceil(global),
        // The data set's identity for snapshots: hashed once (47 MB for 60k images).
        fingerprint: snapshots.as_ref().map_or(0, |_| data.train.fingerprint()),
        // The examples every snapshot's weights are judged on before they are written.
        probe: snapshots
            .as_ref()
            .map(|_| data.train.take(DIVERGENCE_WINDOW as usize)),
        snapshots,
        global_step: start.global_step,
        last_snapshot: None,
        started: Instant::now(),
    };
    let mut reports = Vec::new();
    for epoch in start.at.epoch..=cfg.epochs {
        let first = if epoch == start.at.epoch {
            start.at.step
        } else {
            0
        };
        let report = run.epoch(replicas, epoch, first, observer)?;
        observer.epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// A run's state across its epochs.
struct Run<'r> {
    cfg: &'r TrainConfig,
    data: &'r DataSplit,
    /// Examples a step (all replicas), and steps an epoch.
    global: usize,
    steps: usize,
    fingerprint: u64,
    probe: Option<crate::data::Dataset>,
    snapshots: Option<Snapshots<'r>>,
    global_step: u64,
    /// The last snapshot: its global step and when it was written.
    last_snapshot: Option<(u64, Instant)>,
    started: Instant,
}

/// What an epoch has counted so far.
#[derive(Default)]
struct Tally {
    /// Training loss and accuracy of the whole epoch, and of the steps since the last
    /// divergence judgment.
    train: Totals,
    unjudged: Totals,
    /// All-reduce traffic of the epoch and of the current metrics window (replica 0).
    traffic: Traffic,
    window_traffic: Traffic,
    /// Bytes staged and read back, per replica: the epoch's, and the metrics window's.
    staged: Option<u64>,
    read: u64,
    window_moved: (u64, u64),
    readbacks: u64,
    skipped: u64,
}

impl Run<'_> {
    /// One epoch: a seeded shuffle, the steps from `first` on, the checks, the test pass and
    /// the epoch's snapshot.
    fn epoch(
        &mut self,
        replicas: &mut Replicas,
        epoch: usize,
        first: usize,
        observer: &mut dyn Observer,
    ) -> Result<EpochReport> {
        let start_time = Instant::now();
        let order = epoch_order(self.data.train.len(), self.cfg.seed, epoch);
        replicas.deal(&self.data.train, &order, self.global);
        let mut tally = Tally::default();
        let every = observer.metrics_every();
        for (step, batch) in order.chunks(self.global).enumerate().skip(first) {
            let step_start = Instant::now();
            let stepped =
                replicas.step(&self.data.train, step, batch, self.global_step, self.cfg.lr);
            let stepped = stepped.map_err(|e| self.lost_work(e, step_start))?;
            tally.traffic += stepped.traffic;
            tally.window_traffic += stepped.traffic;
            tally.skipped += stepped.skipped as u64;
            self.global_step += 1;
            observer.step(epoch, step + 1, self.steps);
            let mid_epoch = step + 1 < self.steps;
            if every > 0 && self.global_step.is_multiple_of(every) && mid_epoch {
                let record = self.window(replicas, &mut tally, epoch, step + 1)?;
                observer.record(&record);
            }
            self.snapshot_if_due(replicas, &mut tally, epoch, step + 1)?;
            if STOP.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::Interrupted(format!(
                    "interrupted at epoch {epoch}, step {} of {} (global step {})",
                    step + 1,
                    self.steps,
                    self.global_step
                )));
            }
        }
        self.take_counts(replicas, &mut tally, epoch, self.steps, true)?;
        // Under MPI each process saw its own replicas' examples: the epoch line shows the job's.
        let train = replicas.all_reduce().sum_totals(tally.train)?;
        // Every replica here, then every process of the job, holds the same weights (the
        // read-back this takes is counted in this epoch's bytes, just below).
        replicas.check_same_weights(&format!("after epoch {epoch}"))?;
        self.take_counts(replicas, &mut tally, epoch, self.steps, false)?;
        let train_time = start_time.elapsed();
        let test_start = Instant::now();
        let eval_batch = self.cfg.batch_size.max(EVAL_BATCH);
        let test = replicas.first().evaluate(&self.data.test, eval_batch)?;
        let test_time = test_start.elapsed();
        self.snapshot(
            replicas,
            Position {
                epoch: epoch + 1,
                step: 0,
            },
        )?;
        Ok(EpochReport {
            epoch,
            train,
            test,
            train_time,
            test_time,
            staged_bytes: tally.staged,
            replicas: replicas.world(),
            global_batch: self.global,
            traffic: tally.traffic,
            traffic_is: replicas.all_reduce().bytes_are(),
            split: replicas.take_split(),
            skipped_steps: tally.skipped,
            loss_scale: replicas.scaler().map(|s| s.scale),
            readback_bytes: tally.read,
            readbacks: tally.readbacks,
            time_s: self.started.elapsed().as_secs_f64(),
            global_step: self.global_step,
            resumed_at_step: first,
        })
    }

    /// Takes the engines' counters into `tally` and judges divergence on the training loss
    /// since the last judgment, once it covers at least [`DIVERGENCE_WINDOW`] examples (or,
    /// at the epoch's end, `end`, on the whole epoch if the unjudged steps cover fewer).
    /// Returns the training totals taken.
    fn take_counts(
        &mut self,
        replicas: &mut Replicas,
        tally: &mut Tally,
        epoch: usize,
        step: usize,
        end: bool,
    ) -> Result<Totals> {
        let c = replicas.take_counters()?;
        tally.train += c.totals;
        tally.unjudged += c.totals;
        if let Some(b) = c.staged_bytes {
            *tally.staged.get_or_insert(0) += b;
        }
        tally.read += c.readback_bytes.unwrap_or(0);
        tally.readbacks += c.readbacks.unwrap_or(0);
        tally.window_moved.0 += c.staged_bytes.unwrap_or(0);
        tally.window_moved.1 += c.readback_bytes.unwrap_or(0);
        let judged = if tally.unjudged.seen >= DIVERGENCE_WINDOW {
            Some(std::mem::take(&mut tally.unjudged))
        } else if end && tally.unjudged.seen > 0 {
            tally.unjudged = Totals::default();
            Some(tally.train)
        } else {
            None
        };
        if let Some(window) = judged {
            diverged(
                &window,
                (epoch, step),
                "the mean training loss over the last",
            )?;
        }
        Ok(c.totals)
    }

    /// A metrics record of the steps since the previous one.
    fn window(
        &mut self,
        replicas: &mut Replicas,
        tally: &mut Tally,
        epoch: usize,
        step: usize,
    ) -> Result<Record> {
        let window = self.take_counts(replicas, tally, epoch, step, false)?;
        let (moved, traffic) = (
            std::mem::take(&mut tally.window_moved),
            std::mem::take(&mut tally.window_traffic),
        );
        Ok(Record {
            kind: "step",
            epoch,
            global_step: self.global_step,
            replicas: replicas.world(),
            global_batch: self.global,
            train_loss: window.mean_loss(),
            train_accuracy: window.accuracy(),
            time_s: self.started.elapsed().as_secs_f64(),
            staged_bytes: moved.0,
            allreduce_sent_bytes: traffic.sent,
            allreduce_received_bytes: traffic.received,
            readback_bytes: moved.1,
            test_loss: None,
            test_accuracy: None,
            epoch_time_s: None,
        })
    }

    /// A snapshot in the middle of the epoch, when `--snapshot-every` says one is due.
    fn snapshot_if_due(
        &mut self,
        replicas: &mut Replicas,
        tally: &mut Tally,
        epoch: usize,
        step: usize,
    ) -> Result<()> {
        let every = self.snapshots.as_ref().map_or(0, |s| s.every as u64);
        if every == 0 || !self.global_step.is_multiple_of(every) || step >= self.steps {
            return Ok(());
        }
        self.take_counts(replicas, tally, epoch, step, false)?;
        self.snapshot(replicas, Position { epoch, step })
    }

    /// Writes a snapshot of replica 0's weights (if the run writes snapshots) for a run that
    /// continues at `next`.
    fn snapshot(&mut self, replicas: &mut Replicas, next: Position) -> Result<()> {
        let Some(s) = &self.snapshots else {
            return Ok(());
        };
        let state = TrainState {
            next,
            global_step: self.global_step,
            seed: self.cfg.seed,
            lr: self.cfg.lr,
            batch_size: self.cfg.batch_size,
            replicas: replicas.world(),
            train_len: self.data.train.len(),
            train_fingerprint: self.fingerprint,
            loss_scale: replicas.scaler().map(|s| (s.scale, s.good_steps)),
            trained_on: Some(replicas.arithmetic()),
        };
        let probe = self.probe.as_ref().expect("made with the snapshots");
        save_snapshot(replicas.first(), s.dir, probe, &state)?;
        self.last_snapshot = Some((self.global_step, Instant::now()));
        Ok(())
    }

    /// A link fault's message, with what it costs: the last snapshot and the steps since, up
    /// to the failed step's start (not through the receiver's timeout). Other errors pass.
    fn lost_work(&self, e: Error, step_start: Instant) -> Error {
        let Error::LinkFault(what) = e else {
            return e;
        };
        let step = self.global_step;
        let last = self
            .last_snapshot
            .map(|(s, t)| (s, step_start.duration_since(t)));
        Error::LinkFault(match last {
            Some((s, t)) => format!(
                "{what}; the step's gradients were not applied. The last snapshot was taken after {s} steps: global steps {s}-{step} \
                 ({:.1} s of training) must be redone: resume with --resume",
                t.as_secs_f64()
            ),
            None if self.snapshots.is_some() => format!(
                "{what}; the step's gradients were not applied. No snapshot had been written yet: the run must start over"
            ),
            None => format!(
                "{what}; the step's gradients were not applied. No snapshot was written: the run must start over (--snapshot-dir makes a run resumable)"
            ),
        })
    }
}

/// Whether the mean loss over `window` (described by `over`) shows a diverged run: above
/// [`DIVERGED_LOSS_MULTIPLE`]·ln 10, or not a number.
fn diverged(window: &Totals, (epoch, step): (usize, usize), over: &str) -> Result<()> {
    let limit = DIVERGED_LOSS_MULTIPLE * std::f64::consts::LN_10;
    let loss = window.mean_loss();
    if window.seen > 0 && (loss.is_nan() || loss > limit) {
        return Err(Error::Diverged {
            epoch,
            step,
            what: format!(
                "{over} {} examples is {loss:.4e}, above {DIVERGED_LOSS_MULTIPLE}·ln 10 = {limit:.2} \
                 ({DIVERGED_LOSS_MULTIPLE}× the loss of a uniform guess)",
                window.seen
            ),
        });
    }
    Ok(())
}

/// Reads the weights back and writes a snapshot, unless the run would call them diverged: not
/// finite, or a mean loss on `probe` (the first [`DIVERGENCE_WINDOW`] training examples) above
/// the divergence limit. The loss the steps report is the weights' *before* each update, so a
/// step that blows the weights up shows only in the next window: a snapshot is judged on its own
/// weights, and a diverged run writes none (and so `--keep` deletes none of the good ones).
fn save_snapshot(
    engine: &mut dyn Engine,
    dir: &SnapshotDir,
    probe: &crate::data::Dataset,
    state: &TrainState,
) -> Result<()> {
    let model = engine.model()?;
    let (epoch, step) = (state.next.epoch, state.next.step);
    if let Some((name, _, _)) = model
        .tensors()
        .iter()
        .find(|t| t.2.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Diverged {
            epoch,
            step,
            what: format!("{name} holds non-finite values"),
        });
    }
    let mut judge = crate::cpu::engine::CpuEngine::new(model.clone(), 1);
    let probed = judge.evaluate(probe, EVAL_BATCH)?;
    diverged(
        &probed,
        (epoch, step),
        "the weights due to be snapshotted (none was written): their mean loss over the first",
    )?;
    let path = dir.save(&model, state)?;
    log::info!(
        "snapshot {} (next: epoch {}, step {})",
        path.display(),
        state.next.epoch,
        state.next.step
    );
    Ok(())
}
