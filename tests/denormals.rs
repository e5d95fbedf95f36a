//! `training.flush_denormals`: every thread that trains (the loop's and every pool
//! worker's) has the mode the config asks for, the summary records it, the caller's thread
//! is left as it was, and on a run whose values stay normal the results do not change.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use dfdx::prelude::*;
use smartmixed_core::fpenv;
use smartmixed_train::data::Splits;
use smartmixed_train::rundir::RunDir;
use smartmixed_train::TrainConfig;
use smartmixed_train::{Progress, Summary, Trainer};

/// Reads the mode back from the loop's thread and from every worker, at every batch.
#[derive(Default)]
struct Modes(Vec<bool>);

impl Progress for Modes {
    fn batch(&mut self, _: usize, _: usize, _: f64, _: f64) {
        self.0.push(fpenv::flush_denormals_enabled());
        self.0
            .extend(rayon::broadcast(|_| fpenv::flush_denormals_enabled()));
    }
}

fn run(flush: bool, dir: &std::path::Path) -> (Summary, Modes) {
    let data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    let text = format!(
        "[model]\nhidden = [24, 16]\n[phase1]\nepochs = 1\nlr = 0.003\n[phase2]\nepochs = 1\nlr = 0.003\n\
         [training]\nbatch_size = 64\nseed = 3\nflush_denormals = {flush}\n\
         [data]\ndir = {:?}\ntrain_limit = 600\ntest_limit = 300\n",
        data_dir.display().to_string()
    );
    let cfg = TrainConfig::from_toml_str(&text, "denormals test").unwrap();
    let data = Splits::load(&cfg.data, 10).unwrap();
    let mut run = RunDir::create(dir).unwrap();
    let mut modes = Modes::default();
    let summary = Trainer {
        dev: &Cpu::default(),
        config: &cfg,
        data: &data,
        run: &mut run,
        progress: &mut modes,
        stop: &AtomicBool::new(false),
        threads: 2,
    }
    .run()
    .unwrap();
    (summary, modes)
}

#[test]
fn every_training_thread_has_the_configured_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let caller = fpenv::flush_denormals_enabled();
    let (on, on_modes) = run(true, &tmp.path().join("on"));
    let (off, off_modes) = run(false, &tmp.path().join("off"));
    assert_eq!(
        fpenv::flush_denormals_enabled(),
        caller,
        "caller's mode kept"
    );

    // The loop's thread plus two workers, at each of the 2 x 9 batches.
    assert_eq!(on_modes.0.len(), 2 * 9 * 3);
    assert!(on_modes.0.iter().all(|&m| m == fpenv::SUPPORTED));
    assert!(off_modes.0.iter().all(|&m| !m));
    assert_eq!(on.flush_denormals, fpenv::SUPPORTED);
    assert!(!off.flush_denormals);
    assert_eq!(on.threads, 2);

    let summary: Summary =
        serde_json::from_slice(&std::fs::read(tmp.path().join("on").join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary.flush_denormals, fpenv::SUPPORTED);

    // Nothing in this short run gets near the subnormal range: flushing changes no result.
    for (a, b) in on.phases.iter().zip(&off.phases) {
        assert_eq!(
            (a.validation_loss, a.test_loss, a.test_accuracy),
            (b.validation_loss, b.test_loss, b.test_accuracy),
            "{}",
            a.phase
        );
    }
}
