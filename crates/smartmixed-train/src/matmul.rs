//! The three products of a dense layer's training step on `gemm` 0.19 (AVX-512, AVX2+FMA or
//! portable microkernels, chosen at run time), split over the current rayon pool (the
//! run's [`crate::pool::TrainPool`]). Row-major slices; `W` is `[out, in]` as PyTorch
//! stores it, so every transpose is a stride, never a copy.

use crate::pool::{threads_for, SPLIT_FROM_MULTIPLY_ADDS};

/// `(len >= a * b)` without overflow: a product that wraps is a size no slice can have.
fn holds(len: usize, a: usize, b: usize) -> bool {
    a.checked_mul(b).is_some_and(|p| len >= p)
}

/// One strided product `dst[m, n] (+)= lhs[m, k] * rhs[k, n]` over the current rayon pool;
/// every stride pair is (row, column), so a transposed view is a swapped pair.
fn product(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs): (&mut [f32], usize, usize),
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let threads = threads_for(
        m.saturating_mul(n).saturating_mul(k),
        SPLIT_FROM_MULTIPLY_ADDS,
    );
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the callers below pass each slice as a dense matrix or its transpose, whose
    // size they asserted with `holds`; the largest element addressed, (rows - 1) * rs +
    // (cols - 1) * cs, is then the matrix's last one, inside the slice. dst is a &mut, so
    // it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// The destination of one column share, sent to the task that writes it.
#[derive(Clone, Copy)]
struct SharePtr(*mut f32);
// SAFETY: a SharePtr is only dereferenced (by gemm) inside the share it was made for; the
// shares of one product are disjoint column ranges, so no two threads touch one element.
unsafe impl Send for SharePtr {}
unsafe impl Sync for SharePtr {}

/// Forward: `out[b, n] = x[b, k] * W[n, k]^T`. gemm's own threading does not split this
/// shape (batch 128: one thread did all the work, measured), so the output columns, which
/// are contiguous rows of `W`, are split into one share per pool thread, each a
/// single-threaded product.
pub fn forward(x: &[f32], w: &[f32], out: &mut [f32], b: usize, k: usize, n: usize) {
    assert!(
        holds(x.len(), b, k) && holds(w.len(), n, k) && holds(out.len(), b, n),
        "dense forward sizes"
    );
    if k == 0 {
        return out[..b * n].fill(0.0);
    }
    if b == 0 || n == 0 {
        return;
    }
    // One share per pool thread, always (the same columns in each, so the same results);
    // run in order on this thread when too small to split.
    let shares = rayon::current_num_threads().min(n);
    let macs = b.saturating_mul(n).saturating_mul(k);
    let split = threads_for(macs, SPLIT_FROM_MULTIPLY_ADDS) > 1;
    let dst = SharePtr(out.as_mut_ptr());
    let columns = move |t: usize| {
        let cols = n * t / shares..n * (t + 1) / shares;
        let w = &w[cols.start * k..cols.end * k];
        let dst = dst;
        // SAFETY: `out` holds b * n values (asserted); this share writes rows 0..b,
        // columns `cols` (row stride n), all inside it, and no other share writes those
        // columns; x and w hold the b * k and cols.len() * k values read.
        unsafe {
            gemm::gemm(
                b,
                cols.len(),
                k,
                dst.0.add(cols.start),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    if !split {
        // On this thread: a spawned share would wake an idle worker to steal it.
        return (0..shares).for_each(columns);
    }
    rayon::scope(|s| {
        for t in 0..shares {
            s.spawn(move |_| columns(t));
        }
    });
}

/// Weight gradient: `gw[n, k] += g[b, n]^T * x[b, k]`, computed as the transposed product
/// `gw^T[k, n] += x^T g` (measured 15% faster for these shapes).
pub fn grad_weight(g: &[f32], x: &[f32], gw: &mut [f32], b: usize, k: usize, n: usize) {
    assert!(
        holds(g.len(), b, n) && holds(x.len(), b, k) && holds(gw.len(), n, k),
        "dense weight-gradient sizes"
    );
    // gw^T[k, n] (row stride 1, column stride k) += x^T[k, b] * g[b, n].
    product((k, n, b), (gw, 1, k), true, (x, 1, k), (g, n, 1));
}

/// Input gradient: `gx[b, k] += g[b, n] * W[n, k]`.
pub fn grad_input(g: &[f32], w: &[f32], gx: &mut [f32], b: usize, k: usize, n: usize) {
    assert!(
        holds(g.len(), b, n) && holds(w.len(), n, k) && holds(gx.len(), b, k),
        "dense input-gradient sizes"
    );
    product((b, k, n), (gx, k, 1), true, (g, n, 1), (w, k, 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
    }

    /// Each product against the triple loop in f64, on odd sizes and on 1 and 3 threads: a
    /// product too small to split, and one above [`SPLIT_FROM_MULTIPLY_ADDS`] that three
    /// threads share.
    #[test]
    fn products_match_the_naive_loops() {
        for (b, k, n) in [(13, 29, 17), (65, 130, 127)] {
            products_match_the_naive_loops_at(b, k, n);
        }
        const { assert!(65 * 130 * 127 >= SPLIT_FROM_MULTIPLY_ADDS) };
    }

    fn products_match_the_naive_loops_at(b: usize, k: usize, n: usize) {
        let (x, w, g) = (values(b * k, 1.0), values(n * k, 2.0), values(b * n, 3.0));
        let (gw0, gx0) = (values(n * k, 4.0), values(b * k, 5.0));
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (mut out, mut gw, mut gx) = (vec![f32::NAN; b * n], gw0.clone(), gx0.clone());
            pool.install(|| {
                forward(&x, &w, &mut out, b, k, n);
                grad_weight(&g, &x, &mut gw, b, k, n);
                grad_input(&g, &w, &mut gx, b, k, n);
            });
            let close = |got: f32, want: f64, what: &str| {
                assert!((got as f64 - want).abs() < 1e-4, "{what}: {got} vs {want}")
            };
            for r in 0..b {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * w[j * k + i] as f64)
                        .sum();
                    close(out[r * n + j], want, "forward");
                }
            }
            for j in 0..n {
                for i in 0..k {
                    let want: f64 = gw0[j * k + i] as f64
                        + (0..b)
                            .map(|r| g[r * n + j] as f64 * x[r * k + i] as f64)
                            .sum::<f64>();
                    close(gw[j * k + i], want, "weight gradient");
                }
            }
            for r in 0..b {
                for i in 0..k {
                    let want: f64 = gx0[r * k + i] as f64
                        + (0..n)
                            .map(|j| g[r * n + j] as f64 * w[j * k + i] as f64)
                            .sum::<f64>();
                    close(gx[r * k + i], want, "input gradient");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "dense forward sizes")]
    fn sizes_that_overflow_are_refused() {
        let mut out = vec![];
        forward(&[], &[], &mut out, 1 << 62, 4, 4);
    }
}
