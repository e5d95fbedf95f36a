//! Helpers shared by the binary's test files: running it, checking one-line errors,
//! synthetic IDX data and small training runs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run smartmixed-cli")
}

/// Runs the binary with arguments given as anything path-like, asserting success; returns
/// its stdout.
pub fn cli_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run smartmixed-cli");
    assert!(
        out.status.success(),
        "{:?}: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exports `run`'s best checkpoint into `model`, asserting success.
pub fn export(run: &Path, model: &Path) {
    cli_ok(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--safetensors",
        model.to_str().unwrap(),
    ]);
}

/// A finished run's summary.json, as JSON.
pub fn summary_json(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Asserts a failed run with exactly one line on stderr that contains every `needle`.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {}", lines[0]);
    }
}

/// For failures after training started (progress lines precede the error): the last line
/// is the one-line error.
pub fn assert_final_error_line(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.matches("error").count(), 1, "{stderr}");
    for n in needles {
        assert!(last.contains(n), "`{n}` not in: {last}");
    }
}

pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

/// A synthetic IDX data set of 6x5 images (two classes: bright top or bright bottom), raw.
pub fn synthetic_data(dir: &Path, train: u32, test: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for (stem, n) in [("train", train), ("t10k", test)] {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = (i % 2) as u8;
            for p in 0..30u32 {
                let top = p < 15;
                let bright = (top && label == 0) || (!top && label == 1);
                pixels.push(if bright {
                    200 + (i * 7 + p) as u8 % 50
                } else {
                    (i * 13 + p * 3) as u8 % 60
                });
            }
            labels.push(label);
        }
        std::fs::write(
            dir.join(format!("{stem}-images-idx3-ubyte")),
            idx_bytes(&[n, 6, 5], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{stem}-labels-idx1-ubyte")),
            idx_bytes(&[n], &labels),
        )
        .unwrap();
    }
}

pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

pub const SMALL: &str = "[model]\nhidden = [16, 8]\n[phase1]\nepochs = 1\nlr = 0.01\n[phase2]\nepochs = 1\nlr = 0.01\n[training]\nbatch_size = 16\n";

/// `train` of the small config on the data already in `data` (which [`train_small`]
/// would regenerate), into `tmp/run`.
pub fn train_small_on(tmp: &Path, data: &Path) -> Output {
    let cfg = write_config(tmp, "own.toml", &format!("{SMALL}[data]\nclasses = 2\n"));
    let (cfg, data, out) = (
        cfg.to_str().unwrap(),
        data.to_str().unwrap(),
        tmp.join("run"),
    );
    cli(&[
        "train",
        "--config",
        cfg,
        "--data-dir",
        data,
        "--out",
        out.to_str().unwrap(),
    ])
}

/// Trains the small config (edited by `edit`) on synthetic 6x5 images into `tmp/run`.
pub fn train_small(tmp: &Path, edit: impl Fn(String) -> String) -> (Output, PathBuf) {
    let data = tmp.join("data");
    synthetic_data(&data, 200, 60);
    let cfg = write_config(
        tmp,
        "c.toml",
        &edit(format!("{SMALL}[data]\nclasses = 2\n")),
    );
    let out = tmp.join("run");
    let o = cli(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    (o, out)
}

/// Runs the binary with `args`, waits until `metrics` (a metrics.csv it writes) holds
/// `rows` lines, then interrupts it as Ctrl-C does; returns what it printed.
#[cfg(unix)]
pub fn interrupt_after(args: &[&str], metrics: &Path, rows: usize) -> Output {
    use std::time::{Duration, Instant};
    let child = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run smartmixed-cli");
    let start = Instant::now();
    while std::fs::read_to_string(metrics)
        .map(|m| m.lines().count() < rows)
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no epoch finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    child.wait_with_output().expect("wait for smartmixed-cli")
}

/// Runs the binary, killing it (and failing) if it has not finished within `limit`.
pub fn cli_within(args: &[&str], limit: std::time::Duration) -> Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smartmixed-cli");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!(
                "`smartmixed-cli {}` hangs (killed after {limit:?})",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Safetensors `bytes` with their JSON header edited by `edit` (rewritten and padded to
/// 8 bytes; tensor offsets are relative to the data, which stays as it is).
pub fn edit_safetensors_header(
    bytes: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header.as_object_mut().unwrap());
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// [`train_small`]'s run, exported: (run dir, model dir, data dir).
pub fn small_model(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (o, run) = train_small(tmp, |c| c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = tmp.join("model");
    export(&run, &model);
    (run, model, tmp.join("data"))
}

/// The number after `prefix` in `text` (up to the next `%`).
pub fn percent_after(text: &str, prefix: &str) -> f64 {
    let at = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
        + prefix.len();
    text[at..]
        .split('%')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
