//! What an epoch reports, and the observer the loop reports it to.

use crate::engine::Totals;
use crate::parallel::all_reduce::Traffic;
use serde::Serialize;
use std::time::{Duration, Instant};

/// One line of the metrics file (`--metrics`, written by network/metrics.rs): the training
/// since the previous line, with the bytes each replica moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub kind: &'static str,
    pub epoch: usize,
    pub global_step: u64,
    pub replicas: usize,
    pub global_batch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub time_s: f64,
    pub staged_bytes: u64,
    pub allreduce_sent_bytes: u64,
    pub allreduce_received_bytes: u64,
    pub readback_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_time_s: Option<f64>,
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
    /// What `traffic`'s bytes are ([`AllReduce::bytes_are`](crate::parallel::all_reduce::AllReduce::bytes_are)).
    pub traffic_is: &'static str,
    /// The data-parallel step's time split; `None` on the fused one-replica path.
    pub split: Option<StepSplit>,
    /// --precision f16: steps skipped because their gradients overflowed, and the loss scale
    /// at the epoch's end.
    pub skipped_steps: u64,
    pub loss_scale: Option<f32>,
    /// Bytes read back from device memory this epoch, per replica (totals, gradients, weights).
    pub readback_bytes: u64,
    /// Read-backs this epoch, all local replicas together (each a wait for a device); 0 on
    /// the CPU. A traced run makes as many as an untraced one (train/watch.rs).
    pub readbacks: u64,
    /// Seconds since the run started, at the epoch's end.
    pub time_s: f64,
    /// Steps done in the whole run at the epoch's end.
    pub global_step: u64,
    /// The step this epoch was resumed at (a run resumed mid-epoch): its train loss and
    /// accuracy cover only the steps after it (0: the whole epoch).
    pub resumed_at_step: usize,
}

impl EpochReport {
    /// The epoch as a line of the metrics file.
    pub fn record(&self) -> Record {
        Record {
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

impl EpochReport {
    pub fn images_per_sec(&self) -> f64 {
        self.train.seen as f64 / self.train_time.as_secs_f64().max(1e-9)
    }

    /// The epoch as the console prints it: the figures everyone reads on one line, then what
    /// applies to this run (bytes moved, the data-parallel step, the loss scale, a resume)
    /// packed into lines of at most [`LINE`] columns.
    pub fn line(&self, epochs: usize) -> String {
        let mut out = format!(
            "epoch {:>2}/{epochs}  train loss {:.4}  acc {:5.2}%  |  test loss {:.4}  acc {:5.2}% ({:.2} s)  |  {:.3} s  {:.0} images/s",
            self.epoch,
            self.train.mean_loss(),
            self.train.accuracy(),
            self.test.mean_loss(),
            self.test.accuracy(),
            self.test_time.as_secs_f64(),
            self.train_time.as_secs_f64(),
            self.images_per_sec()
        );
        for line in pack(&self.details(), LINE) {
            out += "\n";
            out += &line;
        }
        out
    }

    /// The parts of an epoch's report that apply to this run, each a short phrase.
    fn details(&self) -> Vec<String> {
        let mut parts = Vec::new();
        let per = if self.replicas > 1 { "/replica" } else { "" };
        if let Some(b) = self.staged_bytes {
            parts.push(format!("staged {:.1} MB{per}, read back {:.2} MB", b as f64 / 1e6, self.readback_bytes as f64 / 1e6));
        }
        if self.replicas > 1 {
            parts.push(format!("{} {:.1} MB/replica", self.traffic_is, self.traffic.sent as f64 / 1e6));
        }
        if let Some(split) = self.split {
            let steps = self.train.seen.div_ceil(self.global_batch.max(1) as u64).max(1) as f64;
            let us = |d: Duration| d.as_secs_f64() * 1e6 / steps;
            parts.push(format!(
                "step µs: compute {:.0}, all-reduce {:.0}, update {:.0}",
                us(split.compute),
                us(split.all_reduce),
                us(split.update)
            ));
        }
        if self.replicas > 1 {
            parts.push(format!("{} replicas × {} = global batch {}", self.replicas, self.global_batch / self.replicas, self.global_batch));
        }
        if let Some(scale) = self.loss_scale {
            let s = if self.skipped_steps == 1 { "" } else { "s" };
            parts.push(format!("f16: loss scale {scale}, {} step{s} skipped", self.skipped_steps));
        }
        if self.resumed_at_step > 0 {
            parts.push(format!("resumed after step {}: train figures of the steps since", self.resumed_at_step));
        }
        parts
    }
}

/// The widest line the console prints by default.
pub const LINE: usize = 120;

/// `parts` joined with " | " into lines indented by two spaces, each at most `width` columns
/// (a part longer than that gets a line of its own).
pub fn pack(parts: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for p in parts {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 3 + p.chars().count() <= width => {
                *l += " | ";
                *l += p;
            }
            _ => lines.push(format!("  {p}")),
        }
    }
    lines
}

/// Things the loop tells whoever runs it (progress bars, logs, metrics).
pub trait Observer {
    /// Every how many steps to hand [`Observer::record`] a metrics record (0: never; each
    /// record reads the training totals back, a wait for the GPU).
    fn metrics_every(&self) -> u64 {
        0
    }
    /// A metrics record of the steps since the previous one.
    fn record(&mut self, _record: &Record) {}
    /// Called after every step with the step number within the epoch (from 1).
    fn step(&mut self, _epoch: usize, _step: usize, _steps: usize) {}
    /// Called after every epoch.
    fn epoch(&mut self, _report: &EpochReport) {}
}

/// An observer that does nothing (tests, benchmarks).
pub struct Quiet;
impl Observer for Quiet {}

/// Where the phases of a traced step go (network/trace.rs's `Trace` writes them as a Chrome
/// timeline). The replicas call it; they do not know what it writes.
pub trait Timeline {
    /// Whether global step `step` is traced.
    fn wants(&self, step: u64) -> bool;
    /// A span on `track` (one per replica; GPU tracks from [`super::GPU_TRACK`]) from `start`
    /// to `end`, with `args`.
    fn span(
        &mut self,
        name: &str,
        track: usize,
        start: Instant,
        end: Instant,
        args: serde_json::Value,
    );
}
