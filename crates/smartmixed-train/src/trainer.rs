//! A run: the phases a config asks for (SmartMixed's two, or a fixed baseline's one) in
//! order, the transition between them, resume, and `summary.json`. The loop inside a
//! phase is in `epochs.rs`; the loss, a training step and evaluation are here.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use dfdx::losses::cross_entropy_with_logits_loss;
use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use smartmixed_core::{lookup, Phase};

use crate::checkpoint;
use crate::data::{Dataset, Splits};
use crate::model::{Hidden, Network};
use crate::ops::{values, Matrix, TrainDevice};
use crate::optim::Adam;
use crate::pool::TrainPool;
use crate::resume;
use crate::rundir::{EpochRecord, RunDir};
use crate::stopping::{EndRule, Watch};
pub use crate::summary::{EarlyEnd, Evaluation, PhaseSummary, Summary};
use crate::{Error, Mode, OutputLoss, Phase2Init, Result, TrainConfig, Transition};

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
    /// A phase is over; `summary.ended_early` says whether a rule ended it before its budget.
    fn phase_ended(&mut self, _summary: &PhaseSummary) {}
}

/// Ignores progress.
pub struct Silent;
impl Progress for Silent {}

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
        let (path, what) = match &cfg.data.file {
            Some(file) if cfg.data.format() == crate::DataFormat::Csv => {
                (file, format!("the table has {features} feature columns"))
            }
            _ => (&cfg.data.dir, format!("the images have {features} pixels")),
        };
        return Err(Error::Mismatch {
            path: path.clone(),
            message: format!("model.inputs = {n}, but {what}"),
        });
    }
    // What this process may still allocate (the data is already loaded), not total RAM:
    // under a cgroup or `prlimit --as` a config that fits the machine aborts mid-run.
    let available = crate::memory::available_bytes().unwrap_or(u64::MAX);
    // A batch holds at most the training set (`chunks` of the epoch's order), so a
    // batch_size above it (full-batch training) needs no more than the set itself.
    let batch = cfg.training.batch_size.min(data.train.len().max(1));
    let effective = (batch < cfg.training.batch_size).then(|| {
        let mut c = cfg.clone();
        c.training.batch_size = batch;
        c
    });
    effective
        .as_ref()
        .unwrap_or(cfg)
        .check_memory(origin, features, data.classes, available)?;
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
pub(crate) struct PhaseOutcome<D: TrainDevice> {
    pub best: Network<D>,
    pub summary: PhaseSummary,
}

/// One phase as the run asks for it.
pub(crate) struct PhasePlan<'a> {
    pub name: Phase,
    /// The epoch budget.
    pub epochs: usize,
    pub lr: f64,
    /// The logits' own learning rate (phase 1).
    pub logit_lr: Option<f64>,
    pub end: EndRule<'a>,
    /// The run's data, recorded in every state so that a resume on other data is refused.
    pub data: resume::Fingerprint,
}

/// Where a phase starts: fresh, or restored from a run's state file.
pub(crate) struct PhaseStart<D: TrainDevice> {
    pub net: Network<D>,
    pub epochs_done: usize,
    pub adam: Option<Adam<D>>,
    pub best: Option<(Network<D>, usize, Evaluation)>,
    pub watch: Watch,
    /// Training seconds this phase already spent before an interruption.
    pub seconds: f64,
}

impl<D: TrainDevice> PhaseStart<D> {
    fn fresh(net: Network<D>) -> Self {
        Self {
            net,
            epochs_done: 0,
            adam: None,
            best: None,
            watch: Watch::default(),
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
    let best_path = run.join(name.checkpoint_file());
    let best_net = checkpoint::load(s.net.layers[0].weight.device(), &best_path)?;
    resume::check_network(&best_net, name, &s.net.widths()).map_err(|message| {
        Error::Checkpoint {
            path: best_path.clone(),
            message: format!("{message}, as in {}", crate::rundir::STATE),
        }
    })?;
    let best = Some((best_net, s.position.best_epoch, s.position.best_validation));
    let earlier: f64 = s.position.completed.iter().map(|p| p.seconds).sum();
    Ok(Some(PhaseStart {
        net: s.net,
        epochs_done: s.position.epochs_done,
        adam: Some(s.adam),
        best,
        watch: s.position.watch,
        seconds: (s.position.seconds - earlier).max(0.0),
    }))
}

/// A seed for epoch `epoch` of phase `phase` and stream `stream`: every epoch draws from
/// its own generator, so a resumed run sees exactly the numbers an uninterrupted one does.
pub(crate) fn epoch_seed(seed: u64, phase: Phase, epoch: usize, stream: u64) -> u64 {
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

/// A run's state, the phases it has finished and those finished before a resume.
struct Progression<D: TrainDevice> {
    state: Option<resume::State<D>>,
    completed: Vec<PhaseSummary>,
    data: resume::Fingerprint,
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
        self.run_from(None, resume::Fingerprint::of(self.data))
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
        let data = resume::Fingerprint::of(self.data);
        let path = self.run.path().join(crate::rundir::STATE);
        resume::check(&state, self.config, self.data, &data, &self.widths(), &path)?;
        self.run
            .truncate_after(state.position.phase, state.position.epochs_done)?;
        self.run_from(Some(state), data)
    }

    /// Runs on a fresh [`TrainPool`], so every thread that trains has the configured
    /// floating-point mode and the caller's thread keeps its own.
    fn run_from(
        &mut self,
        state: Option<resume::State<D>>,
        data: resume::Fingerprint,
    ) -> Result<Summary> {
        let pool = TrainPool::new(self.threads, self.config.training.flush_denormals)?;
        let (threads, flush) = (pool.threads(), pool.flushes_denormals());
        #[cfg(not(feature = "cuda"))]
        let summary = pool.install(|| self.run_phases(state, data, threads, flush))?;
        // cudarc's device cannot move to a pool worker: the loop runs here, with this
        // thread's mode set for the run and restored after.
        #[cfg(feature = "cuda")]
        let summary = {
            let _mode = smartmixed_core::fpenv::FlushDenormals::set(flush);
            self.run_phases(state, data, threads, flush)?
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
        data: resume::Fingerprint,
        threads: usize,
        flush_denormals: bool,
    ) -> Result<Summary> {
        let start = Instant::now();
        let cfg = self.config;
        let earlier_seconds = state.as_ref().map_or(0.0, |s| s.position.seconds);
        let mut progression = Progression {
            completed: state
                .as_ref()
                .map_or_else(Vec::new, |s| s.position.completed.clone()),
            state,
            data,
        };
        let final_choices = match cfg.model.mode {
            Mode::Fixed => {
                self.run_fixed(&mut progression)?;
                None
            }
            Mode::Smartmixed => Some(self.run_smartmixed(&mut progression)?),
        };
        Ok(Summary {
            mode: cfg.model.mode,
            architecture: self.widths(),
            seed: cfg.training.seed,
            split_seed: cfg.data.split_seed,
            train_samples: self.data.train.len(),
            validation_samples: self.data.validation.len(),
            test_samples: self.data.test.len(),
            phases: progression.completed,
            select: cfg.training.select,
            input: Some(self.data.input()),
            class_names: self.data.class_names(),
            dropped_rows: self.data.dropped_rows,
            data: Some(progression.data),
            final_choices,
            seconds: earlier_seconds + start.elapsed().as_secs_f64(),
            flush_denormals,
            threads,
        })
    }

    /// Phase 2's and the baselines' early stopping, if `training.patience` is set.
    fn patience_rule(&self) -> EndRule<'static> {
        let t = &self.config.training;
        t.patience
            .map_or(EndRule::Never, |p| EndRule::Patience(p, t.select))
    }

    /// A fixed-activation baseline: one phase of every epoch at phase 2's rate.
    fn run_fixed(&mut self, progression: &mut Progression<D>) -> Result<()> {
        let cfg = self.config;
        let name = cfg.model.activation.as_deref().unwrap_or("relu");
        let act = lookup(name)?;
        let run_path = self.run.path().to_path_buf();
        let start = match take_start(&mut progression.state, Phase::Fixed, &run_path)? {
            Some(s) => s,
            None => {
                let mut init_rng = StdRng::seed_from_u64(cfg.training.seed);
                PhaseStart::fresh(Network::fixed(self.dev, &self.widths(), act, &mut init_rng))
            }
        };
        let plan = PhasePlan {
            name: Phase::Fixed,
            epochs: cfg.total_epochs(),
            lr: cfg.phase2.lr,
            logit_lr: None,
            end: self.patience_rule(),
            data: progression.data,
        };
        let out = self.phase(&plan, start, &progression.completed)?;
        progression.completed.push(out.summary);
        Ok(())
    }

    /// Phase 1, the transition, phase 2. Returns the neurons per activation per layer
    /// that phase 1 handed over.
    fn run_smartmixed(
        &mut self,
        progression: &mut Progression<D>,
    ) -> Result<Vec<Vec<(String, usize)>>> {
        let cfg = self.config;
        let resumed_in_phase2 = progression
            .state
            .as_ref()
            .is_some_and(|s| s.position.phase == Phase::Phase2);
        let p1_best = if resumed_in_phase2 {
            let path = self.run.path().join(Phase::Phase1.checkpoint_file());
            let net = checkpoint::load(self.dev, &path)?;
            resume::check_network(&net, Phase::Phase1, &self.widths())
                .map_err(|message| Error::Checkpoint { path, message })?;
            net
        } else {
            self.run_phase1(progression)?
        };
        let counts = choice_counts(&p1_best).unwrap_or_default();
        let final_choices = counts
            .iter()
            .map(|layer| {
                cfg.model
                    .pool
                    .iter()
                    .cloned()
                    .zip(layer.iter().copied())
                    .collect()
            })
            .collect();
        if cfg.phase2.epochs > 0 {
            self.run_phase2(progression, &p1_best)?;
        }
        Ok(final_choices)
    }

    /// Phase 1 from fresh selective weights or from the state; returns its best network.
    fn run_phase1(&mut self, progression: &mut Progression<D>) -> Result<Network<D>> {
        let cfg = self.config;
        let run_path = self.run.path().to_path_buf();
        let start = match take_start(&mut progression.state, Phase::Phase1, &run_path)? {
            Some(s) => s,
            None => {
                let pool = cfg
                    .model
                    .pool
                    .iter()
                    .map(|n| lookup(n))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let tau = cfg.phase1.temperature as f32;
                let mut init_rng = StdRng::seed_from_u64(cfg.training.seed);
                let widths = self.widths();
                PhaseStart::fresh(Network::selective(
                    self.dev,
                    &widths,
                    pool,
                    tau,
                    &mut init_rng,
                ))
            }
        };
        let plan = PhasePlan {
            name: Phase::Phase1,
            epochs: cfg.phase1.epochs,
            lr: cfg.phase1.lr,
            logit_lr: cfg.phase1.logit_lr,
            end: match cfg.phase1.transition {
                Transition::Fixed => EndRule::Never,
                Transition::Auto => EndRule::Settled(&cfg.phase1.auto),
            },
            data: progression.data,
        };
        let p1 = self.phase(&plan, start, &progression.completed)?;
        progression.completed.push(p1.summary);
        Ok(p1.best)
    }

    /// Phase 2 from phase 1's best network (transferred or re-initialised) or the state.
    fn run_phase2(&mut self, progression: &mut Progression<D>, p1_best: &Network<D>) -> Result<()> {
        let cfg = self.config;
        let run_path = self.run.path().to_path_buf();
        let start = match take_start(&mut progression.state, Phase::Phase2, &run_path)? {
            Some(s) => s,
            None => {
                let seed = epoch_seed(cfg.training.seed, Phase::Phase2, 0, 7);
                let mut reinit_rng = StdRng::seed_from_u64(seed);
                let reinit = cfg.phase2.init == Phase2Init::Reinit;
                let mixed = p1_best
                    .to_mixed(reinit.then_some(&mut reinit_rng))
                    .ok_or_else(|| Error::Checkpoint {
                        path: run_path.join(Phase::Phase1.checkpoint_file()),
                        message: "metadata `kind` is `grouped`, expected `selective` for phase 1's best network".into(),
                    })?;
                PhaseStart::fresh(mixed)
            }
        };
        let plan = PhasePlan {
            name: Phase::Phase2,
            epochs: cfg.phase2.epochs,
            lr: cfg.phase2.lr,
            logit_lr: None,
            end: self.patience_rule(),
            data: progression.data,
        };
        let p2 = self.phase(&plan, start, &progression.completed)?;
        progression.completed.push(p2.summary);
        Ok(())
    }
}
