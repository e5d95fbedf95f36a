//! The training loop of both phases and of the fixed baselines: Adam, clipping, the
//! best-validation-loss checkpoint, NaN stop, per-epoch metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use dfdx::losses::cross_entropy_with_logits_loss;
use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use smartmixed_core::{lookup, Mode, OutputLoss, Phase, Phase2Init, TrainConfig};

use crate::checkpoint;
use crate::data::{Dataset, Splits};
use crate::model::{Hidden, Network};
use crate::ops::{values, Matrix, TrainDevice};
use crate::optim::Adam;
use crate::pool::TrainPool;
use crate::resume;
use crate::rundir::{EpochRecord, RunDir};
use crate::{Error, Result};

/// Batch size of evaluation passes (no gradients, so larger is fine).
const EVAL_BATCH: usize = 1000;

/// Receives progress; every method has an empty default. `Send` because the run executes
/// on a worker of its [`TrainPool`].
pub trait Progress: Send {
    fn phase_started(&mut self, _phase: Phase, _epochs: usize, _batches_per_epoch: usize) {}
    fn batch(
        &mut self,
        _epoch: usize,
        _batch: usize,
        _running_loss: f64,
        _samples_per_second: f64,
    ) {
    }
    fn epoch(&mut self, _record: &EpochRecord, _choices: Option<&[Vec<usize>]>) {}
}

/// Ignores progress.
pub struct Silent;
impl Progress for Silent {}

/// Loss and accuracy over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

/// The Table I figures of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub phase: Phase,
    pub epochs: usize,
    pub best_epoch: usize,
    pub validation_loss: f64,
    pub validation_accuracy: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub seconds: f64,
    pub checkpoint: String,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mode: Mode,
    pub architecture: Vec<usize>,
    pub seed: u64,
    pub split_seed: u64,
    pub train_samples: usize,
    pub validation_samples: usize,
    pub test_samples: usize,
    pub phases: Vec<PhaseSummary>,
    /// Whether the training threads flushed subnormal floats to zero
    /// (`training.flush_denormals` on a CPU that can).
    #[serde(default)]
    pub flush_denormals: bool,
    /// Training threads.
    #[serde(default)]
    pub threads: usize,
    /// Per hidden layer, neurons per activation after phase 1 (SmartMixed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_choices: Option<Vec<Vec<(String, usize)>>>,
    pub seconds: f64,
}

/// The loss of a batch of logits against one-hot targets.
pub fn loss<D: TrainDevice, T: Tape<f32, D>>(
    logits: Matrix<D, T>,
    targets: Matrix<D>,
    kind: OutputLoss,
) -> Tensor<Rank0, f32, D, T> {
    match kind {
        OutputLoss::CrossEntropy => cross_entropy_with_logits_loss(logits, targets),
        OutputLoss::DoubleSoftmax => {
            cross_entropy_with_logits_loss(logits.softmax::<Axis<1>>(), targets)
        }
    }
}

/// Loss and accuracy of `net` on `data` (phase 1 with its argmax choices, no noise).
pub fn evaluate<D: TrainDevice>(
    dev: &D,
    net: &Network<D>,
    data: &Dataset,
    classes: usize,
    kind: OutputLoss,
) -> Evaluation {
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let all: Vec<usize> = (0..data.len()).collect();
    for chunk in all.chunks(EVAL_BATCH) {
        let b = data.batch(chunk, classes);
        let x = dev.tensor_from_vec(b.inputs, (chunk.len(), data.features()));
        let logits = net.forward(x, None);
        let values = values(&logits);
        // First index of the largest logit, as torch.argmax.
        for (row, &label) in values.chunks_exact(classes).zip(&b.labels) {
            let best = smartmixed_core::math::argmax(row);
            correct += usize::from(best == label as usize);
        }
        let y = dev.tensor_from_vec(b.targets, (chunk.len(), classes));
        loss_sum += loss(logits, y, kind).as_vec()[0] as f64 * chunk.len() as f64;
    }
    Evaluation {
        loss: loss_sum / data.len().max(1) as f64,
        accuracy: correct as f64 / data.len().max(1) as f64,
    }
}

/// Neurons per pool entry in each hidden layer, by argmax of the logits.
pub fn choice_counts<D: TrainDevice>(net: &Network<D>) -> Option<Vec<Vec<usize>>> {
    let Hidden::Selective { pool, .. } = &net.hidden else {
        return None;
    };
    let choices = net.argmax_choices()?;
    Some(
        choices
            .iter()
            .map(|c| {
                (0..pool.len())
                    .map(|j| c.iter().filter(|&&x| x as usize == j).count())
                    .collect()
            })
            .collect(),
    )
}

/// One optimisation step on a batch: forward (with Gumbel noise in phase 1), loss,
/// backward, clipping, Adam. Returns the loss and the gradient norm; a non-finite loss is
/// returned without updating the weights.
pub fn train_step<D: TrainDevice>(
    net: &mut Network<D>,
    adam: &mut Adam<D>,
    x: Matrix<D>,
    y: Matrix<D>,
    noise: Option<&mut StdRng>,
    cfg: &TrainConfig,
) -> std::result::Result<(f32, f64), D::Err> {
    let logits = net.forward(x.leaky_traced(), noise);
    let l = loss(logits, y, cfg.model.output_loss);
    let value = l.as_vec()[0];
    if !value.is_finite() {
        return Ok((value, f64::NAN));
    }
    let mut grads = l.backward();
    let norm = adam.step(net.params_mut(), &mut grads, cfg.training.clip_norm)?;
    Ok((value, norm))
}

/// Checks that the configured network fits the data and this machine's memory (call
/// before creating a run directory); `origin` names the config in errors.
pub fn check_data_fits(cfg: &TrainConfig, data: &Splits, origin: &str) -> Result<()> {
    let features = data.train.features();
    if let Some(n) = cfg.model.inputs.filter(|&n| n != features) {
        return Err(Error::Mismatch {
            path: cfg.data.dir.clone(),
            message: format!("model.inputs = {n}, but the images have {features} pixels"),
        });
    }
    let available = crate::memory::total_bytes().unwrap_or(u64::MAX);
    cfg.check_memory(origin, features, data.classes, available)?;
    Ok(())
}

/// Everything one run needs, borrowed.
pub struct Trainer<'a, D: TrainDevice> {
    pub dev: &'a D,
    pub config: &'a TrainConfig,
    pub data: &'a Splits,
    pub run: &'a mut RunDir,
    pub progress: &'a mut dyn Progress,
    /// Set (e.g. by Ctrl-C) to stop before the next batch; every file written at the end of
    /// the last completed epoch stays, and `--resume` continues from there.
    pub stop: &'a AtomicBool,
    /// Training threads; 0 uses every core ([`crate::pool::default_threads`]).
    pub threads: usize,
}

/// The outcome of one phase: the best network and its figures.
struct PhaseOutcome<D: TrainDevice> {
    best: Network<D>,
    summary: PhaseSummary,
}

/// Where a phase starts: fresh, or restored from a run's state file.
struct PhaseStart<D: TrainDevice> {
    net: Network<D>,
    epochs_done: usize,
    adam: Option<Adam<D>>,
    best: Option<(Network<D>, usize, Evaluation)>,
    /// Training seconds this phase already spent before an interruption.
    seconds: f64,
}

impl<D: TrainDevice> PhaseStart<D> {
    fn fresh(net: Network<D>) -> Self {
        Self {
            net,
            epochs_done: 0,
            adam: None,
            best: None,
            seconds: 0.0,
        }
    }
}

/// The restored start of phase `name`, if the state stopped in it (and takes the state).
fn take_start<D: TrainDevice>(
    state: &mut Option<resume::State<D>>,
    name: Phase,
    run: &std::path::Path,
) -> Result<Option<PhaseStart<D>>> {
    if state.as_ref().is_none_or(|s| s.position.phase != name) {
        return Ok(None);
    }
    let Some(s) = state.take() else {
        return Ok(None);
    };
    let best_net = checkpoint::load(
        s.net.layers[0].weight.device(),
        &run.join(name.checkpoint_file()),
    )?;
    let best = Some((best_net, s.position.best_epoch, s.position.best_validation));
    let earlier: f64 = s.position.completed.iter().map(|p| p.seconds).sum();
    Ok(Some(PhaseStart {
        net: s.net,
        epochs_done: s.position.epochs_done,
        adam: Some(s.adam),
        best,
        seconds: (s.position.seconds - earlier).max(0.0),
    }))
}

/// A seed for epoch `epoch` of phase `phase` and stream `stream`: every epoch draws from
/// its own generator, so a resumed run sees exactly the numbers an uninterrupted one does.
fn epoch_seed(seed: u64, phase: Phase, epoch: usize, stream: u64) -> u64 {
    let tag = match phase {
        Phase::Phase1 => 1u64,
        Phase::Phase2 => 2,
        Phase::Fixed => 3,
    };
    // SplitMix64 finaliser over the combined inputs.
    let mut z = seed ^ (tag << 56) ^ ((epoch as u64) << 8) ^ stream;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<D: TrainDevice> Trainer<'_, D> {
    /// The run's config file, as errors name it.
    fn config_origin(&self) -> String {
        self.run
            .path()
            .join(crate::rundir::CONFIG)
            .display()
            .to_string()
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths = vec![self.data.train.features()];
        widths.extend(&self.config.model.hidden);
        widths.push(self.data.classes);
        widths
    }

    /// Runs the whole config and writes `summary.json`.
    pub fn run(&mut self) -> Result<Summary> {
        check_data_fits(self.config, self.data, &self.config_origin())?;
        self.run.write_config(self.config)?;
        self.run_from(None)
    }

    /// Continues a run from its state file (written at the end of every epoch).
    pub fn resume(&mut self) -> Result<Summary> {
        check_data_fits(self.config, self.data, &self.config_origin())?;
        let state = resume::load(self.dev, self.run.path())?;
        if let Some(saved) = &state.position.config {
            let changed = saved.differences(self.config);
            if !changed.is_empty() {
                return Err(Error::Mismatch {
                    path: self.run.path().join(crate::rundir::CONFIG),
                    message: format!(
                        "changed since the run started ({}); a resumed run must train the config its checkpoints came from",
                        changed.join(", ")
                    ),
                });
            }
        }
        self.run
            .truncate_after(state.position.phase, state.position.epochs_done)?;
        self.run_from(Some(state))
    }

    /// Runs on a fresh [`TrainPool`], so every thread that trains has the configured
    /// floating-point mode and the caller's thread keeps its own.
    fn run_from(&mut self, state: Option<resume::State<D>>) -> Result<Summary> {
        let pool = TrainPool::new(self.threads, self.config.training.flush_denormals)?;
        let (threads, flush) = (pool.threads(), pool.flushes_denormals());
        #[cfg(not(feature = "cuda"))]
        let summary = pool.install(|| self.run_phases(state, threads, flush))?;
        // cudarc's device cannot move to a pool worker: the loop runs here, with this
        // thread's mode set for the run and restored after.
        #[cfg(feature = "cuda")]
        let summary = {
            let _mode = smartmixed_core::fpenv::FlushDenormals::set(flush);
            self.run_phases(state, threads, flush)?
        };
        self.run.write_summary(&summary)?;
        resume::remove(self.run.path());
        Ok(summary)
    }

    /// Both phases (or the baseline); `threads` and `flush_denormals` are recorded in the
    /// summary.
    fn run_phases(
        &mut self,
        state: Option<resume::State<D>>,
        threads: usize,
        flush_denormals: bool,
    ) -> Result<Summary> {
        let start = Instant::now();
        let cfg = self.config;
        let widths = self.widths();
        let seed = cfg.training.seed;
        let mut init_rng = StdRng::seed_from_u64(seed);
        let (mut completed, earlier_seconds) = match &state {
            Some(s) => (s.position.completed.clone(), s.position.seconds),
            None => (Vec::new(), 0.0),
        };
        let mut state = state;
        let run_path = self.run.path().to_path_buf();
        let mut final_choices = None;
        match cfg.model.mode {
            Mode::Fixed => {
                let name = cfg.model.activation.as_deref().unwrap_or("relu");
                let act = lookup(name)?;
                let start = match take_start(&mut state, Phase::Fixed, &run_path)? {
                    Some(s) => s,
                    None => {
                        PhaseStart::fresh(Network::fixed(self.dev, &widths, act, &mut init_rng))
                    }
                };
                let out = self.phase(
                    Phase::Fixed,
                    start,
                    cfg.total_epochs(),
                    cfg.phase2.lr,
                    &completed,
                )?;
                completed.push(out.summary);
            }
            Mode::Smartmixed => {
                let pool = cfg
                    .model
                    .pool
                    .iter()
                    .map(|n| lookup(n))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let resumed_in_phase2 = state
                    .as_ref()
                    .is_some_and(|s| s.position.phase == Phase::Phase2);
                let p1_best = if resumed_in_phase2 {
                    checkpoint::load(
                        self.dev,
                        &self.run.path().join(Phase::Phase1.checkpoint_file()),
                    )?
                } else {
                    let tau = cfg.phase1.temperature as f32;
                    let start = match take_start(&mut state, Phase::Phase1, &run_path)? {
                        Some(s) => s,
                        None => PhaseStart::fresh(Network::selective(
                            self.dev,
                            &widths,
                            pool,
                            tau,
                            &mut init_rng,
                        )),
                    };
                    let p1 = self.phase(
                        Phase::Phase1,
                        start,
                        cfg.phase1.epochs,
                        cfg.phase1.lr,
                        &completed,
                    )?;
                    completed.push(p1.summary);
                    p1.best
                };
                let counts = choice_counts(&p1_best).unwrap_or_default();
                final_choices = Some(
                    counts
                        .iter()
                        .map(|layer| {
                            cfg.model
                                .pool
                                .iter()
                                .cloned()
                                .zip(layer.iter().copied())
                                .collect()
                        })
                        .collect(),
                );
                if cfg.phase2.epochs > 0 {
                    let mut reinit_rng =
                        StdRng::seed_from_u64(epoch_seed(seed, Phase::Phase2, 0, 7));
                    let reinit = cfg.phase2.init == Phase2Init::Reinit;
                    let start = match take_start(&mut state, Phase::Phase2, &run_path)? {
                        Some(s) => s,
                        None => PhaseStart::fresh(
                            p1_best
                                .to_mixed(reinit.then_some(&mut reinit_rng))
                                .expect("phase 1 is selective"),
                        ),
                    };
                    let p2 = self.phase(
                        Phase::Phase2,
                        start,
                        cfg.phase2.epochs,
                        cfg.phase2.lr,
                        &completed,
                    )?;
                    completed.push(p2.summary);
                }
            }
        }
        let summary = Summary {
            mode: cfg.model.mode,
            architecture: widths,
            seed,
            split_seed: cfg.data.split_seed,
            train_samples: self.data.train.len(),
            validation_samples: self.data.validation.len(),
            test_samples: self.data.test.len(),
            phases: completed,
            final_choices,
            seconds: earlier_seconds + start.elapsed().as_secs_f64(),
            flush_denormals,
            threads,
        };
        Ok(summary)
    }

    /// Trains from `start` up to `epochs` epochs, keeping (and checkpointing) the best
    /// validation loss and writing the resume state after every epoch.
    fn phase(
        &mut self,
        name: Phase,
        start: PhaseStart<D>,
        epochs: usize,
        lr: f64,
        completed: &[PhaseSummary],
    ) -> Result<PhaseOutcome<D>> {
        let phase_start = Instant::now();
        let (cfg, data, dev) = (self.config, self.data, self.dev);
        let classes = data.classes;
        let bs = cfg.training.batch_size;
        let seed = cfg.training.seed;
        let ckpt_name = name.checkpoint_file();
        let ckpt_path = self.run.path().join(&ckpt_name);
        let device_err = |e: D::Err| Error::Device(format!("{e:?}"));
        let PhaseStart {
            mut net,
            epochs_done,
            adam,
            mut best,
            seconds: earlier_seconds,
        } = start;
        let mut adam = match adam {
            Some(mut a) => {
                a.set_lr(lr);
                a
            }
            None => Adam::new(&net.params(), lr).map_err(device_err)?,
        };
        let selective = matches!(net.hidden, Hidden::Selective { .. });
        let batches = data.train.len().div_ceil(bs);
        self.progress.phase_started(name, epochs, batches);
        if epochs == 0 && best.is_none() {
            let e = evaluate(dev, &net, &data.validation, classes, cfg.model.output_loss);
            checkpoint::save(&net, &ckpt_path)?;
            best = Some((net.clone(), 0, e));
        }
        for epoch in epochs_done + 1..=epochs {
            let epoch_start = Instant::now();
            let mut order: Vec<usize> = (0..data.train.len()).collect();
            order.shuffle(&mut StdRng::seed_from_u64(epoch_seed(seed, name, epoch, 0)));
            let mut noise_rng = StdRng::seed_from_u64(epoch_seed(seed, name, epoch, 1));
            let (mut loss_sum, mut norm_sum, mut seen) = (0.0f64, 0.0f64, 0usize);
            for (bi, chunk) in order.chunks(bs).enumerate() {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Error::Interrupted);
                }
                let b = data.train.batch(chunk, classes);
                let x = dev.tensor_from_vec(b.inputs, (chunk.len(), data.train.features()));
                let y = dev.tensor_from_vec(b.targets, (chunk.len(), classes));
                let noise = selective.then_some(&mut noise_rng);
                let (value, norm) =
                    train_step(&mut net, &mut adam, x, y, noise, cfg).map_err(device_err)?;
                if !value.is_finite() {
                    return Err(Error::NonFiniteLoss {
                        phase: name,
                        epoch,
                        batch: bi + 1,
                        loss: value,
                    });
                }
                norm_sum += norm;
                loss_sum += value as f64 * chunk.len() as f64;
                seen += chunk.len();
                self.progress.batch(
                    epoch,
                    bi + 1,
                    loss_sum / seen as f64,
                    seen as f64 / epoch_start.elapsed().as_secs_f64(),
                );
            }
            let train_seconds = epoch_start.elapsed().as_secs_f64();
            let val = evaluate(dev, &net, &data.validation, classes, cfg.model.output_loss);
            if best.as_ref().is_none_or(|(_, _, b)| val.loss < b.loss) {
                checkpoint::save(&net, &ckpt_path)?;
                best = Some((net.clone(), epoch, val));
            }
            let record = EpochRecord {
                phase: name,
                epoch,
                train_loss: loss_sum / seen.max(1) as f64,
                validation_loss: val.loss,
                validation_accuracy: val.accuracy,
                seconds: epoch_start.elapsed().as_secs_f64(),
                samples_per_second: seen as f64 / train_seconds,
                grad_norm: norm_sum / batches.max(1) as f64,
            };
            self.run.add_epoch(&record)?;
            let counts = choice_counts(&net);
            if let Some(c) = &counts {
                let names: Vec<&str> = cfg.model.pool.iter().map(String::as_str).collect();
                self.run.add_choices(epoch, &names, c)?;
            }
            if let Some((_, best_epoch, best_val)) = &best {
                let position = resume::Position {
                    phase: name,
                    epochs_done: epoch,
                    best_epoch: *best_epoch,
                    best_validation: *best_val,
                    completed: completed.to_vec(),
                    seconds: earlier_seconds
                        + phase_start.elapsed().as_secs_f64()
                        + completed.iter().map(|p| p.seconds).sum::<f64>(),
                    config: Some(cfg.clone()),
                };
                resume::save(dev, self.run.path(), &net, &adam, &position)?;
            }
            self.progress.epoch(&record, counts.as_deref());
        }
        let (best, best_epoch, val) = best.expect("at least one evaluation");
        let test = evaluate(dev, &best, &data.test, classes, cfg.model.output_loss);
        Ok(PhaseOutcome {
            summary: PhaseSummary {
                phase: name,
                epochs,
                best_epoch,
                validation_loss: val.loss,
                validation_accuracy: val.accuracy,
                test_accuracy: test.accuracy,
                test_loss: test.loss,
                seconds: earlier_seconds + phase_start.elapsed().as_secs_f64(),
                checkpoint: ckpt_name,
            },
            best,
        })
    }
}
