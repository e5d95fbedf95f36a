//! The dense layer (matmul, bias, the layer's activations) as one dfdx op, generic over the
//! device, with a fused CPU version for [`Cpu`]: its three products run on
//! [`crate::matmul`] and its elementwise passes on [`crate::kernels`], all over the run's
//! training threads.
//!
//! The device-generic versions ([`generic`]) are built from dfdx ops only and define the
//! semantics; tests check that the fused CPU version agrees with them in value and gradient.

use dfdx::prelude::*;
use dfdx::tensor::Gradients;
use smartmixed_core::Activation;

use crate::kernels::{self, Block, SelectiveSaved, CLAMP};
use crate::matmul;
use crate::recycle;

/// A runtime-sized matrix (`[batch, neurons]`, `[out, in]`, `[pool, neurons]`).
pub type Matrix<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

/// A tensor's values on the host, by one `memcpy` of its buffer (dfdx's `as_vec` walks an
/// index iterator element by element, which cost 13% of a training step). For the
/// contiguous tensors the trainer creates (every tensor it builds from a `Vec`).
pub fn values<D: Device<f32>, S: Shape, T>(t: &Tensor<S, f32, D, T>) -> Vec<f32> {
    let mut v = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut v);
    v
}

/// `Send + Sync` on CPU builds, so a run can execute on its [`crate::pool::TrainPool`];
/// nothing under the `cuda` feature (cudarc's device is neither), where a run executes on
/// the calling thread instead.
#[cfg(not(feature = "cuda"))]
pub trait ThreadSafe: Send + Sync {}
#[cfg(not(feature = "cuda"))]
impl<T: Send + Sync> ThreadSafe for T {}
/// See the CPU build's `ThreadSafe`.
#[cfg(feature = "cuda")]
pub trait ThreadSafe {}
#[cfg(feature = "cuda")]
impl<T> ThreadSafe for T {}

/// Adam's first and second moments of one parameter, in device buffers.
pub type Moments<D> = (<D as Storage<f32>>::Vec, <D as Storage<f32>>::Vec);

/// [`values`] into a recycled buffer (see [`recycle`]).
fn host_copy<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut v = recycle::take(t.shape().num_elements());
    t.copy_into(&mut v);
    v
}

/// What follows a dense layer's matmul.
pub enum LayerActivation<'a, D: Device<f32>, T> {
    /// The output layer: the bias alone.
    Identity,
    /// Phase 2 and fixed baselines: `act_g(pre + bias)` over each contiguous group.
    Grouped(&'a [Block]),
    /// Phase 1: `clamp(sum_j h_j clamp(act_j(pre + bias)))` where `h` is the straight-through
    /// hard sample: exactly `one_hot(choices)` forward, identity to `soft`
    /// (`[pool, neurons]`) backward.
    Selective {
        soft: Matrix<D, T>,
        choices: &'a [u8],
        pool: &'a [&'static Activation],
    },
}

/// A dfdx device SmartMixed can train on: the dense-layer op (with a device-generic
/// default) and the gradient primitives that clipping needs.
pub trait TrainDevice: Device<f32> + ThreadSafe {
    /// `act(x W^T + bias)` for `x: [batch, in]`, `W: [out, in]`, `bias: [1, out]`.
    /// `input_grad = false` skips `x`'s gradient (the network's input needs none).
    fn dense<T: Tape<f32, Self>>(
        x: Matrix<Self, T>,
        weight: &Matrix<Self>,
        bias: &Matrix<Self>,
        activation: LayerActivation<'_, Self, T>,
        input_grad: bool,
    ) -> Matrix<Self, T> {
        let _ = input_grad;
        generic::dense(x, weight, bias, activation)
    }

    /// One Adam update of every parameter with its moments and gradient (dfdx's kernel).
    fn adam_update(
        config: &AdamConfig,
        step: i32,
        params: &mut [&mut Matrix<Self>],
        moments: &mut [Moments<Self>],
        grads: &mut Gradients<f32, Self>,
    ) -> Result<(), Self::Err> {
        for (p, (m, v)) in params.iter_mut().zip(moments.iter_mut()) {
            let g = grads.get_or_alloc_mut(&**p)?;
            config.try_update(step, p, m, v, g)?;
        }
        Ok(())
    }

    /// The sum of squares of a gradient buffer.
    fn sum_squares(&self, grad: &<Self as Storage<f32>>::Vec) -> Result<f64, Self::Err>;

    /// Multiplies a gradient buffer by `factor` in place.
    fn scale(&self, grad: &mut <Self as Storage<f32>>::Vec, factor: f32) -> Result<(), Self::Err>;

    /// A device buffer's values on the host (for the resume state).
    fn download(&self, v: &<Self as Storage<f32>>::Vec) -> Result<Vec<f32>, Self::Err>;

    /// A device buffer holding `values`.
    fn upload(&self, values: &[f32]) -> Result<<Self as Storage<f32>>::Vec, Self::Err>;
}

/// Device-generic versions built from dfdx ops.
pub mod generic {
    use super::*;

    /// See [`TrainDevice::dense`]: dfdx's matmul, then the activation op.
    pub fn dense<D: Device<f32>, T: Tape<f32, D>>(
        x: Matrix<D, T>,
        weight: &Matrix<D>,
        bias: &Matrix<D>,
        activation: LayerActivation<'_, D, T>,
    ) -> Matrix<D, T> {
        let pre = x.matmul(weight.retaped::<T>().permute::<_, Axes2<1, 0>>());
        match activation {
            LayerActivation::Identity => add_bias(pre, bias),
            LayerActivation::Grouped(groups) => grouped(pre, bias, groups),
            LayerActivation::Selective {
                soft,
                choices,
                pool,
            } => selective(pre, bias, soft, choices, pool),
        }
    }

    /// `pre + bias` with the `[1, n]` bias broadcast over rows.
    pub fn add_bias<D: Device<f32>, T: Tape<f32, D>>(
        pre: Matrix<D, T>,
        bias: &Matrix<D>,
    ) -> Matrix<D, T> {
        let shape = *pre.shape();
        pre + bias
            .retaped::<T>()
            .reshape_like(&(shape.1,))
            .broadcast_like::<_, Axis<0>>(&shape)
    }

    /// A tape-free copy of `t` under a new id (`retaped` keeps the id, and dfdx cannot
    /// take the gradient of `t - t` when both sides share one).
    pub fn detached<D: Device<f32>, T: Tape<f32, D>>(t: &Matrix<D, T>) -> Matrix<D> {
        t.device().tensor_from_vec(t.as_vec(), *t.shape())
    }

    /// Applies `f` (which fills values and derivatives in place) on the host and returns a
    /// tensor whose value is exactly those values and whose gradient is those derivatives:
    /// `(z - stopgrad(z)) * f'(z) + f(z)`. Works on every device and for every registered
    /// activation, including plugins.
    pub fn linearised<D: Device<f32>, T: Tape<f32, D>>(
        z: Matrix<D, T>,
        f: impl FnOnce(&mut [f32], &mut [f32]),
    ) -> Matrix<D, T> {
        let shape = *z.shape();
        let dev = z.device().clone();
        let z_const = detached(&z);
        let mut y = z_const.as_vec();
        let mut d = vec![0.0; y.len()];
        f(&mut y, &mut d);
        let y = dev.tensor_from_vec(y, shape);
        let d = dev.tensor_from_vec(d, shape);
        (z - z_const) * d + y
    }

    /// See [`TrainDevice::grouped`].
    pub fn grouped<D: Device<f32>, T: Tape<f32, D>>(
        pre: Matrix<D, T>,
        bias: &Matrix<D>,
        groups: &[Block],
    ) -> Matrix<D, T> {
        let n = pre.shape().1;
        let zero = vec![0.0; n];
        linearised(add_bias(pre, bias), |y, d| {
            let z = y.to_vec();
            for ((z, y), d) in z
                .chunks_exact(n)
                .zip(y.chunks_exact_mut(n))
                .zip(d.chunks_exact_mut(n))
            {
                for g in groups {
                    let r = g.start..g.start + g.len;
                    (g.activation.apply_with_derivative)(
                        &z[r.clone()],
                        &zero[r.clone()],
                        &mut y[r.clone()],
                        &mut d[r],
                    );
                }
            }
        })
    }

    /// See [`TrainDevice::selective`]. Evaluates every candidate for every neuron and
    /// mixes them with the straight-through sample, as equation (5) of the paper reads.
    pub fn selective<D: Device<f32>, T: Tape<f32, D>>(
        pre: Matrix<D, T>,
        bias: &Matrix<D>,
        soft: Matrix<D, T>,
        choices: &[u8],
        pool: &[&'static Activation],
    ) -> Matrix<D, T> {
        let dev = pre.device().clone();
        let (b, n) = *pre.shape();
        let p = pool.len();
        let one_hot: Vec<f32> = (0..p * n)
            .map(|k| {
                if choices[k % n] as usize == k / n {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let one_hot = dev.tensor_from_vec(one_hot, (p, n));
        // (soft - stopgrad(soft)) is exactly zero, so the forward value is exactly one-hot.
        let soft_const = detached(&soft);
        let (hard, hard_tape) = ((soft - soft_const) + one_hot).split_tape();
        let (z, z_tape) = add_bias(pre, bias).split_tape();
        let mut mix: Option<Matrix<D, T>> = None;
        for (j, act) in pool.iter().enumerate() {
            let value = linearised(z.clone().put_tape(T::default()), |y, d| {
                let zs = y.to_vec();
                let zero = vec![0.0; zs.len()];
                (act.apply_with_derivative)(&zs, &zero, y, d)
            })
            .clamp(-CLAMP, CLAMP);
            let weight = hard
                .clone()
                .put_tape(T::default())
                .select(dev.tensor(j))
                .broadcast_like::<_, Axis<0>>(&(b, n));
            let term = value * weight;
            mix = Some(match mix {
                None => term,
                Some(m) => m + term,
            });
        }
        let (mix, mix_tape) = mix.expect("a validated pool is never empty").split_tape();
        mix.put_tape(mix_tape.merge(hard_tape).merge(z_tape))
            .clamp(-CLAMP, CLAMP)
    }
}

/// Takes `t`'s gradient out of `grads` (allocating zeros if nothing flowed into it).
fn take_grad<S: Shape>(
    grads: &mut Gradients<f32, Cpu>,
    t: &Tensor<S, f32, Cpu>,
) -> Result<Vec<f32>, CpuError> {
    Ok(std::mem::take(&mut **grads.get_or_alloc_mut(t)?))
}

/// Puts back a gradient taken with [`take_grad`].
fn put_grad<S: Shape>(
    grads: &mut Gradients<f32, Cpu>,
    t: &Tensor<S, f32, Cpu>,
    g: Vec<f32>,
) -> Result<(), CpuError> {
    **grads.get_or_alloc_mut(t)? = g;
    Ok(())
}

/// Adds `delta` into `t`'s gradient.
fn add_grad<S: Shape>(
    grads: &mut Gradients<f32, Cpu>,
    t: &Tensor<S, f32, Cpu>,
    delta: &[f32],
) -> Result<(), CpuError> {
    for (g, d) in grads.get_or_alloc_mut(t)?.iter_mut().zip(delta) {
        *g += d;
    }
    Ok(())
}

/// Sum of squares of one chunk in 16 f32 lanes (a single running sum is a serial
/// dependency the compiler may not vectorise), returned as f64 for the cross-chunk total.
fn chunk_sum_squares(chunk: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 16];
    let mut parts = chunk.chunks_exact(16);
    for c in &mut parts {
        for (l, g) in lanes.iter_mut().zip(c) {
            *l += g * g;
        }
    }
    let tail: f32 = parts.remainder().iter().map(|g| g * g).sum();
    lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
}

/// What the dense op's backward pass needs to turn the output's gradient into the
/// pre-activation's (buffers recycled once it has run).
enum Saved {
    Identity,
    /// Each neuron's activation derivative.
    Grouped(Vec<f32>),
    /// Every candidate's value and the chosen derivative, the soft sample and the pool size.
    Selective(SelectiveSaved, Matrix<Cpu>, usize),
}

/// A recycled buffer of `len` values while training, nothing otherwise.
fn kept(train: bool, len: usize) -> Vec<f32> {
    if train {
        recycle::take(len)
    } else {
        Vec::new()
    }
}

impl Saved {
    /// `out = activation(pre + bias)` for `b` rows of `n` neurons; the soft sample's tape
    /// (phase 1) is merged into `tape`.
    fn forward<T: Tape<f32, Cpu>>(
        activation: LayerActivation<'_, Cpu, T>,
        (pre, bias, out): (&[f32], &[f32], &mut [f32]),
        (b, n): (usize, usize),
        train: bool,
        tape: &mut T,
    ) -> Self {
        match activation {
            LayerActivation::Identity => {
                kernels::bias_forward(pre, bias, out);
                Saved::Identity
            }
            LayerActivation::Grouped(groups) => {
                let mut deriv = kept(train, b * n);
                kernels::grouped_forward(pre, bias, groups, out, train.then_some(&mut deriv[..]));
                Saved::Grouped(deriv)
            }
            LayerActivation::Selective {
                soft,
                choices,
                pool,
            } => {
                let (soft, soft_tape) = soft.split_tape();
                *tape = std::mem::take(tape).merge(soft_tape);
                let mut s = SelectiveSaved {
                    values: kept(train, pool.len() * b * n),
                    deriv: kept(train, b * n),
                };
                kernels::selective_forward(pre, bias, pool, choices, out, train.then_some(&mut s));
                Saved::Selective(s, soft, pool.len())
            }
        }
    }

    /// The pre-activation's gradient from the output's (`None`: the output's itself, for
    /// the identity), the bias gradient into `g_bias`, the soft sample's into `grads`.
    fn backward(
        &self,
        g_out: &[f32],
        g_bias: &mut [f32],
        grads: &mut Gradients<f32, Cpu>,
    ) -> Result<Option<Vec<f32>>, CpuError> {
        match self {
            Saved::Identity => {
                kernels::bias_backward(g_out, g_bias);
                Ok(None)
            }
            Saved::Grouped(deriv) => {
                let mut g_pre = recycle::take(g_out.len());
                kernels::grouped_backward(g_out, deriv, &mut g_pre, g_bias);
                Ok(Some(g_pre))
            }
            Saved::Selective(s, soft, p) => {
                let mut g_pre = recycle::take(g_out.len());
                let mut g_soft = vec![0.0; p * g_bias.len()];
                kernels::selective_backward(g_out, s, &mut g_pre, g_bias, &mut g_soft);
                add_grad(grads, soft, &g_soft)?;
                Ok(Some(g_pre))
            }
        }
    }

    /// Hands the saved buffers back for the next step.
    fn recycle(self) {
        match self {
            Saved::Grouped(d) => recycle::give(d),
            Saved::Selective(s, ..) => {
                recycle::give(s.values);
                recycle::give(s.deriv);
            }
            Saved::Identity => {}
        }
    }
}

impl TrainDevice for Cpu {
    fn dense<T: Tape<f32, Self>>(
        x: Matrix<Self, T>,
        weight: &Matrix<Self>,
        bias: &Matrix<Self>,
        activation: LayerActivation<'_, Self, T>,
        input_grad: bool,
    ) -> Matrix<Self, T> {
        let (x, mut tape) = x.split_tape();
        let ((b, k), n) = (*x.shape(), weight.shape().0);
        // dfdx lends no view of a tensor's buffer: one copy of each input, which the
        // backward pass then keeps. Every buffer of this op is recycled across steps.
        let (mut xv, mut wv, bv) = (host_copy(&x), host_copy(weight), values(bias));
        let mut pre = recycle::take(b * n);
        matmul::forward(&xv, &wv, &mut pre, b, k, n);
        let mut out = vec![0.0; b * n];
        let train = T::OWNS_TAPE;
        let mut saved = Saved::forward(activation, (&pre, &bv, &mut out), (b, n), train, &mut tape);
        recycle::give(pre);
        let out = x.device().tensor_from_vec(out, (b, n));
        if !train {
            recycle::give(xv);
            recycle::give(wv);
            return out.put_tape(tape);
        }
        let (x_g, w_g, b_g, out_g) = (x, weight.clone(), bias.clone(), out.clone());
        tape.add_backward_op(move |grads| {
            let g_out = take_grad(grads, &out_g)?;
            let mut g_bias = vec![0.0; n];
            let g_pre_buf = saved.backward(&g_out, &mut g_bias, grads)?;
            let g_pre = g_pre_buf.as_deref().unwrap_or(&g_out);
            add_grad(grads, &b_g, &g_bias)?;
            matmul::grad_weight(g_pre, &xv, grads.get_or_alloc_mut(&w_g)?, b, k, n);
            if input_grad {
                matmul::grad_input(g_pre, &wv, grads.get_or_alloc_mut(&x_g)?, b, k, n);
            }
            put_grad(grads, &out_g, g_out)?;
            // The buffers go back for the next step (the closure runs once).
            for buf in [std::mem::take(&mut xv), std::mem::take(&mut wv)] {
                recycle::give(buf);
            }
            if let Some(buf) = g_pre_buf {
                recycle::give(buf);
            }
            std::mem::replace(&mut saved, Saved::Identity).recycle();
            Ok(())
        });
        out.put_tape(tape)
    }

    /// The parameters are updated in parallel, one per task (dfdx's kernel per tensor, so
    /// every value is exactly what the sequential loop gives).
    fn adam_update(
        config: &AdamConfig,
        step: i32,
        params: &mut [&mut Matrix<Self>],
        moments: &mut [Moments<Self>],
        grads: &mut Gradients<f32, Self>,
    ) -> Result<(), CpuError> {
        use crate::pool::{least_items_for, SPLIT_FROM_EVALUATIONS};
        use rayon::prelude::*;
        // Gradients lends one buffer at a time: move them out, update, move them back.
        let mut taken = Vec::with_capacity(params.len());
        for p in params.iter() {
            let empty = <Self as Storage<f32>>::try_alloc_len(p.device(), 0)?;
            taken.push(std::mem::replace(grads.get_or_alloc_mut(&**p)?, empty));
        }
        // A small network's update runs on this thread (see `SPLIT_FROM_EVALUATIONS`).
        let values: usize = params.iter().map(|p| p.shape().num_elements()).sum();
        params
            .par_iter_mut()
            .zip(moments.par_iter_mut())
            .zip(taken.par_iter())
            .with_min_len(least_items_for(values, SPLIT_FROM_EVALUATIONS))
            .try_for_each(|((p, (m, v)), g)| config.try_update(step, &mut **p, m, v, g))?;
        for (p, g) in params.iter().zip(taken) {
            *grads.get_or_alloc_mut(&**p)? = g;
        }
        Ok(())
    }

    fn sum_squares(&self, grad: &<Self as Storage<f32>>::Vec) -> Result<f64, CpuError> {
        use rayon::prelude::*;
        // Chunk sums collected in order, then added in order: the same total whatever the
        // scheduling, and the same chunks as the serial sum this replaced.
        let parts: Vec<f64> = grad.par_chunks(4096).map(chunk_sum_squares).collect();
        Ok(parts.iter().sum())
    }

    fn scale(&self, grad: &mut <Self as Storage<f32>>::Vec, factor: f32) -> Result<(), CpuError> {
        use rayon::prelude::*;
        grad.par_chunks_mut(1 << 14)
            .for_each(|c| c.iter_mut().for_each(|g| *g *= factor));
        Ok(())
    }

    fn download(&self, v: &<Self as Storage<f32>>::Vec) -> Result<Vec<f32>, CpuError> {
        Ok(v.to_vec())
    }

    fn upload(&self, values: &[f32]) -> Result<<Self as Storage<f32>>::Vec, CpuError> {
        let mut v = <Self as Storage<f32>>::try_alloc_len(self, values.len())?;
        v.copy_from_slice(values);
        Ok(v)
    }
}

#[cfg(feature = "cuda")]
impl TrainDevice for Cuda {
    fn dense<T: Tape<f32, Self>>(
        x: Matrix<Self, T>,
        weight: &Matrix<Self>,
        bias: &Matrix<Self>,
        activation: LayerActivation<'_, Self, T>,
        _input_grad: bool,
    ) -> Matrix<Self, T> {
        crate::cuda::dense(x, weight, bias, activation)
    }

    fn sum_squares(&self, grad: &<Self as Storage<f32>>::Vec) -> Result<f64, Self::Err> {
        crate::cuda::sum_squares(grad)
    }

    fn scale(&self, grad: &mut <Self as Storage<f32>>::Vec, factor: f32) -> Result<(), Self::Err> {
        crate::cuda::scale(grad, factor)
    }

    fn download(&self, v: &<Self as Storage<f32>>::Vec) -> Result<Vec<f32>, Self::Err> {
        Ok(v.device().dtoh_sync_copy(&**v)?)
    }

    fn upload(&self, values: &[f32]) -> Result<<Self as Storage<f32>>::Vec, Self::Err> {
        let mut v = <Self as Storage<f32>>::try_alloc_len(self, values.len())?;
        v.device().htod_sync_copy_into(values, &mut *v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_squares_matches_f64_and_scale_scales() {
        let dev = Cpu::default();
        let values: Vec<f32> = (0..10_007)
            .map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5)
            .collect();
        let want: f64 = values.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let mut buf = dev.upload(&values).unwrap();
        let got = dev.sum_squares(&buf).unwrap();
        assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
        dev.scale(&mut buf, 0.5).unwrap();
        let halved: Vec<f32> = values.iter().map(|v| v * 0.5).collect();
        assert_eq!(dev.download(&buf).unwrap(), halved);
    }
}
