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
//! `ring` steps the queued steps are recorded into ONE compute pass and submitted. The host then
//! goes on gathering the next batches while the GPU computes, and waits only when two
//! submissions are already in flight. Loss and accuracy stay on the GPU until the epoch ends.
//!
//! With `resident`, the whole training set is uploaded once (still as u8) and a step sends only
//! the batch's indices; `unpack_batch` gathers the images inside VRAM. Same kernels, same
//! arithmetic: both paths give bit-identical weights.

use super::kernels::{self, Kernels};
use super::plan::{forward_splits, Pass, Plan, Source};
use super::Gpu;
use crate::data::{Dataset, CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::model::{Model, HIDDEN};
use crate::train::{Engine, Totals};
use std::collections::{HashMap, VecDeque};

/// Words (u32) an image takes when its 784 u8 pixels are packed four to a word.
pub(super) const WORDS_PER_IMAGE: u32 = (PIXELS / 4) as u32;
/// Where the totals buffer keeps (loss sum, correct count) for training and for evaluation.
pub(super) const TRAIN_AT: u32 = 0;
pub(super) const EVAL_AT: u32 = 2;
/// How many submissions may be queued on the GPU before the host waits for the oldest.
const MAX_IN_FLIGHT: usize = 2;

/// How the GPU trainer gets its data and batches its work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuOptions {
    /// Largest batch (the training batch size).
    pub batch: usize,
    /// Upload the whole training set once instead of staging every batch.
    pub resident: bool,
    /// Batch slots in the staging ring = steps recorded per submission.
    pub ring: usize,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            batch: 64,
            resident: false,
            ring: 32,
        }
    }
}

/// The whole training set in VRAM (`--resident`).
pub(super) struct Resident {
    pub(super) pixels: wgpu::Buffer,
    pub(super) labels: wgpu::Buffer,
    pub(super) len: usize,
}

pub struct GpuEngine {
    pub(super) gpu: Gpu,
    pub(super) kernels: Kernels,
    pub(super) opts: GpuOptions,
    pub(super) lr: f32,
    // The parameters, (out, in) row-major like the CPU's Model.
    pub(super) w1: wgpu::Buffer,
    pub(super) b1: wgpu::Buffer,
    pub(super) w2: wgpu::Buffer,
    pub(super) b2: wgpu::Buffer,
    // Activations and error terms, sized for opts.batch rows.
    pub(super) x: wgpu::Buffer,
    pub(super) h: wgpu::Buffer,
    pub(super) z: wgpu::Buffer,
    pub(super) dz: wgpu::Buffer,
    pub(super) dh: wgpu::Buffer,
    pub(super) partial: wgpu::Buffer,
    pub(super) batch_labels: wgpu::Buffer,
    /// [train loss sum, train correct, eval loss sum, eval correct], f32.
    pub(super) totals: wgpu::Buffer,
    // The staging ring: `ring` slots of pixels, labels and indices.
    pub(super) pixel_slots: wgpu::Buffer,
    pub(super) label_slots: wgpu::Buffer,
    pub(super) index_slots: wgpu::Buffer,
    pub(super) identity: wgpu::Buffer,
    pub(super) pixel_stride: u64,
    pub(super) small_stride: u64,
    pub(super) resident: Option<Resident>,
    pub(super) plans: HashMap<(usize, Pass, Source), Plan>,
    /// Steps written into slots but not yet submitted: (plan key, slot).
    pub(super) queued: Vec<((usize, Pass, Source), usize)>,
    pub(super) in_flight: VecDeque<wgpu::SubmissionIndex>,
    pub(super) host_pixels: Vec<u8>,
    pub(super) host_small: Vec<u32>,
    /// Bytes of training batches sent from RAM to VRAM since the last `take_staged_bytes`
    /// (the test set's batches are staged too, but not counted here).
    pub(super) staged_bytes: u64,
    /// Training examples stepped since the last `take_train_totals`.
    pub(super) train_seen: u64,
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
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
        let d = &gpu.device;
        let rows = opts.batch;
        let align_to = gpu.limits.min_storage_buffer_offset_alignment.max(4) as u64;
        let pixel_stride = align((rows * PIXELS) as u64, align_to);
        let small_stride = align((rows * 4) as u64, align_to);
        let max_binding = gpu.limits.max_storage_buffer_binding_size;
        let need = |what: &str, bytes: u64| -> Result<()> {
            if bytes > max_binding {
                return Err(Error::Config(format!(
                    "{what} needs {bytes} bytes in one buffer but {} allows {max_binding}; use a smaller --batch-size{}",
                    gpu.info.name,
                    if opts.resident { " or drop --resident" } else { "" }
                )));
            }
            Ok(())
        };
        // The split-K partial sums of both forward products share one buffer.
        let partial_len = (forward_splits(rows, HIDDEN, PIXELS) as usize * rows * HIDDEN)
            .max(forward_splits(rows, CLASSES, HIDDEN) as usize * rows * CLASSES);
        need(
            "the hidden layer's split-K partial sums",
            (partial_len * 4) as u64,
        )?;
        need("the batch's input rows", (rows * PIXELS * 4) as u64)?;

        let resident = if opts.resident {
            need("the resident training set", train.images.len() as u64)?;
            let labels: Vec<u32> = train.labels.iter().map(|&l| l as u32).collect();
            Some(Resident {
                pixels: kernels::storage::<u8>(d, "resident pixels", &train.images),
                labels: kernels::storage(d, "resident labels", &labels),
                len: train.len(),
            })
        } else {
            None
        };
        let slots = |label: &str, stride: u64| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: stride * opts.ring as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let identity: Vec<u32> = (0..rows as u32).collect();
        let engine = GpuEngine {
            kernels: Kernels::new(d),
            lr: 0.0,
            w1: kernels::storage(d, "hidden.weight", &model.w1),
            b1: kernels::storage(d, "hidden.bias", &model.b1),
            w2: kernels::storage(d, "output.weight", &model.w2),
            b2: kernels::storage(d, "output.bias", &model.b2),
            x: kernels::storage_zeroed(d, "x", rows * PIXELS),
            h: kernels::storage_zeroed(d, "h", rows * HIDDEN),
            z: kernels::storage_zeroed(d, "z", rows * CLASSES),
            dz: kernels::storage_zeroed(d, "dz", rows * CLASSES),
            dh: kernels::storage_zeroed(d, "dh", rows * HIDDEN),
            partial: kernels::storage_zeroed(d, "split-K partial sums", partial_len),
            batch_labels: kernels::storage_zeroed(d, "batch labels", rows),
            totals: kernels::storage_zeroed(d, "totals", 4),
            pixel_slots: slots("pixel slots", pixel_stride),
            label_slots: slots("label slots", small_stride),
            index_slots: slots("index slots", small_stride),
            identity: kernels::storage(d, "identity", &identity),
            pixel_stride,
            small_stride,
            resident,
            plans: HashMap::new(),
            queued: Vec::new(),
            in_flight: VecDeque::new(),
            host_pixels: vec![0; rows * PIXELS],
            host_small: vec![0; rows],
            staged_bytes: 0,
            train_seen: 0,
            opts,
            gpu,
        };
        engine.gpu.check()?;
        Ok(engine)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Bytes of VRAM this engine allocated (parameters, activations, ring, resident set).
    pub fn vram_bytes(&self) -> u64 {
        let mut total: u64 = [
            &self.w1,
            &self.b1,
            &self.w2,
            &self.b2,
            &self.x,
            &self.h,
            &self.z,
            &self.dz,
            &self.dh,
            &self.partial,
            &self.batch_labels,
            &self.totals,
            &self.pixel_slots,
            &self.label_slots,
            &self.index_slots,
            &self.identity,
        ]
        .iter()
        .map(|b| b.size())
        .sum();
        if let Some(r) = &self.resident {
            total += r.pixels.size() + r.labels.size();
        }
        total
    }

    /// Writes one batch into the next ring slot and queues its step; submits when the ring is full.
    pub(super) fn queue_step(
        &mut self,
        data: &Dataset,
        batch: &[u32],
        pass: Pass,
        source: Source,
    ) -> Result<()> {
        let rows = batch.len();
        if rows == 0 || rows > self.opts.batch {
            return Err(Error::Config(format!(
                "a batch of {rows} does not fit the GPU trainer's batch of {}",
                self.opts.batch
            )));
        }
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
                q.write_buffer(&self.pixel_slots, slot as u64 * self.pixel_stride, pixels);
                q.write_buffer(
                    &self.label_slots,
                    slot as u64 * self.small_stride,
                    bytemuck::cast_slice(&self.host_small[..rows]),
                );
                if pass == Pass::Train {
                    self.staged_bytes += (rows * (PIXELS + 4)) as u64;
                }
            }
            Source::Resident => {
                q.write_buffer(
                    &self.index_slots,
                    slot as u64 * self.small_stride,
                    bytemuck::cast_slice(batch),
                );
                if pass == Pass::Train {
                    self.staged_bytes += (rows * 4) as u64;
                }
            }
        }
        let key = (rows, pass, source);
        if !self.plans.contains_key(&key) {
            let plan = self.plan(rows, pass, source);
            self.plans.insert(key, plan);
        }
        self.queued.push((key, slot));
        if self.queued.len() == self.opts.ring {
            self.submit()?;
        }
        Ok(())
    }

    /// Records every queued step into one compute pass and submits it, without waiting for it.
    pub(super) fn submit(&mut self) -> Result<()> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("training steps"),
                timestamp_writes: None,
            });
            for (key, slot) in &self.queued {
                let plan = &self.plans[key];
                plan.unpack[*slot].record(&mut pass);
                for dispatch in &plan.rest {
                    dispatch.record(&mut pass);
                }
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
        let bytes = self.gpu.read_bytes(&self.totals, at as u64 * 4, 8)?;
        self.in_flight.clear();
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        self.gpu.queue.write_buffer(
            &self.totals,
            at as u64 * 4,
            bytemuck::cast_slice(&[0.0f32; 2]),
        );
        Ok(Totals {
            loss_sum: v[0] as f64,
            correct: v[1] as u64,
            seen,
        })
    }

    /// The learning rate is baked into the update dispatches' params: rebuild the training
    /// plans if it changes (it does not within a run).
    pub(super) fn set_lr(&mut self, lr: f32) -> Result<()> {
        if lr != self.lr {
            self.submit()?;
            self.lr = lr;
            self.plans.retain(|k, _| k.1 != Pass::Train);
        }
        Ok(())
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        format!(
            "GPU {}{}, batches {}",
            super::context::describe(&self.gpu.info),
            if self.gpu.is_software() {
                " (software: expect CPU-like speed)"
            } else {
                ""
            },
            if self.resident.is_some() {
                "resident in VRAM"
            } else {
                "staged from RAM"
            }
        )
    }

    fn train_step(&mut self, data: &Dataset, batch: &[u32], lr: f32) -> Result<()> {
        self.set_lr(lr)?;
        let source = match &self.resident {
            Some(r) if r.len == data.len() => Source::Resident,
            Some(_) => {
                return Err(Error::Config(
                    "the resident training set differs from the data passed to train_step".into(),
                ))
            }
            None => Source::Staged,
        };
        self.train_seen += batch.len() as u64;
        self.queue_step(data, batch, Pass::Train, source)
    }

    fn take_train_totals(&mut self) -> Result<Totals> {
        let seen = std::mem::take(&mut self.train_seen);
        self.take_totals(TRAIN_AT, seen)
    }

    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Totals> {
        let batch_size = batch_size.min(self.opts.batch);
        let all: Vec<u32> = (0..data.len() as u32).collect();
        self.submit()?;
        for batch in all.chunks(batch_size) {
            self.queue_step(data, batch, Pass::Eval, Source::Staged)?;
        }
        self.take_totals(EVAL_AT, data.len() as u64)
    }

    fn model(&mut self) -> Result<Model> {
        self.submit()?;
        Ok(Model {
            w1: self.gpu.read_f32(&self.w1)?,
            b1: self.gpu.read_f32(&self.b1)?,
            w2: self.gpu.read_f32(&self.w2)?,
            b2: self.gpu.read_f32(&self.b2)?,
        })
    }

    fn take_staged_bytes(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.staged_bytes))
    }

    fn set_model(&mut self, model: &Model) -> Result<()> {
        self.submit()?;
        let q = &self.gpu.queue;
        q.write_buffer(&self.w1, 0, bytemuck::cast_slice(&model.w1));
        q.write_buffer(&self.b1, 0, bytemuck::cast_slice(&model.b1));
        q.write_buffer(&self.w2, 0, bytemuck::cast_slice(&model.w2));
        q.write_buffer(&self.b2, 0, bytemuck::cast_slice(&model.b2));
        self.gpu.check()
    }
}
