//! The loss scaling FP16 needs (the number format itself is [`crate::engine::Precision`]).

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
