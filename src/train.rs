//! The training loop: the same for the CPU and the GPU, which differ only in the [`Engine`]
//! that performs each step.
//!
//! ```text
//! for each epoch:
//!     order = a seeded shuffle of the training examples
//!     for each mini-batch of `batch_size` indices in that order:
//!         engine.train_step(batch)      forward, loss, backward, SGD update
//!     train totals  (loss and accuracy accumulated during the epoch, read once)
//!     test totals   (forward pass over the test set)
//! ```

use crate::checkpoint::{Position, SnapshotDir, TrainState};
use crate::data::{epoch_order, DataSplit, Dataset};
use crate::error::{Error, Result};
use crate::model::Model;
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
}

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
        if self.batch_size == 0 {
            return Err(Error::Config("--batch-size must be at least 1".into()));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!(
                "--lr must be a positive number, got {}",
                self.lr
            )));
        }
        Ok(())
    }

    /// Steps in one epoch over `n` examples (the last batch may be smaller).
    pub fn steps_per_epoch(&self, n: usize) -> usize {
        n.div_ceil(self.batch_size)
    }
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
    /// Bytes of training batches sent from RAM to device memory this epoch (GPU only).
    pub staged_bytes: Option<u64>,
}

impl EpochReport {
    pub fn images_per_sec(&self) -> f64 {
        self.train.seen as f64 / self.train_time.as_secs_f64().max(1e-9)
    }

    pub fn line(&self, epochs: usize) -> String {
        let staged = match self.staged_bytes {
            Some(b) => format!("  staged {:.1} MB", b as f64 / 1e6),
            None => String::new(),
        };
        format!(
            "epoch {:>2}/{epochs}  train loss {:.4}  acc {:5.2}%  |  test loss {:.4}  acc {:5.2}%  |  {:.3} s  {:>9.0} images/s{staged}",
            self.epoch,
            self.train.mean_loss(),
            self.train.accuracy(),
            self.test.mean_loss(),
            self.test.accuracy(),
            self.train_time.as_secs_f64(),
            self.images_per_sec()
        )
    }
}

/// Things the loop tells whoever runs it (progress bars, logs, snapshots).
pub trait Observer {
    /// Called after every step with the step number within the epoch (from 1).
    fn step(&mut self, _epoch: usize, _step: usize, _steps: usize) {}
    /// Called after every epoch.
    fn epoch(&mut self, _report: &EpochReport) {}
}

/// An observer that does nothing (tests, benchmarks).
pub struct Quiet;
impl Observer for Quiet {}

/// Trains `engine` on `data.train` and scores it on `data.test` after every epoch.
pub fn train(
    engine: &mut dyn Engine,
    data: &DataSplit,
    cfg: &TrainConfig,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochReport>> {
    train_from(engine, data, cfg, Position::START, None, observer)
}

/// Snapshots during a run: where, and every how many steps (plus one at every epoch's end).
pub struct Snapshots<'a> {
    pub dir: &'a SnapshotDir,
    /// 0: only at epoch ends.
    pub every: usize,
}

/// [`train`], starting at `start` (a resumed run) and writing snapshots if asked.
pub fn train_from(
    engine: &mut dyn Engine,
    data: &DataSplit,
    cfg: &TrainConfig,
    start: Position,
    snapshots: Option<Snapshots>,
    observer: &mut dyn Observer,
) -> Result<Vec<EpochReport>> {
    cfg.validate()?;
    let n = data.train.len();
    let steps = cfg.steps_per_epoch(n);
    let mut reports = Vec::with_capacity(cfg.epochs);
    // The data set's identity for snapshots: hashed once (47 MB for 60k images), not per snapshot.
    let fingerprint = snapshots
        .as_ref()
        .map(|_| data.train.fingerprint())
        .unwrap_or(0);
    for epoch in start.epoch..=cfg.epochs {
        let start_time = Instant::now();
        let order = epoch_order(n, cfg.seed, epoch);
        let first = if epoch == start.epoch { start.step } else { 0 };
        for (step, batch) in order.chunks(cfg.batch_size).enumerate().skip(first) {
            engine.train_step(&data.train, batch, cfg.lr)?;
            observer.step(epoch, step + 1, steps);
            if let Some(s) = &snapshots {
                let done = (epoch - 1) * steps + step + 1;
                if s.every > 0 && done.is_multiple_of(s.every) && step + 1 < steps {
                    let next = Position {
                        epoch,
                        step: step + 1,
                    };
                    save_snapshot(engine, data, cfg, s.dir, next, steps, fingerprint)?;
                }
            }
        }
        let train = engine.take_train_totals()?;
        let train_time = start_time.elapsed();
        let staged_bytes = engine.take_staged_bytes();
        if !train.loss_sum.is_finite() {
            return Err(Error::Diverged {
                epoch,
                step: steps,
                what: format!("the epoch's mean loss is {}", train.mean_loss()),
            });
        }
        let test = engine.evaluate(&data.test, cfg.batch_size)?;
        if let Some(s) = &snapshots {
            let next = Position {
                epoch: epoch + 1,
                step: 0,
            };
            save_snapshot(engine, data, cfg, s.dir, next, steps, fingerprint)?;
        }
        let report = EpochReport {
            epoch,
            train,
            test,
            train_time,
            staged_bytes,
        };
        observer.epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Reads the weights back and writes a snapshot, unless they are no longer finite: then the
/// run has diverged and the snapshots already on disk are left as they are.
fn save_snapshot(
    engine: &mut dyn Engine,
    data: &DataSplit,
    cfg: &TrainConfig,
    dir: &SnapshotDir,
    next: Position,
    steps_per_epoch: usize,
    train_fingerprint: u64,
) -> Result<()> {
    let model = engine.model()?;
    if let Some((name, _, _)) = model
        .tensors()
        .iter()
        .find(|t| t.2.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Diverged {
            epoch: next.epoch,
            step: next.step,
            what: format!("{name} holds non-finite values"),
        });
    }
    let state = TrainState {
        next,
        global_step: ((next.epoch - 1) * steps_per_epoch + next.step) as u64,
        seed: cfg.seed,
        lr: cfg.lr,
        batch_size: cfg.batch_size,
        train_len: data.train.len(),
        train_fingerprint,
    };
    let path = dir.save(&model, &state)?;
    log::info!(
        "snapshot {} (next: epoch {}, step {})",
        path.display(),
        next.epoch,
        next.step
    );
    Ok(())
}
