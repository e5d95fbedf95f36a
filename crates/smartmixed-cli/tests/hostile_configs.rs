//! Configs that pass validation's types but made `train` or `sweep` exit 0 with a result
//! that means nothing (NaN logits read as choices, a repeated cell skipped as finished, a
//! shard with no cell), or refuse one that works (a batch above the training set): each
//! now ends in a one-line error or a meaningful run. Small synthetic data, a few epochs.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `train` of the small config with `--set`s on synthetic data, into `tmp/run`.
fn train_with(tmp: &Path, sets: &[&str]) -> Output {
    let data = tmp.join("data");
    synthetic_data(&data, 200, 60);
    let cfg = write_config(tmp, "c.toml", &format!("{SMALL}[data]\nclasses = 2\n"));
    let out = tmp.join("run");
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        s(&cfg).into(),
        "--data-dir".into(),
        s(&data).into(),
        "--out".into(),
        s(&out).into(),
    ];
    for set in sets {
        args.push("--set".into());
        args.push(set.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(&args)
}

/// A logit rate that f32 holds but whose Adam steps overflow the logits: they were NaN,
/// every neuron's argmax read as the pool's first entry (all relu), and the run exited 0
/// reporting that as phase 1's selection.
#[test]
fn nan_logits_stop_the_run_instead_of_choosing_relu_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let o = train_with(tmp.path(), &["phase1.logit_lr=1e38"]);
    assert_final_error_line(
        &o,
        &[
            "phase1 epoch 1",
            "a logit of hidden layer 1 is NaN",
            "phase1.logit_lr",
        ],
    );
    assert!(!tmp.path().join("run/summary.json").exists());
}

/// A temperature that is 0 in f32 (flushed) gave NaN logits the same way; one whose
/// softmax is uniform or one-hot kept the initial choices. Refused before any file.
#[test]
fn temperatures_f32_cannot_train_with_are_refused_from_set() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, got) in [
        ("phase1.temperature=1e-40", "got 1e-40"),
        ("phase1.temperature=1e30", "got 1e30"),
        ("phase1.temperature_final=1e-5", "got 1e-5"),
    ] {
        let o = train_with(tmp.path(), &[set]);
        let field = set.split('=').next().unwrap();
        assert_one_line_error(
            &o,
            &[&format!("--set {set}: {field}: "), got, "0.001 to 1e6"],
        );
        assert!(!tmp.path().join("run").exists());
    }
    for (set, field) in [
        ("phase2.lr=1e-50", "phase2.lr"),
        ("training.clip_norm=1e-300", "training.clip_norm"),
    ] {
        let o = train_with(tmp.path(), &[set]);
        assert_one_line_error(&o, &[&format!("{field}: expected ")]);
    }
}

/// Full-batch training (a batch_size above the training set) was refused as needing
/// exabytes: the memory check counted the batch asked for, not the one the data allows.
/// (This replaces hostile_runs.rs's test that such a batch is refused; which field a
/// refusal names is config.rs's `the_memory_check_names_the_field_that_dominates`.)
#[test]
fn a_batch_above_the_training_set_trains_on_the_whole_set() {
    let tmp = tempfile::tempdir().unwrap();
    let o = train_with(tmp.path(), &["training.batch_size=9223372036854775807"]);
    assert_ok(&o);
    let metrics = std::fs::read_to_string(tmp.path().join("run/metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
}

/// `phase1.epochs = 0` (kept: the Python estimator offers it) freezes the initial logits'
/// argmax, a uniform draw from the pool: it says so, and the mixed network has a random
/// mix, not one activation.
#[test]
fn zero_phase1_epochs_keeps_the_initial_random_choices_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let o = train_with(
        tmp.path(),
        &["phase1.epochs=0", "model.hidden=[64]", "phase2.epochs=1"],
    );
    assert_ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("phase1: 0 epochs, so no selection") && stderr.contains("uniformly"),
        "{stderr}"
    );
    let summary = summary_json(&tmp.path().join("run"));
    assert_eq!(summary["phases"][0]["epochs"], 0);
    let layer = summary["final_choices"][0].as_array().unwrap();
    let used = layer.iter().filter(|c| c[1].as_u64().unwrap() > 0).count();
    assert!(used >= 4, "64 neurons over 6 activations: {layer:?}");
}

fn sweep_config(tmp: &Path, sweep: &str) -> std::path::PathBuf {
    let data = tmp.join("data");
    synthetic_data(&data, 120, 40);
    write_config(
        tmp,
        "sweep.toml",
        &format!(
            "[sweep]\n{sweep}\n[phase1]\nepochs = 1\nlr = 0.01\n[phase2]\nepochs = 1\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nclasses = 2\ndir = {:?}\n",
            s(&data)
        ),
    )
}

/// `seeds = [0, 0]` trained cell a01-relu-s0 once and "skipped" it as finished the
/// second time, exit 0; a repeated architecture trained the same network twice.
#[test]
fn a_sweep_with_a_repeated_seed_or_architecture_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (sweep, needle) in [
        (
            "architectures = [[4]]\nmethods = [\"relu\"]\nseeds = [3, 0, 3]",
            "sweep.seeds[2]: duplicate seed 3",
        ),
        (
            "architectures = [[4], [4]]\nmethods = [\"relu\"]",
            "sweep.architectures[1]: [4] repeats sweep.architectures[0]",
        ),
    ] {
        let cfg = sweep_config(tmp.path(), sweep);
        let out = tmp.path().join("out");
        let o = cli(&["sweep", "--config", s(&cfg), "--out", s(&out)]);
        assert_one_line_error(&o, &[needle]);
        assert!(!out.exists());
    }
}

/// `--shard 1/2` of a one-cell sweep trained nothing, wrote an empty results.csv and
/// exited 0.
#[test]
fn a_shard_without_cells_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = sweep_config(tmp.path(), "architectures = [[4]]\nmethods = [\"relu\"]");
    let out = tmp.path().join("out");
    let o = cli(&[
        "sweep",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--shard",
        "1/2",
    ]);
    assert_one_line_error(
        &o,
        &["--shard 1/2", "1 selected cell(s)", "at most 1 shards"],
    );
    assert!(!out.exists());
}
