//! The two hidden-layer activations as dfdx ops, generic over the device, with fused CPU
//! kernels for [`Cpu`] (one pass forward, one pass backward; see [`crate::kernels`]).
//!
//! The device-generic versions ([`generic`]) are built from dfdx ops only and define the
//! semantics; tests check that the fused CPU versions agree with them in value and gradient.

use dfdx::prelude::*;
use dfdx::tensor::Gradients;
use smartmixed_core::Activation;

use crate::kernels::{self, Group, SelectiveSaved, CLAMP};

/// A runtime-sized matrix (`[batch, neurons]`, `[out, in]`, `[pool, neurons]`).
pub type Matrix<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;

/// A dfdx device SmartMixed can train on: the activation ops (with a device-generic
/// default) and the two gradient primitives that clipping needs.
pub trait TrainDevice: Device<f32> + Send + Sync {
    /// Phase 1: `clamp(sum_j h_j clamp(act_j(pre + bias)))` where `h` is the straight-through
    /// hard sample: exactly `one_hot(choices)` forward, identity to `soft` (`[pool, neurons]`)
    /// backward.
    fn selective<T: Tape<f32, Self>>(
        pre: Matrix<Self, T>,
        bias: &Matrix<Self>,
        soft: Matrix<Self, T>,
        choices: &[u8],
        pool: &[&'static Activation],
    ) -> Matrix<Self, T> {
        generic::selective(pre, bias, soft, choices, pool)
    }

    /// Phase 2 and fixed baselines: `act_g(pre + bias)` over each contiguous group.
    fn grouped<T: Tape<f32, Self>>(
        pre: Matrix<Self, T>,
        bias: &Matrix<Self>,
        groups: &[Group],
    ) -> Matrix<Self, T> {
        generic::grouped(pre, bias, groups)
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
        groups: &[Group],
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

impl TrainDevice for Cpu {
    fn selective<T: Tape<f32, Self>>(
        pre: Matrix<Self, T>,
        bias: &Matrix<Self>,
        soft: Matrix<Self, T>,
        choices: &[u8],
        pool: &[&'static Activation],
    ) -> Matrix<Self, T> {
        let (pre, pre_tape) = pre.split_tape();
        let (soft, soft_tape) = soft.split_tape();
        let mut tape = pre_tape.merge(soft_tape);
        let shape = *pre.shape();
        let pre_v = pre.as_vec();
        let mut out = vec![0.0; pre_v.len()];
        let mut saved = T::OWNS_TAPE.then(SelectiveSaved::default);
        kernels::selective_forward(
            &pre_v,
            &bias.as_vec(),
            pool,
            choices,
            &mut out,
            saved.as_mut(),
        );
        let out = pre.device().tensor_from_vec(out, shape);
        if let Some(saved) = saved {
            let (pre_g, bias_g, soft_g, out_g) = (pre, bias.clone(), soft, out.clone());
            let (n, p) = (shape.1, pool.len());
            tape.add_backward_op(move |grads| {
                let g_out = take_grad(grads, &out_g)?;
                let mut g_bias = vec![0.0; n];
                let mut g_soft = vec![0.0; p * n];
                kernels::selective_backward(
                    &g_out,
                    &saved,
                    grads.get_or_alloc_mut(&pre_g)?,
                    &mut g_bias,
                    &mut g_soft,
                );
                put_grad(grads, &out_g, g_out)?;
                add_grad(grads, &bias_g, &g_bias)?;
                add_grad(grads, &soft_g, &g_soft)
            });
        }
        out.put_tape(tape)
    }

    fn grouped<T: Tape<f32, Self>>(
        pre: Matrix<Self, T>,
        bias: &Matrix<Self>,
        groups: &[Group],
    ) -> Matrix<Self, T> {
        let (pre, mut tape) = pre.split_tape();
        let shape = *pre.shape();
        let pre_v = pre.as_vec();
        let mut out = vec![0.0; pre_v.len()];
        let mut deriv = T::OWNS_TAPE.then(|| vec![0.0; pre_v.len()]);
        kernels::grouped_forward(
            &pre_v,
            &bias.as_vec(),
            groups,
            &mut out,
            deriv.as_deref_mut(),
        );
        let out = pre.device().tensor_from_vec(out, shape);
        if let Some(deriv) = deriv {
            let (pre_g, bias_g, out_g) = (pre, bias.clone(), out.clone());
            let n = shape.1;
            tape.add_backward_op(move |grads| {
                let g_out = take_grad(grads, &out_g)?;
                let mut g_bias = vec![0.0; n];
                kernels::grouped_backward(
                    &g_out,
                    &deriv,
                    grads.get_or_alloc_mut(&pre_g)?,
                    &mut g_bias,
                );
                put_grad(grads, &out_g, g_out)?;
                add_grad(grads, &bias_g, &g_bias)
            });
        }
        out.put_tape(tape)
    }

    fn sum_squares(&self, grad: &<Self as Storage<f32>>::Vec) -> Result<f64, CpuError> {
        Ok(grad
            .chunks(4096)
            .map(chunk_sum_squares)
            .fold(0.0, |a, b| a + b))
    }

    fn scale(&self, grad: &mut <Self as Storage<f32>>::Vec, factor: f32) -> Result<(), CpuError> {
        grad.iter_mut().for_each(|g| *g *= factor);
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
    // The activation ops use the device-generic defaults. Clipping round-trips through
    // the host: correct, not fast; untested here for want of a GPU.
    fn sum_squares(&self, grad: &<Self as Storage<f32>>::Vec) -> Result<f64, Self::Err> {
        let host = grad.device().dtoh_sync_copy(&**grad)?;
        Ok(host.iter().map(|&g| (g as f64) * (g as f64)).sum())
    }

    fn scale(&self, grad: &mut <Self as Storage<f32>>::Vec, factor: f32) -> Result<(), Self::Err> {
        let dev = grad.device();
        let mut host = dev.dtoh_sync_copy(&**grad)?;
        host.iter_mut().for_each(|g| *g *= factor);
        dev.htod_sync_copy_into(&host, &mut **grad)?;
        Ok(())
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
        assert_eq!(dev.download(&buf).unwrap()[3], values[3] * 0.5);
    }
}
