//! An interrupted run resumed from its state file ends exactly as an uninterrupted run
//! with the same seed: same best epochs, losses and accuracies, same metrics rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use dfdx::prelude::*;
use smartmixed_core::TrainConfig;
use smartmixed_train::data::Splits;
use smartmixed_train::rundir::{EpochRecord, RunDir};
use smartmixed_train::Error;
use smartmixed_train::{Progress, Silent, Summary, Trainer};

/// Sets the stop flag (as Ctrl-C does) once epoch `epoch` of `phase` has finished.
struct StopAfter<'a> {
    phase: &'static str,
    epoch: usize,
    stop: &'a AtomicBool,
}

impl Progress for StopAfter<'_> {
    fn epoch(&mut self, r: &EpochRecord, _: Option<&[Vec<usize>]>) {
        if r.phase.name() == self.phase && r.epoch == self.epoch {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn config(mode: &str) -> TrainConfig {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let text = format!(
        "[model]\nhidden = [24, 16]\n{mode}\n[phase1]\nepochs = 2\nlr = 0.003\n[phase2]\nepochs = 3\nlr = 0.003\n[training]\nbatch_size = 64\nseed = 5\n[data]\ndir = {:?}\ntrain_limit = 1200\ntest_limit = 500\n",
        data.display().to_string()
    );
    TrainConfig::from_toml_str(&text, "resume test").unwrap()
}

fn train(
    cfg: &TrainConfig,
    data: &Splits,
    dir: &Path,
    progress: &mut dyn Progress,
    stop: &AtomicBool,
) -> Result<Summary, Error> {
    let mut run = RunDir::create(dir).unwrap();
    Trainer {
        dev: &Cpu::default(),
        config: cfg,
        data,
        run: &mut run,
        progress,
        stop,
        threads: 0,
    }
    .run()
}

fn resume(cfg: &TrainConfig, data: &Splits, dir: &Path) -> Summary {
    let mut run = RunDir::open(dir).unwrap();
    let stop = AtomicBool::new(false);
    Trainer {
        dev: &Cpu::default(),
        config: cfg,
        data,
        run: &mut run,
        progress: &mut Silent,
        stop: &stop,
        threads: 0,
    }
    .resume()
    .unwrap()
}

/// Trains in `dir` until Ctrl-C is simulated after `epoch` of `phase`, checks that the
/// state was kept and no summary written, then resumes to the end.
fn stop_and_resume(
    cfg: &TrainConfig,
    data: &Splits,
    dir: &Path,
    phase: &'static str,
    epoch: usize,
) -> Summary {
    let stop = AtomicBool::new(false);
    let mut progress = StopAfter {
        phase,
        epoch,
        stop: &stop,
    };
    let err = train(cfg, data, dir, &mut progress, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert!(dir.join("state.safetensors").exists() && !dir.join("summary.json").exists());
    resume(cfg, data, dir)
}

/// metrics.csv without the timing columns.
fn metrics(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            [&f[..5], &f[7..]].concat().join(",")
        })
        .collect()
}

fn same_result(a: &Summary, b: &Summary) {
    assert_eq!(a.phases.len(), b.phases.len());
    for (x, y) in a.phases.iter().zip(&b.phases) {
        assert_eq!(
            (
                x.best_epoch,
                x.validation_loss,
                x.test_accuracy,
                x.test_loss
            ),
            (
                y.best_epoch,
                y.validation_loss,
                y.test_accuracy,
                y.test_loss
            ),
            "{}",
            x.phase
        );
    }
    assert_eq!(a.final_choices, b.final_choices);
}

#[test]
fn resumed_runs_end_exactly_as_uninterrupted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    for (mode, stops) in [
        ("", vec![("phase1", 1), ("phase1", 2), ("phase2", 1)]),
        ("mode = \"fixed\"\nactivation = \"elu\"", vec![("fixed", 3)]),
    ] {
        let cfg = config(mode);
        let data = Splits::load(&cfg.data, 10).unwrap();
        let whole_dir = tmp.path().join(format!("whole{}", mode.len()));
        let whole = train(
            &cfg,
            &data,
            &whole_dir,
            &mut Silent,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert!(
            !whole_dir.join("state.safetensors").exists(),
            "a finished run keeps no state"
        );
        for (phase, epoch) in stops {
            let dir = tmp.path().join(format!("{phase}-{epoch}-{}", mode.len()));
            let resumed = stop_and_resume(&cfg, &data, &dir, phase, epoch);
            same_result(&whole, &resumed);
            assert_eq!(
                metrics(&whole_dir),
                metrics(&dir),
                "stopped after {phase} epoch {epoch}"
            );
        }
    }
}

/// An automatic transition decided from observations saved in the state: a run stopped
/// before, at and after the transition epoch resumes to the same transition, the same
/// phase 2 and the same early stop.
#[test]
fn resumed_auto_transition_runs_end_exactly_as_uninterrupted_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config("");
    cfg.phase1.epochs = 6;
    // Phase 1 frozen (updates far below the weights' rounding step): the lowest validation
    // loss stays at epoch 1, which only the saved observations remember after a resume.
    cfg.phase1.lr = 1e-30;
    cfg.phase1.logit_lr = Some(1e-30);
    cfg.phase1.transition = smartmixed_core::Transition::Auto;
    cfg.phase1.auto = smartmixed_core::AutoTransition {
        min_epochs: 2,
        window: 1,
        threshold: 0.01,
        patience: 3,
    };
    cfg.phase2.epochs = 8;
    cfg.training.patience = Some(1);
    let data = Splits::load(&cfg.data, 10).unwrap();
    let whole_dir = tmp.path().join("whole");
    let stop = AtomicBool::new(false);
    let whole = train(&cfg, &data, &whole_dir, &mut Silent, &stop).unwrap();
    let transition = whole.phases[0]
        .ended_early
        .as_ref()
        .expect("auto transition");
    assert_eq!(transition.epoch, 4);
    for (phase, epoch) in [("phase1", 2), ("phase1", 4), ("phase2", 1)] {
        let dir = tmp.path().join(format!("{phase}-{epoch}"));
        let resumed = stop_and_resume(&cfg, &data, &dir, phase, epoch);
        same_result(&whole, &resumed);
        for (a, b) in whole.phases.iter().zip(&resumed.phases) {
            assert_eq!((a.epochs, &a.ended_early), (b.epochs, &b.ended_early));
        }
        assert_eq!(
            metrics(&whole_dir),
            metrics(&dir),
            "stopped after {phase} epoch {epoch}"
        );
    }
}

/// A resume after config.toml was edited (other widths, another learning rate) is refused
/// naming the fields, and leaves the run resumable with its own config.
#[test]
fn a_resume_under_a_changed_config_is_refused_naming_the_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("");
    let data = Splits::load(&cfg.data, 10).unwrap();
    let dir = tmp.path().join("run");
    let stop = AtomicBool::new(false);
    let mut progress = StopAfter {
        phase: "phase1",
        epoch: 1,
        stop: &stop,
    };
    let err = train(&cfg, &data, &dir, &mut progress, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    let mut edited = cfg.clone();
    edited.model.hidden = vec![30, 16];
    edited.phase2.lr = 0.01;
    edited.data.dir = tmp.path().to_path_buf(); // where the data is may change
    let mut run = RunDir::open(&dir).unwrap();
    let err = Trainer {
        dev: &Cpu::default(),
        config: &edited,
        data: &data,
        run: &mut run,
        progress: &mut Silent,
        stop: &AtomicBool::new(false),
        threads: 0,
    }
    .resume()
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("config.toml")
            && err.contains("model.hidden")
            && err.contains("phase2.lr")
            && !err.contains("data.dir"),
        "{err}"
    );
    let resumed = resume(&cfg, &data, &dir);
    assert_eq!(resumed.architecture, vec![784, 24, 16, 10]);
}

/// Copies the state file aside after `epoch` of `phase`, and stops after `stop_epoch`.
struct KeepStateThenStop<'a> {
    phase: &'static str,
    epoch: usize,
    stop_epoch: usize,
    dir: &'a Path,
    stop: &'a AtomicBool,
}

impl Progress for KeepStateThenStop<'_> {
    fn epoch(&mut self, r: &EpochRecord, _: Option<&[Vec<usize>]>) {
        if r.phase.name() == self.phase && r.epoch == self.epoch {
            std::fs::copy(
                self.dir.join("state.safetensors"),
                self.dir.join("state.kept"),
            )
            .unwrap();
            std::fs::copy(
                self.dir.join(format!("{}-best.safetensors", self.phase)),
                self.dir.join("best.kept"),
            )
            .unwrap();
        }
        if r.phase.name() == self.phase && r.epoch == self.stop_epoch {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A crash after an epoch's metrics row and best checkpoint were written but before its
/// state was: the state of the epoch before, with a newer metrics.csv and checkpoint. The
/// resumed run replays the epoch and still ends exactly as an uninterrupted one.
#[test]
fn a_crash_between_the_checkpoint_and_the_state_write_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("");
    let data = Splits::load(&cfg.data, 10).unwrap();
    let whole_dir = tmp.path().join("whole");
    let whole = train(
        &cfg,
        &data,
        &whole_dir,
        &mut Silent,
        &AtomicBool::new(false),
    )
    .unwrap();
    for (phase, kept, stopped) in [("phase1", 1, 2), ("phase2", 1, 2)] {
        let dir = tmp.path().join(format!("crash-{phase}"));
        let stop = AtomicBool::new(false);
        let mut progress = KeepStateThenStop {
            phase,
            epoch: kept,
            stop_epoch: stopped,
            dir: &dir,
            stop: &stop,
        };
        let err = train(&cfg, &data, &dir, &mut progress, &stop).unwrap_err();
        assert!(matches!(err, Error::Interrupted), "{err}");
        let newer = std::fs::read(dir.join(format!("{phase}-best.safetensors"))).unwrap();
        std::fs::rename(dir.join("state.kept"), dir.join("state.safetensors")).unwrap();
        assert!(metrics(&dir)
            .iter()
            .any(|l| l.starts_with(&format!("{phase},{stopped},"))));
        let resumed = resume(&cfg, &data, &dir);
        same_result(&whole, &resumed);
        assert_eq!(metrics(&whole_dir), metrics(&dir), "{phase}");
        // The window really held a newer best checkpoint than the state's.
        assert_ne!(
            newer,
            std::fs::read(dir.join("best.kept")).unwrap(),
            "{phase}"
        );
    }
}

/// `phase2.init = "reinit"` through the trainer: phase 2 keeps phase 1's choices but starts
/// from fresh weights, so its first epoch's loss is far above a transferred start's.
#[test]
fn reinit_keeps_the_choices_and_restarts_the_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let transfer = config("");
    let mut reinit = transfer.clone();
    reinit.phase2.init = smartmixed_core::Phase2Init::Reinit;
    let data = Splits::load(&transfer.data, 10).unwrap();
    let stop = AtomicBool::new(false);
    let a = train(&transfer, &data, &tmp.path().join("t"), &mut Silent, &stop).unwrap();
    let b = train(&reinit, &data, &tmp.path().join("r"), &mut Silent, &stop).unwrap();
    assert_eq!(a.final_choices, b.final_choices);
    // Phase 1 is the same run (same figures; only the wall time differs).
    assert_eq!(
        (a.phases[0].validation_loss, a.phases[0].test_accuracy),
        (b.phases[0].validation_loss, b.phases[0].test_accuracy)
    );
    let first_loss = |dir: &str| -> f64 {
        let m = std::fs::read_to_string(tmp.path().join(dir).join("metrics.csv")).unwrap();
        let row = m.lines().find(|l| l.starts_with("phase2,1,")).unwrap();
        row.split(',').nth(2).unwrap().parse().unwrap()
    };
    let (t, r) = (first_loss("t"), first_loss("r"));
    assert!(r > t * 1.2, "reinit phase-2 epoch-1 loss {r}, transfer {t}");
}
