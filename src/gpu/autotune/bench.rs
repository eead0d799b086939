//! One product of the step on random inputs, to check a variant against its CPU twin and time
//! it (the search's measurement, gpu/autotune).

use crate::gpu::dispatch::{storage, Dispatch};
use crate::abi::{Elems, MatmulParams, Site};
use crate::gpu::matmul::MatmulVariant;
use super::super::mirror::Mirror;
use super::super::context::Gpu;
use crate::cpu::twins;
use crate::engine::Precision;
use crate::error::Result;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// One product on random inputs, bound and ready to dispatch with any variant that reads and
/// writes its `elems`.
pub(super) struct Bench {
    site: Site,
    elems: Elems,
    params: MatmulParams,
    /// A, B, the bias and the mask (under f16: values that are f16s, uploaded as f16).
    inputs: [Vec<f32>; 4],
    buffers: [wgpu::Buffer; 5],
    /// Texture mirrors of A, B and C, where the engine keeps them for this product, with the
    /// floats each holds (C's: f32 steps only, the only ones whose variants read it).
    mirrors: [Option<(Mirror, usize)>; 3],
}

impl Bench {
    /// The product at `site` for `rows` images and `hidden` neurons in a step of `precision`,
    /// with room for every variant's K-slices; f32 weight products in their fused-update form
    /// (alpha −lr, beta 1), f16 ones as the gradient the f16 step computes (1, 0).
    pub(super) fn new(
        gpu: &Gpu,
        (site, precision): (Site, Precision),
        (rows, hidden): (u32, u32),
        seed: u64,
    ) -> Bench {
        let elems = site.elems(precision);
        let ab = match precision {
            Precision::F32 => (-0.01, 1.0),
            Precision::F16 => (1.0, 0.0),
        };
        let params = site.params(rows, hidden, ab, 1);
        let (m, n, k) = (params.m as usize, params.n as usize, params.k as usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut random = |len: usize| -> Vec<f32> {
            let v = (0..len).map(|_| rng.random_range(-1.0f32..1.0));
            match elems {
                Elems::F32 => v.collect(),
                _ => v.map(|x| half::f16::from_f32(x).to_f32()).collect(),
            }
        };
        // A and B as the strides read them (their largest index + 1, rounded up to vec4s).
        let a_len = ((m - 1) * params.a_rs as usize + (k - 1) * params.a_cs as usize + 1)
            .next_multiple_of(4);
        let b_len = ((k - 1) * params.b_rs as usize + (n - 1) * params.b_cs as usize + 1)
            .next_multiple_of(4);
        let inputs = [random(a_len), random(b_len), random(n), random(m * n)];
        let c = random(16 * m * n);
        let d = &gpu.device;
        let upload = |name, v: &[f32], bytes| upload(d, name, v, bytes);
        let [operand, result] = [elems.operand_bytes(), elems.result_bytes()];
        let buffers = [
            upload("search A", &inputs[0], operand),
            upload("search B", &inputs[1], operand),
            upload("search bias", &inputs[2], operand),
            upload("search mask", &inputs[3], operand),
            upload("search C", &c, result),
        ];
        let half = elems != Elems::F32;
        let mirrored = site.mirrored();
        let mirrors = [(0, a_len), (1, b_len), (2, m * n)].map(|(i, len)| {
            let buffer = &buffers[if i == 2 { 4 } else { i }];
            let wanted = mirrored[i].is_some() && (i < 2 || !half);
            wanted.then(|| (Mirror::of(gpu, buffer, len, half), len))
        });
        Bench {
            site,
            elems,
            params,
            inputs,
            buffers,
            mirrors,
        }
    }

    fn dispatch(&self, gpu: &Gpu, v: &(&'static MatmulVariant, wgpu::ComputePipeline)) -> Dispatch {
        let mut p = self.params;
        if self.site == Site::Hidden {
            // Forward products are timed with the K-slices the step would give them.
            let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
            p = MatmulParams::new(
                (p.m, p.n, p.k),
                (p.a_rs, p.a_cs),
                (p.b_rs, p.b_cs),
                p.alpha,
                p.beta,
                p.flags,
                v.0.forward_splits(m, n, k),
            );
        }
        let res = self.buffers.each_ref().map(|b| b.as_entire_binding());
        Dispatch::matmul(&gpu.device, "search", v, res, self.mirrors(), &p)
    }

    fn mirrors(&self) -> [Option<&Mirror>; 3] {
        self.mirrors.each_ref().map(|m| m.as_ref().map(|m| &m.0))
    }

    /// Seconds variant `v` takes for this product, with the copies into the mirrors it reads,
    /// which a step pays for too.
    pub(super) fn time(
        &self,
        gpu: &Gpu,
        v: &(&'static MatmulVariant, wgpu::ComputePipeline),
    ) -> Result<f64> {
        let copies: Vec<(&Mirror, &wgpu::Buffer, usize)> = (0..3)
            .filter(|&i| v.0.textures[i])
            .filter_map(|i| {
                let (mirror, floats) = self.mirrors[i].as_ref()?;
                Some((mirror, &self.buffers[if i == 2 { 4 } else { i }], *floats))
            })
            .collect();
        time(gpu, &self.dispatch(gpu, v), &copies)
    }

    /// Whether `v` computes this product as the CPU twin does (unsplit, epilogue and all):
    /// within f32 rounding of `cpu::twins::matmul` (f16 operands: of `matmul_f16_f32out`),
    /// and one f16 step of `matmul_f16` where the result is f16.
    pub(super) fn matches_twin(
        &self,
        gpu: &Gpu,
        v: &(&'static MatmulVariant, wgpu::ComputePipeline),
    ) -> Result<bool> {
        let d = &gpu.device;
        let c0: Vec<f32> = (0..self.params.m * self.params.n)
            .map(|i| (i % 7) as f32 * 0.25)
            .collect();
        let c = upload(d, "search twin C", &c0, self.elems.result_bytes());
        let [a, b, bias, mask, _] = self.buffers.each_ref().map(|b| b.as_entire_binding());
        // A variant that reads C's old values through a mirror reads this C's.
        let c_mirror = v.0.textures[2].then(|| Mirror::of(gpu, &c, c0.len(), false));
        let [ma, mb, mc] = self.mirrors();
        let dispatch = Dispatch::matmul(
            d,
            "twin check",
            v,
            [a, b, bias, mask, c.as_entire_binding()],
            [ma, mb, c_mirror.as_ref().or(mc)],
            &self.params,
        );
        crate::gpu::dispatch::run_now(gpu, &[&dispatch])?;
        let got: Vec<f32> = match self.elems {
            Elems::F16 => {
                bytemuck::pod_collect_to_vec::<u8, half::f16>(&gpu.read_bytes(&c, 0, c.size())?)
                    .iter()
                    .map(|h| h.to_f32())
                    .collect()
            }
            Elems::F32 | Elems::F16ToF32 => gpu.read_f32(&c)?,
        };
        let want = self.twin(c0);
        let scale = want.iter().fold(1f32, |m, w| m.max(w.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
        // An f16 result may round a halfway sum the other way: one step of 2^-10 relative.
        let rounding = if self.elems == Elems::F16 { 1e-3 } else { 0.0 };
        Ok(worst <= (1e-4 * (self.params.k as f32).sqrt() + rounding) * scale)
    }

    /// The CPU twin's C, from `c0`.
    fn twin(&self, c0: Vec<f32>) -> Vec<f32> {
        let [a, b, bias, mask] = &self.inputs;
        let p = &self.params;
        let mut c = c0;
        let h =
            |v: &[f32]| -> Vec<half::f16> { v.iter().map(|&x| half::f16::from_f32(x)).collect() };
        match self.elems {
            Elems::F32 => twins::matmul(a, b, bias, mask, &mut c, p),
            Elems::F16ToF32 => {
                twins::matmul_f16_f32out(&h(a), &h(b), &h(bias), &h(mask), &mut c, p)
            }
            Elems::F16 => {
                let mut c16 = h(&c);
                twins::matmul_f16(&h(a), &h(b), &h(bias), &h(mask), &mut c16, p);
                c = c16.iter().map(|v| v.to_f32()).collect();
            }
        }
        c
    }
}

/// A storage buffer holding `v` as f32 (`bytes` 4) or f16 (2).
fn upload(d: &wgpu::Device, name: &str, v: &[f32], bytes: u64) -> wgpu::Buffer {
    match bytes {
        4 => storage(d, name, v),
        _ => {
            let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
            storage(d, name, &h)
        }
    }
}

/// Seconds one dispatch takes, each run after `copies` (mirror, buffer, floats): enough runs in
/// one submission to fill about 20 ms (at least 2), after one timed alone. Without copies the
/// runs share one pass, as a step's dispatches do.
fn time(gpu: &Gpu, d: &Dispatch, copies: &[(&Mirror, &wgpu::Buffer, usize)]) -> Result<f64> {
    let run = |reps: usize| -> Result<f64> {
        let t = Instant::now();
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        if copies.is_empty() {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            (0..reps).for_each(|_| d.record(&mut pass));
        } else {
            for _ in 0..reps {
                for (mirror, buffer, floats) in copies {
                    mirror.copy_from(&mut encoder, buffer, 0, *floats);
                }
                d.record(&mut encoder.begin_compute_pass(&Default::default()));
            }
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.wait()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let once = run(1)?;
    let reps = ((0.02 / once.max(1e-6)) as usize).clamp(2, 20);
    Ok(run(reps)? / reps as f64)
}
