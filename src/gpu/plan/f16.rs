//! The f16 step's dispatches: the same order as the f32 plan's, on the f16 kernels and buffers.

use super::{softmax_slots, unpack_dispatches, Pass, Plan, PlanKey, StepValues};
use crate::data::{CLASSES, PIXELS};
use crate::gpu::buffers::{Buffers, HalfBuffers, EVAL_AT, TRAIN_AT};
use crate::gpu::kernels::{
    self, row_major, transposed, Dispatch, Kernels, KernelsF16, MatmulParams,
};

impl Plan {
    /// The dispatches of one --precision f16 step (Pass::Gradient or Pass::Eval): the f16
    /// kernels of `k16` on the f16 buffers of `b.half`, f32 logits, f32 gradients.
    /// ```text
    /// unpack_batch_f16   x16 = u8 / 255
    /// matmul_f16         h16 = ReLU(x16·W1₁₆ᵀ + b1₁₆)            accumulated in f32
    /// matmul_f16_f32out  z   = h16·W2₁₆ᵀ + b2₁₆                   f32 logits
    /// softmax_xent_f16   δ2₁₆ = (p − onehot)/B · scale            (Eval: softmax_xent, no δ2)
    /// matmul_f16         δ1₁₆ = (δ2₁₆·W2₁₆) ⊙ ReLU′
    /// matmul_f16_f32out  ∂W2 = δ2₁₆ᵀ·h16;  bias_grad_f16 ∂b2    into the f32 gradient
    /// matmul_f16_f32out  ∂W1 = δ1₁₆ᵀ·x16;  bias_grad_f16 ∂b1
    /// ```
    pub(in crate::gpu) fn new_f16(
        d: &wgpu::Device,
        k: &Kernels,
        k16: &KernelsF16,
        b: &Buffers,
        ring: usize,
        key: PlanKey,
        v: StepValues,
    ) -> Plan {
        let h16: &HalfBuffers = b.half.as_ref().expect("f16 buffers");
        fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
            b.as_entire_binding()
        }
        let (r, hid, cls, pix) = (
            key.rows as u32,
            b.hidden as u32,
            CLASSES as u32,
            PIXELS as u32,
        );
        let unpack = unpack_dispatches(
            d,
            ("unpack_batch_f16", &k16.unpack),
            b,
            ring,
            key.source,
            key.rows,
            (&h16.x, 2),
        );
        type Res<'a> = wgpu::BindingResource<'a>;
        // An f16 product: its five bindings' element sizes (2 bytes for f16, 4 for f32) say
        // how the host check counts them.
        let mm = |phase, name, pipeline, sizes: [u64; 5], res: [Res; 5], p: MatmulParams| {
            Dispatch::matmul_sized(
                d,
                name,
                pipeline,
                sizes,
                res,
                &p,
                KernelsF16::workgroups(&p),
            )
            .work(phase, p.work().0, p.work().1 / 2.0)
        };
        const H: u64 = 2;
        const F: u64 = 4;
        let mut rest = vec![
            mm(
                "forward",
                "hidden: ReLU(x·W1ᵀ + b1), f16",
                &k16.matmul,
                [H, H, H, H, H],
                [
                    whole(&h16.x),
                    h16.param(0),
                    h16.param(1),
                    whole(&h16.dz),
                    whole(&h16.h),
                ],
                MatmulParams::new(
                    (r, hid, pix),
                    row_major(pix),
                    transposed(pix),
                    1.0,
                    0.0,
                    kernels::HAS_BIAS | kernels::RELU,
                    1,
                ),
            ),
            mm(
                "forward",
                "output: h·W2ᵀ + b2, f16 → f32",
                &k16.matmul_f32out,
                [H, H, H, H, F],
                [
                    whole(&h16.h),
                    h16.param(2),
                    h16.param(3),
                    whole(&h16.x),
                    whole(&b.z),
                ],
                MatmulParams::new(
                    (r, cls, hid),
                    row_major(hid),
                    transposed(hid),
                    1.0,
                    0.0,
                    kernels::HAS_BIAS,
                    1,
                ),
            ),
        ];
        if key.pass == Pass::Eval {
            let p = kernels::SoftmaxParams {
                rows: r,
                classes: cls,
                divisor: 0,
                at: EVAL_AT,
                scale: 1.0,
                _pad: [0; 3],
            };
            rest.push(
                Dispatch::new(
                    d,
                    "softmax_xent",
                    &k.softmax_xent,
                    &[
                        whole(&b.z),
                        whole(&b.batch_labels),
                        whole(&b.dz),
                        whole(&b.totals),
                    ],
                    &p,
                    (1, 1, 1),
                )
                .work("loss", 0.0, 4.0 * (2 * r * cls + r) as f64),
            );
            let hidden_grad_at = rest.len();
            return Plan {
                unpack,
                rest,
                hidden_grad_at,
                slots: Vec::new(),
                values: v,
            };
        }
        let sp = kernels::SoftmaxParams {
            rows: r,
            classes: cls,
            divisor: v.divisor,
            at: TRAIN_AT,
            scale: v.loss_scale,
            _pad: [0; 3],
        };
        let slots = softmax_slots(rest.len()).to_vec();
        rest.push(
            Dispatch::new(
                d,
                "softmax_xent_f16",
                &k16.softmax_xent,
                &[
                    whole(&b.z),
                    whole(&b.batch_labels),
                    whole(&h16.dz),
                    whole(&b.totals),
                ],
                &sp,
                (1, 1, 1),
            )
            .work("loss", 0.0, (4 * r * cls + 2 * r * cls + 4 * r) as f64),
        );
        rest.push(mm(
            "backward",
            "δ1 = (δ2·W2) ⊙ ReLU′, f16",
            &k16.matmul,
            [H, H, H, H, H],
            [
                whole(&h16.dz),
                h16.param(2),
                h16.param(3),
                whole(&h16.h),
                whole(&h16.dh),
            ],
            MatmulParams::new(
                (r, hid, cls),
                row_major(cls),
                row_major(hid),
                1.0,
                0.0,
                kernels::MASK,
                1,
            ),
        ));
        let bias = |name, delta: &wgpu::Buffer, out: Res, cols: u32| {
            let p = kernels::BiasParams {
                rows: r,
                cols,
                alpha: 1.0,
                beta: 0.0,
            };
            Dispatch::new(
                d,
                name,
                &k16.bias_grad,
                &[whole(delta), out],
                &p,
                (cols, 1, 1),
            )
            .work(
                "backward",
                (r * cols) as f64,
                (2 * r * cols + 4 * cols) as f64,
            )
        };
        rest.push(mm(
            "backward",
            "∂W2 = δ2ᵀ·h, f16 → f32",
            &k16.matmul_f32out,
            [H, H, H, H, F],
            [
                whole(&h16.dz),
                whole(&h16.h),
                whole(&h16.x),
                whole(&h16.x),
                b.grad_of(2),
            ],
            MatmulParams::new(
                (cls, hid, r),
                transposed(cls),
                row_major(hid),
                1.0,
                0.0,
                0,
                1,
            ),
        ));
        rest.push(bias("∂b2 = Σδ2, f16 → f32", &h16.dz, b.grad_of(3), cls));
        let hidden_grad_at = rest.len();
        rest.push(mm(
            "backward",
            "∂W1 = δ1ᵀ·x, f16 → f32",
            &k16.matmul_f32out,
            [H, H, H, H, F],
            [
                whole(&h16.dh),
                whole(&h16.x),
                whole(&h16.h),
                whole(&h16.h),
                b.grad_of(0),
            ],
            MatmulParams::new(
                (hid, pix, r),
                transposed(hid),
                row_major(pix),
                1.0,
                0.0,
                0,
                1,
            ),
        ));
        rest.push(bias("∂b1 = Σδ1, f16 → f32", &h16.dh, b.grad_of(1), hid));
        Plan {
            unpack,
            rest,
            hidden_grad_at,
            slots,
            values: v,
        }
    }
}
