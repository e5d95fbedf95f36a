//! The two steps of a layer: the matmul (the `gemm` crate, which picks AVX2/FMA or
//! AVX-512 at run time; single-threaded, the model parallelises over rows) and the
//! epilogue over contiguous activation blocks.

use smartmixed_core::Activation;

/// `dst[m, n] = lhs[m, k] * rhs[k, n]`, all row-major and contiguous.
pub fn matmul(lhs: &[f32], rhs: &[f32], dst: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(
        lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n,
        "matmul sizes"
    );
    // SAFETY: the three slices hold at least the m*k, k*n and m*n elements addressed by the
    // strides below (asserted above), and dst does not alias lhs or rhs (&mut).
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

/// Rows below this count use [`gemv`] instead of the blocked matmul.
pub const GEMV_ROWS: usize = 4;

/// `y[n] = x[k] * wt[k, n]` for one row: an axpy per input that skips zero inputs, so the
/// weight rows of zero pixels and of inactive ReLU neurons are never read (latency at
/// batch 1 is bound by reading the weights).
pub fn gemv(x: &[f32], wt: &[f32], y: &mut [f32], k: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        return unsafe { gemv_avx2(x, wt, y, k, n) };
    }
    gemv_body(x, wt, y, k, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn gemv_avx2(x: &[f32], wt: &[f32], y: &mut [f32], k: usize, n: usize) {
    gemv_body(x, wt, y, k, n)
}

#[inline(always)]
fn gemv_body(x: &[f32], wt: &[f32], y: &mut [f32], k: usize, n: usize) {
    let y = &mut y[..n];
    y.fill(0.0);
    for (xv, row) in x[..k].iter().zip(wt.chunks_exact(n)) {
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

/// A contiguous block of neurons sharing an activation.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub activation: &'static Activation,
    pub start: usize,
    pub len: usize,
}

/// `out = act(pre + bias)` for every row, each block with its activation: one pass.
pub fn epilogue(pre: &[f32], bias: &[f32], blocks: &[Block], out: &mut [f32]) {
    let n = bias.len();
    for (p, o) in pre.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for blk in blocks {
            let r = blk.start..blk.start + blk.len;
            (blk.activation.apply)(&p[r.clone()], &bias[r.clone()], &mut o[r]);
        }
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
