//! A [`Dispatch`]: one kernel launch ready to record (pipeline, bind group, workgroup
//! counts, and the work it does for profiles), and the small helpers that make its buffers
//! and bindings.

use crate::abi::{Load, MatmulParams, WORKGROUP};
use crate::gpu::matmul::MatmulVariant;
use super::mirror::Mirror;
use bytemuck::Pod;
use wgpu::util::DeviceExt;

/// One kernel launch, ready to record.
pub struct Dispatch {
    pub name: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: (u32, u32, u32),
    /// The step's phase this belongs to (forward, loss, backward, update), for profiles.
    pub phase: &'static str,
    /// Floating-point operations and bytes of VRAM traffic one call needs at least: with a
    /// card's peak rates these give the kernel's floor.
    pub flops: f64,
    pub bytes: f64,
    /// The uniform buffer of its params, when the dispatch made it ([`Dispatch::new`]): a plan
    /// rewrites the values in it that change between steps (the learning rate of a fused
    /// update, the divisor and loss scale of δ2) instead of building the dispatch again.
    pub params: Option<wgpu::Buffer>,
}

impl Dispatch {
    /// Binds `resources` to bindings 0, 1, 2, ... of `pipeline` (the shader's binding order:
    /// inputs, outputs, then the params, which this makes into a uniform buffer).
    pub fn new<P: Pod>(
        device: &wgpu::Device,
        name: &'static str,
        pipeline: &wgpu::ComputePipeline,
        resources: &[wgpu::BindingResource],
        params: &P,
        workgroups: (u32, u32, u32),
    ) -> Self {
        Self::new_with_extra(device, name, pipeline, resources, params, &[], workgroups)
    }

    /// [`Dispatch::new`] with `extra` bindings after the params (a matmul variant's textures).
    fn new_with_extra<P: Pod>(
        device: &wgpu::Device,
        name: &'static str,
        pipeline: &wgpu::ComputePipeline,
        resources: &[wgpu::BindingResource],
        params: &P,
        extra: &[wgpu::BindGroupEntry],
        workgroups: (u32, u32, u32),
    ) -> Self {
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(name),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
        let mut dispatch = Self::with_extra(
            device, name, pipeline, resources, &params, extra, workgroups,
        );
        dispatch.params = Some(params);
        dispatch
    }

    /// [`Dispatch::new`] with a uniform buffer the caller owns and may rewrite between steps
    /// (the learning rate of `sgd_update`).
    pub fn with_uniform(
        device: &wgpu::Device,
        name: &'static str,
        pipeline: &wgpu::ComputePipeline,
        resources: &[wgpu::BindingResource],
        params: &wgpu::Buffer,
        workgroups: (u32, u32, u32),
    ) -> Self {
        Self::with_extra(device, name, pipeline, resources, params, &[], workgroups)
    }

    /// [`Dispatch::with_uniform`] with `extra` bindings after the params.
    fn with_extra(
        device: &wgpu::Device,
        name: &'static str,
        pipeline: &wgpu::ComputePipeline,
        resources: &[wgpu::BindingResource],
        params: &wgpu::Buffer,
        extra: &[wgpu::BindGroupEntry],
        workgroups: (u32, u32, u32),
    ) -> Self {
        let mut entries: Vec<wgpu::BindGroupEntry> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: r.clone(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: resources.len() as u32,
            resource: params.as_entire_binding(),
        });
        entries.extend(extra.iter().cloned());
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(name),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Dispatch {
            name,
            pipeline: pipeline.clone(),
            bind_group,
            workgroups,
            phase: "",
            flops: 0.0,
            bytes: 0.0,
            params: None,
        }
    }

    /// A matmul dispatch of one variant and its pipeline (a site's entry of `Kernels::matmul`):
    /// `resources` are A, B, bias, mask, C, and `mirrors` the texture mirrors of A, B and C
    /// where the engine keeps them (bound only if the variant reads them; C's must hold C's
    /// values whenever beta ≠ 0: the fused update's W1, copied in for the hidden layer's
    /// product and unchanged since); the product is checked
    /// against their lengths and the variant's layout first (a failure is a bug in the caller,
    /// so it panics).
    pub fn matmul(
        device: &wgpu::Device,
        name: &'static str,
        (variant, pipeline): &(&'static MatmulVariant, wgpu::ComputePipeline),
        resources: [wgpu::BindingResource; 5],
        mirrors: [Option<&Mirror>; 3],
        p: &MatmulParams,
    ) -> Self {
        // Each binding's length in elements (f16 ones are 2 bytes, per the variant).
        let len = |(r, bytes): (&wgpu::BindingResource, u64)| match r {
            wgpu::BindingResource::Buffer(b) => {
                b.size.map_or(b.buffer.size() - b.offset, |s| s.get()) / bytes
            }
            _ => 0,
        };
        let (operand, result) = (variant.elems.operand_bytes(), variant.elems.result_bytes());
        let [mut a, mut b, bias, mask, mut c] =
            [0, 1, 2, 3, 4].map(|i| len((&resources[i], if i == 4 { result } else { operand })));
        if variant.load != Load::Scalar {
            // Read as vec4s: only whole vec4s of a binding can be read.
            (a, b) = (a - a % 4, b - b % 4);
        }
        if variant.load == Load::MN4 {
            // And C too (gpu/variants.rs: four columns' sums a vec4).
            c -= c % 4;
        }
        if let Err(e) = p.check_fits(a, b, bias, mask, c) {
            panic!("{name}: {e}");
        }
        if !variant.fits(p) {
            panic!(
                "{name}: matmul variant {} cannot compute {p:?}",
                variant.name
            );
        }
        // The textures the variant reads, at bindings 6 (A), 7 (B) and 8 (C), each holding at
        // least the floats its buffer binding has (C's: the m × n it reads, of a binding that
        // may have room for K-slices too).
        let mut extra = Vec::new();
        let c_read = (p.m as u64 * p.n as u64).min(c);
        for (i, len) in [a, b, c_read].into_iter().enumerate() {
            if !variant.textures[i] {
                continue;
            }
            let Some(m) = mirrors[i] else {
                panic!(
                    "{name}: {} reads a texture mirror that is not there",
                    variant.name
                );
            };
            assert!(
                m.capacity() >= len,
                "{name}: a mirror ({} values) smaller than its binding {i} ({len})",
                m.capacity()
            );
            extra.push(wgpu::BindGroupEntry {
                binding: 6 + i as u32,
                resource: wgpu::BindingResource::TextureView(&m.view),
            });
        }
        let workgroups = variant.workgroups(p);
        Self::new_with_extra(device, name, pipeline, &resources, p, &extra, workgroups)
    }

    /// Labels the dispatch with its phase and its minimal work.
    pub fn work(mut self, phase: &'static str, flops: f64, bytes: f64) -> Self {
        self.phase = phase;
        self.flops = flops;
        self.bytes = bytes;
        self
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let (x, y, z) = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Elements `range` of a buffer of f32, bound as its own array (a parameter tensor inside the
/// flat parameter or gradient buffer; its start must respect the adapter's offset alignment,
/// which [`crate::model::ParamLayout::aligned`] guarantees).
pub fn sub(buffer: &wgpu::Buffer, range: std::ops::Range<usize>) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: (range.start * 4) as u64,
        size: std::num::NonZeroU64::new((range.len().max(1) * 4) as u64),
    })
}

/// Elements `range` of a buffer of f16 (2 bytes each), bound as its own array.
pub fn sub16(buffer: &wgpu::Buffer, range: std::ops::Range<usize>) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: (range.start * 2) as u64,
        size: std::num::NonZeroU64::new((range.len().max(2) * 2) as u64),
    })
}

/// A zeroed storage buffer of `bytes` bytes (rounded up to 4), for f16 arrays.
pub fn storage_bytes(device: &wgpu::Device, label: &str, bytes: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (bytes.max(4).div_ceil(4) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Workgroups for a 1-D kernel over `threads` threads.
pub fn groups_1d(threads: u32) -> (u32, u32, u32) {
    (threads.div_ceil(WORKGROUP).max(1), 1, 1)
}

/// Records `dispatches` into one compute pass, submits and waits (tests and one-off work).
pub fn run_now(gpu: &super::context::Gpu, dispatches: &[&Dispatch]) -> crate::error::Result<()> {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.record(&mut pass);
        }
    }
    gpu.queue.submit([encoder.finish()]);
    gpu.wait()
}

/// A storage buffer holding `data`, readable back and writable from the host.
pub fn storage<T: Pod>(device: &wgpu::Device, label: &str, data: &[T]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
    })
}

/// A zeroed storage buffer of `len` 4-byte elements.
pub fn storage_zeroed(device: &wgpu::Device, label: &str, len: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (len.max(1) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}
