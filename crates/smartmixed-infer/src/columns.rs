//! Small batches on several threads: every hidden layer's output columns are split between
//! the threads, so each reads only its share of the weights (a batch of 1 to a few dozen
//! rows is bound by reading them), with one barrier per layer. Thread `t`'s activations
//! live in its own buffer; the next layer's product sums over those buffers, one block of
//! weight rows each, so no thread ever writes where another reads.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::RwLock;

use smartmixed_core::fpenv::FlushDenormals;

use crate::kernel::{add_bias, layer_matmul};
use crate::model::{Layer, Post};

/// Per thread: two activation buffers (even and odd layers: a thread overwrites one only
/// after the barrier that ends every read of it) and its pre-activations.
#[derive(Debug, Default)]
pub(crate) struct ColumnBuffers {
    acts: Vec<[RwLock<Vec<f32>>; 2]>,
    pre: Vec<Vec<f32>>,
}

/// The buffers of one call, each at least `len` long.
pub(crate) struct Sized<'a> {
    acts: &'a [[RwLock<Vec<f32>>; 2]],
    pre: &'a mut [Vec<f32>],
}

impl ColumnBuffers {
    /// Grows to `threads` threads' buffers of at least `len` values (no allocation once
    /// they are that large).
    pub(crate) fn sized(&mut self, threads: usize, len: usize) -> Sized<'_> {
        self.acts.resize_with(threads, Default::default);
        self.pre.resize_with(threads, Vec::new);
        let grow = |v: &mut Vec<f32>| {
            if v.len() < len {
                v.resize(len, 0.0);
            }
        };
        for pair in &mut self.acts {
            for lock in pair.iter_mut() {
                grow(lock.get_mut().unwrap_or_else(|e| e.into_inner()));
            }
        }
        self.pre.iter_mut().for_each(grow);
        Sized {
            acts: &self.acts[..threads],
            pre: &mut self.pre[..threads],
        }
    }
}

/// Thread `t`'s columns of `n` outputs split over `threads`.
fn share(n: usize, t: usize, threads: usize) -> Range<usize> {
    n * t / threads..n * (t + 1) / threads
}

/// A barrier that spins (the waits are microseconds: one layer of a small batch) and that
/// a panicking thread poisons, so the others panic instead of waiting forever.
struct SpinBarrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
    threads: usize,
}

impl SpinBarrier {
    fn new(threads: usize) -> Self {
        Self {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            threads,
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            assert!(
                !self.poisoned.load(Ordering::Relaxed),
                "another forward thread panicked"
            );
            if spins < 1 << 14 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Poisons the barrier if its thread unwinds.
struct PoisonOnPanic<'a>(&'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::Relaxed);
        }
    }
}

/// The network on `batch` rows with every hidden layer's columns split over `threads`
/// threads (the caller's and `threads - 1` scoped ones); the output layer, ten-odd
/// columns, is computed by the caller's thread alone.
pub(crate) fn run(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    threads: usize,
    bufs: Sized<'_>,
    output: &mut [f32],
    post: &impl Post,
) {
    let barrier = SpinBarrier::new(threads);
    let Sized { acts, pre } = bufs;
    let (first, rest) = pre.split_at_mut(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = rest
            .iter_mut()
            .enumerate()
            .map(|(i, pre)| {
                let barrier = &barrier;
                s.spawn(move || {
                    let _mode = FlushDenormals::set(true);
                    let _poison = PoisonOnPanic(barrier);
                    hidden_layers(
                        layers,
                        input,
                        batch,
                        i + 1,
                        threads,
                        acts,
                        pre,
                        barrier,
                        post,
                    )
                })
            })
            .collect();
        {
            let _poison = PoisonOnPanic(&barrier);
            hidden_layers(
                layers,
                input,
                batch,
                0,
                threads,
                acts,
                &mut first[0],
                &barrier,
                post,
            );
        }
        output_layer(layers, batch, threads, acts, output);
        for h in handles {
            // A panic in a worker is a bug; re-raise it on the caller's thread.
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
}

/// Thread `t`'s columns of every hidden layer, a barrier after each.
#[allow(clippy::too_many_arguments)]
fn hidden_layers(
    layers: &[Layer],
    input: &[f32],
    batch: usize,
    t: usize,
    threads: usize,
    acts: &[[RwLock<Vec<f32>>; 2]],
    pre: &mut [f32],
    barrier: &SpinBarrier,
    post: &impl Post,
) {
    let hidden = &layers[..layers.len() - 1];
    for (l, layer) in hidden.iter().enumerate() {
        let (k, n) = (layer.inputs, layer.outputs);
        let cols = share(n, t, threads);
        let pre = &mut pre[..batch * cols.len()];
        if l == 0 {
            let w = &layer.weight_t[cols.start..];
            layer_matmul(input, w, n, pre, (batch, k, cols.len()), false);
        } else {
            pre.fill(0.0);
            block_products(layer, batch, threads, acts, (l - 1) % 2, cols.clone(), pre);
        }
        let mut out = acts[t][l % 2].write().unwrap_or_else(|e| e.into_inner());
        post(pre, layer, cols.clone(), &mut out[..batch * cols.len()]);
        drop(out);
        barrier.wait();
    }
}

/// `pre += sum over threads s of acts_s * W^T[s's rows, cols]`: the product with the
/// previous layer's activations, read from each thread's buffer `parity`.
fn block_products(
    layer: &Layer,
    batch: usize,
    threads: usize,
    acts: &[[RwLock<Vec<f32>>; 2]],
    parity: usize,
    cols: Range<usize>,
    pre: &mut [f32],
) {
    let n = layer.outputs;
    for (s, pair) in acts.iter().enumerate() {
        let rows = share(layer.inputs, s, threads);
        if rows.is_empty() || cols.is_empty() {
            continue;
        }
        let src = pair[parity].read().unwrap_or_else(|e| e.into_inner());
        let w = &layer.weight_t[rows.start * n + cols.start..];
        let dims = (batch, rows.len(), cols.len());
        layer_matmul(&src[..batch * rows.len()], w, n, pre, dims, true);
    }
}

/// The output layer over every thread's last activations, into `output`.
fn output_layer(
    layers: &[Layer],
    batch: usize,
    threads: usize,
    acts: &[[RwLock<Vec<f32>>; 2]],
    output: &mut [f32],
) {
    let last = layers.len() - 1;
    let layer = &layers[last];
    let out = &mut output[..batch * layer.outputs];
    out.fill(0.0);
    block_products(
        layer,
        batch,
        threads,
        acts,
        (last - 1) % 2,
        0..layer.outputs,
        out,
    );
    add_bias(out, &layer.bias);
}
