//! Where a GPU step's time goes: each kernel of a training step in its own compute pass with a
//! timestamp written at the pass's start and end, so the GPU itself says how long each ran.
//!
//! This is a measuring mode, not the training path: one pass per dispatch costs more than the
//! one pass (or the few, with texture mirrors) the trainer records a step (issue 4 measured 16-40 µs a pass on an H200), so the sum of
//! the kernel times is compared with the real step time to show what the dispatches cost.
//! The staging copy (`queue.write_buffer`) runs outside any pass, where wgpu can time it only with
//! TIMESTAMP_QUERY_INSIDE_ENCODERS; its cost shows instead as the gap between the staged and
//! resident epoch times.

use super::engine::state::GpuEngine;
use super::plan::key::{Pass, Source};
use crate::data::Dataset;
use crate::error::{Error, Result};

/// One kernel's mean GPU time over the profiled steps.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    pub name: &'static str,
    pub phase: &'static str,
    pub seconds: f64,
    pub flops: f64,
    pub bytes: f64,
}

impl GpuEngine {
    /// Whether the adapter can write timestamps.
    pub fn can_profile(&self) -> bool {
        self.gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) && self.opts.ring > 1
    }

    /// Runs the training steps `batches` one kernel per timed pass (these are real steps: the
    /// weights change) and returns each kernel's mean GPU time.
    pub fn profile(
        &mut self,
        data: &Dataset,
        batches: &[&[u32]],
        lr: f32,
    ) -> Result<Vec<KernelTime>> {
        if !self.can_profile() {
            return Err(Error::Config(format!(
                "{} offers no timestamp queries",
                self.gpu.info.name
            )));
        }
        self.submit()?;
        let mut sums: Vec<KernelTime> = Vec::new();
        let source = if self.bufs.resident.is_some() {
            Source::Resident
        } else {
            Source::Staged
        };
        for batch in batches {
            // Stage the batch into slot 0 as a normal step would, then take it off the queue
            // to record it kernel by kernel.
            let v = super::plan::key::StepValues {
                lr,
                divisor: batch.len() as u32,
                loss_scale: 1.0,
            };
            self.queue_step(data, batch, Pass::Train, source, v)?;
            let (key, slot) = self.queued.pop().expect("just queued");
            let plan = &self.plans[&key];
            let dispatches: Vec<_> = std::iter::once(&plan.unpack[slot])
                .chain(plan.rest.iter())
                .collect();
            let count = 2 * dispatches.len() as u32;
            let d = &self.gpu.device;
            let queries = d.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let resolved = d.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: 8 * count as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let mut encoder = d.create_command_encoder(&Default::default());
            for (i, dispatch) in dispatches.iter().enumerate() {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(dispatch.name),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                dispatch.record(&mut pass);
                drop(pass);
                // The copies into texture mirrors due before the next dispatch, if the picks
                // read any (dispatch i + 1 is rest[i]).
                plan.record_copies_before(&mut encoder, i);
            }
            encoder.resolve_query_set(&queries, 0..count, &resolved, 0);
            self.gpu.queue.submit([encoder.finish()]);
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&self.gpu.read_bytes(
                &resolved,
                0,
                resolved.size(),
            )?);
            let period = self.gpu.queue.get_timestamp_period() as f64 * 1e-9;
            if sums.is_empty() {
                sums = dispatches
                    .iter()
                    .map(|d| KernelTime {
                        name: d.name,
                        phase: d.phase,
                        seconds: 0.0,
                        flops: d.flops,
                        bytes: d.bytes,
                    })
                    .collect();
            }
            for (i, k) in sums.iter_mut().enumerate() {
                k.seconds += ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period
                    / batches.len() as f64;
            }
        }
        // The profiled steps' loss totals are not part of any epoch.
        self.take_totals(super::buffers::TRAIN_AT, 0)?;
        self.gpu.check()?;
        Ok(sums)
    }
}
