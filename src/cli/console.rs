//! The console observer: a progress bar while steps run (elapsed, time left, the running
//! training loss and accuracy), one line per epoch.

use crate::error::Error;
use crate::train::report::{EpochReport, Observer};
use std::io::IsTerminal;

/// Draws a progress bar on a terminal while an epoch trains and prints one line per epoch.
/// The bar exists only while steps run: it is made at an epoch's first step, with its length
/// known, and cleared before the test pass and the epoch's line.
pub(super) struct Console {
    bar: Option<indicatif::ProgressBar>,
    epochs: usize,
    terminal: bool,
    /// --metrics: the file and every how many steps.
    pub(super) metrics: Option<(crate::network::metrics::Metrics, u64)>,
    /// A metrics write that failed (reported when training returns).
    pub(super) failed: Option<Error>,
    /// The last training loss and accuracy the loop reported (a metrics record or an epoch),
    /// for the bar.
    last: Option<(f64, f64)>,
}

/// On a terminal without --metrics, the bar's loss and accuracy are refreshed every this many
/// steps: each refresh reads the training totals back (on a GPU, a wait for the device), so
/// not every step.
const BAR_EVERY: u64 = 50;

impl Console {
    pub(super) fn new(epochs: usize) -> Self {
        Console {
            bar: None,
            epochs,
            terminal: std::io::stderr().is_terminal(),
            metrics: None,
            failed: None,
            last: None,
        }
    }

    pub(super) fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Console {
    fn step(&mut self, epoch: usize, step: usize, steps: usize) {
        if !self.terminal {
            return;
        }
        let epochs = self.epochs;
        let bar = self.bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} steps  {rate}  {elapsed} elapsed, {eta} left  {msg}",
                )
                .expect("valid template")
                .with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0} steps/s", s.per_sec());
                    },
                )
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            if let Some((loss, acc)) = self.last {
                bar.set_message(format!("loss {loss:.4} acc {acc:.2}%"));
            }
            bar
        });
        bar.set_position(step as u64);
        if step == steps {
            // The test pass comes next: no bar over it.
            self.clear();
        }
    }
    fn epoch(&mut self, report: &EpochReport) {
        self.clear();
        say!("{}", report.line(self.epochs));
        self.last = Some((report.train.mean_loss(), report.train.accuracy()));
        self.record(&report.record());
    }

    fn metrics_every(&self) -> u64 {
        match &self.metrics {
            Some(m) => m.1,
            None if self.terminal => BAR_EVERY,
            None => 0,
        }
    }

    fn record(&mut self, record: &crate::network::metrics::Record) {
        if record.kind == "step" {
            self.last = Some((record.train_loss, record.train_accuracy));
            if let Some(bar) = &self.bar {
                bar.set_message(format!("loss {:.4} acc {:.2}%", record.train_loss, record.train_accuracy));
            }
        }
        if let Some((m, _)) = &mut self.metrics {
            if let Err(e) = m.write(record) {
                self.failed.get_or_insert(e);
            }
        }
    }
}
