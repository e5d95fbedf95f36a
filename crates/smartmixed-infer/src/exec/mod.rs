//! The execution layer: how a forward pass over a model's layers runs on the threads of a
//! [`Pool`], in the buffers of a [`Scratch`]. One place decides the strategy:
//!
//! - below [`F32_COLUMN_SPLIT_BELOW`] rows (or `4 x threads`) with packed f32 weights
//!   (AVX-512), or in bf16 below the kernel's own count (32 rows on AMX and on
//!   AVX512-BF16), split by output columns layer by layer ([`columns`]): each thread
//!   reads only its share of the weights, so batch 1 scales;
//! - from `4 x threads` rows, split by rows ([`rows`]): chunks of rows, each running the
//!   whole network, so threads never wait for each other within a call, and a helper the
//!   OS has not run is called off instead of waited for ([`pool::Lease::run_shared`]);
//! - else, and whenever the pool has no idle thread to lend (other callers are computing
//!   or waiting), on the calling thread alone.
//!
//! Every split gives the bits one thread gives.

mod columns;
mod pool;
mod rows;

pub(crate) use pool::{locked, Panic};
pub use pool::{Pool, MAX_THREADS};

use std::sync::atomic::{AtomicUsize, Ordering};

use smartmixed_core::fpenv::FlushDenormals;

use crate::model::Layer;

/// Batches of fewer rows than this are split by columns with f32 packed weights (at
/// least `4 x threads`, where rows split; bf16 kernels say their own,
/// [`crate::bf16::Bf16Weights::column_split_below`]). From 16 rows, two threads each
/// running half the rows through the whole network beat two threads sharing each
/// layer's columns: measured on 2 cores (784-768-...-10,
/// medians of 4 alternating runs) batch 16 at 35-37k rows/s against 30k, 32 at 38-40k
/// against 36k, 64 at 42-44k against 33k; at batch 8 columns win (30k against 23-25k). The
/// column split waits at a barrier after every layer, and on a virtual machine whose
/// host deschedules a virtual CPU for milliseconds, that wait is the pass's whole time.
const F32_COLUMN_SPLIT_BELOW: usize = 16;

/// Per-caller buffers for [`crate::Model::forward`]; they grow to the largest batch seen
/// and are then reused, so repeated calls allocate nothing. Buffers only: the threads
/// belong to the model's [`Pool`], so a caller never needs to know the core count.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) a: Vec<f32>,
    pub(crate) b: Vec<f32>,
    /// The third buffer of a column-split pass.
    pub(crate) c: Vec<f32>,
    /// Preprocessed inputs of [`crate::Model::forward_raw`].
    pub(crate) raw: Vec<f32>,
    /// A bf16 layer's input as bf16 pairs, or an int8 layer's as u8 quads and scales.
    q: Vec<u32>,
    /// The next bf16 layer's input in a column-split pass.
    q2: Vec<u32>,
    /// The pool workers lent to the current call.
    helpers: Vec<usize>,
}

impl Scratch {
    /// Empty buffers; they grow on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What a hidden layer does after its matmul: `out = f(pre)` over `[rows, outputs]`. The
/// grouped epilogue unless a benchmark passes its own.
pub(crate) type Post<'a> = dyn Fn(&[f32], &Layer, &mut [f32]) + Sync + 'a;

/// What a pass does besides running the layers.
#[derive(Clone, Copy, Default)]
pub(crate) struct Hooks<'a> {
    /// A benchmark's own epilogue instead of the grouped one.
    pub(crate) post: Option<&'a Post<'a>>,
    /// Where given, the input is checked finite inside the pass, each chunk its own rows
    /// before computing them (in parallel, and while they are in cache for the first
    /// layer: a separate check on the calling thread took 10% of a 4096-row bf16 call on
    /// AMX, all of it with the other threads idle). A chunk with a value that is not
    /// finite is skipped and lowers this to that value's index (so it ends as the first
    /// such index of the input); the output then holds unspecified values.
    pub(crate) first_bad: Option<&'a AtomicUsize>,
}

impl Hooks<'_> {
    /// False, having recorded the index, where `rows` (starting at `offset` of the input)
    /// hold a value that is not finite and the input is checked in the pass.
    fn finite(&self, rows: &[f32], offset: usize) -> bool {
        let Some(bad) = self.first_bad else {
            return true;
        };
        match crate::model::first_non_finite(rows) {
            None => true,
            Some(i) => {
                bad.fetch_min(offset + i, Ordering::Relaxed);
                false
            }
        }
    }
}

/// A buffer several threads write in disjoint parts (rows or column ranges), each part
/// read only by its writer or after the writes have ended (a barrier, or the end of
/// [`pool::Lease::run`]).
pub(crate) struct Shared<T = f32>(pub(crate) *mut T);
impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}
// SAFETY: see the type's contract; every use states which part a thread owns.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub(crate) fn new(buf: &mut [T]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// Rows `rows` of a row-major buffer `width` values wide.
    ///
    /// # Safety
    /// The buffer must hold `rows.end * width` values, and no other thread may touch these
    /// rows while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn rows(&self, rows: std::ops::Range<usize>, width: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(rows.start * width), rows.len() * width)
    }
}

/// `len` values of `buf` from a 64-byte boundary, `buf` grown to hold them (a scratch
/// buffer only grows). Aligned because AMX reads a tile row as 64 bytes (one cache line
/// only when aligned; see [`crate::amx::aligned`]) and a 64-byte vector load across two
/// lines costs two.
pub(crate) fn grown<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    let slack = 64 / std::mem::size_of::<T>().max(1);
    if buf.len() < len + slack {
        // A fresh zeroed allocation (calloc: the kernel's zero pages, faulted in where the
        // threads first write) rather than `resize`, which zeroes it all on this thread
        // first (20 MB for 10k MNIST rows); every user overwrites what it reads.
        *buf = vec![T::default(); len + slack];
    }
    let start = buf.as_ptr().align_offset(64).min(slack);
    &mut buf[start..start + len]
}

/// Working buffers of a pass by rows ([`rows::buffer_rows`] rows): `a` and `b` `widest`
/// f32s a row, `q` a reduced-precision layer's input (`pair_width` a row; empty for f32
/// models).
pub(crate) struct Bufs<'a> {
    pub(crate) a: &'a mut [f32],
    pub(crate) b: &'a mut [f32],
    pub(crate) q: &'a mut [u32],
}

impl Bufs<'_> {
    /// The same buffers for one more pass (a chunk of a batch).
    pub(crate) fn reborrow(&mut self) -> Bufs<'_> {
        Bufs {
            a: self.a,
            b: self.b,
            q: self.q,
        }
    }
}

/// `q` words per row the widest reduced-precision layer input needs (bf16 pairs, int8
/// quads and their scale; 0 in f32).
fn pair_width(layers: &[Layer]) -> usize {
    layers.iter().map(Layer::q_words).max().unwrap_or(0)
}

/// Runs `layers` on `batch` rows of `input` (sizes checked, values finite) into `output`,
/// on the calling thread and whatever threads `pool` lends. A panic in a split pass, on
/// any of its threads, is returned; one in a pass on the calling thread alone unwinds
/// (the model turns both into errors).
pub(crate) fn forward(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    scratch: &mut Scratch,
    output: &mut [f32],
    pool: &Pool,
    hooks: Hooks<'_>,
) -> Result<(), Panic> {
    // Subnormal inputs or activations cost up to 85x on x86 (measured at batch 256): every
    // thread computing this call flushes them to zero (the pool's workers always do), and
    // the caller's thread gets its own mode back when the guard drops, so an embedding
    // service's floating-point environment is never left changed.
    let _mode = FlushDenormals::set(true);
    let below = if layers.iter().all(|l| l.packed().is_some()) {
        F32_COLUMN_SPLIT_BELOW.max(4 * pool.threads())
    } else {
        layers
            .iter()
            .map(|l| l.bf16().map_or(0, |w| w.column_split_below()))
            .min()
            .unwrap_or(0)
    };
    // A pool of one thread never splits (nor grows the split's buffers).
    let columns = hooks.post.is_none()
        && pool.threads() > 1
        && (1..below).contains(&batch)
        && columns::splits(layers);
    // Split by rows only from 4 rows a thread: a second thread on the matmul alone costs
    // more than it saves below that (measured).
    let helpers = if columns || batch >= 4 * pool.threads() {
        pool.threads() - 1
    } else {
        0
    };
    // Small batches (the column split's): the whole input checked before anything else,
    // and not again should the pass run alone after all.
    let hooks = if columns {
        if !hooks.finite(input, 0) {
            return Ok(());
        }
        Hooks {
            first_bad: None,
            ..hooks
        }
    } else {
        hooks
    };
    let Scratch {
        a,
        b,
        c,
        q,
        q2,
        helpers: lent,
        ..
    } = scratch;
    // Grown before borrowing workers: a first large call's allocation holds up no one.
    // The column split holds whole layers; passes by rows only their chunks' rows.
    let pw = pair_width(layers);
    let rows = if columns {
        batch
    } else {
        rows::buffer_rows(batch, helpers + 1, pw > 0)
    };
    let len = rows * layers.iter().map(|l| l.outputs).max().unwrap_or(0);
    let (a, b) = (grown(a, len), grown(b, len));
    let c = if columns { grown(c, len) } else { &mut c[..0] };
    let q = grown(q, rows * pw);
    let q2 = if columns {
        grown(q2, rows * pw)
    } else {
        &mut q2[..0]
    };
    let lease = pool.enter(helpers, lent, !columns);
    if lease.threads() == 1 {
        rows::alone(layers, input, batch, Bufs { a, b, q }, output, hooks);
        Ok(())
    } else if columns {
        columns::forward(layers, input, batch, [a, b, c], [q, q2], output, &lease)
    } else {
        rows::forward(
            layers,
            input,
            batch,
            Bufs { a, b, q },
            output,
            hooks,
            &lease,
        )
    }
}
