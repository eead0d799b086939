//! The data-parallel first verb on the GPU: forward and backward with the gradient written
//! into `bufs.grad` instead of the weights, copied for the host in two submissions (the output
//! layer's first, so its all-reduce can start while the hidden layer's gradient is computed),
//! and timed where the adapter has timestamp queries (the trace's GPU spans).

use super::state::{GpuEngine, MAX_IN_FLIGHT};
use crate::data::Dataset;
use crate::engine::GpuSpan;
use crate::error::{Error, Result};
use crate::gpu::plan::key::{Pass, StepValues};
use crate::model::ParamLayout;
use std::ops::Range;

impl GpuEngine {
    /// Copies tensors `tensors` of the gradient into the packed read-back buffer.
    fn copy_gradient(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        tensors: Range<usize>,
    ) -> Range<usize> {
        let packed = ParamLayout::packed_for(self.bufs.hidden);
        for t in tensors.clone() {
            encoder.copy_buffer_to_buffer(
                &self.bufs.grad,
                (self.bufs.layout.offsets[t] * 4) as u64,
                &self.bufs.grad_readback,
                (packed.offsets[t] * 4) as u64,
                (packed.lens[t] * 4) as u64,
            );
        }
        packed.offsets[tensors.start]..packed.range(tensors.end - 1).end
    }

    /// The data-parallel first verb: forward and backward, the gradient into `bufs.grad`,
    /// copied for the host in two submissions, the output layer's first.
    pub(super) fn gradient_step(
        &mut self,
        data: &Dataset,
        batch: &[u32],
        global_rows: usize,
        loss_scale: f32,
    ) -> Result<()> {
        // Whatever the fused path queued goes first, then this step in two submissions. With
        // one replica nothing reads the gradient back, so the host would run ahead: it waits
        // here while more than MAX_IN_FLIGHT steps are queued (time a profile counts as compute).
        self.submit()?;
        self.grad_pending.clear();
        while self.in_flight.len() > MAX_IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("not empty");
            self.wait_for(oldest)?;
        }
        let hidden = 0..2; // hidden.weight, hidden.bias
        let output = 2..4; // output.weight, output.bias
        if batch.is_empty() {
            // A replica left without examples (a global batch smaller than the replicas)
            // contributes a zero gradient.
            let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
            encoder.clear_buffer(&self.bufs.grad, 0, None);
            let range = self.copy_gradient(&mut encoder, 0..4);
            let done = self.submit_one(encoder);
            self.grad_pending.push((range, done));
            return Ok(());
        }
        let divisor = u32::try_from(global_rows)
            .map_err(|_| Error::Config(format!("a global batch of {global_rows} is too large")))?;
        let source = self.source(data)?;
        self.train_seen += batch.len() as u64;
        let v = StepValues {
            lr: 0.0,
            divisor,
            loss_scale,
        };
        self.queue_step(data, batch, Pass::Gradient, source, v)?;
        let (key, slot) = self.queued.pop().expect("just queued");
        let plan = &self.plans[&key];
        // Timestamps at the start and end of both submissions' work, where the adapter has
        // them (the trace's GPU spans).
        let stamp_slot = self.timer.as_ref().map_or(0, |t| t.next_slot());
        let stamps = |i: u32| self.timer.as_ref().map(|t| (&t.queries, 4 * stamp_slot as u32 + 2 * i));
        let submitted = std::time::Instant::now();
        // Submission 1: forward, loss, δ1, and the output layer's gradient, copied for the host.
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        plan.record(
            &mut encoder,
            Some(slot),
            0..plan.hidden_grad_at,
            "forward, loss, output layer's gradient",
            stamps(0),
        );
        let range = self.copy_gradient(&mut encoder, output);
        let first = self.submit_one(encoder);
        // Submission 2: the hidden layer's gradient (99 % of the bytes), copied for the host.
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        plan.record(
            &mut encoder,
            None,
            plan.hidden_grad_at..plan.rest.len(),
            "hidden layer's gradient",
            stamps(1),
        );
        if let Some(t) = &mut self.timer {
            t.finish(&mut encoder, stamp_slot, submitted);
        }
        let range2 = self.copy_gradient(&mut encoder, hidden);
        let second = self.submit_one(encoder);
        self.grad_pending = vec![(range, first), (range2, second)];
        self.gpu.check()
    }

    /// The GPU's own timing of the gradient steps since the last call, each step's first
    /// timestamp anchored at the host's instant before it was submitted: one read-back of the
    /// timer's ring (none when no step was timed), the same whether the run is traced or not.
    pub(super) fn gpu_spans(&mut self) -> Result<Vec<GpuSpan>> {
        let Some(t) = &mut self.timer else {
            return Ok(Vec::new());
        };
        if t.anchors.iter().all(Option::is_none) {
            return Ok(Vec::new());
        }
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        t.read.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.gpu.wait()?;
        pollster::block_on(rx.receive())
            .ok_or_else(|| Error::Gpu("read-back was cancelled".into()))?
            .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
        let ticks: Vec<u64> = {
            let view = t
                .read
                .get_mapped_range(..)
                .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        t.read.unmap();
        self.readback_bytes += t.read.size();
        self.readbacks += 1;
        let period = self.gpu.queue.get_timestamp_period() as f64 * 1e-9;
        let mut spans = Vec::new();
        for (slot, anchor) in t.anchors.iter_mut().enumerate() {
            let Some(submitted) = anchor.take() else { continue };
            let ticks = &ticks[4 * slot..4 * slot + 4];
            let at = |i: usize| ticks[i].saturating_sub(ticks[0]) as f64 * period;
            let span = |what, i: usize| GpuSpan {
                what,
                start: submitted + std::time::Duration::from_secs_f64(at(i)),
                dur: std::time::Duration::from_secs_f64((at(i + 1) - at(i)).max(0.0)),
            };
            spans.push(span("GPU: forward, loss, output layer's gradient", 0));
            spans.push(span("GPU: hidden layer's gradient", 2));
        }
        Ok(spans)
    }
}
