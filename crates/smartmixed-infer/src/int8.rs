//! int8 weights and their matmul ([`crate::Precision::Int8`]): each output neuron's weights
//! scaled symmetrically to i8 (`scale = max |w| / 127`), each layer's input quantised per
//! row at run time, products summed exactly in i32, then dequantised to f32; bias and
//! activations stay f32 (the epilogue is the f32 one). Every layer, the first and the last
//! too, runs in int8 (measured on MNIST: see the README's "Precision" section).
//!
//! Activations are u8 with a zero point, per row: `x ~ s (q - z)`, `q` in 0..=255, the
//! range `[min(0, min x), max(0, max x)]` mapped onto 0..=255 so that 0 is exact. Chosen
//! over s8 with the +128 offset because most of this network's activations are one-sided
//! (relu, sigmoid, elu's range, the pixels): a symmetric s8 range would leave half its
//! codes unused, an asymmetric u8 range spends all 256 on the values a row has. `vpdpbusd`
//! and `tdpbusd` take u8 times s8 as they are; the zero point costs one i32 multiply-add
//! per output: `sum (q - z) w = sum q w - z sum w`, with each column's `sum w` (the i8
//! weights' sum) computed at load.
//!
//! Layout: like the bf16 pair panels, but per quad of inputs: panel `p`, quad `j` holds 32
//! `u32`, column `c`'s being the i8 weights of inputs `4j..4j+4` (lowest byte first), so
//! one `vpdpbusd` multiplies 16 columns by a broadcast quad of u8 inputs. The sums are
//! exact integers on every kernel (at most 255 x 127 x [`MAX_INPUTS`] < 2^31), and one
//! shared function dequantises them, so every kernel gives the portable kernel's bits.
//! Kernels, chosen at load: AMX-INT8 tiles (`tdpbusd`, in `amx.rs`), else AVX512-VNNI,
//! else AVX-VNNI (256-bit), else portable code. The quantiser and the dequantise run in
//! AVX-512 where the CPU has it, else in portable code (the same bits, tested).
//!
//! The quantised input (`q`, in the scratch) is `m` rows of [`Int8Weights::row_quads`]
//! quads, then per row its scale's bits and its zero point: [`Int8Weights::row_words`]
//! words a row in all.

use crate::kernel::avx2_available;

/// Output columns per panel.
const NR: usize = 32;
/// Rows per microkernel tile (24 of the 32 registers hold the sums).
const MR: usize = 12;
/// Rows per chunk: a chunk's quads stay in L2 while every panel passes over them.
const MC: usize = 128;

/// The most inputs an int8 layer may have: its i32 sums stay exact below
/// (2^31 - 1) / (255 x 127) = 66,311 inputs.
pub(crate) const MAX_INPUTS: usize = 65_536;

/// Quads of inputs per row for `k` inputs (the last quad's unused bytes are zero).
fn quads(k: usize) -> usize {
    k.div_ceil(4)
}

/// Each row of `x[m, k]` (row-major f32) quantised to u8 with its own scale and zero
/// point into `out`: `m` rows of `rq` (at least `quads(k)`) quads, zero past `k`, then
/// `m` pairs (scale bits, zero point). A row whose range is below f32's normal range
/// (all zeros, say) gets scale 0 and quantises to zeros; a row with an infinite value gets
/// a non-finite scale, so its outputs are not finite either.
pub(crate) fn quantise(x: &[f32], m: usize, k: usize, rq: usize, out: &mut [u32]) {
    let (codes, params) = out.split_at_mut(m * rq);
    quantise_rows(x, m, k, rq, codes, params);
}

/// [`quantise`] with the rows' quads and their (scale, zero point) pairs in two slices:
/// the epilogue quantises a few rows at a time into their places in a chunk's layout.
pub(crate) fn quantise_rows(
    x: &[f32],
    m: usize,
    k: usize,
    rq: usize,
    codes: &mut [u32],
    params: &mut [u32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512F and AVX-512BW (the packs of 64 codes).
            unsafe { quantise_avx512(x, m, k, rq, codes, params) };
            return;
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { quantise_avx2(x, m, k, rq, codes, params) };
            return;
        }
    }
    quantise_portable(x, m, k, rq, codes, params);
}

/// [`quantise_avx512`] on 256-bit registers, for CPUs with AVX2 (and AVX-VNNI) but no
/// AVX-512. Measured on 256 x 784 values (a Zen 5 EPYC, 3 rounds): 46-51 us a call,
/// against 1.08-1.27 ms portable (0.56-0.63 ms with the portable code merely compiled for
/// AVX2: about a whole int8 pass's time at batch 256) and 31-41 us for the AVX-512 one.
/// The same bits as the portable code, for the reasons given at [`quantise_avx512`]; the
/// last `k % 8` values of a row go through the portable formula itself.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantise_avx2(
    x: &[f32],
    m: usize,
    k: usize,
    rq: usize,
    codes: &mut [u32],
    params: &mut [u32],
) {
    use std::arch::x86_64::*;
    let whole = k & !7;
    for ((row, dst), param) in rows_of(x, m, k, rq, codes, params) {
        let (mut lo, mut hi, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0);
        let p = row.as_ptr();
        for i in (0..whole).step_by(8) {
            // In bounds: i + 8 <= whole <= k.
            let v = _mm256_loadu_ps(p.add(i));
            lo = _mm256_min_ps(v, lo);
            hi = _mm256_max_ps(v, hi);
            nan |= _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        }
        let (mut lanes_lo, mut lanes_hi) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(lanes_lo.as_mut_ptr(), lo);
        _mm256_storeu_ps(lanes_hi.as_mut_ptr(), hi);
        // Lanes hold no NaN and no -0.0, so any order of reduction gives the row's bounds.
        let (mut l, mut h, mut any_nan) = (0.0f32, 0.0f32, nan != 0);
        for &v in lanes_lo.iter().chain(&row[whole..]) {
            l = if v < l { v } else { l };
        }
        for &v in lanes_hi.iter().chain(&row[whole..]) {
            h = if v > h { v } else { h };
        }
        any_nan |= row[whole..].iter().any(|v| v.is_nan());
        let (scale, zero) = if any_nan {
            (f32::NAN, 0.0)
        } else {
            scale_of(l, h)
        };
        let inv_s = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let inv = _mm256_set1_ps(inv_s);
        let (z, top) = (_mm256_set1_ps(zero), _mm256_set1_ps(255.0));
        for i in (0..whole).step_by(8) {
            let v = _mm256_loadu_ps(p.add(i));
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v, inv),
            );
            let t = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(t, z), _mm256_setzero_ps()), top);
            // Codes 0-255 as i32, packed (per 128-bit half) to u16 and then u8: the low
            // word of each half holds its four codes in order.
            let c = _mm256_cvttps_epi32(t);
            let b = _mm256_packus_epi16(_mm256_packus_epi32(c, c), _mm256_packus_epi32(c, c));
            dst[i / 4] = _mm256_extract_epi32::<0>(b) as u32;
            dst[i / 4 + 1] = _mm256_extract_epi32::<4>(b) as u32;
        }
        let code = |v: f32| ((v * inv_s).round_ties_even() + zero).clamp(0.0, 255.0) as u32;
        dst[whole / 4..].fill(0);
        for (i, &v) in row.iter().enumerate().skip(whole) {
            dst[i / 4] |= code(v) << (8 * (i % 4));
        }
        param[0] = scale.to_bits();
        param[1] = zero as u32;
    }
}

/// The rows of `x` (`m` of `k` values), each with its `rq` quads and its (scale, zero
/// point) pair, laid out as [`quantise`] says.
#[allow(clippy::type_complexity)]
fn rows_of<'a>(
    x: &'a [f32],
    m: usize,
    k: usize,
    rq: usize,
    rows: &'a mut [u32],
    params: &'a mut [u32],
) -> impl Iterator<Item = ((&'a [f32], &'a mut [u32]), &'a mut [u32])> {
    x.chunks_exact(k.max(1))
        .zip(rows.chunks_exact_mut(rq.max(1)))
        .zip(params.chunks_exact_mut(2))
        .take(m)
}

/// [`quantise_portable`] in AVX-512 (it took 44% of an int8 pass as portable code
/// compiled for AVX-512: perf, batch 1-256). The same bits: `vminps(v, lo)` is `if v < lo
/// { v } else { lo }` (NaN and -0.0 keep `lo`), `vrndscaleps` rounds to nearest even, and
/// `vmaxps(t, 0)` then `vminps(t, 255)` is the clamp with NaN made 0, as `as u32` makes it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantise_avx512(
    x: &[f32],
    m: usize,
    k: usize,
    rq: usize,
    codes: &mut [u32],
    params: &mut [u32],
) {
    use std::arch::x86_64::*;
    let tail = |len: usize| ((1u32 << len) - 1) as __mmask16;
    // Dword d of the packed codes of four vectors (see below) comes from dword SPREAD[d].
    let spread = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for ((row, dst), param) in rows_of(x, m, k, rq, codes, params) {
        // Four running bounds, so consecutive vectors do not wait for each other's min and
        // max (one pair made this pass latency-bound: a fifth of an int8 pass, with the
        // codes). They hold no NaN and no -0.0, so any order of reduction gives the
        // row's bounds.
        let p = row.as_ptr();
        let zero4 = || [_mm512_setzero_ps(); 4];
        let (mut lo, mut hi, mut nan) = (zero4(), zero4(), 0);
        // Whole steps of four vectors, the accumulators indexed by constants (a run-time
        // index kept them on the stack), then single vectors into the first pair.
        let quad = k & !63;
        for i in (0..quad).step_by(64) {
            for j in 0..4 {
                let v = _mm512_loadu_ps(p.add(i + 16 * j));
                lo[j] = _mm512_min_ps(v, lo[j]);
                hi[j] = _mm512_max_ps(v, hi[j]);
                nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
            }
        }
        for i in (quad..k).step_by(16) {
            // In bounds: the mask covers the row's values from i on (at most 16).
            let v = _mm512_maskz_loadu_ps(tail((k - i).min(16)), p.add(i));
            lo[0] = _mm512_min_ps(v, lo[0]);
            hi[0] = _mm512_max_ps(v, hi[0]);
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        }
        let lo = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
        let hi = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
        let (scale, zero) = if nan != 0 {
            (f32::NAN, 0.0)
        } else {
            scale_of(_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi))
        };
        let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        // The portable formula in integers: the rounded quotient (within +-256 of zero
        // for finite rows; NaN and out-of-range lanes become i32::MIN, below the clamp's
        // 0, as NaN becomes 0 there) plus the zero point (a whole number in 0-255) are
        // exact in i32 as in f32, so the clamped codes are the same.
        let (z, top) = (_mm512_set1_epi32(zero as i32), _mm512_set1_epi32(255));
        let code = |v: __m512| {
            let t = _mm512_cvt_roundps_epi32::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(v, inv),
            );
            _mm512_min_epi32(
                _mm512_max_epi32(_mm512_add_epi32(t, z), _mm512_setzero_si512()),
                top,
            )
        };
        let bytes = dst.as_mut_ptr().cast::<u8>();
        // 64 values at a time: codes 0-255 as i32 packed to u16 and then u8 (both packs
        // interleave per 128-bit lane: lane l ends holding quad l of each of the four
        // vectors), put back in order by one permute, stored as one vector (a masked
        // `vpmovdb` store per 16 values made the quantiser a fifth of an int8 pass).
        let full = k & !63;
        for i in (0..full).step_by(64) {
            let c = [0, 16, 32, 48].map(|o| code(_mm512_loadu_ps(p.add(i + o))));
            let packed = _mm512_packus_epi16(
                _mm512_packus_epi32(c[0], c[1]),
                _mm512_packus_epi32(c[2], c[3]),
            );
            // In bounds: bytes i..i + 64 lie within the row's k <= 4 rq.
            _mm512_storeu_si512(
                bytes.add(i).cast(),
                _mm512_permutexvar_epi32(spread, packed),
            );
        }
        for i in (full..k).step_by(16) {
            let mask = tail((k - i).min(16));
            let v = _mm512_maskz_loadu_ps(mask, p.add(i));
            // In bounds: the mask writes bytes i..min(i + 16, k), within the row's 4 rq.
            _mm512_mask_cvtepi32_storeu_epi8(bytes.add(i).cast(), mask, code(v));
        }
        for b in k..4 * rq {
            *bytes.add(b) = 0;
        }
        param[0] = scale.to_bits();
        param[1] = zero as u32;
    }
}

/// A row's scale and zero point: `[lo, hi]` (containing 0) onto 0..=255. Computed as
/// `hi / 255 - lo / 255` so that no finite row overflows. A row holding NaN (an
/// activation of an infinite value, say) gets a NaN scale, so every output of the layer
/// is NaN for it, as in f32, where a NaN input reaches every sum: otherwise its NaN would
/// quantise to a finite code and the answer would degrade silently.
fn row_scale(row: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi, mut nan) = (0.0f32, 0.0f32, false);
    for &v in row {
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
        nan |= v.is_nan();
    }
    if nan {
        return (f32::NAN, 0.0);
    }
    scale_of(lo, hi)
}

/// The scale and zero point of a row whose values lie in `[lo, hi]` (`lo <= 0 <= hi`).
fn scale_of(lo: f32, hi: f32) -> (f32, f32) {
    let scale = hi / 255.0 - lo / 255.0;
    if scale.is_nan() || scale.is_infinite() {
        return (f32::NAN, 0.0);
    }
    if scale < f32::MIN_POSITIVE {
        return (0.0, 0.0);
    }
    (scale, (-lo / scale).round_ties_even().clamp(0.0, 255.0))
}

#[inline(always)]
fn quantise_portable(
    x: &[f32],
    m: usize,
    k: usize,
    rq: usize,
    codes: &mut [u32],
    params: &mut [u32],
) {
    for ((row, dst), param) in rows_of(x, m, k, rq, codes, params) {
        let (scale, zero) = row_scale(row);
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let code = |v: f32| ((v * inv).round_ties_even() + zero).clamp(0.0, 255.0) as u32;
        let (whole, tail) = row.split_at(k & !3);
        for (d, four) in dst.iter_mut().zip(whole.chunks_exact(4)) {
            *d = code(four[0]) | code(four[1]) << 8 | code(four[2]) << 16 | code(four[3]) << 24;
        }
        if !tail.is_empty() {
            dst[k / 4] = tail
                .iter()
                .enumerate()
                .fold(0, |q, (i, &v)| q | code(v) << (8 * i));
        }
        dst[quads(k)..].fill(0);
        param[0] = scale.to_bits();
        param[1] = zero as u32;
    }
}

/// Which kernel a layer's int8 weights run on.
#[derive(Debug)]
enum Kernel {
    /// AMX tiles (`tdpbusd`), with the weights also in tile order.
    #[cfg(target_arch = "x86_64")]
    Amx(crate::amx::AmxWeights),
    /// AVX512-VNNI `vpdpbusd`.
    Vnni,
    /// AVX-VNNI: `vpdpbusd` on 256-bit registers (CPUs with VNNI but no AVX-512).
    AvxVnni,
    /// AVX2 without VNNI: bytes widened to i16 and `vpmaddwd`, the same exact sums.
    Avx2,
    Portable,
}

/// `W^T` (`[inputs, outputs]`) as i8 quad panels with a scale and an i8 sum per column.
#[derive(Debug)]
pub(crate) struct Int8Weights {
    k: usize,
    n: usize,
    panels: Vec<u32>,
    /// Per output column: `max |w| / 127`.
    scales: Vec<f32>,
    /// Per output column: the sum of its i8 weights (for the inputs' zero point).
    sums: Vec<i32>,
    kernel: Kernel,
}

impl Int8Weights {
    /// Quantises `wt`, `[k, n]` row-major f32 (finite), column by column. `None` if a
    /// buffer cannot be allocated; the caller checks `k <= MAX_INPUTS`.
    pub(crate) fn new(wt: &[f32], k: usize, n: usize) -> Option<Self> {
        let q = quads(k);
        let count = n.div_ceil(NR).checked_mul(q)?.checked_mul(NR)?;
        let mut panels = Vec::new();
        panels.try_reserve_exact(count).ok()?;
        panels.resize(count, 0u32);
        let (mut scales, mut sums) = (Vec::new(), Vec::new());
        scales.try_reserve_exact(n).ok()?;
        sums.try_reserve_exact(n).ok()?;
        for c in 0..n {
            let max = (0..k).fold(0.0f32, |m, i| m.max(wt[i * n + c].abs()));
            let scale = max / 127.0;
            let (mut sum, panel) = (0i32, (c / NR) * q * NR);
            for i in 0..k {
                let w = if scale > 0.0 {
                    (f64::from(wt[i * n + c]) / f64::from(scale))
                        .round_ties_even()
                        .clamp(-127.0, 127.0) as i32
                } else {
                    0
                };
                sum += w;
                panels[panel + (i / 4) * NR + c % NR] |= (w as u8 as u32) << (8 * (i % 4));
            }
            scales.push(scale);
            sums.push(sum);
        }
        let kernel = Self::best_kernel(&panels, q, n)?;
        Some(Self {
            k,
            n,
            panels,
            scales,
            sums,
            kernel,
        })
    }

    /// AMX-INT8 where the CPU and Linux allow it, else AVX512-VNNI, else AVX-VNNI, else
    /// AVX2, else portable code.
    fn best_kernel(panels: &[u32], q: usize, n: usize) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        if amx_available() {
            return crate::amx::AmxWeights::new(panels, q, n).map(Kernel::Amx);
        }
        let _ = (panels, q, n);
        Some(if vnni_available() {
            Kernel::Vnni
        } else if avx_vnni_available() {
            Kernel::AvxVnni
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
            Kernel::Amx(_) => "AMX tiles (tdpbusd)",
            Kernel::Vnni => "AVX512-VNNI (vpdpbusd)",
            Kernel::AvxVnni => "AVX-VNNI (vpdpbusd, 256-bit)",
            Kernel::Avx2 => "AVX2 (vpmaddwd on widened bytes)",
            Kernel::Portable => "portable int8",
        }
    }

    /// Quads to a row of the quantised input (the AMX kernel reads whole tiles of 16).
    pub(crate) fn row_quads(&self) -> usize {
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) => crate::amx::row_pairs(quads(self.k)),
            _ => quads(self.k),
        }
    }

    /// Words a row of the scratch's quantised input takes: its quads, scale and zero point.
    pub(crate) fn row_words(&self) -> usize {
        self.row_quads() + 2
    }

    /// `dst[m, n] = x[m, k] W^T` in int8: `x` quantised into `q` (at least `m *
    /// row_words()` words), the exact i32 sums written over `dst`, then dequantised.
    pub(crate) fn matmul(&self, x: &[f32], q: &mut [u32], dst: &mut [f32], m: usize) {
        let rq = self.row_quads();
        quantise(x, m, self.k, rq, &mut q[..m * (rq + 2)]);
        self.matmul_quantised(q, dst, m);
    }

    /// [`Self::matmul`] on an input already quantised into `q` (as [`quantise`] lays it
    /// out for `m` rows of `row_quads()`).
    pub(crate) fn matmul_quantised(&self, q: &[u32], dst: &mut [f32], m: usize) {
        let rq = self.row_quads();
        let q = &q[..m * (rq + 2)];
        let dst = &mut dst[..m * self.n];
        {
            // SAFETY: i32 and f32 have one size and alignment, every bit pattern is an i32,
            // and `sums` is the only view of `dst` while it lives.
            let sums = unsafe {
                std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<i32>(), dst.len())
            };
            self.sums_into(&q[..m * rq], sums, m);
        }
        self.dequantise(&q[m * rq..], dst);
    }

    /// The integer sums `x W^T` on the chosen kernel (`x`: `m` rows of `row_quads()`).
    fn sums_into(&self, x: &[u32], dst: &mut [i32], m: usize) {
        let rq = self.row_quads();
        assert!(
            x.len() >= m * rq && dst.len() >= m * self.n,
            "int8 matmul sizes"
        );
        match &self.kernel {
            // SAFETY: built only where `amx_available()`; sizes asserted above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(w) => unsafe { w.matmul_i32(x, dst, m) },
            Kernel::Vnni => self.sums_vnni(x, rq, dst, m),
            Kernel::AvxVnni => self.sums_avx_vnni(x, rq, dst, m),
            Kernel::Avx2 => self.sums_avx2(x, rq, dst, m),
            Kernel::Portable => self.sums_portable(x, rq, dst, m),
        }
    }

    /// `dst` (the i32 sums' bits, `[m, n]`) to f32: `((sum - z colsum) as f32 * s_row) *
    /// s_col`, one function for every kernel so that all give the same bits. Compiled
    /// for AVX-512 too (the same operations, so the same bits) and chosen at run time.
    fn dequantise(&self, params: &[u32], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { self.dequantise_avx512(params, dst) };
                return;
            }
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { self.dequantise_avx2(params, dst) };
                return;
            }
        }
        self.dequantise_portable(params, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn dequantise_avx512(&self, params: &[u32], dst: &mut [f32]) {
        self.dequantise_portable(params, dst);
    }

    /// For CPUs with AVX2 but no AVX-512 (as [`quantise_avx2`]): the portable code
    /// compiled for AVX2, 16 us for 256 x 768 values against 55-58 us portable and 12-14
    /// us AVX-512 (forced levels on a Zen 5, 3 rounds).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dequantise_avx2(&self, params: &[u32], dst: &mut [f32]) {
        self.dequantise_portable(params, dst);
    }

    /// A row whose scale is so large (inputs near f32's limit, after preprocessing) that
    /// `sum as f32 * s_row` could overflow, although the product with the small `s_col`
    /// is finite, is dequantised in f64 instead (so int8 answers what f32 answers); every
    /// other row keeps the f32 formula and its bits. The bound: `|sum - z colsum| =
    /// |sum (q - z) w|` is at most 255 x 127 x k.
    #[inline(always)]
    fn dequantise_portable(&self, params: &[u32], dst: &mut [f32]) {
        let largest_sum = (255 * 127 * self.k) as f32;
        for (row, p) in dst
            .chunks_exact_mut(self.n.max(1))
            .zip(params.chunks_exact(2))
        {
            let (scale, zero) = (f32::from_bits(p[0]), p[1] as i32);
            let columns = row.iter_mut().zip(&self.sums).zip(&self.scales);
            if (largest_sum * scale).is_finite() {
                for ((v, &sum), &s) in columns {
                    let acc = v.to_bits() as i32;
                    *v = (acc.wrapping_sub(zero * sum)) as f32 * scale * s;
                }
            } else {
                // (A NaN scale comes here too, and stays NaN.)
                for ((v, &sum), &s) in columns {
                    let acc = v.to_bits() as i32;
                    let exact = f64::from(acc.wrapping_sub(zero * sum)) * f64::from(scale);
                    *v = (exact * f64::from(s)) as f32;
                }
            }
        }
    }

    /// The VNNI kernel on `rq` quads a row (portable code where the CPU lacks it).
    fn sums_vnni(&self, x: &[u32], rq: usize, dst: &mut [i32], m: usize) {
        #[cfg(target_arch = "x86_64")]
        if vnni_available() && quads(self.k) > 0 {
            // SAFETY: the CPU has AVX-512F and AVX512-VNNI; x holds m * rq values and dst
            // m * n (the callers assert it).
            unsafe { vnni::sums(self, x, rq, dst, m) };
            return;
        }
        self.sums_portable(x, rq, dst, m);
    }

    /// The AVX-VNNI kernel on `rq` quads a row (portable code where the CPU lacks it).
    fn sums_avx_vnni(&self, x: &[u32], rq: usize, dst: &mut [i32], m: usize) {
        #[cfg(target_arch = "x86_64")]
        if avx_vnni_available() && quads(self.k) > 0 {
            // SAFETY: the CPU has AVX2 and AVX-VNNI; x holds m * rq values and dst m * n
            // (the callers assert it).
            unsafe { avx_vnni::sums(self, x, rq, dst, m) };
            return;
        }
        self.sums_portable(x, rq, dst, m);
    }

    /// The AVX2 kernel on `rq` quads a row (portable code where the CPU lacks AVX2).
    fn sums_avx2(&self, x: &[u32], rq: usize, dst: &mut [i32], m: usize) {
        #[cfg(target_arch = "x86_64")]
        if avx2_available() && quads(self.k) > 0 {
            // SAFETY: the CPU has AVX2; x holds m * rq values and dst m * n (the callers
            // assert it).
            unsafe { avx2::sums(self, x, rq, dst, m) };
            return;
        }
        self.sums_portable(x, rq, dst, m);
    }

    /// The integer sums in plain code: the reference every kernel must match.
    fn sums_portable(&self, x: &[u32], rq: usize, dst: &mut [i32], m: usize) {
        let (q, n) = (quads(self.k), self.n);
        for r in 0..m {
            let xr = &x[r * rq..r * rq + q];
            for c in 0..n {
                let panel = &self.panels[(c / NR) * q * NR..];
                let mut acc = 0i32;
                for (j, &a) in xr.iter().enumerate() {
                    let b = panel[j * NR + c % NR];
                    for byte in 0..4 {
                        let u = (a >> (8 * byte)) as u8 as i32;
                        let s = (b >> (8 * byte)) as u8 as i8 as i32;
                        acc += u * s;
                    }
                }
                dst[r * n + c] = acc;
            }
        }
    }
}

/// Whether this CPU runs the VNNI kernel.
fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the AVX-VNNI kernel.
fn avx_vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AMX kernel may run: tiles granted ([`crate::amx::available`]) and AMX-INT8
/// (CPUID leaf 7, EDX bit 25).
#[cfg(target_arch = "x86_64")]
fn amx_available() -> bool {
    // `amx::available` checked that CPUID has leaf 7.
    crate::amx::available() && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 25) != 0
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{quads, Int8Weights, MC, MR, NR};

    /// See [`Int8Weights::sums_vnni`]; the caller checked the sizes and the CPU.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn sums(w: &Int8Weights, x: &[u32], rq: usize, dst: &mut [i32], m: usize) {
        let (q, n) = (quads(w.k), w.n);
        for m0 in (0..m).step_by(MC) {
            let rows = MC.min(m - m0);
            for panel in 0..n.div_ceil(NR) {
                let b = w.panels.as_ptr().add(panel * q * NR);
                let col = panel * NR;
                let cols = NR.min(n - col);
                let mut r = 0;
                while r < rows {
                    let take = MR.min(rows - r);
                    // In bounds: row m0 + r < m, so both pointers address a row of `x`
                    // (m * rq values) and of `dst` (m * n values, col < n).
                    let a = x.as_ptr().add((m0 + r) * rq);
                    let c = dst.as_mut_ptr().add((m0 + r) * n + col);
                    // The row count as a constant, so the sums stay in registers.
                    macro_rules! rows {
                        ($($n:literal)*) => {
                            match take {
                                $($n => tile::<$n>(a, rq, q, b, c, n, cols),)*
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

    /// Rows `0..R` (R at most MR) of one panel: `c[r][0..cols] = sum_j a[r][j] . b[j]`
    /// over the `q` quads of rows `rq` apart.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        rq: usize,
        q: usize,
        b: *const u32,
        c: *mut i32,
        n: usize,
        cols: usize,
    ) {
        let mut lo = [_mm512_setzero_si512(); R];
        let mut hi = [_mm512_setzero_si512(); R];
        for j in 0..q {
            let b0 = _mm512_loadu_si512(b.add(j * NR).cast());
            let b1 = _mm512_loadu_si512(b.add(j * NR + 16).cast());
            for r in 0..R {
                let av = _mm512_set1_epi32(*a.add(r * rq + j) as i32);
                lo[r] = _mm512_dpbusd_epi32(lo[r], av, b0);
                hi[r] = _mm512_dpbusd_epi32(hi[r], av, b1);
            }
        }
        let mask = |k: usize| ((1u32 << k.min(16)) - 1) as __mmask16;
        for r in 0..R {
            let row = c.add(r * n);
            _mm512_mask_storeu_epi32(row.cast(), mask(cols), lo[r]);
            // Past 16 columns only: row + 16 would otherwise point past the row's end.
            if cols > 16 {
                _mm512_mask_storeu_epi32(row.add(16).cast(), mask(cols - 16), hi[r]);
            }
        }
    }
}

/// The 256-bit kernel: a panel's 32 columns in four registers a row, three rows a tile
/// (12 of the 16 registers hold the sums).
#[cfg(target_arch = "x86_64")]
mod avx_vnni {
    use std::arch::x86_64::*;

    use super::{quads, Int8Weights, MC, NR};

    const MR: usize = 3;

    /// See [`Int8Weights::sums_avx_vnni`]; the caller checked the sizes and the CPU.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn sums(w: &Int8Weights, x: &[u32], rq: usize, dst: &mut [i32], m: usize) {
        let (q, n) = (quads(w.k), w.n);
        for m0 in (0..m).step_by(MC) {
            let rows = MC.min(m - m0);
            for panel in 0..n.div_ceil(NR) {
                let b = w.panels.as_ptr().add(panel * q * NR);
                let col = panel * NR;
                let cols = NR.min(n - col);
                let mut r = 0;
                while r < rows {
                    let take = MR.min(rows - r);
                    // In bounds: row m0 + r < m, so both pointers address a row of `x`
                    // (m * rq values) and of `dst` (m * n values, col < n).
                    let a = x.as_ptr().add((m0 + r) * rq);
                    let c = dst.as_mut_ptr().add((m0 + r) * n + col);
                    match take {
                        1 => tile::<1>(a, rq, q, b, c, n, cols),
                        2 => tile::<2>(a, rq, q, b, c, n, cols),
                        _ => tile::<3>(a, rq, q, b, c, n, cols),
                    }
                    r += take;
                }
            }
        }
    }

    /// Rows `0..R` of one panel, as the AVX-512 kernel's tile; the sums go through a
    /// block on the stack, and only `cols` of them to `c`.
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        rq: usize,
        q: usize,
        b: *const u32,
        c: *mut i32,
        n: usize,
        cols: usize,
    ) {
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        for j in 0..q {
            let bp = b.add(j * NR);
            let bs = [0, 8, 16, 24].map(|h| _mm256_loadu_si256(bp.add(h).cast()));
            for (r, sums) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*a.add(r * rq + j) as i32);
                for (s, bv) in sums.iter_mut().zip(bs) {
                    *s = _mm256_dpbusd_avx_epi32(*s, av, bv);
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            let mut block = [0i32; NR];
            for (h, s) in sums.iter().enumerate() {
                _mm256_storeu_si256(block.as_mut_ptr().add(8 * h).cast(), *s);
            }
            // In bounds: `cols` values from column `col` lie within row r of `dst`.
            std::ptr::copy_nonoverlapping(block.as_ptr(), c.add(r * n), cols);
        }
    }
}

/// The kernel for AVX2 without VNNI: `vpdpbusd`'s exact sum of four u8 x i8 products per
/// column done as two `vpmaddwd` on the quad's even and odd bytes widened to i16 (each
/// pair of products is at most 2 x 255 x 128 in size: exact in i32; `vpmaddubsw` would
/// saturate at 2^15). A panel's 32 columns in four registers a row, two rows a tile (eight
/// sums, four widened inputs and the widened weights in the 16 registers).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{quads, Int8Weights, MC, NR};

    const MR: usize = 2;

    /// See [`Int8Weights::sums_avx2`]; the caller checked the sizes and the CPU.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sums(w: &Int8Weights, x: &[u32], rq: usize, dst: &mut [i32], m: usize) {
        let (q, n) = (quads(w.k), w.n);
        for m0 in (0..m).step_by(MC) {
            let rows = MC.min(m - m0);
            for panel in 0..n.div_ceil(NR) {
                let b = w.panels.as_ptr().add(panel * q * NR);
                let col = panel * NR;
                let cols = NR.min(n - col);
                for r in (0..rows).step_by(MR) {
                    // In bounds: row m0 + r < m, so both pointers address a row of `x`
                    // (m * rq values) and of `dst` (m * n values, col < n).
                    let a = x.as_ptr().add((m0 + r) * rq);
                    let c = dst.as_mut_ptr().add((m0 + r) * n + col);
                    if rows - r >= 2 {
                        tile::<2>(a, rq, q, b, c, n, cols);
                    } else {
                        tile::<1>(a, rq, q, b, c, n, cols);
                    }
                }
            }
        }
    }

    /// Rows `0..R` of one panel: `c[r][0..cols] = sum_j a[r][j] . b[j]` over the `q`
    /// quads of rows `rq` apart; the sums go through a block on the stack, and only `cols`
    /// of them to `c`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn tile<const R: usize>(
        a: *const u32,
        rq: usize,
        q: usize,
        b: *const u32,
        c: *mut i32,
        n: usize,
        cols: usize,
    ) {
        let low_bytes = _mm256_set1_epi16(0x00ff);
        let mut acc = [[_mm256_setzero_si256(); 4]; R];
        for j in 0..q {
            // Each row's quad broadcast, as u8 widened to i16: bytes 0 and 2 (even), 1 and
            // 3 (odd) of every 32-bit lane.
            let inputs: [(__m256i, __m256i); R] = std::array::from_fn(|r| {
                let av = _mm256_set1_epi32(*a.add(r * rq + j) as i32);
                (_mm256_and_si256(av, low_bytes), _mm256_srli_epi16::<8>(av))
            });
            let bp = b.add(j * NR);
            for h in 0..4 {
                // The weights' bytes as i8 widened to i16, even and odd, as the inputs.
                let bv = _mm256_loadu_si256(bp.add(8 * h).cast());
                let even = _mm256_srai_epi16::<8>(_mm256_slli_epi16::<8>(bv));
                let odd = _mm256_srai_epi16::<8>(bv);
                for (sums, &(ae, ao)) in acc.iter_mut().zip(&inputs) {
                    let pair =
                        _mm256_add_epi32(_mm256_madd_epi16(ae, even), _mm256_madd_epi16(ao, odd));
                    sums[h] = _mm256_add_epi32(sums[h], pair);
                }
            }
        }
        for (r, sums) in acc.iter().enumerate() {
            let mut block = [0i32; NR];
            for (h, s) in sums.iter().enumerate() {
                _mm256_storeu_si256(block.as_mut_ptr().add(8 * h).cast(), *s);
            }
            // In bounds: `cols` values from column `col` lie within row r of `dst`.
            std::ptr::copy_nonoverlapping(block.as_ptr(), c.add(r * n), cols);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bf16::tests::values;

    /// The portable quantiser into one buffer laid out as [`quantise`] says.
    fn portable(x: &[f32], m: usize, k: usize, rq: usize, out: &mut [u32]) {
        let (quads, params) = out.split_at_mut(m * rq);
        quantise_portable(x, m, k, rq, quads, params);
    }

    /// Hand-computed codes: [-1, 3] is 4/255 a step with zero point 63.75, rounded to
    /// 64; 0.5 is 31.875 steps (32 + 64 = 96), 3 is 191.25 (191 + 64 = 255); pixels
    /// k/255 with 0 as the minimum get their own byte back; a row of zeros gets scale 0.
    #[test]
    fn rows_quantise_to_hand_computed_codes() {
        let x = [
            0.5,
            1.0,
            -1.0,
            3.0,
            3.0 / 255.0,
            0.0,
            1.0,
            200.0 / 255.0,
            0.0,
            0.0,
        ];
        let mut q = vec![7u32; 2 * 2 + 4];
        // Rows of 4 (the first two) into 2 quads a row, then a row of 2 zeros.
        portable(&x[..8], 2, 4, 2, &mut q);
        assert_eq!(q[0], 96 | 128 << 8 | 255 << 24, "1: 63.75 + 64 = 128");
        assert_eq!(q[1], 0, "padding");
        assert_eq!(q[2], 3 | 255 << 16 | 200 << 24);
        assert_eq!(
            (f32::from_bits(q[4]), q[5]),
            (3.0 / 255.0 + 1.0 / 255.0, 64)
        );
        assert_eq!((f32::from_bits(q[6]), q[7]), (1.0 / 255.0, 0));
        let mut z = vec![7u32; 3];
        quantise(&x[8..], 1, 2, 1, &mut z);
        assert_eq!(z, [0, 0, 0]);
        // A NaN anywhere in a row: the row's scale is NaN (on every level), so the layer's
        // outputs for it are NaN, not a finite answer.
        for at in [0, 5, 16, 20] {
            let mut row = vec![0.5f32; 21];
            row[at] = f32::NAN;
            for level in 0..2 {
                let mut q = vec![0u32; 6 + 2];
                match level {
                    0 => portable(&row, 1, 21, 6, &mut q),
                    _ => quantise(&row, 1, 21, 6, &mut q),
                }
                assert!(f32::from_bits(q[6]).is_nan(), "NaN at {at}, level {level}");
            }
            let w = Int8Weights::new(&values(21 * 3, 1), 21, 3).unwrap();
            let mut q = vec![0u32; w.row_words()];
            let mut out = [0.0f32; 3];
            w.matmul(&row, &mut q, &mut out, 1);
            assert!(out.iter().all(|v| v.is_nan()), "{out:?}");
        }
    }

    /// The builds of the quantiser and the dequantise this CPU can run besides the
    /// portable one.
    #[cfg(target_arch = "x86_64")]
    fn x86_levels() -> Vec<&'static str> {
        [
            (std::is_x86_feature_detected!("avx2"), "avx2"),
            (
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw"),
                "avx512",
            ),
        ]
        .into_iter()
        .filter_map(|(has, level)| has.then_some(level))
        .collect()
    }

    /// Every quantiser build this CPU runs (AVX2, AVX-512) against the portable one: the
    /// same bits on ties, -0.0, subnormals, NaN and infinity, odd widths, padding quads, a
    /// row of huge range.
    #[test]
    fn every_quantiser_level_matches_the_portable_one() {
        let special = [
            0.5 / 255.0,
            -0.0,
            f32::from_bits(3),
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
        ];
        for (m, k, rq) in [
            (3, 7, 5),
            (2, 64, 32),
            (5, 1, 16),
            (4, 785, 197),
            (9, 33, 9),
            (3, 100, 32),
        ] {
            let mut x = values(m * k, 9);
            for (i, v) in x.iter_mut().enumerate() {
                if i % 3 == 0 {
                    *v = v.abs(); // one-sided stretches, ties at 0.5 steps
                }
            }
            for (i, v) in special.iter().enumerate() {
                x[(i * 37 + 5) % (m * k)] = *v;
            }
            x[0] = f32::MAX;
            x[m * k - 1] = -f32::MAX;
            let (mut a, mut b) = (vec![7u32; m * (rq + 2)], vec![9u32; m * (rq + 2)]);
            portable(&x, m, k, rq, &mut a);
            quantise(&x, m, k, rq, &mut b);
            assert_eq!(a, b, "{m} x {k}, {rq} quads");
            #[cfg(target_arch = "x86_64")]
            for level in x86_levels() {
                let mut c = vec![5u32; m * (rq + 2)];
                // SAFETY: the CPU has the level's instructions (checked above).
                unsafe {
                    match level {
                        "avx2" => {
                            let (quads, params) = c.split_at_mut(m * rq);
                            quantise_avx2(&x, m, k, rq, quads, params)
                        }
                        _ => {
                            let (quads, params) = c.split_at_mut(m * rq);
                            quantise_avx512(&x, m, k, rq, quads, params)
                        }
                    }
                }
                assert_eq!(a, c, "{level} {m} x {k}, {rq} quads");
            }
        }
    }

    const SHAPES: [(usize, usize, usize); 7] = [
        (1, 3, 5),
        (12, 64, 32),
        (13, 37, 47),
        (30, 784, 70),
        (130, 9, 16),
        (17, 33, 100),
        (200, 257, 40),
    ];

    /// Every kernel this CPU has (AVX512-VNNI, AVX-VNNI, AVX2, and the chosen one: AMX where it
    /// has it) against the portable sums: integer sums are exact, so the same i32 values,
    /// hence (one dequantise for all) the same f32 bits.
    #[test]
    fn every_int8_kernel_gives_the_portable_sums() {
        for (m, k, n) in SHAPES {
            let w = Int8Weights::new(&values(k * n, 1), k, n).unwrap();
            let (rq, q) = (w.row_quads(), quads(k));
            let xs = values(m * k, 2);
            let mut chosen = vec![0u32; m * (rq + 2)];
            quantise(&xs, m, k, rq, &mut chosen);
            let mut plain = vec![0u32; m * (q + 2)];
            quantise(&xs, m, k, q, &mut plain);
            let mut want = vec![-1i32; m * n];
            w.sums_portable(&plain, q, &mut want, m);
            let mut vnni = vec![-1i32; m * n];
            w.sums_vnni(&plain, q, &mut vnni, m);
            assert_eq!(vnni, want, "vnni {m} x {k} x {n}");
            let mut avx = vec![-1i32; m * n];
            w.sums_avx_vnni(&plain, q, &mut avx, m);
            assert_eq!(avx, want, "avx-vnni {m} x {k} x {n}");
            let mut avx2 = vec![-1i32; m * n];
            w.sums_avx2(&plain, q, &mut avx2, m);
            assert_eq!(avx2, want, "avx2 {m} x {k} x {n}");
            let mut got = vec![-1i32; m * n];
            w.sums_into(&chosen, &mut got, m);
            assert_eq!(got, want, "{} {m} x {k} x {n}", w.kernel_name());
            assert!(want.iter().any(|&v| v != 0));
        }
        // The extreme products: every code 255 against weights of -127 and 127, where a
        // pair of them (2 x 255 x 127) overflows i16 (`vpmaddubsw` would saturate).
        let (m, k, n) = (3, 64, 40);
        let wt: Vec<f32> = (0..k * n)
            .map(|i: usize| if i.is_multiple_of(3) { 1.0 } else { -1.0 })
            .collect();
        let w = Int8Weights::new(&wt, k, n).unwrap();
        let mut x = vec![0u32; m * (quads(k) + 2)];
        quantise(&vec![1.0; m * k], m, k, quads(k), &mut x);
        assert!(
            x[..m * quads(k)].iter().all(|&v| v == u32::MAX),
            "codes of 255"
        );
        let mut want = vec![0i32; m * n];
        w.sums_portable(&x, quads(k), &mut want, m);
        let by_hand = |c: usize| {
            (0..k)
                .map(|i| {
                    if (i * n + c).is_multiple_of(3) {
                        255 * 127
                    } else {
                        -255 * 127
                    }
                })
                .sum::<i32>()
        };
        assert_eq!(want[n + 7], by_hand(7));
        for (name, sums) in [
            ("vnni", Int8Weights::sums_vnni as fn(&_, &_, _, &mut _, _)),
            ("avx-vnni", Int8Weights::sums_avx_vnni),
            ("avx2", Int8Weights::sums_avx2),
        ] {
            let mut got = vec![-1i32; m * n];
            sums(&w, &x, quads(k), &mut got, m);
            assert_eq!(got, want, "{name}, extreme products");
        }
    }

    /// Every dequantise build this CPU runs (AVX2, AVX-512) against the portable one, bit for bit.
    #[test]
    fn every_dequantise_level_matches_the_portable_one() {
        let (m, n) = (5, 37);
        let w = Int8Weights::new(&values(9 * n, 7), 9, n).unwrap();
        let sums: Vec<f32> = (0..m * n)
            .map(|i| f32::from_bits((i as i32 * 7919 - 90_000) as u32))
            .collect();
        let params: Vec<u32> = (0..m)
            .flat_map(|r| [(0.01 + r as f32 / 7.0).to_bits(), 40 * r as u32])
            .collect();
        let (mut a, mut b) = (sums.clone(), sums.clone());
        w.dequantise_portable(&params, &mut a);
        w.dequantise(&params, &mut b);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b));
        #[cfg(target_arch = "x86_64")]
        for level in x86_levels() {
            let mut c = sums.clone();
            // SAFETY: the CPU has the level's instructions (checked above).
            unsafe {
                match level {
                    "avx2" => w.dequantise_avx2(&params, &mut c),
                    _ => w.dequantise_avx512(&params, &mut c),
                }
            }
            assert_eq!(bits(&a), bits(&c), "{level}");
        }
        // Row 1 (scale 0.01 + 1/7, zero point 40), column 3: sum (n + 3) x 7919 - 90,000.
        let sum = (n as i32 + 3) * 7919 - 90_000 - 40 * w.sums[3];
        assert_eq!(a[n + 3], sum as f32 * (0.01 + 1.0 / 7.0) * w.scales[3]);
    }

    /// The portable sums against an independent reading of the codes: each weight
    /// requantised here from `wt` (round(w / (max|w| / 127))) and each input code from its
    /// row's scale and zero point, summed in i64.
    #[test]
    fn portable_sums_match_an_independent_quantisation() {
        let (m, k, n) = (5, 70, 33);
        let (wt, xs) = (values(k * n, 3), values(m * k, 4));
        let w = Int8Weights::new(&wt, k, n).unwrap();
        let q = quads(k);
        let mut x = vec![0u32; m * (q + 2)];
        quantise(&xs, m, k, q, &mut x);
        let mut got = vec![0i32; m * n];
        w.sums_portable(&x, q, &mut got, m);
        for c in 0..n {
            let max = (0..k).map(|i| wt[i * n + c].abs()).fold(0.0, f32::max);
            for r in 0..m {
                let (s, z) = (f32::from_bits(x[m * q + 2 * r]), x[m * q + 2 * r + 1]);
                let want: i64 = (0..k)
                    .map(|i| {
                        let wq = (wt[i * n + c] as f64 * 127.0 / max as f64).round() as i64;
                        let u = ((xs[r * k + i] / s).round() as i64 + z as i64).clamp(0, 255);
                        wq * u
                    })
                    .sum();
                assert_eq!(got[r * n + c] as i64, want, "row {r} col {c}");
            }
        }
    }

    /// Against f32 (f64 sums of the f32 operands): each input is within half its row's step
    /// `s_x` of its code's value (the clamp at 255 moves it by at most that too), each
    /// weight within half its column's step `s_w`, so each product within
    /// `|x| s_w / 2 + |w| s_x / 2 + s_x s_w / 4`; the sum is exact, and converting it and
    /// the two scalings round three times: `3 x 2^-24` of the result.
    #[test]
    fn int8_matmul_is_within_the_quantisation_bound_of_f32() {
        let (m, k, n) = (7, 300, 40);
        let (wt, mut xs) = (values(k * n, 3), values(m * k, 4));
        for v in &mut xs[..k] {
            *v = v.abs(); // a one-sided row (relu's)
        }
        let w = Int8Weights::new(&wt, k, n).unwrap();
        let mut q = vec![0u32; m * w.row_words()];
        let mut got = vec![0.0; m * n];
        w.matmul(&xs, &mut q, &mut got, m);
        let rq = w.row_quads();
        for r in 0..m {
            let sx = f32::from_bits(q[m * rq + 2 * r]) as f64;
            for c in 0..n {
                let sw = w.scales[c] as f64;
                let (mut exact, mut bound) = (0.0f64, 0.0f64);
                for i in 0..k {
                    let (x, wv) = (xs[r * k + i] as f64, wt[i * n + c] as f64);
                    exact += x * wv;
                    bound += x.abs() * sw / 2.0 + wv.abs() * sx / 2.0 + sx * sw / 4.0;
                }
                let bound = bound * (1.0 + 1e-6) + 3.0 * 2f64.powi(-24) * (exact.abs() + bound);
                let err = (got[r * n + c] as f64 - exact).abs();
                assert!(err <= bound, "row {r} col {c}: {err} > {bound}");
            }
        }
    }

    /// Audit defect 7: inputs near f32's limit (a row's range about 4e38, so its scale
    /// about 1.6e36) overflowed `sum as f32 * s_row` before the column's small scale
    /// brought the product back into range: int8 gave infinities where f32 answers. The
    /// oracle: the exact sums in f64, within the quantisation bound, and finite.
    #[test]
    fn int8_answers_finite_inputs_at_the_edge_of_f32s_range() {
        let (m, k, n) = (2, 13, 16);
        let wt: Vec<f32> = values(k * n, 5).iter().map(|w| w * 0.01).collect();
        let mut xs = values(m * k, 6);
        xs[2] = -2.0e38;
        xs[7] = 2.0e38;
        xs[k + 3] = 3.0e38; // a one-sided extreme row too
        let w = Int8Weights::new(&wt, k, n).unwrap();
        let mut q = vec![0u32; m * w.row_words()];
        let mut got = vec![0.0; m * n];
        w.matmul(&xs, &mut q, &mut got, m);
        let rq = w.row_quads();
        for r in 0..m {
            let sx = f32::from_bits(q[m * rq + 2 * r]) as f64;
            assert!(sx > 1e35, "row {r}: scale {sx}, not the extreme this tests");
            for c in 0..n {
                let sw = w.scales[c] as f64;
                let (mut exact, mut bound) = (0.0f64, 0.0f64);
                for i in 0..k {
                    let (x, wv) = (xs[r * k + i] as f64, wt[i * n + c] as f64);
                    exact += x * wv;
                    bound += x.abs() * sw / 2.0 + wv.abs() * sx / 2.0 + sx * sw / 4.0;
                }
                let v = got[r * n + c];
                assert!(v.is_finite(), "row {r} col {c}: {v} (exact {exact:e})");
                let bound = bound * (1.0 + 1e-6) + 3.0 * 2f64.powi(-24) * (exact.abs() + bound);
                assert!((v as f64 - exact).abs() <= bound, "row {r} col {c}");
            }
        }
    }

    /// The kernels (the chosen one, both VNNIs, portable) and the whole matmul (quantiser and
    /// dequantise too) with every buffer ending, then starting, at a guard page: one
    /// access past a slice faults.
    #[cfg(unix)]
    #[test]
    fn int8_kernels_touch_nothing_past_their_slices() {
        use crate::packed::tests::Guarded;
        let words = |v: &[u32]| v.iter().map(|&u| f32::from_bits(u)).collect::<Vec<f32>>();
        let as_u32 = |g: &mut Guarded| {
            let s = g.slice();
            // SAFETY: u32 and f32 share size and alignment; `s` is not used meanwhile.
            unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u32>(), s.len()) }
        };
        let as_i32 = |g: &mut Guarded| {
            let s = g.slice();
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<i32>(), s.len()) }
        };
        use crate::packed::tests::sizes;
        let rows: Vec<usize> = (1..=13).chain([16, 17, 31, 32, 33, 48]).collect();
        for k in sizes([1, 3, 257], [1, 67]) {
            for n in sizes([1, 15, 16, 17, 31, 32, 33, 40], [1, 17, 33]) {
                let w = Int8Weights::new(&values(k * n, 5), k, n).unwrap();
                for &m in if cfg!(miri) { &[1, 2, 17][..] } else { &rows } {
                    let xs = values(m * k, 6);
                    let (rq, q) = (w.row_quads(), quads(k));
                    let mut plain = vec![0u32; m * (q + 2)];
                    quantise(&xs, m, k, q, &mut plain);
                    let mut want = vec![0i32; m * n];
                    w.sums_portable(&plain, q, &mut want, m);
                    for at_end in [true, false] {
                        let mut x = Guarded::new(&words(&plain[..m * q]), at_end);
                        for kernel in 0..3 {
                            let mut d = Guarded::new(&vec![0.0; m * n], at_end);
                            let (x, d) = (as_u32(&mut x), as_i32(&mut d));
                            match kernel {
                                0 => w.sums_vnni(x, q, d, m),
                                1 => w.sums_avx_vnni(x, q, d, m),
                                _ => w.sums_portable(x, q, d, m),
                            }
                            assert_eq!(&*d, &want[..], "{m}x{k}x{n} kernel {kernel}");
                        }
                        let mut chosen = vec![0u32; m * (rq + 2)];
                        quantise(&xs, m, k, rq, &mut chosen);
                        let mut x = Guarded::new(&words(&chosen[..m * rq]), at_end);
                        let mut d = Guarded::new(&vec![0.0; m * n], at_end);
                        w.sums_into(as_u32(&mut x), as_i32(&mut d), m);
                        assert_eq!(&*as_i32(&mut d), &want[..], "{m}x{k}x{n} chosen");
                        let mut src = Guarded::new(&xs, at_end);
                        let mut qg = Guarded::new(&vec![0.0; m * w.row_words()], at_end);
                        let mut d = Guarded::new(&vec![0.0; m * n], at_end);
                        w.matmul(src.slice(), as_u32(&mut qg), d.slice(), m);
                    }
                }
            }
        }
    }
}
