//! The engine contract: what the CPU and every GPU replica offer the training loop, and nothing
//! more. It sits below the loop (`cpu/` and `gpu/` implement it without knowing the loop; the
//! loop, the replicas and the benchmarks use it):
//!
//! ```text
//! step(batch, Target::Gradient)   forward + backward: ∂loss/∂w into a flat gradient    (verb 1)
//! read_gradient / write_gradient  the gradient out to the all-reduce and its sum back   (verb 2)
//! apply_update(lr)                w −= lr·g                                             (verb 3)
//! step(batch, Target::Update)     all three fused, for one replica alone: no gradient buffer
//! evaluate, model, set_model      scoring, snapshots, resuming
//! take_counters                   loss/accuracy totals, bytes moved, the GPU's own timing
//! ```
//! The number format ([`Precision`]) is fixed when an engine is built, not passed per step.

use crate::data::Dataset;
use crate::error::Result;
use crate::model::Model;
use std::ops::Range;

/// The number format the network computes in, chosen when an engine is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Everything in FP32.
    #[default]
    F32,
    /// Mixed precision: inputs, activations, error terms and a working copy of the weights in
    /// FP16, products accumulated in FP32, FP32 master weights and gradients, dynamic loss
    /// scaling (PyTorch AMP's recipe).
    F16,
}

/// The test pass's batch (at least): it is forward only, so a batch larger than training's
/// means fewer, larger dispatches for the same arithmetic (on lavapipe the test pass of 10,000
/// images took 0.44-0.63 s at batch 64).
pub const EVAL_BATCH: usize = 256;

/// Where a step's weight products go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Into the weights, `w −= lr·∂w` as the products are made: the fused step of one replica
    /// alone (FP32 only: mixed precision must look at the gradient before applying it).
    Update { lr: f32 },
    /// Into the engine's flat gradient ([`ParamLayout::packed`](crate::model::ParamLayout::packed)
    /// order): the gradient of the mean loss over a global batch of `global_rows` examples (of
    /// which this batch is one replica's part), multiplied by `loss_scale` (1 in FP32). The
    /// weights do not change.
    Gradient { global_rows: usize, loss_scale: f32 },
}

/// Loss and accuracy counts accumulated over some examples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Sum over the examples of −ln p[true class].
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
}

impl Totals {
    pub fn add(&mut self, loss_sum: f64, correct: u64, seen: u64) {
        self.loss_sum += loss_sum;
        self.correct += correct;
        self.seen += seen;
    }
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }
    /// Accuracy in percent.
    pub fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.seen.max(1) as f64
    }
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.add(o.loss_sum, o.correct, o.seen);
    }
}

/// A pass as the GPU timed it with its own timestamp queries, placed on the host's clock.
/// The two clocks share no origin, so the engine anchors the step's first timestamp at the
/// host's instant just before it submitted the step: the GPU cannot have started earlier, so a
/// span is drawn at the earliest it can have run, and never ends after the work that waited
/// for it began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpan {
    pub what: &'static str,
    pub start: std::time::Instant,
    pub dur: std::time::Duration,
}

/// What an engine counted since the last [`Engine::take_counters`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Loss and accuracy of the training steps (a GPU engine waits for the device here).
    pub totals: Totals,
    /// Bytes of training data copied from RAM into device memory; `None` for an engine that
    /// computes where the data already is (the CPU).
    pub staged_bytes: Option<u64>,
    /// Bytes read back from device memory into RAM; `None` for the CPU.
    pub readback_bytes: Option<u64>,
    /// Read-backs from device memory (each one a wait for the device); `None` for the CPU.
    pub readbacks: Option<u64>,
    /// The GPU's own timing of the gradient steps since the last take (the last
    /// gpu/engine/timer.rs's SLOTS of them), where the adapter has timestamp queries.
    pub gpu_spans: Vec<GpuSpan>,
}

impl Counters {
    /// Adds `o` to these counts (and its spans to these).
    pub fn merge(&mut self, o: Counters) {
        self.totals += o.totals;
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.staged_bytes = sum(self.staged_bytes, o.staged_bytes);
        self.readback_bytes = sum(self.readback_bytes, o.readback_bytes);
        self.readbacks = sum(self.readbacks, o.readbacks);
        self.gpu_spans.extend(o.gpu_spans);
    }
}

/// What performs the steps: the CPU or one GPU. Its `Display` is one line naming it (and the
/// adapter, for a GPU).
pub trait Engine: std::fmt::Display {
    /// Forward and backward on the examples of `data` at the indices `batch` (possibly none:
    /// a replica left without examples contributes a zero gradient), the weight products going
    /// where `target` says. A GPU engine only records the work; nothing waits for the device.
    /// A resident GPU engine uploads `data` the first time it meets it.
    fn step(&mut self, data: &Dataset, batch: &[u32], target: Target) -> Result<()>;
    /// Copies gradient elements `range` (packed indices) into `out`, waiting only for the work
    /// that produces them.
    fn read_gradient(&mut self, range: Range<usize>, out: &mut [f32]) -> Result<()>;
    /// Replaces the whole gradient (packed layout) with `grad`: the all-reduced sum.
    fn write_gradient(&mut self, grad: &[f32]) -> Result<()>;
    /// `w −= lr·g` for every parameter.
    fn apply_update(&mut self, lr: f32) -> Result<()>;
    /// Loss and accuracy of the current weights on `data`, forward only.
    fn evaluate(&mut self, data: &Dataset, batch_size: usize) -> Result<Totals>;
    /// The current weights (a read-back, for a GPU).
    fn model(&mut self) -> Result<Model>;
    /// Replaces the weights (to resume from a snapshot).
    fn set_model(&mut self, model: &Model) -> Result<()>;
    /// What was counted since the last call (the one place a GPU engine waits for the device
    /// during training).
    fn take_counters(&mut self) -> Result<Counters>;
    /// Short lines the start-up prints under the engine's line (what the user should know:
    /// "--cpu trains faster here").
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Lines `-v` (or `RUST_LOG=info`) prints: the driver, the kernels picked and how.
    fn details(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Dynamic loss scaling, as PyTorch's GradScaler does it: the loss (so every gradient) is
/// multiplied by `scale` so that small FP16 error terms do not round to zero; a step whose
/// gradients overflowed (inf or NaN) is skipped and the scale halved; after `GROWTH_INTERVAL`
/// good steps in a row the scale doubles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    pub scale: f32,
    /// Good steps in a row since the scale last changed.
    pub good_steps: u32,
}

impl LossScaler {
    /// GradScaler's defaults: 2^16, doubled after 2,000 good steps.
    pub const INITIAL: f32 = 65536.0;
    pub const GROWTH_INTERVAL: u32 = 2000;
    /// The largest scale: 2^24. The scale only ever doubles from 2^16 or halves down to 1, so
    /// it is a power of two in [1, 2^24]; an f16 gradient times more than 2^24 overflows
    /// anyway (f16 holds up to 65,504), so a larger one would only skip steps.
    pub const MAX: f32 = 16_777_216.0;

    /// Whether `scale` is one a run can reach: a power of two from 1 to [`Self::MAX`].
    pub fn reachable(scale: f32) -> bool {
        (1.0..=Self::MAX).contains(&scale) && scale.to_bits() & 0x007f_ffff == 0
    }

    pub fn new(scale: f32) -> Self {
        LossScaler {
            scale,
            good_steps: 0,
        }
    }

    /// Looks at the summed, still scaled gradient: unscales it and returns true if every
    /// value is finite (apply it), else halves the scale and returns false (skip the step).
    pub fn unscale(&mut self, grad: &mut [f32]) -> bool {
        if grad.iter().any(|g| !g.is_finite()) {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            return false;
        }
        let inv = 1.0 / self.scale;
        for g in grad.iter_mut() {
            *g *= inv;
        }
        self.good_steps += 1;
        if self.good_steps == Self::GROWTH_INTERVAL {
            self.scale = (self.scale * 2.0).min(Self::MAX);
            self.good_steps = 0;
        }
        true
    }
}
