//! The hidden-layer ops against real oracles: finite differences, hand-computed forward
//! values, sampling statistics, and the fused CPU kernels against the device-generic ops.
#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use smartmixed_core::{lookup, Activation, PAPER_POOL};
use smartmixed_train::internals::{argmax_columns, gumbel};
use smartmixed_train::internals::{generic, LayerActivation};
use smartmixed_train::internals::{Block, CLAMP};
use smartmixed_train::{Matrix, TrainDevice};

use smartmixed_activations_extra as _;

const B: usize = 3;
const N: usize = 5;
const TAU: f32 = 0.3;

/// The `n x n` identity: the fused dense op with it computes exactly its activation of
/// `pre` (every product is `x * 1` or `x * 0`), so the activation parts are tested alone.
fn identity(n: usize) -> Matrix<Cpu> {
    let v = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    Cpu::default().tensor_from_vec(v, (n, n))
}

fn pool(names: &[&str]) -> Vec<&'static Activation> {
    names.iter().map(|n| lookup(n).unwrap()).collect()
}

/// Values in ±3 that stay at least 0.1 away from the kinks at 0.
fn away_from_kinks(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            let v: f32 = rng.gen_range(0.1..3.0);
            if rng.gen() {
                v
            } else {
                -v
            }
        })
        .collect()
}

struct Case {
    pre: Vec<f32>,
    bias: Vec<f32>,
    alpha: Vec<f32>,
    noise: Vec<f32>,
    weights: Vec<f32>,
    choices: Vec<u8>,
    pool: Vec<&'static Activation>,
}

impl Case {
    /// Choices are forced to `chosen` per neuron; `noise` is fixed so the surrogate is smooth.
    fn new(seed: u64, pool: Vec<&'static Activation>, chosen: &[u8]) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = pool.len();
        let pre = away_from_kinks(&mut rng, B * N);
        let bias = vec![0.0; N];
        let alpha: Vec<f32> = (0..p * N).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let noise: Vec<f32> = (0..p * N).map(|_| gumbel(rng.gen())).collect();
        let weights: Vec<f32> = (0..B * N).map(|_| rng.gen_range(-1.0..1.0)).collect();
        Self {
            pre,
            bias,
            alpha,
            noise,
            weights,
            choices: chosen.to_vec(),
            pool,
        }
    }

    fn p(&self) -> usize {
        self.pool.len()
    }

    /// `sum(out * weights)` and its gradients w.r.t. (pre, bias, alpha).
    fn run(
        &self,
        fused: bool,
        pre: &[f32],
        bias: &[f32],
        alpha: &[f32],
    ) -> (f32, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let dev = Cpu::default();
        let pre_t: Matrix<Cpu> = dev.tensor_from_vec(pre.to_vec(), (B, N));
        let bias_t: Matrix<Cpu> = dev.tensor_from_vec(bias.to_vec(), (1, N));
        let alpha_t: Matrix<Cpu> = dev.tensor_from_vec(alpha.to_vec(), (self.p(), N));
        let noise = dev.tensor_from_vec(self.noise.clone(), (self.p(), N));
        let soft =
            ((alpha_t.retaped::<OwnedTape<f32, Cpu>>() + noise) * (1.0 / TAU)).softmax::<Axis<0>>();
        let x = pre_t.leaky_trace();
        let out = if fused {
            let act = LayerActivation::Selective {
                soft,
                choices: &self.choices,
                pool: &self.pool,
            };
            Cpu::dense(x, &identity(N), &bias_t, act, true)
        } else {
            generic::selective(x, &bias_t, soft, &self.choices, &self.pool)
        };
        let out_v = out.as_vec();
        let w = dev.tensor_from_vec(self.weights.clone(), (B, N));
        let loss = (out * w).sum();
        let value = loss.array();
        let g = loss.backward();
        (
            value,
            out_v,
            g.get(&pre_t).as_vec(),
            g.get(&bias_t).as_vec(),
            g.get(&alpha_t).as_vec(),
        )
    }

    /// The straight-through surrogate: the hard forward's value in `pre`/`bias`, and for the
    /// logits `sum(w * sum_j soft_j(alpha) * clamp(act_j(z)))`, whose gradient the estimator
    /// passes to the logits.
    fn surrogate_in_alpha(&self, alpha: &[f32]) -> f64 {
        let p = self.p();
        let mut total = 0.0f64;
        for i in 0..N {
            let logits: Vec<f64> = (0..p)
                .map(|j| ((alpha[j * N + i] + self.noise[j * N + i]) / TAU) as f64)
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
            let s: f64 = e.iter().sum();
            for b in 0..B {
                let z = self.pre[b * N + i] + self.bias[i];
                for j in 0..p {
                    let a = (self.pool[j].forward)(z).clamp(-CLAMP, CLAMP) as f64;
                    total += self.weights[b * N + i] as f64 * e[j] / s * a;
                }
            }
        }
        total
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            ((*g as f64) - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: analytic {g}, finite difference {w}"
        );
    }
}

fn finite_differences(x: &[f32], h: f32, f: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|k| {
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[k] += h;
            down[k] -= h;
            (f(&up) - f(&down)) / (2.0 * h as f64)
        })
        .collect()
}

#[test]
fn phase1_gradients_match_finite_differences_for_every_builtin() {
    let pool = pool(&PAPER_POOL);
    for j in 0..pool.len() as u8 {
        // All neurons pick activation j, except one that picks another, so mixed layers are
        // covered too.
        let mut chosen = vec![j; N];
        chosen[N - 1] = (j + 1) % pool.len() as u8;
        let case = Case::new(100 + j as u64, pool.clone(), &chosen);
        for fused in [true, false] {
            let (_, _, g_pre, g_bias, g_alpha) =
                case.run(fused, &case.pre, &case.bias, &case.alpha);
            let fd_pre = finite_differences(&case.pre, 1e-2, |pre| {
                case.run(fused, pre, &case.bias, &case.alpha).0 as f64
            });
            assert_close(
                &format!("{} d/dpre (fused {fused})", pool[j as usize].name),
                &g_pre,
                &fd_pre,
                2e-3,
            );
            let fd_bias = finite_differences(&case.bias, 1e-2, |bias| {
                case.run(fused, &case.pre, bias, &case.alpha).0 as f64
            });
            assert_close("d/dbias", &g_bias, &fd_bias, 2e-3);
            let fd_alpha = finite_differences(&case.alpha, 1e-3, |a| case.surrogate_in_alpha(a));
            assert_close(
                &format!("{} d/dlogits", pool[j as usize].name),
                &g_alpha,
                &fd_alpha,
                2e-3,
            );
        }
    }
}

#[test]
fn phase1_forward_is_exactly_the_selected_activation() {
    let pool = pool(&[
        "relu",
        "sigmoid",
        "tanh",
        "leaky_relu",
        "elu",
        "selu",
        "silu",
    ]);
    let chosen: Vec<u8> = (0..N as u8).map(|i| (i * 3) % 7).collect();
    let mut case = Case::new(7, pool, &chosen);
    case.pre[0] = 25.0; // relu or selu would exceed the clamp
    case.bias = vec![0.5, -0.25, 0.0, 1.0, -2.0];
    for fused in [true, false] {
        let (_, out, ..) = case.run(fused, &case.pre, &case.bias, &case.alpha);
        for b in 0..B {
            for i in 0..N {
                let act = case.pool[chosen[i] as usize];
                let want = (act.forward)(case.pre[b * N + i] + case.bias[i]).clamp(-CLAMP, CLAMP);
                assert_eq!(
                    out[b * N + i].to_bits(),
                    want.to_bits(),
                    "fused {fused}, {} at [{b},{i}]",
                    act.name
                );
            }
        }
    }
}

#[test]
fn fused_selective_kernel_agrees_with_generic_ops() {
    let pool = pool(&[
        "relu",
        "sigmoid",
        "tanh",
        "leaky_relu",
        "elu",
        "selu",
        "mish",
    ]);
    let chosen: Vec<u8> = (0..N as u8).map(|i| (i * 2 + 1) % 7).collect();
    let mut case = Case::new(11, pool, &chosen);
    case.bias = vec![0.1, 0.2, -0.3, 0.4, -0.5];
    let a = case.run(true, &case.pre, &case.bias, &case.alpha);
    let b = case.run(false, &case.pre, &case.bias, &case.alpha);
    assert_eq!(a.1, b.1, "forward values");
    for (what, x, y) in [
        ("pre", &a.2, &b.2),
        ("bias", &a.3, &b.3),
        ("logits", &a.4, &b.4),
    ] {
        for (u, v) in x.iter().zip(y.iter()) {
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                "{what}: fused {u}, generic {v}"
            );
        }
    }
}

/// `sum(w * act_g(pre + bias))` through the grouped op, and its gradients.
fn grouped_run(
    fused: bool,
    pre: &[f32],
    bias: &[f32],
    w: &[f32],
    groups: &[Block],
) -> (f32, Vec<f32>, Vec<f32>, Vec<f32>) {
    let dev = Cpu::default();
    let pre_t: Matrix<Cpu> = dev.tensor_from_vec(pre.to_vec(), (B, N));
    let bias_t: Matrix<Cpu> = dev.tensor_from_vec(bias.to_vec(), (1, N));
    let x = pre_t.leaky_trace();
    let out = if fused {
        Cpu::dense(
            x,
            &identity(N),
            &bias_t,
            LayerActivation::Grouped(groups),
            true,
        )
    } else {
        generic::grouped(x, &bias_t, groups)
    };
    let out_v = out.as_vec();
    let loss = (out * dev.tensor_from_vec(w.to_vec(), (B, N))).sum();
    let value = loss.array();
    let g = loss.backward();
    (
        value,
        out_v,
        g.get(&pre_t).as_vec(),
        g.get(&bias_t).as_vec(),
    )
}

#[test]
fn grouped_op_gradients_match_finite_differences_and_generic_ops() {
    let mut rng = StdRng::seed_from_u64(5);
    let pre = away_from_kinks(&mut rng, B * N);
    let bias: Vec<f32> = vec![0.0; N];
    let w: Vec<f32> = (0..B * N).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let groups = [
        Block {
            activation: lookup("elu").unwrap(),
            start: 0,
            len: 2,
        },
        Block {
            activation: lookup("gelu_tanh").unwrap(),
            start: 2,
            len: 1,
        },
        Block {
            activation: lookup("tanh").unwrap(),
            start: 3,
            len: 2,
        },
    ];
    let fused = grouped_run(true, &pre, &bias, &w, &groups);
    let generic = grouped_run(false, &pre, &bias, &w, &groups);
    assert_eq!(fused.1, generic.1);
    let fd = finite_differences(&pre, 1e-2, |p| {
        grouped_run(true, p, &bias, &w, &groups).0 as f64
    });
    assert_close("grouped d/dpre", &fused.2, &fd, 2e-3);
    let fd_b = finite_differences(&bias, 1e-2, |b| {
        grouped_run(true, &pre, b, &w, &groups).0 as f64
    });
    assert_close("grouped d/dbias", &fused.3, &fd_b, 2e-3);
    for (u, v) in fused
        .2
        .iter()
        .zip(&generic.2)
        .chain(fused.3.iter().zip(&generic.3))
    {
        assert!(
            (u - v).abs() <= 1e-6 * (1.0 + v.abs()),
            "fused {u}, generic {v}"
        );
    }
}

#[test]
fn gumbel_argmax_picks_each_activation_with_its_softmax_probability() {
    let alpha = [1.0f32, 0.0, -0.5, 2.0, 0.3, -1.0];
    let p = alpha.len();
    let m = alpha.iter().cloned().fold(f32::MIN, f32::max);
    let z: f64 = alpha.iter().map(|a| ((a - m) as f64).exp()).sum();
    let probs: Vec<f64> = alpha.iter().map(|a| ((a - m) as f64).exp() / z).collect();
    // One draw over many neurons with identical logits, as the model draws per neuron.
    let neurons = 400_000;
    let mut rng = StdRng::seed_from_u64(2024);
    let mut scores = vec![0.0f32; p * neurons];
    for j in 0..p {
        for i in 0..neurons {
            scores[j * neurons + i] = alpha[j] + gumbel(rng.gen());
        }
    }
    let choices = argmax_columns(&scores, p, neurons);
    for j in 0..p {
        let freq = choices.iter().filter(|&&c| c as usize == j).count() as f64 / neurons as f64;
        // Five standard errors of a binomial proportion.
        let tol = 5.0 * (probs[j] * (1.0 - probs[j]) / neurons as f64).sqrt();
        assert!(
            (freq - probs[j]).abs() < tol,
            "activation {j}: frequency {freq}, softmax {}",
            probs[j]
        );
    }
}

/// `sum(w * dense(x))` through the fused or the generic dense op with a phase-2 grouping,
/// and its gradients in (x, W, bias).
fn dense_run(
    fused: bool,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    w: &[f32],
    (b, k, n): (usize, usize, usize),
    groups: &[Block],
) -> (f32, Vec<f32>, Vec<f32>, Vec<f32>) {
    let dev = Cpu::default();
    let x_t: Matrix<Cpu> = dev.tensor_from_vec(x.to_vec(), (b, k));
    let w_t: Matrix<Cpu> = dev.tensor_from_vec(weight.to_vec(), (n, k));
    let b_t: Matrix<Cpu> = dev.tensor_from_vec(bias.to_vec(), (1, n));
    let act = if groups.is_empty() {
        LayerActivation::Identity
    } else {
        LayerActivation::Grouped(groups)
    };
    let traced = x_t.leaky_trace();
    let out = if fused {
        Cpu::dense(traced, &w_t, &b_t, act, true)
    } else {
        generic::dense(traced, &w_t, &b_t, act)
    };
    let loss = (out * dev.tensor_from_vec(w.to_vec(), (b, n))).sum();
    let value = loss.array();
    let g = loss.backward();
    (
        value,
        g.get(&x_t).as_vec(),
        g.get(&w_t).as_vec(),
        g.get(&b_t).as_vec(),
    )
}

/// The fused dense op (gemm 0.19 products, row-parallel kernels on a 3-thread pool) against
/// dfdx's matmul and the generic activation ops, and its weight gradient against finite
/// differences, for a hidden layer and the output layer.
#[test]
fn fused_dense_op_agrees_with_generic_ops_and_finite_differences() {
    let (b, k, n) = (7, 11, 5);
    let mut rng = StdRng::seed_from_u64(9);
    let x = away_from_kinks(&mut rng, b * k);
    let weight: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let bias: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let w: Vec<f32> = (0..b * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let groups = [
        Block {
            activation: lookup("tanh").unwrap(),
            start: 0,
            len: 3,
        },
        Block {
            activation: lookup("selu").unwrap(),
            start: 3,
            len: 2,
        },
    ];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    for groups in [&groups[..], &[]] {
        let run = |fused: bool, weight: &[f32]| {
            pool.install(|| dense_run(fused, &x, weight, &bias, &w, (b, k, n), groups))
        };
        let fused = run(true, &weight);
        let generic = run(false, &weight);
        assert!((fused.0 - generic.0).abs() <= 1e-5 * (1.0 + generic.0.abs()));
        for (what, u, v) in [
            ("d/dx", &fused.1, &generic.1),
            ("d/dW", &fused.2, &generic.2),
            ("d/dbias", &fused.3, &generic.3),
        ] {
            assert_eq!(u.len(), v.len(), "{what}");
            for (u, v) in u.iter().zip(v.iter()) {
                assert!(
                    (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                    "{what}: fused {u}, generic {v}"
                );
            }
        }
        let fd = finite_differences(&weight, 1e-2, |wt| run(true, wt).0 as f64);
        assert_close("dense d/dW", &fused.2, &fd, 3e-3);
    }
}
