//! Inputs a hostile or careless user gives the binary, one test per defect of the
//! hostile-input issue: each ends in a one-line error (or a quiet exit), never a panic, a
//! hang or damage to files already there.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Defect 2: metrics.csv holding inf, 1e308 or a column of NaN made `report` loop forever.
#[test]
fn report_leaves_out_non_finite_points_instead_of_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _, _) = small_model(tmp.path());
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    let rows = [
        "phase1,1,inf,0.5,0.5,1.0,10.0,0.1,0.0,0.0",
        "phase2,1,1e308,NaN,0.5,1.0,10.0,0.1,0.0,0.0",
        "phase2,2,-1e308,NaN,0.6,1.0,10.0,0.1,0.0,0.0",
    ];
    std::fs::write(
        run.join("metrics.csv"),
        format!("{header}\n{}\n", rows.join("\n")),
    )
    .unwrap();
    let o = cli_within(&["report", s(&run)], Duration::from_secs(60));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    // phase 1: inf left out, validation drawn; phase 2: every train value out of range and
    // every validation value NaN, so no figure at all.
    assert!(
        md.contains("1 non-finite or out-of-range loss values of phase1"),
        "{md}"
    );
    assert!(md.contains("phase2: no finite loss value"), "{md}");
    assert!(run.join("report/fig1-phase1-loss.png").is_file());
    assert!(!run.join("report/fig2-phase2-loss.png").exists());
    // A cell that is not a number is named by line and column.
    std::fs::write(
        run.join("metrics.csv"),
        format!("{header}\nphase1,1,abc,0.5,0.5,1.0,10.0,0.1\n"),
    )
    .unwrap();
    assert_one_line_error(
        &cli(&["report", s(&run)]),
        &[
            "metrics.csv",
            "line 2",
            "train_loss",
            "`abc` is not a number",
        ],
    );
}

/// Defects 3 and 15: a summary.json with `architecture = [784]` or `[]` panicked `report`
/// and `sweep --merge`; `report` created PATH/report before checking PATH.
#[test]
fn report_and_merge_refuse_a_summary_without_widths_and_create_nothing_for_other_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _, _) = small_model(tmp.path());
    let summary = std::fs::read_to_string(run.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let sweep = tmp.path().join("sweep");
    let cell = sweep.join("cells/a01-relu-s0");
    std::fs::create_dir_all(&cell).unwrap();
    for f in ["metrics.csv", "config.toml"] {
        std::fs::copy(run.join(f), cell.join(f)).unwrap();
    }
    for arch in [serde_json::json!([784]), serde_json::json!([])] {
        let mut bad = v.clone();
        bad["architecture"] = arch;
        let text = serde_json::to_string(&bad).unwrap();
        std::fs::write(run.join("summary.json"), &text).unwrap();
        std::fs::write(cell.join("summary.json"), &text).unwrap();
        assert_one_line_error(
            &cli(&["report", s(&run)]),
            &[
                "summary.json",
                "architecture",
                "expected input, hidden and output widths",
            ],
        );
        let merged = tmp.path().join("merged");
        assert_one_line_error(
            &cli(&["sweep", "--merge", s(&sweep), "--out", s(&merged)]),
            &["a01-relu-s0/summary.json", "architecture"],
        );
        assert_one_line_error(
            &cli(&["report", s(&sweep)]),
            &["summary.json", "architecture"],
        );
    }
    let elsewhere = tmp.path().join("not-a-run");
    std::fs::create_dir_all(&elsewhere).unwrap();
    assert_one_line_error(
        &cli(&["report", s(&elsewhere)]),
        &["neither a run directory"],
    );
    assert!(!elsewhere.join("report").exists());
}

/// Defect 4: a 69-byte PNG declaring 100000 x 100000 RGBA aborted on a 40 GB allocation;
/// a damaged PNG printed a Rust struct.
#[test]
fn predict_refuses_huge_and_damaged_images_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = small_model(tmp.path());
    let mut header = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut header, 100_000, 100_000);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap();
    }
    let huge = tmp.path().join("huge.png");
    std::fs::write(&huge, &header).unwrap();
    assert_one_line_error(
        &cli_within(
            &["predict", "--model", s(&model), s(&huge)],
            Duration::from_secs(30),
        ),
        &["huge.png", "100000 x 100000", "at most"],
    );
    let mut good = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut good, 5, 6);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .unwrap()
            .write_image_data(&[7; 30])
            .unwrap();
    }
    let img = tmp.path().join("img.png");
    std::fs::write(&img, &good).unwrap();
    let o = cli(&["predict", "--model", s(&model), s(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let at = good.len() - 20;
    good[at] ^= 0x40;
    std::fs::write(&img, &good).unwrap();
    let o = cli(&["predict", "--model", s(&model), s(&img)]);
    assert_one_line_error(&o, &["img.png", "corrupt PNG"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains('{'));
    // A PGM whose width x height, (2^63 + 15) x 2, wraps around to 30 (the model's input
    // width) in 64-bit arithmetic.
    let wraps = tmp.path().join("wraps.pgm");
    let mut pgm = b"P5 9223372036854775823 2 255\n".to_vec();
    pgm.extend_from_slice(&[9; 30]);
    std::fs::write(&wraps, &pgm).unwrap();
    assert_one_line_error(
        &cli(&["predict", "--model", s(&model), s(&wraps)]),
        &["wraps.pgm", "pixels"],
    );
}

/// Defect 5: `hidden = [1048576, 1048576]` passed validation, grew to 3.2 GB and aborted.
#[test]
fn a_config_too_large_for_memory_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = train_small(tmp.path(), |c| {
        c.replace("hidden = [16, 8]", "hidden = [1048576, 1048576]")
    });
    assert_one_line_error(
        &o,
        &["c.toml", "model.hidden", "needs about", "GB of memory"],
    );
    assert!(!out.exists(), "the run directory was created");
}

/// Defect 6: a closed stdout (`eval ... | head -1`) panicked with exit 101.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, data) = small_model(tmp.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(["eval", "--model", s(&model), "--data-dir", s(&data)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is printed
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        status.success() || status.signal() == Some(libc_sigpipe()),
        "{status:?}: {stderr}"
    );
}

#[cfg(unix)]
fn libc_sigpipe() -> i32 {
    13 // SIGPIPE on every Unix Rust supports
}

/// Defect 7: `export --safetensors DIR` silently replaced a model already there.
#[test]
fn export_refuses_to_replace_a_model_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, model, _) = small_model(tmp.path());
    let before = std::fs::read(model.join("model.safetensors")).unwrap();
    std::fs::write(model.join("manifest.toml"), "mine").unwrap();
    let args = ["export", "--run", s(&run), "--safetensors", s(&model)];
    assert_one_line_error(&cli(&args), &["model", "already holds", "--force"]);
    assert_eq!(std::fs::read(model.join("manifest.toml")).unwrap(), b"mine");
    let mut forced = args.to_vec();
    forced.push("--force");
    let o = cli(&forced);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        before
    );
    assert_ne!(std::fs::read(model.join("manifest.toml")).unwrap(), b"mine");
}

/// Defect 8: a seed or epoch count past TOML's i64 wrote an empty config.toml; epoch sums
/// wrapped around.
#[test]
fn values_config_toml_cannot_hold_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (flag, value) in [
        ("--seed", "9223372036854775808"),
        ("--phase1-epochs", "18446744073709551615"),
        ("--phase2-epochs", "9223372036854775808"),
    ] {
        assert_one_line_error(
            &cli(&["train", "--out", s(&out), flag, value]),
            &[flag.trim_start_matches('-')],
        );
    }
    assert_one_line_error(
        &cli(&[
            "train",
            "--out",
            s(&out),
            "--phase1-epochs",
            "9223372036854775807",
            "--phase2-epochs",
            "9223372036854775807",
        ]),
        &["phase2.epochs", "overflows"],
    );
    assert!(!out.exists());
}

/// Defect 10: re-running `sweep` with an edited sweep file skipped cells trained under
/// the old config and overwrote sweep.toml.
#[test]
fn sweep_refuses_cells_trained_under_another_config() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 120, 40);
    let text = format!(
        "[sweep]\narchitectures = [[6]]\nmethods = [\"relu\"]\nseeds = [0]\n[phase1]\nepochs = 1\nlr = 0.01\n[phase2]\nepochs = 1\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nclasses = 2\ndir = {:?}\n",
        data.display().to_string()
    );
    let cfg = write_config(tmp.path(), "sweep.toml", &text);
    let out = tmp.path().join("sweep");
    let o = cli(&["sweep", "--config", s(&cfg), "--out", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let recorded = std::fs::read_to_string(out.join("sweep.toml")).unwrap();
    write_config(
        tmp.path(),
        "sweep.toml",
        &text.replace("lr = 0.01\n[phase2]", "lr = 0.02\n[phase2]"),
    );
    assert_one_line_error(
        &cli(&["sweep", "--config", s(&cfg), "--out", s(&out)]),
        &["a01-relu-s0", "phase1.lr", "--retrain-changed"],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("sweep.toml")).unwrap(),
        recorded
    );
    let o = cli(&[
        "sweep",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--retrain-changed",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cell = std::fs::read_to_string(out.join("cells/a01-relu-s0/config.toml")).unwrap();
    assert!(cell.contains("lr = 0.02"), "{cell}");
}

/// Defect 11: `train --out DIR` overwrote files a run writes in a directory that was not a
/// run.
#[test]
fn train_refuses_a_directory_holding_files_it_would_write() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("phase1-best.safetensors"), "precious").unwrap();
    let (o, _) = train_small(tmp.path(), |c| c);
    assert_one_line_error(&o, &["run", "phase1-best.safetensors", "--out"]);
    assert_eq!(
        std::fs::read(out.join("phase1-best.safetensors")).unwrap(),
        b"precious"
    );
}

/// Where `name`'s data starts in safetensors `bytes`.
fn tensor_offset(bytes: &[u8], name: &str) -> usize {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize
}

/// Defect 12: NaN weights loaded without complaint (`p = NaN`, 8% accuracy).
#[test]
fn non_finite_weights_are_refused_naming_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, model, data) = small_model(tmp.path());
    let path = model.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = tensor_offset(&bytes, "layers.1.bias") + 4;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert_one_line_error(
        &cli(&["eval", "--model", s(&model), "--data-dir", s(&data)]),
        &["model.safetensors", "layers.1.bias", "NaN", "element 1"],
    );
    let ckpt = run.join("phase2-best.safetensors");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let at = tensor_offset(&bytes, "layers.0.weight");
    bytes[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(&ckpt, &bytes).unwrap();
    let o = cli(&[
        "export",
        "--run",
        s(&run),
        "--safetensors",
        s(&tmp.path().join("again")),
    ]);
    assert_one_line_error(
        &o,
        &["phase2-best.safetensors", "layers.0.weight", "infinite"],
    );
}

/// Defect 13: endless inputs (`/dev/zero`) stop at a limit.
#[cfg(unix)]
#[test]
fn endless_inputs_stop_at_a_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = small_model(tmp.path());
    let limit = Duration::from_secs(30);
    assert_one_line_error(
        &cli_within(&["train", "--config", "/dev/zero"], limit),
        &["/dev/zero", "limit"],
    );
    assert_one_line_error(
        &cli_within(&["predict", "--model", s(&model), "/dev/zero"], limit),
        &["/dev/zero", "byte 2"],
    );
    let zero_model = tmp.path().join("zero");
    std::fs::create_dir_all(&zero_model).unwrap();
    std::fs::copy(
        model.join("manifest.toml"),
        zero_model.join("manifest.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero_model.join("model.safetensors")).unwrap();
    assert_one_line_error(
        &cli_within(&["inspect", "--model", s(&zero_model)], limit),
        &["model.safetensors", "header"],
    );
}

/// Defect 14: an IDX file with 0 images printed nothing and exited 0; an empty test set
/// scored "0.00%".
#[test]
fn empty_data_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, data) = small_model(tmp.path());
    let empty = tmp.path().join("empty-idx3-ubyte");
    std::fs::write(&empty, idx_bytes(&[0, 6, 5], &[])).unwrap();
    assert_one_line_error(
        &cli(&["predict", "--model", s(&model), s(&empty)]),
        &["empty-idx3-ubyte", "0 images"],
    );
    std::fs::write(
        data.join("t10k-images-idx3-ubyte"),
        idx_bytes(&[0, 6, 5], &[]),
    )
    .unwrap();
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), idx_bytes(&[0], &[])).unwrap();
    assert_one_line_error(
        &cli(&["eval", "--model", s(&model), "--data-dir", s(&data)]),
        &["t10k-images-idx3-ubyte", "0 images"],
    );
    let other = tempfile::tempdir().unwrap();
    let other_data = other.path().join("data");
    synthetic_data(&other_data, 100, 10);
    std::fs::copy(
        data.join("t10k-images-idx3-ubyte"),
        other_data.join("t10k-images-idx3-ubyte"),
    )
    .unwrap();
    assert_one_line_error(
        &train_small_on(other.path(), &other_data),
        &["t10k-images-idx3-ubyte", "0 images"],
    );
}

/// The unhelpful messages of the issue, each now saying what is wrong once.
#[test]
fn messages_name_what_is_wrong_once() {
    let tmp = tempfile::tempdir().unwrap();
    // A missing file's cause is printed once.
    let o = cli(&["inspect", "--model", s(&tmp.path().join("nope"))]);
    assert_one_line_error(&o, &["nope", "No such file"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr)
            .matches("os error 2")
            .count(),
        1
    );
    // A missing argument is named; no subcommand prints the help.
    assert_one_line_error(&cli(&["export"]), &["--run", "--out"]);
    let o = cli(&[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("Commands:"));
    // --resume on a directory that is not a run.
    assert_one_line_error(
        &cli(&["train", "--resume", s(tmp.path())]),
        &["not a run directory"],
    );
    // A config cut short has a line and a reason.
    let cut = write_config(tmp.path(), "cut.toml", "[model]\nhidden =");
    assert_one_line_error(
        &cli(&["train", "--config", s(&cut)]),
        &["cut.toml", "line 2"],
    );
    // data.dir a file; a directory where a data file should be.
    let file = write_config(tmp.path(), "file", "x");
    assert_one_line_error(
        &cli(&["train", "--data-dir", s(&file)]),
        &["data.dir is a file"],
    );
    let data = tmp.path().join("data");
    synthetic_data(&data, 100, 10);
    std::fs::remove_file(data.join("train-labels-idx1-ubyte")).unwrap();
    std::fs::create_dir_all(data.join("train-labels-idx1-ubyte")).unwrap();
    assert_one_line_error(
        &train_small_on(tmp.path(), &data),
        &["train-labels-idx1-ubyte", "is a directory"],
    );
    // eval reads only the test files: a training label out of the model's range is no
    // concern of it.
    let (_, model, data) = small_model(&tmp.path().join("m"));
    std::fs::write(
        data.join("train-labels-idx1-ubyte"),
        idx_bytes(&[200], &[7; 200]),
    )
    .unwrap();
    let o = cli(&["eval", "--model", s(&model), "--data-dir", s(&data)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A validation fraction too small names itself, not the training set.
    let other = tempfile::tempdir().unwrap();
    let (o, _) = train_small(other.path(), |c| {
        c.replace(
            "classes = 2\n",
            "classes = 2\nvalidation_fraction = 0.0001\n",
        )
    });
    assert_one_line_error(
        &o,
        &["data.validation_fraction = 0.0001", "no validation item"],
    );
}
