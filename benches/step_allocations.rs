//! Heap allocations of one training step at batch 128 on the representative network
//! (784-768-512-512-256-256-128-10), counted by a global allocator over every thread,
//! after five warm-up steps: how many calls and how many bytes each step asks for, for the
//! fixed-ReLU step, phase 1 and phase 2, with dfdx's tensor cache off and on.
//!
//! `cargo bench --bench step_allocations`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{lookup, PAPER_POOL};
use smartmixed_train::{train_step, Adam, Network, TrainConfig, TrainPool};

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        CALLS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new, Ordering::Relaxed);
        System.realloc(ptr, layout, new)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const WIDTHS: [usize; 8] = [784, 768, 512, 512, 256, 256, 128, 10];
const BATCH: usize = 128;
const STEPS: usize = 20;

fn main() {
    let cfg = TrainConfig::from_toml_str("[model]\nhidden = [1]\n", "bench").unwrap();
    let pool = TrainPool::new(0, true).unwrap();
    for cache in [false, true] {
        let dev = Cpu::default();
        if cache {
            dev.enable_cache();
        }
        let mut rng = StdRng::seed_from_u64(0);
        let x: Vec<f32> = (0..BATCH * 784).map(|_| rng.gen()).collect();
        let mut y = vec![0.0f32; BATCH * 10];
        for r in 0..BATCH {
            y[r * 10 + rng.gen_range(0..10)] = 1.0;
        }
        let names = PAPER_POOL.iter().map(|n| lookup(n).unwrap()).collect();
        let p1 = Network::selective(&dev, &WIDTHS, names, 0.3, &mut rng);
        let p2 = p1.to_mixed(None).unwrap();
        let relu = Network::fixed(&dev, &WIDTHS, lookup("relu").unwrap(), &mut rng);
        for (work, mut net, noisy) in [
            ("relu", relu, false),
            ("phase1", p1, true),
            ("phase2", p2, false),
        ] {
            let mut adam = Adam::new(&net.params(), 1e-4).unwrap();
            let mut noise = StdRng::seed_from_u64(1);
            let (mut xs, mut ys) = (x.clone(), y.clone());
            let mut run = |n: usize| {
                pool.install(|| {
                    for _ in 0..n {
                        let xt = dev.tensor_from_vec(std::mem::take(&mut xs), (BATCH, 784));
                        let yt = dev.tensor_from_vec(std::mem::take(&mut ys), (BATCH, 10));
                        let noise = noisy.then_some(&mut noise);
                        train_step(&mut net, &mut adam, xt, yt, noise, &cfg).unwrap();
                        (xs, ys) = (x.clone(), y.clone());
                    }
                })
            };
            run(5);
            let (c0, b0) = (CALLS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
            run(STEPS);
            let calls = (CALLS.load(Ordering::Relaxed) - c0) as f64 / STEPS as f64;
            let bytes = (BYTES.load(Ordering::Relaxed) - b0) as f64 / STEPS as f64;
            // The batch copies (x, y) are the caller's, counted out.
            let batch_bytes = (x.len() + y.len()) * 4;
            println!(
                "{work:7} cache {:3}: {calls:6.0} allocations, {:8.1} KiB per step (besides the batch's {} KiB)",
                if cache { "on" } else { "off" },
                (bytes - batch_bytes as f64) / 1024.0,
                batch_bytes / 1024
            );
        }
    }
}
