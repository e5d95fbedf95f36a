//! Inference on the representative architecture 784-768-512-512-256-256-128-10 at batch
//! 1, 32, 256 and 4096 on 1 and 2 threads: (a) the grouped mixed model, (b) a uniform-ReLU
//! model of the same shape, (c) a naive per-neuron activation dispatch, (d) the bare
//! matmuls of the same shapes. After criterion's report, an interleaved run prints
//! samples/s, GFLOP/s (2.98 MFLOP per sample) and the ratios (a)/(b) and (a)/(d), then the
//! machine's sgemm peak as this kernel reaches it (the best of square products from 512
//! to 2048, and of the layer chain's bare matmuls at batch 4096) and the runtime's share
//! of it at batch 4096.

use std::time::{Duration, Instant};

use criterion::{black_box, BenchmarkId, Criterion};
use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{lookup, PAPER_POOL};
use smartmixed_infer::{Model, Pool, Scratch};
use smartmixed_train::export;
use smartmixed_train::{Hidden, Network};

const WIDTHS: [usize; 8] = [784, 768, 512, 512, 256, 256, 128, 10];
const BATCHES: [usize; 4] = [1, 32, 256, 4096];

fn flops_per_sample() -> f64 {
    WIDTHS.windows(2).map(|w| 2.0 * (w[0] * w[1]) as f64).sum()
}

/// Exports a network and loads it back with the runtime, on a pool of one thread and on
/// one of two.
fn load(net: &Network<Cpu>) -> [Model; 2] {
    let dir = tempfile::tempdir().unwrap();
    export::export(net, dir.path(), false).unwrap();
    [1, 2].map(|t| {
        Model::load_dir(dir.path())
            .unwrap()
            .with_pool(Pool::new(t).unwrap())
    })
}

/// The mixed and the ReLU model, each on one thread (`[0]`) and two (`[1]`).
fn models() -> ([Model; 2], [Model; 2]) {
    let dev = Cpu::default();
    let mut rng = StdRng::seed_from_u64(0);
    let pool = PAPER_POOL.iter().map(|n| lookup(n).unwrap()).collect();
    let mut p1 = Network::selective(&dev, &WIDTHS, pool, 0.3, &mut rng);
    // Spread logits: every hidden layer gets all six activation groups.
    if let Hidden::Selective { logits, .. } = &mut p1.hidden {
        for l in logits.iter_mut() {
            let v: Vec<f32> = (0..l.shape().0 * l.shape().1)
                .map(|_| rng.gen_range(-2.0..2.0))
                .collect();
            *l = dev.tensor_from_vec(v, *l.shape());
        }
    }
    let relu = Network::fixed(&dev, &WIDTHS, lookup("relu").unwrap(), &mut rng);
    (load(&p1), load(&relu))
}

/// (d): the bare matmuls of every layer, ping-ponging between two buffers.
struct BareMatmul {
    weights: Vec<Vec<f32>>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl BareMatmul {
    fn new() -> Self {
        let weights = WIDTHS
            .windows(2)
            .map(|w| vec![0.01f32; w[0] * w[1]])
            .collect();
        Self {
            weights,
            a: vec![0.0; 4096 * 784],
            b: vec![0.0; 4096 * 784],
        }
    }

    fn run(&mut self, input: &[f32], batch: usize, threads: usize) {
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        for (l, w) in WIDTHS.windows(2).enumerate() {
            let (k, n) = (w[0], w[1]);
            let (src, dst): (&[f32], &mut [f32]) = match l {
                0 => (input, &mut self.a),
                _ if l % 2 == 1 => (&self.a, &mut self.b),
                _ => (&self.b, &mut self.a),
            };
            // SAFETY: src holds batch*k, dst batch*n and the weights k*n values.
            unsafe {
                gemm::gemm(
                    batch,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    src.as_ptr(),
                    1,
                    k as isize,
                    self.weights[l].as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        }
    }
}

fn main() {
    let (mixed, relu) = models();
    let mut rng = StdRng::seed_from_u64(1);
    let input: Vec<f32> = (0..4096 * 784).map(|_| rng.gen::<f32>()).collect();
    let mut bare = BareMatmul::new();
    // SMARTMIXED_TABLE_ONLY=1 skips criterion and prints only the interleaved table.
    if std::env::var_os("SMARTMIXED_TABLE_ONLY").is_none() {
        criterion_groups(&mixed, &relu, &input, &mut bare);
    }
    println!(
        "\nkernel: {}",
        smartmixed_infer::Kernel::detect().describe()
    );
    let at_4096 = interleaved_table(&mixed, &relu, &input, &mut bare);
    subnormal_inputs(&mixed[0], &input);
    for threads in [1, 2] {
        let [runtime, chain] = at_4096[threads - 1];
        let peak = sgemm_peak(threads).max(chain);
        println!(
            "sgemm peak ({threads} thread{}, gemm 0.19): {peak:.1} GFLOP/s; \
             runtime (a) at batch 4096: {runtime:.1} GFLOP/s = {:.0}% of peak",
            if threads > 1 { "s" } else { "" },
            100.0 * runtime / peak
        );
    }
}

/// Criterion's groups: each variant at every batch on one and two threads.
fn criterion_groups(mixed: &[Model; 2], relu: &[Model; 2], input: &[f32], bare: &mut BareMatmul) {
    let mut out = vec![0.0f32; 4096 * 10];
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for threads in [1, 2] {
        let (mixed, relu) = (&mixed[threads - 1], &relu[threads - 1]);
        let mut group = c.benchmark_group(format!("infer_{threads}_thread"));
        for batch in BATCHES {
            let x = &input[..batch * 784];
            let o = &mut out[..batch * 10];
            let mut s = Scratch::new();
            group.bench_function(BenchmarkId::new("a_mixed", batch), |b| {
                b.iter(|| mixed.forward(black_box(x), batch, &mut s, o).unwrap())
            });
            group.bench_function(BenchmarkId::new("b_relu", batch), |b| {
                b.iter(|| relu.forward(black_box(x), batch, &mut s, o).unwrap())
            });
            group.bench_function(BenchmarkId::new("c_per_neuron", batch), |b| {
                b.iter(|| {
                    mixed
                        .forward_per_neuron(black_box(x), batch, &mut s, o)
                        .unwrap()
                })
            });
            group.bench_function(BenchmarkId::new("d_matmul", batch), |b| {
                b.iter(|| bare.run(black_box(x), batch, threads))
            });
        }
        group.finish();
    }
    c.final_summary();
}

/// Each variant timed in turn, repeated, best of five rounds per variant; returns the
/// mixed model's and the bare matmul's GFLOP/s at batch 4096 per thread count.
fn interleaved_table(
    mixed: &[Model; 2],
    relu: &[Model; 2],
    input: &[f32],
    bare: &mut BareMatmul,
) -> [[f64; 2]; 2] {
    let mut out = vec![0.0f32; 4096 * 10];
    println!("\n threads  batch |   (a) mixed    (b) relu  (c) per-neuron  (d) matmul  samples/s |  GFLOP/s (a)  (d) | (a)/(b)  (a)/(d)");
    let mut at_4096 = [[0.0f64; 2]; 2];
    for threads in [1, 2] {
        let (mixed, relu) = (&mixed[threads - 1], &relu[threads - 1]);
        for batch in BATCHES {
            let x = &input[..batch * 784];
            let o = &mut out[..batch * 10];
            let mut s = Scratch::new();
            let reps = (20_000 / batch).clamp(3, 2000);
            let mut best = [f64::MAX; 4];
            for _ in 0..5 {
                for (v, t) in best.iter_mut().enumerate() {
                    let start = Instant::now();
                    for _ in 0..reps {
                        match v {
                            0 => mixed.forward(x, batch, &mut s, o).unwrap(),
                            1 => relu.forward(x, batch, &mut s, o).unwrap(),
                            2 => mixed.forward_per_neuron(x, batch, &mut s, o).unwrap(),
                            _ => bare.run(x, batch, threads),
                        }
                    }
                    *t = t.min(start.elapsed().as_secs_f64() / reps as f64);
                }
            }
            let sps = |t: f64| batch as f64 / t;
            let gflops = |t: f64| sps(t) * flops_per_sample() / 1e9;
            println!(
                " {threads:>7} {batch:>6} | {:>9.0}/s {:>9.0}/s {:>12.0}/s {:>9.0}/s  {:>9} | {:>8.1} {:>8.1} | {:>7.3} {:>8.3}",
                sps(best[0]), sps(best[1]), sps(best[2]), sps(best[3]), "",
                gflops(best[0]), gflops(best[3]), best[0] / best[1], best[0] / best[3]
            );
            if batch == 4096 {
                at_4096[threads - 1] = [gflops(best[0]), gflops(best[3])];
            }
            if batch == 1 {
                println!(
                    "                  batch-1 latency: mixed {:.3} ms, relu {:.3} ms",
                    best[0] * 1e3,
                    best[1] * 1e3
                );
            }
        }
    }
    at_4096
}

/// Batch 256 on one thread with ordinary inputs and with inputs scaled into the subnormal
/// range (what a service may be sent), interleaved: the runtime keeps the caller's
/// floating-point mode, so this shows what subnormal inputs cost it.
fn subnormal_inputs(model: &Model, input: &[f32]) {
    let batch = 256;
    let normal = &input[..batch * 784];
    let tiny: Vec<f32> = normal.iter().map(|v| v * 1e-39).collect();
    let mut out = vec![0.0f32; batch * 10];
    let mut s = Scratch::new();
    let mut best = [f64::MAX; 2];
    for _ in 0..5 {
        for (t, x) in best.iter_mut().zip([normal, &tiny[..]]) {
            let start = Instant::now();
            for _ in 0..20 {
                model.forward(x, batch, &mut s, &mut out).unwrap();
            }
            *t = t.min(start.elapsed().as_secs_f64() / 20.0);
        }
    }
    println!(
        "batch 256, 1 thread: subnormal inputs take {:.2}x the time of ordinary inputs",
        best[1] / best[0]
    );
}

/// The best GFLOP/s of square sgemms (512, 1024, 2048) on `threads` threads.
fn sgemm_peak(threads: usize) -> f64 {
    [512, 1024, 2048]
        .into_iter()
        .map(|n| square_sgemm(n, threads))
        .fold(0.0, f64::max)
}

fn square_sgemm(n: usize, threads: usize) -> f64 {
    let a = vec![0.5f32; n * n];
    let b = vec![0.25f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let mut best = f64::MAX;
    pool.install(|| {
        for _ in 0..5 {
            let start = Instant::now();
            // SAFETY: a, b and c hold n*n values each, with the strides given.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
    });
    2.0 * (n * n * n) as f64 / best / 1e9
}
