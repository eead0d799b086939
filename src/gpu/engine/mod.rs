//! The GPU trainer: every forward and backward pass runs as WGSL kernels on one wgpu device.
//!
//! ```text
//!  system RAM                        PCIe / staging                  VRAM
//!  training set (u8) ── gather batch ──► queue.write_buffer ──► batch slot s of a ring
//!                                                              │ unpack_batch  (u8 → f32)
//!                                                              │ matmul    h = ReLU(x·W1ᵀ+b1)
//!                                                              │ head      z = h·W2ᵀ+b2, SoftMax,
//!                                                              │             δ2, loss, correct
//!                                                              │ backward  δ1 = (δ2·W2) ⊙ [h>0];
//!                                                              │             W2, b2, b1 −= lr·…
//!                                                              │ matmul    W1 −= lr·δ1ᵀ·x
//! ```
//! Five dispatches a step, each waiting for the one before: at batch 64 the step is bound by
//! that wait, not by arithmetic (BENCHMARKS.md), so the small products live inside head and
//! backward rather than in dispatches of their own (shaders/head.wgsl, shaders/backward.wgsl).
//! Everything is allocated once: buffers for the largest batch, and for each batch size met
//! (the full batch, the last short batch of an epoch) a `Plan` (plan.rs) holding the step's dispatches
//! with their bind groups. A step writes its batch into the next free slot and is queued; every
//! `ring` steps the queued steps are recorded into one compute pass (several a step where the
//! products read texture mirrors, which are copied between passes: gpu/mirror.rs) and
//! submitted. The host then goes on gathering the next batches while the GPU computes, and waits only when two
//! submissions are already in flight. Loss and accuracy stay on the GPU until the epoch ends.
//!
//! A data-parallel replica runs the same kernels as a step in three parts (train.rs; the first
//! in gradient.rs):
//! [`Engine::step`] with `Target::Gradient` writes the gradient of every parameter into one flat buffer
//! (`grad`, in [`ParamLayout`] order, each tensor a sub-range) instead of updating in place,
//! and copies it into a mappable read-back buffer in two submissions, the output layer's first
//! (so its all-reduce can start while the hidden layer's gradient is still being computed);
//! [`Engine::write_gradient`] puts the all-reduced sum back; [`Engine::apply_update`] runs
//! `sgd_update.wgsl` once over all 101,770 parameters, its learning rate in a uniform written
//! every step. With one replica the fused path above stays the default: the separation costs a
//! gradient buffer round trip and one more dispatch a step (BENCHMARKS.md measures it).
//!
//! With `resident`, the whole training set is uploaded once (still as u8) and a step sends only
//! the batch's indices; `unpack_batch` gathers the images inside VRAM. Same kernels, same
//! arithmetic: both paths give bit-identical weights.


mod gradient;
pub mod state;
mod timer;

use crate::gpu::buffers::{EVAL_AT, TRAIN_AT};
use crate::gpu::plan::key::{Pass, Source, StepValues};
use state::GpuEngine;
use crate::data::Dataset;
use crate::engine::{Counters, Engine, Target, Totals};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout};
use std::ops::Range;

impl std::fmt::Display for GpuEngine {
    /// One short line: the adapter and the data path. `{:#}`: only what sets the arithmetic's
    /// rounding (for snapshots: the adapter and the matmul variant).
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if f.alternate() {
            return write!(f, "GPU {}, matmul {}", self.gpu.info.name, self.matmul.names());
        }
        let kind = match self.gpu.info.device_type {
            wgpu::DeviceType::Cpu => "software adapter (runs on the CPU)".to_string(),
            other => format!("{other:?}"),
        };
        write!(
            f,
            "GPU {}: {:?}, {kind}; {}",
            self.gpu.info.name,
            self.gpu.info.backend,
            if self.bufs.resident.is_some() { "resident in VRAM" } else { "staged from RAM" },
        )
    }
}

impl Engine for GpuEngine {
    fn notes(&self) -> Vec<String> {
        let note = match (self.gpu.is_software(), self.slower_than_cpu) {
            (true, Some(r)) if r >= 1.5 => format!("its matrix products ran {r:.0}× slower than the CPU path's here: --cpu trains faster"),
            (true, Some(_)) => "its matrix products ran about as fast as the CPU path's here".to_string(),
            (true, None) => "a software adapter runs on the CPU: --cpu is usually faster".to_string(),
            _ => String::new(),
        };
        // How long a step's chain of dependent dispatches is, and where its kernels came from.
        let how = self.matmul.how.split(':').next().unwrap_or_default();
        // Under f16 the step goes through the gradient: the update (sgd_update, which also
        // rounds the working copy) follows in a submission of its own.
        let update = if self.half.is_some() { " and the update" } else { "" };
        let step = format!(
            "a step is {} dispatches{update}; its two products' kernels {how} (-v: which)",
            self.step_dispatches
        );
        let mut notes: Vec<String> = [step, note].into_iter().filter(|n| !n.is_empty()).collect();
        if self.half.is_some() {
            notes.push("mixed precision: f16 activations and working weights, f32 sums and masters".into());
        }
        notes
    }

    fn details(&self) -> Vec<String> {
        let mut lines = vec![format!("adapter: {}", crate::gpu::context::describe(&self.gpu.info))];
        lines.push(format!("matmul per product: {} ({})", self.matmul.describe(), self.matmul.how));
        lines
    }

    fn step(&mut self, data: &Dataset, batch: &[u32], target: Target) -> Result<()> {
        match target {
            Target::Update { lr } => {
                if self.half.is_some() {
                    return Err(Error::Config(
                        "--precision f16 trains with the separated step (gradient, loss scaling, update)"
                            .into(),
                    ));
                }
                if batch.is_empty() {
                    return Ok(());
                }
                let source = self.source(data)?;
                self.train_seen += batch.len() as u64;
                let v = StepValues {
                    lr,
                    divisor: batch.len() as u32,
                    loss_scale: 1.0,
                };
                self.queue_step(data, batch, Pass::Train, source, v)
            }
            Target::Gradient {
                global_rows,
                loss_scale,
            } => self.gradient_step(data, batch, global_rows, loss_scale),
        }
    }

    fn read_gradient(&mut self, range: Range<usize>, out: &mut [f32]) -> Result<()> {
        // Wait only for the submissions that wrote this range: with the output layer's range,
        // the hidden layer's gradient is still being computed while the host goes on.
        let needed: Vec<wgpu::SubmissionIndex> = self
            .grad_pending
            .iter()
            .filter(|(r, _)| r.start < range.end && range.start < r.end)
            .map(|(_, s)| s.clone())
            .collect();
        if needed.is_empty() {
            return Err(Error::Gpu(
                "read_gradient without a forward_backward before it".into(),
            ));
        }
        for s in needed {
            self.wait_for(s)?;
        }
        // A mapped range must start at a multiple of 8 bytes (wgpu's MAP_ALIGNMENT): with an odd
        // hidden width the output layer's bucket does not, so map from the float before it.
        let start = (range.start * 4) as u64;
        let bytes = (start & !7)..(range.end * 4) as u64;
        let skip = (start - bytes.start) as usize;
        let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
        self.bufs
            .grad_readback
            .map_async(wgpu::MapMode::Read, bytes.clone(), move |r| {
                let _ = tx.send(r);
            });
        self.gpu.wait()?;
        pollster::block_on(rx.receive())
            .ok_or_else(|| Error::Gpu("read-back was cancelled".into()))?
            .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
        {
            let view = self
                .bufs
                .grad_readback
                .get_mapped_range(bytes)
                .map_err(|e| Error::Gpu(format!("read-back failed: {e}")))?;
            out.copy_from_slice(bytemuck::cast_slice(&view[skip..]));
        }
        self.bufs.grad_readback.unmap();
        self.readback_bytes += 4 * out.len() as u64;
        self.readbacks += 1;
        Ok(())
    }

    fn write_gradient(&mut self, grad: &[f32]) -> Result<()> {
        let packed = ParamLayout::packed_for(self.bufs.hidden);
        for t in 0..4 {
            self.gpu.queue.write_buffer(
                &self.bufs.grad,
                (self.bufs.layout.offsets[t] * 4) as u64,
                bytemuck::cast_slice(&grad[packed.range(t)]),
            );
        }
        Ok(())
    }

    fn apply_update(&mut self, lr: f32) -> Result<()> {
        // The learning rate is written every step: a schedule needs nothing rebuilt.
        let p = crate::abi::SgdParams {
            len: self.bufs.layout.total as u32,
            lr,
            _pad: [0; 2],
        };
        self.gpu
            .queue
            .write_buffer(&self.bufs.sgd_params, 0, bytemuck::bytes_of(&p));
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            match &self.half {
                Some(h) => h.sgd.record(&mut pass),
                None => self.sgd.record(&mut pass),
            }
        }
        // Not waited for here: the next forward_backward waits if too much is queued.
        self.in_flight.push_back(self.submit_one(encoder));
        self.grad_pending.clear();
        self.gpu.check()
    }

    fn take_counters(&mut self) -> Result<Counters> {
        let seen = std::mem::take(&mut self.train_seen);
        let totals = self.take_totals(TRAIN_AT, seen)?;
        let gpu_spans = self.gpu_spans()?;
        Ok(Counters {
            totals,
            staged_bytes: Some(std::mem::take(&mut self.staged_bytes)),
            readback_bytes: Some(std::mem::take(&mut self.readback_bytes)),
            readbacks: Some(std::mem::take(&mut self.readbacks)),
            gpu_spans,
        })
    }

    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Totals> {
        let batch_size = batch_size.min(self.opts.rows());
        let all: Vec<u32> = (0..data.len() as u32).collect();
        self.submit()?;
        for batch in all.chunks(batch_size) {
            let v = StepValues {
                lr: 0.0,
                divisor: 0,
                loss_scale: 1.0,
            };
            self.queue_step(data, batch, Pass::Eval, Source::Staged, v)?;
        }
        self.take_totals(EVAL_AT, data.len() as u64)
    }

    fn model(&mut self) -> Result<Model> {
        self.submit()?;
        self.readback_bytes += self.bufs.params.size();
        self.readbacks += 1;
        Ok(Model::from_flat(
            &self.gpu.read_f32(&self.bufs.params)?,
            &self.bufs.layout,
        ))
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        self.submit()?;
        self.gpu.queue.write_buffer(
            &self.bufs.params,
            0,
            bytemuck::cast_slice(&model.to_flat(&self.bufs.layout)),
        );
        if let Some(h) = &self.bufs.half {
            h.upload(&self.gpu.queue, model);
        }
        self.gpu.check()
    }
}
