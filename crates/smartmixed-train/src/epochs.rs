//! The loop inside one phase: epochs of shuffled batches, validation, the best checkpoint
//! under `training.select`, the per-epoch files and resume state, and the rule that may end
//! the phase before its epoch budget.

use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::checkpoint;
use crate::model::{Hidden, Network};
use crate::ops::TrainDevice;
use crate::optim::Adam;
use crate::resume;
use crate::rundir::EpochRecord;
use crate::stopping::Watch;
use crate::trainer::{
    epoch_seed, evaluate, train_step, EarlyEnd, Evaluation, PhaseOutcome, PhasePlan, PhaseStart,
    PhaseSummary, Trainer,
};
use crate::{Error, Result};

/// A phase in progress.
struct Running<D: TrainDevice> {
    net: Network<D>,
    adam: Adam<D>,
    /// The selected checkpoint: network, epoch, validation figures.
    best: Option<(Network<D>, usize, Evaluation)>,
    watch: Watch,
    epochs_done: usize,
    /// Seconds this phase trained before an interruption, and the clock since.
    earlier_seconds: f64,
    clock: Instant,
}

/// Training figures of one epoch.
struct EpochTotals {
    loss: f64,
    grad_norm: f64,
    samples: usize,
    seconds: f64,
}

fn device_error<E: std::fmt::Debug>(e: E) -> Error {
    Error::Device(format!("{e:?}"))
}

/// Phase 1's temperature in `epoch` of `epochs`: geometric from `start` to `end`.
pub(crate) fn temperature(start: f64, end: Option<f64>, epoch: usize, epochs: usize) -> f32 {
    let Some(end) = end else {
        return start as f32;
    };
    let t = (epoch.saturating_sub(1)) as f64 / (epochs.saturating_sub(1)).max(1) as f64;
    (start * (end / start).powf(t)) as f32
}

impl<D: TrainDevice> Trainer<'_, D> {
    /// Trains `plan` from `start`: up to its epoch budget, or until its rule ends it.
    pub(crate) fn phase(
        &mut self,
        plan: &PhasePlan,
        start: PhaseStart<D>,
        completed: &[PhaseSummary],
    ) -> Result<PhaseOutcome<D>> {
        let mut run = self.begin(plan, start)?;
        let batches = self
            .data
            .train
            .len()
            .div_ceil(self.config.training.batch_size);
        self.progress.phase_started(plan.name, plan.epochs, batches);
        if plan.epochs == 0 && run.best.is_none() {
            let e = self.validate(plan, &run.net, 0)?;
            self.keep_best(plan, &run.net)?;
            run.best = Some((run.net.clone(), 0, e));
        }
        let mut ended_early = None;
        let mut epoch = run.epochs_done;
        while epoch < plan.epochs {
            let best_epoch = run.best.as_ref().map_or(0, |b| b.1);
            // Checked before each epoch, so a resumed run decides where the interrupted
            // one would have, from the same saved observations.
            if epoch > 0 {
                if let Some(reason) = plan.end.reason(&run.watch, epoch, best_epoch) {
                    ended_early = Some(EarlyEnd { epoch, reason });
                    break;
                }
            }
            epoch += 1;
            self.epoch(plan, &mut run, epoch, completed)?;
        }
        self.finish(plan, run, epoch, ended_early)
    }

    /// The network, optimiser (at the plan's rates), best checkpoint and observations a
    /// phase starts from.
    fn begin(&self, plan: &PhasePlan, start: PhaseStart<D>) -> Result<Running<D>> {
        let mut adam = match start.adam {
            Some(a) => a,
            None => Adam::new(&start.net.params(), plan.lr).map_err(device_error)?,
        };
        adam.set_lr(plan.lr);
        if let (Some(lr), Hidden::Selective { .. }) = (plan.logit_lr, &start.net.hidden) {
            // params() lists every layer's weight and bias, then the logits.
            adam.set_lr_from(2 * start.net.layers.len(), lr);
        }
        Ok(Running {
            net: start.net,
            adam,
            best: start.best,
            watch: start.watch,
            epochs_done: start.epochs_done,
            earlier_seconds: start.seconds,
            clock: Instant::now(),
        })
    }

    /// What every checkpoint records of the input and classes (summary.json's copy comes
    /// only at the end; an export of an unfinished run reads this one).
    fn description(&self) -> crate::export::Description {
        crate::export::Description {
            input: Some(self.data.input()),
            class_names: self.data.class_names(),
        }
    }

    /// Writes the phase's best checkpoint, now that `net` is it: at once where a resume
    /// may read it, else once at the phase's end (a throwaway directory: the fit of a
    /// small table wrote it after most of its epochs, each write two `fsync`s).
    fn keep_best(&self, plan: &PhasePlan, net: &Network<D>) -> Result<()> {
        if self.run.resumable() {
            checkpoint::save_described(
                net,
                &self.run.path().join(plan.name.checkpoint_file()),
                &self.description(),
            )?;
        }
        Ok(())
    }

    /// The validation figures after `epoch`; a non-finite loss (outputs that overflowed
    /// on finite inputs) stops the run, as a non-finite training loss does: scored, it
    /// would pick checkpoints and print accuracies from NaN logits.
    fn validate(&self, plan: &PhasePlan, net: &Network<D>, epoch: usize) -> Result<Evaluation> {
        let data = self.data;
        let kind = self.config.model.output_loss;
        finite(
            evaluate(self.dev, net, &data.validation, data.classes, kind),
            plan,
            epoch,
            "validation",
        )
    }

    /// One epoch: train, validate, keep the checkpoint if selected, record, save state.
    fn epoch(
        &mut self,
        plan: &PhasePlan,
        run: &mut Running<D>,
        epoch: usize,
        completed: &[PhaseSummary],
    ) -> Result<()> {
        let clock = Instant::now();
        let p1 = &self.config.phase1;
        if let Hidden::Selective { temperature: t, .. } = &mut run.net.hidden {
            *t = temperature(p1.temperature, p1.temperature_final, epoch, plan.epochs);
        }
        let before = run.net.argmax_choices();
        let totals = self.train_batches(plan, run, epoch)?;
        // Checked before anything of this epoch is kept: NaN logits choose the pool's
        // first entry for every neuron, and the loss does not show it.
        if let Some((layer, value)) = run.net.non_finite_logit() {
            return Err(Error::NonFiniteLogits {
                phase: plan.name,
                epoch,
                layer,
                value,
            });
        }
        let val = self.validate(plan, &run.net, epoch)?;
        let after = run.net.argmax_choices();
        let changed = run
            .watch
            .observe(epoch, before.as_deref(), after.as_deref(), val.loss);
        let select = self.config.training.select;
        if run
            .best
            .as_ref()
            .is_none_or(|(_, _, b)| val.beats(b, select))
        {
            self.keep_best(plan, &run.net)?;
            run.best = Some((run.net.clone(), epoch, val));
        }
        let record = EpochRecord {
            phase: plan.name,
            epoch,
            train_loss: totals.loss / totals.samples.max(1) as f64,
            validation_loss: val.loss,
            validation_accuracy: val.accuracy,
            // The whole epoch (validation and checkpoint included); the rate is training's.
            seconds: clock.elapsed().as_secs_f64(),
            samples_per_second: totals.samples as f64 / totals.seconds,
            grad_norm: totals.grad_norm,
            choices_changed: changed,
            choices_changed_window: run.watch.changed_within(epoch, p1.auto.window),
        };
        self.run.add_epoch(&record)?;
        let counts = crate::trainer::choice_counts(&run.net);
        if let Some(c) = &counts {
            let names: Vec<&str> = self.config.model.pool.iter().map(String::as_str).collect();
            self.run.add_choices(epoch, &names, c)?;
        }
        self.save_state(plan, run, epoch, completed)?;
        self.progress.epoch(&record, counts.as_deref());
        Ok(())
    }

    /// Every batch of `epoch` in its seeded order, with its seeded Gumbel noise.
    fn train_batches(
        &mut self,
        plan: &PhasePlan,
        run: &mut Running<D>,
        epoch: usize,
    ) -> Result<EpochTotals> {
        let (cfg, data, dev) = (self.config, self.data, self.dev);
        let (classes, bs, seed) = (data.classes, cfg.training.batch_size, cfg.training.seed);
        let clock = Instant::now();
        let mut order: Vec<usize> = (0..data.train.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(epoch_seed(
            seed, plan.name, epoch, 0,
        )));
        let mut noise_rng = StdRng::seed_from_u64(epoch_seed(seed, plan.name, epoch, 1));
        let selective = matches!(run.net.hidden, Hidden::Selective { .. });
        let (mut loss_sum, mut norm_sum, mut seen, mut batches) = (0.0f64, 0.0f64, 0usize, 0);
        for (bi, chunk) in order.chunks(bs).enumerate() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let b = data.train.batch(chunk, classes);
            let x = dev.tensor_from_vec(b.inputs, (chunk.len(), data.train.features()));
            let y = dev.tensor_from_vec(b.targets, (chunk.len(), classes));
            let noise = selective.then_some(&mut noise_rng);
            let (value, norm) =
                train_step(&mut run.net, &mut run.adam, x, y, noise, cfg).map_err(device_error)?;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    phase: plan.name,
                    epoch,
                    batch: bi + 1,
                    loss: value,
                });
            }
            norm_sum += norm;
            loss_sum += value as f64 * chunk.len() as f64;
            seen += chunk.len();
            batches += 1;
            let rate = seen as f64 / clock.elapsed().as_secs_f64();
            self.progress
                .batch(epoch, bi + 1, loss_sum / seen as f64, rate);
        }
        Ok(EpochTotals {
            loss: loss_sum,
            grad_norm: norm_sum / f64::from(batches.max(1)),
            samples: seen,
            seconds: clock.elapsed().as_secs_f64(),
        })
    }

    /// The resume state after `epoch` (once a best checkpoint exists, and unless the run
    /// directory keeps none).
    fn save_state(
        &self,
        plan: &PhasePlan,
        run: &Running<D>,
        epoch: usize,
        completed: &[PhaseSummary],
    ) -> Result<()> {
        let Some((_, best_epoch, best_val)) = &run.best else {
            return Ok(());
        };
        if !self.run.resumable() {
            return Ok(());
        }
        let position = resume::Position {
            phase: plan.name,
            epochs_done: epoch,
            best_epoch: *best_epoch,
            best_validation: *best_val,
            completed: completed.to_vec(),
            seconds: run.earlier_seconds
                + run.clock.elapsed().as_secs_f64()
                + completed.iter().map(|p| p.seconds).sum::<f64>(),
            config: Some(self.config.clone()),
            watch: run.watch.clone(),
            data: Some(plan.data),
        };
        resume::save(self.dev, self.run.path(), &run.net, &run.adam, &position)
    }

    /// The selected checkpoint tested, and the phase's figures.
    fn finish(
        &mut self,
        plan: &PhasePlan,
        run: Running<D>,
        epochs: usize,
        ended_early: Option<EarlyEnd>,
    ) -> Result<PhaseOutcome<D>> {
        let (best, best_epoch, val) = run
            .best
            .ok_or_else(|| Error::Device("a phase ended without any evaluation".into()))?;
        if !self.run.resumable() {
            checkpoint::save_described(
                &best,
                &self.run.path().join(plan.name.checkpoint_file()),
                &self.description(),
            )?;
        }
        let data = self.data;
        let kind = self.config.model.output_loss;
        let test = evaluate(self.dev, &best, &data.test, data.classes, kind);
        let test = finite(test, plan, best_epoch, "test")?;
        let summary = PhaseSummary {
            phase: plan.name,
            epochs,
            best_epoch,
            validation_loss: val.loss,
            validation_accuracy: val.accuracy,
            test_accuracy: test.accuracy,
            test_loss: test.loss,
            seconds: run.earlier_seconds + run.clock.elapsed().as_secs_f64(),
            checkpoint: plan.name.checkpoint_file(),
            ended_early,
        };
        self.progress.phase_ended(&summary);
        Ok(PhaseOutcome { best, summary })
    }
}

/// `e` if its loss is finite, else the error naming the phase, the epoch and the set.
fn finite(e: Evaluation, plan: &PhasePlan, epoch: usize, set: &'static str) -> Result<Evaluation> {
    if e.loss.is_finite() {
        return Ok(e);
    }
    Err(Error::NonFiniteEvaluation {
        phase: plan.name,
        epoch,
        set,
        loss: e.loss,
    })
}

#[cfg(test)]
mod tests {
    use super::temperature;

    #[test]
    fn the_temperature_falls_geometrically_from_first_to_last_epoch() {
        assert_eq!(temperature(0.3, None, 7, 10), 0.3);
        assert!((temperature(1.0, Some(0.01), 1, 3) - 1.0).abs() < 1e-7);
        assert!((temperature(1.0, Some(0.01), 2, 3) - 0.1).abs() < 1e-7);
        assert!((temperature(1.0, Some(0.01), 3, 3) - 0.01).abs() < 1e-7);
        assert_eq!(temperature(0.5, Some(0.1), 1, 1), 0.5);
    }
}
