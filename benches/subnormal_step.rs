//! One phase-2 training step at batch 128 on the representative architecture, with normal
//! values and with subnormal-sized ones (inputs scaled to ~1e-39, so the first layer's
//! products and its weight gradient are subnormal, and Adam moments of 1e-40, as the
//! state of a late epoch of the paper's run holds), on training pools that flush
//! subnormals to zero and that keep them.
//!
//! Prints, from one interleaved run, subnormal/normal per mode: with flushing it should be
//! about 1; without, it shows what long runs paid before flushing was on by default.

use std::time::{Duration, Instant};

use criterion::black_box;
use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{fpenv, lookup, PAPER_POOL};
use smartmixed_train::train_step;
use smartmixed_train::Adam;
use smartmixed_train::Matrix;
use smartmixed_train::Network;
use smartmixed_train::TrainConfig;
use smartmixed_train::TrainPool;

const WIDTHS: [usize; 8] = [784, 768, 512, 512, 256, 256, 128, 10];
const BATCH: usize = 128;

struct Case {
    net: Network<Cpu>,
    adam: Adam<Cpu>,
    x: Matrix<Cpu>,
}

fn case(dev: &Cpu, subnormal: bool) -> Case {
    let mut rng = StdRng::seed_from_u64(0);
    let pool = PAPER_POOL.iter().map(|n| lookup(n).unwrap()).collect();
    let net = Network::selective(dev, &WIDTHS, pool, 0.3, &mut rng)
        .to_mixed(None)
        .unwrap();
    let scale = if subnormal { 1e-39 } else { 1.0 };
    let x: Vec<f32> = (0..BATCH * 784).map(|_| rng.gen::<f32>() * scale).collect();
    let adam = if subnormal {
        let params = net.params();
        let moments: Vec<(Vec<f32>, Vec<f32>)> = params
            .iter()
            .map(|p| {
                let n = p.shape().num_elements();
                (vec![1e-40; n], vec![1e-40; n])
            })
            .collect();
        Adam::import(dev, &params, 1000, &moments).unwrap()
    } else {
        Adam::new(&net.params(), 1e-4).unwrap()
    };
    let mut adam = adam;
    adam.set_lr(1e-4);
    Case {
        net,
        adam,
        x: dev.tensor_from_vec(x, (BATCH, 784)),
    }
}

fn main() {
    let dev = Cpu::default();
    let cfg = TrainConfig::from_toml_str("[model]\nhidden = [1]\n", "bench").unwrap();
    let mut y = vec![0.0f32; BATCH * 10];
    for r in 0..BATCH {
        y[r * 10 + r % 10] = 1.0;
    }
    let y = dev.tensor_from_vec(y, (BATCH, 10));
    // One pool whose workers switch mode between steps (two pools would compete for the
    // cores while one's idle workers spin).
    let pool = TrainPool::new(0, true).unwrap();
    let modes = [("flush", true), ("ieee", false)];
    // [mode][normal, subnormal]
    let mut cases: Vec<Vec<Case>> = modes
        .iter()
        .map(|_| vec![case(&dev, false), case(&dev, true)])
        .collect();
    let mut step = |p: usize, c: usize| {
        let case = &mut cases[p][c];
        let (x, y) = (case.x.clone(), y.clone());
        pool.install(|| {
            rayon::broadcast(|_| fpenv::set_flush_denormals(modes[p].1));
            black_box(train_step(&mut case.net, &mut case.adam, x, y, None, &cfg).unwrap())
        });
    };
    for p in 0..2 {
        for c in 0..2 {
            step(p, c); // warm-up
        }
    }
    let rounds = 20;
    let mut totals = [[Duration::ZERO; 2]; 2];
    for _ in 0..rounds {
        for (p, row) in totals.iter_mut().enumerate() {
            for (c, t) in row.iter_mut().enumerate() {
                let start = Instant::now();
                step(p, c);
                *t += start.elapsed();
            }
        }
    }
    println!(
        "phase-2 step, batch {BATCH}, {} threads, {rounds} interleaved rounds \
         (flush-to-zero supported here: {}):",
        pool.threads(),
        fpenv::SUPPORTED
    );
    for (p, (name, _)) in modes.iter().enumerate() {
        let ms = totals[p].map(|t| t.as_secs_f64() * 1e3 / rounds as f64);
        println!(
            "  {name:<5} normal {:>7.2} ms  subnormal {:>7.2} ms  ratio subnormal/normal = {:.2}",
            ms[0],
            ms[1],
            ms[1] / ms[0]
        );
    }
}
