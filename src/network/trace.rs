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
use crate::train::{Timeline, GPU_TRACK};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The largest trace `network` (and rank 0, gathering the other ranks' parts) reads back: a
/// trace is parsed whole, so a longer one should be cut with a shorter --trace-steps.
pub const MAX_TRACE_BYTES: u64 = 256 << 20;

/// Collects spans for the steps in `steps` (global step numbers, from 0) and writes them.
pub struct Trace {
    pub path: PathBuf,
    pub steps: std::ops::Range<u64>,
    origin: Instant,
    rank: usize,
    events: Vec<Value>,
}

impl Trace {
    pub fn new(path: &Path, steps: std::ops::Range<u64>, rank: usize) -> Trace {
        Trace {
            path: path.to_path_buf(),
            steps,
            origin: Instant::now(),
            rank,
            events: Vec::new(),
        }
    }

    /// Whether global step `step` is traced.
    pub fn wants(&self, step: u64) -> bool {
        self.steps.contains(&step)
    }

    /// Microseconds since the trace began.
    pub fn now_us(&self, t: Instant) -> f64 {
        t.duration_since(self.origin).as_secs_f64() * 1e6
    }

    /// A span on `track`'s track from `start` to `end`, with `args`.
    pub fn span(&mut self, name: &str, track: usize, start: Instant, end: Instant, args: Value) {
        let ts = self.now_us(start);
        let cat = if track >= GPU_TRACK { "gpu" } else { "step" };
        self.events.push(json!({
            "name": name, "ph": "X", "cat": cat,
            "ts": ts, "dur": (self.now_us(end) - ts).max(0.0),
            "pid": self.rank, "tid": track, "args": args,
        }));
    }

    /// Adds events made elsewhere (a NIC's counters).
    pub fn extend(&mut self, events: Vec<Value>) {
        self.events.extend(events);
    }

    /// The events as a JSON array (for rank 0 to gather).
    pub fn events_json(&self) -> String {
        Value::Array(self.events.clone()).to_string()
    }

    /// Writes the trace file with `others` (the other ranks' events) and track names for
    /// `replicas` replicas of `ranks` ranks.
    pub fn write(&self, others: &[Value], replicas: usize, ranks: usize) -> Result<()> {
        let mut events = self.events.clone();
        events.extend(others.iter().cloned());
        for rank in 0..ranks {
            events.push(json!({"name": "process_name", "ph": "M", "pid": rank, "args": {"name": format!("rank {rank}")}}));
            for r in 0..replicas {
                let global = rank * replicas + r;
                events.push(
                    json!({"name": "thread_name", "ph": "M", "pid": rank, "tid": global,
                    "args": {"name": format!("replica {global}")}}),
                );
                // The GPU's own track, where the adapter has timestamps (named even if empty).
                events.push(json!({"name": "thread_name", "ph": "M", "pid": rank,
                    "tid": GPU_TRACK + global,
                    "args": {"name": format!("replica {global}: GPU (its own timestamps)")}}));
            }
        }
        let doc = json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "clock": "host",
                "gpu_clock": "spans on the 'GPU' tracks come from the adapter's timestamp queries (where it has them); the step's first timestamp is placed at the host's instant just before it submitted the step, so each GPU span is drawn at the earliest it can have run",
                "producer": "gpu-train",
                "steps": format!("{}..{}", self.steps.start, self.steps.end),
            },
        });
        crate::checkpoint::write_file(
            &self.path,
            doc.to_string().as_bytes(),
            "the trace",
            "an earlier file of that name is untouched",
        )
    }
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
        return Err(bad());
    }
    Ok(a..b)
}
