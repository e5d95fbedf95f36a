//! A forward pass split by rows: chunks of rows taken from a shared counter, each running
//! the whole network (so the epilogue is parallel too and threads never wait on each
//! other within a call; a helper that has not begun when the caller runs out of chunks is
//! called off); and the pass on the calling thread alone. Either way a chunk's
//! activations live in the thread's own few rows of the buffers, reused chunk after
//! chunk, so a large batch's working set stays in cache (whole-batch buffers made batch
//! 4096 run at 0.6-0.75x batch 256's rate: 12 MB of activations a layer from memory).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::pool::{Lease, Panic};
use super::{pair_width, Bufs, Hooks, Post, Shared};
use crate::kernel::{add_bias, GEMV_ROWS};
use crate::model::Layer;

/// The fewest rows of a bf16 pass's chunk (see [`chunk_rows`]).
const BF16_LEAST_CHUNK: usize = 16;
/// The most rows of a chunk: the packed kernel's row chunk; in bf16 and int8 the AMX
/// kernel's (see [`most_rows`]).
const MOST_CHUNK: usize = 128;
const MOST_REDUCED_CHUNK: usize = 256;

/// The most rows of a chunk in f32, or in bf16 and int8 (`reduced`).
fn most_rows(reduced: bool) -> usize {
    if reduced {
        MOST_REDUCED_CHUNK
    } else {
        MOST_CHUNK
    }
}

/// Rows a chunk of a split pass takes: about four chunks per thread, so a thread the host
/// slows takes fewer; at least 32 rows (one thread's matmul at 32 rows runs within 10% of
/// its speed at 256) and at most [`MOST_CHUNK`]. Below `least` rows a thread, one chunk a
/// thread (the packed matmul's cost per row from 8 rows is within 20% of its cost at 32).
/// In bf16 and int8 (`reduced`) at least 16 rows (one AMX tile), one chunk a thread, and
/// at most 256 rows: every chunk reads all the weights (3 MB in bf16 for 784-768-...-10,
/// more than a core's L2), and the AMX kernel reuses each weight tile over the chunk's
/// rows. Measured on 2 threads (AMX, 1 s runs, 3 rounds alternating): batch 256 at
/// 362-388k rows/s in 128-row chunks against 304-350k in 64-row ones; batch 4096 at
/// 374-436k in 256-row chunks against 353-380k in 128-row ones.
fn chunk_rows(batch: usize, threads: usize, reduced: bool) -> usize {
    let (least, per) = if reduced {
        (BF16_LEAST_CHUNK, 1)
    } else {
        (32.min(batch.div_ceil(threads)), 4)
    };
    (batch / (per * threads)).clamp(least, most_rows(reduced))
}

/// The most rows one chunk can hold: a tail under GEMV_ROWS joins the chunk before it.
fn region_rows(chunk: usize) -> usize {
    chunk + GEMV_ROWS - 1
}

/// Rows the working buffers of a pass over `batch` rows need, on one thread or split over
/// up to `threads` (each thread its own region of [`region_rows`]).
pub(super) fn buffer_rows(batch: usize, threads: usize, reduced: bool) -> usize {
    let alone = batch.min(region_rows(most_rows(reduced)));
    let split = (2..=threads)
        .map(|t| t * region_rows(chunk_rows(batch, t, reduced)))
        .max()
        .unwrap_or(0);
    alone.max(split)
}

/// The chunks of `0..batch` of `chunk` rows, in order; a tail under GEMV_ROWS joins the
/// chunk before it (alone it would take the GEMV, whose bits differ from the matmul's, and
/// every split must give one thread's bits).
fn chunk(batch: usize, chunk: usize, index: usize) -> Option<std::ops::Range<usize>> {
    let start = index.checked_mul(chunk)?;
    if start >= batch || (start > 0 && batch - start < GEMV_ROWS) {
        return None;
    }
    let end = (start + chunk).min(batch);
    Some(start..if batch - end < GEMV_ROWS { batch } else { end })
}

/// Runs `layers` on `batch` rows over the threads of `lease` (buffers of
/// [`buffer_rows`] rows, see [`Bufs`]). A panic on any thread is returned (see
/// [`Lease::run`]).
pub(super) fn forward(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    bufs: Bufs<'_>,
    output: &mut [f32],
    hooks: Hooks<'_>,
    lease: &Lease<'_>,
) -> Result<(), Panic> {
    let widest = layers.iter().map(|l| l.outputs).max().unwrap_or(0);
    let inputs = layers.first().map_or(0, |l| l.inputs);
    let classes = layers.last().map_or(0, |l| l.outputs);
    let pw = pair_width(layers);
    let size = chunk_rows(batch, lease.threads(), pw > 0);
    let region = region_rows(size);
    let Bufs { a, b, q } = bufs;
    let rows = lease.threads() * region;
    assert!(
        a.len() >= rows * widest
            && b.len() >= rows * widest
            && q.len() >= rows * pw
            && output.len() >= batch * classes
            && input.len() >= batch * inputs,
        "row split sizes"
    );
    let next = AtomicUsize::new(0);
    let (a, b, out) = (Shared::new(a), Shared::new(b), Shared::new(output));
    let q = Shared::new(q);
    lease.run_shared(&|t| {
        let mine = t * region..(t + 1) * region;
        // SAFETY: the buffers hold threads * region rows (asserted above) and region `t`
        // is thread t's alone.
        let mut bufs = unsafe {
            Bufs {
                a: a.rows(mine.clone(), widest),
                b: b.rows(mine.clone(), widest),
                q: q.rows(mine, pw),
            }
        };
        while let Some(rows) = chunk(batch, size, next.fetch_add(1, Ordering::Relaxed)) {
            // SAFETY: `out` holds batch * classes values (asserted above); each chunk is
            // taken once, so its rows are this thread's alone.
            let out = unsafe { out.rows(rows.clone(), classes) };
            let x = &input[rows.start * inputs..rows.end * inputs];
            if hooks.finite(x, rows.start * inputs) {
                network(layers, x, rows.len(), bufs.reborrow(), out, hooks.post);
            }
        }
    })
}

/// The network on `batch` rows on this thread, [`most_rows`] rows at a time (buffers of
/// [`buffer_rows`] rows).
pub(super) fn alone(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    bufs: Bufs<'_>,
    output: &mut [f32],
    hooks: Hooks<'_>,
) {
    let inputs = layers.first().map_or(0, |l| l.inputs);
    let classes = layers.last().map_or(0, |l| l.outputs);
    let reduced = pair_width(layers) > 0;
    let mut bufs = bufs;
    for index in 0.. {
        let Some(rows) = chunk(batch, most_rows(reduced), index) else {
            return;
        };
        let out = &mut output[rows.start * classes..rows.end * classes];
        let x = &input[rows.start * inputs..rows.end * inputs];
        if hooks.finite(x, rows.start * inputs) {
            network(layers, x, rows.len(), bufs.reborrow(), out, hooks.post);
        }
    }
}

/// The network on `batch` rows (at most a region's) on this thread: each hidden layer's
/// matmul writes `b` and its epilogue (or `post`) writes `a`; the last layer writes
/// `output`. A bf16 or int8 layer's input goes through `q` (bf16 pairs, or int8 codes
/// with their scales): the epilogue before such a layer writes it itself, a few rows at a
/// time ([`epilogue_in_steps`]).
fn network(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    bufs: Bufs<'_>,
    output: &mut [f32],
    post: Option<&Post<'_>>,
) {
    let Bufs { a, b, q } = bufs;
    let last = layers.len() - 1;
    // Whether `q` holds this layer's input already (bf16 pairs or int8 codes).
    let mut prepared = false;
    for (i, layer) in layers.iter().enumerate() {
        let (k, n) = (layer.inputs, layer.outputs);
        let dst = if i == last {
            &mut output[..batch * n]
        } else {
            &mut b[..batch * n]
        };
        match (layer.bf16(), layer.int8()) {
            (Some(w), _) if prepared => w.matmul(&q[..batch * w.row_pairs()], dst, batch),
            (_, Some(w)) if prepared => w.matmul_quantised(q, dst, batch),
            _ => {
                let src: &[f32] = if i == 0 { input } else { &a[..batch * k] };
                layer.matmul(src, dst, batch, q);
            }
        }
        if i == last {
            add_bias(output, &layer.bias);
            return;
        }
        let pre = &b[..batch * n];
        let next = &layers[i + 1];
        prepared = post.is_none() && (next.bf16().is_some() || next.int8().is_some());
        match (post, next.bf16(), next.int8()) {
            (Some(post), ..) => post(pre, layer, &mut a[..batch * n]),
            (None, Some(w), _) => {
                let rp = w.row_pairs();
                epilogue_in_steps(pre, layer, a, |x, rows| {
                    let q = &mut q[rows.start * rp..rows.end * rp];
                    crate::bf16::to_pairs(x, rows.len(), n, rp, q);
                });
            }
            (None, _, Some(w)) => {
                let rq = w.row_quads();
                let (codes, params) = q[..batch * (rq + 2)].split_at_mut(batch * rq);
                epilogue_in_steps(pre, layer, a, |x, rows| {
                    let codes = &mut codes[rows.start * rq..rows.end * rq];
                    let params = &mut params[2 * rows.start..2 * rows.end];
                    crate::int8::quantise_rows(x, rows.len(), n, rq, codes, params);
                });
            }
            (None, None, None) => layer.activate(pre, &mut a[..batch * n]),
        }
    }
}

/// Rows of [`epilogue_in_steps`]'s steps: their activations (24 KB for 768 neurons) stay
/// in L1 between the epilogue and the conversion, and each activation runs once per block
/// for the 8 rows. On AMX, 2 threads, batch 4096 (3 rounds alternating): 514-518k rows/s
/// in 8-row steps, 495-528k a row at a time (a call per row and block), 340-489k all
/// the chunk's rows at once (256 rows of f32 through L2).
const EPILOGUE_ROWS: usize = 8;

/// `act(pre + bias)` of every row, [`EPILOGUE_ROWS`] rows at a time into the first rows
/// of `a`, each step handed to `convert` with its rows' range: the next layer's input
/// made from activations still in L1 (bf16 pairs, or int8 codes as
/// [`crate::int8::quantise`] lays them out).
fn epilogue_in_steps(
    pre: &[f32],
    layer: &Layer,
    a: &mut [f32],
    mut convert: impl FnMut(&[f32], std::ops::Range<usize>),
) {
    let n = layer.outputs;
    let rows = pre.len() / n.max(1);
    for r0 in (0..rows).step_by(EPILOGUE_ROWS) {
        let r1 = rows.min(r0 + EPILOGUE_ROWS);
        let x = &mut a[..(r1 - r0) * n];
        layer.activate(&pre[r0 * n..r1 * n], x);
        convert(x, r0..r1);
    }
}
