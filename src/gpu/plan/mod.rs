//! The dispatches of one training (or evaluation) step, built once per batch size and
//! replayed every step: the kernels of `shaders/` bound to the engine's buffers, in order.

use super::buffers::{Buffers, EVAL_AT, TRAIN_AT, WORDS_PER_IMAGE};
use super::kernels::{self, groups_1d, row_major, transposed, Dispatch, Kernels, MatmulParams};
use crate::data::{CLASSES, PIXELS};

mod f16;

/// Where a step's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    Staged,
    Resident,
}

/// Which pass a plan records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Pass {
    /// Forward, backward and the SGD update fused: the one-replica fast path.
    Train,
    /// Forward and backward, the gradient written into the flat gradient buffer: a
    /// data-parallel replica's first verb (the all-reduce and `sgd_update` follow).
    Gradient,
    /// Forward, loss and accuracy only.
    Eval,
}

/// What a plan is built for: the batch's rows, the pass, and where the images come from.
/// Nothing that changes from step to step is in it (see [`StepValues`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PlanKey {
    pub(super) rows: usize,
    pub(super) pass: Pass,
    pub(super) source: Source,
}

/// The values of a step that may change from one step to the next (a learning-rate schedule,
/// the loss scale, the last global batch of an epoch). They live in the params uniforms of the
/// plan's dispatches and are rewritten there (`queue.write_buffer`, wgpu's repeated_compute
/// way) before a step that needs others, so the plan itself is built once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StepValues {
    /// The fused update's learning rate (Pass::Train; unused otherwise).
    pub(super) lr: f32,
    /// δ2 = (p − onehot)/divisor: the global batch (0 for evaluation).
    pub(super) divisor: u32,
    /// δ2 is multiplied by it: --precision f16's loss scale, 1 otherwise.
    pub(super) loss_scale: f32,
}

/// Which step value a params field holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    /// alpha = −lr (a fused update's product or bias).
    MinusLr,
    Divisor,
    LossScale,
}

/// Where a step value goes: `offset` bytes into the params of `rest[dispatch]`.
#[derive(Debug, Clone, Copy)]
struct Slot {
    dispatch: usize,
    offset: u64,
    field: Field,
}

/// The dispatches of one step for one batch size: created once, replayed every step.
pub(super) struct Plan {
    /// One unpack dispatch per ring slot (each bound to its slot's region).
    pub(super) unpack: Vec<Dispatch>,
    /// Everything after the unpack, in order.
    pub(super) rest: Vec<Dispatch>,
    /// Index in `rest` where the hidden layer's gradient starts: everything before it has
    /// produced the output layer's gradient (δ2ᵀ·h, Σδ2), which can then be all-reduced while
    /// the rest runs.
    pub(super) hidden_grad_at: usize,
    /// The params fields that hold step values.
    slots: Vec<Slot>,
    /// The step values the params hold now.
    values: StepValues,
}

impl Plan {
    /// Whether the params hold `v` already.
    pub(super) fn holds(&self, v: StepValues) -> bool {
        self.values == v || self.slots.is_empty()
    }

    /// Writes `v` into the params of the dispatches that use it. Steps already submitted keep
    /// the values they were submitted with (a write lands before the next submission); the
    /// caller submits steps recorded but not yet submitted first.
    pub(super) fn write_values(&mut self, queue: &wgpu::Queue, v: StepValues) {
        if self.holds(v) {
            return;
        }
        for s in &self.slots {
            let bytes = match s.field {
                Field::MinusLr => (-v.lr).to_le_bytes(),
                Field::Divisor => v.divisor.to_le_bytes(),
                Field::LossScale => v.loss_scale.to_le_bytes(),
            };
            let params = self.rest[s.dispatch]
                .params
                .as_ref()
                .expect("a dispatch built with Dispatch::new owns its params");
            queue.write_buffer(params, s.offset, &bytes);
        }
        self.values = v;
    }
}

/// The slots of softmax_xent's step values, for the dispatch at `at`.
fn softmax_slots(at: usize) -> [Slot; 2] {
    use std::mem::offset_of;
    [
        Slot {
            dispatch: at,
            offset: offset_of!(kernels::SoftmaxParams, divisor) as u64,
            field: Field::Divisor,
        },
        Slot {
            dispatch: at,
            offset: offset_of!(kernels::SoftmaxParams, scale) as u64,
            field: Field::LossScale,
        },
    ]
}

/// One unpack dispatch per ring slot (each bound to its slot's region of the staging ring, or
/// to the resident set and the slot's indices), writing the batch into `x` (`x.1` bytes a value).
fn unpack_dispatches(
    d: &wgpu::Device,
    (name, pipeline): (&'static str, &wgpu::ComputePipeline),
    b: &Buffers,
    ring: usize,
    source: Source,
    rows: usize,
    x: (&wgpu::Buffer, u32),
) -> Vec<Dispatch> {
    fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
        b.as_entire_binding()
    }
    let (r, pix) = (rows as u32, PIXELS as u32);
    let params = kernels::UnpackParams {
        rows: r,
        words_per_image: WORDS_PER_IMAGE,
    };
    (0..ring)
        .map(|s| {
            let (pixels, labels, indices) = match (source, &b.resident) {
                (Source::Resident, Some(res)) => (
                    whole(&res.pixels),
                    whole(&res.labels),
                    Buffers::slot(&b.index_slots, b.small_stride, s),
                ),
                _ => (
                    Buffers::slot(&b.pixel_slots, b.pixel_stride, s),
                    Buffers::slot(&b.label_slots, b.small_stride, s),
                    whole(&b.identity),
                ),
            };
            Dispatch::new(
                d,
                name,
                pipeline,
                &[pixels, labels, indices, whole(x.0), whole(&b.batch_labels)],
                &params,
                groups_1d(r * WORDS_PER_IMAGE),
            )
            // Reads the u8 pixels and labels, writes the pixels as floats and u32 labels.
            .work("unpack", 0.0, (r * pix + x.1 * r * pix + 8 * r) as f64)
        })
        .collect()
}

impl Plan {
    /// Builds the dispatches of one step for `key.rows` examples: the kernels `k` bound to
    /// the buffers `b`, one unpack per slot of a `ring`-slot staging ring, holding the step
    /// values `v` to start with.
    pub(super) fn new(
        d: &wgpu::Device,
        k: &Kernels,
        b: &Buffers,
        ring: usize,
        key: PlanKey,
        v: StepValues,
    ) -> Plan {
        let PlanKey { rows, pass, source } = key;
        let (lr, divisor) = (v.lr, v.divisor);
        fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
            b.as_entire_binding()
        }
        let (r, hid, cls, pix) = (rows as u32, b.hidden as u32, CLASSES as u32, PIXELS as u32);
        let unpack = unpack_dispatches(
            d,
            ("unpack_batch", &k.unpack),
            b,
            ring,
            source,
            rows,
            (&b.x, 4),
        );

        // Bindings that a dispatch does not read (a bias with no HAS_BIAS flag, a mask with no
        // MASK flag) still need a buffer: never the one the dispatch writes, since wgpu refuses
        // a buffer bound both read-only and read-write in one dispatch.
        type Res<'a> = wgpu::BindingResource<'a>;
        let mm = |phase, name, a: Res, bm: Res, bias: Res, mask: Res, c: Res, p: MatmulParams| {
            Dispatch::matmul(d, name, k, [a, bm, bias, mask, c], &p).work(
                phase,
                p.work().0,
                p.work().1,
            )
        };
        // A forward product out = epilogue(a · bᵀ) with its bias: as one matmul, or, when K is
        // split, a matmul into the partial sums and a splitk_reduce that applies the epilogue.
        // `unused` fills the mask binding, which forward products do not read.
        let forward = |names: [&'static str; 3],
                       a: &wgpu::Buffer,
                       bm: Res,
                       bias: Res,
                       unused: &wgpu::Buffer,
                       out: &wgpu::Buffer,
                       p: MatmulParams| {
            if p.splits == 1 {
                return vec![mm(
                    "forward",
                    names[0],
                    whole(a),
                    bm,
                    bias,
                    whole(unused),
                    whole(out),
                    p,
                )];
            }
            let size = p.m * p.n;
            let reduce = Dispatch::new(
                d,
                names[2],
                &k.splitk_reduce,
                &[whole(&b.partial), bias.clone(), whole(unused), whole(out)],
                &p,
                groups_1d(size),
            )
            .work(
                "forward",
                (p.splits * size) as f64,
                4.0 * ((p.splits + 1) * size + p.n) as f64,
            );
            vec![
                mm(
                    "forward",
                    names[1],
                    whole(a),
                    bm,
                    bias,
                    whole(unused),
                    whole(&b.partial),
                    p,
                ),
                reduce,
            ]
        };
        let mut rest = Vec::new();
        // Forward, hidden layer: h = ReLU(x · W1ᵀ + b1), K = 784 split into slices.
        let hidden = MatmulParams::new(
            (r, hid, pix),
            row_major(pix),
            transposed(pix),
            1.0,
            0.0,
            kernels::HAS_BIAS | kernels::RELU,
            k.matmul_variant.forward_splits(rows, b.hidden, PIXELS),
        );
        rest.extend(forward(
            [
                "hidden: ReLU(x·W1ᵀ + b1)",
                "hidden: x·W1ᵀ (split K)",
                "hidden: Σ splits + b1, ReLU",
            ],
            &b.x,
            b.param(0),
            b.param(1),
            &b.z,
            &b.h,
            hidden,
        ));
        // Forward, output layer: z = h · W2ᵀ + b2, K = 128 split into slices too.
        let output = MatmulParams::new(
            (r, cls, hid),
            row_major(hid),
            transposed(hid),
            1.0,
            0.0,
            kernels::HAS_BIAS,
            k.matmul_variant.forward_splits(rows, CLASSES, b.hidden),
        );
        rest.extend(forward(
            [
                "output: h·W2ᵀ + b2",
                "output: h·W2ᵀ (split K)",
                "output: Σ splits + b2",
            ],
            &b.h,
            b.param(2),
            b.param(3),
            &b.x,
            &b.z,
            output,
        ));
        // SoftMax, loss, accuracy, and (training) δ2 = (p − onehot) / rows.
        let softmax = kernels::SoftmaxParams {
            rows: r,
            classes: cls,
            divisor,
            at: if pass == Pass::Eval {
                EVAL_AT
            } else {
                TRAIN_AT
            },
            scale: v.loss_scale,
            _pad: [0; 3],
        };
        let mut slots = Vec::new();
        if pass != Pass::Eval {
            slots.extend(softmax_slots(rest.len()));
        }
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
                &softmax,
                (1, 1, 1),
            )
            .work("loss", 0.0, 4.0 * (2 * r * cls + r) as f64),
        );
        if pass == Pass::Eval {
            let hidden_grad_at = rest.len();
            return Plan {
                unpack,
                rest,
                hidden_grad_at,
                slots,
                values: v,
            };
        }
        // Backward: δ1 = (δ2 · W2) ⊙ [h > 0], before W2 changes.
        let back = MatmulParams::new(
            (r, hid, cls),
            row_major(cls),
            row_major(hid),
            1.0,
            0.0,
            kernels::MASK,
            1,
        );
        rest.push(mm(
            "backward",
            "δ1 = (δ2·W2) ⊙ ReLU′",
            whole(&b.dz),
            b.param(2),
            b.param(3),
            whole(&b.h),
            whole(&b.dh),
            back,
        ));
        // The weight gradients, written where the pass wants them: Gradient writes ∂loss/∂W
        // into the gradient buffer (alpha 1, beta 0); Train adds −lr·∂loss/∂W straight into
        // the weights (alpha −lr, beta 1), so there the gradient never exists as a buffer.
        let (alpha, beta, names) = match pass {
            Pass::Gradient => (
                1.0,
                0.0,
                ["∂W2 = δ2ᵀ·h", "∂b2 = Σδ2", "∂W1 = δ1ᵀ·x", "∂b1 = Σδ1"],
            ),
            _ => (
                -lr,
                1.0,
                [
                    "W2 −= lr·δ2ᵀ·h",
                    "b2 −= lr·Σδ2",
                    "W1 −= lr·δ1ᵀ·x",
                    "b1 −= lr·Σδ1",
                ],
            ),
        };
        let target = |i: usize| {
            if pass == Pass::Gradient {
                b.grad_of(i)
            } else {
                b.param(i)
            }
        };
        let phase = if pass == Pass::Gradient {
            "backward"
        } else {
            "update"
        };
        let bias = |name, delta: &wgpu::Buffer, out: Res, cols: u32| {
            let p = kernels::BiasParams {
                rows: r,
                cols,
                alpha,
                beta,
            };
            Dispatch::new(
                d,
                name,
                &k.bias_update,
                &[whole(delta), out],
                &p,
                (cols, 1, 1),
            )
            .work(phase, (r * cols) as f64, 4.0 * (r * cols + 2 * cols) as f64)
        };
        // One layer's pair: ∂W = δᵀ · input (outputs × inputs, summed over the batch's rows)
        // and ∂b = Σ δ, into parameter tensors `w` and `w + 1`. `spare` fills the product's
        // unused bias and mask bindings.
        let layer = |names: &[&'static str],
                     delta: &wgpu::Buffer,
                     input: &wgpu::Buffer,
                     spare: &wgpu::Buffer,
                     (outs, ins): (u32, u32),
                     w: usize| {
            let p = MatmulParams::new(
                (outs, ins, r),
                transposed(outs),
                row_major(ins),
                alpha,
                beta,
                0,
                1,
            );
            let product = mm(
                phase,
                names[0],
                whole(delta),
                whole(input),
                whole(spare),
                whole(spare),
                target(w),
                p,
            );
            [product, bias(names[1], delta, target(w + 1), outs)]
        };
        // Output layer first (∂W2 = δ2ᵀ · h, ∂b2 = Σ δ2), then the hidden layer (∂W1 = δ1ᵀ · x).
        let first = rest.len();
        rest.extend(layer(&names[..2], &b.dz, &b.h, &b.x, (cls, hid), 2));
        let hidden_grad_at = rest.len();
        rest.extend(layer(&names[2..], &b.dh, &b.x, &b.h, (hid, pix), 0));
        if pass == Pass::Train {
            // The fused update's alpha = −lr, in both layers' products and biases.
            use std::mem::offset_of;
            for (i, dispatch) in (first..rest.len()).enumerate() {
                let offset = if i % 2 == 0 {
                    offset_of!(MatmulParams, alpha)
                } else {
                    offset_of!(kernels::BiasParams, alpha)
                };
                slots.push(Slot {
                    dispatch,
                    offset: offset as u64,
                    field: Field::MinusLr,
                });
            }
        }
        Plan {
            unpack,
            rest,
            hidden_grad_at,
            slots,
            values: v,
        }
    }
}
