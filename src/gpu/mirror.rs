//! Texture mirrors of the operands of the step's two large products (the batch x, the weights
//! W1 and the error term δ1), for CPU adapters.
//!
//! Why a texture: Mesa 22.3's lavapipe turns every storage-buffer load into a loop over the
//! SIMD lanes, one bounds-checked scalar load per lane (gallivm's `emit_load_mem`), while a
//! texel fetch is one gather for all lanes. Without AVX-512 the loop is far dearer: on a Zen 4
//! with AVX-512 masked off (`GALLIUM_OVERRIDE_CPU_CAPS=avx`, llvmpipe's code for an AVX2 CPU
//! such as the Zen 3) the hidden layer's product took 12.5 ms reading buffers and 0.9 ms reading
//! the same values as texels (BENCHMARKS.md, "Reading through textures"). The `t` members of
//! the matmul family (gpu/variants.rs) read these mirrors, bound as read-only storage textures
//! (an image load: no mip level for llvmpipe to look up lane by lane, as a sampled fetch has).
//!
//! A mirror holds its buffer's values unchanged, four to a texel: RGBA32F for an f32 buffer,
//! RGBA16F for --precision f16's f16 buffers (a load widens each to f32, exactly, as the
//! f16 kernels' loads do); vec4 `i` of the buffer is texel (i % 256, i / 256). The buffer
//! stays the truth (the kernels, the update, a snapshot's restore and the all-reduce write only
//! the buffer); a plan copies it into the mirror before the products of each step read it
//! ([`Mirror::copy_from`]): x and W1 after the unpack, δ1 just before ∂W1 = δ1ᵀ·x (after the
//! output layer's gradient). The fused update W1 += −lr·δ1ᵀ·x reads W1's old values from the
//! same W1 mirror (nothing writes W1 between the two products; if only the update reads it,
//! it is copied just before the update).

use crate::abi::{Elems, Site, SITES, TEXELS_PER_ROW};
use crate::gpu::matmul::MatmulVariant;
use crate::data::PIXELS;

/// A texture holding a run of values (f32 or f16) of a buffer.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub texture: wgpu::Texture,
    pub view: wgpu::TextureView,
}

/// Which tensor a product reads through a mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirrored {
    /// The batch x: (rows, 784).
    X,
    /// The hidden layer's weights W1: (hidden, 784).
    W1,
    /// The hidden layer's error term δ1: (rows, hidden), written halfway through the step.
    Delta1,
}

impl Site {
    /// The tensors the engine mirrors that this product reads as A, as B, and as C's old
    /// values (C = W1 itself in the fused update W1 += −lr·δ1ᵀ·x: the mirror made for the
    /// hidden layer's product already holds it, since nothing writes W1 between the two).
    pub fn mirrored(self) -> [Option<Mirrored>; 3] {
        match self {
            Site::Hidden => [Some(Mirrored::X), Some(Mirrored::W1), None],
            Site::GradW1 => [Some(Mirrored::Delta1), Some(Mirrored::X), Some(Mirrored::W1)],
        }
    }
}

impl Mirror {
    /// Texel rows a mirror of `floats` values needs.
    fn rows_for(floats: usize) -> u64 {
        (floats.div_ceil(4) as u64)
            .div_ceil(TEXELS_PER_ROW as u64)
            .max(1)
    }

    /// Whether a mirror of `floats` values fits the adapter's largest 2-D texture.
    pub fn fits(limits: &wgpu::Limits, floats: usize) -> bool {
        Self::rows_for(floats) <= limits.max_texture_dimension_2d as u64
    }

    /// An empty mirror for `floats` values, f16 ones with `half` (check [`Mirror::fits`]
    /// first).
    pub fn new(device: &wgpu::Device, label: &str, floats: usize, half: bool) -> Mirror {
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: TEXELS_PER_ROW,
                height: Self::rows_for(floats) as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: match half {
                true => wgpu::TextureFormat::Rgba16Float,
                false => wgpu::TextureFormat::Rgba32Float,
            },
            // Read as a read-only storage texture (gpu/generate.rs says why), written by copies.
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        Mirror { texture, view }
    }

    /// Bytes of one value it holds: 4 (f32) or 2 (f16).
    pub fn value_bytes(&self) -> u64 {
        match self.texture.format() {
            wgpu::TextureFormat::Rgba16Float => 2,
            _ => 4,
        }
    }

    /// Values the mirror can hold.
    pub fn capacity(&self) -> u64 {
        let size = self.texture.size();
        4 * size.width as u64 * size.height as u64
    }

    /// Records the copy of `floats` values of `buffer` (of the mirror's type), from byte
    /// `offset`, into the mirror: the whole rows of texels, then the last partial row. `floats`
    /// must be whole vec4s and `offset` a whole texel (16 or 8 bytes), as wgpu's copies
    /// require.
    pub fn copy_from(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        buffer: &wgpu::Buffer,
        offset: u64,
        floats: usize,
    ) {
        let texel_bytes = 4 * self.value_bytes();
        assert!(floats.is_multiple_of(4) && offset.is_multiple_of(texel_bytes));
        assert!(floats as u64 <= self.capacity());
        let texels = (floats / 4) as u32;
        let (full, rest) = (texels / TEXELS_PER_ROW, texels % TEXELS_PER_ROW);
        let row_bytes = texel_bytes * TEXELS_PER_ROW as u64;
        let mut copy = |row: u32, width: u32, height: u32| {
            encoder.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: offset + row as u64 * row_bytes,
                        bytes_per_row: Some(row_bytes as u32),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: row, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width,
                    height,
                    depth_or_array_layers: 1,
                },
            );
        };
        if full > 0 {
            copy(0, TEXELS_PER_ROW, full);
        }
        if rest > 0 {
            copy(full, rest, 1);
        }
    }

    /// A mirror of the first `floats` values of `buffer` (f16 with `half`), copied now (tests
    /// and the search).
    pub fn of(gpu: &super::context::Gpu, buffer: &wgpu::Buffer, floats: usize, half: bool) -> Mirror {
        let mirror = Mirror::new(&gpu.device, "mirror", floats, half);
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        mirror.copy_from(&mut encoder, buffer, 0, floats);
        gpu.queue.submit([encoder.finish()]);
        mirror
    }
}

/// The engine's mirrors: those the products' picks read, f16 where the picks are (the
/// tensors are f16 in an f16 step).
pub(super) struct Mirrors {
    x: Option<Mirror>,
    w1: Option<Mirror>,
    delta1: Option<Mirror>,
}

impl Mirrors {
    /// The mirrors `picks` (one variant per [`Site`]) read, sized for batches of up to `rows`
    /// and `hidden` neurons; None when they read none.
    pub(super) fn for_picks(
        device: &wgpu::Device,
        picks: &[&MatmulVariant; SITES],
        rows: usize,
        hidden: usize,
    ) -> Option<Mirrors> {
        let read = |which: Mirrored| {
            Site::ALL.iter().zip(picks).any(|(site, v)| {
                (v.textures.iter().zip(site.mirrored())).any(|(&t, m)| t && m == Some(which))
            })
        };
        let half = picks.iter().any(|v| v.elems != Elems::F32);
        let make =
            |which, label, floats| read(which).then(|| Mirror::new(device, label, floats, half));
        let m = Mirrors {
            x: make(Mirrored::X, "x, mirrored", rows * PIXELS),
            w1: make(Mirrored::W1, "W1, mirrored", hidden * PIXELS),
            delta1: make(Mirrored::Delta1, "δ1, mirrored", rows * hidden),
        };
        let any = m.all().next().is_some();
        any.then_some(m)
    }

    /// The mirror of `which`, if the picks read it.
    pub(super) fn get(&self, which: Mirrored) -> Option<&Mirror> {
        match which {
            Mirrored::X => self.x.as_ref(),
            Mirrored::W1 => self.w1.as_ref(),
            Mirrored::Delta1 => self.delta1.as_ref(),
        }
    }

    /// Every mirror made.
    pub(super) fn all(&self) -> impl Iterator<Item = &Mirror> {
        [&self.x, &self.w1, &self.delta1].into_iter().flatten()
    }
}
