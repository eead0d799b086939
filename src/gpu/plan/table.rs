//! What differs between an f32 step and an --precision f16 step: the kernels, the buffers
//! they read and write, and the names a profile shows. [`Plan::new`](super::Plan::new) walks
//! the step's one sequence over either table, so the order of the step is written once.
//!
//! ```text
//!                     f32                          f16 (mixed precision)
//! unpack              unpack_batch → x             unpack_batch_f16 → x16
//! hidden (h)          matmul (K split if faster)   matmul, f16 in (f32 sums), f16 h16 out
//! output (z)          matmul                       matmul, f16 in, f32 logits out
//! SoftMax, δ2         softmax_xent → dz            softmax_xent_f16 → dz16 (loss-scaled)
//! δ1                  matmul                       matmul, f16 in, f16 out
//! ∂W, ∂b              matmul, bias_update          matmul f16 in f32 out, bias_grad_f16 (f32 ∂)
//! fused update        alpha = −lr, beta = 1        — (f16 steps through the gradient)
//! ```
//!
//! Each "matmul" is the site's pick (gpu/autotune): an f32 variant, or under f16 one that
//! reads f16 and writes what the column says (matmul_reg8x4.wgsl under an f16 prelude, and
//! the generated family's f16 members, [`crate::abi::Elems`]).

use super::key::Pass;
use crate::engine::Precision;
use crate::gpu::buffers::{Buffers, EVAL_AT, TRAIN_AT};
use crate::gpu::kernels::{Kernels, KernelsF16};
use crate::gpu::dispatch::{groups_1d, Dispatch};
use crate::abi::{MatmulParams, Site};

type Res<'a> = wgpu::BindingResource<'a>;

pub(super) fn whole(b: &wgpu::Buffer) -> Res<'_> {
    b.as_entire_binding()
}

/// The names of a step's dispatches, as profiles and traces show them.
pub(super) struct Names {
    /// The hidden layer's product: whole, as a split-K product, and the split's reduction.
    pub(super) hidden: [&'static str; 3],
    /// The output layer's product, likewise.
    pub(super) output: [&'static str; 3],
    pub(super) delta1: &'static str,
    /// The gradient pass's products and bias sums: ∂W2, ∂b2, ∂W1, ∂b1.
    pub(super) gradient: [&'static str; 4],
}

const F32_NAMES: Names = Names {
    hidden: [
        "hidden: ReLU(x·W1ᵀ + b1)",
        "hidden: x·W1ᵀ (split K)",
        "hidden: Σ splits + b1, ReLU",
    ],
    output: [
        "output: h·W2ᵀ + b2",
        "output: h·W2ᵀ (split K)",
        "output: Σ splits + b2",
    ],
    delta1: "δ1 = (δ2·W2) ⊙ ReLU′",
    gradient: ["∂W2 = δ2ᵀ·h", "∂b2 = Σδ2", "∂W1 = δ1ᵀ·x", "∂b1 = Σδ1"],
};

const F16_NAMES: Names = Names {
    hidden: ["hidden: ReLU(x·W1ᵀ + b1), f16", "", ""],
    output: ["output: h·W2ᵀ + b2, f16 → f32", "", ""],
    delta1: "δ1 = (δ2·W2) ⊙ ReLU′, f16",
    gradient: [
        "∂W2 = δ2ᵀ·h, f16 → f32",
        "∂b2 = Σδ2, f16 → f32",
        "∂W1 = δ1ᵀ·x, f16 → f32",
        "∂b1 = Σδ1, f16 → f32",
    ],
};

/// The fused update's names (Pass::Train): the gradient is added into the weights directly.
pub(super) const FUSED_NAMES: [&str; 4] = [
    "W2 −= lr·δ2ᵀ·h",
    "b2 −= lr·Σδ2",
    "W1 −= lr·δ1ᵀ·x",
    "b1 −= lr·Σδ1",
];

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
        let offset = self.b.layout.offsets[i] as u64 * self.value_bytes as u64;
        match &self.b.half {
            Some(h16) if self.half.is_some() => (&h16.params, offset),
            _ => (&self.b.params, offset),
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

    /// A forward product `out = epilogue(a · W_wᵀ + b_w)`: one product, or, when K is split,
    /// a product into the partial sums and a splitk_reduce that applies the epilogue.
    /// `unused` fills the mask binding, which forward products do not read (wgpu refuses a
    /// buffer bound both read-only and read-write, so never the output).
    pub(super) fn forward(
        &self,
        site: Site,
        (a, w, unused, out): (&wgpu::Buffer, usize, &wgpu::Buffer, &wgpu::Buffer),
        p: MatmulParams,
    ) -> Vec<Dispatch> {
        let (bm, bias) = (self.param(w), self.param(w + 1));
        let names = match site {
            Site::Hidden => &self.names.hidden,
            _ => &self.names.output,
        };
        if p.splits == 1 {
            let res = [whole(a), bm, bias, whole(unused), whole(out)];
            return vec![self.product(site, ("forward", names[0]), res, p)];
        }
        let size = p.m * p.n;
        let reduce = Dispatch::new(
            self.d,
            names[2],
            &self.k.splitk_reduce,
            &[
                whole(&self.b.partial),
                bias.clone(),
                whole(unused),
                whole(out),
            ],
            &p,
            groups_1d(size),
        )
        .work(
            "forward",
            (p.splits * size) as f64,
            4.0 * ((p.splits + 1) * size + p.n) as f64,
        );
        let res = [whole(a), bm, bias, whole(unused), whole(&self.b.partial)];
        vec![self.product(site, ("forward", names[1]), res, p), reduce]
    }

    /// SoftMax, loss and accuracy of `rows` logits, and (training) δ2 = (p − onehot) /
    /// divisor · scale in the working precision. Evaluation runs the f32 kernel in both
    /// precisions: it writes no δ2.
    pub(super) fn softmax(&self, pass: Pass, rows: u32, divisor: u32, scale: f32) -> Dispatch {
        let cls = crate::data::CLASSES as u32;
        let p = crate::abi::SoftmaxParams {
            rows,
            classes: cls,
            divisor,
            at: if pass == Pass::Eval {
                EVAL_AT
            } else {
                TRAIN_AT
            },
            scale,
            _pad: [0; 3],
        };
        let (name, pipeline, dz, delta_bytes) = match (self.half, pass) {
            (Some(k16), Pass::Gradient | Pass::Train) => {
                ("softmax_xent_f16", &k16.softmax_xent, self.dz, 2)
            }
            _ => ("softmax_xent", &self.k.softmax_xent, &self.b.dz, 4),
        };
        let b = self.b;
        Dispatch::new(
            self.d,
            name,
            pipeline,
            &[
                whole(&b.z),
                whole(&b.batch_labels),
                whole(dz),
                whole(&b.totals),
            ],
            &p,
            (1, 1, 1),
        )
        // Reads the f32 logits and labels, writes δ2.
        .work(
            "loss",
            0.0,
            (4 * rows * cls + delta_bytes * rows * cls + 4 * rows) as f64,
        )
    }

    /// `out = alpha · Σ_rows δ + beta · out`: a bias's gradient (alpha 1, beta 0) or its fused
    /// update (alpha −lr, beta 1), δ in the working precision, `out` f32.
    pub(super) fn bias(
        &self,
        (phase, name): (&'static str, &'static str),
        delta: &wgpu::Buffer,
        out: Res,
        (rows, cols): (u32, u32),
        (alpha, beta): (f32, f32),
    ) -> Dispatch {
        let p = crate::abi::BiasParams {
            rows,
            cols,
            alpha,
            beta,
        };
        let pipeline = match self.half {
            Some(k16) => &k16.bias_grad,
            None => &self.k.bias_update,
        };
        Dispatch::new(
            self.d,
            name,
            pipeline,
            &[whole(delta), out],
            &p,
            self.k.bias_sum.workgroups(cols),
        )
        .work(
            phase,
            (rows * cols) as f64,
            // Reads δ, writes `out` (and reads it first when beta ≠ 0).
            (self.value_bytes * rows * cols + if beta == 0.0 { 4 } else { 8 } * cols) as f64,
        )
    }
}
