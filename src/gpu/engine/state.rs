//! [`GpuEngine`]: what a run keeps on the device (pipelines, buffers, the staging ring, one
//! plan per batch size), built once by [`GpuEngine::new`], and the queue and submit that every
//! step goes through. The verbs are in gpu/engine/mod.rs (the fused step, the update) and
//! gradient.rs (the data-parallel first verb).


use crate::gpu::buffers::{Buffers, GpuOptions};
use crate::gpu::kernels::{Blocking, Kernels};
use crate::gpu::dispatch::Dispatch;
use crate::gpu::plan::key::{Pass, PlanKey, Source, StepValues};
use crate::gpu::plan::table::Table;
use crate::gpu::plan::Plan;
use crate::gpu::context::Gpu;
use crate::data::{Dataset, PIXELS};
use crate::engine::Totals;
use crate::error::{Error, Result};
use crate::model::Model;
use super::timer::StepTimer;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;

/// How many submissions may be queued on the GPU before the host waits for the oldest.
pub(in crate::gpu) const MAX_IN_FLIGHT: usize = 2;

/// The f16 pipelines and the update that also refreshes the f16 working copy.
pub(in crate::gpu) struct HalfKernels {
    pub(in crate::gpu) kernels: crate::gpu::kernels::KernelsF16,
    pub(in crate::gpu) sgd: Dispatch,
}

impl HalfKernels {
    /// The f16 kernels, where `bufs` holds the f16 buffers (--precision f16).
    fn new(gpu: &Gpu, bufs: &Buffers, blocking: Blocking) -> Option<HalfKernels> {
        bufs.half.as_ref().map(|h| {
            let kernels = crate::gpu::kernels::KernelsF16::new(&gpu.device, blocking);
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
                crate::gpu::dispatch::groups_1d(bufs.layout.total as u32),
            );
            HalfKernels { kernels, sgd }
        })
    }
}

pub struct GpuEngine {
    pub(in crate::gpu) gpu: Gpu,
    /// Which matmul variant runs here, and how it was chosen.
    pub(in crate::gpu) matmul: crate::gpu::autotune::Choice,
    /// On a software adapter: how many times slower its matrix products ran than the CPU
    /// path's sgemm on the same products (measured at start-up), for the engine line.
    pub(in crate::gpu) slower_than_cpu: Option<f64>,
    pub(in crate::gpu) kernels: Kernels,
    pub(in crate::gpu) opts: GpuOptions,
    /// Every buffer, allocated once.
    pub(in crate::gpu) bufs: Buffers,
    /// The submissions that produce the output layer's and the hidden layer's gradients in
    /// `bufs.grad_readback`, in that order (empty when none is pending).
    pub(in crate::gpu) grad_pending: Vec<(Range<usize>, wgpu::SubmissionIndex)>,
    /// The sgd_update dispatch over every parameter.
    pub(in crate::gpu) sgd: Dispatch,
    /// --precision f16: its pipelines and its update (masters and working copy).
    pub(in crate::gpu) half: Option<HalfKernels>,
    /// Where the adapter has timestamp queries: the passes of every data-parallel step, timed.
    pub(in crate::gpu) timer: Option<StepTimer>,
    pub(in crate::gpu) plans: HashMap<PlanKey, Plan>,
    /// Dispatches a training step records (counted from a plan built for it at start-up).
    pub(in crate::gpu) step_dispatches: usize,
    /// Plans built so far (each is built once; the step values change inside them).
    pub(in crate::gpu) plans_built: usize,
    /// Steps written into slots but not yet submitted: (plan key, slot).
    pub(in crate::gpu) queued: Vec<(PlanKey, usize)>,
    pub(in crate::gpu) in_flight: VecDeque<wgpu::SubmissionIndex>,
    pub(in crate::gpu) host_pixels: Vec<u8>,
    pub(in crate::gpu) host_small: Vec<u32>,
    /// Bytes of training batches sent from RAM to VRAM since the last `take_counters`
    /// (the test set's batches are staged too, but not counted here).
    pub(in crate::gpu) staged_bytes: u64,
    /// Training examples stepped since the last `take_counters`.
    pub(in crate::gpu) train_seen: u64,
    /// Bytes read back from VRAM since the last `take_counters`.
    pub(in crate::gpu) readback_bytes: u64,
    /// Read-backs (each a wait for the device and a map) since the last `take_counters`.
    pub(in crate::gpu) readbacks: u64,
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
            crate::gpu::buffers::HalfBuffers::check(&gpu, hidden)?;
        }
        let matmul = crate::gpu::autotune::choose(
            &gpu,
            opts.kernels,
            (rows as u32, hidden as u32),
            opts.precision,
        )?;
        let slower_than_cpu = match (gpu.is_software(), matmul.large_products_seconds()) {
            (true, Some(s)) => Some(s / crate::gpu::autotune::cpu_seconds(rows, hidden).max(1e-9)),
            _ => None,
        };
        let bufs = Buffers::new(&gpu, model, &opts, train, matmul.variants())?;
        let blocking = Blocking::for_family(crate::gpu::matmul::software_family(&gpu));
        let kernels = Kernels::with_picks(&gpu.device, matmul.variants(), blocking);
        // sgd_update.wgsl's f16 working copy, which an f32 run has none of: 4 bytes never written.
        let no_copy = crate::gpu::dispatch::storage_zeroed(&gpu.device, "no f16 working copy", 1);
        let sgd = Dispatch::with_uniform(
            &gpu.device,
            "w −= lr·g",
            &kernels.sgd_update,
            &[
                bufs.grad.as_entire_binding(),
                bufs.params.as_entire_binding(),
                no_copy.as_entire_binding(),
            ],
            &bufs.sgd_params,
            crate::gpu::dispatch::groups_1d(bufs.layout.total as u32),
        )
        .work(
            "update",
            2.0 * bufs.layout.total as f64,
            12.0 * bufs.layout.total as f64,
        );
        let half = HalfKernels::new(&gpu, &bufs, blocking);
        let timer = StepTimer::new(&gpu);
        let rows = opts.rows();
        let mut engine = GpuEngine {
            timer,
            half,
            matmul,
            slower_than_cpu,
            kernels,
            bufs,
            grad_pending: Vec::new(),
            sgd,
            plans: HashMap::new(),
            step_dispatches: 0,
            plans_built: 0,
            queued: Vec::new(),
            in_flight: VecDeque::new(),
            host_pixels: vec![0; rows * PIXELS],
            host_small: vec![0; rows],
            staged_bytes: 0,
            train_seen: 0,
            readback_bytes: 0,
            readbacks: 0,
            opts,
            gpu,
        };
        engine.step_dispatches = engine.count_step_dispatches();
        engine.gpu.check()?;
        Ok(engine)
    }

    /// Dispatches one training step of a full batch records, counted from a plan built for it
    /// (and dropped: the engine builds its own when it trains): the fused step in f32, the
    /// separated step's gradient under f16.
    fn count_step_dispatches(&self) -> usize {
        let (d, k, b) = (&self.gpu.device, &self.kernels, &self.bufs);
        let table = Table::new(d, k, self.half.as_ref().map(|h| &h.kernels), b);
        let key = PlanKey {
            rows: self.opts.batch,
            pass: if self.half.is_some() { Pass::Gradient } else { Pass::Train },
            source: if b.resident.is_some() { Source::Resident } else { Source::Staged },
        };
        let v = StepValues {
            lr: 0.0,
            divisor: self.opts.batch as u32,
            loss_scale: 1.0,
        };
        Plan::new(&table, 1, key, v).dispatches()
    }

    /// Dispatches one training step records (a full batch): 5 since issue 31 (unpack, the
    /// hidden layer's product, head, backward, the hidden layer's weight product).
    pub fn dispatches_per_step(&self) -> usize {
        self.step_dispatches
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The matmul variant each product runs ("x·W1ᵀ k4_16x8_sg, δ1ᵀ·x tmn4_16x8_sg").
    pub fn matmul_variants(&self) -> String {
        self.matmul.names()
    }

    /// Each product's pick, and how it was chosen.
    pub fn matmul_choice(&self) -> &crate::gpu::autotune::Choice {
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
    pub(in crate::gpu) fn plan_for(&mut self, key: PlanKey, v: StepValues) -> Result<()> {
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
    pub(in crate::gpu) fn queue_step(
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
    pub(in crate::gpu) fn submit(&mut self) -> Result<()> {
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
    pub(in crate::gpu) fn take_totals(&mut self, at: u32, seen: u64) -> Result<Totals> {
        self.submit()?;
        let bytes = self.gpu.read_bytes(&self.bufs.totals, at as u64 * 4, 8)?;
        self.readback_bytes += 8;
        self.readbacks += 1;
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
    pub(in crate::gpu) fn source(&mut self, data: &Dataset) -> Result<Source> {
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
    pub(in crate::gpu) fn submit_one(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.gpu.queue.submit([encoder.finish()])
    }

    /// Waits until `submission` has finished.
    pub(in crate::gpu) fn wait_for(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
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
