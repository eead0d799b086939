//! The timeline: every phase of every replica's step as a span in the Chrome trace-event format
//! (<https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU>), which
//! Perfetto (ui.perfetto.dev) and chrome://tracing open, as Horovod's timeline and the PyTorch
//! profiler write it: one process per MPI rank, one thread (track) per replica.
//!
//! Spans on a replica's track are timed by the host's clock: "stage + record" is the host
//! staging the batch and recording the GPU work (asynchronous on a GPU), "wait for gradient"
//! the host waiting for the GPU to finish the backward pass, then "all-reduce" (with its bytes
//! and peers), "write gradient" and "update". Where the adapter has timestamp queries, each
//! replica also has a "GPU" track with its two passes as the GPU itself timed them, anchored at
//! the host's submission (the two clocks have no common origin). The metadata says which is
//! which.

use crate::error::{Error, Result};
use crate::train::report::Timeline;
use crate::train::watch::GPU_TRACK;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The largest trace `network` (and rank 0, gathering the other ranks' parts) reads back: a
/// trace is parsed whole, so a longer one should be cut with a shorter --trace-steps.
pub const MAX_TRACE_BYTES: u64 = 256 << 20;

/// Collects spans for the steps in `steps` and writes them. Events go to a spool as they
/// come, one JSON object a line in a file beside the trace that has no name (unlinked when
/// made, so nothing is left behind whatever happens): a trace of many steps costs its file's
/// size on disk, never its parsed size in memory.
pub struct Trace {
    pub path: PathBuf,
    pub steps: std::ops::Range<u64>,
    origin: Instant,
    /// The origin on the wall clock (µs since the UNIX epoch): other processes' samples (the
    /// lab's link counters) are placed on the trace's time by it.
    origin_unix_us: f64,
    rank: usize,
    spool: BufWriter<File>,
    /// Events in the spool, and the first write that failed (reported by `write`).
    events: u64,
    failed: Option<std::io::Error>,
    /// The NIC sampler's switch (`--nic`): opened at the first traced step, closed after the
    /// last, so its samples cover the traced steps only.
    nic_gate: Option<std::sync::Arc<std::sync::atomic::AtomicU8>>,
}

impl Trace {
    pub fn new(path: &Path, steps: std::ops::Range<u64>, rank: usize) -> Result<Trace> {
        let spool_path =
            crate::files::beside(path, &format!(".spool-{}-{rank}-", std::process::id()));
        let spool = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&spool_path)
            .and_then(|f| std::fs::remove_file(&spool_path).map(|_| f))
            .map_err(|e| Error::Write {
                path: path.to_path_buf(),
                fault: format!(
                    "cannot keep the trace's events beside it ({}): {e}",
                    spool_path.display()
                ),
            })?;
        Ok(Trace {
            path: path.to_path_buf(),
            steps,
            origin: Instant::now(),
            origin_unix_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1e6),
            rank,
            spool: BufWriter::new(spool),
            events: 0,
            failed: None,
            nic_gate: None,
        })
    }

    /// Whether global step `step` is traced (asked as each step starts: the NIC sampler
    /// follows).
    pub fn wants(&self, step: u64) -> bool {
        use crate::network::nic::{GATE_BEFORE, GATE_DONE, GATE_RECORDING};
        if let Some(gate) = &self.nic_gate {
            let state = if step < self.steps.start {
                GATE_BEFORE
            } else if step < self.steps.end {
                GATE_RECORDING
            } else {
                GATE_DONE
            };
            gate.store(state, std::sync::atomic::Ordering::Relaxed);
        }
        self.steps.contains(&step)
    }

    /// Lets the NIC sampler keep only what the traced steps need ([`Trace::wants`]).
    pub fn follow_with(&mut self, sampler: &crate::network::nic::NicSampler) {
        self.nic_gate = Some(sampler.gate());
    }

    /// Microseconds since the trace began.
    pub fn now_us(&self, t: Instant) -> f64 {
        t.duration_since(self.origin).as_secs_f64() * 1e6
    }

    /// Appends one event to the spool (`,` between events, so the spool is the inside of a
    /// JSON array).
    fn push(&mut self, event: &Value) {
        if self.failed.is_some() {
            return;
        }
        let sep: &[u8] = if self.events == 0 { b"" } else { b",\n" };
        let written = self.spool.write_all(sep).and_then(|_| {
            serde_json::to_writer(&mut self.spool, event).map_err(std::io::Error::from)
        });
        match written {
            Ok(()) => self.events += 1,
            Err(e) => self.failed = Some(e),
        }
    }

    /// A span on `track`'s track from `start` to `end`, with `args`.
    pub fn span(&mut self, name: &str, track: usize, start: Instant, end: Instant, args: Value) {
        let ts = self.now_us(start);
        let cat = if track >= GPU_TRACK { "gpu" } else { "step" };
        let event = json!({
            "name": name, "ph": "X", "cat": cat,
            "ts": ts, "dur": (self.now_us(end) - ts).max(0.0),
            "pid": self.rank, "tid": track, "args": args,
        });
        self.push(&event);
    }

    /// Adds events made elsewhere (a NIC's counters).
    pub fn extend(&mut self, events: Vec<Value>) {
        for e in &events {
            self.push(e);
        }
    }

    /// Copies the spool's events (the inside of a JSON array) to `w`; returns whether there
    /// were any.
    fn copy_events(&mut self, w: &mut dyn Write) -> std::io::Result<bool> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.spool.flush()?;
        let file = self.spool.get_mut();
        let len = file.stream_position()?;
        file.rewind()?;
        std::io::copy(&mut (&mut *file).take(len), w)?;
        file.seek(std::io::SeekFrom::Start(len))?;
        Ok(self.events > 0)
    }

    /// Writes this rank's events as a JSON array to `part` (for rank 0 to gather).
    pub fn write_part(&mut self, part: &Path) -> Result<()> {
        crate::files::write_file_with(part, "the trace part", "", |w| {
            w.write_all(b"[")?;
            self.copy_events(w)?;
            w.write_all(b"]")
        })
    }

    /// Writes the trace file with the other ranks' events (the `parts` they wrote, each a JSON
    /// array) and track names for `replicas` replicas of `ranks` ranks.
    pub fn write(&mut self, parts: &[PathBuf], replicas: usize, ranks: usize) -> Result<()> {
        let mut meta = Vec::new();
        for rank in 0..ranks {
            meta.push(json!({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": format!("rank {rank}")}}));
            for r in 0..replicas {
                let global = rank * replicas + r;
                meta.push(
                    json!({"name": "thread_name", "ph": "M", "pid": rank, "tid": global,
                    "args": {"name": format!("replica {global}")}}),
                );
                // The GPU's own track, where the adapter has timestamps (named even if empty).
                meta.push(json!({"name": "thread_name", "ph": "M", "pid": rank,
                    "tid": GPU_TRACK + global,
                    "args": {"name": format!("replica {global}: GPU (its own timestamps)")}}));
            }
        }
        let other = json!({
            "clock": "host",
            "gpu_clock": "spans on the 'GPU' tracks come from the adapter's timestamp queries (where it has them); the step's first timestamp is placed at the host's instant just before it submitted the step, so each GPU span is drawn at the earliest it can have run",
            "producer": "gpu-train",
            "origin_unix_us": self.origin_unix_us,
            "steps": format!("{}..{}", self.steps.start, self.steps.end),
        });
        let path = self.path.clone();
        crate::files::write_file_with(
            &path,
            "the trace",
            "an earlier file of that name is untouched",
            |w| {
                w.write_all(b"{\"traceEvents\":[")?;
                let mut any = self.copy_events(w)?;
                for part in parts {
                    any |= copy_part(part, any, w)?;
                }
                for m in &meta {
                    w.write_all(if any { b",\n" } else { b"" })?;
                    serde_json::to_writer(&mut *w, m)?;
                    any = true;
                }
                write!(w, "],\"displayTimeUnit\":\"ms\",\"otherData\":{other}}}")
            },
        )
    }
}

/// Copies the events of another rank's part (a JSON array written by [`Trace::write_part`]) to
/// `w`, after a comma if events came before; returns whether it held any. A part that is not
/// such an array is refused.
fn copy_part(part: &Path, after: bool, w: &mut dyn Write) -> std::io::Result<bool> {
    let bad = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {why}", part.display()),
        )
    };
    let mut file = crate::files::open_input(part)?;
    let len = file.metadata()?.len();
    if !(2..=MAX_TRACE_BYTES).contains(&len) {
        return Err(bad("not a trace part of gpu-train's"));
    }
    let (mut first, mut last) = ([0u8], [0u8]);
    file.read_exact(&mut first)?;
    file.seek(std::io::SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    if first != *b"[" || last != *b"]" {
        return Err(bad("not a JSON array of events"));
    }
    if len == 2 {
        return Ok(false);
    }
    file.seek(std::io::SeekFrom::Start(1))?;
    w.write_all(if after { b",\n" } else { b"" })?;
    std::io::copy(&mut file.take(len - 2), w)?;
    Ok(true)
}

impl Timeline for Trace {
    fn wants(&self, step: u64) -> bool {
        Trace::wants(self, step)
    }
    fn span(&mut self, name: &str, track: usize, start: Instant, end: Instant, args: Value) {
        Trace::span(self, name, track, start, end, args)
    }
}

/// Parses `A..B` (global steps, from 0, B excluded).
pub fn parse_steps(s: &str) -> Result<std::ops::Range<u64>> {
    let bad = || Error::Config(format!("--trace-steps {s}: expected A..B, e.g. 0..50"));
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if b <= a {
        return Err(Error::Config(format!(
            "--trace-steps {s}: steps {a} to {b} (B excluded) is no step at all; B must be more than A, e.g. {a}..{}",
            a.saturating_add(50)
        )));
    }
    Ok(a..b)
}

/// The global steps a trace holds in a run that trains the steps `run`: those --trace-steps
/// `named`, refused when they begin after the run's last step (the trace would hold none); by
/// default (None) the run's first 50 steps after its first, the warm-up, counted from where it
/// starts (1..51 in a fresh run), or its one step when it has only one.
pub fn steps_in_run(
    named: Option<std::ops::Range<u64>>,
    run: std::ops::Range<u64>,
) -> Result<std::ops::Range<u64>> {
    let Some(steps) = named else {
        let from = if run.end > run.start + 1 { run.start + 1 } else { run.start };
        return Ok(from..(from + 50).min(run.end.max(from + 1)));
    };
    if steps.start >= run.end {
        return Err(Error::Config(format!(
            "--trace-steps {}..{}: this run trains global steps {} to {} (counted from 0), so the trace would hold none; choose steps in that range",
            steps.start,
            steps.end,
            run.start,
            run.end.saturating_sub(1)
        )));
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::steps_in_run;

    #[test]
    fn the_default_trace_steps_follow_the_run() {
        // A fresh run of 157 steps: 1..51; a resumed one from step 300: 301..351; a run of one
        // step: that step; one of 10 steps: 1..10.
        assert_eq!(steps_in_run(None, 0..157).unwrap(), 1..51);
        assert_eq!(steps_in_run(None, 300..600).unwrap(), 301..351);
        assert_eq!(steps_in_run(None, 0..1).unwrap(), 0..1);
        assert_eq!(steps_in_run(None, 0..10).unwrap(), 1..10);
        // Named steps are kept, or refused when the run never reaches them.
        assert_eq!(steps_in_run(Some(0..5), 0..157).unwrap(), 0..5);
        assert!(steps_in_run(Some(200..210), 0..157).is_err());
    }
}
