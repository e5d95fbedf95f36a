//! Small numeric helpers shared by the built-in activations.

/// `exp(x) - 1`, accurate near zero (as PyTorch's `elu` and `selu` compute it).
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    x.exp_m1()
}
