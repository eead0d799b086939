//! The dispatches of one training (or evaluation) step, built once per batch size and
//! replayed every step: the kernels of `shaders/` bound to the engine's buffers, in order.

use super::engine::{GpuEngine, EVAL_AT, TRAIN_AT, WORDS_PER_IMAGE};
use super::kernels::{self, groups_1d, row_major, transposed, Dispatch, MatmulParams};
use crate::data::{CLASSES, PIXELS};
use crate::model::HIDDEN;

/// Where a step's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    Staged,
    Resident,
}

/// Which pass a plan records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Pass {
    Train,
    Eval,
}

/// The dispatches of one step for one batch size: created once, replayed every step.
pub(super) struct Plan {
    /// One unpack dispatch per ring slot (each bound to its slot's region).
    pub(super) unpack: Vec<Dispatch>,
    /// Everything after the unpack, in order.
    pub(super) rest: Vec<Dispatch>,
}

/// K-slices for a forward product with an (m, n) output and inner size k: enough that the
/// product has about 256 workgroups (a big GPU has over a hundred multiprocessors to fill), at
/// most 16, and never more than K has tiles. The hidden layer at batch 64 gets 7 (16 µs
/// against 49 µs unsplit on an H200), the output layer 8 (8.5 against 10.6 µs).
pub(super) fn forward_splits(m: usize, n: usize, k: usize) -> u32 {
    let tile = kernels::MATMUL_TILE;
    let tiles = (m as u32).div_ceil(tile) * (n as u32).div_ceil(tile);
    (256 / tiles.max(1))
        .clamp(1, 16)
        .min((k as u32).div_ceil(tile))
}

impl GpuEngine {
    /// Slot `s` of a ring buffer whose slots are `stride` bytes apart.
    fn slot(buffer: &wgpu::Buffer, stride: u64, s: usize) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: stride * s as u64,
            size: std::num::NonZeroU64::new(stride),
        })
    }

    /// Builds the dispatches of one step for `rows` examples.
    pub(super) fn plan(&self, rows: usize, pass: Pass, source: Source) -> Plan {
        let d = &self.gpu.device;
        let k = &self.kernels;
        fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
            b.as_entire_binding()
        }
        let (r, hid, cls, pix) = (rows as u32, HIDDEN as u32, CLASSES as u32, PIXELS as u32);
        let unpack_params = kernels::UnpackParams {
            rows: r,
            words_per_image: WORDS_PER_IMAGE,
        };
        let unpack = (0..self.opts.ring)
            .map(|s| {
                let (pixels, labels, indices) = match (source, &self.resident) {
                    (Source::Resident, Some(res)) => (
                        whole(&res.pixels),
                        whole(&res.labels),
                        Self::slot(&self.index_slots, self.small_stride, s),
                    ),
                    _ => (
                        Self::slot(&self.pixel_slots, self.pixel_stride, s),
                        Self::slot(&self.label_slots, self.small_stride, s),
                        whole(&self.identity),
                    ),
                };
                Dispatch::new(
                    d,
                    "unpack_batch",
                    &k.unpack,
                    &[
                        pixels,
                        labels,
                        indices,
                        whole(&self.x),
                        whole(&self.batch_labels),
                    ],
                    &unpack_params,
                    groups_1d(r * WORDS_PER_IMAGE),
                )
                // Reads the u8 pixels and labels, writes f32 pixels and u32 labels.
                .work("unpack", 0.0, (r * pix + 4 * r * pix + 8 * r) as f64)
            })
            .collect();

        let mm = |phase,
                  name,
                  a: &wgpu::Buffer,
                  b: &wgpu::Buffer,
                  bias: &wgpu::Buffer,
                  mask: &wgpu::Buffer,
                  c: &wgpu::Buffer,
                  p: MatmulParams| {
            Dispatch::new(
                d,
                name,
                &k.matmul,
                &[whole(a), whole(b), whole(bias), whole(mask), whole(c)],
                &p,
                p.workgroups(),
            )
            .work(phase, p.work().0, p.work().1)
        };
        // A forward product out = epilogue(a · bᵀ) with its bias: as one matmul, or, when K is
        // split, a matmul into the partial sums and a splitk_reduce that applies the epilogue.
        // `unused` fills the mask binding, which forward products do not read.
        let forward = |names: [&'static str; 3],
                       a: &wgpu::Buffer,
                       b: &wgpu::Buffer,
                       bias: &wgpu::Buffer,
                       unused: &wgpu::Buffer,
                       out: &wgpu::Buffer,
                       p: MatmulParams| {
            if p.splits == 1 {
                return vec![mm("forward", names[0], a, b, bias, unused, out, p)];
            }
            let size = p.m * p.n;
            let reduce = Dispatch::new(
                d,
                names[2],
                &k.splitk_reduce,
                &[whole(&self.partial), whole(bias), whole(unused), whole(out)],
                &p,
                groups_1d(size),
            )
            .work(
                "forward",
                (p.splits * size) as f64,
                4.0 * ((p.splits + 1) * size + p.n) as f64,
            );
            vec![
                mm("forward", names[1], a, b, bias, unused, &self.partial, p),
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
            forward_splits(rows, HIDDEN, PIXELS),
        );
        rest.extend(forward(
            [
                "hidden: ReLU(x·W1ᵀ + b1)",
                "hidden: x·W1ᵀ (split K)",
                "hidden: Σ splits + b1, ReLU",
            ],
            &self.x,
            &self.w1,
            &self.b1,
            &self.z,
            &self.h,
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
            forward_splits(rows, CLASSES, HIDDEN),
        );
        rest.extend(forward(
            [
                "output: h·W2ᵀ + b2",
                "output: h·W2ᵀ (split K)",
                "output: Σ splits + b2",
            ],
            &self.h,
            &self.w2,
            &self.b2,
            &self.x,
            &self.z,
            output,
        ));
        // SoftMax, loss, accuracy, and (training) δ2 = (p − onehot) / rows.
        let softmax = kernels::SoftmaxParams {
            rows: r,
            classes: cls,
            grad: (pass == Pass::Train) as u32,
            at: if pass == Pass::Train {
                TRAIN_AT
            } else {
                EVAL_AT
            },
        };
        rest.push(
            Dispatch::new(
                d,
                "softmax_xent",
                &k.softmax_xent,
                &[
                    whole(&self.z),
                    whole(&self.batch_labels),
                    whole(&self.dz),
                    whole(&self.totals),
                ],
                &softmax,
                (1, 1, 1),
            )
            .work("loss", 0.0, 4.0 * (2 * r * cls + r) as f64),
        );
        if pass == Pass::Train {
            let lr = self.lr;
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
                &self.dz,
                &self.w2,
                &self.b2,
                &self.h,
                &self.dh,
                back,
            ));
            // Update: W2 −= lr · δ2ᵀ · h, b2 −= lr · Σ δ2.
            let w2 = MatmulParams::new(
                (cls, hid, r),
                transposed(cls),
                row_major(hid),
                -lr,
                1.0,
                0,
                1,
            );
            rest.push(mm(
                "update",
                "W2 −= lr·δ2ᵀ·h",
                &self.dz,
                &self.h,
                &self.b2,
                &self.x,
                &self.w2,
                w2,
            ));
            let bias = |name, delta: &wgpu::Buffer, b: &wgpu::Buffer, cols: u32| {
                let p = kernels::BiasParams {
                    rows: r,
                    cols,
                    lr,
                    _pad: 0,
                };
                Dispatch::new(
                    d,
                    name,
                    &k.bias_update,
                    &[whole(delta), whole(b)],
                    &p,
                    (cols, 1, 1),
                )
                .work(
                    "update",
                    (r * cols) as f64,
                    4.0 * (r * cols + 2 * cols) as f64,
                )
            };
            rest.push(bias("b2 −= lr·Σδ2", &self.dz, &self.b2, cls));
            // Update: W1 −= lr · δ1ᵀ · x, b1 −= lr · Σ δ1.
            let w1 = MatmulParams::new(
                (hid, pix, r),
                transposed(hid),
                row_major(pix),
                -lr,
                1.0,
                0,
                1,
            );
            rest.push(mm(
                "update",
                "W1 −= lr·δ1ᵀ·x",
                &self.dh,
                &self.x,
                &self.b1,
                &self.h,
                &self.w1,
                w1,
            ));
            rest.push(bias("b1 −= lr·Σδ1", &self.dh, &self.b1, hid));
        }
        Plan { unpack, rest }
    }
}
