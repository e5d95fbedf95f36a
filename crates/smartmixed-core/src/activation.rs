//! The activation registry: named, stateless functions with their derivatives, collected
//! with `inventory` so that any linked crate can add one through [`register_activation!`].
//!
//! `inventory` gives no order, so pools, checkpoints and manifests always refer to
//! activations by name; a pool's order is the order the config lists.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::{Error, Result};

/// `out[i] = f(pre[i] + bias[i])`.
pub type ApplyFn = fn(pre: &[f32], bias: &[f32], out: &mut [f32]);
/// `out[i] = f(pre[i] + bias[i])` and `deriv[i] = f'(pre[i] + bias[i])`.
pub type ApplyWithDerivativeFn = fn(pre: &[f32], bias: &[f32], out: &mut [f32], deriv: &mut [f32]);

/// One activation function: a scalar form for reference and tests, and slice forms that
/// the macro generates from the same expressions so the compiler can vectorise them (the
/// training and inference kernels call only the slice forms).
///
/// The slice forms read `pre` and `bias` and write `out` (and `deriv`): the bias add is
/// fused into the same pass, and writing to a different slice than the one read keeps
/// the compiler from turning piecewise activations into masked stores, which are
/// microcoded and slow on AMD CPUs.
#[derive(Debug)]
pub struct Activation {
    /// The name used in configs, checkpoints and manifests.
    pub name: &'static str,
    /// `y = f(x)`.
    pub forward: fn(f32) -> f32,
    /// `f'(x)`, given `x` and `y = f(x)` (many derivatives are cheapest from `y`).
    pub derivative: fn(f32, f32) -> f32,
    /// `out[i] = f(pre[i] + bias[i])` over the shortest of the three slices.
    pub apply: ApplyFn,
    /// [`Activation::apply`] that also writes `deriv[i] = f'(pre[i] + bias[i])`.
    pub apply_with_derivative: ApplyWithDerivativeFn,
    /// The module that registered it (`module_path!()`), named when two crates register
    /// the same name.
    pub origin: &'static str,
}

impl Activation {
    /// Used by [`register_activation!`]; `const` so that it can sit in a static.
    pub const fn new(
        name: &'static str,
        forward: fn(f32) -> f32,
        derivative: fn(f32, f32) -> f32,
        apply: ApplyFn,
        apply_with_derivative: ApplyWithDerivativeFn,
        origin: &'static str,
    ) -> Self {
        Self {
            name,
            forward,
            derivative,
            apply,
            apply_with_derivative,
            origin,
        }
    }
}

inventory::collect!(Activation);

/// A contiguous block of a layer's neurons sharing one activation: the unit the trainer's
/// and the runtime's kernels work on (a manifest's `GroupManifest` names it in files, and
/// `manifest::check_partition` checks that a layer's blocks cover it).
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub activation: &'static Activation,
    pub start: usize,
    pub len: usize,
}

impl Block {
    /// The neurons of the block.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

/// `out = f(pre + bias)` over one row of a layer, each block with its activation.
pub fn apply_blocks(pre: &[f32], bias: &[f32], blocks: &[Block], out: &mut [f32]) {
    for b in blocks {
        let r = b.range();
        (b.activation.apply)(&pre[r.clone()], &bias[r.clone()], &mut out[r]);
    }
}

/// Registers an activation from any crate, without editing core:
///
/// ```
/// smartmixed_core::register_activation!(
///     "softsign",
///     forward: |x| x / (1.0 + x.abs()),
///     derivative: |x, _y| 1.0 / ((1.0 + x.abs()) * (1.0 + x.abs())),
/// );
/// assert_eq!((smartmixed_core::lookup("softsign").unwrap().forward)(1.0), 0.5);
/// ```
///
/// A binary sees a plugin's activations only if it links the plugin crate; where nothing
/// else names the crate, add `use the_plugin as _;`.
#[macro_export]
macro_rules! register_activation {
    ($name:literal, forward: |$x:ident| $fwd:expr, derivative: |$dx:ident, $dy:ident| $der:expr $(,)?) => {
        const _: () = {
            #[inline(always)]
            fn forward($x: f32) -> f32 {
                $fwd
            }
            #[inline(always)]
            #[allow(unused_variables)]
            fn derivative($dx: f32, $dy: f32) -> f32 {
                $der
            }
            #[inline(always)]
            fn apply_body(pre: &[f32], bias: &[f32], out: &mut [f32]) {
                for ((o, p), b) in out.iter_mut().zip(pre).zip(bias) {
                    *o = forward(p + b);
                }
            }
            #[inline(always)]
            fn apply_with_derivative_body(
                pre: &[f32],
                bias: &[f32],
                out: &mut [f32],
                deriv: &mut [f32],
            ) {
                for (((o, d), p), b) in out.iter_mut().zip(deriv.iter_mut()).zip(pre).zip(bias) {
                    let x = p + b;
                    let y = forward(x);
                    *o = y;
                    *d = derivative(x, y);
                }
            }
            // The same loops compiled for AVX-512 and AVX2, chosen at run time: results are
            // identical to the portable loops (no FMA contraction), only the vectors widen.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn apply_avx512(pre: &[f32], bias: &[f32], out: &mut [f32]) {
                apply_body(pre, bias, out)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn apply_with_derivative_avx512(
                pre: &[f32],
                bias: &[f32],
                out: &mut [f32],
                deriv: &mut [f32],
            ) {
                apply_with_derivative_body(pre, bias, out, deriv)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn apply_avx2(pre: &[f32], bias: &[f32], out: &mut [f32]) {
                apply_body(pre, bias, out)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn apply_with_derivative_avx2(
                pre: &[f32],
                bias: &[f32],
                out: &mut [f32],
                deriv: &mut [f32],
            ) {
                apply_with_derivative_body(pre, bias, out, deriv)
            }
            fn apply(pre: &[f32], bias: &[f32], out: &mut [f32]) {
                #[cfg(target_arch = "x86_64")]
                match $crate::activation::simd_level() {
                    // SAFETY: simd_level() reports only features the CPU has.
                    $crate::activation::SimdLevel::Avx512 => {
                        return unsafe { apply_avx512(pre, bias, out) }
                    }
                    $crate::activation::SimdLevel::Avx2 => {
                        return unsafe { apply_avx2(pre, bias, out) }
                    }
                    $crate::activation::SimdLevel::Portable => {}
                }
                apply_body(pre, bias, out)
            }
            fn apply_with_derivative(
                pre: &[f32],
                bias: &[f32],
                out: &mut [f32],
                deriv: &mut [f32],
            ) {
                #[cfg(target_arch = "x86_64")]
                match $crate::activation::simd_level() {
                    // SAFETY: simd_level() reports only features the CPU has.
                    $crate::activation::SimdLevel::Avx512 => {
                        return unsafe { apply_with_derivative_avx512(pre, bias, out, deriv) }
                    }
                    $crate::activation::SimdLevel::Avx2 => {
                        return unsafe { apply_with_derivative_avx2(pre, bias, out, deriv) }
                    }
                    $crate::activation::SimdLevel::Portable => {}
                }
                apply_with_derivative_body(pre, bias, out, deriv)
            }
            $crate::inventory::submit! {
                $crate::Activation::new(
                    $name,
                    forward,
                    derivative,
                    apply,
                    apply_with_derivative,
                    module_path!(),
                )
            }
        };
    };
}

/// The widest vector instructions the slice loops of [`register_activation!`] use, in
/// increasing width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    Portable,
    Avx2,
    Avx512,
}

impl SimdLevel {
    const ALL: [SimdLevel; 3] = [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512];
}

/// The widest level the loops may use (an index into `SimdLevel::ALL`); tests lower it to
/// compare every level the CPU has with the portable loops.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(2);

/// Caps the slice loops at `level` (`SimdLevel::Avx512`: no cap), whatever the CPU
/// supports beyond it. Results are the same at every level; this exists so tests can show
/// it.
pub fn set_max_simd_level(level: SimdLevel) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The widest level this CPU supports, detected at run time.
pub fn detected_simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return SimdLevel::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

/// Every level this CPU supports, narrowest first.
pub fn supported_simd_levels() -> Vec<SimdLevel> {
    let top = detected_simd_level();
    SimdLevel::ALL.into_iter().filter(|l| *l <= top).collect()
}

/// The instruction set the slice loops use: the detected level, capped by
/// [`set_max_simd_level`].
#[inline]
pub fn simd_level() -> SimdLevel {
    let cap = SimdLevel::ALL[(MAX_LEVEL.load(Ordering::Relaxed) as usize).min(2)];
    detected_simd_level().min(cap)
}

/// Every registered activation's name, sorted.
pub fn registered_names() -> Vec<&'static str> {
    let mut names: Vec<_> = inventory::iter::<Activation>
        .into_iter()
        .map(|a| a.name)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The activation registered under `name`; an error listing the registered names if none,
/// and an error naming both registrations if two linked crates chose the same name
/// (`inventory` gives no order, so picking one would depend on the link).
pub fn lookup(name: &str) -> Result<&'static Activation> {
    let mut found = inventory::iter::<Activation>
        .into_iter()
        .filter(|a| a.name == name);
    let first = found.next().ok_or_else(|| Error::UnknownActivation {
        name: name.to_string(),
        registered: registered_names(),
    })?;
    match found.next() {
        None => Ok(first),
        Some(second) => {
            let mut origins = [first.origin, second.origin];
            origins.sort_unstable();
            Err(Error::DuplicateActivation {
                name: name.to_string(),
                first: origins[0],
                second: origins[1],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    mod first {
        crate::register_activation!("twice_for_test", forward: |x| x, derivative: |_x, _y| 1.0);
    }
    mod second {
        crate::register_activation!("twice_for_test", forward: |x| -x, derivative: |_x, _y| -1.0);
    }

    #[test]
    fn a_name_registered_twice_is_an_error_naming_both() {
        let e = crate::lookup("twice_for_test").unwrap_err().to_string();
        assert!(
            e.contains("activation::tests::first") && e.contains("activation::tests::second"),
            "{e}"
        );
        assert!(crate::lookup("relu").is_ok());
    }
}
