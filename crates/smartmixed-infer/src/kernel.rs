//! The two steps of a layer: the matmul (the `gemm` crate, which picks AVX2/FMA or
//! AVX-512 at run time) and the epilogue over contiguous activation blocks.

use smartmixed_core::Activation;

/// `dst[m, n] = lhs[m, k] * rhs[k, n]`, all row-major and contiguous.
pub fn matmul(
    lhs: &[f32],
    rhs: &[f32],
    dst: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
) {
    assert!(
        lhs.len() >= m * k && rhs.len() >= k * n && dst.len() >= m * n,
        "matmul sizes"
    );
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
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
            parallelism,
        )
    }
}

/// A contiguous block of neurons sharing an activation.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub activation: &'static Activation,
    pub start: usize,
    pub len: usize,
}

/// Adds the bias to every row and applies each block's activation in place.
pub fn epilogue(out: &mut [f32], bias: &[f32], blocks: &[Block]) {
    for row in out.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
        for blk in blocks {
            (blk.activation.forward_in_place)(&mut row[blk.start..blk.start + blk.len]);
        }
    }
}
