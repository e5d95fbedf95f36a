//! Hostile inputs to runs, resume, memory and threads (issue 18, items 6, 9 and 10, and the
//! run messages that named the wrong thing): each ends in a one-line error naming the file
//! and the field, or a warning and a sane run; never a silent continuation, an abort or a
//! directory that nothing accepts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Safetensors `bytes` with their `__metadata__` strings edited by `edit`.
fn edit_metadata_of(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    edit_safetensors_header(bytes, |h| edit(h["__metadata__"].as_object_mut().unwrap()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `train` of `config` (text) on synthetic data in `tmp/data`, into `tmp/run`, with `extra`
/// arguments.
fn train_with(tmp: &Path, config: &str, extra: &[&str]) -> (Output, PathBuf) {
    let data = tmp.join("data");
    if !data.exists() {
        synthetic_data(&data, 200, 60);
    }
    let cfg = write_config(tmp, "c.toml", config);
    let out = tmp.join("run");
    let mut args = vec![
        "train",
        "--config",
        s(&cfg),
        "--data-dir",
        s(&data),
        "--out",
        s(&out),
    ];
    args.extend_from_slice(extra);
    (cli(&args), out)
}

fn small_config() -> String {
    format!("{SMALL}[data]\nclasses = 2\n")
}

/// A run of 1000 phase-1 epochs interrupted (Ctrl-C) after its second epoch: its run
/// directory and data directory.
#[cfg(unix)]
fn interrupted_run(tmp: &Path) -> (PathBuf, PathBuf) {
    let data = tmp.join("data");
    synthetic_data(&data, 200, 60);
    let cfg = write_config(
        tmp,
        "long.toml",
        &small_config().replace("[phase1]\nepochs = 1", "[phase1]\nepochs = 1000"),
    );
    let out = tmp.join("run");
    let args = [
        "train",
        "--config",
        s(&cfg),
        "--data-dir",
        s(&data),
        "--out",
        s(&out),
    ];
    let o = interrupt_after(&args, &out.join("metrics.csv"), 3);
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.join("state.safetensors").is_file());
    (out, data)
}

/// Item 6: a state whose `epochs_done` was edited to 2^64-1 (budget 1000) exited 0 and
/// recorded 18446744073709551615 epochs in summary.json.
#[cfg(unix)]
#[test]
fn a_hand_edited_epochs_done_is_refused_naming_the_state_file_and_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = interrupted_run(tmp.path());
    let path = run.join("state.safetensors");
    let edited = edit_metadata_of(&std::fs::read(&path).unwrap(), |m| {
        let mut p: serde_json::Value = serde_json::from_str(m["resume"].as_str().unwrap()).unwrap();
        p["epochs_done"] = serde_json::json!(u64::MAX);
        m.insert("resume".into(), p.to_string().into());
    });
    std::fs::write(&path, &edited).unwrap();
    let o = cli(&["train", "--resume", s(&run)]);
    assert_final_error_line(
        &o,
        &[
            "state.safetensors",
            "`epochs_done` is 18446744073709551615",
            "1 to 1000",
            "phase1.epochs",
        ],
    );
    assert!(!run.join("summary.json").exists());
    assert_eq!(
        std::fs::read(&path).unwrap(),
        edited,
        "the state was touched"
    );
}

/// Item 6: `train --resume --data-dir OTHER` continued on other data without a word.
#[cfg(unix)]
#[test]
fn a_resume_with_another_data_dir_is_refused_saying_what_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = interrupted_run(tmp.path());
    let other = tmp.path().join("other");
    synthetic_data(&other, 180, 60);
    let state = std::fs::read(run.join("state.safetensors")).unwrap();
    let o = cli(&["train", "--resume", s(&run), "--data-dir", s(&other)]);
    assert_final_error_line(
        &o,
        &[
            "state.safetensors",
            "other data",
            "train items: ",
            "then",
            "now",
            "the run's own data",
        ],
    );
    assert_eq!(std::fs::read(run.join("state.safetensors")).unwrap(), state);
}

/// `--seed -1` said "invalid digit found in string".
#[test]
fn a_negative_seed_is_refused_naming_the_range() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for args in [
        ["--seed", "-1"].as_slice(),
        &["--seed=-1"],
        &["--seed", "x"],
    ] {
        let o = cli(&[&["train", "--out", s(&out)], args].concat());
        assert_one_line_error(
            &o,
            &[
                "--seed",
                "is not a seed",
                "whole number from 0 to 9223372036854775807",
            ],
        );
        assert!(!String::from_utf8_lossy(&o.stderr).contains("invalid digit"));
    }
    assert!(!out.exists());
}

/// Item 10: `--threads 1024` on 2 cores started 1024 threads. Now it warns and trains on
/// 4 per core (summary.json records the threads that trained).
#[test]
fn threads_past_four_per_core_are_capped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, run) = train_with(tmp.path(), &small_config(), &["--threads", "1024"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let cores = std::thread::available_parallelism().unwrap().get();
    let cap = (4 * cores).min(1024);
    if cap < 1024 {
        assert!(
            stderr.contains("warning: --threads 1024")
                && stderr.contains(&format!("training on {cap} threads")),
            "{stderr}"
        );
    }
    assert_eq!(summary_json(&run)["threads"], cap);
}

/// Item 9: `hidden = [131072]` passed the memory check (total RAM) under a 4 GiB
/// address-space limit, trained, then aborted writing its state. The check now uses what
/// the process may still allocate, so it is refused before a run directory exists.
#[test]
fn a_config_that_fits_the_machine_but_not_the_address_space_is_refused() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: no `prlimit` on this machine");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 200, 60);
    let cfg = write_config(
        tmp.path(),
        "c.toml",
        &small_config().replace("hidden = [16, 8]", "hidden = [131072]"),
    );
    let out = tmp.path().join("run");
    let o = Command::new("prlimit")
        .args([
            "--as=4294967296",
            "--",
            env!("CARGO_BIN_EXE_smartmixed-cli"),
        ])
        .args([
            "train",
            "--config",
            s(&cfg),
            "--data-dir",
            s(&data),
            "--out",
            s(&out),
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert_one_line_error(
        &o,
        &["c.toml", "model.hidden", "needs about", "GB of memory"],
    );
    assert!(!out.exists(), "the run directory was created");
}

/// Item 9: a run killed before its first epoch ended left a directory that neither
/// `--out` ("already holds a run") nor `--resume` (no state) accepted. `--resume` now says
/// why and what to do, and `--out` starts the run again in place.
#[cfg(unix)]
#[test]
fn a_run_killed_in_its_first_epoch_restarts_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 3000, 60);
    // Batch 1 on 1024-wide layers: the first epoch takes seconds, the kill comes first.
    let slow = small_config()
        .replace("hidden = [16, 8]", "hidden = [1024, 1024]")
        .replace("batch_size = 16", "batch_size = 1");
    let cfg = write_config(tmp.path(), "slow.toml", &slow);
    let out = tmp.path().join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args([
            "train",
            "--config",
            s(&cfg),
            "--data-dir",
            s(&data),
            "--out",
            s(&out),
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("config.toml").is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    assert!(
        !out.join("state.safetensors").exists(),
        "the first epoch finished before the kill; the test needs a slower epoch"
    );
    let o = cli(&["train", "--resume", s(&out)]);
    assert_one_line_error(&o, &["run", "never completed an epoch", "--out"]);
    let (o, run) = train_with(tmp.path(), &small_config(), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("never completed an epoch; starting it again"),
        "{stderr}"
    );
    assert_eq!(run, out);
    let summary = summary_json(&run);
    assert_eq!(summary["architecture"], serde_json::json!([30, 16, 8, 2]));
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}"); // header, phase1 1, phase2 1
                                                         // A run that completed is no longer restarted.
    let (o, _) = train_with(tmp.path(), &small_config(), &[]);
    assert_one_line_error(&o, &["already holds a run", "--out"]);
    // What an abort while writing the first state leaves (the issue's `prlimit` run):
    // epoch rows and checkpoints but no state (and no summary). Restarted too.
    std::fs::remove_file(run.join("summary.json")).unwrap();
    assert!(!run.join("state.safetensors").exists());
    let (o, _) = train_with(tmp.path(), &small_config(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "{metrics}");
}

/// An unfinished run (no summary.json) was exported with no input description: a table
/// model then applied none of training's standardisation (its manifest said pixels / 255),
/// exit 0. Now the checkpoint records the description, the export says the run is
/// unfinished, and an older checkpoint without one is refused for a table run.
#[test]
fn an_unfinished_table_run_exports_with_its_preprocessing_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let mut table = String::from("a,b,label\n");
    for i in 0..80 {
        let c = i % 2;
        let row = format!(
            "{},{},{}\n",
            50.0 + 3.0 * c as f64 + 0.1 * i as f64,
            7 * i,
            ["no", "yes"][c]
        );
        table.push_str(&row);
    }
    let data = tmp.path().join("t.csv");
    std::fs::write(&data, table).unwrap();
    let cfg = write_config(
        tmp.path(),
        "t.toml",
        &format!("{SMALL}[data]\nfile = {:?}\nlabel = \"label\"\n", s(&data)),
    );
    let run = tmp.path().join("run");
    let o = cli(&["train", "--config", s(&cfg), "--out", s(&run)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let finished = tmp.path().join("finished");
    export(&run, &finished);
    let manifest = |dir: &Path| std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    assert!(
        manifest(&finished).contains("mean = ["),
        "{}",
        manifest(&finished)
    );

    std::fs::remove_file(run.join("summary.json")).unwrap();
    let unfinished = tmp.path().join("unfinished");
    let o = cli(&["export", "--run", s(&run), "--out", s(&unfinished)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("note:") && err.contains("has not finished"),
        "{err}"
    );
    assert_eq!(manifest(&unfinished), manifest(&finished));

    // A checkpoint without the description (as runs before it wrote them).
    let ckpt = run.join("phase2-best.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(
        &ckpt,
        edit_metadata_of(&bytes, |m| {
            m.remove("description").unwrap();
        }),
    )
    .unwrap();
    let o = cli(&[
        "export",
        "--run",
        s(&run),
        "--out",
        s(&tmp.path().join("old")),
    ]);
    assert_one_line_error(&o, &["has not finished", "standardised table", "--resume"]);
    assert!(!tmp.path().join("old/manifest.toml").exists());
}
