//! Extra activations registered from outside `smartmixed-core`, through the public
//! [`smartmixed_core::register_activation!`] macro alone: proof that a crate can extend the
//! pool without any edit to core. Link it (`use smartmixed_activations_extra as _;`) and
//! `silu`, `mish` and `gelu_tanh` can appear in a config's pool.

use smartmixed_core::register_activation;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)` without overflow.
#[inline(always)]
fn softplus(x: f32) -> f32 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `sqrt(2 / pi)`, the constant of GELU's tanh approximation.
const GELU_K: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

register_activation!(
    "silu",
    forward: |x| x * sigmoid(x),
    derivative: |x, _y| {
        let s = sigmoid(x);
        s + x * s * (1.0 - s)
    },
);

register_activation!(
    "mish",
    forward: |x| x * softplus(x).tanh(),
    derivative: |x, _y| {
        let t = softplus(x).tanh();
        t + x * (1.0 - t * t) * sigmoid(x)
    },
);

register_activation!(
    "gelu_tanh",
    forward: |x| 0.5 * x * (1.0 + (GELU_K * (x + GELU_C * x * x * x)).tanh()),
    derivative: |x, _y| {
        let t = (GELU_K * (x + GELU_C * x * x * x)).tanh();
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * x * x)
    },
);

/// The names this crate registers.
pub const NAMES: [&str; 3] = ["silu", "mish", "gelu_tanh"];

#[cfg(test)]
mod tests {
    use smartmixed_core::lookup;

    #[test]
    fn registered_and_correct() {
        // Hand-computed: silu(1) = 1 / (1 + e^-1); mish(1) = tanh(ln(1 + e)); PyTorch's
        // gelu(1, approximate="tanh") = 0.8411920.
        // Relative: mish(-30) is about -2.8e-12, which an absolute 1e-6 would let 0 pass.
        let close = |n: &str, x: f32, want: f32| {
            let got = (lookup(n).unwrap().forward)(x);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs(),
                "{n}({x}) = {got}, want {want}"
            );
        };
        close("silu", 1.0, 0.731_058_6);
        close("mish", 1.0, 0.865_098_4);
        close("gelu_tanh", 1.0, 0.841_192);
        close("mish", -30.0, -2.807_287e-12);
    }

    #[test]
    fn derivatives_and_slice_forms_pass_core_checks() {
        for name in super::NAMES {
            let act = lookup(name).unwrap();
            let xs = [-4.0f32, -1.3, -0.2, 0.0, 0.4, 1.7, 5.0];
            smartmixed_core::testing::check_derivative(act, &xs, 2e-3).unwrap();
            smartmixed_core::testing::check_slices_match_scalar(act).unwrap();
        }
    }
}
