//! Every buffer the GPU trainer allocates, once, at start-up: the parameters and their
//! gradient (flat, [`ParamLayout`]), the activations and error terms of the largest batch, the
//! split-K partial sums, the epoch's loss totals, the staging ring, and (with `--resident`)
//! the training set. Sizes are checked against the adapter's limits before anything is made.

use crate::gpu::matmul::MatmulVariant;
use crate::abi::{Site, SITES};
use super::mirror::Mirrors;
use super::context::Gpu;
use crate::data::{Dataset, CLASSES, PIXELS};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout};

/// Words (u32) an image takes when its 784 u8 pixels are packed four to a word.
pub(super) const WORDS_PER_IMAGE: u32 = (PIXELS / 4) as u32;
/// Where the totals buffer keeps (loss sum, correct count) for training and for evaluation.
pub(super) const TRAIN_AT: u32 = 0;
pub(super) const EVAL_AT: u32 = 2;

/// The whole training set (or this epoch's shard of it) in VRAM (`--resident`).
pub(super) struct Resident {
    pub(super) pixels: wgpu::Buffer,
    pub(super) labels: wgpu::Buffer,
    pub(super) len: usize,
    /// [`Dataset::id`](crate::data::Dataset::id) of the set uploaded.
    pub(super) id: u64,
}

impl Resident {
    /// Uploads the whole of `train` (u8 pixels and u32 labels) into VRAM.
    pub(super) fn upload(d: &wgpu::Device, train: &Dataset) -> Self {
        let labels: Vec<u32> = train.labels.iter().map(|&l| l as u32).collect();
        Resident {
            pixels: crate::gpu::dispatch::storage::<u8>(d, "resident pixels", &train.images),
            labels: crate::gpu::dispatch::storage(d, "resident labels", &labels),
            len: train.len(),
            id: train.id(),
        }
    }
}

/// How the GPU trainer gets its data and batches its work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuOptions {
    /// Largest batch (the training batch size).
    pub batch: usize,
    /// Upload the whole training set once instead of staging every batch.
    pub resident: bool,
    /// Batch slots in the staging ring = steps recorded per submission.
    pub ring: usize,
    /// The matmul variant by name (`--kernels`); None: measured per adapter (gpu/autotune).
    pub kernels: Option<&'static str>,
    /// FP32, or mixed precision with FP16 activations (needs the adapter's SHADER_F16).
    pub precision: crate::engine::Precision,
}

impl GpuOptions {
    /// Rows the buffers hold: the training batch, or the test pass's larger batch.
    pub fn rows(&self) -> usize {
        self.batch.max(crate::engine::EVAL_BATCH)
    }
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            batch: 64,
            resident: false,
            ring: 32,
            kernels: None,
            precision: crate::engine::Precision::F32,
        }
    }
}

pub(super) struct Buffers {
    /// Neurons in the hidden layer (`--hidden`).
    pub(super) hidden: usize,
    /// Where each tensor sits in `params` and `grad` (offsets aligned for sub-range binding).
    pub(super) layout: ParamLayout,
    /// Every parameter in one flat buffer: hidden.weight (128, 784), hidden.bias, output.weight
    /// (10, 128), output.bias, each (out, in) row-major like the CPU's Model.
    pub(super) params: wgpu::Buffer,
    /// The gradient of every parameter, same layout (the data-parallel step writes it).
    pub(super) grad: wgpu::Buffer,
    /// The gradient copied for the host, packed ([`ParamLayout::packed`]), mappable.
    pub(super) grad_readback: wgpu::Buffer,
    /// sgd_update's uniform: its `lr` is written before every update.
    pub(super) sgd_params: wgpu::Buffer,
    // Activations and error terms, sized for opts.batch rows.
    pub(super) x: wgpu::Buffer,
    pub(super) h: wgpu::Buffer,
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
    /// The f16 buffers of --precision f16.
    pub(super) half: Option<HalfBuffers>,
    /// Texture mirrors of x, W1 and δ1 (in the working precision), those the products' picks
    /// read.
    pub(super) mirrors: Option<Mirrors>,
}

/// What --precision f16 adds: the batch, activations and error terms in f16, and the f16
/// working copy of the weights (the f32 `params` stay the master copy).
pub(super) struct HalfBuffers {
    pub(super) layout: ParamLayout,
    pub(super) params: wgpu::Buffer,
    pub(super) x: wgpu::Buffer,
    pub(super) h: wgpu::Buffer,
    pub(super) dz: wgpu::Buffer,
    pub(super) dh: wgpu::Buffer,
}

impl HalfBuffers {
    /// Whether `gpu` can run an f16 step of `hidden` neurons: f16 in shaders, and an even
    /// width (f16 tensors are bound in 4-byte units). Checked before anything f16 is compiled.
    pub(super) fn check(gpu: &Gpu, hidden: usize) -> Result<()> {
        if hidden % 2 == 1 {
            return Err(Error::Config(format!(
                "--precision f16 with --hidden {hidden}: the f16 path needs an even width (its f16 tensors are bound in 4-byte units)"
            )));
        }
        if !gpu.features.contains(wgpu::Features::SHADER_F16) {
            return Err(Error::Config(format!(
                "--precision f16: {} does not offer f16 in shaders (SHADER_F16); use --precision f32, \
                 or another --device (see `gpu-train devices`: lavapipe and NVIDIA's Vulkan driver offer it)",
                super::context::describe(&gpu.info)
            )));
        }
        Ok(())
    }

    /// The f16 working copy of `model`'s weights (sharing `layout`'s offsets with the f32
    /// masters) and f16 activations for `rows` rows; refused where [`HalfBuffers::check`]
    /// refuses.
    fn new(gpu: &Gpu, model: &Model, layout: ParamLayout, rows: usize) -> Result<Self> {
        let (d, hidden) = (&gpu.device, model.hidden());
        HalfBuffers::check(gpu, hidden)?;
        let hb = HalfBuffers {
            layout,
            params: crate::gpu::dispatch::storage_bytes(d, "parameters, f16 working copy", layout.total * 2),
            x: crate::gpu::dispatch::storage_bytes(d, "x f16", rows * PIXELS * 2),
            h: crate::gpu::dispatch::storage_bytes(d, "h f16", rows * hidden * 2),
            dz: crate::gpu::dispatch::storage_bytes(d, "dz f16", rows * CLASSES * 2),
            dh: crate::gpu::dispatch::storage_bytes(d, "dh f16", rows * hidden * 2),
        };
        hb.upload(&gpu.queue, model);
        Ok(hb)
    }

    /// Working-copy tensor `i`.
    pub(super) fn param(&self, i: usize) -> wgpu::BindingResource<'_> {
        crate::gpu::dispatch::sub16(&self.params, self.layout.range(i))
    }

    /// Writes `model` into the working copy, rounded to f16.
    pub(super) fn upload(&self, queue: &wgpu::Queue, model: &Model) {
        let flat: Vec<half::f16> = model
            .to_flat(&self.layout)
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect();
        queue.write_buffer(&self.params, 0, bytemuck::cast_slice(&flat));
    }
}

fn align(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

impl Buffers {
    /// Refuses a batch whose input rows cannot be one buffer on `gpu` (checked before anything
    /// is sized or searched from it).
    pub(super) fn check_rows(gpu: &Gpu, opts: &GpuOptions) -> Result<()> {
        let rows = opts.rows();
        let max_binding = gpu.limits.max_storage_buffer_binding_size;
        // The batch's input rows are checked first, with checked arithmetic, so that every size
        // computed below is known to be small: a batch size near 2^62 must be refused, not
        // wrap around to a 0-byte buffer.
        let input_bytes = rows.checked_mul(PIXELS * 4).map(|b| b as u64);
        if input_bytes.is_none_or(|b| b > max_binding) {
            return Err(Error::Config(format!(
                "--batch-size {rows} is too large: the batch's input rows need {} bytes in one buffer but {} allows {max_binding}",
                input_bytes.map_or("more than 2^64".into(), |b| b.to_string()),
                gpu.info.name
            )));
        }
        Ok(())
    }

    /// Allocates everything for batches of up to `opts.batch` rows on `gpu`, with `model`'s
    /// weights; `train` is uploaded whole when `opts.resident`.
    pub(super) fn new(
        gpu: &Gpu,
        model: &Model,
        opts: &GpuOptions,
        train: &Dataset,
        picks: [&MatmulVariant; SITES],
    ) -> Result<Self> {
        let d = &gpu.device;
        let rows = opts.rows();
        let align_to = gpu.limits.min_storage_buffer_offset_alignment.max(4) as u64;
        let hidden = model.hidden();
        // Under --precision f16 the f32 masters and the f16 working copy share element offsets
        // (one index walks both in sgd_update_f16), aligned for the 2-byte copy's sub-ranges.
        let layout = match opts.precision {
            crate::engine::Precision::F32 => ParamLayout::aligned_for(align_to as usize, 4, hidden),
            crate::engine::Precision::F16 => {
                ParamLayout::aligned_for(2 * align_to as usize, 4, hidden)
            }
        };
        let max_binding = gpu.limits.max_storage_buffer_binding_size;
        Buffers::check_rows(gpu, opts)?;
        let pixel_stride = align((rows * PIXELS) as u64, align_to);
        let small_stride = align((rows * 4) as u64, align_to);
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
        // The split-K partial sums of the hidden layer's product (head adds them up), for the
        // batch that needs the most: a shorter batch (an epoch's last, the test set's last) may
        // be split more ways than a full one.
        let h = picks[Site::Hidden as usize];
        let partial_len = (1..=rows)
            .map(|r| h.forward_splits(r, hidden, PIXELS) as usize * r * hidden)
            .max()
            .unwrap_or(0);
        need(
            "the hidden layer's split-K partial sums",
            (partial_len * 4) as u64,
        )?;

        let resident = if opts.resident {
            need("the resident training set", train.images.len() as u64)?;
            Some(Resident::upload(d, train))
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
        let half = match opts.precision {
            crate::engine::Precision::F32 => None,
            crate::engine::Precision::F16 => Some(HalfBuffers::new(gpu, model, layout, rows)?),
        };
        let f32_rows = if half.is_some() { 0 } else { rows };
        let mirrors = Mirrors::for_picks(d, &picks, rows, hidden);
        let identity: Vec<u32> = (0..rows as u32).collect();
        let params = crate::gpu::dispatch::storage(d, "parameters", &model.to_flat(&layout));
        let grad = crate::gpu::dispatch::storage_zeroed(d, "gradient", layout.total);
        let sgd_params = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("sgd_update params"),
            size: std::mem::size_of::<crate::abi::SgdParams>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let grad_readback = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("gradient read-back"),
            size: (ParamLayout::packed_for(hidden).total * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Buffers {
            hidden,
            layout,
            params,
            grad,
            grad_readback,
            sgd_params,
            // Under --precision f16 the activations live in the f16 buffers: the f32 ones the
            // f16 kernels never touch shrink to one element (they only fill unused bindings).
            x: crate::gpu::dispatch::storage_zeroed(d, "x", f32_rows * PIXELS),
            h: crate::gpu::dispatch::storage_zeroed(d, "h", f32_rows * hidden),
            dz: crate::gpu::dispatch::storage_zeroed(d, "dz", rows * CLASSES),
            dh: crate::gpu::dispatch::storage_zeroed(d, "dh", f32_rows * hidden),
            partial: crate::gpu::dispatch::storage_zeroed(
                d,
                "split-K partial sums",
                if half.is_some() { 1 } else { partial_len },
            ),
            batch_labels: crate::gpu::dispatch::storage_zeroed(d, "batch labels", rows),
            totals: crate::gpu::dispatch::storage_zeroed(d, "totals", 4),
            pixel_slots: slots("pixel slots", pixel_stride),
            label_slots: slots("label slots", small_stride),
            index_slots: slots("index slots", small_stride),
            identity: crate::gpu::dispatch::storage(d, "identity", &identity),
            pixel_stride,
            small_stride,
            resident,
            half,
            mirrors,
        })
    }

    /// Bytes of VRAM allocated (parameters, gradient, activations, ring, resident set, texture
    /// mirrors).
    pub(super) fn vram_bytes(&self) -> u64 {
        let mut total: u64 = [
            &self.params,
            &self.grad,
            &self.grad_readback,
            &self.sgd_params,
            &self.x,
            &self.h,
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
        if let Some(h) = &self.half {
            total += [&h.params, &h.x, &h.h, &h.dz, &h.dh]
                .iter()
                .map(|b| b.size())
                .sum::<u64>();
        }
        if let Some(m) = &self.mirrors {
            total += m.all().map(|m| m.value_bytes() * m.capacity()).sum::<u64>();
        }
        total
    }

    /// Parameter tensor `i` (0 hidden.weight, 1 hidden.bias, 2 output.weight, 3 output.bias).
    pub(super) fn param(&self, i: usize) -> wgpu::BindingResource<'_> {
        crate::gpu::dispatch::sub(&self.params, self.layout.range(i))
    }

    /// The gradient of parameter tensor `i`.
    pub(super) fn grad_of(&self, i: usize) -> wgpu::BindingResource<'_> {
        crate::gpu::dispatch::sub(&self.grad, self.layout.range(i))
    }

    /// Slot `s` of a ring buffer whose slots are `stride` bytes apart.
    pub(super) fn slot(buffer: &wgpu::Buffer, stride: u64, s: usize) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: stride * s as u64,
            size: std::num::NonZeroU64::new(stride),
        })
    }
}
