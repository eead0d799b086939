//! The dispatches of one training (or evaluation) step, built once per batch size and
//! replayed every step: the kernels of `shaders/` bound to the engine's buffers, in order.

use crate::gpu::buffers::{Buffers, WORDS_PER_IMAGE};
use crate::gpu::dispatch::{groups_1d, Dispatch};
use crate::abi::{MatmulParams, Site};
use crate::gpu::mirror::{Mirror, Mirrored};
use crate::data::PIXELS;
use key::{Pass, PlanKey, Source, StepValues};
use table::{whole, Table};

pub mod key;
pub mod table;

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

/// A copy a step makes into a texture mirror (gpu/mirror.rs): `floats` floats of `buffer`
/// from byte `offset`, just before dispatch `before` of the plan's `rest`.
struct MirrorCopy {
    mirror: Mirror,
    buffer: wgpu::Buffer,
    offset: u64,
    floats: usize,
    before: usize,
}

/// The dispatches of one step for one batch size: created once, replayed every step.
pub(in crate::gpu) struct Plan {
    /// One unpack dispatch per ring slot (each bound to its slot's region).
    pub(in crate::gpu) unpack: Vec<Dispatch>,
    /// The mirrors the products read, refreshed after what writes them (none unless a pick
    /// reads textures).
    copies: Vec<MirrorCopy>,
    /// Everything after the unpack, in order.
    pub(in crate::gpu) rest: Vec<Dispatch>,
    /// Index in `rest` where the hidden layer's gradient starts: everything before it has
    /// produced the output layer's gradient (δ2ᵀ·h, Σδ2), which can then be all-reduced while
    /// the rest runs.
    pub(in crate::gpu) hidden_grad_at: usize,
    /// The params fields that hold step values.
    slots: Vec<Slot>,
    /// The step values the params hold now.
    values: StepValues,
}

impl Plan {
    /// Records the step's unpack (of ring slot `slot`; None: none) and its dispatches `rest`
    /// into `encoder`, with the mirror copies among them; `stamps` (a query set and index i)
    /// writes timestamps i and i + 1 at the start and the end. Without copies it is one compute
    /// pass; a copy cannot be inside a pass, so copies cut it into several.
    pub(in crate::gpu) fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        slot: Option<usize>,
        rest: std::ops::Range<usize>,
        label: &str,
        stamps: Option<(&wgpu::QuerySet, u32)>,
    ) {
        // The passes: runs of dispatches between copies.
        let mut passes: Vec<(usize, Vec<&Dispatch>)> = Vec::new();
        let mut run: Vec<&Dispatch> = slot.map(|s| &self.unpack[s]).into_iter().collect();
        for i in rest.clone() {
            if self.copies.iter().any(|c| c.before == i) {
                passes.push((i, std::mem::take(&mut run)));
            }
            run.push(&self.rest[i]);
        }
        passes.push((rest.end, run));
        let last = passes.len() - 1;
        let first = passes.iter().position(|p| !p.1.is_empty());
        for (n, (copies_after, dispatches)) in passes.into_iter().enumerate() {
            if !dispatches.is_empty() {
                // wgpu refuses timestamp writes with neither index: a middle pass has none.
                let (begin, end) = (Some(n) == first, n == last);
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: stamps.filter(|_| begin || end).map(|(query_set, i)| {
                        wgpu::ComputePassTimestampWrites {
                            query_set,
                            beginning_of_pass_write_index: begin.then_some(i),
                            end_of_pass_write_index: end.then_some(i + 1),
                        }
                    }),
                });
                for d in dispatches {
                    d.record(&mut pass);
                }
            }
            if n < last {
                self.record_copies_before(encoder, copies_after);
            }
        }
    }

    /// Whether the step copies into mirrors (and so cannot be recorded into one pass).
    pub(in crate::gpu) fn has_copies(&self) -> bool {
        !self.copies.is_empty()
    }

    /// Records the mirror copies that go just before dispatch `at` of `rest`.
    pub(in crate::gpu) fn record_copies_before(&self, encoder: &mut wgpu::CommandEncoder, at: usize) {
        for c in self.copies.iter().filter(|c| c.before == at) {
            c.mirror.copy_from(encoder, &c.buffer, c.offset, c.floats);
        }
    }

    /// Records the unpack of `slot` and the dispatches `rest` into an open pass (a plan
    /// without copies).
    pub(in crate::gpu) fn record_in(
        &self,
        pass: &mut wgpu::ComputePass,
        slot: usize,
        rest: std::ops::Range<usize>,
    ) {
        self.unpack[slot].record(pass);
        for d in &self.rest[rest] {
            d.record(pass);
        }
    }

    /// Whether the params hold `v` already.
    pub(in crate::gpu) fn holds(&self, v: StepValues) -> bool {
        self.values == v || self.slots.is_empty()
    }

    /// Writes `v` into the params of the dispatches that use it. Steps already submitted keep
    /// the values they were submitted with (a write lands before the next submission); the
    /// caller submits steps recorded but not yet submitted first.
    pub(in crate::gpu) fn write_values(&mut self, queue: &wgpu::Queue, v: StepValues) {
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

/// The slots of head's step values, for the dispatch at `at`.
fn head_slots(at: usize) -> [Slot; 2] {
    use std::mem::offset_of;
    [
        Slot {
            dispatch: at,
            offset: offset_of!(crate::abi::HeadParams, divisor) as u64,
            field: Field::Divisor,
        },
        Slot {
            dispatch: at,
            offset: offset_of!(crate::abi::HeadParams, scale) as u64,
            field: Field::LossScale,
        },
    ]
}

/// The slots of a fused update's alpha = −lr: backward's (at `at`) and the hidden layer's
/// weight product's (at `at + 1`).
fn minus_lr_slots(at: usize) -> [Slot; 2] {
    use std::mem::offset_of;
    [
        Slot {
            dispatch: at,
            offset: offset_of!(crate::abi::BackwardParams, alpha) as u64,
            field: Field::MinusLr,
        },
        Slot {
            dispatch: at + 1,
            offset: offset_of!(MatmulParams, alpha) as u64,
            field: Field::MinusLr,
        },
    ]
}

/// One unpack dispatch per ring slot (each bound to its slot's region of the staging ring, or
/// to the resident set and the slot's indices), writing the batch into the table's `x`.
fn unpack_dispatches(t: &Table, ring: usize, source: Source, rows: usize) -> Vec<Dispatch> {
    let (name, pipeline) = t.unpack();
    let b: &Buffers = t.b;
    let (r, pix) = (rows as u32, PIXELS as u32);
    let params = crate::abi::UnpackParams {
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
            let res = [pixels, labels, indices, whole(t.x), whole(&b.batch_labels)];
            Dispatch::new(
                t.d,
                name,
                pipeline,
                &res,
                &params,
                groups_1d(r * WORDS_PER_IMAGE),
            )
            // Reads the u8 pixels and labels, writes the pixels as values and u32 labels.
            .work(
                "unpack",
                0.0,
                (r * pix + t.value_bytes * r * pix + 8 * r) as f64,
            )
        })
        .collect()
}

/// The mirror copies a step of `pass` needs, for the products whose picks read textures: x
/// and W1 before the hidden layer's product (dispatch 0), and in training x, δ1 and (for the
/// fused update's old values) W1 before ∂W1 = δ1ᵀ·x (dispatch `hidden_grad_at`; x and W1 are
/// still there from the first copies, W1 unchanged since).
fn mirror_copies(t: &Table, pass: Pass, rows: usize, hidden_grad_at: usize) -> Vec<MirrorCopy> {
    let Some(mirrors) = t.b.mirrors.as_ref() else {
        return Vec::new();
    };
    let sites: &[(Site, usize)] = match pass {
        Pass::Eval => &[(Site::Hidden, 0)],
        _ => &[(Site::Hidden, 0), (Site::GradW1, hidden_grad_at)],
    };
    let mut needed: Vec<(Mirrored, usize)> = Vec::new();
    for &(site, before) in sites {
        let mut reads = t.k.matmul[site as usize].0.textures;
        if pass == Pass::Gradient {
            // beta 0: C's old values are not read, so its mirror needs no copy.
            reads[2] = false;
        }
        for (read, which) in reads.into_iter().zip(site.mirrored()) {
            match which {
                Some(w) if read && !needed.iter().any(|n| n.0 == w) => needed.push((w, before)),
                _ => {}
            }
        }
    }
    let hidden = t.b.hidden;
    needed
        .into_iter()
        .map(|(w, before)| {
            let (buffer, offset, floats) = match w {
                Mirrored::X => (t.x, 0, rows * PIXELS),
                Mirrored::W1 => {
                    let (params, offset) = t.param_buffer(0);
                    (params, offset, hidden * PIXELS)
                }
                Mirrored::Delta1 => (t.dh, 0, rows * hidden),
            };
            MirrorCopy {
                mirror: mirrors
                    .get(w)
                    .expect("made for the picks that read it")
                    .clone(),
                buffer: buffer.clone(),
                offset,
                floats,
                before,
            }
        })
        .collect()
}

impl Plan {
    /// Builds the dispatches of one step for `key.rows` examples on the kernels and buffers of
    /// table `t` (f32 or f16), one unpack per slot of a `ring`-slot staging ring, holding the
    /// step values `v` to start with. The step, in the chapter's order, in five dispatches
    /// (an evaluation: the first three):
    /// ```text
    /// unpack    x  = u8 / 255
    /// hidden    h  = ReLU(x·W1ᵀ + b1)             (or its K-slices, which head adds up)
    /// head      z = h·W2ᵀ + b2;  p = SoftMax(z), loss, accuracy;  δ2 = (p − onehot) / divisor · scale
    /// backward  δ1 = (δ2·W2) ⊙ ReLU′;  ∂W2 = δ2ᵀ·h, ∂b2 = Σδ2, ∂b1 = Σδ1
    /// ∂W1       ∂W1 = δ1ᵀ·x                                                (Pass::Gradient)
    ///   or, fused into the weights:  W2 −= lr·∂W2, ..., W1 −= lr·δ1ᵀ·x     (Pass::Train, f32)
    /// ```
    pub(in crate::gpu) fn new(t: &Table, ring: usize, key: PlanKey, v: StepValues) -> Plan {
        let PlanKey { rows, pass, source } = key;
        assert!(
            !(t.is_half() && pass == Pass::Train),
            "f16 steps through the gradient; it has no fused update"
        );
        let (r, hid) = (rows as u32, t.b.hidden as u32);
        let unpack = unpack_dispatches(t, ring, source, rows);
        // Forward, hidden layer: h = ReLU(x · W1ᵀ + b1), K = 784 (split into slices when faster).
        let splits = t.splits(Site::Hidden, rows, t.b.hidden, PIXELS);
        let p = Site::Hidden.params(r, hid, (1.0, 0.0), splits);
        let mut rest = vec![t.forward((t.x, t.dz, t.h), p)];
        // The output layer, SoftMax, loss, accuracy, and (training) δ2 with the two values a
        // plan rewrites between steps.
        let mut slots = Vec::new();
        if pass != Pass::Eval {
            slots.extend(head_slots(rest.len()));
        }
        rest.push(t.head(pass, r, (v.divisor, v.loss_scale), p.splits));
        if pass == Pass::Eval {
            let hidden_grad_at = rest.len();
            return Plan {
                unpack,
                copies: mirror_copies(t, pass, rows, hidden_grad_at),
                rest,
                hidden_grad_at,
                slots,
                values: v,
            };
        }
        // The gradients, written where the pass wants them: Gradient writes ∂loss/∂W into the
        // f32 gradient buffer (alpha 1, beta 0); Train adds −lr·∂loss/∂W straight into the
        // weights (alpha −lr, beta 1), so there the gradient never exists as a buffer.
        let (phase, ab, i) = match pass {
            Pass::Gradient => ("backward", (1.0, 0.0), 0),
            _ => ("update", (-v.lr, 1.0), 1),
        };
        if pass == Pass::Train {
            slots.extend(minus_lr_slots(rest.len()));
        }
        // δ1, and the output layer's gradient (and ∂b1): all ready after this dispatch, so it
        // can be all-reduced while the hidden layer's weight product runs.
        rest.push(t.backward(pass, r, ab));
        let hidden_grad_at = rest.len();
        // ∂W1 = δ1ᵀ · x (hidden × 784, summed over the batch's rows); `t.h` fills the
        // product's unused bias and mask bindings.
        let target = match pass {
            Pass::Gradient => t.b.grad_of(0),
            _ => t.b.param(0),
        };
        let p = Site::GradW1.params(r, hid, ab, 1);
        let res = [whole(t.dh), whole(t.x), whole(t.h), whole(t.h), target];
        rest.push(t.product(Site::GradW1, (phase, t.names.grad_w1[i]), res, p));
        Plan {
            unpack,
            copies: mirror_copies(t, pass, rows, hidden_grad_at),
            rest,
            hidden_grad_at,
            slots,
            values: v,
        }
    }

    /// Dispatches one step of this plan records: its unpack and the rest.
    pub(in crate::gpu) fn dispatches(&self) -> usize {
        1 + self.rest.len()
    }
}
