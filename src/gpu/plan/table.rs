//! What differs between an f32 step and an --precision f16 step: the kernels, the buffers
//! they read and write, and the names a profile shows. [`Plan::new`](super::Plan::new) walks
//! the step's one sequence over either table, so the order of the step is written once.
//!
//! ```text
//!                     f32                            f16 (mixed precision)
//! unpack              unpack_batch → x               unpack_batch (f16) → x16
//! hidden (h)          matmul (K split if faster)     matmul, f16 in (f32 sums), f16 h16 out
//! head                head: z, SoftMax, loss → dz    head (f16): f16 h16, W2 in; dz16 out (loss-scaled)
//! backward            backward → dh, ∂W2, ∂b2, ∂b1   backward (f16): dh16 out, f32 ∂ out
//! ∂W1                 matmul                         matmul, f16 in, f32 out
//! fused update        alpha = −lr, beta = 1          — (f16 steps through the gradient)
//! ```
//!
//! Each "matmul" is the site's pick (gpu/autotune): an f32 variant, or under f16 one that
//! reads f16 and writes what the column says (matmul_reg8x4.wgsl under an f16 prelude, and
//! the generated family's f16 members, [`crate::abi::Elems`]).

use super::key::Pass;
use crate::engine::Precision;
use crate::gpu::buffers::{Buffers, EVAL_AT, TRAIN_AT};
use crate::gpu::kernels::{Kernels, KernelsF16};
use crate::gpu::dispatch::Dispatch;
use crate::abi::{MatmulParams, Site};

type Res<'a> = wgpu::BindingResource<'a>;

pub(super) fn whole(b: &wgpu::Buffer) -> Res<'_> {
    b.as_entire_binding()
}

/// The names of a step's dispatches, as profiles and traces show them.
pub(super) struct Names {
    /// The hidden layer's product: whole, and as split-K slices (which head adds up).
    pub(super) hidden: [&'static str; 2],
    /// head: alone, and adding the hidden layer's slices first.
    pub(super) head: [&'static str; 2],
    /// backward and the hidden layer's weight product: writing the gradient (Pass::Gradient),
    /// and adding −lr times it into the weights (Pass::Train).
    pub(super) backward: [&'static str; 2],
    pub(super) grad_w1: [&'static str; 2],
}

const F32_NAMES: Names = Names {
    hidden: ["hidden: ReLU(x·W1ᵀ + b1)", "hidden: x·W1ᵀ (split K)"],
    head: ["head: h·W2ᵀ + b2, SoftMax, δ2", "head: Σ splits → h; h·W2ᵀ + b2, SoftMax, δ2"],
    backward: ["backward: δ1; ∂W2, ∂b2, ∂b1", "backward: δ1; W2, b2, b1 −= lr·∂"],
    grad_w1: ["∂W1 = δ1ᵀ·x", "W1 −= lr·δ1ᵀ·x"],
};

const F16_NAMES: Names = Names {
    hidden: ["hidden: ReLU(x·W1ᵀ + b1), f16", ""],
    head: ["head: h·W2ᵀ + b2, SoftMax, δ2, f16", ""],
    backward: ["backward: δ1; ∂W2, ∂b2, ∂b1, f16 → f32", ""],
    grad_w1: ["∂W1 = δ1ᵀ·x, f16 → f32", ""],
};

/// One precision's kernels and buffers.
pub(in crate::gpu) struct Table<'a> {
    pub(super) d: &'a wgpu::Device,
    pub(super) k: &'a Kernels,
    /// The f16 kernels (None: an f32 step).
    half: Option<&'a KernelsF16>,
    pub(super) b: &'a Buffers,
    pub(super) names: &'static Names,
    /// The activations in the working precision: the batch, the hidden layer, δ2, δ1.
    pub(super) x: &'a wgpu::Buffer,
    pub(super) h: &'a wgpu::Buffer,
    pub(super) dz: &'a wgpu::Buffer,
    pub(super) dh: &'a wgpu::Buffer,
    /// Bytes of one working value: 4 (f32) or 2 (f16).
    pub(super) value_bytes: u32,
}

impl<'a> Table<'a> {
    /// The table of an engine: f16 when it was built with the f16 kernels (and `b` holds the
    /// f16 buffers), f32 otherwise.
    pub(in crate::gpu) fn new(
        d: &'a wgpu::Device,
        k: &'a Kernels,
        half: Option<&'a KernelsF16>,
        b: &'a Buffers,
    ) -> Self {
        match (half, &b.half) {
            (Some(k16), Some(h16)) => Table {
                d,
                k,
                half: Some(k16),
                b,
                names: &F16_NAMES,
                x: &h16.x,
                h: &h16.h,
                dz: &h16.dz,
                dh: &h16.dh,
                value_bytes: 2,
            },
            (None, _) => Table {
                d,
                k,
                half: None,
                b,
                names: &F32_NAMES,
                x: &b.x,
                h: &b.h,
                dz: &b.dz,
                dh: &b.dh,
                value_bytes: 4,
            },
            (Some(_), None) => panic!("f16 kernels on an engine without f16 buffers"),
        }
    }

    pub(super) fn is_half(&self) -> bool {
        self.half.is_some()
    }

    /// The unpack kernel, its name and pipeline.
    pub(super) fn unpack(&self) -> (&'static str, &'a wgpu::ComputePipeline) {
        match self.half {
            Some(k16) => ("unpack_batch_f16", &k16.unpack),
            None => ("unpack_batch", &self.k.unpack),
        }
    }

    /// Parameter tensor `i` (W1, b1, W2, b2) in the working precision.
    pub(super) fn param(&self, i: usize) -> Res<'a> {
        match &self.b.half {
            Some(h16) if self.half.is_some() => h16.param(i),
            _ => self.b.param(i),
        }
    }

    /// The buffer holding parameter tensor `i` in the working precision, and the tensor's
    /// first byte in it.
    pub(super) fn param_buffer(&self, i: usize) -> (&'a wgpu::Buffer, u64) {
        let offset = self.param_at(i) as u64 * self.value_bytes as u64;
        match &self.b.half {
            Some(h16) if self.half.is_some() => (&h16.params, offset),
            _ => (&self.b.params, offset),
        }
    }

    /// Where parameter tensor `i` starts in the working precision's parameter buffer, in
    /// elements.
    pub(super) fn param_at(&self, i: usize) -> u32 {
        match &self.b.half {
            Some(h16) if self.half.is_some() => h16.layout.offsets[i] as u32,
            _ => self.b.layout.offsets[i] as u32,
        }
    }

    /// K-slices for a forward product (m × n, summed over k), as its pick allows (f16
    /// variants never split).
    pub(super) fn splits(&self, site: Site, m: usize, n: usize, k: usize) -> u32 {
        self.k.matmul[site as usize].0.forward_splits(m, n, k)
    }

    /// A product C = epilogue(A·B) (bindings A, B, bias, mask, C) in the site's pick, checked
    /// against the buffers' lengths. Under f16 the pick is an f16 variant whose C is f16 or
    /// f32 as the site needs ([`Site::elems`]).
    pub(super) fn product(
        &self,
        site: Site,
        (phase, name): (&'static str, &'static str),
        res: [Res; 5],
        p: MatmulParams,
    ) -> Dispatch {
        let variant = &self.k.matmul[site as usize];
        let (flops, bytes) = p.work_in(variant.0.elems);
        let precision = match self.half {
            Some(_) => Precision::F16,
            None => Precision::F32,
        };
        assert_eq!(
            variant.0.elems,
            site.elems(precision),
            "{name}: the pick reads and writes other elements than the buffers hold"
        );
        let mirrors = site.mirrored().map(|m| self.b.mirrors.as_ref()?.get(m?));
        Dispatch::matmul(self.d, name, variant, res, mirrors, &p).work(phase, flops, bytes)
    }

    /// The hidden layer's product `out = ReLU(x · W1ᵀ + b1)`, or, when K is split, the raw
    /// sums of each K-slice into the partial sums, which head adds up (its consumer: no
    /// dispatch of its own). `unused` fills the mask binding, which it does not read (wgpu
    /// refuses a buffer bound both read-only and read-write, so never the output).
    pub(super) fn forward(
        &self,
        (a, unused, out): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        p: MatmulParams,
    ) -> Dispatch {
        let (bm, bias) = (self.param(0), self.param(1));
        let (name, c) = match p.splits {
            1 => (self.names.hidden[0], out),
            _ => (self.names.hidden[1], &self.b.partial),
        };
        let res = [whole(a), bm, bias, whole(unused), whole(c)];
        self.product(Site::Hidden, ("forward", name), res, p)
    }

    /// head: the output layer, SoftMax, loss and accuracy of `rows` rows (adding the hidden
    /// layer's `splits` K-slices into h first when there are several), and (training) δ2 =
    /// (p − onehot) / divisor · scale in the working precision.
    pub(super) fn head(&self, pass: Pass, rows: u32, (divisor, scale): (u32, f32), splits: u32) -> Dispatch {
        let (cls, hid) = (crate::data::CLASSES as u32, self.b.hidden as u32);
        let p = crate::abi::HeadParams {
            rows,
            hidden: hid,
            divisor: if pass == Pass::Eval { 0 } else { divisor },
            at: if pass == Pass::Eval { EVAL_AT } else { TRAIN_AT },
            scale,
            splits,
            w2_at: self.param_at(2),
            b2_at: self.param_at(3),
            b1_at: self.param_at(1),
            _pad: [0; 3],
        };
        let pipeline = match self.half {
            Some(k16) => &k16.head,
            None => &self.k.head,
        };
        let b = self.b;
        let name = self.names.head[(splits > 1) as usize];
        let vb = self.value_bytes;
        // Reads h (or the slices, and writes h), W2, b2 and the labels; writes δ2 in training.
        let h_bytes = match splits {
            1 => vb * rows * hid,
            s => 4 * s * rows * hid + vb * rows * hid,
        };
        let delta = if pass == Pass::Eval { 0 } else { vb * rows * cls };
        Dispatch::new(
            self.d,
            name,
            pipeline,
            &[
                whole(self.h),
                whole(self.param_buffer(0).0),
                whole(&b.partial),
                whole(&b.batch_labels),
                whole(self.dz),
                whole(&b.totals),
            ],
            &p,
            (1, 1, 1),
        )
        .work(
            "loss",
            (2 * rows * cls * hid + (splits - 1) * rows * hid) as f64,
            (h_bytes + vb * cls * (hid + 1) + 4 * rows + delta) as f64,
        )
    }

    /// backward: δ1 = (δ2·W2) ⊙ ReLU′, and the output layer's ∂W2 = δ2ᵀ·h, ∂b2 = Σδ2 and the
    /// hidden layer's ∂b1 = Σδ1, each written `dest = alpha · ∂ + beta · dest`: into the f32
    /// gradient (Pass::Gradient: alpha 1, beta 0) or the f32 weights (Pass::Train: −lr, 1).
    pub(super) fn backward(&self, pass: Pass, rows: u32, (alpha, beta): (f32, f32)) -> Dispatch {
        let (cls, hid) = (crate::data::CLASSES as u32, self.b.hidden as u32);
        let b = self.b;
        let train = pass == Pass::Train;
        let dest = if train { &b.params } else { &b.grad };
        // The fused update reads W2 from `dest`, the weights it updates; `weights` is then
        // not read, and binds a buffer this dispatch does not write.
        let weights = if train { self.x } else { self.param_buffer(0).0 };
        let at = |i: usize| b.layout.offsets[i] as u32;
        let p = crate::abi::BackwardParams {
            rows,
            hidden: hid,
            alpha,
            beta,
            in_place: train as u32,
            w2_at: self.param_at(2),
            t_w2_at: at(2),
            t_b2_at: at(3),
            t_b1_at: at(1),
            _pad: [0; 3],
        };
        let pipeline = match self.half {
            Some(k16) => &k16.backward,
            None => &self.k.backward,
        };
        let (phase, name) = match train {
            true => ("update", self.names.backward[1]),
            false => ("backward", self.names.backward[0]),
        };
        let vb = self.value_bytes;
        // Reads δ2, h and W2; writes δ1 and the 10·hidden + 10 + hidden sums (reading them
        // first when beta ≠ 0).
        let sums = cls * hid + cls + hid;
        let old = if beta == 0.0 { 0 } else { 4 * sums };
        Dispatch::new(
            self.d,
            name,
            pipeline,
            &[
                whole(self.dz),
                whole(self.h),
                whole(weights),
                whole(self.dh),
                whole(dest),
            ],
            &p,
            match self.half {
                Some(k16) => k16.blocking,
                None => self.k.blocking,
            }
            .backward_groups(hid),
        )
        .work(
            phase,
            (4 * rows * cls * hid + rows * (hid + cls)) as f64,
            (vb * rows * cls + 2 * vb * rows * hid + vb * cls * hid + 4 * sums + old) as f64,
        )
    }
}
