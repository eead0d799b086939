//! The trace's view of a step: an observer around the verbs. The verbs do not know they are
//! watched: each call goes through [`Watch::verb`], which on a traced step times it and hands a
//! span to the [`Timeline`], and on any other step only calls it. Nothing here reads anything
//! back from a device: the GPU's own timing of a step arrives with the engine's counters, taken
//! as often in an untraced run ([`Watch::gpu_spans`] files each span under the traced step it
//! began in), so a traced run does the same work, and the same read-backs, as an untraced one.

use super::report::Timeline;
use crate::engine::GpuSpan;
use crate::error::Result;
use serde_json::json;
use std::time::Instant;

/// Trace tracks of the GPUs' own timestamps: replica r's is GPU_TRACK + r.
pub const GPU_TRACK: usize = 1000;

/// The observer of one process's replicas.
#[derive(Default)]
pub struct Watch<'a> {
    timeline: Option<&'a mut dyn Timeline>,
    /// The global step in progress, if it is traced.
    traced: Option<u64>,
    /// The traced steps whose GPU spans have not arrived yet: (global step, start, end).
    steps: Vec<(u64, Instant, Option<Instant>)>,
    /// The job's index of local replica 0: local replica i draws on track first + i.
    first: usize,
}

impl<'a> Watch<'a> {
    /// Watches for `timeline`; local replica 0 is replica `first` of the job.
    pub fn new(timeline: &'a mut dyn Timeline, first: usize) -> Self {
        Watch {
            timeline: Some(timeline),
            first,
            ..Watch::default()
        }
    }

    /// Global step `step` begins (traced if the timeline wants it).
    pub fn begin(&mut self, step: u64) {
        self.traced = self.timeline.as_ref().filter(|t| t.wants(step)).map(|_| step);
        if self.traced.is_some() {
            self.steps.push((step, Instant::now(), None));
        }
    }

    /// The step in progress has ended.
    pub fn end(&mut self) {
        if self.traced.take().is_some() {
            if let Some(last) = self.steps.last_mut() {
                last.2 = Some(Instant::now());
            }
        }
    }

    /// Runs verb `name` on local replica `i`: on a traced step, timed as a span with `args`.
    pub fn verb<T>(&mut self, name: &str, i: usize, args: serde_json::Value, verb: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.traced.is_none() {
            return verb();
        }
        let start = Instant::now();
        let out = verb()?;
        self.span(name, i, start, args);
        Ok(out)
    }

    /// A span from `start` to now on local replica `i`'s track, if the step is traced.
    pub fn span(&mut self, name: &str, i: usize, start: Instant, mut args: serde_json::Value) {
        let (Some(step), Some(t)) = (self.traced, self.timeline.as_mut()) else {
            return;
        };
        args["step"] = json!(step);
        t.span(name, self.first + i, start, Instant::now(), args);
    }

    /// Local replica `i`'s GPU spans (from its counters): each one that began during a traced
    /// step goes on the replica's GPU track under that step; the rest were untraced steps'.
    pub fn gpu_spans(&mut self, i: usize, spans: &[GpuSpan]) {
        let Some(t) = self.timeline.as_mut() else {
            return;
        };
        for s in spans {
            let during = |&&(_, start, end): &&(u64, Instant, Option<Instant>)| {
                start <= s.start && end.is_none_or(|e| s.start <= e)
            };
            if let Some(&(step, _, _)) = self.steps.iter().find(during) {
                let args = json!({"step": step, "clock": "GPU timestamps"});
                t.span(s.what, GPU_TRACK + self.first + i, s.start, s.start + s.dur, args);
            }
        }
    }

    /// Every replica's spans up to now have been filed: forget the steps that have ended.
    pub fn filed(&mut self) {
        self.steps.retain(|s| s.2.is_none());
    }
}
