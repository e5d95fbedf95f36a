//! The options beyond the paper, each shown acting on tiny data: the automatic transition
//! fires once the choices stop changing, early stopping stops, the selected checkpoint is
//! the one the rule names (checked with the runtime, an independent implementation), a
//! logit learning rate moves the choices, and resume reproduces an auto-transition run.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use dfdx::prelude::*;
use smartmixed_core::Phase;
use smartmixed_train::data::Splits;
use smartmixed_train::rundir::{read_metrics, EpochRecord, RunDir};
use smartmixed_train::{checkpoint, export, Hidden, Silent, Summary, Trainer};
use smartmixed_train::{AutoTransition, Mode, Select, TrainConfig, Transition};

/// A small SmartMixed config on 1200 MNIST images (8 + 6 epochs), changed by `edit`.
fn config(edit: impl FnOnce(&mut TrainConfig)) -> TrainConfig {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let text = format!(
        "[model]\nhidden = [24, 16]\n[phase1]\nepochs = 8\nlr = 0.003\n[phase2]\nepochs = 6\nlr = 0.003\n[training]\nbatch_size = 64\nseed = 3\n[data]\ndir = {:?}\ntrain_limit = 1200\ntest_limit = 300\n",
        data.display().to_string()
    );
    let mut cfg = TrainConfig::from_toml_str(&text, "beyond-paper test").unwrap();
    edit(&mut cfg);
    cfg.validate("beyond-paper test").unwrap();
    cfg
}

/// A learning rate far below every weight's rounding step: Adam's updates (about lr in
/// size) leave every value as it was, so choices and losses stay exactly constant.
const FROZEN: f64 = 1e-30;

/// `transition = "auto"` with the given threshold: from epoch 3, a window of 2, patience 1.
fn auto(cfg: &mut TrainConfig, threshold: f64) {
    cfg.phase1.transition = Transition::Auto;
    cfg.phase1.auto = AutoTransition {
        min_epochs: 3,
        window: 2,
        threshold,
        patience: 1,
    };
}

fn train(cfg: &TrainConfig, dir: &Path) -> (Summary, Vec<EpochRecord>) {
    let data = Splits::load(&cfg.data, 10).unwrap();
    let mut run = RunDir::create(dir).unwrap();
    let summary = Trainer {
        dev: &Cpu::default(),
        config: cfg,
        data: &data,
        run: &mut run,
        progress: &mut Silent,
        stop: &AtomicBool::new(false),
        threads: 0,
    }
    .run()
    .unwrap();
    (summary, read_metrics(&dir.join("metrics.csv")).unwrap())
}

fn rows(metrics: &[EpochRecord], phase: Phase) -> Vec<&EpochRecord> {
    metrics.iter().filter(|r| r.phase == phase).collect()
}

#[test]
fn the_auto_transition_fires_once_the_choices_stop_changing() {
    let tmp = tempfile::tempdir().unwrap();
    // Frozen phase 1: no choice ever changes and the loss never improves after epoch 1,
    // so the rule fires at its earliest, min_epochs.
    let cfg = config(|c| {
        c.phase1.lr = FROZEN;
        c.phase1.logit_lr = Some(FROZEN);
        auto(c, 0.01);
    });
    let (s, m) = train(&cfg, &tmp.path().join("frozen"));
    let p1 = &s.phases[0];
    let end = p1.ended_early.as_ref().expect("phase 1 ends early");
    assert_eq!((p1.epochs, end.epoch), (3, 3), "{end:?}");
    assert!(
        end.reason
            .contains("choices settled (0.00% of neurons changed in the last 2 epochs)"),
        "{}",
        end.reason
    );
    assert_eq!(rows(&m, Phase::Phase1).len(), 3);
    assert!(rows(&m, Phase::Phase1)
        .iter()
        .all(|r| r.choices_changed == 0.0));
    assert_eq!(rows(&m, Phase::Phase2).len(), 6, "phase 2 follows in full");
    // A learning phase 1 whose choices keep moving does not settle under a threshold of 0
    // and trains its whole budget; its metrics record the changes.
    let cfg = config(|c| {
        c.phase1.logit_lr = Some(0.05);
        auto(c, 0.0);
    });
    let (s, m) = train(&cfg, &tmp.path().join("moving"));
    assert_eq!((s.phases[0].epochs, &s.phases[0].ended_early), (8, &None));
    assert!(
        rows(&m, Phase::Phase1)
            .iter()
            .all(|r| r.choices_changed > 0.0),
        "{m:?}"
    );
    // The fixed transition (the default) ignores the auto rule's settings.
    let cfg = config(|c| {
        c.phase1.lr = FROZEN;
        c.phase1.logit_lr = Some(FROZEN);
        auto(c, 1.0);
        c.phase1.transition = Transition::Fixed;
    });
    let (s, _) = train(&cfg, &tmp.path().join("fixed"));
    assert_eq!((s.phases[0].epochs, &s.phases[0].ended_early), (8, &None));
}

#[test]
fn early_stopping_stops_phase2_and_fixed_runs_that_stop_improving() {
    let tmp = tempfile::tempdir().unwrap();
    // Frozen phase 2: the validation loss is the same every epoch, so the best stays at
    // epoch 1 and patience 2 ends the phase after epoch 3.
    let cfg = config(|c| {
        c.phase2.lr = FROZEN;
        c.training.patience = Some(2);
    });
    let (s, m) = train(&cfg, &tmp.path().join("phase2"));
    assert_eq!(
        s.phases[0].ended_early, None,
        "patience is phase 2's, not phase 1's"
    );
    let p2 = &s.phases[1];
    assert_eq!((p2.epochs, p2.best_epoch), (3, 1));
    let end = p2.ended_early.as_ref().unwrap();
    assert_eq!(end.epoch, 3);
    assert!(
        end.reason
            .contains("validation loss not improved for 2 epochs (best at epoch 1)"),
        "{}",
        end.reason
    );
    assert_eq!(rows(&m, Phase::Phase2).len(), 3);
    // A fixed baseline of 14 epochs at phase 2's (frozen) rate: the same rule.
    let fixed = config(|c| {
        c.phase2.lr = FROZEN;
        c.training.patience = Some(4);
        c.model.mode = Mode::Fixed;
        c.model.activation = Some("tanh".into());
    });
    let (s, m) = train(&fixed, &tmp.path().join("fixed"));
    assert_eq!((s.phases[0].epochs, s.phases[0].best_epoch), (5, 1));
    assert_eq!(rows(&m, Phase::Fixed).len(), 5);
    // Off by default: the paper's schedule runs whole.
    let (s, _) = train(&config(|c| c.phase2.lr = FROZEN), &tmp.path().join("off"));
    assert_eq!((s.phases[1].epochs, &s.phases[1].ended_early), (6, &None));
}

/// The epoch a rule picks from metrics.csv (first of equals, as the trainer keeps it).
fn expected_best(rows: &[&EpochRecord], rule: Select) -> usize {
    let mut best = rows[0];
    for r in &rows[1..] {
        if rule.better(
            (r.validation_loss, r.validation_accuracy),
            (best.validation_loss, best.validation_accuracy),
        ) {
            best = r;
        }
    }
    best.epoch
}

/// The validation accuracy of a checkpoint file, computed by the runtime crate.
fn runtime_accuracy(checkpoint_path: &Path, cfg: &TrainConfig, dir: &Path) -> f64 {
    let net = checkpoint::load(&Cpu::default(), checkpoint_path).unwrap();
    let out = dir.join("export");
    export::export(&net, &out, false).unwrap();
    let model = smartmixed_infer::Model::load_dir(&out).unwrap();
    let data = Splits::load(&cfg.data, 10).unwrap();
    let v = &data.validation;
    let all: Vec<usize> = (0..v.len()).collect();
    let batch = v.batch(&all, 10);
    let mut logits = vec![0.0; v.len() * 10];
    let mut scratch = smartmixed_infer::Scratch::new();
    model
        .forward(&batch.inputs, v.len(), &mut scratch, &mut logits)
        .unwrap();
    let correct = logits
        .chunks_exact(10)
        .zip(&batch.labels)
        .filter(|(row, &label)| smartmixed_core::math::argmax(row) == label as usize)
        .count();
    correct as f64 / v.len() as f64
}

#[test]
fn the_selected_checkpoint_is_the_one_the_rule_names() {
    let tmp = tempfile::tempdir().unwrap();
    for rule in [Select::ValLoss, Select::ValAccuracy] {
        let cfg = config(|c| c.training.select = rule);
        let dir = tmp.path().join(rule.name());
        let (s, m) = train(&cfg, &dir);
        assert_eq!(s.select, rule);
        for p in &s.phases {
            let rows = rows(&m, p.phase);
            let best = expected_best(&rows, rule);
            assert_eq!(p.best_epoch, best, "{} under {}", p.phase, rule.name());
            let row = rows.iter().find(|r| r.epoch == best).unwrap();
            assert!((p.validation_accuracy - row.validation_accuracy).abs() < 1e-6);
            // The file on disk is that epoch's network: the runtime measures the same
            // validation accuracy the epoch's metrics row recorded.
            let ckpt = dir.join(p.phase.checkpoint_file());
            let acc = runtime_accuracy(&ckpt, &cfg, &dir.join(p.phase.name()));
            assert!(
                (acc - row.validation_accuracy).abs() < 1e-6,
                "{}: runtime {acc}, metrics {}",
                p.phase,
                row.validation_accuracy
            );
        }
    }
}

#[test]
fn a_logit_learning_rate_moves_the_choices_and_the_temperature_is_annealed() {
    let tmp = tempfile::tempdir().unwrap();
    let changes = |logit_lr: f64, name: &str| -> f64 {
        let cfg = config(|c| c.phase1.logit_lr = Some(logit_lr));
        let (_, m) = train(&cfg, &tmp.path().join(name));
        rows(&m, Phase::Phase1)
            .iter()
            .map(|r| r.choices_changed)
            .sum()
    };
    let slow = changes(1e-6, "slow");
    let fast = changes(0.05, "fast");
    assert!(
        fast > 5.0 * slow.max(1e-3),
        "choice changes: logit_lr 1e-6 {slow}, 0.05 {fast}"
    );
    // The phase-1 checkpoint records the temperature of the epoch it was taken at:
    // 1.0 at epoch 1 falling geometrically to 0.1 at epoch 3.
    let dir = tmp.path().join("annealed");
    let cfg = config(|c| {
        c.phase1.epochs = 3;
        c.phase1.temperature = 1.0;
        c.phase1.temperature_final = Some(0.1);
    });
    let (s, _) = train(&cfg, &dir);
    let best = checkpoint::load(&Cpu::default(), &dir.join("phase1-best.safetensors")).unwrap();
    let Hidden::Selective { temperature, .. } = best.hidden else {
        panic!("phase 1 is selective")
    };
    let epoch = s.phases[0].best_epoch as i32;
    let expected = 0.1f32.powf((epoch - 1) as f32 / 2.0);
    assert!(
        (temperature - expected).abs() < 1e-6,
        "epoch {epoch}: {temperature} vs {expected}"
    );
}
