//! What a plan is built for ([`PlanKey`]: the batch's rows, the [`Pass`], the [`Source`] of its
//! images) and the values a step may change inside it ([`StepValues`]): the words the engine and
//! the plan builder share.

/// Where a step's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(in crate::gpu) enum Source {
    Staged,
    Resident,
}

/// Which pass a plan records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(in crate::gpu) enum Pass {
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
pub(in crate::gpu) struct PlanKey {
    pub(in crate::gpu) rows: usize,
    pub(in crate::gpu) pass: Pass,
    pub(in crate::gpu) source: Source,
}

/// The values of a step that may change from one step to the next (a learning-rate schedule,
/// the loss scale, the last global batch of an epoch). They live in the params uniforms of the
/// plan's dispatches and are rewritten there (`queue.write_buffer`, wgpu's repeated_compute
/// way) before a step that needs others, so the plan itself is built once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(in crate::gpu) struct StepValues {
    /// The fused update's learning rate (Pass::Train; unused otherwise).
    pub(in crate::gpu) lr: f32,
    /// δ2 = (p − onehot)/divisor: the global batch (0 for evaluation).
    pub(in crate::gpu) divisor: u32,
    /// δ2 is multiplied by it: --precision f16's loss scale, 1 otherwise.
    pub(in crate::gpu) loss_scale: f32,
}

