//! The two steps of a layer: the matmul (on AVX-512 and AVX2+FMA our packed-weight kernels
//! in `packed.rs`; elsewhere the `gemm` crate's portable code; single-threaded, the model
//! parallelises) and the output layer's bias (the hidden layers' epilogue is
//! [`crate::model`]'s `Layer::activate`). Also the AVX2 check the bf16 and int8 kernels share.

use smartmixed_core::activation::{detected_simd_level, SimdLevel};

/// The instruction set the matmul and GEMV kernels run on, detected at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512F (our packed-weight microkernel, our GEMV in 16 lanes).
    Avx512,
    /// AVX2 with FMA (our packed-weight microkernel, our GEMV in 8 lanes).
    Avx2Fma,
    /// Whatever the target has without run-time detection (SSE2 on x86_64, NEON on
    /// aarch64 through gemm's own detection).
    Portable,
}

impl Kernel {
    /// What this CPU runs: core's detected level (the activation loops use the same), with
    /// FMA required for the AVX2 kernels.
    pub fn detect() -> Self {
        match detected_simd_level() {
            SimdLevel::Avx512 => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 if std::is_x86_feature_detected!("fma") => Kernel::Avx2Fma,
            _ => Kernel::Portable,
        }
    }

    /// A short description for `inspect` and benchmark output.
    pub fn describe(self) -> &'static str {
        match self {
            Kernel::Avx512 => "AVX-512 (packed-weight 12x32 microkernel and GEMV)",
            Kernel::Avx2Fma => "AVX2+FMA (packed-weight 6x16 microkernel and GEMV)",
            Kernel::Portable => "portable (gemm 0.19 fallback, scalar GEMV)",
        }
    }
}

/// `dst[m, n] = lhs[m, k] * rhs[k, n]`, all row-major and contiguous.
pub fn matmul(lhs: &[f32], rhs: &[f32], dst: &mut [f32], m: usize, k: usize, n: usize) {
    let fits = |len: usize, a: usize, b: usize| a.checked_mul(b).is_some_and(|p| len >= p);
    assert!(
        fits(lhs.len(), m, k) && fits(rhs.len(), k, n) && fits(dst.len(), m, n),
        "matmul sizes"
    );
    // SAFETY: the three slices hold at least the m*k, k*n and m*n elements addressed by the
    // strides below (asserted above with checked products, so no product wrapped), and dst
    // does not alias lhs or rhs (&mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Whether the CPU has AVX2 (the bf16 and int8 AVX2 kernels need nothing more).
pub(crate) fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows below this count use [`gemv`] instead of the blocked matmul: batch 1 only. From
/// two rows one pass over the weights beats a GEMV per row, zero skipping and all (batches
/// 2 and 3 ran 1.4-1.7x faster through the matmul on one thread, and 1.0-1.4x on two).
pub const GEMV_ROWS: usize = 2;

/// `y[n] = x[k] * wt[k, n]` for one row: an axpy per input that skips zero inputs, so the
/// weight rows of zero pixels and of inactive ReLU neurons are never read (latency at
/// batch 1 is bound by reading the weights). Only CPUs without AVX2+FMA run it: the others
/// hold packed weights and run the packed GEMV.
pub fn gemv(x: &[f32], wt: &[f32], y: &mut [f32], k: usize, n: usize) {
    let (x, y) = (&x[..k], &mut y[..n]);
    y.fill(0.0);
    for (xv, row) in x.iter().zip(wt.chunks_exact(n)) {
        if *xv == 0.0 {
            continue;
        }
        for (yv, w) in y.iter_mut().zip(row) {
            *yv += xv * w;
        }
    }
}
/// `dst = lhs * rhs` choosing [`gemv`] per row for tiny batches.
pub fn layer_matmul(lhs: &[f32], rhs: &[f32], dst: &mut [f32], m: usize, k: usize, n: usize) {
    if m < GEMV_ROWS {
        for (x, y) in lhs.chunks_exact(k).zip(dst.chunks_exact_mut(n)).take(m) {
            gemv(x, rhs, y, k, n);
        }
    } else {
        matmul(lhs, rhs, dst, m, k, n);
    }
}

/// `out += bias` on every row (the output layer, whose activation is the identity).
pub fn add_bias(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The non-packed kernels (gemm's matmul, which picks this CPU's level itself, and the
    /// plain GEMV) with inputs, weights and
    /// outputs ending, then starting, at a guard page (see `packed::tests::Guarded`), over
    /// 1..=13 rows, 1..=40 columns and odd input counts: nothing is touched outside them,
    /// and each result is the plain sum.
    #[cfg(unix)]
    #[test]
    fn matmul_and_gemv_touch_nothing_past_their_slices() {
        use crate::packed::tests::{sizes, Guarded};
        let columns: Vec<usize> = (1..=40).collect();
        for k in sizes([1, 3, 37], [1, 37]) {
            for &n in if cfg!(miri) {
                &[1, 16, 17, 33][..]
            } else {
                &columns
            } {
                let wt: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
                let a: Vec<f32> = (0..13 * k).map(|i| (i as f32 * 0.37).sin()).collect();
                for at_end in [true, false] {
                    let mut w = Guarded::new(&wt, at_end);
                    let w = w.slice();
                    for m in sizes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [1, 2, 13]) {
                        let mut lhs = Guarded::new(&a[..m * k], at_end);
                        let mut dst = Guarded::new(&vec![f32::NAN; m * n], at_end);
                        matmul(lhs.slice(), w, dst.slice(), m, k, n);
                        let x = &lhs.slice()[(m - 1) * k..];
                        let want: Vec<f32> = (0..n)
                            .map(|j| {
                                (0..k)
                                    .map(|kk| x[kk] as f64 * w[kk * n + j] as f64)
                                    .sum::<f64>() as f32
                            })
                            .collect();
                        let row = &dst.slice()[(m - 1) * n..];
                        let mut y = Guarded::new(&vec![f32::NAN; n], at_end);
                        gemv(x, w, y.slice(), k, n);
                        for (g, w) in row.iter().chain(y.slice().iter()).zip(want.iter().cycle()) {
                            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{k}x{n}");
                        }
                    }
                }
            }
        }
    }
}
