//! The PyTorch bridge (`python/smartmixed_torch.py`) builds the exported network from
//! PyTorch's own modules and matches `eval`'s test accuracy on the same images, image for
//! image. Needs a Python with torch and safetensors: `python3`, or the one
//! `SMARTMIXED_TORCH_PYTHON` names (e.g. the venv `benches/compare/run.sh` makes); without
//! one the test prints why and passes, since CI does not install torch.

mod common;

use std::process::Command;

use common::{cli_ok, export, root};
use smartmixed_train::data::Dataset;

fn torch_python() -> Option<String> {
    let python = std::env::var("SMARTMIXED_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import torch, safetensors"])
        .output();
    probe.is_ok_and(|o| o.status.success()).then_some(python)
}

/// `(correct, total)` from a line `... accuracy: X% (correct/total)`.
fn counts(out: &str, prefix: &str) -> (usize, usize) {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {out}"));
    let inner = line.rsplit('(').next().unwrap().trim_end_matches(')');
    let (c, n) = inner.split_once('/').unwrap();
    (c.parse().unwrap(), n.parse().unwrap())
}

#[test]
fn the_pytorch_bridge_matches_evals_accuracy() {
    let Some(python) = torch_python() else {
        println!("SKIPPED the_pytorch_bridge_matches_evals_accuracy: no Python with torch and safetensors (set SMARTMIXED_TORCH_PYTHON)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (run, model) = (tmp.path().join("run"), tmp.path().join("model"));
    cli_ok(&[
        "train",
        "--config",
        "configs/tiny.toml",
        "--out",
        run.to_str().unwrap(),
    ]);
    export(&run, &model);
    let stdout = cli_ok(&["eval", "--model", model.to_str().unwrap()]);
    let ours = counts(&stdout, "test accuracy:");

    // The same test images, raw pixels as f32, for the bridge.
    let test = Dataset::load_test(&root().join("data/mnist"), 10).unwrap();
    let raw: Vec<u8> = (0..test.len())
        .flat_map(|i| test.raw(i))
        .flat_map(f32::to_le_bytes)
        .collect();
    std::fs::write(tmp.path().join("inputs.f32"), raw).unwrap();
    std::fs::write(tmp.path().join("labels.u8"), test.labels()).unwrap();
    let out = Command::new(&python)
        .arg(root().join("python/smartmixed_torch.py"))
        .args([
            &model,
            &tmp.path().join("inputs.f32"),
            &tmp.path().join("labels.u8"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = counts(&String::from_utf8_lossy(&out.stdout), "accuracy:");
    assert_eq!(ours.1, 10_000);
    assert_eq!(ours, theirs, "eval {ours:?}, PyTorch bridge {theirs:?}");
}
