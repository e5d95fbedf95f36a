//! The trainer on CUDA against the CPU: the dense op's kernels value for value and gradient
//! for gradient, whole training steps of phase 1 (the same Gumbel noise), phase 2 and a
//! fixed baseline, and a resumed run against an uninterrupted one. Needs a GPU: built with
//! `scripts/cuda.sh test --release -p smartmixed-train --features cuda --test cuda`.
#![cfg(feature = "cuda")]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{lookup, Activation, PAPER_POOL};
use smartmixed_train::data::Splits;
use smartmixed_train::internals::{values, Block, LayerActivation};
use smartmixed_train::rundir::{EpochRecord, RunDir};
use smartmixed_train::{train_step, Adam, Matrix, Network, TrainConfig, TrainDevice};
use smartmixed_train::{Cuda, Error, Progress, Silent, Summary, Trainer};

/// f32's unit roundoff.
const U: f64 = 1.0 / (1u64 << 24) as f64;

fn cuda() -> Cuda {
    Cuda::try_build(0, 0).expect("a CUDA device")
}

fn paper_pool() -> Vec<&'static Activation> {
    PAPER_POOL.iter().map(|n| lookup(n).unwrap()).collect()
}

fn random(rng: &mut StdRng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect()
}

/// `|a - b| <= tol * (1 + |b|)` everywhere, naming the first value that is not.
fn close(what: &str, a: &[f32], b: &[f32], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let bound = tol * (1.0 + (y as f64).abs());
        assert!(
            ((x as f64) - (y as f64)).abs() <= bound || (x.is_nan() && y.is_nan()),
            "{what}[{i}]: cuda {x}, cpu {y}, bound {bound:e}"
        );
    }
}

/// The input, bias, logits, Gumbel noise and output weights of one dense-op case.
type Inputs<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32], &'a [f32]);

/// One block per activation of `pool` over `n` neurons (phase 2's layout).
fn blocks(pool: &[&'static Activation], n: usize) -> Vec<Block> {
    let p = pool.len();
    (0..p)
        .map(|j| Block {
            activation: pool[j],
            start: j * n / p,
            len: (j + 1) * n / p - j * n / p,
        })
        .collect()
}

/// The layer activation a test mode names: the output layer's bias, phase 2's groups, or
/// phase 1's selection with the soft sample `soft`.
fn layer_activation<'a, D: TrainDevice, T>(
    mode: &str,
    soft: Matrix<D, T>,
    groups: &'a [Block],
    choices: &'a [u8],
    pool: &'a [&'static Activation],
) -> LayerActivation<'a, D, T> {
    match mode {
        "identity" => LayerActivation::Identity,
        "grouped" => LayerActivation::Grouped(groups),
        _ => LayerActivation::Selective {
            soft,
            choices,
            pool,
        },
    }
}

/// The dense op's output and the gradients of `sum(out * w)` with respect to its input,
/// bias and (phase 1) logits, on device `D`.
fn dense_on<D: TrainDevice>(
    dev: &D,
    mode: &str,
    (x, bias, alpha, noise, w): Inputs,
    (b, n): (usize, usize),
    groups: &[Block],
    choices: &[u8],
    pool: &[&'static Activation],
) -> [Vec<f32>; 4] {
    let x_t: Matrix<D> = dev.tensor_from_vec(x.to_vec(), (b, n));
    let weight: Matrix<D> = dev.tensor_from_vec(identity(n), (n, n));
    let bias_t: Matrix<D> = dev.tensor_from_vec(bias.to_vec(), (1, n));
    let p = pool.len();
    let alpha_t: Matrix<D> = dev.tensor_from_vec(alpha.to_vec(), (p, n));
    let noise_t: Matrix<D> = dev.tensor_from_vec(noise.to_vec(), (p, n));
    let soft =
        ((alpha_t.retaped::<OwnedTape<f32, D>>() + noise_t) * (1.0 / 0.3)).softmax::<Axis<0>>();
    let activation = layer_activation(mode, soft, groups, choices, pool);
    let out = D::dense(x_t.leaky_trace(), &weight, &bias_t, activation, true);
    let out_v = values(&out);
    let w_t: Matrix<D> = dev.tensor_from_vec(w.to_vec(), (b, n));
    let g = (out * w_t).sum().backward();
    let g_alpha = match mode {
        "selective" => values(&g.get(&alpha_t)),
        _ => Vec::new(),
    };
    [
        out_v,
        values(&g.get(&x_t)),
        values(&g.get(&bias_t)),
        g_alpha,
    ]
}

/// With the identity as the weight the matmul is exact on both devices, so the kernels'
/// activations and sums are compared alone. CUDA's `expf`, `tanhf` and `expm1f` are within
/// 2 ulp and the CPU's branch-free forms within 4, so a value or derivative differs by at
/// most about 8 ulp, 8 * 2^-24 relative (derivatives from `y` at most double that); the
/// bias and logit gradients add `b` such terms in the same row order on both.
#[test]
fn the_dense_ops_kernels_match_the_cpu() {
    let (b, n) = (37, 300);
    let pool = paper_pool();
    let p = pool.len();
    let mut rng = StdRng::seed_from_u64(3);
    // Spans the clamp at +-10 (selu and relu reach it) and every activation's kinks.
    let x = random(&mut rng, b * n, 14.0);
    let bias = random(&mut rng, n, 1.0);
    let alpha = random(&mut rng, p * n, 1.0);
    let noise = random(&mut rng, p * n, 1.0);
    let w = random(&mut rng, b * n, 1.0);
    let choices: Vec<u8> = (0..n).map(|_| rng.gen_range(0..p as u8)).collect();
    let groups = blocks(&pool, n);
    let inputs = (&x[..], &bias[..], &alpha[..], &noise[..], &w[..]);
    let (cpu, gpu) = (Cpu::default(), cuda());
    for mode in ["identity", "grouped", "selective"] {
        let want = dense_on(&cpu, mode, inputs, (b, n), &groups, &choices, &pool);
        let got = dense_on(&gpu, mode, inputs, (b, n), &groups, &choices, &pool);
        let one = 16.0 * U;
        close(&format!("{mode} output"), &got[0], &want[0], one);
        close(&format!("{mode} input gradient"), &got[1], &want[1], one);
        close(
            &format!("{mode} bias gradient"),
            &got[2],
            &want[2],
            b as f64 * one,
        );
        close(
            &format!("{mode} logit gradient"),
            &got[3],
            &want[3],
            b as f64 * one,
        );
    }
}

/// Cases like the above without a tape (validation and test passes): the kernels'
/// inference branches (phase 1 keeps no candidates, the grouped layer no derivatives)
/// against the CPU's inference, within the same 16 ulp.
#[test]
fn the_dense_ops_inference_kernels_match_the_cpu() {
    let (b, n) = (37, 300);
    let pool = paper_pool();
    let p = pool.len();
    let mut rng = StdRng::seed_from_u64(4);
    let x = random(&mut rng, b * n, 14.0);
    let bias = random(&mut rng, n, 1.0);
    let choices: Vec<u8> = (0..n).map(|_| rng.gen_range(0..p as u8)).collect();
    let groups = blocks(&pool, n);
    fn infer<D: TrainDevice>(
        dev: &D,
        mode: &str,
        (x, bias): (&[f32], &[f32]),
        (b, n): (usize, usize),
        groups: &[Block],
        choices: &[u8],
        pool: &[&'static Activation],
    ) -> Vec<f32> {
        let x_t: Matrix<D> = dev.tensor_from_vec(x.to_vec(), (b, n));
        let weight: Matrix<D> = dev.tensor_from_vec(identity(n), (n, n));
        let bias_t: Matrix<D> = dev.tensor_from_vec(bias.to_vec(), (1, n));
        let soft: Matrix<D> = dev.tensor_from_vec(
            vec![1.0 / pool.len() as f32; pool.len() * n],
            (pool.len(), n),
        );
        let activation = layer_activation(mode, soft, groups, choices, pool);
        values(&D::dense(x_t, &weight, &bias_t, activation, false))
    }
    let (cpu, gpu) = (Cpu::default(), cuda());
    for mode in ["identity", "grouped", "selective"] {
        let want = infer(&cpu, mode, (&x, &bias), (b, n), &groups, &choices, &pool);
        let got = infer(&gpu, mode, (&x, &bias), (b, n), &groups, &choices, &pool);
        close(&format!("{mode} inference output"), &got, &want, 16.0 * U);
    }
}

/// Clipping's two primitives on a buffer of 100,003 values (not a multiple of a block):
/// the sum of squares against f64's (its per-block f64 partials add in another order:
/// 1e-12 relative), and scaling by 0.5, exact on both devices.
#[test]
fn clipping_sums_squares_and_scales_on_cuda() {
    let mut rng = StdRng::seed_from_u64(6);
    let v = random(&mut rng, 100_003, 3.0);
    let want: f64 = v.iter().map(|&g| f64::from(g) * f64::from(g)).sum();
    let dev = cuda();
    let mut buf = dev.upload(&v).unwrap();
    let got = dev.sum_squares(&buf).unwrap();
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    dev.scale(&mut buf, 0.5).unwrap();
    let halved: Vec<f32> = v.iter().map(|g| g * 0.5).collect();
    assert_eq!(dev.download(&buf).unwrap(), halved);
}

/// A small network, trained `steps` steps from the same initial weights and batches on
/// both devices; returns the losses and the final parameters.
fn steps_on<D: TrainDevice>(dev: &D, mode: &str, steps: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
    let widths = [64, 48, 32, 10];
    let mut rng = StdRng::seed_from_u64(11);
    let mut net = match mode {
        "fixed" => Network::fixed(dev, &widths, lookup("elu").unwrap(), &mut rng),
        _ => Network::selective(dev, &widths, paper_pool(), 0.3, &mut rng),
    };
    if mode == "phase2" {
        net = net.to_mixed(None).unwrap();
    }
    let cfg = TrainConfig::from_toml_str("[model]\nhidden = [1]\n", "cuda test").unwrap();
    let mut adam = Adam::new(&net.params(), 1e-3).unwrap();
    let mut noise = (mode == "phase1").then(|| StdRng::seed_from_u64(5));
    let mut losses = Vec::new();
    for _ in 0..steps {
        let rows = 96;
        let x: Vec<f32> = (0..rows * widths[0]).map(|_| rng.gen()).collect();
        let mut y = vec![0.0f32; rows * 10];
        for r in 0..rows {
            y[r * 10 + rng.gen_range(0..10)] = 1.0;
        }
        let x = dev.tensor_from_vec(x, (rows, widths[0]));
        let y = dev.tensor_from_vec(y, (rows, 10));
        let (loss, _) = train_step(&mut net, &mut adam, x, y, noise.as_mut(), &cfg).unwrap();
        losses.push(loss);
    }
    (losses, net.params().iter().map(|p| values(*p)).collect())
}

/// Whole steps: the matmuls now differ in summation order (cuBLAS's blocking against the
/// CPU's), each product of length k within 2 k 2^-24 of the other relative to the sum of
/// absolute products, k <= 64 here: about 8e-6 a layer, 3e-5 over three, hence 1e-4 on the
/// losses. The parameters are compared against what Adam can move them: its first steps
/// move each by up to about lr = 1e-3 whatever its gradient's size (m / sqrt(v) is about
/// +-1), so a component whose gradient is mostly cancellation (phase 1's logits, through the
/// softmax) can differ by a visible part of that. 1% of the 4 steps' reach, 4e-5, holds
/// such rounding (0.3% seen on an H200) and fails a wrong kernel, which moves parameters by
/// lr itself.
#[test]
fn training_steps_on_cuda_match_the_cpu() {
    for mode in ["phase1", "phase2", "fixed"] {
        let (cpu_losses, cpu_params) = steps_on(&Cpu::default(), mode, 4);
        let (gpu_losses, gpu_params) = steps_on(&cuda(), mode, 4);
        close(&format!("{mode} losses"), &gpu_losses, &cpu_losses, 1e-4);
        for (i, (g, c)) in gpu_params.iter().zip(&cpu_params).enumerate() {
            close(&format!("{mode} parameter {i}"), g, c, 4.0 * 1e-3 * 1e-2);
        }
    }
}

/// Sets the stop flag (as Ctrl-C does) once epoch 1 of phase 1 has finished.
struct StopAfterFirst<'a>(&'a AtomicBool);

impl Progress for StopAfterFirst<'_> {
    fn epoch(&mut self, r: &EpochRecord, _: Option<&[Vec<usize>]>) {
        if r.phase.name() == "phase1" && r.epoch == 1 {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

fn run_config() -> TrainConfig {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
    let text = format!(
        "[model]\nhidden = [24, 16]\n[phase1]\nepochs = 2\nlr = 0.003\n[phase2]\nepochs = 2\nlr = 0.003\n[training]\nbatch_size = 64\nseed = 5\n[data]\ndir = {:?}\ntrain_limit = 1200\ntest_limit = 500\n",
        data.display().to_string()
    );
    TrainConfig::from_toml_str(&text, "cuda resume test").unwrap()
}

fn train(
    cfg: &TrainConfig,
    data: &Splits,
    dir: &Path,
    resume: bool,
    progress: &mut dyn Progress,
    stop: &AtomicBool,
) -> Result<Summary, Error> {
    let dev = cuda();
    let mut run = if resume {
        RunDir::open(dir).unwrap()
    } else {
        RunDir::create(dir).unwrap()
    };
    let mut trainer = Trainer {
        dev: &dev,
        config: cfg,
        data,
        run: &mut run,
        progress,
        stop,
        threads: 0,
    };
    if resume {
        trainer.resume()
    } else {
        trainer.run()
    }
}

/// A run stopped after phase 1's first epoch and resumed on CUDA ends where an
/// uninterrupted CUDA run does: the same choices and best epochs, and the same losses and
/// accuracies to within the rounding of reductions whose order CUDA does not fix (dfdx's
/// sums and softmax add with atomics), 1e-4 relative.
#[test]
fn a_resumed_cuda_run_ends_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = run_config();
    let data = Splits::load(&cfg.data, 10).unwrap();
    let never = AtomicBool::new(false);
    let whole = train(
        &cfg,
        &data,
        &tmp.path().join("whole"),
        false,
        &mut Silent,
        &never,
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let dir = tmp.path().join("stopped");
    let err = train(&cfg, &data, &dir, false, &mut StopAfterFirst(&stop), &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    let resumed = train(&cfg, &data, &dir, true, &mut Silent, &never).unwrap();
    assert_eq!(whole.final_choices, resumed.final_choices);
    assert_eq!(whole.phases.len(), resumed.phases.len());
    for (a, b) in whole.phases.iter().zip(&resumed.phases) {
        assert_eq!(a.best_epoch, b.best_epoch, "{}", a.phase);
        let pairs = [
            (a.validation_loss, b.validation_loss),
            (a.test_loss, b.test_loss),
            (a.test_accuracy, b.test_accuracy),
        ];
        for (x, y) in pairs {
            assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{}: {x} vs {y}",
                a.phase
            );
        }
        println!(
            "{}: uninterrupted {:?}, resumed {:?} (bit for bit: {})",
            a.phase,
            (a.validation_loss, a.test_accuracy),
            (b.validation_loss, b.test_accuracy),
            pairs.iter().all(|(x, y)| x.to_bits() == y.to_bits())
        );
    }
}
