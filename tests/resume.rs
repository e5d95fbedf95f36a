//! An interrupted run resumed from its state file ends exactly as an uninterrupted run
//! with the same seed: same best epochs, losses and accuracies, same metrics rows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use dfdx::prelude::*;
use smartmixed_train::data::Splits;
use smartmixed_train::rundir::{EpochRecord, RunDir};
use smartmixed_train::Error;
use smartmixed_train::TrainConfig;
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
    cfg.phase1.transition = smartmixed_train::Transition::Auto;
    cfg.phase1.auto = smartmixed_train::AutoTransition {
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
    reinit.phase2.init = smartmixed_train::Phase2Init::Reinit;
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

// ---------------------------------------------------------------------------------------
// Issue 18 item 6: a hand-edited or foreign state is refused, naming the field.

/// Safetensors `bytes` with their `__metadata__` strings edited by `edit` (the header is
/// rewritten; tensor offsets are relative to the data, so the data stays as it is).
fn edit_metadata(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header["__metadata__"].as_object_mut().unwrap());
    let text = serde_json::to_string(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// `bytes` with the position (metadata `resume`, JSON) edited by `edit`.
fn edit_position(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    edit_metadata(bytes, |meta| {
        let mut position: serde_json::Value =
            serde_json::from_str(meta["resume"].as_str().unwrap()).unwrap();
        edit(position.as_object_mut().unwrap());
        meta.insert("resume".into(), position.to_string().into());
    })
}

/// Trains `cfg` in `dir` until the simulated Ctrl-C after `epoch` of `phase`; returns the
/// state file's bytes.
fn stopped_state(
    cfg: &TrainConfig,
    data: &Splits,
    dir: &Path,
    phase: &'static str,
    epoch: usize,
) -> Vec<u8> {
    let stop = AtomicBool::new(false);
    let mut progress = StopAfter {
        phase,
        epoch,
        stop: &stop,
    };
    let err = train(cfg, data, dir, &mut progress, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    std::fs::read(dir.join("state.safetensors")).unwrap()
}

/// Resumes `dir` with `state` as its state file on `data`; the error as text.
fn resume_error(cfg: &TrainConfig, data: &Splits, dir: &Path, state: &[u8]) -> String {
    std::fs::write(dir.join("state.safetensors"), state).unwrap();
    let mut run = RunDir::open(dir).unwrap();
    match (Trainer {
        dev: &Cpu::default(),
        config: cfg,
        data,
        run: &mut run,
        progress: &mut Silent,
        stop: &AtomicBool::new(false),
        threads: 0,
    })
    .resume()
    {
        Ok(s) => panic!("resumed to {} epochs", s.phases[0].epochs),
        Err(e) => e.to_string(),
    }
}

fn assert_names(err: &str, needles: &[&str], case: &str) {
    assert!(!err.contains('\n'), "{case}: not one line: {err}");
    assert!(!err.contains("device error"), "{case}: {err}");
    for n in needles {
        assert!(err.contains(n), "{case}: `{n}` not in: {err}");
    }
}

/// Every position field of a phase-1 state set out of range (0, the budget + 1,
/// u64::MAX, negative, NaN, missing) is refused naming the state file and the field; the
/// intact state then resumes to the budget. Before, `epochs_done = 2^64-1` finished at
/// once and recorded 18446744073709551615 epochs, and a bad `adam_step` said "missing".
#[test]
fn every_bad_position_field_is_refused_naming_the_state_file_and_the_field() {
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("");
    let data = Splits::load(&cfg.data, 10).unwrap();
    let dir = tmp.path().join("run");
    let state = stopped_state(&cfg, &data, &dir, "phase1", 1);
    // Hand-computed: the optimiser steps of one epoch at batch 64.
    let batches = data.train.len().div_ceil(64);
    let set = |key: &'static str, v: serde_json::Value| {
        edit_position(&state, move |p| {
            p.insert(key.into(), v);
        })
    };
    let step = |v: Option<String>| {
        edit_metadata(&state, move |m| match v {
            Some(v) => {
                m.insert("adam_step".into(), v.into());
            }
            None => {
                m.remove("adam_step");
            }
        })
    };
    let (one_epoch_step, two_epochs_step) = (batches.to_string(), (2 * batches).to_string());
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "epochs_done max",
            set("epochs_done", json!(u64::MAX)),
            vec![
                "`epochs_done` is 18446744073709551615",
                "1 to 2",
                "phase1.epochs = 2",
            ],
        ),
        (
            "epochs_done 0",
            set("epochs_done", json!(0)),
            vec!["`epochs_done` is 0"],
        ),
        (
            "epochs_done budget+1",
            set("epochs_done", json!(3)),
            vec!["`epochs_done` is 3"],
        ),
        (
            "epochs_done budget",
            set("epochs_done", json!(2)),
            vec!["`adam_step`", &two_epochs_step],
        ),
        (
            "epochs_done -1",
            set("epochs_done", json!(-1)),
            vec!["`epochs_done`", "-1"],
        ),
        (
            "epochs_done missing",
            edit_position(&state, |p| {
                p.remove("epochs_done");
            }),
            vec!["`epochs_done` missing"],
        ),
        (
            "best_epoch after",
            set("best_epoch", json!(2)),
            vec!["`best_epoch` is 2"],
        ),
        (
            "best_epoch 0",
            set("best_epoch", json!(0)),
            vec!["`best_epoch` is 0"],
        ),
        (
            "best loss",
            set("best_validation", json!({"loss": -1.0, "accuracy": 0.5})),
            vec!["`best_validation`", "loss -1"],
        ),
        (
            "best accuracy",
            set("best_validation", json!({"loss": 1.0, "accuracy": 2.0})),
            vec!["`best_validation`", "accuracy 2"],
        ),
        (
            "seconds negative",
            set("seconds", json!(-5.0)),
            vec!["`seconds` is -5"],
        ),
        (
            "seconds NaN",
            set("seconds", json!(null)),
            vec!["`seconds`"],
        ),
        (
            "phase fixed",
            set("phase", json!("fixed")),
            vec!["`phase` is fixed"],
        ),
        (
            "phase 2",
            set("phase", json!("phase2")),
            vec!["`phase`", "phase2"],
        ),
        ("phase bogus", set("phase", json!("bogus")), vec!["`phase`"]),
        (
            "completed",
            set(
                "completed",
                json!([{"phase": "phase1", "epochs": 1, "best_epoch": 1, "validation_loss": 1.0, "validation_accuracy": 0.5, "test_accuracy": 0.5, "test_loss": 1.0, "seconds": 1.0, "checkpoint": "phase1-best.safetensors"}]),
            ),
            vec!["`completed`"],
        ),
        (
            "watch change",
            set(
                "watch",
                json!({"last_change": [vec![9; 24], vec![0; 16]], "lowest_loss": [1, 1.0]}),
            ),
            vec!["`watch.last_change`", "epoch 9"],
        ),
        (
            "watch shape",
            set(
                "watch",
                json!({"last_change": [[0, 0]], "lowest_loss": [1, 1.0]}),
            ),
            vec!["`watch.last_change`", "[24, 16]"],
        ),
        (
            "watch lowest",
            set("watch", json!({"last_change": [], "lowest_loss": [5, 1.0]})),
            vec!["`watch.lowest_loss` is 5"],
        ),
        (
            "position not JSON",
            edit_metadata(&state, |m| {
                m.insert("resume".into(), "{".into());
            }),
            vec!["`resume`"],
        ),
        (
            "adam_step text",
            step(Some("abc".into())),
            vec!["`adam_step` is `abc`", "whole number"],
        ),
        (
            "adam_step -1",
            step(Some("-1".into())),
            vec!["`adam_step` is -1", &one_epoch_step],
        ),
        (
            "adam_step +1",
            step(Some((batches + 1).to_string())),
            vec!["`adam_step`", &one_epoch_step],
        ),
        ("adam_step missing", step(None), vec!["`adam_step` missing"]),
        (
            "temperature NaN",
            edit_metadata(&state, |m| {
                m.insert("temperature".into(), "NaN".into());
            }),
            vec!["`temperature` is NaN", "0.3"],
        ),
        (
            "temperature other",
            edit_metadata(&state, |m| {
                m.insert("temperature".into(), "0.5".into());
            }),
            vec!["`temperature` is 0.5"],
        ),
    ];
    for (case, bytes, needles) in &cases {
        let err = resume_error(&cfg, &data, &dir, bytes);
        assert_names(&err, &[&["state.safetensors"], &needles[..]].concat(), case);
        assert!(
            !err.contains("missing") || case.ends_with("missing"),
            "{case}: {err}"
        );
    }
    std::fs::write(dir.join("state.safetensors"), &state).unwrap();
    let resumed = resume(&cfg, &data, &dir);
    assert_eq!(resumed.phases[0].epochs, 2);
}

/// A phase-2 state claiming phase 1 said "device error: phase 1's network is not
/// selective" without a file; the earlier phases and the phase-1 checkpoint it continues
/// from are checked too.
#[test]
fn a_phase_2_state_that_contradicts_itself_is_refused_naming_the_file() {
    use serde_json::json;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("");
    let data = Splits::load(&cfg.data, 10).unwrap();
    let dir = tmp.path().join("run");
    let state = stopped_state(&cfg, &data, &dir, "phase2", 1);
    let completed = |edit: fn(&mut serde_json::Value)| {
        edit_position(&state, move |p| edit(&mut p["completed"]))
    };
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "phase 1",
            edit_position(&state, |p| {
                p.insert("phase".into(), json!("phase1"));
            }),
            vec!["state.safetensors", "`phase`", "grouped"],
        ),
        (
            "no phase 1",
            completed(|c| *c = json!([])),
            vec!["state.safetensors", "`completed`"],
        ),
        (
            "phase 1 epochs",
            completed(|c| c[0]["epochs"] = json!(u64::MAX)),
            vec![
                "state.safetensors",
                "`completed[0].epochs` is 18446744073709551615",
            ],
        ),
        (
            "phase 1 best epoch",
            completed(|c| c[0]["best_epoch"] = json!(3)),
            vec!["state.safetensors", "`completed[0].best_epoch` is 3"],
        ),
        (
            "phase 1 checkpoint",
            completed(|c| c[0]["checkpoint"] = json!("../x")),
            vec!["state.safetensors", "`completed[0].checkpoint`"],
        ),
    ];
    for (case, bytes, needles) in &cases {
        assert_names(&resume_error(&cfg, &data, &dir, bytes), needles, case);
    }
    // Phase 1's best checkpoint replaced by a phase-2 one.
    let p1 = dir.join("phase1-best.safetensors");
    let kept = std::fs::read(&p1).unwrap();
    std::fs::copy(dir.join("phase2-best.safetensors"), &p1).unwrap();
    let err = resume_error(&cfg, &data, &dir, &state);
    assert_names(
        &err,
        &["phase1-best.safetensors", "`kind` is `grouped`"],
        "checkpoint",
    );
    std::fs::write(&p1, kept).unwrap();
    std::fs::write(dir.join("state.safetensors"), &state).unwrap();
    assert_eq!(resume(&cfg, &data, &dir).phases[1].epochs, 3);
}

/// `train --resume --data-dir OTHER` continued on other data without a word: a state
/// records its data's sizes and hashes, and a resume on other data is refused saying
/// what differs. A state written before the fingerprint (no `data`) still resumes.
#[test]
fn a_resume_on_other_data_is_refused_saying_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("");
    let data = Splits::load(&cfg.data, 10).unwrap();
    let dir = tmp.path().join("run");
    let state = stopped_state(&cfg, &data, &dir, "phase1", 1);
    let rebuilt = |set: &smartmixed_train::data::Dataset,
                   edit: &dyn Fn(&mut Vec<u8>, &mut Vec<u8>)| {
        let (mut pixels, mut labels) = (Vec::new(), set.labels().to_vec());
        for i in 0..set.len() {
            pixels.extend_from_slice(set.image(i));
        }
        edit(&mut pixels, &mut labels);
        smartmixed_train::data::Dataset::new(set.features(), pixels, labels)
            .with_shape(set.shape().to_vec())
    };
    // Unchanged but rebuilt: the same fingerprint (what the edits below are compared with).
    let mut same = data.clone();
    same.train = rebuilt(&data.train, &|_, _| {});
    let mut fewer = data.clone();
    fewer.test = data.test.subset(&(0..400).collect::<Vec<_>>());
    let mut relabelled = data.clone();
    relabelled.train = rebuilt(&data.train, &|_, l| l[7] = (l[7] + 1) % 10);
    let mut repainted = data.clone();
    repainted.validation = rebuilt(&data.validation, &|p, _| p[300] ^= 0x40);
    for (case, other, says, not) in [
        (
            "fewer",
            &fewer,
            "test items: 500 then, 400 now",
            "train items",
        ),
        ("labels", &relabelled, "the labels differ", "items"),
        ("values", &repainted, "the input values differ", "labels"),
    ] {
        let err = resume_error(&cfg, other, &dir, &state);
        assert_names(&err, &["state.safetensors", "other data", says], case);
        assert!(!err.contains(not), "{case}: {err}");
    }
    // The state of an older version, without a fingerprint, resumes.
    let old = edit_position(&state, |p| {
        p.remove("data");
    });
    std::fs::write(dir.join("state.safetensors"), old).unwrap();
    assert_eq!(resume(&cfg, &same, &dir).phases[0].epochs, 2);
}

/// A run directory without resume state (a scikit-learn fit's, deleted afterwards) saves
/// none after any epoch, yet ends exactly as a resumable run: the state is written, never
/// read, by an uninterrupted run.
#[test]
fn a_run_without_resume_state_saves_none_and_ends_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("");
    let data = Splits::load(&cfg.data, 10).unwrap();
    let whole_dir = tmp.path().join("whole");
    let stop = AtomicBool::new(false);
    let whole = train(&cfg, &data, &whole_dir, &mut Silent, &stop).unwrap();
    let run_without = |dir: &Path, progress: &mut dyn Progress, stop: &AtomicBool| {
        let mut run = RunDir::create(dir).unwrap().without_resume_state();
        Trainer {
            dev: &Cpu::default(),
            config: &cfg,
            data: &data,
            run: &mut run,
            progress,
            stop,
            threads: 0,
        }
        .run()
    };
    let dir = tmp.path().join("scratch");
    same_result(&whole, &run_without(&dir, &mut Silent, &stop).unwrap());
    // Its CSV files, written once at the end, hold what the epoch-by-epoch ones hold.
    assert_eq!(metrics(&whole_dir), metrics(&dir));
    let choices = |d: &Path| std::fs::read_to_string(d.join("choices.csv")).unwrap();
    assert_eq!(choices(&whole_dir), choices(&dir));
    assert!(
        choices(&dir).lines().count() > 1,
        "phase 1 recorded choices"
    );
    // Its best checkpoints, written once at each phase's end, are the ones an ordinary
    // run rewrote at every improvement.
    // (Compared tensor by tensor: the header's metadata comes in hash-map order.)
    for file in ["phase1-best.safetensors", "phase2-best.safetensors"] {
        let contents = |d: &Path| {
            let bytes = std::fs::read(d.join(file)).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut tensors: Vec<_> = st
                .tensors()
                .into_iter()
                .map(|(name, t)| (name, t.shape().to_vec(), t.data().to_vec()))
                .collect();
            tensors.sort();
            let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            (tensors, header.metadata().clone())
        };
        assert!(contents(&whole_dir) == contents(&dir), "{file} differs");
    }
    // Stopped after an epoch: nothing to resume from, while a resumable run keeps it (and
    // no CSV file either: a throwaway directory's are written with the summary).
    let dir = tmp.path().join("stopped");
    let stop = AtomicBool::new(false);
    let mut progress = StopAfter {
        phase: "phase1",
        epoch: 1,
        stop: &stop,
    };
    let err = run_without(&dir, &mut progress, &stop).unwrap_err();
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert!(!dir.join("metrics.csv").exists() && !dir.join("state.safetensors").exists());
    assert!(dir.join("config.toml").exists(), "the run began");
}
