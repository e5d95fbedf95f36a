//! A forward pass split over threads by output columns, layer by layer: threads take
//! groups of a layer's 32-column weight panels from a shared counter, compute those columns
//! for all rows (matmul and epilogue) and wait at a barrier before the next layer. Every
//! thread reads only the weights of its groups, so small batches, which are bound by
//! reading weights, scale with threads, which splitting rows cannot do (every thread would
//! read all of them); taking groups rather than fixed halves keeps a thread the host slows
//! (measured: one vCPU 15-25% slower than the other) from holding the other at the
//! barrier. Used with packed weights (AVX-512) and bf16 weights on AMX or AVX512-BF16
//! (each layer's input as bf16 pairs, which each thread writes for its own columns after
//! its epilogue, so every thread's share of the weights stays in its own L2 across calls);
//! each value is computed as on one thread, so the bits are the same. A thread that panics
//! marks the pass failed; threads waiting at the barrier, or about to take work, see the
//! mark and stop, so none waits forever for the thread that panicked.

use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::pool::{Lease, Panic, Wait};
use super::Shared;
use crate::kernel::GEMV_ROWS;
use crate::model::Layer;
use crate::packed::NR;

/// A barrier for the threads of a lease that spins (the threads are all running this
/// call and the wait is microseconds), yielding and marking the call stalled if it lasts.
/// `failed` releases it: a thread that panicked never arrives.
struct SpinBarrier<'l, 'a> {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    lease: &'l Lease<'a>,
    failed: &'l AtomicBool,
}

impl<'l, 'a> SpinBarrier<'l, 'a> {
    fn new(lease: &'l Lease<'a>, failed: &'l AtomicBool) -> Self {
        Self {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            lease,
            failed,
        }
    }

    /// Waits for every thread; `false` (at once, or while waiting) if the pass failed,
    /// after which the barrier is not used again (the threads stop).
    fn wait(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.lease.threads() {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return !self.failed.load(Ordering::Acquire);
        }
        // Every thread's share of a layer is small (below 128 rows): a wait past STALL is
        // a thread the OS is not running.
        let mut wait = Wait::new(self.lease);
        while self.generation.load(Ordering::Acquire) == generation {
            if self.failed.load(Ordering::Acquire) {
                return false;
            }
            wait.pause(|| true);
        }
        !self.failed.load(Ordering::Acquire)
    }
}

/// Panels per work item: in f32 the GEMV's four-panel group below GEMV_ROWS rows, else
/// two (a 768-wide layer is then 12 items, so a thread slowed by the host hands items over
/// and the threads still reach the barrier together); in bf16 four, since an item's
/// epilogue and conversion cost a call per block whatever its width (on AMX, 2 threads,
/// batch 32: 196-211k rows/s with four panels, 179-187k with two, 168-180k with one).
fn panels_per_item(batch: usize, bf16: bool) -> usize {
    if bf16 || batch < GEMV_ROWS {
        4
    } else {
        2
    }
}

/// Whether [`forward`] can run `layers`: all with packed weights, or all in bf16 on a
/// kernel that computes panels on their own.
pub(crate) fn splits(layers: &[Layer]) -> bool {
    layers.iter().all(|l| l.packed().is_some())
        || layers
            .iter()
            .all(|l| l.bf16().is_some_and(|w| w.splits_by_columns()))
}

/// Runs `layers` on `batch` rows of `input` on the threads of `lease` (the caller's
/// included), writing `output`. `bufs` are three working buffers of `batch * widest`
/// values: the layer's input, its pre-activations and its activations; `pairs` two of
/// `batch * pair_width` bf16 pairs (a bf16 layer's input, and the next one's). The layers
/// must pass [`splits`]. A panic on any thread is returned (see [`Lease::run`]); `output`
/// then holds unspecified values.
pub(crate) fn forward(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    bufs: [&mut [f32]; 3],
    pairs: [&mut [u32]; 2],
    output: &mut [f32],
    lease: &Lease<'_>,
) -> Result<(), Panic> {
    let widest = layers.iter().map(|l| l.outputs).max().unwrap_or(0);
    let classes = layers.last().map_or(0, |l| l.outputs);
    let bf16 = layers.first().is_some_and(|l| l.bf16().is_some());
    let rp = |l: &Layer| l.bf16().map_or(0, |w| w.row_pairs());
    let pw = layers.iter().map(rp).max().unwrap_or(0);
    assert!(
        bufs.iter().all(|b| b.len() >= batch * widest)
            && pairs.iter().all(|q| q.len() >= batch * pw)
            && output.len() >= batch * classes
            && input.len() >= batch * layers.first().map_or(0, |l| l.inputs)
            && splits(layers),
        "split forward sizes"
    );
    let [x, p, y] = bufs.map(Shared::new);
    let [qa, qb] = pairs.map(Shared::new);
    let out = Shared::new(output);
    let failed = AtomicBool::new(false);
    let barrier = SpinBarrier::new(lease, &failed);
    // Work items are tickets numbered across layers: layer i owns tickets base_i..end_i. A
    // thread takes tickets until one lies past its layer, and keeps that one for the next.
    let tickets = AtomicUsize::new(0);
    let per_item = panels_per_item(batch, bf16);
    let layers_on = |t: usize| {
        let (mut x, p, mut y) = (x, p, y);
        let (mut qx, mut qy) = (qa, qb);
        let last = layers.len() - 1;
        let mut held = tickets.fetch_add(1, Ordering::Relaxed);
        if bf16 {
            // The input as pairs, rows shared out between the threads, before any matmul.
            let (k, threads) = (layers[0].inputs, lease.threads());
            let rows = batch * t / threads..batch * (t + 1) / threads;
            // SAFETY: qx holds batch * pw values (asserted); these rows are this thread's.
            let q = unsafe { qx.rows(rows.clone(), rp(&layers[0])) };
            let src = &input[rows.start * k..rows.end * k];
            crate::bf16::to_pairs(src, rows.len(), k, rp(&layers[0]), q);
            if !barrier.wait() {
                return;
            }
        }
        let mut base = 0;
        for (i, layer) in layers.iter().enumerate() {
            let (k, n) = (layer.inputs, layer.outputs);
            let all = n.div_ceil(NR);
            let end = base + all.div_ceil(per_item);
            // SAFETY: every thread has passed the barrier that ended the previous layer's
            // writes to `x` (or `x` is the caller's input), and no thread writes `x`
            // during this layer: writes go to `p`, `y` and `out` only.
            let src: &[f32] = if i == 0 {
                input
            } else {
                unsafe { std::slice::from_raw_parts(x.0, batch * k) }
            };
            let dst = if i == last { out } else { p };
            // After a panic elsewhere the answer is lost: take no more work.
            while held < end && !failed.load(Ordering::Relaxed) {
                let item = held - base;
                let panels = item * per_item..((item + 1) * per_item).min(all);
                let cols = panels.start * NR..(panels.end * NR).min(n);
                // SAFETY: dst holds batch * n values (asserted via widest / classes), and
                // ticket `held` is this thread's alone, so are its columns `cols`.
                unsafe { matmul_cols(layer, src, qx.0, dst.0, batch, panels) };
                if i == last {
                    // SAFETY: as above, columns `cols` of `out` are this thread's alone.
                    unsafe { add_bias_cols(dst.0, &layer.bias, batch, cols) };
                } else {
                    // SAFETY: this thread wrote columns `cols` of `p` just above, and no
                    // other thread writes those columns of `y` during this layer.
                    unsafe { epilogue_cols(layer, p.0, y.0, batch, cols.clone()) };
                    if bf16 {
                        // SAFETY: this thread wrote columns `cols` of `y` just above; no
                        // thread reads `qy` during this layer (it is the next one's
                        // input), and only this one writes these columns' pairs.
                        unsafe { pairs_cols(y.0, qy.0, batch, n, rp(&layers[i + 1]), cols) };
                    }
                }
                held = tickets.fetch_add(1, Ordering::Relaxed);
            }
            base = end;
            if i == last {
                // No barrier: `Lease::run` returns once every thread has finished.
                return;
            }
            std::mem::swap(&mut x, &mut y);
            std::mem::swap(&mut qx, &mut qy);
            if !barrier.wait() {
                return;
            }
        }
    };
    let run = |t: usize| {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| layers_on(t))) {
            // Before unwinding on: the other threads stop waiting for this one.
            failed.store(true, Ordering::Release);
            resume_unwind(payload);
        }
    };
    lease.run(&run)
}

/// Columns `cols` (panels `panels`) of `dst[m, n] = src[m, k] * W^T`: the packed matmul,
/// or below GEMV_ROWS rows the packed GEMV per row (as [`Layer`]'s own matmul, so the bits
/// are one thread's); in bf16 the kernel's panels on `pairs`, the input as bf16 pairs.
///
/// # Safety
/// `dst` must be valid for `m * n` values, and no other thread may touch columns `cols`;
/// for a bf16 layer `pairs` must hold `m * row_pairs` values no thread writes meanwhile.
unsafe fn matmul_cols(
    layer: &Layer,
    src: &[f32],
    pairs: *const u32,
    dst: *mut f32,
    m: usize,
    panels: Range<usize>,
) {
    let (k, n) = (layer.inputs, layer.outputs);
    if let Some(w) = layer.bf16() {
        let x = std::slice::from_raw_parts(pairs, m * w.row_pairs());
        w.matmul_panels(x, dst, m, panels);
        return;
    }
    let Some(packed) = layer.packed() else {
        unreachable!("split forward without packed weights");
    };
    if m >= GEMV_ROWS {
        packed.matmul_panels(src, dst, m, panels);
    } else {
        for r in 0..m {
            packed.gemv_panels(&src[r * k..(r + 1) * k], dst.add(r * n), panels.clone());
        }
    }
}

/// `y = act(p + bias)` on columns `cols` of every row, each block clipped to them.
///
/// # Safety
/// `p` and `y` must be valid for `m * n` values; columns `cols` of `y` must be this
/// thread's alone and those of `p` written.
unsafe fn epilogue_cols(layer: &Layer, p: *const f32, y: *mut f32, m: usize, cols: Range<usize>) {
    layer.activate_cols(p, y, m, cols);
}

/// Columns `cols` of `y` (`m` rows of `n`) as the next layer's bf16 pairs in `q` (`rp` to
/// a row); the thread with the last columns also zeroes the padding pairs past them.
///
/// # Safety
/// `y` must be valid for `m * n` values with columns `cols` written, `q` for `m * rp`;
/// `cols.start` must be even (panels are 32 columns) and these pairs this thread's alone.
unsafe fn pairs_cols(
    y: *const f32,
    q: *mut u32,
    m: usize,
    n: usize,
    rp: usize,
    cols: Range<usize>,
) {
    let first = cols.start / 2;
    let width = if cols.end == n {
        rp - first
    } else {
        cols.len() / 2
    };
    let rows = crate::bf16::Rows {
        x: y.add(cols.start),
        xs: n,
        m,
        k: cols.len(),
        out: q.add(first),
        os: rp,
        width,
    };
    // SAFETY: each row's columns `cols` of `y` and pairs first..first + width of `q` lie
    // within their buffers (the caller's contract), the pairs this thread's alone.
    crate::bf16::to_pairs_rows(rows);
}

/// `out += bias` on columns `cols` of every row.
///
/// # Safety
/// `out` must be valid for `m * bias.len()` values, columns `cols` this thread's alone.
unsafe fn add_bias_cols(out: *mut f32, bias: &[f32], m: usize, cols: Range<usize>) {
    let n = bias.len();
    for r in 0..m {
        let row = std::slice::from_raw_parts_mut(out.add(r * n + cols.start), cols.len());
        for (v, b) in row.iter_mut().zip(&bias[cols.clone()]) {
            *v += b;
        }
    }
}
