//! Checks for activation authors: the derivative against central finite differences and
//! the slice forms against the scalar forms. The built-ins and the plugin crate run them;
//! a crate adding its own activation calls them from its tests:
//!
//! ```
//! smartmixed_core::register_activation!(
//!     "softsign_doc",
//!     forward: |x| x / (1.0 + x.abs()),
//!     derivative: |x, _y| 1.0 / ((1.0 + x.abs()) * (1.0 + x.abs())),
//! );
//! let act = smartmixed_core::lookup("softsign_doc").unwrap();
//! smartmixed_core::testing::check_derivative(act, &[-2.0, -0.5, 0.5, 2.0], 2e-3).unwrap();
//! smartmixed_core::testing::check_slices_match_scalar(act).unwrap();
//! ```

use crate::Activation;

/// Compares `derivative(x, forward(x))` with `(f(x + h) - f(x - h)) / 2h` (h = 1e-3) at
/// every `x` (keep them away from kinks); the first disagreement beyond `tol` is the error.
pub fn check_derivative(act: &Activation, xs: &[f32], tol: f32) -> Result<(), String> {
    let h = 1e-3f32;
    for &x in xs {
        let fd = ((act.forward)(x + h) - (act.forward)(x - h)) / (2.0 * h);
        let an = (act.derivative)(x, (act.forward)(x));
        // A NaN on either side fails too.
        let close = (fd - an).abs() < tol;
        if !close {
            return Err(format!(
                "{}'({x}): finite differences {fd}, derivative {an}",
                act.name
            ));
        }
    }
    Ok(())
}

/// Checks that `apply` and `apply_with_derivative` give, bit for bit, the scalar forms'
/// values at `pre + bias` over a grid from -14.8 to 14.4 with varied biases.
pub fn check_slices_match_scalar(act: &Activation) -> Result<(), String> {
    let xs: Vec<f32> = (-40..40).map(|i| i as f32 * 0.37).collect();
    let bias: Vec<f32> = (0..xs.len()).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut ys = vec![0.0; xs.len()];
    (act.apply)(&xs, &bias, &mut ys);
    let (mut ys2, mut ds) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
    (act.apply_with_derivative)(&xs, &bias, &mut ys2, &mut ds);
    for i in 0..xs.len() {
        let x = xs[i] + bias[i];
        let y = (act.forward)(x);
        let d = (act.derivative)(x, y);
        if ys[i].to_bits() != y.to_bits()
            || ys2[i].to_bits() != y.to_bits()
            || ds[i].to_bits() != d.to_bits()
        {
            return Err(format!(
                "{} at {x}: slices give {} / {} (derivative {}), scalars {y} (derivative {d})",
                act.name, ys[i], ys2[i], ds[i]
            ));
        }
    }
    Ok(())
}
