//! One training step at batch 128 on the paper's representative architecture
//! (784-768-512-512-256-256-128-10): the fixed-ReLU baseline, phase 1 and phase 2.
//! `TRAIN_STEP_WIDTHS=13,64,32,3 TRAIN_STEP_BATCH=32` measures another shape (that one is
//! wine's `SmartMixedClassifier` fit).
//!
//! After criterion's report, the three steps are timed again interleaved (A B C A B C ...)
//! so that the printed ratios phase1/relu and phase2/relu come from the same stretch of a
//! shared, noisy machine.

use std::time::{Duration, Instant};

use criterion::{black_box, Criterion};
use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_train::internals::step_benchmarks;
use smartmixed_train::train_step;
use smartmixed_train::Adam;
use smartmixed_train::Matrix;
use smartmixed_train::Network;
use smartmixed_train::TrainConfig;
use smartmixed_train::TrainPool;

const WIDTHS: [usize; 8] = [784, 768, 512, 512, 256, 256, 128, 10];
const BATCH: usize = 128;

/// The layer widths and batch size: the constants, or `TRAIN_STEP_WIDTHS` (comma-separated)
/// and `TRAIN_STEP_BATCH`.
fn shape() -> (Vec<usize>, usize) {
    let widths = std::env::var("TRAIN_STEP_WIDTHS").map_or(WIDTHS.to_vec(), |v| {
        v.split(',')
            .map(|w| {
                w.trim()
                    .parse()
                    .expect("TRAIN_STEP_WIDTHS: comma-separated widths")
            })
            .collect()
    });
    let batch = std::env::var("TRAIN_STEP_BATCH")
        .map_or(BATCH, |v| v.parse().expect("TRAIN_STEP_BATCH: a number"));
    assert!(
        widths.len() >= 3 && batch > 0,
        "at least one hidden layer and one row"
    );
    (widths, batch)
}

struct Setup {
    name: &'static str,
    net: Network<Cpu>,
    adam: Adam<Cpu>,
    noise: Option<StdRng>,
}

fn setups(dev: &Cpu, widths: &[usize]) -> Vec<Setup> {
    step_benchmarks(dev, widths)
        .into_iter()
        .map(|(name, net, noisy)| Setup {
            name,
            adam: Adam::new(&net.params(), 1e-4).unwrap(),
            net,
            noise: noisy.then(|| StdRng::seed_from_u64(1)),
        })
        .collect()
}

fn batch(dev: &Cpu, rng: &mut StdRng, widths: &[usize], rows: usize) -> (Matrix<Cpu>, Matrix<Cpu>) {
    let (inputs, classes) = (widths[0], widths[widths.len() - 1]);
    let x: Vec<f32> = (0..rows * inputs).map(|_| rng.gen::<f32>()).collect();
    let mut y = vec![0.0f32; rows * classes];
    for r in 0..rows {
        y[r * classes + rng.gen_range(0..classes)] = 1.0;
    }
    (
        dev.tensor_from_vec(x, (rows, inputs)),
        dev.tensor_from_vec(y, (rows, classes)),
    )
}

/// One step on the run's training threads (every core, subnormals flushed), as `train` does.
fn step(
    pool: &TrainPool,
    s: &mut Setup,
    x: &Matrix<Cpu>,
    y: &Matrix<Cpu>,
    cfg: &TrainConfig,
) -> f32 {
    pool.install(|| {
        train_step(
            &mut s.net,
            &mut s.adam,
            x.clone(),
            y.clone(),
            s.noise.as_mut(),
            cfg,
        )
        .unwrap()
        .0
    })
}

fn main() {
    let dev = Cpu::default();
    let cfg = TrainConfig::from_toml_str("[model]\nhidden = [1]\n", "bench").unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let (widths, rows) = shape();
    let (x, y) = batch(&dev, &mut rng, &widths, rows);
    let mut setups = setups(&dev, &widths);
    let pool = TrainPool::new(0, true).unwrap();
    println!(
        "{} training threads; matmul kernel: {}",
        pool.threads(),
        smartmixed_infer::Kernel::detect().describe()
    );

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let mut group = c.benchmark_group(format!("train_step_b{rows}"));
    for s in setups.iter_mut() {
        group.bench_function(s.name, |b| {
            b.iter(|| black_box(step(&pool, s, &x, &y, &cfg)))
        });
    }
    group.finish();
    c.final_summary();

    // Interleaved timing for same-run ratios.
    let rounds = 30;
    let mut totals = vec![Duration::ZERO; setups.len()];
    for _ in 0..rounds {
        for (s, t) in setups.iter_mut().zip(totals.iter_mut()) {
            let start = Instant::now();
            black_box(step(&pool, s, &x, &y, &cfg));
            *t += start.elapsed();
        }
    }
    let per_step: Vec<f64> = totals
        .iter()
        .map(|t| t.as_secs_f64() * 1e3 / rounds as f64)
        .collect();
    println!("\ninterleaved, {rounds} rounds, batch {rows}, widths {widths:?}:");
    for (s, ms) in setups.iter().zip(&per_step) {
        println!(
            "  {:<7} {:>7.2} ms/step  {:>6.0} samples/s",
            s.name,
            ms,
            rows as f64 * 1e3 / ms
        );
    }
    println!(
        "  ratio phase1/relu = {:.3} (target <= 1.5)",
        per_step[1] / per_step[0]
    );
    println!(
        "  ratio phase2/relu = {:.3} (target <= 1.10)",
        per_step[2] / per_step[0]
    );
}
