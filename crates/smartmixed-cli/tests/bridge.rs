//! The PyTorch bridge (`python/smartmixed_torch.py`) builds the exported network from
//! PyTorch's own modules and matches `eval`'s test accuracy on the same images, image for
//! image; its state_dict is the export's tensors by name, and a module written back with
//! `to_export` is loaded by the runtime with the module's logits. Needs a Python with torch
//! and safetensors: `python3`, or the one `SMARTMIXED_TORCH_PYTHON` names (e.g. the venv
//! `benches/compare/run.sh` makes). Without one each test writes a `SKIPPED` line past the
//! harness's capture and passes, since CI does not install torch;
//! `SMARTMIXED_REQUIRE_TORCH=1` makes it fail instead.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{cli_ok, export, root};
use smartmixed_infer::{Model, Scratch};
use smartmixed_train::data::Dataset;

/// A Python with torch and safetensors, or `None` after saying on the terminal (not in
/// the captured output, which `cargo test` shows only for failures) that `test` skipped.
/// Under `SMARTMIXED_REQUIRE_TORCH=1` a missing torch fails the test instead.
fn torch_python(test: &str) -> Option<String> {
    let python = std::env::var("SMARTMIXED_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import torch, safetensors"])
        .output();
    if probe.is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    assert!(
        std::env::var_os("SMARTMIXED_REQUIRE_TORCH").is_none(),
        "SMARTMIXED_REQUIRE_TORCH is set but `{python}` has no torch and safetensors"
    );
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: `{python}` has no torch and safetensors (set SMARTMIXED_TORCH_PYTHON)"
    );
    None
}

/// A tiny trained run exported into `tmp/model`.
fn tiny_model(tmp: &Path) -> std::path::PathBuf {
    let (run, model) = (tmp.join("run"), tmp.join("model"));
    cli_ok(&[
        "train",
        "--config",
        "configs/tiny.toml",
        "--out",
        run.to_str().unwrap(),
    ]);
    export(&run, &model);
    model
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
    let Some(python) = torch_python("the_pytorch_bridge_matches_evals_accuracy") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
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

/// Little-endian f32 bytes.
fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn the_bridge_loads_the_exports_tensors_by_name_and_writes_back_what_the_runtime_loads() {
    let test =
        "the_bridge_loads_the_exports_tensors_by_name_and_writes_back_what_the_runtime_loads";
    let Some(python) = torch_python(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let tuned = tmp.path().join("tuned");
    let original = Model::load_dir(&model).unwrap();
    // The first 64 MNIST test images as raw pixels 0-255 (the runtime and the bridge both
    // preprocess them).
    let n = 64;
    let test = Dataset::load_test(&root().join("data/mnist"), 10).unwrap();
    let raw: Vec<f32> = (0..n).flat_map(|i| test.raw(i)).collect();
    assert_eq!(raw.len(), n * original.input_size());
    std::fs::write(tmp.path().join("raw.f32"), le(&raw)).unwrap();
    // Loads the export's own file into the module by name, fine-tunes it with a few SGD
    // steps, writes it back and saves the module's logits on the raw rows.
    let script = r#"
import sys, torch, smartmixed_torch as st
from safetensors.torch import load_file
model, tuned, tmp = sys.argv[1:4]
net = st.load(model)
file = load_file(model + "/model.safetensors")
assert sorted(net.state_dict()) == sorted(file), (sorted(net.state_dict()), sorted(file))
net.load_state_dict(file)
torch.manual_seed(0)
opt = torch.optim.SGD(net.parameters(), lr=0.05)
x = torch.rand(32, net.inputs)
y = torch.randint(0, len(net.class_names), (32,))
net.train()
for _ in range(3):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
net.eval()
net.to_export(tuned)
try:
    net.to_export(tuned)
    sys.exit("to_export replaced a model without force=True")
except FileExistsError:
    pass
raw = torch.frombuffer(bytearray(open(tmp + "/raw.f32", "rb").read()), dtype=torch.float32)
with torch.no_grad():
    logits = net.forward_raw(raw.reshape(-1, net.inputs))
open(tmp + "/torch.f32", "wb").write(logits.numpy().astype("<f4").tobytes())
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(&model)
        .arg(&tuned)
        .arg(tmp.path())
        .env("PYTHONPATH", root().join("python"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<f32> = std::fs::read(tmp.path().join("torch.f32"))
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let classes = original.classes();
    assert_eq!(theirs.len(), n * classes);
    let logits = |m: &Model| {
        let mut out = vec![0.0; n * classes];
        m.forward_raw(&raw, n, &mut Scratch::new(), &mut out)
            .unwrap();
        out
    };
    let ours = logits(&Model::load_dir(&tuned).unwrap());
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "runtime vs module logits differ by {worst}");
    // The fine-tuning changed the model: the round trip carried new weights.
    let moved = logits(&original)
        .iter()
        .zip(&ours)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        moved > 1e-3,
        "fine-tuned logits equal the original's ({moved})"
    );
}

#[test]
fn the_bridge_script_prints_its_usage_for_help() {
    let Some(python) = torch_python("the_bridge_script_prints_its_usage_for_help") else {
        return;
    };
    let out = Command::new(&python)
        .arg(root().join("python/smartmixed_torch.py"))
        .arg("--help")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("usage:") && stdout.contains("labels"),
        "{stdout}"
    );
}

/// Without torch a bridge test says SKIPPED where `cargo test` shows it (its captured
/// output is dropped when it passes), and fails under `SMARTMIXED_REQUIRE_TORCH=1`: run
/// as a child of this very test binary with a Python that does not exist.
#[test]
fn a_bridge_test_without_torch_says_skipped_or_fails_when_torch_is_required() {
    let name = "the_bridge_script_prints_its_usage_for_help";
    let child = |require: bool| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", name, "--test-threads=1"])
            .env("SMARTMIXED_TORCH_PYTHON", "/nonexistent/python3")
            .env_remove("SMARTMIXED_REQUIRE_TORCH");
        if require {
            c.env("SMARTMIXED_REQUIRE_TORCH", "1");
        }
        c.output().unwrap()
    };
    let out = child(false);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("SKIPPED {name}")), "{text}");
    assert!(text.contains("1 passed"), "the child ran the test: {text}");
    let out = child(true);
    assert!(
        !out.status.success(),
        "SMARTMIXED_REQUIRE_TORCH=1 did not fail"
    );
}
