//! The GPU trainer: every forward and backward pass runs as WGSL kernels on one wgpu device.
//!
//! ```text
//!  system RAM                        PCIe / staging                  VRAM
//!  training set (u8) ── gather batch ──► queue.write_buffer ──► batch slot s of a ring
//!                                                              │ unpack_batch  (u8 → f32)
//!                                                              │ matmul+reduce h = ReLU(x·W1ᵀ+b1)
//!                                                              │ matmul+reduce z = h·W2ᵀ+b2
//!                                                              │ softmax_xent  δ2, loss, correct
//!                                                              │ matmul        δ1 = (δ2·W2) ⊙ [h>0]
//!                                                              │ matmul, bias_update  W2, b2 −= lr·…
//!                                                              │ matmul, bias_update  W1, b1 −= lr·…
//! ```
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

use super::buffers::{Buffers, GpuOptions, EVAL_AT, TRAIN_AT};
use super::kernels::{self, Dispatch, Kernels};
use super::plan::{Pass, Plan, PlanKey, Source, StepValues, Table};
use super::Gpu;
use crate::data::{Dataset, PIXELS};
use crate::engine::{Counters, Engine, Target, Totals};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout};
use gradient::StepTimer;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// How many submissions may be queued on the GPU before the host waits for the oldest.
const MAX_IN_FLIGHT: usize = 2;

/// The f16 pipelines and the update that also refreshes the f16 working copy.
pub(super) struct HalfKernels {
    pub(super) kernels: super::kernels::KernelsF16,
    pub(super) sgd: Dispatch,
}

impl HalfKernels {
    /// The f16 kernels, where `bufs` holds the f16 buffers (--precision f16).
    fn new(gpu: &Gpu, bufs: &Buffers, bias_sum: kernels::BiasSum) -> Option<HalfKernels> {
        bufs.half.as_ref().map(|h| {
            let kernels = super::kernels::KernelsF16::new(&gpu.device, bias_sum);
            let sgd = Dispatch::with_uniform(
                &gpu.device,
                "w −= lr·g; w16 = f16(w)",
                &kernels.sgd_update,
                &[
                    bufs.grad.as_entire_binding(),
                    bufs.params.as_entire_binding(),
                    h.params.as_entire_binding(),
                ],
                &bufs.sgd_params,
                kernels::groups_1d(bufs.layout.total as u32),
            );
            HalfKernels { kernels, sgd }
        })
    }
}

pub struct GpuEngine {
    pub(super) gpu: Gpu,
    /// Which matmul variant runs here, and how it was chosen.
    pub(super) matmul: super::autotune::Choice,
    /// On a software adapter: how many times slower its matrix products ran than the CPU
    /// path's sgemm on the same products (measured at start-up), for the engine line.
    pub(super) slower_than_cpu: Option<f64>,
    pub(super) kernels: Kernels,
    pub(super) opts: GpuOptions,
    /// Every buffer, allocated once.
    pub(super) bufs: Buffers,
    /// The submissions that produce the output layer's and the hidden layer's gradients in
    /// `bufs.grad_readback`, in that order (empty when none is pending).
    pub(super) grad_pending: Vec<(Range<usize>, wgpu::SubmissionIndex)>,
    /// The sgd_update dispatch over every parameter.
    pub(super) sgd: Dispatch,
    /// --precision f16: its pipelines and its update (masters and working copy).
    pub(super) half: Option<HalfKernels>,
    /// Where the adapter has timestamp queries: the passes of a data-parallel step, timed.
    pub(super) timer: Option<StepTimer>,
    /// A gradient step was timed since the last `take_counters`: the host's instant just
    /// before it was submitted (where its timestamps are anchored).
    pub(super) timed: Option<std::time::Instant>,
    pub(super) plans: HashMap<PlanKey, Plan>,
    /// Plans built so far (each is built once; the step values change inside them).
    pub(super) plans_built: usize,
    /// Steps written into slots but not yet submitted: (plan key, slot).
    pub(super) queued: Vec<(PlanKey, usize)>,
    pub(super) in_flight: VecDeque<wgpu::SubmissionIndex>,
    pub(super) host_pixels: Vec<u8>,
    pub(super) host_small: Vec<u32>,
    /// Bytes of training batches sent from RAM to VRAM since the last `take_counters`
    /// (the test set's batches are staged too, but not counted here).
    pub(super) staged_bytes: u64,
    /// Training examples stepped since the last `take_counters`.
    pub(super) train_seen: u64,
    /// Bytes read back from VRAM since the last `take_counters`.
    pub(super) readback_bytes: u64,
}

impl GpuEngine {
    /// Sets up buffers, pipelines and the staging ring on `gpu`, with `model`'s weights.
    /// `train` is uploaded whole when `opts.resident`.
    pub fn new(gpu: Gpu, model: &Model, opts: GpuOptions, train: &Dataset) -> Result<Self> {
        if opts.batch == 0 || opts.ring == 0 {
            return Err(Error::Config(
                "batch size and ring size must be at least 1".into(),
            ));
        }
        Buffers::check_rows(&gpu, &opts)?;
        // Searched at the training batch (the step that runs most); the test pass's larger
        // batches run the same picks.
        let (rows, hidden) = (opts.batch, model.hidden());
        if opts.precision == crate::engine::Precision::F16 {
            super::buffers::HalfBuffers::check(&gpu, hidden)?;
        }
        let matmul = super::autotune::choose(
            &gpu,
            opts.kernels,
            (rows as u32, hidden as u32),
            opts.precision,
        )?;
        let slower_than_cpu = match (gpu.is_software(), matmul.large_products_seconds()) {
            (true, Some(s)) => Some(s / super::autotune::cpu_seconds(rows, hidden).max(1e-9)),
            _ => None,
        };
        let bufs = Buffers::new(&gpu, model, &opts, train, matmul.variants())?;
        let bias_sum = kernels::BiasSum::for_adapter(gpu.is_software());
        let kernels = Kernels::with_picks(&gpu.device, matmul.variants(), bias_sum);
        let sgd = Dispatch::with_uniform(
            &gpu.device,
            "w −= lr·g",
            &kernels.sgd_update,
            &[
                bufs.grad.as_entire_binding(),
                bufs.params.as_entire_binding(),
            ],
            &bufs.sgd_params,
            kernels::groups_1d(bufs.layout.total as u32),
        )
        .work(
            "update",
            2.0 * bufs.layout.total as f64,
            12.0 * bufs.layout.total as f64,
        );
        let half = HalfKernels::new(&gpu, &bufs, bias_sum);
        let timer = StepTimer::new(&gpu);
        let rows = opts.rows();
        let engine = GpuEngine {
            timer,
            timed: None,
            half,
            matmul,
            slower_than_cpu,
            kernels,
            bufs,
            grad_pending: Vec::new(),
            sgd,
            plans: HashMap::new(),
            plans_built: 0,
            queued: Vec::new(),
            in_flight: VecDeque::new(),
            host_pixels: vec![0; rows * PIXELS],
            host_small: vec![0; rows],
            staged_bytes: 0,
            train_seen: 0,
            readback_bytes: 0,
            opts,
            gpu,
        };
        engine.gpu.check()?;
        Ok(engine)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The matmul variant each product runs ("x·W1ᵀ k4_16x8_sg, h·W2ᵀ ...").
    pub fn matmul_variants(&self) -> String {
        self.matmul.names()
    }

    /// Each product's pick, and how it was chosen.
    pub fn matmul_choice(&self) -> &super::autotune::Choice {
        &self.matmul
    }

    /// Bytes of VRAM this engine allocated (parameters, activations, ring, resident set, texture
    /// mirrors).
    pub fn vram_bytes(&self) -> u64 {
        self.bufs.vram_bytes()
    }

    /// Hidden neurons of the network it trains.
    pub fn hidden(&self) -> usize {
        self.bufs.hidden
    }

    /// Plans built so far: one per (batch rows, pass, source) met, however the learning rate,
    /// the loss scale or the global batch change between steps.
    pub fn plans_built(&self) -> usize {
        self.plans_built
    }

    /// The plan for `key`, built the first time it is needed, holding the step values `v`
    /// (steps recorded with other values are submitted before they are rewritten).
    fn plan_for(&mut self, key: PlanKey, v: StepValues) -> Result<()> {
        if !self.plans.contains_key(&key) {
            let (d, k, b, ring) = (&self.gpu.device, &self.kernels, &self.bufs, self.opts.ring);
            let table = Table::new(d, k, self.half.as_ref().map(|h| &h.kernels), b);
            let plan = Plan::new(&table, ring, key, v);
            self.plans.insert(key, plan);
            self.plans_built += 1;
        }
        if !self.plans[&key].holds(v) {
            if self.queued.iter().any(|(k, _)| *k == key) {
                self.submit()?;
            }
            let queue = &self.gpu.queue;
            self.plans
                .get_mut(&key)
                .expect("built above")
                .write_values(queue, v);
        }
        Ok(())
    }

    /// Writes one batch into the next ring slot and queues its step; submits when the ring is
    /// full. `v`: the step's values (the global batch δ2 is divided by, 0 for evaluation).
    pub(super) fn queue_step(
        &mut self,
        data: &Dataset,
        batch: &[u32],
        pass: Pass,
        source: Source,
        v: StepValues,
    ) -> Result<()> {
        let rows = batch.len();
        if rows == 0 || rows > self.opts.rows() {
            return Err(Error::Config(format!(
                "a batch of {rows} does not fit the GPU trainer's batch of {}",
                self.opts.batch
            )));
        }
        let key = PlanKey { rows, pass, source };
        self.plan_for(key, v)?;
        let slot = self.queued.len();

        let q = &self.gpu.queue;
        match source {
            Source::Staged => {
                // The textbook path: copy the batch's u8 images from RAM into the slot.
                for (row, &i) in batch.iter().enumerate() {
                    self.host_pixels[row * PIXELS..(row + 1) * PIXELS]
                        .copy_from_slice(data.image(i as usize));
                    self.host_small[row] = data.labels[i as usize] as u32;
                }
                let pixels = &self.host_pixels[..rows * PIXELS];
                q.write_buffer(
                    &self.bufs.pixel_slots,
                    slot as u64 * self.bufs.pixel_stride,
                    pixels,
                );
                q.write_buffer(
                    &self.bufs.label_slots,
                    slot as u64 * self.bufs.small_stride,
                    bytemuck::cast_slice(&self.host_small[..rows]),
                );
                if pass != Pass::Eval {
                    self.staged_bytes += (rows * (PIXELS + 4)) as u64;
                }
            }
            Source::Resident => {
                q.write_buffer(
                    &self.bufs.index_slots,
                    slot as u64 * self.bufs.small_stride,
                    bytemuck::cast_slice(batch),
                );
                if pass != Pass::Eval {
                    self.staged_bytes += (rows * 4) as u64;
                }
            }
        }
        self.queued.push((key, slot));
        if self.queued.len() == self.opts.ring && pass != Pass::Gradient {
            self.submit()?;
        }
        Ok(())
    }

    /// Records every queued step (into one compute pass where no step copies into mirrors) and
    /// submits them, without waiting.
    pub(super) fn submit(&mut self) -> Result<()> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        let label = "training steps";
        if self
            .queued
            .iter()
            .any(|(key, _)| self.plans[key].has_copies())
        {
            // Steps that copy into texture mirrors: passes cut by the copies.
            for (key, slot) in &self.queued {
                let plan = &self.plans[key];
                plan.record(&mut encoder, Some(*slot), 0..plan.rest.len(), label, None);
            }
        } else {
            // All the steps in one pass.
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            for (key, slot) in &self.queued {
                let plan = &self.plans[key];
                plan.record_in(&mut pass, *slot, 0..plan.rest.len());
            }
        }
        self.queued.clear();
        self.in_flight
            .push_back(self.gpu.queue.submit([encoder.finish()]));
        // Keep at most MAX_IN_FLIGHT submissions queued: the GPU always has the next one ready
        // while the host prepares the one after, and host memory for staging stays bounded.
        while self.in_flight.len() > MAX_IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("not empty");
            self.gpu
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(oldest),
                    timeout: None,
                })
                .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        }
        self.gpu.check()
    }

    /// Submits what is queued, reads (loss sum, correct) at `at` of the totals and zeroes them.
    pub(super) fn take_totals(&mut self, at: u32, seen: u64) -> Result<Totals> {
        self.submit()?;
        let bytes = self.gpu.read_bytes(&self.bufs.totals, at as u64 * 4, 8)?;
        self.readback_bytes += 8;
        self.in_flight.clear();
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        self.gpu.queue.write_buffer(
            &self.bufs.totals,
            at as u64 * 4,
            bytemuck::cast_slice(&[0.0f32; 2]),
        );
        Ok(Totals {
            loss_sum: v[0] as f64,
            correct: v[1] as u64,
            seen,
        })
    }
}

impl GpuEngine {
    /// Where a step's images come from. A resident engine uploads a training set it has not
    /// met before (a data-parallel replica's shard, new every epoch): one upload of the set
    /// instead of one copy per batch.
    fn source(&mut self, data: &Dataset) -> Result<Source> {
        let Some(res) = &self.bufs.resident else {
            return Ok(Source::Staged);
        };
        if res.id == data.id() {
            return Ok(Source::Resident);
        }
        if (data.images.len() as u64) > res.pixels.size() {
            return Err(Error::Config(format!(
                "a training set of {} images does not fit the resident buffer of {} images",
                data.len(),
                res.pixels.size() as usize / PIXELS
            )));
        }
        // Steps recorded but not submitted read the old set: they go first.
        self.submit()?;
        let res = self.bufs.resident.as_mut().expect("checked above");
        let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
        let q = &self.gpu.queue;
        // write_buffer needs a multiple of 4 bytes: 784 bytes an image always is.
        q.write_buffer(&res.pixels, 0, &data.images);
        q.write_buffer(&res.labels, 0, bytemuck::cast_slice(&labels));
        (res.len, res.id) = (data.len(), data.id());
        self.staged_bytes += (data.images.len() + 4 * labels.len()) as u64;
        self.gpu.check()?;
        Ok(Source::Resident)
    }

    /// Submits `encoder`'s work and returns its index.
    fn submit_one(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.gpu.queue.submit([encoder.finish()])
    }

    /// Waits until `submission` has finished.
    fn wait_for(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        self.gpu
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        self.gpu.check()
    }
}

impl std::fmt::Display for GpuEngine {
    /// `{:#}`: only what sets the arithmetic's rounding (for snapshots: the adapter and the
    /// matmul variant).
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if f.alternate() {
            return write!(
                f,
                "GPU {}, matmul {}",
                self.gpu.info.name,
                self.matmul.names()
            );
        }
        write!(
            f,
            "GPU {}{}, batches {}, matmul per product: {} ({}){}",
            super::context::describe(&self.gpu.info),
            match (self.gpu.is_software(), self.slower_than_cpu) {
                (true, Some(r)) if r >= 1.5 => format!(
                    " (software adapter: its matrix products ran {r:.0}× slower than the CPU path's here, so --cpu trains faster)"
                ),
                (true, Some(_)) => " (software adapter: its matrix products ran about as fast as the CPU path's here)".to_string(),
                (true, None) => " (software adapter, on the CPU: --cpu is usually faster)".to_string(),
                _ => String::new(),
            },
            if self.bufs.resident.is_some() {
                "resident in VRAM"
            } else {
                "staged from RAM"
            },
            self.matmul.describe(),
            self.matmul.how,
            if self.half.is_some() {
                ", mixed precision: f16 activations and working weights (the f16 kernels above, f32 sums), f32 masters"
            } else {
                ""
            }
        )
    }
}

impl Engine for GpuEngine {
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
        let p = kernels::SgdParams {
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
        let gpu_spans = match self.timed.take() {
            Some(submitted) => self.gpu_spans(submitted)?,
            None => Vec::new(),
        };
        Ok(Counters {
            totals,
            staged_bytes: Some(std::mem::take(&mut self.staged_bytes)),
            readback_bytes: Some(std::mem::take(&mut self.readback_bytes)),
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
