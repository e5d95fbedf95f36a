//! This project's side of `benches/compare/run.sh`: training steps (phase 1, phase 2,
//! fixed ReLU) at batch 128 and runtime inference (batch 1, 32, 256 on 1 and 2 threads) on
//! the representative network 784-768-512-512-256-256-128-10, printed as JSON lines
//! (`{"work": ..., "value": ...}`) for the script to pair with PyTorch's and ONNX Runtime's.
//!
//! `-- precision SECONDS` is the side of `run.sh precision` (issue 22's table against
//! OpenVINO): f32 and bf16 on 2 threads at batches 1, 32, 256 and 4096.
//!
//! `cargo run --release --example compare -- train STEPS`, `-- infer SECONDS` or
//! `-- precision SECONDS`.

use std::time::Instant;

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{lookup, PAPER_POOL};
use smartmixed_infer::{LoadOptions, Model, Pool, Precision, Scratch};
use smartmixed_train::Adam;
use smartmixed_train::TrainConfig;
use smartmixed_train::TrainPool;
use smartmixed_train::{export, train_step};
use smartmixed_train::{Hidden, Network};

const WIDTHS: [usize; 8] = [784, 768, 512, 512, 256, 256, 128, 10];

/// A phase-1 network whose logits give every hidden layer all six groups.
fn selective(dev: &Cpu, rng: &mut StdRng) -> Network<Cpu> {
    let pool = PAPER_POOL.iter().map(|n| lookup(n).unwrap()).collect();
    let mut net = Network::selective(dev, &WIDTHS, pool, 0.3, rng);
    if let Hidden::Selective { logits, .. } = &mut net.hidden {
        for l in logits.iter_mut() {
            let v = (0..l.shape().0 * l.shape().1)
                .map(|_| rng.gen_range(-2.0..2.0))
                .collect();
            *l = dev.tensor_from_vec(v, *l.shape());
        }
    }
    net
}

fn train(steps: usize) {
    const BATCH: usize = 128;
    let dev = Cpu::default();
    let cfg = TrainConfig::from_toml_str("[model]\nhidden = [1]\n", "compare").unwrap();
    let pool = TrainPool::new(0, true).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..BATCH * 784).map(|_| rng.gen()).collect();
    let mut y = vec![0.0f32; BATCH * 10];
    for r in 0..BATCH {
        y[r * 10 + rng.gen_range(0..10)] = 1.0;
    }
    let p1 = selective(&dev, &mut rng);
    let p2 = p1.to_mixed(None).unwrap();
    let relu = Network::fixed(&dev, &WIDTHS, lookup("relu").unwrap(), &mut rng);
    for (work, mut net, noisy) in [
        ("train_phase1", p1, true),
        ("train_phase2", p2, false),
        ("train_relu", relu, false),
    ] {
        let mut adam = Adam::new(&net.params(), 1e-4).unwrap();
        let mut noise = StdRng::seed_from_u64(1);
        let mut run = |n: usize| {
            pool.install(|| {
                for _ in 0..n {
                    let xt = dev.tensor_from_vec(x.clone(), (BATCH, 784));
                    let yt = dev.tensor_from_vec(y.clone(), (BATCH, 10));
                    let noise = noisy.then_some(&mut noise);
                    train_step(&mut net, &mut adam, xt, yt, noise, &cfg).unwrap();
                }
            })
        };
        run(5);
        let start = Instant::now();
        run(steps);
        let sps = (steps * BATCH) as f64 / start.elapsed().as_secs_f64();
        println!("{{\"work\": \"{work}\", \"value\": {sps:.1}, \"unit\": \"samples/s\"}}");
    }
}

/// The phase-2 network of [`selective`], exported and loaded by the runtime.
fn exported_model(rng: &mut StdRng) -> Model {
    exported_model_in(rng, Precision::F32)
}

/// [`exported_model`] loaded in `precision`.
fn exported_model_in(rng: &mut StdRng, precision: Precision) -> Model {
    let net = selective(&Cpu::default(), rng).to_mixed(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    export::export(&net, dir.path(), false).unwrap();
    Model::load_dir_with(dir.path(), &LoadOptions { precision }).unwrap()
}

/// The best of five timed slices of `seconds / 5` (as the Python sides), seconds a call.
fn best_call(model: &Model, x: &[f32], batch: usize, out: &mut [f32], seconds: f64) -> f64 {
    let mut scratch = Scratch::new();
    model.forward(x, batch, &mut scratch, out).unwrap();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0usize;
        while start.elapsed().as_secs_f64() < seconds / 5.0 {
            model.forward(x, batch, &mut scratch, out).unwrap();
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / calls as f64);
    }
    best
}

/// The mixed network in f32 and bf16 on 2 threads, batches 1 to 4096, as JSON lines
/// `infer_b{B}_t2_{f32|bf16}` (batch 1 in ms, else samples/s).
fn precision(seconds: f64) {
    const BATCHES: [usize; 4] = [1, 32, 256, 4096];
    for p in [Precision::F32, Precision::Bf16] {
        let mut rng = StdRng::seed_from_u64(0);
        let model = exported_model_in(&mut rng, p).with_pool(Pool::new(2).unwrap());
        let input: Vec<f32> = (0..4096 * 784).map(|_| rng.gen()).collect();
        let mut out = vec![0.0f32; 4096 * 10];
        for batch in BATCHES {
            let (x, o) = (&input[..batch * 784], &mut out[..batch * 10]);
            let best = best_call(&model, x, batch, o, seconds);
            let name = p.name();
            let (value, unit) = if batch == 1 {
                (best * 1e3, "ms")
            } else {
                (batch as f64 / best, "samples/s")
            };
            println!(
                "{{\"work\": \"infer_b{batch}_t2_{name}\", \"value\": {value:.4}, \"unit\": \"{unit}\"}}"
            );
        }
    }
}

fn infer(seconds: f64) {
    let mut rng = StdRng::seed_from_u64(0);
    let mut model = exported_model(&mut rng);
    let input: Vec<f32> = (0..256 * 784).map(|_| rng.gen()).collect();
    let mut out = vec![0.0f32; 256 * 10];
    for threads in [1, 2] {
        model = model.with_pool(Pool::new(threads).unwrap());
        for batch in [1usize, 32, 256] {
            let mut scratch = Scratch::new();
            let (x, o) = (&input[..batch * 784], &mut out[..batch * 10]);
            // Best of five timed slices, as the Python side does.
            let mut best = f64::MAX;
            for _ in 0..5 {
                let start = Instant::now();
                let mut calls = 0usize;
                while start.elapsed().as_secs_f64() < seconds / 5.0 {
                    model.forward(x, batch, &mut scratch, o).unwrap();
                    calls += 1;
                }
                best = best.min(start.elapsed().as_secs_f64() / calls as f64);
            }
            let (work, value, unit) = if batch == 1 {
                (format!("infer_b1_t{threads}"), best * 1e3, "ms")
            } else {
                (
                    format!("infer_b{batch}_t{threads}"),
                    batch as f64 / best,
                    "samples/s",
                )
            };
            println!("{{\"work\": \"{work}\", \"value\": {value:.4}, \"unit\": \"{unit}\"}}");
        }
    }
}

/// One batch size on one thread count in one precision, three timed slices: for
/// profiling (`perf record`).
fn probe(batch: usize, threads: usize, seconds: f64, precision: Precision) {
    let mut rng = StdRng::seed_from_u64(0);
    let model = exported_model_in(&mut rng, precision).with_pool(Pool::new(threads).unwrap());
    let input: Vec<f32> = (0..batch * 784).map(|_| rng.gen()).collect();
    let mut out = vec![0.0f32; batch * 10];
    let mut scratch = Scratch::new();
    let mut total = 0usize;
    for _ in 0..3 {
        let start = Instant::now();
        let mut calls = 0usize;
        while start.elapsed().as_secs_f64() < seconds / 3.0 {
            model
                .forward(&input, batch, &mut scratch, &mut out)
                .unwrap();
            calls += 1;
        }
        let per = start.elapsed().as_secs_f64() / calls as f64;
        let rate = batch as f64 / per / 1e3;
        println!("b{batch} t{threads}: {:.4} ms, {rate:.1}k/s", per * 1e3);
        total += calls;
    }
    // With `perf stat -e cycles:u`: cycles a row, robust to a shared machine's load.
    println!("calls {total} rows {}", total * batch);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("train") => train(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200)),
        Some("probe") => {
            let a = |i: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(1usize);
            let p = args.get(5).and_then(|s| s.parse().ok()).unwrap_or_default();
            probe(a(2), a(3), a(4) as f64, p)
        }
        Some("infer") => infer(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0)),
        Some("precision") => precision(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2.0)),
        _ => eprintln!(
            "usage: compare train STEPS | infer SECONDS | precision SECONDS | probe BATCH THREADS SECONDS [f32|bf16]"
        ),
    }
}
