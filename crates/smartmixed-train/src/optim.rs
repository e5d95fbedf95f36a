//! Adam over runtime-sized parameters (dfdx's `AdamConfig` kernel, the project's own
//! state) with PyTorch's global gradient-norm clipping.

use dfdx::prelude::*;
use dfdx::tensor::Gradients;

use crate::ops::{Matrix, TrainDevice};

/// Adam's moments for a fixed list of parameters.
#[derive(Debug)]
pub struct Adam<D: TrainDevice> {
    config: AdamConfig,
    /// Parameters from this index on use their own rate (phase 1's logits).
    tail: Option<(usize, f64)>,
    step: i32,
    moments: Vec<crate::ops::Moments<D>>,
}

impl<D: TrainDevice> Adam<D> {
    /// Zero moments for `params` (the order [`Adam::step`] will be given them in).
    pub fn new(params: &[&Matrix<D>], lr: f64) -> Result<Self, D::Err> {
        let moments = params
            .iter()
            .map(|p| {
                let len = p.shape().num_elements();
                let dev = p.device();
                Ok((
                    <D as Storage<f32>>::try_alloc_len(dev, len)?,
                    <D as Storage<f32>>::try_alloc_len(dev, len)?,
                ))
            })
            .collect::<Result<_, D::Err>>()?;
        Ok(Self {
            config: AdamConfig {
                lr,
                ..Default::default()
            },
            tail: None,
            step: 0,
            moments,
        })
    }

    /// The step count and every moment on the host, for the resume state.
    #[allow(clippy::type_complexity)]
    pub fn export(&self, dev: &D) -> Result<(i32, Vec<(Vec<f32>, Vec<f32>)>), D::Err> {
        let moments = self
            .moments
            .iter()
            .map(|(m, v)| Ok((dev.download(m)?, dev.download(v)?)))
            .collect::<Result<_, D::Err>>()?;
        Ok((self.step, moments))
    }

    /// Adam restored from [`Adam::export`]'s output (learning rate: set it with
    /// [`Adam::set_lr`]).
    pub fn import(
        dev: &D,
        params: &[&Matrix<D>],
        step: i32,
        moments: &[(Vec<f32>, Vec<f32>)],
    ) -> Result<Self, D::Err> {
        let mut adam = Self::new(params, 0.0)?;
        adam.step = step;
        adam.moments = moments
            .iter()
            .map(|(m, v)| Ok((dev.upload(m)?, dev.upload(v)?)))
            .collect::<Result<_, D::Err>>()?;
        Ok(adam)
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Gives the parameters from index `first` on (in [`Self::step`]'s order) their own
    /// learning rate.
    pub fn set_lr_from(&mut self, first: usize, lr: f64) {
        self.tail = Some((first, lr));
    }

    /// Clips the global gradient norm to `clip_norm` (when > 0; as
    /// `torch.nn.utils.clip_grad_norm_`: scale by `clip / (norm + 1e-6)` when that is < 1)
    /// and applies one Adam update. Returns the norm before clipping.
    pub fn step(
        &mut self,
        mut params: Vec<&mut Matrix<D>>,
        grads: &mut Gradients<f32, D>,
        clip_norm: f64,
    ) -> Result<f64, D::Err> {
        assert_eq!(params.len(), self.moments.len(), "parameter list changed");
        let mut sum_squares = 0.0;
        for p in params.iter() {
            let dev = p.device().clone();
            sum_squares += dev.sum_squares(grads.get_or_alloc_mut(&**p)?)?;
        }
        let norm = sum_squares.sqrt();
        let factor = clip_norm / (norm + 1e-6);
        if clip_norm > 0.0 && factor < 1.0 {
            for p in params.iter() {
                let dev = p.device().clone();
                dev.scale(grads.get_or_alloc_mut(&**p)?, factor as f32)?;
            }
        }
        self.step += 1;
        let split = self
            .tail
            .map_or(params.len(), |(first, _)| first.min(params.len()));
        let (head, tail) = params.split_at_mut(split);
        let (head_m, tail_m) = self.moments.split_at_mut(split);
        D::adam_update(&self.config, self.step, head, head_m, grads)?;
        if let Some((_, lr)) = self.tail.filter(|_| !tail.is_empty()) {
            let config = AdamConfig { lr, ..self.config };
            D::adam_update(&config, self.step, tail, tail_m, grads)?;
        }
        Ok(norm)
    }
}
