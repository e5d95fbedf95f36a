//! The epilogue of bf16 and int8 layers for four built-in activations (sigmoid, tanh, elu,
//! selu) in AVX-512 code written for speed, not for the f32 path's bits: fused
//! multiply-adds in `exp`'s polynomials and `vrcp14ps` with one Newton step in place of a
//! division, whole vectors with a masked tail. A reduced-precision layer rounds its
//! activations to bf16 (8 significant bits) or quantises them to 8 bits, so the f32 path's
//! exact bits buy nothing there; these forms ran the activations in half the time (they
//! were 25-30% of a bf16 pass on AMX). Each is the same function as the exact one to
//! within `2^-20 |f(x)| + 2^-21` (derived below, tested on a dense grid), a 2^11 times
//! finer error than bf16's rounding. Other activations (relu, leaky_relu: exact and cheap
//! already; plug-ins) keep their registered slice forms.
//!
//! The bound: the exact `exp` and this one evaluate the same polynomial, with and without
//! fused adds, each within 2 ulp of `e^x` (the exact one's tests hold it to 4e-7
//! relative); the reciprocal after a Newton step is within 1 ulp of `1 / d` (`vrcp14ps` is
//! within 2^-14, one step squares that to 2^-28, plus the step's own rounding), so a
//! quotient differs by at most about 4 ulp = 2^-21 relative, under the 2^-20 stated. `expm1`
//! as `exp(x) - 1` (for |x| >= 0.05) inherits `exp`'s absolute error, at most 2 ulp of
//! values below 1 (x < 0) = 2^-22, under the 2^-21 stated; the Taylor branch near zero is
//! the same five multiply-adds, fused.

use smartmixed_core::activation::Activation;
use smartmixed_core::builtin::{ELU_ALPHA, SELU_ALPHA, SELU_SCALE};

/// An activation with a fast form here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fast {
    Sigmoid,
    Tanh,
    Elu,
    Selu,
}

impl Fast {
    /// The fast form of `activation`, where it has one and this CPU runs it (AVX-512F).
    /// Plug-in activations named like a built-in are recognised by their module too.
    pub(crate) fn of(activation: &Activation) -> Option<Fast> {
        if !available() || activation.origin != BUILTIN_MODULE {
            return None;
        }
        match activation.name {
            "sigmoid" => Some(Fast::Sigmoid),
            "tanh" => Some(Fast::Tanh),
            "elu" => Some(Fast::Elu),
            "selu" => Some(Fast::Selu),
            _ => None,
        }
    }

    /// `out[i] = f(pre[i] + bias[i])` over the shortest of the three.
    #[cfg(test)]
    pub(crate) fn apply(self, pre: &[f32], bias: &[f32], out: &mut [f32]) {
        let len = out.len().min(pre.len()).min(bias.len());
        let span = Span {
            pre: pre.as_ptr(),
            ps: len,
            bias: bias.as_ptr(),
            out: out.as_mut_ptr(),
            os: len,
            rows: 1,
            len,
        };
        // SAFETY: all three hold `len` values; `out` is borrowed mutably.
        unsafe { self.apply_rows(span) }
    }

    /// `f(pre + bias)` on every row of `span`, in one call (a call per row and block cost
    /// about 10 ns, a tenth of a bf16 pass on AMX).
    ///
    /// # Safety
    /// `span`'s pointers must be valid for its rows (`len` values each, rows `ps` and `os`
    /// apart; `bias` the same `len` values for every row), its output rows written by no
    /// other thread meanwhile.
    pub(crate) unsafe fn apply_rows(self, span: Span) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a `Fast` exists only where `available()`; the rest is the caller's.
        avx512::apply(self, span);
        #[cfg(not(target_arch = "x86_64"))]
        let _ = span;
    }
}

/// `rows` rows of `len` values: `out[r][i] = f(pre[r][i] + bias[i])`, rows `ps` apart in
/// `pre` and `os` apart in `out`.
#[derive(Clone, Copy)]
pub(crate) struct Span {
    pub(crate) pre: *const f32,
    pub(crate) ps: usize,
    pub(crate) bias: *const f32,
    pub(crate) out: *mut f32,
    pub(crate) os: usize,
    pub(crate) rows: usize,
    pub(crate) len: usize,
}

/// The module the built-in activations are registered from (`Activation::origin`).
const BUILTIN_MODULE: &str = "smartmixed_core::builtin";

fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Fast, Span, ELU_ALPHA, SELU_ALPHA, SELU_SCALE};

    /// [`Fast::apply_rows`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `Fast::apply_rows`'s contract.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn apply(f: Fast, s: Span) {
        match f {
            Fast::Sigmoid => rows(s, |x| sigmoid(x)),
            Fast::Tanh => rows(s, |x| tanh(x)),
            Fast::Elu => rows(s, |x| elu(x, 1.0, ELU_ALPHA)),
            Fast::Selu => rows(s, |x| elu(x, SELU_SCALE, SELU_SCALE * SELU_ALPHA)),
        }
    }

    #[inline(always)]
    unsafe fn rows(s: Span, f: impl Fn(__m512) -> __m512) {
        for r in 0..s.rows {
            lanes(s.pre.add(r * s.ps), s.bias, s.out.add(r * s.os), s.len, &f);
        }
    }

    /// `out = f(pre + bias)`, 16 values a step, the tail masked.
    #[inline(always)]
    unsafe fn lanes(
        pre: *const f32,
        bias: *const f32,
        out: *mut f32,
        len: usize,
        f: &impl Fn(__m512) -> __m512,
    ) {
        let mut i = 0;
        while i + 16 <= len {
            let x = _mm512_add_ps(_mm512_loadu_ps(pre.add(i)), _mm512_loadu_ps(bias.add(i)));
            _mm512_storeu_ps(out.add(i), f(x));
            i += 16;
        }
        if i < len {
            let m = ((1u32 << (len - i)) - 1) as __mmask16;
            let x = _mm512_add_ps(
                _mm512_maskz_loadu_ps(m, pre.add(i)),
                _mm512_maskz_loadu_ps(m, bias.add(i)),
            );
            _mm512_mask_storeu_ps(out.add(i), m, f(x));
        }
    }

    #[inline(always)]
    fn splat(v: f32) -> __m512 {
        // SAFETY: AVX-512F, enabled in every caller.
        unsafe { _mm512_set1_ps(v) }
    }

    /// `e^x` as `smartmixed_core::math::exp` computes it (Cephes' range reduction and
    /// polynomial, inputs clamped to [-87, 88]), with fused multiply-adds.
    #[inline(always)]
    unsafe fn exp(x: __m512) -> __m512 {
        const ROUND_MAGIC: f32 = 12_582_912.0;
        let x = _mm512_min_ps(_mm512_max_ps(x, splat(-87.0)), splat(88.0));
        let t = _mm512_fmadd_ps(x, splat(std::f32::consts::LOG2_E), splat(ROUND_MAGIC));
        let n = _mm512_sub_ps(t, splat(ROUND_MAGIC));
        let r = _mm512_fnmadd_ps(n, splat(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, splat(-2.121_944_4e-4), r);
        let mut p = splat(1.987_569_1e-4);
        for c in [
            1.398_2e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, splat(c));
        }
        let y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, splat(1.0)));
        let scale = _mm512_add_epi32(
            _mm512_slli_epi32::<23>(_mm512_castps_si512(t)),
            _mm512_set1_epi32(127 << 23),
        );
        _mm512_mul_ps(y, _mm512_castsi512_ps(scale))
    }

    /// `1 / d`: `vrcp14ps` and one Newton step.
    #[inline(always)]
    unsafe fn recip(d: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(d);
        _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, splat(2.0)))
    }

    #[inline(always)]
    unsafe fn sigmoid(x: __m512) -> __m512 {
        let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
        recip(_mm512_add_ps(e, splat(1.0)))
    }

    /// Eigen's rational tanh as `smartmixed_core::math::tanh` (13/6, saturating past
    /// 7.9, `x` itself below 4e-4).
    #[inline(always)]
    unsafe fn tanh(x: __m512) -> __m512 {
        let c = _mm512_min_ps(_mm512_max_ps(x, splat(-7.905_311)), splat(7.905_311));
        let x2 = _mm512_mul_ps(c, c);
        let mut p = splat(-2.760_768_5e-16);
        for k in [
            2.000_188e-13,
            -8.604_672e-11,
            5.122_297e-8,
            1.485_722_4e-5,
            6.372_619_3e-4,
        ] {
            p = _mm512_fmadd_ps(p, x2, splat(k));
        }
        let p = _mm512_mul_ps(_mm512_fmadd_ps(p, x2, splat(4.893_524_6e-3)), c);
        let mut q = splat(1.198_258_4e-6);
        for k in [1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3] {
            q = _mm512_fmadd_ps(q, x2, splat(k));
        }
        let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(x), splat(4e-4));
        _mm512_mask_blend_ps(tiny, _mm512_mul_ps(p, recip(q)), x)
    }

    /// `scale * x` for `x > 0`, else `alpha * expm1(x)` (elu: scale 1; selu: its two
    /// constants, `alpha` the product), `expm1` by Taylor below 0.05 in magnitude as
    /// `smartmixed_core::math::expm1`.
    #[inline(always)]
    unsafe fn elu(x: __m512, scale: f32, alpha: f32) -> __m512 {
        let mut s = splat(1.0 / 120.0);
        for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0] {
            s = _mm512_fmadd_ps(s, x, splat(c));
        }
        let small = _mm512_mul_ps(s, x);
        let big = _mm512_sub_ps(exp(x), splat(1.0));
        let near = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(x), splat(0.05));
        let em1 = _mm512_mask_blend_ps(near, big, small);
        let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_setzero_ps());
        _mm512_mask_blend_ps(
            positive,
            _mm512_mul_ps(splat(alpha), em1),
            _mm512_mul_ps(splat(scale), x),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each fast form against the registered exact one on a dense grid over [-100, 100]
    /// (every 2^-10 near zero, wider steps out to the clamps), biases included and the
    /// masked tails of every length: within `2^-20 |f(x)| + 2^-21`.
    #[test]
    fn fast_forms_are_within_the_stated_bound_of_the_exact_ones() {
        let grid: Vec<f32> = (-20_000..=20_000)
            .map(|i| i as f32 / 1024.0)
            .chain((-1000..=1000).map(|i| i as f32 / 10.0))
            .chain([0.0, -0.0, 4e-4, -4e-4, 0.05, -0.05, 7.905_311, -87.5, 88.5])
            .collect();
        let mut checked = 0;
        for name in ["sigmoid", "tanh", "elu", "selu"] {
            let exact = smartmixed_core::lookup(name).unwrap();
            let Some(fast) = Fast::of(exact) else {
                return; // no AVX-512F here: nothing runs the fast forms
            };
            for len in [grid.len(), 1, 15, 17, 33] {
                let pre = &grid[..len];
                let bias: Vec<f32> = (0..len).map(|i| (i % 3) as f32 * 0.125).collect();
                let mut got = vec![f32::NAN; len + 1];
                fast.apply(pre, &bias, &mut got[..len]);
                assert!(got[len].is_nan(), "{name}: wrote past the slice");
                for i in 0..len {
                    let want = (exact.forward)(pre[i] + bias[i]);
                    let bound = 2f32.powi(-20) * want.abs() + 2f32.powi(-21);
                    assert!(
                        (got[i] - want).abs() <= bound,
                        "{name}({}) = {}, exact {want}",
                        pre[i] + bias[i],
                        got[i]
                    );
                }
                checked += 1;
            }
        }
        assert!(checked == 0 || checked == 20);
    }

    /// Only the four built-ins have fast forms; relu and a plug-in keep theirs.
    #[test]
    fn only_built_ins_have_fast_forms() {
        let relu = smartmixed_core::lookup("relu").unwrap();
        assert_eq!(Fast::of(relu), None);
        let sigmoid = smartmixed_core::lookup("sigmoid").unwrap();
        assert_eq!(Fast::of(sigmoid).is_some(), available());
    }
}
