//! bf16 weights and their matmul: weights held as bf16, each layer's input rounded to bf16
//! (round to nearest even; subnormals to zero), products summed in f32. Bias and
//! activations stay f32 (the epilogue is the f32 one).
//!
//! Layout: like the f32 panels (32 output columns a panel), but per pair of inputs: panel
//! `p`, pair `j` holds 32 `u32`, column `c`'s being `bf16(w[2j][c]) | bf16(w[2j+1][c]) <<
//! 16`, so one AVX512-BF16 `vdpbf16ps` multiplies 16 columns by a broadcast input pair and
//! adds both products to 16 f32 sums. The instruction adds the odd input's product first,
//! then the even one's, each add rounded to f32 (a product of two bf16 values is exact in
//! f32); the portable kernel does the same adds in the same order, so on normal-range
//! values the two give the same bits (`tests::kernels_agree_bit_for_bit`).

use crate::kernel::avx2_available;

/// Output columns per panel.
const NR: usize = 32;
/// Rows per microkernel tile (24 of the 32 registers hold the sums).
const MR: usize = 12;
/// Rows per chunk: a chunk's input pairs stay in L2 while every panel passes over them.
const MC: usize = 128;

/// The bf16 bits of `v`, rounded to nearest even; subnormals (and zero) to a signed zero.
/// `v` is finite or infinite (the runtime refuses NaN inputs; an overflowing activation
/// is infinite and stays so).
///
/// Branch-free, so the conversion of a layer's input vectorises: infinity needs no case of
/// its own (its low half is zero, so rounding leaves it), and a subnormal is a select.
#[inline]
pub(crate) fn bf16_bits(v: f32) -> u32 {
    let b = v.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16;
    if b & 0x7f80_0000 == 0 {
        (b >> 16) & 0x8000
    } else {
        rounded
    }
}

/// The f32 a bf16 value stands for.
fn widen(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// Pairs of inputs per row for `k` inputs (the last pair's odd half is zero when `k` is odd).
pub(crate) fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// `x[m, k]` (row-major f32) as bf16 pairs, `stride` (at least `pairs(k)`) to a row, the
/// pairs past `pairs(k)` zero. Chosen at run time: AVX512-BF16's `vcvtne2ps2bf16` (32
/// values an instruction; the same rounding, to nearest even with subnormals to zero), else
/// the portable loop compiled for AVX-512, else portable. The conversion took a quarter of
/// a bf16 pass in the portable build and 7.7% compiled for AVX-512 (perf, batch 256, AMX).
pub(crate) fn to_pairs(x: &[f32], m: usize, k: usize, stride: usize, out: &mut [u32]) {
    assert!(
        x.len() >= m * k && out.len() >= m * stride && stride >= pairs(k),
        "bf16 conversion sizes"
    );
    let rows = Rows {
        x: x.as_ptr(),
        xs: k,
        m,
        k,
        out: out.as_mut_ptr(),
        os: stride,
        width: stride,
    };
    // SAFETY: sizes asserted above; `out` is borrowed mutably.
    unsafe { to_pairs_rows(rows) };
}

/// A conversion's rows: `m` rows of `k` values `xs` apart from `x`, into `width` pairs (the
/// values' `pairs(k)`, then zeros) of rows `os` apart from `out`.
#[derive(Clone, Copy)]
pub(crate) struct Rows {
    pub(crate) x: *const f32,
    pub(crate) xs: usize,
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) out: *mut u32,
    pub(crate) os: usize,
    pub(crate) width: usize,
}

/// [`to_pairs`] on any [`Rows`]: the column split's share of a layer, columns of wider
/// rows into pairs of wider rows, in one call (other threads write the columns between).
///
/// # Safety
/// `x` must be valid for reading each row's `k` values, `out` for writing each row's
/// `width` pairs, no other thread touching those pairs; `width >= pairs(k)`.
pub(crate) unsafe fn to_pairs_rows(r: Rows) {
    assert!(r.width >= pairs(r.k), "bf16 conversion sizes");
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the CPU has AVX-512F and AVX512-BF16; the caller's contract.
        return to_pairs_cvtne(r);
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the caller's contract.
        return to_pairs_avx512(r);
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        // SAFETY: the CPU has AVX2; the caller's contract.
        return to_pairs_avx2(r);
    }
    to_pairs_portable(r);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn to_pairs_avx2(r: Rows) {
    to_pairs_portable(r);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn to_pairs_avx512(r: Rows) {
    to_pairs_portable(r);
}

/// [`to_pairs_rows`] with `vcvtne2ps2bf16`: a row's values 32 at a time (the tail masked)
/// into 16 pairs, which are the bf16 values in order.
///
/// # Safety
/// As [`to_pairs_rows`], and the CPU has AVX-512F and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_pairs_cvtne(r: Rows) {
    use std::arch::x86_64::*;
    let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    let k = r.k;
    for row in 0..r.m {
        let (src, dst) = (r.x.add(row * r.xs), r.out.add(row * r.os));
        let mut i = 0;
        while i + 32 <= k {
            let lo = _mm512_loadu_ps(src.add(i));
            let hi = _mm512_loadu_ps(src.add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.add(i / 2).cast(), v);
            i += 32;
        }
        if i < k {
            // Masked loads read (and fault on) only the lanes below k; the pointers past
            // the row are formed with wrapping arithmetic and never dereferenced.
            let left = k - i;
            let lo = _mm512_maskz_loadu_ps(mask(left), src.add(i));
            let hi = _mm512_maskz_loadu_ps(mask(left.saturating_sub(16)), src.wrapping_add(i + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_mask_storeu_epi32(dst.add(i / 2).cast(), mask(left.div_ceil(2)), v);
        }
        // Padding pairs, where the row has any (a call to fill an empty slice, one a row,
        // cost 3% of a 32-row pass split by columns).
        for j in pairs(k)..r.width {
            *dst.add(j) = 0;
        }
    }
}

/// # Safety
/// As [`to_pairs_rows`].
#[inline(always)]
unsafe fn to_pairs_portable(r: Rows) {
    let (k, p) = (r.k, pairs(r.k));
    for row in 0..r.m {
        let src = std::slice::from_raw_parts(r.x.add(row * r.xs), k);
        let dst = std::slice::from_raw_parts_mut(r.out.add(row * r.os), r.width);
        let (whole, tail) = src.split_at(k & !1);
        for (d, two) in dst.iter_mut().zip(whole.chunks_exact(2)) {
            *d = bf16_bits(two[0]) | bf16_bits(two[1]) << 16;
        }
        if let [last] = tail {
            dst[k / 2] = bf16_bits(*last);
        }
        dst[p..].fill(0);
    }
}

/// Which kernel a layer's bf16 weights run on.
#[derive(Debug)]
enum Kernel {
    /// AMX tiles (`tdpbf16ps`), with the weights also in tile order.
    #[cfg(target_arch = "x86_64")]
    Amx(crate::amx::AmxWeights),
    /// AVX512-BF16 `vdpbf16ps`.
    Avx512,
    /// AVX2 without AVX512-BF16: each bf16 widened to f32 (a shift or a mask), then the
    /// portable kernel's multiplies and adds, 8 lanes at a time.
    Avx2,
    Portable,
}

/// `W^T` (`[inputs, outputs]`) in bf16 pair panels.
#[derive(Debug)]
pub(crate) struct Bf16Weights {
    k: usize,
    n: usize,
    panels: Vec<u32>,
    kernel: Kernel,
}

impl Bf16Weights {
    /// Packs `wt`, `[k, n]` row-major f32, rounding each weight to bf16. `None` if the
    /// buffer cannot be allocated.
    pub(crate) fn new(wt: &[f32], k: usize, n: usize) -> Option<Self> {
        let p = pairs(k);
        let count = n.div_ceil(NR).checked_mul(p)?.checked_mul(NR)?;
        let mut panels = Vec::new();
        panels.try_reserve_exact(count).ok()?;
        panels.resize(count, 0u32);
        for (pi, panel) in panels.chunks_exact_mut((p * NR).max(1)).enumerate() {
            let cols = (pi * NR)..n.min(pi * NR + NR);
            for (j, dst) in panel.chunks_exact_mut(NR).enumerate() {
                for (c, d) in cols.clone().zip(dst.iter_mut()) {
                    let lo = bf16_bits(wt[2 * j * n + c]);
                    let hi = if 2 * j + 1 < k {
                        bf16_bits(wt[(2 * j + 1) * n + c])
                    } else {
                        0
                    };
                    *d = lo | hi << 16;
                }
            }
        }
        let kernel = Self::best_kernel(&panels, pairs(k), n)?;
        Some(Self {
            k,
            n,
            panels,
            kernel,
        })
    }

    /// AMX where the CPU and Linux allow it, else AVX512-BF16, else AVX2, else portable
    /// code.
    fn best_kernel(panels: &[u32], p: usize, n: usize) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        if crate::amx::available() {
            return crate::amx::AmxWeights::new(panels, p, n).map(Kernel::Amx);
        }
        let _ = (panels, p, n);
        Some(if simd_available() {
            Kernel::Avx512
        } else if avx2_available() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        })
    }

    /// The kernel these weights run on, for `inspect`.
    pub(crate) fn kernel_name(&self) -> &'static str {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) => "AMX tiles (tdpbf16ps)",
            Kernel::Avx512 => "AVX512-BF16 (vdpbf16ps)",
            Kernel::Avx2 => "AVX2 (bf16 widened to f32)",
            Kernel::Portable => "portable bf16",
        }
    }

    /// Batches of fewer rows than this split by output columns ([`Self::matmul_panels`]);
    /// larger ones by rows; 0 on the portable kernel, which runs whole layers only.
    /// Measured on 2 threads (784-768-...-10, 3 rounds alternating): on AVX512-BF16 (a Zen
    /// 5 EPYC) columns ran batch 1-16 at 1.4-1.7x the rows split's rate (batch 1 p50 0.025
    /// ms against 0.041), rows batch 32 at 213-218k against 163-182k; on AMX (a Sapphire
    /// Rapids-class Xeon, once the tiles were aligned) rows ran batch 32 at 294-342k
    /// against 226-243k, 64 at 394-470k against 255-259k, 100 at 414-440k against 244-247k,
    /// columns batch 16 at 198-214k against 119-138k; on AVX2 (a Zen 3 EPYC) columns ran
    /// batches 1-16 in 0.53-0.62x the rows split's time, batch 31 level.
    pub(crate) fn column_split_below(&self) -> usize {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) => 32,
            Kernel::Avx512 | Kernel::Avx2 => 32,
            Kernel::Portable => 0,
        }
    }

    /// Whether [`Self::matmul_panels`] runs: on AMX, AVX512-BF16 and AVX2, whose kernels
    /// compute 32-column panels on their own.
    pub(crate) fn splits_by_columns(&self) -> bool {
        self.column_split_below() > 0
    }

    /// Panels `panels` (32 columns each, the last clipped to `n`) of [`Self::matmul`],
    /// the same bits as there: for the column split, whose other threads write the other
    /// columns of `dst` meanwhile. Only where [`Self::splits_by_columns`].
    ///
    /// # Safety
    /// `dst` must be valid for `m * n` values, and no other thread may touch these
    /// columns.
    pub(crate) unsafe fn matmul_panels(
        &self,
        x: &[u32],
        dst: *mut f32,
        m: usize,
        panels: std::ops::Range<usize>,
    ) {
        match &self.kernel {
            // SAFETY: built only where `amx::available()`; the kernel checks x and the
            // panels, the caller dst.
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(w) => w.matmul_panels(x, dst, m, panels),
            // SAFETY: built only where `simd_available()`; x holds m * pairs(k) values
            // (the split's input rows), dst and the columns are the caller's contract.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                assert!(
                    x.len() >= m * pairs(self.k) && panels.end <= self.n.div_ceil(NR),
                    "bf16 matmul sizes"
                );
                avx512::matmul(self, x, dst, m, panels)
            }
            // SAFETY: built only where `avx2_available()`; as for AVX512-BF16.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                assert!(
                    x.len() >= m * pairs(self.k) && panels.end <= self.n.div_ceil(NR),
                    "bf16 matmul sizes"
                );
                avx2::matmul(self, x, dst, m, panels)
            }
            _ => unreachable!("a column split on a kernel without panels"),
        }
    }

    /// Pairs to a row of the input [`Self::matmul`] takes (the AMX kernel reads whole
    /// tiles of 16 pairs).
    pub(crate) fn row_pairs(&self) -> usize {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) => crate::amx::row_pairs(pairs(self.k)),
            _ => pairs(self.k),
        }
    }

    /// `dst[m, n] = x[m, k] W^T`, `x` given as bf16 pairs, [`Self::row_pairs`] to a row
    /// (see [`to_pairs`]).
    pub(crate) fn matmul(&self, x: &[u32], dst: &mut [f32], m: usize) {
        let p = self.row_pairs();
        assert!(
            x.len() >= m * p && dst.len() >= m * self.n,
            "bf16 matmul sizes"
        );
        match &self.kernel {
            // SAFETY: built only where `amx::available()`; sizes asserted above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(w) => unsafe { w.matmul(x, dst, m) },
            Kernel::Avx512 => self.matmul_avx512(x, dst, m),
            Kernel::Avx2 => self.matmul_avx2(x, dst, m),
            Kernel::Portable => self.matmul_portable(x, dst, m),
        }
    }

    /// The AVX512-BF16 kernel on `pairs(k)` pairs a row (portable code where the CPU
    /// lacks it).
    fn matmul_avx512(&self, x: &[u32], dst: &mut [f32], m: usize) {
        #[cfg(target_arch = "x86_64")]
        if simd_available() && pairs(self.k) > 0 {
            // SAFETY: the CPU has AVX-512F and AVX512-BF16; x holds m * pairs(k) values and
            // dst m * n (the callers assert it).
            unsafe { avx512::matmul(self, x, dst.as_mut_ptr(), m, 0..self.n.div_ceil(NR)) };
            return;
        }
        self.matmul_portable(x, dst, m);
    }

    /// The AVX2 kernel on `pairs(k)` pairs a row (portable code where the CPU lacks AVX2).
    fn matmul_avx2(&self, x: &[u32], dst: &mut [f32], m: usize) {
        #[cfg(target_arch = "x86_64")]
        if avx2_available() && pairs(self.k) > 0 {
            // SAFETY: the CPU has AVX2; x holds m * pairs(k) values and dst m * n (the
            // callers assert it).
            unsafe { avx2::matmul(self, x, dst.as_mut_ptr(), m, 0..self.n.div_ceil(NR)) };
            return;
        }
        self.matmul_portable(x, dst, m);
    }

    /// [`Self::matmul`] in portable code, in the instruction's order of adds.
    fn matmul_portable(&self, x: &[u32], dst: &mut [f32], m: usize) {
        let (p, n) = (pairs(self.k), self.n);
        for r in 0..m {
            let xr = &x[r * p..(r + 1) * p];
            for c in 0..n {
                let panel = &self.panels[(c / NR) * p * NR..];
                let mut acc = 0.0f32;
                for (j, &a) in xr.iter().enumerate() {
                    let b = panel[j * NR + c % NR];
                    acc += widen(a >> 16) * widen(b >> 16);
                    acc += widen(a & 0xffff) * widen(b & 0xffff);
                }
                dst[r * n + c] = acc;
            }
        }
    }
}

/// Whether this CPU runs the AVX512-BF16 kernel.
fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{pairs, Bf16Weights, MC, MR, NR};

    /// Panels `panels` of [`Bf16Weights::matmul`] into `dst` (`m * n` values; other
    /// threads may write the other columns meanwhile); the caller checked the sizes and
    /// the CPU.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn matmul(
        w: &Bf16Weights,
        x: &[u32],
        dst: *mut f32,
        m: usize,
        panels: std::ops::Range<usize>,
    ) {
        let (p, n) = (pairs(w.k), w.n);
        for m0 in (0..m).step_by(MC) {
            let rows = MC.min(m - m0);
            for panel in panels.clone() {
                let b = w.panels.as_ptr().add(panel * p * NR);
                let col = panel * NR;
                let cols = NR.min(n - col);
                let mut r = 0;
                while r < rows {
                    let take = MR.min(rows - r);
                    // In bounds: row m0 + r < m, so both pointers address a row of `x`
                    // (m * p values) and of `dst` (m * n values, col < n).
                    let a = x.as_ptr().add((m0 + r) * p);
                    let c = dst.add((m0 + r) * n + col);
                    // The row count as a constant, so the sums stay in registers.
                    macro_rules! rows {
                        ($($n:literal)*) => {
                            match take {
                                $($n => tile::<$n>(a, p, b, c, n, cols),)*
                                _ => unreachable!("a tile has 1 to MR rows"),
                            }
                        };
                    }
                    rows!(1 2 3 4 5 6 7 8 9 10 11 12);
                    r += take;
                }
            }
        }
    }

    /// Rows `0..R` (R at most MR) of one panel: `c[r][0..cols] = sum_j a[r][j] . b[j]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        p: usize,
        b: *const u32,
        c: *mut f32,
        n: usize,
        cols: usize,
    ) {
        let rows = R;
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for j in 0..p {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(j * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(j * NR + 16).cast()));
            for r in 0..rows {
                let pair = *a.add(r * p + j) as i32;
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                lo[r] = _mm512_dpbf16_ps(lo[r], av, b0);
                hi[r] = _mm512_dpbf16_ps(hi[r], av, b1);
            }
        }
        let mask = |k: usize| ((1u32 << k.min(16)) - 1) as __mmask16;
        for r in 0..rows {
            let row = c.add(r * n);
            _mm512_mask_storeu_ps(row, mask(cols), lo[r]);
            // Past 16 columns only: row + 16 would otherwise point past the row's end.
            if cols > 16 {
                _mm512_mask_storeu_ps(row.add(16), mask(cols - 16), hi[r]);
            }
        }
    }
}

/// The kernel for AVX2 without AVX512-BF16: the portable kernel's arithmetic, 8 columns a
/// register. A weight pair's high bf16 is its f32 with the low half masked off, the low
/// one the pair shifted up 16 bits; each product is exact in f32 (two 8-bit significands)
/// and is added as its own rounded add, odd input first, as `vdpbf16ps` and the portable
/// kernel do (a multiply and an add, not an FMA, so that even a product flushed to zero
/// under FTZ is the portable kernel's). Two rows a tile: eight sums, four widened inputs
/// and two widened weights in the 16 registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{pairs, Bf16Weights, MC, NR};

    const MR: usize = 2;

    /// Panels `panels` of [`Bf16Weights::matmul`] into `dst` (`m * n` values; other
    /// threads may write the other columns meanwhile); the caller checked the sizes and
    /// the CPU.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn matmul(
        w: &Bf16Weights,
        x: &[u32],
        dst: *mut f32,
        m: usize,
        panels: std::ops::Range<usize>,
    ) {
        let (p, n) = (pairs(w.k), w.n);
        for m0 in (0..m).step_by(MC) {
            let rows = MC.min(m - m0);
            for panel in panels.clone() {
                let b = w.panels.as_ptr().add(panel * p * NR);
                let col = panel * NR;
                let cols = NR.min(n - col);
                for r in (0..rows).step_by(MR) {
                    // In bounds: row m0 + r < m, so both pointers address a row of `x`
                    // (m * p values) and of `dst` (m * n values, col < n).
                    let a = x.as_ptr().add((m0 + r) * p);
                    let c = dst.add((m0 + r) * n + col);
                    if rows - r >= 2 {
                        tile::<2>(a, p, b, c, n, cols);
                    } else {
                        tile::<1>(a, p, b, c, n, cols);
                    }
                }
            }
        }
    }

    /// Rows `0..R` of one panel: `c[r][0..cols] = sum_j a[r][j] . b[j]`; the sums go
    /// through a block on the stack, and only `cols` of them to `c`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        p: usize,
        b: *const u32,
        c: *mut f32,
        n: usize,
        cols: usize,
    ) {
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for j in 0..p {
            // Each row's pair broadcast and widened: (odd input, even input).
            let inputs: [(__m256, __m256); R] = std::array::from_fn(|r| {
                let av = _mm256_set1_epi32(*a.add(r * p + j) as i32);
                (
                    _mm256_castsi256_ps(_mm256_and_si256(av, high)),
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(av)),
                )
            });
            let bp = b.add(j * NR);
            for h in 0..4 {
                let bv = _mm256_loadu_si256(bp.add(8 * h).cast());
                let odd = _mm256_castsi256_ps(_mm256_and_si256(bv, high));
                let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(bv));
                for (sums, &(ao, ae)) in acc.iter_mut().zip(&inputs) {
                    sums[h] = _mm256_add_ps(sums[h], _mm256_mul_ps(ao, odd));
                    sums[h] = _mm256_add_ps(sums[h], _mm256_mul_ps(ae, even));
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            let mut block = [0f32; NR];
            for (h, s) in sums.iter().enumerate() {
                _mm256_storeu_ps(block.as_mut_ptr().add(8 * h), *s);
            }
            // In bounds: `cols` values from column `col` lie within row r of `dst`.
            std::ptr::copy_nonoverlapping(block.as_ptr(), c.add(r * n), cols);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `len` values in [-1, 1) from a xorshift seeded by `seed` (int8's tests use it too).
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// The conversion's rows for contiguous `x` and `out`.
    fn rows(x: &[f32], m: usize, k: usize, stride: usize, out: &mut [u32]) -> Rows {
        assert!(x.len() >= m * k && out.len() >= m * stride);
        Rows {
            x: x.as_ptr(),
            xs: k,
            m,
            k,
            out: out.as_mut_ptr(),
            os: stride,
            width: stride,
        }
    }

    fn portable(x: &[f32], m: usize, k: usize, stride: usize, out: &mut [u32]) {
        // SAFETY: `rows` checked the sizes.
        unsafe { to_pairs_portable(rows(x, m, k, stride, out)) }
    }

    /// A share of columns of wider rows into pairs of wider rows (the column split's
    /// conversion), at every level: the pairs of those columns, zeros in its padding
    /// pairs, and nothing outside them touched.
    #[test]
    fn a_share_of_columns_converts_into_its_share_of_pairs() {
        let (m, n, rp) = (5, 70, 48);
        let x = values(m * n, 3);
        // Columns 32..70 (38 values, 19 pairs) into pairs 16..48 (19 pairs, 13 of padding).
        let (cols, first, width) = (32..70, 16, 32);
        type Convert = unsafe fn(Rows);
        let mut levels: Vec<(&str, Convert)> = vec![("portable", to_pairs_portable)];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            levels.push(("avx512", to_pairs_avx512));
        }
        #[cfg(target_arch = "x86_64")]
        if simd_available() {
            levels.push(("vcvtne2ps2bf16", to_pairs_cvtne));
        }
        levels.push(("dispatched", to_pairs_rows));
        for (name, convert) in levels {
            let mut q = vec![7u32; m * rp];
            let r = Rows {
                x: x[cols.start..].as_ptr(),
                xs: n,
                m,
                k: cols.len(),
                out: q[first..].as_mut_ptr(),
                os: rp,
                width,
            };
            // SAFETY: each row's 38 values and 32 pairs lie inside `x` and `q`.
            unsafe { convert(r) };
            for row in 0..m {
                for j in 0..rp {
                    let got = q[row * rp + j];
                    let want = if j < first {
                        7
                    } else if j < first + cols.len() / 2 {
                        let c = row * n + cols.start + 2 * (j - first);
                        bf16_bits(x[c]) | bf16_bits(x[c + 1]) << 16
                    } else {
                        0
                    };
                    assert_eq!(got, want, "{name}: row {row} pair {j}");
                }
            }
        }
    }

    /// The AVX-512 build of the conversion against the portable one, on values of every
    /// kind (ties, subnormals, infinities, an odd width, padding past the pairs).
    #[test]
    fn every_conversion_level_matches_the_portable_one() {
        let special = [
            1.0 + 1.0 / 256.0,
            f32::from_bits(3),
            -f32::from_bits(9),
            f32::INFINITY,
            -0.0,
            f32::MAX,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -1.0 - 3.0 / 256.0,
        ];
        for (m, k, stride) in [(3, 7, 5), (2, 64, 48), (5, 1, 16), (4, 33, 17), (3, 95, 64)] {
            let mut x = values(m * k, 9);
            let len = x.len();
            for (i, v) in special.iter().enumerate() {
                x[i * 3 % len] = *v;
            }
            let (mut a, mut b) = (vec![7u32; m * stride], vec![9u32; m * stride]);
            portable(&x, m, k, stride, &mut a);
            to_pairs(&x, m, k, stride, &mut b);
            assert_eq!(a, b, "{m} x {k}, stride {stride}");
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx512f") {
                let mut c = vec![5u32; m * stride];
                // SAFETY: the CPU has AVX-512F.
                unsafe { to_pairs_avx512(rows(&x, m, k, stride, &mut c)) };
                assert_eq!(a, c, "avx512 {m} x {k}, stride {stride}");
            }
            #[cfg(target_arch = "x86_64")]
            if avx2_available() {
                let mut c = vec![5u32; m * stride];
                // SAFETY: the CPU has AVX2.
                unsafe { to_pairs_avx2(rows(&x, m, k, stride, &mut c)) };
                assert_eq!(a, c, "avx2 {m} x {k}, stride {stride}");
            }
            #[cfg(target_arch = "x86_64")]
            if simd_available() {
                let mut c = vec![5u32; m * stride];
                // SAFETY: the CPU has AVX-512F and AVX512-BF16; the sizes fit.
                unsafe { to_pairs_cvtne(rows(&x, m, k, stride, &mut c)) };
                assert_eq!(a, c, "vcvtne2ps2bf16 {m} x {k}, stride {stride}");
            }
            for (r, row) in a.chunks(stride).enumerate() {
                for (j, &d) in row.iter().enumerate() {
                    let lo = x
                        .get(r * k + 2 * j)
                        .filter(|_| 2 * j < k)
                        .map_or(0, |&v| bf16_bits(v));
                    let hi = x
                        .get(r * k + 2 * j + 1)
                        .filter(|_| 2 * j + 1 < k)
                        .map_or(0, |&v| bf16_bits(v));
                    assert_eq!(d, lo | hi << 16, "row {r} pair {j}");
                }
            }
        }
    }

    /// Every conversion level on 20,000 random bit patterns (NaN aside: the runtime
    /// refuses it), against [`bf16_bits`] value by value.
    #[test]
    fn every_conversion_level_rounds_random_bits_as_bf16_bits() {
        let mut s = 0x9e37_79b9u32;
        let x: Vec<f32> = std::iter::from_fn(|| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            Some(f32::from_bits(s))
        })
        .filter(|v| !v.is_nan())
        .take(20_000)
        .collect();
        let k = x.len();
        let mut got = vec![1u32; pairs(k)];
        to_pairs(&x, 1, k, pairs(k), &mut got);
        for (j, d) in got.iter().enumerate() {
            let want = bf16_bits(x[2 * j]) | bf16_bits(x[2 * j + 1]) << 16;
            assert_eq!(*d, want, "pair {j}: {:e}, {:e}", x[2 * j], x[2 * j + 1]);
        }
        let mut plain = vec![2u32; pairs(k)];
        portable(&x, 1, k, pairs(k), &mut plain);
        assert_eq!(got, plain);
    }

    /// Hand-checked roundings: ties to even, subnormals to zero, infinity kept.
    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.5), 0x3fc0);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to the even one, 1.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-1.0 - 1.5 / 256.0), 0xbf81);
        assert_eq!(bf16_bits(f32::from_bits(1)), 0);
        assert_eq!(bf16_bits(-f32::from_bits(5)), 0x8000);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
        assert_eq!(bf16_bits(f32::MAX), 0x7f80, "rounds up to infinity");
    }

    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 3, 5),
        (12, 64, 32),
        (13, 37, 47),
        (30, 784, 70),
        (130, 9, 16),
        (17, 33, 100),
    ];

    /// The AVX512-BF16 and AVX2 kernels against the portable one: same bits, for tiles of every
    /// row count, partial panels and an odd input count.
    #[test]
    fn kernels_agree_bit_for_bit() {
        let _mode = smartmixed_core::fpenv::FlushDenormals::set(true);
        // Under Miri (scripts/miri.sh) all but the 784-input shape: each buffer is exactly
        // its size, so Miri reports any access or pointer outside it.
        for (m, k, n) in SHAPES.into_iter().filter(|s| !cfg!(miri) || s.1 < 100) {
            let w = Bf16Weights::new(&values(k * n, 1), k, n).unwrap();
            let mut x = vec![0u32; m * pairs(k)];
            to_pairs(&values(m * k, 2), m, k, pairs(k), &mut x);
            let (mut fast, mut slow) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            w.matmul_avx512(&x, &mut fast, m);
            w.matmul_portable(&x, &mut slow, m);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&slow), "{m} x {k} x {n}");
            let mut avx2 = vec![f32::NAN; m * n];
            w.matmul_avx2(&x, &mut avx2, m);
            assert_eq!(bits(&avx2), bits(&slow), "avx2 {m} x {k} x {n}");
        }
    }

    /// The kernel this CPU picks (AMX where it has it) against the portable one: both sum
    /// the same exact products (a product of two bf16 values is exact in f32), each
    /// within k 2^-24 of the sum of their magnitudes of the exact sum, so within twice
    /// that of each other.
    #[test]
    fn the_chosen_kernel_is_within_the_summation_bound_of_the_portable_one() {
        let _mode = smartmixed_core::fpenv::FlushDenormals::set(true);
        for (m, k, n) in SHAPES {
            let w = Bf16Weights::new(&values(k * n, 5), k, n).unwrap();
            let (xs, rp) = (values(m * k, 6), w.row_pairs());
            let mut x = vec![7u32; m * rp];
            to_pairs(&xs, m, k, rp, &mut x);
            let mut plain = vec![0u32; m * pairs(k)];
            to_pairs(&xs, m, k, pairs(k), &mut plain);
            let (mut got, mut want) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            w.matmul(&x, &mut got, m);
            w.matmul_portable(&plain, &mut want, m);
            for r in 0..m {
                for c in 0..n {
                    let size: f64 = (0..pairs(k))
                        .map(|j| {
                            let (a, b) = (
                                plain[r * pairs(k) + j],
                                w.panels[(c / NR) * pairs(k) * NR + j * NR + c % NR],
                            );
                            (widen(a >> 16) as f64 * widen(b >> 16) as f64).abs()
                                + (widen(a & 0xffff) as f64 * widen(b & 0xffff) as f64).abs()
                        })
                        .sum();
                    let bound = 2.0 * k as f64 * 2f64.powi(-24) * size;
                    let diff = (got[r * n + c] as f64 - want[r * n + c] as f64).abs();
                    assert!(
                        diff <= bound,
                        "{m} x {k} x {n} ({}) at {r},{c}: {diff} > {bound}",
                        w.kernel_name()
                    );
                }
            }
        }
    }

    /// A matmul over many rows against the same rows 16 at a time: the same bits. On AMX
    /// this holds the 32-row blocks (four sum tiles, whole panels stored straight to the
    /// output) to the 16-row ones, on partial panels, partial row blocks and odd widths,
    /// and the K blocking of whole panels over more than 32 rows (784 and 1500 inputs:
    /// 25 and 47 steps, in blocks of at most 16) to one pass over all the steps.
    #[test]
    fn many_rows_at_once_give_the_bits_of_16_at_a_time() {
        let _mode = smartmixed_core::fpenv::FlushDenormals::set(true);
        for (m, k, n) in [
            (32, 784, 64),
            (45, 37, 47),
            (130, 300, 100),
            (17, 33, 32),
            (300, 70, 64),
            (100, 784, 96),
            (70, 1500, 40),
        ] {
            let w = Bf16Weights::new(&values(k * n, 7), k, n).unwrap();
            let rp = w.row_pairs();
            let mut x = vec![0u32; m * rp];
            to_pairs(&values(m * k, 8), m, k, rp, &mut x);
            let (mut whole, mut parts) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            w.matmul(&x, &mut whole, m);
            for r0 in (0..m).step_by(16) {
                let rows = 16.min(m - r0);
                w.matmul(&x[r0 * rp..], &mut parts[r0 * n..(r0 + rows) * n], rows);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&whole),
                bits(&parts),
                "{m} x {k} x {n} ({})",
                w.kernel_name()
            );
        }
    }

    /// Against f32: each input and weight is within 2^-9 of its value (relative), so each
    /// product within 2^-8 + 2^-18 of it, and the f32 sums add at most k * 2^-24 of the
    /// sum of magnitudes: |bf16 - f32| <= (2^-8 + 2^-18 + 2 k 2^-24) sum |w x|.
    #[test]
    fn bf16_sums_are_within_the_rounding_bound_of_f32() {
        let (m, k, n) = (7, 300, 40);
        let (wt, xs) = (values(k * n, 3), values(m * k, 4));
        let w = Bf16Weights::new(&wt, k, n).unwrap();
        let mut x = vec![0u32; m * w.row_pairs()];
        to_pairs(&xs, m, k, w.row_pairs(), &mut x);
        let mut got = vec![0.0; m * n];
        w.matmul(&x, &mut got, m);
        let rel = 2f64.powi(-8) + 2f64.powi(-18) + 2.0 * k as f64 * 2f64.powi(-24);
        for r in 0..m {
            for c in 0..n {
                let (mut exact, mut size) = (0.0f64, 0.0f64);
                for i in 0..k {
                    let p = xs[r * k + i] as f64 * wt[i * n + c] as f64;
                    exact += p;
                    size += p.abs();
                }
                let err = (got[r * n + c] as f64 - exact).abs();
                assert!(err <= rel * size, "row {r} col {c}: {err} > {}", rel * size);
            }
        }
    }
}
