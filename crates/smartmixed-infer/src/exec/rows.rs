//! A forward pass split by rows: chunks of rows taken from a shared counter, each running
//! the whole network (so the epilogue is parallel too and threads never wait on each
//! other within a call; a helper that has not begun when the caller runs out of chunks is
//! called off); and the pass on the calling thread alone.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::pool::{Lease, Panic};
use super::{pair_width, Bufs, Post, Shared};
use crate::kernel::{add_bias, epilogue, GEMV_ROWS};
use crate::model::Layer;

/// The fewest rows of a bf16 pass's chunk (see [`forward`]).
const BF16_LEAST_CHUNK: usize = 16;

/// Runs `layers` on `batch` rows over the threads of `lease` (see [`Bufs`] for the
/// buffers' sizes). A panic on any thread is returned (see [`Lease::run`]).
pub(super) fn forward(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    bufs: Bufs<'_>,
    output: &mut [f32],
    post: Option<&Post<'_>>,
    lease: &Lease<'_>,
) -> Result<(), Panic> {
    let widest = layers.iter().map(|l| l.outputs).max().unwrap_or(0);
    let inputs = layers.first().map_or(0, |l| l.inputs);
    let classes = layers.last().map_or(0, |l| l.outputs);
    let pw = pair_width(layers);
    let Bufs { a, b, q } = bufs;
    assert!(
        a.len() >= batch * widest
            && b.len() >= batch * widest
            && q.len() >= batch * pw
            && output.len() >= batch * classes
            && input.len() >= batch * inputs,
        "row split sizes"
    );
    // Rows in chunks taken from a shared counter, about four per thread, so a thread the
    // host slows takes fewer; at least 32 rows (one thread's matmul at 32 rows runs within
    // 10% of its speed at 256) and at most 128 (the packed kernel's row chunk). In bf16 at
    // least 16 (one AMX tile of rows): a bf16 pass costs the same a row from 16 rows to
    // 256 (perf stat task-clock, 17-19 us a row), so batch 32 runs on two threads.
    // Below `least` rows a thread, one chunk a thread (the packed matmul's cost per row
    // from 8 rows is within 20% of its cost at 32).
    let least = if pw > 0 {
        BF16_LEAST_CHUNK
    } else {
        32.min(batch.div_ceil(lease.threads()))
    };
    let chunk = (batch / (4 * lease.threads())).clamp(least, 128);
    let next = AtomicUsize::new(0);
    let (a, b, out) = (Shared::new(a), Shared::new(b), Shared::new(output));
    let q = Shared::new(q);
    lease.run_shared(&|_| loop {
        let start = next.fetch_add(1, Ordering::Relaxed) * chunk;
        // A tail under GEMV_ROWS joins the chunk before it: alone it would take the GEMV,
        // whose bits differ from the matmul's (every split must give one thread's bits).
        if start >= batch || (start > 0 && batch - start < GEMV_ROWS) {
            return;
        }
        let end = (start + chunk).min(batch);
        let rows = start..if batch - end < GEMV_ROWS { batch } else { end };
        // SAFETY: `a` and `b` hold batch * widest values and `out` batch * classes (asserted
        // above); this chunk is this thread's alone, so are its rows of each.
        let (a, b, q, out) = unsafe {
            (
                a.rows(rows.clone(), widest),
                b.rows(rows.clone(), widest),
                q.rows(rows.clone(), pw),
                out.rows(rows.clone(), classes),
            )
        };
        let x = &input[rows.start * inputs..rows.end * inputs];
        alone(layers, x, rows.len(), Bufs { a, b, q }, out, post);
    })
}

/// The network on `batch` rows on this thread: each hidden layer's matmul writes `b` and
/// its epilogue (or `post`) writes `a`; the last layer writes `output`; a bf16 layer's
/// input goes through `q` as bf16 pairs.
pub(super) fn alone(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    bufs: Bufs<'_>,
    output: &mut [f32],
    post: Option<&Post<'_>>,
) {
    let Bufs { a, b, q } = bufs;
    let last = layers.len() - 1;
    for (i, layer) in layers.iter().enumerate() {
        let (k, n) = (layer.inputs, layer.outputs);
        let src: &[f32] = if i == 0 { input } else { &a[..batch * k] };
        if i == last {
            layer.matmul(src, output, batch, q);
            add_bias(output, &layer.bias);
        } else {
            // Pre-activations go to `b`; the activations back to `a`, the next input.
            layer.matmul(src, &mut b[..batch * n], batch, q);
            let (pre, out) = (&b[..batch * n], &mut a[..batch * n]);
            match post {
                None => epilogue(pre, &layer.bias, &layer.blocks, out),
                Some(post) => post(pre, layer, out),
            }
        }
    }
}
