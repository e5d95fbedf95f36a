//! The f32 matmul against weights packed once, at load, into panels of 32 output columns,
//! with an AVX-512 and an AVX2+FMA microkernel and a portable one of the same arithmetic.
//! A general-purpose GEMM packs the weight matrix on every call (and `gemm` 0.19 allocates
//! on every call); at the batch sizes a service runs (32 rows) that packing costs as much
//! as the arithmetic, and it is what a model that never changes can skip.
//!
//! Layout: panel `p` holds, for every input `kk`, the 32 weights of output columns
//! `32 p .. 32 p + 32` (zero past the last column), so a microkernel reads each panel front
//! to back. Inputs are taken in blocks of [`KC`] so that a panel's block stays in L1 while
//! every row tile passes over it; rows in chunks of [`MC`], whose block of inputs stays in
//! L2 while every panel passes over it.
//!
//! Every kernel computes each output as the same sums: per block of `KC` inputs, fused
//! multiply-adds in input order from zero, the blocks' sums then added in order. So every
//! level gives the portable kernel's bits (tested), and a model's f32 results do not depend
//! on which of these CPUs runs it.

use crate::kernel::Kernel;

/// Output columns per panel (two 16-lane vectors, four 8-lane ones).
pub const NR: usize = 32;
/// Inputs per block: a panel's block is KC x 32 x 4 bytes = 32 KiB, L1-sized.
const KC: usize = 256;
/// Rows per chunk: a chunk's input block is MC x KC x 4 bytes = 128 KiB, L2-resident.
const MC: usize = 128;

/// `W^T` (`[inputs, outputs]`) packed into column panels, with the kernel that runs it.
#[derive(Debug)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    panels: Vec<f32>,
    kernel: Kernel,
}

impl PackedWeights {
    /// Packs `wt`, `[k, n]` row-major, for this CPU's best kernel. `None` if the buffer
    /// cannot be allocated.
    pub fn new(wt: &[f32], k: usize, n: usize) -> Option<Self> {
        Self::for_kernel(wt, k, n, Kernel::detect())
    }

    /// [`Self::new`] for `kernel`, which the CPU must run (the tests pack for each level).
    fn for_kernel(wt: &[f32], k: usize, n: usize, kernel: Kernel) -> Option<Self> {
        let count = n.div_ceil(NR).checked_mul(k)?.checked_mul(NR)?;
        let mut panels = Vec::new();
        panels.try_reserve_exact(count).ok()?;
        panels.resize(count, 0.0);
        for (p, panel) in panels.chunks_exact_mut((k * NR).max(1)).enumerate() {
            let cols = (p * NR)..n.min(p * NR + NR);
            for (kk, dst) in panel.chunks_exact_mut(NR).enumerate() {
                dst[..cols.len()].copy_from_slice(&wt[kk * n + cols.start..kk * n + cols.end]);
            }
        }
        Some(Self {
            k,
            n,
            panels,
            kernel,
        })
    }

    /// Panels of 32 output columns (the last may be partial).
    pub fn panels(&self) -> usize {
        self.n.div_ceil(NR)
    }

    /// `dst[m, n] = lhs[m, k] * W^T`, row-major.
    pub fn matmul(&self, lhs: &[f32], dst: &mut [f32], m: usize) {
        assert!(
            m.checked_mul(self.n).is_some_and(|s| dst.len() >= s),
            "packed matmul sizes"
        );
        // SAFETY: dst holds m * n values (asserted) and is borrowed mutably, so no other
        // thread touches any of its columns.
        unsafe { self.matmul_panels(lhs, dst.as_mut_ptr(), m, 0..self.panels()) }
    }

    /// Columns `32 * panels.start .. min(32 * panels.end, n)` of `dst[m, n] = lhs[m, k] *
    /// W^T`, on the kernel the weights were packed for.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `m * n` values, and no other thread may read or
    /// write those columns of it during the call.
    pub unsafe fn matmul_panels(
        &self,
        lhs: &[f32],
        dst: *mut f32,
        m: usize,
        panels: std::ops::Range<usize>,
    ) {
        assert!(
            m.checked_mul(self.k).is_some_and(|s| lhs.len() >= s) && panels.end <= self.panels(),
            "packed matmul sizes"
        );
        if self.k == 0 {
            for r in 0..m {
                for j in (panels.start * NR).min(self.n)..(panels.end * NR).min(self.n) {
                    *dst.add(r * self.n + j) = 0.0;
                }
            }
            return;
        }
        // SAFETY (each arm): the kernel was chosen by `Kernel::detect` or, in tests, among
        // the levels the CPU has; lhs holds m * k values (asserted) and the caller vouches
        // for dst's m * n values and these columns.
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => matmul_with::<avx512::Tiles>(lhs.as_ptr(), self, dst, m, panels),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => matmul_with::<avx2::Tiles>(lhs.as_ptr(), self, dst, m, panels),
            _ => matmul_with::<Portable>(lhs.as_ptr(), self, dst, m, panels),
        }
    }

    /// Columns of panels `panels` of one row's `y[n] = x[k] * W^T`, skipping zero inputs
    /// (the weights of zero pixels and inactive ReLU neurons are never read: batch-1
    /// latency is bound by reading weights). A thread's panels are one stretch of memory,
    /// so threads splitting a row by panels never pull each other's weights into their
    /// caches (splitting rows of `W^T` by columns ran no faster on two threads than one).
    /// Every level sums each column in input order with fused multiply-adds: the same bits.
    ///
    /// # Safety
    /// `y` must be valid for writes of `n` values, and no other thread may read or write
    /// those columns of it during the call.
    pub unsafe fn gemv_panels(&self, x: &[f32], y: *mut f32, panels: std::ops::Range<usize>) {
        assert!(
            x.len() >= self.k && panels.end <= self.panels(),
            "packed gemv sizes"
        );
        // SAFETY (each arm): as in matmul_panels; x holds k values (asserted).
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::gemv(x, self, y, panels),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => avx2::gemv(x, self, y, panels),
            _ => self.gemv_portable(x, y, panels),
        }
    }

    /// [`Self::gemv_panels`] in portable code: per column, the products in input order.
    ///
    /// # Safety
    /// As [`Self::gemv_panels`].
    unsafe fn gemv_portable(&self, x: &[f32], y: *mut f32, panels: std::ops::Range<usize>) {
        let k = self.k;
        for p in panels {
            let panel = &self.panels[p * k * NR..(p + 1) * k * NR];
            let mut acc = [0.0f32; NR];
            for (xv, w) in x[..k].iter().zip(panel.chunks_exact(NR)) {
                if *xv != 0.0 {
                    for (a, w) in acc.iter_mut().zip(w) {
                        *a = xv.mul_add(*w, *a);
                    }
                }
            }
            let col = p * NR;
            for (j, a) in acc.iter().enumerate().take(NR.min(self.n - col)) {
                *y.add(col + j) = *a;
            }
        }
    }
}

/// One level's microkernel: `c[rows, cols] (+)= a[rows, kc] * b[kc, 32]`, for `a` rows `lda`
/// apart, `b` a panel's block, `c` rows `ldc` apart; columns past `cols` neither read nor
/// written; each output the fused multiply-adds of its `kc` products in order from zero,
/// then added to `c` if `accumulate`.
trait Microkernel {
    /// The most rows of one tile.
    const MR: usize;

    /// # Safety
    /// The CPU has the level's instructions; `rows` is 1 to `MR`, `cols` 1 to 32, `kc` at
    /// least 1; `a` is valid for reads of `rows` rows of `kc` values, `b` of `kc * 32`
    /// values, `c` for reads and writes of `rows` rows of `cols` values.
    unsafe fn tile(rows: usize, args: TileArgs);
}

/// A tile's operands but its row count: `(a, lda, b, kc, c, ldc, cols, accumulate)` (see
/// [`Microkernel`]); the SIMD levels pass them on to a tile of a constant row count.
type TileArgs = (
    *const f32,
    usize,
    *const f32,
    usize,
    *mut f32,
    usize,
    usize,
    bool,
);

/// See [`PackedWeights::matmul_panels`] (`k > 0`; the caller checked the sizes and the CPU).
/// Rows in chunks of MC, so that a chunk's block of inputs stays in L2 while every panel
/// passes over it (without it, batch 4096 ran at 60% of gemm's speed on AVX-512).
unsafe fn matmul_with<K: Microkernel>(
    a: *const f32,
    w: &PackedWeights,
    c: *mut f32,
    m: usize,
    panels: std::ops::Range<usize>,
) {
    let (k, n) = (w.k, w.n);
    for m0 in (0..m).step_by(MC) {
        let rows = MC.min(m - m0);
        block_rows::<K>(a.add(m0 * k), w, c.add(m0 * n), rows, panels.clone());
    }
}

/// [`matmul_with`] on `m` rows (one MC chunk).
unsafe fn block_rows<K: Microkernel>(
    a: *const f32,
    w: &PackedWeights,
    c: *mut f32,
    m: usize,
    panels: std::ops::Range<usize>,
) {
    let (k, n) = (w.k, w.n);
    if m <= K::MR {
        // One row tile: each panel's blocks one after another, so its weights stream from
        // memory front to back (taking every panel's first block, then every panel's
        // second, ran batch 8 at 60% of this on AVX-512). The same sums per output value,
        // so the same bits.
        for p in panels {
            let col = p * NR;
            for k0 in (0..k).step_by(KC) {
                let b = w.panels.as_ptr().add((p * k + k0) * NR);
                // In bounds: col < n, inside each of the m rows of `c`.
                let (kc, cols) = (KC.min(k - k0), NR.min(n - col));
                K::tile(m, (a.add(k0), k, b, kc, c.add(col), n, cols, k0 > 0));
            }
        }
        return;
    }
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for p in panels.clone() {
            let b = w.panels.as_ptr().add((p * k + k0) * NR);
            let col = p * NR;
            let cols = NR.min(n - col);
            // In bounds: r < m and k0 < k, so both pointers address this chunk's rows of
            // `a` (m * k values) and `c` (m rows of n, col < n); a + m * k + k0 and
            // c + m * n + col, past the last row's end, are never formed.
            for r in (0..m).step_by(K::MR) {
                let rows = K::MR.min(m - r);
                let (a, c) = (a.add(r * k + k0), c.add(r * n + col));
                K::tile(rows, (a, k, b, kc, c, n, cols, k0 > 0));
            }
        }
    }
}

/// The portable microkernel: the other levels' reference in the tests. The runtime packs
/// only on CPUs with AVX2+FMA or AVX-512 (`model.rs`); others run gemm's portable code.
struct Portable;

impl Microkernel for Portable {
    const MR: usize = 4;

    unsafe fn tile(rows: usize, (a, lda, b, kc, c, ldc, cols, accumulate): TileArgs) {
        for r in 0..rows {
            for j in 0..cols {
                let mut acc = 0.0f32;
                for kk in 0..kc {
                    acc = (*a.add(r * lda + kk)).mul_add(*b.add(kk * NR + j), acc);
                }
                let cp = c.add(r * ldc + j);
                *cp = if accumulate { *cp + acc } else { acc };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Microkernel, PackedWeights, TileArgs, NR};

    /// The AVX-512 microkernel: a 12 x 32 tile of the output in 24 of the 32 registers;
    /// per input, 12 activations broadcast against two 16-lane weight vectors (12 rows
    /// measured faster than 8 at batch 32 and 4096 on one thread).
    pub(super) struct Tiles;

    impl Microkernel for Tiles {
        const MR: usize = 12;

        #[target_feature(enable = "avx512f")]
        unsafe fn tile(rows: usize, args: TileArgs) {
            match rows {
                1 => tile::<1>(args),
                2 => tile::<2>(args),
                3 => tile::<3>(args),
                4 => tile::<4>(args),
                5 => tile::<5>(args),
                6 => tile::<6>(args),
                7 => tile::<7>(args),
                8 => tile::<8>(args),
                9 => tile::<9>(args),
                10 => tile::<10>(args),
                11 => tile::<11>(args),
                _ => tile::<12>(args),
            }
        }
    }

    /// See [`PackedWeights::gemv_panels`]: four panels at a time (eight independent
    /// accumulators, enough to keep the FMA units fed while weights stream in).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemv(
        x: &[f32],
        w: &PackedWeights,
        y: *mut f32,
        panels: std::ops::Range<usize>,
    ) {
        let mut p = panels.start;
        while p + 4 <= panels.end {
            gemv_group::<4>(x, w, y, p);
            p += 4;
        }
        for p in p..panels.end {
            gemv_group::<1>(x, w, y, p);
        }
    }

    /// Panels `p0 .. p0 + P` of one row's GEMV.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gemv_group<const P: usize>(x: &[f32], w: &PackedWeights, y: *mut f32, p0: usize) {
        let (k, n) = (w.k, w.n);
        let base = w.panels.as_ptr().add(p0 * k * NR);
        let mut lo = [_mm512_setzero_ps(); P];
        let mut hi = [_mm512_setzero_ps(); P];
        for (kk, &xv) in x[..k].iter().enumerate() {
            if xv == 0.0 {
                continue;
            }
            let a = _mm512_set1_ps(xv);
            for j in 0..P {
                let b = base.add((j * k + kk) * NR);
                lo[j] = _mm512_fmadd_ps(a, _mm512_loadu_ps(b), lo[j]);
                hi[j] = _mm512_fmadd_ps(a, _mm512_loadu_ps(b.add(16)), hi[j]);
            }
        }
        for j in 0..P {
            // In bounds: panel p0 + j < panels(), so col < n, inside y's n values.
            let col = (p0 + j) * NR;
            let cols = NR.min(n - col);
            let (m0, m1) = masks(cols);
            _mm512_mask_storeu_ps(y.add(col), m0, lo[j]);
            // The second half exists only past 16 columns: y + col + 16 would otherwise
            // point past y's end (undefined behaviour even under an empty mask).
            if cols > 16 {
                _mm512_mask_storeu_ps(y.add(col + 16), m1, hi[j]);
            }
        }
    }

    /// Store masks for the two 16-lane halves of a panel with `cols` real columns.
    #[inline]
    fn masks(cols: usize) -> (__mmask16, __mmask16) {
        let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
        (mask(cols), mask(cols.saturating_sub(16)))
    }

    /// Inputs ahead of the one being multiplied whose weights [`tile`] prefetches.
    const PREFETCH: usize = 24;

    /// [`Microkernel::tile`] on `R` rows; its arguments but `rows`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize>((a, lda, b, kc, c, ldc, cols, accumulate): TileArgs) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for kk in 0..kc {
            // The weights come from L3 or memory once per pass: ask for them a few KiB
            // ahead. A prefetch reads nothing and cannot fault, so past the panel's end
            // it is harmless (and formed with wrapping arithmetic).
            let ahead = b.wrapping_add((kk + PREFETCH) * NR) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            let b0 = _mm512_loadu_ps(b.add(kk * NR));
            let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
            for r in 0..R {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
            }
        }
        let (m0, m1) = masks(cols);
        for r in 0..R {
            // In bounds: row r < R of the caller's c, whose rows hold `cols` values here.
            let cp = c.add(r * ldc);
            if accumulate {
                lo[r] = _mm512_add_ps(lo[r], _mm512_maskz_loadu_ps(m0, cp));
            }
            _mm512_mask_storeu_ps(cp, m0, lo[r]);
            // The second half only past 16 columns: cp + 16 could lie past c's end
            // otherwise (the last row of a partial panel).
            if cols > 16 {
                let cp = cp.add(16);
                if accumulate {
                    hi[r] = _mm512_add_ps(hi[r], _mm512_maskz_loadu_ps(m1, cp));
                }
                _mm512_mask_storeu_ps(cp, m1, hi[r]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Microkernel, PackedWeights, TileArgs, NR};

    /// The AVX2+FMA microkernel: a panel in two 16-column halves, each a 6 x 16 tile of
    /// the output in 12 of the 16 registers; per input, 6 activations broadcast against
    /// two 8-lane weight vectors (the classic AVX2 shape: two loads and six broadcasts
    /// feed twelve FMAs).
    pub(super) struct Tiles;

    impl Microkernel for Tiles {
        const MR: usize = 6;

        #[target_feature(enable = "avx2,fma")]
        unsafe fn tile(rows: usize, (a, lda, b, kc, c, ldc, cols, acc): TileArgs) {
            // The second half only past 16 columns: b + 16 and c + 16 are then inside
            // the panel and every row of c.
            half(rows, (a, lda, b, kc, c, ldc, cols.min(16), acc));
            if cols > 16 {
                half(
                    rows,
                    (a, lda, b.add(16), kc, c.add(16), ldc, cols - 16, acc),
                );
            }
        }
    }

    /// One 16-column half of a tile, `cols` 1 to 16 of its columns real.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn half(rows: usize, args: TileArgs) {
        match rows {
            1 => tile::<1>(args),
            2 => tile::<2>(args),
            3 => tile::<3>(args),
            4 => tile::<4>(args),
            5 => tile::<5>(args),
            _ => tile::<6>(args),
        }
    }

    /// Lane masks for the two 8-lane vectors of `cols` (0 to 16) real columns.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn masks(cols: usize) -> (__m256i, __m256i) {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let below = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes);
        (below(cols), below(cols.saturating_sub(8)))
    }

    /// `y (+)= v` on the `cols` (0 to 8) first lanes at `p`; `p` must be valid for them.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(p: *mut f32, v: __m256, cols: usize, mask: __m256i, accumulate: bool) {
        if cols >= 8 {
            let v = if accumulate {
                _mm256_add_ps(v, _mm256_loadu_ps(p))
            } else {
                v
            };
            _mm256_storeu_ps(p, v);
        } else {
            // Masked lanes are neither read nor written, and cannot fault.
            let v = if accumulate {
                _mm256_add_ps(v, _mm256_maskload_ps(p, mask))
            } else {
                v
            };
            _mm256_maskstore_ps(p, mask, v);
        }
    }

    /// Inputs ahead of the one being multiplied whose weights [`tile`] prefetches.
    const PREFETCH: usize = 24;

    /// [`half`] on `R` rows; its arguments but `rows`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize>((a, lda, b, kc, c, ldc, cols, accumulate): TileArgs) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        // Row pointers formed once, and inputs four at a time: in 10 alternating rounds on
        // a Zen 3 (2 threads) this ran batches 32, 256 and 4096 faster than one input a
        // step in 8, 8 and 7 rounds (medians +5-11%). The same order of sums.
        let rows: [*const f32; R] = std::array::from_fn(|r| a.add(r * lda));
        let step = |kk: usize, lo: &mut [__m256; R], hi: &mut [__m256; R]| {
            // A prefetch reads nothing and cannot fault: past the panel's end it is
            // harmless (and formed with wrapping arithmetic).
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((kk + PREFETCH) * NR) as *const i8);
            let b0 = _mm256_loadu_ps(b.add(kk * NR));
            let b1 = _mm256_loadu_ps(b.add(kk * NR + 8));
            for r in 0..R {
                let av = _mm256_set1_ps(*rows[r].add(kk));
                lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
            }
        };
        let mut kk = 0;
        while kk + 4 <= kc {
            step(kk, &mut lo, &mut hi);
            step(kk + 1, &mut lo, &mut hi);
            step(kk + 2, &mut lo, &mut hi);
            step(kk + 3, &mut lo, &mut hi);
            kk += 4;
        }
        while kk < kc {
            step(kk, &mut lo, &mut hi);
            kk += 1;
        }
        let (m0, m1) = masks(cols);
        for r in 0..R {
            // In bounds: row r < R of the caller's c, whose rows hold `cols` values here;
            // cp + 8 is formed only where the row has more than 8 of them.
            let cp = c.add(r * ldc);
            store(cp, lo[r], cols, m0, accumulate);
            if cols > 8 {
                store(cp.add(8), hi[r], cols - 8, m1, accumulate);
            }
        }
    }

    /// See [`PackedWeights::gemv_panels`]: two panels at a time (eight accumulators).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemv(
        x: &[f32],
        w: &PackedWeights,
        y: *mut f32,
        panels: std::ops::Range<usize>,
    ) {
        let mut p = panels.start;
        while p + 2 <= panels.end {
            gemv_group::<2>(x, w, y, p);
            p += 2;
        }
        for p in p..panels.end {
            gemv_group::<1>(x, w, y, p);
        }
    }

    /// Panels `p0 .. p0 + P` of one row's GEMV.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gemv_group<const P: usize>(x: &[f32], w: &PackedWeights, y: *mut f32, p0: usize) {
        let (k, n) = (w.k, w.n);
        let base = w.panels.as_ptr().add(p0 * k * NR);
        let mut acc = [[_mm256_setzero_ps(); 4]; P];
        for (kk, &xv) in x[..k].iter().enumerate() {
            if xv == 0.0 {
                continue;
            }
            let a = _mm256_set1_ps(xv);
            for (j, acc) in acc.iter_mut().enumerate() {
                let b = base.add((j * k + kk) * NR);
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(b.add(8 * v)), *acc);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            // In bounds: panel p0 + j < panels(), so col < n, inside y's n values; each
            // 8-lane vector's pointer is formed only where it has real columns.
            let col = (p0 + j) * NR;
            let cols = NR.min(n - col);
            for (v, acc) in acc.iter().enumerate() {
                if cols > 8 * v {
                    let left = (cols - 8 * v).min(8);
                    let (mask, _) = masks(left);
                    store(y.add(col + 8 * v), *acc, left, mask, false);
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `full` natively, `small` under Miri (which runs the same tests a thousand times
    /// slower, checking every pointer against its allocation: `scripts/miri.sh`).
    pub(crate) fn sizes<const N: usize, const M: usize>(
        full: [usize; N],
        small: [usize; M],
    ) -> Vec<usize> {
        if cfg!(miri) {
            small.to_vec()
        } else {
            full.to_vec()
        }
    }

    /// Under Miri, a plain allocation of exactly `len` values: Miri itself reports any
    /// access, and any pointer formed, outside it (it has no mmap / mprotect).
    #[cfg(miri)]
    pub(crate) struct Guarded(Vec<f32>);

    #[cfg(miri)]
    impl Guarded {
        pub(crate) fn new(values: &[f32], _at_end: bool) -> Self {
            Self(values.to_vec())
        }

        pub(crate) fn slice(&mut self) -> &mut [f32] {
            &mut self.0
        }
    }

    /// Test memory for `len` values that ends (or starts) at a page the process may not
    /// touch: a kernel reading or writing one value past the slice's end (or before its
    /// start) faults and ends the test process, so the test fails. Catches accesses only,
    /// not pointers formed out of bounds and left unused (Miri catches those).
    #[cfg(all(unix, not(miri)))]
    pub(crate) struct Guarded {
        base: *mut libc::c_void,
        total: usize,
        start: *mut f32,
        len: usize,
    }

    #[cfg(all(unix, not(miri)))]
    impl Guarded {
        /// `values` copied into guarded memory, ending at the guard page if `at_end`, else
        /// starting right after the leading one.
        pub(crate) fn new(values: &[f32], at_end: bool) -> Self {
            // SAFETY: sysconf has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
            let data = (values.len() * 4).div_ceil(page).max(1) * page;
            let total = data + 2 * page;
            // SAFETY: an anonymous private mapping of `total` bytes, checked below; the
            // pointers below stay inside it (`data` bytes between two guard pages).
            unsafe {
                let base = libc::mmap(
                    std::ptr::null_mut(),
                    total,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(base, libc::MAP_FAILED, "mmap");
                let bytes = base as *mut u8;
                let none = libc::PROT_NONE;
                assert_eq!(libc::mprotect(base, page, none), 0, "mprotect");
                assert_eq!(libc::mprotect(bytes.add(page + data).cast(), page, none), 0);
                let offset = if at_end { data - values.len() * 4 } else { 0 };
                let start = bytes.add(page + offset) as *mut f32;
                std::ptr::copy_nonoverlapping(values.as_ptr(), start, values.len());
                Self {
                    base,
                    total,
                    start,
                    len: values.len(),
                }
            }
        }

        pub(crate) fn slice(&mut self) -> &mut [f32] {
            // SAFETY: `len` values at `start` lie inside the readable part of the mapping,
            // which lives as long as self, and were initialised in `new`.
            unsafe { std::slice::from_raw_parts_mut(self.start, self.len) }
        }
    }

    #[cfg(all(unix, not(miri)))]
    impl Drop for Guarded {
        fn drop(&mut self) {
            // SAFETY: the mapping `new` made, unmapped once.
            unsafe { libc::munmap(self.base, self.total) };
        }
    }

    /// Inputs with zeros (the GEMV skips them) and weights with a pattern.
    fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..m * k)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let wt = (0..k * n)
            .map(|i| ((i * 5 % 19) as f32 - 9.0) / 5.0)
            .collect();
        (a, wt)
    }

    fn naive(a: &[f32], wt: &[f32], r: usize, j: usize, k: usize, n: usize) -> f64 {
        (0..k)
            .map(|kk| a[r * k + kk] as f64 * wt[kk * n + j] as f64)
            .sum()
    }

    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 3, 5),
        (8, 600, 70),
        (13, 257, 32),
        (37, 784, 45),
        (4, 1, 1),
        (2, 0, 33),
    ];

    /// The kernels this CPU runs, the portable one first.
    pub(crate) fn kernels() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                all.push(Kernel::Avx2Fma);
            }
            if std::is_x86_feature_detected!("avx512f") {
                all.push(Kernel::Avx512);
            }
        }
        all
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Every level against a plain triple loop in f64, for every row remainder, a column
    /// count that leaves a partial panel, an input count spanning several KC blocks and
    /// rows spanning two MC chunks; and every level gives the portable kernel's bits.
    #[test]
    fn every_matmul_level_matches_a_naive_product_and_the_portable_bits() {
        for (m, k, n) in SHAPES.into_iter().chain([(130, 600, 70), (7, 513, 40)]) {
            let (mut a, wt) = operands(m, k, n);
            if let Some(v) = a.get_mut(1) {
                *v = -0.0; // a signed zero is summed, not skipped: the same bits
            }
            let mut portable = Vec::new();
            for kernel in kernels() {
                let packed = PackedWeights::for_kernel(&wt, k, n, kernel).unwrap();
                let mut got = vec![f32::NAN; m * n + 3];
                got[m * n..].fill(7.0);
                packed.matmul(&a, &mut got, m);
                for r in 0..m {
                    for j in 0..n {
                        let (g, want) = (got[r * n + j] as f64, naive(&a, &wt, r, j, k, n));
                        assert!(
                            (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{kernel:?} {m}x{k}x{n} [{r},{j}]: {g} vs {want}"
                        );
                    }
                }
                assert_eq!(&got[m * n..], &[7.0; 3], "{kernel:?} wrote past the output");
                if kernel == Kernel::Portable {
                    portable = got;
                } else {
                    assert_eq!(bits(&got), bits(&portable), "{kernel:?} {m}x{k}x{n}");
                }
            }
        }
    }

    /// The GEMV on every level gives the portable loop's bits (each sums each column in
    /// input order with fused multiply-adds), over any panel range, and the naive
    /// product's value; nothing outside the range is written.
    #[test]
    fn every_gemv_level_matches_the_portable_loop_and_a_naive_product() {
        for (_, k, n) in SHAPES.into_iter().chain([(1, 784, 768), (1, 5, 200)]) {
            let (mut x, wt) = operands(1, k, n);
            if k > 2 {
                x[1] = 0.0;
            }
            for kernel in kernels() {
                let packed = PackedWeights::for_kernel(&wt, k, n, kernel).unwrap();
                let all = packed.panels();
                for range in [0..all, 1.min(all)..all, 0..all / 2, all / 2..all] {
                    let mut want = vec![f32::NAN; n + 1];
                    let mut got = want.clone();
                    // SAFETY: both buffers hold n values; this thread alone uses them.
                    unsafe {
                        packed.gemv_portable(&x, want.as_mut_ptr(), range.clone());
                        packed.gemv_panels(&x, got.as_mut_ptr(), range.clone());
                    }
                    assert_eq!(bits(&got), bits(&want), "{kernel:?} {k}x{n} {range:?}");
                    let cols = (range.start * NR).min(n)..(range.end * NR).min(n);
                    for (j, g) in want.iter().enumerate() {
                        if cols.contains(&j) {
                            let w = naive(&x, &wt, 0, j, k, n);
                            assert!((*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{j}");
                        } else {
                            assert!(g.is_nan(), "{k}x{n} {range:?}: wrote column {j}");
                        }
                    }
                }
            }
        }
    }

    /// Every packed kernel this CPU runs (the AVX-512 and AVX2 microkernels and GEMVs, and
    /// the portable ones) with its input and output ending, then starting, at a guard page,
    /// over every row remainder of the 12- and 6-row tiles (1..=13 rows), every column count of up to
    /// one full and one partial panel (1..=40, so tails of 1..=16 and 17..=31 columns) and
    /// odd input counts (one KC block, and 257: a second, accumulating, block). No access
    /// leaves the slices (else the process faults), and each result is the naive product.
    #[cfg(unix)]
    #[test]
    fn packed_kernels_touch_nothing_past_their_slices() {
        let columns: Vec<usize> = (1..=40).collect();
        let levels = kernels().into_iter();
        for (kernel, k) in levels.flat_map(|l| {
            sizes([1, 3, 257], [1, 257])
                .into_iter()
                .map(move |k| (l, k))
        }) {
            for &n in if cfg!(miri) {
                &[1, 17, 33][..]
            } else {
                &columns
            } {
                let (a, wt) = operands(13, k, n);
                let packed = PackedWeights::for_kernel(&wt, k, n, kernel).unwrap();
                let all = packed.panels();
                for m in sizes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [1, 2, 13]) {
                    for at_end in [true, false] {
                        let mut lhs = Guarded::new(&a[..m * k], at_end);
                        let mut dst = Guarded::new(&vec![f32::NAN; m * n], at_end);
                        let lhs = lhs.slice();
                        // SAFETY: dst holds m * n values, this thread's alone.
                        unsafe { packed.matmul_panels(lhs, dst.slice().as_mut_ptr(), m, 0..all) };
                        for r in 0..m {
                            for j in 0..n {
                                let (g, want) =
                                    (dst.slice()[r * n + j] as f64, naive(lhs, &wt, r, j, k, n));
                                assert!(
                                    (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                    "{m}x{k}x{n} [{r},{j}]"
                                );
                            }
                        }
                        // The level's GEMV and the portable loop, on the last row and
                        // on the last panel alone.
                        for range in [0..all, all - 1..all] {
                            let x = &lhs[(m - 1) * k..];
                            let mut y = Guarded::new(&vec![f32::NAN; n], at_end);
                            let mut portable = Guarded::new(&vec![f32::NAN; n], at_end);
                            // SAFETY: both hold n values, this thread's alone.
                            unsafe {
                                packed.gemv_panels(x, y.slice().as_mut_ptr(), range.clone());
                                packed.gemv_portable(
                                    x,
                                    portable.slice().as_mut_ptr(),
                                    range.clone(),
                                );
                            }
                            let bits =
                                |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                            assert_eq!(
                                bits(y.slice()),
                                bits(portable.slice()),
                                "{k}x{n} {range:?}"
                            );
                            let j = n - 1;
                            let want = naive(x, &wt, 0, j, k, n);
                            assert!(
                                (y.slice()[j] as f64 - want).abs() <= 1e-4 * (1.0 + want.abs())
                            );
                        }
                    }
                }
            }
        }
    }
}
