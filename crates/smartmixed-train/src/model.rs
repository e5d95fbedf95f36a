//! The network of every mode: dense layers with PyTorch's `[out, in]` weights, and the
//! hidden activations of phase 1 (per-neuron logits, Gumbel selection) or of phase 2 and
//! the fixed baselines (contiguous activation groups).

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::Rng;
use smartmixed_core::Activation;

use crate::kernels::{groups_from_choices, Block};
use crate::ops::{generic, values, LayerActivation, Matrix, TrainDevice};

/// Gumbel noise constant of the authors' code: `g = -ln(-ln(u + EPS) + EPS)`.
const GUMBEL_EPS: f32 = 1e-20;

/// One affine layer. The bias is a `[1, out]` matrix so that every parameter has the same
/// tensor type.
#[derive(Debug, Clone)]
pub struct Dense<D: TrainDevice> {
    /// `[out, in]`, as PyTorch stores it.
    pub weight: Matrix<D>,
    /// `[1, out]`.
    pub bias: Matrix<D>,
}

impl<D: TrainDevice> Dense<D> {
    /// The `[out, in]` weights on the host, row-major (reports read them without dfdx).
    pub fn weight_values(&self) -> Vec<f32> {
        crate::ops::values(&self.weight)
    }
}

/// How the hidden neurons are activated.
#[derive(Debug, Clone)]
pub enum Hidden<D: TrainDevice> {
    /// Phase 1: every neuron has logits over `pool`, `[pool, neurons]` per layer.
    Selective {
        pool: Vec<&'static Activation>,
        logits: Vec<Matrix<D>>,
        temperature: f32,
    },
    /// Phase 2 and fixed baselines: per layer, contiguous groups covering the layer, and
    /// for each stored neuron its index before the grouping permutation.
    Grouped {
        groups: Vec<Vec<Block>>,
        original_index: Vec<Vec<u32>>,
    },
}

/// An MLP whose hidden neurons each have their own activation.
#[derive(Debug, Clone)]
pub struct Network<D: TrainDevice> {
    /// Hidden layers then the output layer.
    pub layers: Vec<Dense<D>>,
    pub hidden: Hidden<D>,
}

/// Samples PyTorch's `nn.Linear` initialisation: weights and biases uniform in
/// `±1/sqrt(in)`.
fn init_dense<D: TrainDevice>(
    dev: &D,
    inputs: usize,
    outputs: usize,
    rng: &mut StdRng,
) -> Dense<D> {
    let bound = 1.0 / (inputs as f32).sqrt();
    let mut sample = |n: usize| {
        (0..n)
            .map(|_| rng.gen_range(-bound..bound))
            .collect::<Vec<f32>>()
    };
    let weight = sample(outputs * inputs);
    let bias = sample(outputs);
    Dense {
        weight: dev.tensor_from_vec(weight, (outputs, inputs)),
        bias: dev.tensor_from_vec(bias, (1, outputs)),
    }
}

/// Freshly initialised layers for `widths = [inputs, hidden..., outputs]`.
pub fn init_layers<D: TrainDevice>(dev: &D, widths: &[usize], rng: &mut StdRng) -> Vec<Dense<D>> {
    widths
        .windows(2)
        .map(|w| init_dense(dev, w[0], w[1], rng))
        .collect()
}

/// Phase-1 logits as the authors initialise them: zeros, with one random entry per neuron
/// set to 0.001. Stored `[pool, neurons]`.
fn init_logits<D: TrainDevice>(
    dev: &D,
    pool: usize,
    neurons: usize,
    rng: &mut StdRng,
) -> Matrix<D> {
    let mut v = vec![0.0f32; pool * neurons];
    for i in 0..neurons {
        v[rng.gen_range(0..pool) * neurons + i] = 0.001;
    }
    dev.tensor_from_vec(v, (pool, neurons))
}

/// Index of the largest value per column of a `[rows, cols]` row-major matrix; the first
/// on ties, as `torch.argmax`.
pub fn argmax_columns(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut column = vec![0.0; rows];
    (0..cols)
        .map(|i| {
            for (j, v) in column.iter_mut().enumerate() {
                *v = values[j * cols + i];
            }
            smartmixed_core::math::argmax(&column) as u8
        })
        .collect()
}

/// One Gumbel(0, 1) draw from `u` in `[0, 1)`.
pub fn gumbel(u: f32) -> f32 {
    -(-(u + GUMBEL_EPS).ln() + GUMBEL_EPS).ln()
}

impl<D: TrainDevice> Network<D> {
    /// A phase-1 network over `pool`.
    pub fn selective(
        dev: &D,
        widths: &[usize],
        pool: Vec<&'static Activation>,
        temperature: f32,
        rng: &mut StdRng,
    ) -> Self {
        let layers = init_layers(dev, widths, rng);
        let logits = widths[1..widths.len() - 1]
            .iter()
            .map(|&n| init_logits(dev, pool.len(), n, rng))
            .collect();
        Self {
            layers,
            hidden: Hidden::Selective {
                pool,
                logits,
                temperature,
            },
        }
    }

    /// A network with one activation for every hidden neuron (the paper's baselines).
    pub fn fixed(
        dev: &D,
        widths: &[usize],
        activation: &'static Activation,
        rng: &mut StdRng,
    ) -> Self {
        let hidden = &widths[1..widths.len() - 1];
        Self {
            layers: init_layers(dev, widths, rng),
            hidden: Hidden::Grouped {
                groups: hidden
                    .iter()
                    .map(|&n| {
                        vec![Block {
                            activation,
                            start: 0,
                            len: n,
                        }]
                    })
                    .collect(),
                original_index: hidden.iter().map(|&n| (0..n as u32).collect()).collect(),
            },
        }
    }

    /// `[inputs, hidden..., outputs]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.layers[0].weight.shape().1];
        w.extend(self.layers.iter().map(|l| l.weight.shape().0));
        w
    }

    /// Every trainable tensor, in a fixed order (weights and biases, then logits).
    pub fn params(&self) -> Vec<&Matrix<D>> {
        let mut p: Vec<&Matrix<D>> = self
            .layers
            .iter()
            .flat_map(|l| [&l.weight, &l.bias])
            .collect();
        if let Hidden::Selective { logits, .. } = &self.hidden {
            p.extend(logits.iter());
        }
        p
    }

    /// [`Self::params`], mutably.
    pub fn params_mut(&mut self) -> Vec<&mut Matrix<D>> {
        let mut p: Vec<&mut Matrix<D>> = self
            .layers
            .iter_mut()
            .flat_map(|l| [&mut l.weight, &mut l.bias])
            .collect();
        if let Hidden::Selective { logits, .. } = &mut self.hidden {
            p.extend(logits.iter_mut());
        }
        p
    }

    /// The first non-finite phase-1 logit: its hidden layer (1-based) and value.
    pub fn non_finite_logit(&self) -> Option<(usize, f32)> {
        let Hidden::Selective { logits, .. } = &self.hidden else {
            return None;
        };
        logits.iter().enumerate().find_map(|(l, m)| {
            values(m)
                .into_iter()
                .find(|v| !v.is_finite())
                .map(|v| (l + 1, v))
        })
    }

    /// Phase 1's per-neuron choice: the argmax of the logits (eq. 7), per hidden layer.
    pub fn argmax_choices(&self) -> Option<Vec<Vec<u8>>> {
        match &self.hidden {
            Hidden::Selective { logits, pool, .. } => Some(
                logits
                    .iter()
                    .map(|l| argmax_columns(&values(l), pool.len(), l.shape().1))
                    .collect(),
            ),
            Hidden::Grouped { .. } => None,
        }
    }

    /// The logits of the output layer. With `noise`, phase 1 draws a fresh Gumbel sample per
    /// neuron (shared by the batch); without, it uses the argmax choices.
    pub fn forward<T: Tape<f32, D>>(
        &self,
        x: Matrix<D, T>,
        noise: Option<&mut StdRng>,
    ) -> Matrix<D, T> {
        self.forward_on(x, noise, false)
    }

    /// [`Network::forward`] on the device-generic ops (`ops::generic`): the reference the
    /// fused CPU kernels are tested against, and what any device without them runs.
    pub fn forward_generic<T: Tape<f32, D>>(
        &self,
        x: Matrix<D, T>,
        noise: Option<&mut StdRng>,
    ) -> Matrix<D, T> {
        self.forward_on(x, noise, true)
    }

    fn forward_on<T: Tape<f32, D>>(
        &self,
        x: Matrix<D, T>,
        mut noise: Option<&mut StdRng>,
        generic_ops: bool,
    ) -> Matrix<D, T> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (l, layer) in self.layers.iter().enumerate() {
            let choices: Vec<u8>;
            let activation = match &self.hidden {
                _ if l == last => LayerActivation::Identity,
                Hidden::Selective {
                    pool,
                    logits,
                    temperature,
                } => {
                    let alpha = &logits[l];
                    let (p, n) = *alpha.shape();
                    let mut scores = values(alpha);
                    let mut noise_values = vec![0.0f32; p * n];
                    if let Some(rng) = noise.as_deref_mut() {
                        noise_values
                            .iter_mut()
                            .for_each(|g| *g = gumbel(rng.gen::<f32>()));
                    }
                    scores
                        .iter_mut()
                        .zip(&noise_values)
                        .for_each(|(s, g)| *s += g);
                    choices = argmax_columns(&scores, p, n);
                    let noise_t = alpha.device().tensor_from_vec(noise_values, (p, n));
                    // soft = softmax((alpha + g) / tau) over the pool; gradients reach alpha.
                    let soft = ((alpha.retaped::<T>() + noise_t) * (1.0 / *temperature))
                        .softmax::<Axis<0>>();
                    LayerActivation::Selective {
                        soft,
                        choices: &choices,
                        pool,
                    }
                }
                Hidden::Grouped { groups, .. } => LayerActivation::Grouped(&groups[l]),
            };
            h = if generic_ops {
                generic::dense(h, &layer.weight, &layer.bias, activation)
            } else {
                // The network's input needs no gradient.
                D::dense(h, &layer.weight, &layer.bias, activation, l > 0)
            };
        }
        h
    }

    /// The phase-2 network (section III.C): each neuron keeps its argmax activation; neurons
    /// are permuted so that each activation owns one contiguous block, in pool order (rows of
    /// `W_l` and `b_l`, columns of `W_{l+1}`), which leaves the function unchanged. With
    /// `reinit`, the weights are drawn afresh instead of transferred (the authors' code).
    pub fn to_mixed(&self, reinit: Option<&mut StdRng>) -> Option<Self> {
        let Hidden::Selective { pool, .. } = &self.hidden else {
            return None;
        };
        let choices = self.argmax_choices()?;
        let mut layers = match reinit {
            Some(rng) => init_layers(self.layers[0].weight.device(), &self.widths(), rng),
            None => self.layers.clone(),
        };
        let mut groups = Vec::new();
        let mut original_index = Vec::new();
        for (l, choice) in choices.iter().enumerate() {
            let mut perm: Vec<u32> = (0..choice.len() as u32).collect();
            perm.sort_by_key(|&i| choice[i as usize]); // stable: keeps neuron order in a group
            let sorted: Vec<u8> = perm.iter().map(|&i| choice[i as usize]).collect();
            groups.push(groups_from_choices(&sorted, pool));
            permute_rows(&mut layers[l].weight, &perm);
            permute_rows_of_bias(&mut layers[l].bias, &perm);
            permute_columns(&mut layers[l + 1].weight, &perm);
            original_index.push(perm);
        }
        Some(Self {
            layers,
            hidden: Hidden::Grouped {
                groups,
                original_index,
            },
        })
    }
}

fn permute_rows<D: TrainDevice>(m: &mut Matrix<D>, perm: &[u32]) {
    let (rows, cols) = *m.shape();
    let v = m.as_vec();
    let mut out = Vec::with_capacity(rows * cols);
    for &r in perm {
        out.extend_from_slice(&v[r as usize * cols..(r as usize + 1) * cols]);
    }
    *m = m.device().tensor_from_vec(out, (rows, cols));
}

fn permute_rows_of_bias<D: TrainDevice>(b: &mut Matrix<D>, perm: &[u32]) {
    let v = b.as_vec();
    let out = perm.iter().map(|&i| v[i as usize]).collect();
    *b = b.device().tensor_from_vec(out, *b.shape());
}

fn permute_columns<D: TrainDevice>(m: &mut Matrix<D>, perm: &[u32]) {
    let (rows, cols) = *m.shape();
    let v = m.as_vec();
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        out.extend(perm.iter().map(|&c| v[r * cols + c as usize]));
    }
    *m = m.device().tensor_from_vec(out, (rows, cols));
}

/// The three networks a training-step benchmark times on `widths`, seeded alike: the
/// fixed-ReLU baseline, phase 1 over the paper's pool, and phase 2 with all six groups in
/// every layer (random initial logits: its worst case), each with whether its step draws
/// Gumbel noise. For `benches/train_step.rs` and the `step_rate` example.
pub fn step_benchmarks<D: TrainDevice>(
    dev: &D,
    widths: &[usize],
) -> Vec<(&'static str, Network<D>, bool)> {
    use rand::SeedableRng;
    use smartmixed_core::{lookup, PAPER_POOL};
    let mut rng = StdRng::seed_from_u64(0);
    let pool = PAPER_POOL.iter().filter_map(|n| lookup(n).ok()).collect();
    let relu = lookup("relu").expect("relu is built in");
    let relu = Network::fixed(dev, widths, relu, &mut rng);
    let phase1 = Network::selective(dev, widths, pool, 0.3, &mut rng);
    let phase2 = phase1.to_mixed(None).expect("phase 1 has a phase 2");
    vec![
        ("relu", relu, false),
        ("phase1", phase1, true),
        ("phase2", phase2, false),
    ]
}
