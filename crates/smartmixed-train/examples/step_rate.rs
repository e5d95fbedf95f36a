//! Training samples/s of one step (the fixed-ReLU baseline, phase 1, phase 2 with all six
//! groups in every layer) on the representative architecture (784-768-512-512-256-256-128-10)
//! at batches 128, 1024 and 4096: on the CPU's training threads, or on CUDA device 0 when
//! built with `scripts/cuda.sh run --release -p smartmixed-train --features cuda --example
//! step_rate`. The three steps alternate, so their ratios come from the same stretch.
//! `cargo run --release -p smartmixed-train --example step_rate -- [SECONDS] [BATCHES]`
//! (defaults: 2 seconds a configuration, `128,1024,4096`).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_train::internals::step_benchmarks;
use smartmixed_train::{train_step, Adam, Matrix, Network, TrainConfig, TrainDevice};

const WIDTHS: [usize; 8] = [784, 768, 512, 512, 256, 256, 128, 10];

/// A stretch of steps, handed to the device's runner (the CPU's on its training threads,
/// whence `Send`; CUDA's on this thread, since cudarc's device is not `Send`).
#[cfg(not(feature = "cuda"))]
type Work<'a> = dyn FnMut() + Send + 'a;
#[cfg(feature = "cuda")]
type Work<'a> = dyn FnMut() + 'a;

struct Setup<D: TrainDevice> {
    name: &'static str,
    net: Network<D>,
    adam: Adam<D>,
    noise: Option<StdRng>,
}

fn setups<D: TrainDevice>(dev: &D) -> Vec<Setup<D>> {
    step_benchmarks(dev, &WIDTHS)
        .into_iter()
        .map(|(name, net, noisy)| Setup {
            name,
            adam: Adam::new(&net.params(), 1e-4).unwrap(),
            net,
            noise: noisy.then(|| StdRng::seed_from_u64(1)),
        })
        .collect()
}

fn batch<D: TrainDevice>(dev: &D, rng: &mut StdRng, rows: usize) -> (Matrix<D>, Matrix<D>) {
    let x: Vec<f32> = (0..rows * WIDTHS[0]).map(|_| rng.gen::<f32>()).collect();
    let mut y = vec![0.0f32; rows * 10];
    for r in 0..rows {
        y[r * 10 + rng.gen_range(0..10)] = 1.0;
    }
    (
        dev.tensor_from_vec(x, (rows, WIDTHS[0])),
        dev.tensor_from_vec(y, (rows, 10)),
    )
}

/// Samples/s of each setup at each batch, alternating the setups in slices of a tenth of
/// `seconds`; the best slice counts (the least disturbed by the host). Each step reads its
/// loss back, so a GPU step is timed to its end.
fn measure<D: TrainDevice>(dev: &D, seconds: f64, batches: &[usize], each: &dyn Fn(&mut Work)) {
    let cfg = TrainConfig::from_toml_str("[model]\nhidden = [1]\n", "step_rate").unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let mut setups = setups(dev);
    for &rows in batches {
        let (x, y) = batch(dev, &mut rng, rows);
        let mut best = vec![0.0f64; setups.len()];
        for s in setups.iter_mut() {
            // Warm-up: kernels compiled, buffers cached.
            each(&mut || {
                for _ in 0..3 {
                    let (x, y) = (x.clone(), y.clone());
                    train_step(&mut s.net, &mut s.adam, x, y, s.noise.as_mut(), &cfg).unwrap();
                }
            });
        }
        let slice = Duration::from_secs_f64(seconds / 10.0);
        for _ in 0..10 {
            for (s, best) in setups.iter_mut().zip(best.iter_mut()) {
                let mut steps = 0usize;
                let start = Instant::now();
                each(&mut || {
                    while start.elapsed() < slice {
                        let (x, y) = (x.clone(), y.clone());
                        train_step(&mut s.net, &mut s.adam, x, y, s.noise.as_mut(), &cfg).unwrap();
                        steps += 1;
                    }
                });
                let rate = (steps * rows) as f64 / start.elapsed().as_secs_f64();
                *best = best.max(rate);
            }
        }
        let line: Vec<String> = setups
            .iter()
            .zip(&best)
            .map(|(s, r)| format!("{} {:.1}k/s", s.name, r / 1e3))
            .collect();
        println!("batch {rows}: {}", line.join(", "));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = args
        .next()
        .map_or(2.0, |s| s.parse().expect("SECONDS: a number"));
    let batches: Vec<usize> = args.next().map_or(vec![128, 1024, 4096], |s| {
        s.split(',')
            .map(|b| b.parse().expect("BATCHES: comma-separated sizes"))
            .collect()
    });
    #[cfg(feature = "cuda")]
    {
        let dev = smartmixed_train::Cuda::try_build(0, 0).expect("CUDA device 0");
        println!("device: CUDA device 0");
        measure(&dev, seconds, &batches, &|f| f());
    }
    #[cfg(not(feature = "cuda"))]
    {
        let pool = smartmixed_train::TrainPool::new(0, true).unwrap();
        println!("device: CPU, {} training threads", pool.threads());
        measure(&smartmixed_train::Cpu::default(), seconds, &batches, &|f| {
            pool.install(f)
        });
    }
}
