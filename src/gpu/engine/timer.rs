//! The timestamps of the data-parallel steps (where the adapter has timestamp queries): the
//! trace's GPU spans.
//!
//! Every gradient step is timed, traced or not, into its own slot of a ring of [`SLOTS`]; the
//! slots are read back together when the engine's counters are taken (a metrics record, an
//! epoch's end), which an untraced run does as often. So tracing adds no read-back and no wait
//! to a step: the trace keeps the spans of the steps it wants, and the timing it measures is
//! the timing of an untraced run.

use crate::gpu::context::Gpu;
use std::time::Instant;

/// Gradient steps whose timestamps the ring holds between two reads: a longer stretch keeps
/// its last SLOTS steps (4 queries a step; a query set holds up to 4,096).
pub const SLOTS: usize = 256;
/// A query resolve writes at multiples of 256 bytes (wgpu's QUERY_RESOLVE_BUFFER_ALIGNMENT).
const RESOLVE_STRIDE: u64 = 256;
/// One step's four timestamps.
pub const SLOT_BYTES: u64 = 32;

/// The two submissions of each timed step (the start of the first's first pass, the end of its
/// last, likewise the second's): query set, resolve and read-back buffers, and each slot's
/// anchor on the host's clock.
pub(in crate::gpu) struct StepTimer {
    pub(in crate::gpu) queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    pub(in crate::gpu) read: wgpu::Buffer,
    /// Slot i holds a step timed since the last read, submitted at this host instant.
    pub(in crate::gpu) anchors: Vec<Option<Instant>>,
    /// Gradient steps timed since the engine was built (the next one's slot is this mod SLOTS).
    timed: usize,
}

impl StepTimer {
    /// The timer of the gradient steps, where `gpu` has timestamp queries.
    pub(in crate::gpu) fn new(gpu: &Gpu) -> Option<StepTimer> {
        gpu.features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let d = &gpu.device;
                let buffer = |label, size, usage| {
                    d.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                use wgpu::BufferUsages as U;
                StepTimer {
                    queries: d.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("step timestamps"),
                        ty: wgpu::QueryType::Timestamp,
                        count: 4 * SLOTS as u32,
                    }),
                    resolve: buffer("step timestamps, resolved", RESOLVE_STRIDE * SLOTS as u64, U::QUERY_RESOLVE | U::COPY_SRC),
                    read: buffer("step timestamps, read back", SLOT_BYTES * SLOTS as u64, U::MAP_READ | U::COPY_DST),
                    anchors: vec![None; SLOTS],
                    timed: 0,
                }
            })
    }

    /// The next step's slot: its first query (submission i's pass starts at query + 2i).
    pub(in crate::gpu) fn next_slot(&self) -> usize {
        self.timed % SLOTS
    }

    /// Resolves slot `slot`'s four timestamps and copies them to its place in the read-back
    /// buffer (recorded after the step's last pass), anchored at `submitted`.
    pub(in crate::gpu) fn finish(&mut self, encoder: &mut wgpu::CommandEncoder, slot: usize, submitted: Instant) {
        let q = 4 * slot as u32;
        let at = RESOLVE_STRIDE * slot as u64;
        encoder.resolve_query_set(&self.queries, q..q + 4, &self.resolve, at);
        encoder.copy_buffer_to_buffer(&self.resolve, at, &self.read, SLOT_BYTES * slot as u64, SLOT_BYTES);
        self.anchors[slot] = Some(submitted);
        self.timed += 1;
    }
}
