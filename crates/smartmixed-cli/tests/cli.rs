//! The real binary end to end: a small MNIST run that must learn, the run directory's
//! files, and every kind of bad input giving a one-line error, a non-zero exit, no panic
//! and no damage to files already in the output directory.

mod common;

use std::path::{Path, PathBuf};

use common::*;

#[test]
fn tiny_mnist_run_learns_and_writes_its_run_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = cli(&[
        "train",
        "--config",
        "configs/tiny.toml",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("Phase 1 (Selective)") && stdout.contains("Phase 2 (Mixed)"),
        "{stdout}"
    );
    for f in [
        "config.toml",
        "metrics.csv",
        "choices.csv",
        "summary.json",
        "phase1-best.safetensors",
        "phase2-best.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let phases = summary["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    // 2700 training images, 2 + 2 epochs of a 784-64-32-10 network: the stated accuracy.
    let test_acc = phases[1]["test_accuracy"].as_f64().unwrap();
    assert!(test_acc >= 0.85, "phase 2 test accuracy {test_acc}");
    assert_eq!(
        summary["architecture"],
        serde_json::json!([784, 64, 32, 10])
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 1 + 4, "{metrics}");
    let choices = std::fs::read_to_string(out.join("choices.csv")).unwrap();
    // 2 epochs x 2 layers x 6 activations; each layer's counts sum to its width.
    assert_eq!(choices.lines().count(), 1 + 2 * 2 * 6);
    let layer1: usize = choices
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("2,1,"))
        .map(|l| l.rsplit(',').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(layer1, 64);
    // The run directory is never overwritten.
    let again = cli(&[
        "train",
        "--config",
        "configs/tiny.toml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&again, &["already holds a run"]);
}

#[test]
fn input_width_comes_from_the_data_and_plugin_activations_train() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = train_small(tmp.path(), |c| {
        c.replace(
            "hidden = [16, 8]",
            "hidden = [16, 8]\npool = [\"relu\", \"silu\", \"mish\"]",
        )
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["architecture"], serde_json::json!([30, 16, 8, 2]));
    let choices = std::fs::read_to_string(out.join("choices.csv")).unwrap();
    assert!(
        choices.contains(",silu,") && choices.contains(",mish,"),
        "{choices}"
    );
}

#[test]
fn fixed_baseline_trains_one_phase() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = train_small(tmp.path(), |c| {
        c.replace(
            "hidden = [16, 8]",
            "hidden = [16, 8]\nmode = \"fixed\"\nactivation = \"tanh\"",
        )
    });
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Fixed baseline"));
    assert!(out.join("fixed-best.safetensors").is_file());
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.starts_with("fixed,")).count(),
        2
    );
}

#[test]
fn bad_configs_are_one_line_errors_naming_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "malformed.toml",
            "[model\nhidden = [1]\n",
            &["malformed.toml", "line 1"],
        ),
        (
            "unknown-key.toml",
            "[model]\nhidden = [4]\ncolour = 3\n",
            &["unknown-key.toml", "line 3", "colour"],
        ),
        (
            "unknown-act.toml",
            "[model]\nhidden = [4]\npool = [\"relu\", \"swishy\"]\n",
            &["unknown-act.toml", "model.pool[1]", "swishy", "leaky_relu"],
        ),
        (
            "zero-width.toml",
            "[model]\nhidden = [4, 0]\n",
            &["zero-width.toml", "model.hidden[1]"],
        ),
        (
            "bad-tau.toml",
            "[model]\nhidden = [4]\n[phase1]\nepochs = 1\ntemperature = -1.0\n",
            &["phase1.temperature"],
        ),
    ];
    for (name, text, needles) in cases {
        let p = write_config(tmp.path(), name, text);
        assert_one_line_error(
            &cli(&[
                "train",
                "--config",
                p.to_str().unwrap(),
                "--out",
                tmp.path().join("o").to_str().unwrap(),
            ]),
            needles,
        );
    }
    assert_one_line_error(
        &cli(&["train", "--config", "/nonexistent/x.toml"]),
        &["/nonexistent/x.toml"],
    );
    let p = write_config(
        tmp.path(),
        "inputs.toml",
        "[model]\nhidden = [4]\ninputs = 100\n",
    );
    assert_one_line_error(
        &cli(&[
            "train",
            "--config",
            p.to_str().unwrap(),
            "--train-limit",
            "500",
            "--out",
            tmp.path().join("o2").to_str().unwrap(),
        ]),
        &["model.inputs = 100", "784"],
    );
    assert_one_line_error(
        &cli(&["train", "--phase1-epochs", "0", "--phase2-epochs", "0"]),
        &["with command-line overrides", "phase1.epochs"],
    );
}

#[test]
fn bad_data_is_a_one_line_error_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "c.toml",
        &format!("{SMALL}[data]\nclasses = 2\n"),
    );
    let run = |data: &Path| {
        cli(&[
            "train",
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            tmp.path().join("o").to_str().unwrap(),
        ])
    };
    assert_one_line_error(
        &run(&tmp.path().join("no-such-dir")),
        &["no-such-dir", "does not exist"],
    );

    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        synthetic_data(&d, 40, 10);
        d
    };
    let d = fresh("truncated");
    let f = d.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 7]).unwrap();
    assert_one_line_error(&run(&d), &["train-images-idx3-ubyte", "byte", "truncated"]);

    let d = fresh("magic");
    let f = d.join("t10k-images-idx3-ubyte");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[2] = 0x0d;
    std::fs::write(&f, &bytes).unwrap();
    assert_one_line_error(&run(&d), &["t10k-images-idx3-ubyte", "byte 2", "0x0d"]);

    let d = fresh("labels");
    let f = d.join("train-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[8 + 5] = 7;
    std::fs::write(&f, &bytes).unwrap();
    assert_one_line_error(
        &run(&d),
        &["train-labels-idx1-ubyte", "byte 13", "label 7 out of range"],
    );

    let d = fresh("gzip");
    std::fs::write(
        d.join("train-labels-idx1-ubyte.gz"),
        [0x1f, 0x8b, 8, 0, 1, 2, 3],
    )
    .unwrap();
    assert_one_line_error(&run(&d), &["train-labels-idx1-ubyte.gz", "corrupt gzip"]);

    let d = fresh("missing");
    std::fs::remove_file(d.join("t10k-labels-idx1-ubyte")).unwrap();
    assert_one_line_error(&run(&d), &["missing", "t10k-labels-idx1-ubyte"]);
}

#[test]
fn unwritable_output_is_an_error_and_existing_files_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 40, 10);
    let cfg = write_config(
        tmp.path(),
        "c.toml",
        &format!("{SMALL}[data]\nclasses = 2\n"),
    );
    // A file where the run directory should go.
    let blocker = tmp.path().join("blocker");
    std::fs::write(&blocker, b"keep me").unwrap();
    let o = cli(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        blocker.join("run").to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["blocker"]);
    assert_eq!(std::fs::read(&blocker).unwrap(), b"keep me");
    // A directory holding an earlier run is refused, its files untouched.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("metrics.csv"), b"earlier").unwrap();
    let o = cli(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        old.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["already holds a run"]);
    assert_eq!(std::fs::read(old.join("metrics.csv")).unwrap(), b"earlier");
}

#[test]
fn a_diverging_loss_stops_clearly_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = train_small(tmp.path(), |c| {
        c.replace(
            "[phase2]\nepochs = 1\nlr = 0.01",
            "[phase2]\nepochs = 3\nlr = 1e30",
        )
    });
    assert_final_error_line(&o, &["phase2 epoch", "loss is", "stopped"]);
    // The kept checkpoint is phase 1's best, from before the divergence: it loads (export
    // refuses non-finite weights) and classifies the synthetic data as training did.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let phase1: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("phase1,"))
        .collect();
    assert_eq!(phase1.len(), 1, "{metrics}");
    let model = tmp.path().join("model");
    let o = cli(&[
        "export",
        "--run",
        out.to_str().unwrap(),
        "--safetensors",
        model.to_str().unwrap(),
        "--phase",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        tmp.path().join("data").to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let accuracy: f64 = stdout
        .split("test accuracy: ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(accuracy > 90.0, "{stdout}");
    assert!(
        !out.join("phase2-best.safetensors").exists() || {
            let o = cli(&[
                "export",
                "--run",
                out.to_str().unwrap(),
                "--safetensors",
                tmp.path().join("m2").to_str().unwrap(),
            ]);
            o.status.success()
        }
    );
}

/// Trains the tiny config on the full test set; returns (run dir, tempdir guard).
fn tiny_run_with_full_test_set(tmp: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/tiny.toml"))
        .unwrap()
        .replace("test_limit = 2000\n", "")
        // Copied away from configs/, its data path (relative to the file) is given whole.
        .replace(
            "\"../data/mnist\"",
            &format!("{:?}", root().join("data/mnist")),
        );
    let cfg = write_config(tmp, "tiny-full.toml", &text);
    let out = tmp.join("run");
    let o = cli(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn export_eval_predict_inspect_on_a_trained_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run_with_full_test_set(tmp.path());
    let exported = tmp.path().join("exported");
    let o = cli(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--safetensors",
        exported.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        exported.join("model.safetensors").is_file() && exported.join("manifest.toml").is_file()
    );

    // eval reports the test accuracy the training run reported.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let trained = summary["phases"][1]["test_accuracy"].as_f64().unwrap();
    let o = cli(&["eval", "--model", exported.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let correct = (trained * 10_000.0).round() as usize;
    assert!(
        stdout.contains(&format!("({correct}/10000)")),
        "trained {trained}, eval said: {stdout}"
    );
    assert!(stdout.contains("confusion matrix") && stdout.contains("per-class accuracy"));

    let o = cli(&["inspect", "--model", exported.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("[784, 64, 32, 10]") && stdout.contains("hidden layer 1 (64 neurons)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "precision f32; kernel on this CPU: f32: {}",
            smartmixed_infer::Kernel::detect().describe()
        )),
        "{stdout}"
    );
    // The manifest describes the input training saw (28 x 28 pixels / 255) and the classes.
    assert!(
        stdout.contains("input: shape [28, 28] (784 values), preprocessing: raw / 255")
            && stdout.contains("classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"),
        "{stdout}"
    );
    let manifest = std::fs::read_to_string(exported.join("manifest.toml")).unwrap();
    assert!(
        manifest.contains("version = 2") && manifest.contains("[input]"),
        "{manifest}"
    );

    // The first test image (a 7) as PGM, as PNG, and the first three as an IDX file.
    let images =
        smartmixed_train::data::read_idx(&root().join("data/mnist/t10k-images-idx3-ubyte.gz"))
            .unwrap()
            .data;
    let seven = &images[..784];
    let pgm = tmp.path().join("seven.pgm");
    let mut pgm_bytes = b"P5\n# a seven\n28 28\n255\n".to_vec();
    pgm_bytes.extend_from_slice(seven);
    std::fs::write(&pgm, pgm_bytes).unwrap();
    let png_path = tmp.path().join("seven.png");
    {
        let f = std::fs::File::create(&png_path).unwrap();
        let mut enc = png::Encoder::new(f, 28, 28);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(seven).unwrap();
    }
    let idx = tmp.path().join("three-idx3-ubyte");
    std::fs::write(&idx, idx_bytes(&[3, 28, 28], &images[..3 * 784])).unwrap();
    for (input, lines) in [(&pgm, 1), (&png_path, 1), (&idx, 3)] {
        let o = cli(&[
            "predict",
            "--model",
            exported.to_str().unwrap(),
            input.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(stdout.lines().count(), lines, "{stdout}");
        assert!(stdout.starts_with("image 0: class 7 "), "{stdout}");
    }

    // Phase 1 exports with its argmax choices.
    let p1 = tmp.path().join("p1");
    let o = cli(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--safetensors",
        p1.to_str().unwrap(),
        "--phase",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // Bad model files and inputs: one-line errors naming the file.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(exported.join("manifest.toml"), bad.join("manifest.toml")).unwrap();
    let w = std::fs::read(exported.join("model.safetensors")).unwrap();
    std::fs::write(bad.join("model.safetensors"), &w[..w.len() / 3]).unwrap();
    assert_one_line_error(
        &cli(&["eval", "--model", bad.to_str().unwrap()]),
        &[
            "model.safetensors",
            "header declares tensor `layers.0.weight`",
        ],
    );
    std::fs::write(bad.join("manifest.toml"), "format = 1\n").unwrap();
    assert_one_line_error(
        &cli(&["inspect", "--model", bad.to_str().unwrap()]),
        &["manifest.toml"],
    );
    assert_one_line_error(
        &cli(&["eval", "--model", tmp.path().join("nope").to_str().unwrap()]),
        &["nope", "cannot read"],
    );
    let small = tmp.path().join("small.pgm");
    std::fs::write(&small, b"P2\n2 2\n255\n0 1 2 3\n").unwrap();
    assert_one_line_error(
        &cli(&[
            "predict",
            "--model",
            exported.to_str().unwrap(),
            small.to_str().unwrap(),
        ]),
        &["small.pgm", "2 x 2 pixels", "28 x 28 images"],
    );
    assert_one_line_error(
        &cli(&[
            "export",
            "--run",
            tmp.path().to_str().unwrap(),
            "--safetensors",
            bad.to_str().unwrap(),
        ]),
        &["no phase2-best.safetensors"],
    );
}

const TINY_SWEEP: &str = "[sweep]\narchitectures = [[12], [10, 6]]\nmethods = [\"relu\", \"smartmixed\"]\nseeds = [0, 1]\n[phase1]\nepochs = 1\nlr = 0.01\n[phase2]\nepochs = 1\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nclasses = 2\n";

fn sweep_config(tmp: &Path) -> (PathBuf, PathBuf) {
    let data = tmp.join("data");
    synthetic_data(&data, 120, 40);
    let text = format!("{TINY_SWEEP}dir = {:?}\n", data.display().to_string());
    (write_config(tmp, "sweep.toml", &text), data)
}

/// `smartmixed-auto` takes part in a sweep beside the paper's schedule: its phase 1 ends
/// when the choices settle (here at once: phase 1 is frozen by a learning rate below the
/// weights' rounding step), and the report compares epochs and time per method.
#[test]
fn a_sweep_compares_smartmixed_auto_with_the_paper_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 120, 40);
    let text = format!(
        "[sweep]\narchitectures = [[12]]\nmethods = [\"smartmixed\", \"smartmixed-auto\"]\nseeds = [0, 1]\nauto_patience = 2\n[phase1]\nepochs = 5\nlr = 1e-30\nlogit_lr = 1e-30\n[phase1.auto]\nmin_epochs = 2\nwindow = 1\npatience = 1\n[phase2]\nepochs = 3\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nclasses = 2\ndir = {:?}\n",
        data.display().to_string()
    );
    let cfg = write_config(tmp.path(), "auto.toml", &text);
    let out = tmp.path().join("sweep");
    let o = cli(&[
        "sweep",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for seed in 0..2 {
        let summary = |method: &str| -> serde_json::Value {
            let path = out.join(format!("cells/a01-{method}-s{seed}/summary.json"));
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        };
        let (paper, auto) = (summary("smartmixed"), summary("smartmixed-auto"));
        assert_eq!(paper["phases"][0]["epochs"], 5);
        assert!(paper["phases"][0].get("ended_early").is_none());
        assert_eq!(auto["phases"][0]["epochs"], 2);
        assert_eq!(auto["phases"][0]["ended_early"]["epoch"], 2);
    }
    let o = cli(&["report", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    let row = |method: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {method} | 2 |")))
            .unwrap_or_else(|| panic!("no cost row for {method} in {md}"))
            .to_string()
    };
    assert!(
        row("smartmixed").contains("| 0 phases |"),
        "{}",
        row("smartmixed")
    );
    let auto = row("smartmixed-auto");
    assert!(
        auto.contains("| 2 phases |")
            || auto.contains("| 3 phases |")
            || auto.contains("| 4 phases |"),
        "{auto}"
    );
    assert!(
        md.contains("smartmixed-auto"),
        "the method takes part in the rankings"
    );
}

fn results_rows(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let mut rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    rows.sort();
    rows
}

fn assert_png_decodes(path: &Path) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(info.width > 100 && info.height > 100, "{}", path.display());
    // Not a blank image: some pixel differs from the first.
    assert!(
        buf[..info.buffer_size()].iter().any(|&b| b != buf[0]),
        "{} is blank",
        path.display()
    );
}

/// `--only` with a value the sweep lacks (`method=relux`, `arch=99`) finished "0 cells"
/// with exit 0; `--shard` counted over the whole grid before `--only` filtered it, so of
/// two shards over the four `seed=0` cells (every other cell of the grid) one got all four
/// and the other none. Now: a one-line error, and each shard gets two selected cells.
#[test]
fn only_refuses_values_the_sweep_lacks_and_shards_split_the_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, _) = sweep_config(tmp.path());
    let cfg = cfg.to_str().unwrap();
    let out = tmp.path().join("typo");
    for (filter, needle) in [
        ("method=relux", "--only method=relux"),
        ("arch=1,99", "--only arch=99"),
    ] {
        let o = cli(&[
            "sweep",
            "--config",
            cfg,
            "--out",
            out.to_str().unwrap(),
            "--only",
            filter,
        ]);
        assert_one_line_error(&o, &[needle, "no cell of", "sweep.toml"]);
    }
    assert!(!out.exists(), "a refused sweep created its directory");
    let mut all = Vec::new();
    for k in 0..2 {
        let out = tmp.path().join(format!("part{k}"));
        let shard = format!("{k}/2");
        cli_ok(&[
            "sweep",
            "--config",
            cfg,
            "--out",
            out.to_str().unwrap(),
            "--only",
            "seed=0",
            "--shard",
            &shard,
        ]);
        let rows = results_rows(&out);
        assert_eq!(rows.len(), 2, "shard {shard}: {rows:?}");
        all.extend(rows);
    }
    all.sort();
    assert_eq!(
        all,
        [
            "a01-relu-s0",
            "a01-smartmixed-s0",
            "a02-relu-s0",
            "a02-smartmixed-s0"
        ]
    );
}

#[test]
fn sweep_skips_finished_cells_restarts_unfinished_ones_and_shards_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, _) = sweep_config(tmp.path());
    let cfg = cfg.to_str().unwrap();
    let out = tmp.path().join("sweep");
    let o = cli(&[
        "sweep",
        "--config",
        cfg,
        "--out",
        out.to_str().unwrap(),
        "--only",
        "arch=1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        results_rows(&out),
        [
            "a01-relu-s0",
            "a01-relu-s1",
            "a01-smartmixed-s0",
            "a01-smartmixed-s1"
        ]
    );
    let stamp = |id: &str| {
        std::fs::metadata(out.join("cells").join(id).join("summary.json"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = stamp("a01-smartmixed-s1");
    // An unfinished cell (no summary, no resume state) is trained from scratch.
    let junk = out.join("cells/a02-relu-s0");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("config.toml"), "half-written").unwrap();
    let o = cli(&["sweep", "--config", cfg, "--out", out.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        stdout.matches("finished earlier, skipped").count(),
        4,
        "{stdout}"
    );
    assert_eq!(
        stamp("a01-smartmixed-s1"),
        before,
        "a finished cell was trained again"
    );
    assert_eq!(results_rows(&out).len(), 8);

    // Three shards cover every cell once; merging them gives the same table.
    let mut shards = Vec::new();
    for k in 0..3 {
        let d = tmp.path().join(format!("shard{k}"));
        let o = cli(&[
            "sweep",
            "--config",
            cfg,
            "--out",
            d.to_str().unwrap(),
            "--shard",
            &format!("{k}/3"),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        shards.push(d);
    }
    let counts: Vec<usize> = shards.iter().map(|d| results_rows(d).len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 8, "{counts:?}");
    let merged = tmp.path().join("merged");
    let mut args = vec!["sweep", "--out", merged.to_str().unwrap(), "--merge"];
    args.extend(shards.iter().map(|d| d.to_str().unwrap()));
    let o = cli(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(results_rows(&merged), results_rows(&out));

    // The report of the merged sweep: every file, every PNG a real picture.
    let o = cli(&["report", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = merged.join("report");
    for stem in [
        "fig4-mrr",
        "fig4b-mrr-per-seed",
        "fig5-rank-counts",
        "fig6-weight-heatmap",
    ] {
        assert!(report.join(format!("{stem}.svg")).is_file(), "{stem}.svg");
        assert_png_decodes(&report.join(format!("{stem}.png")));
    }
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    for needle in [
        "Table II",
        "Mean Reciprocal Rank",
        "competition ranks",
        "±",
        "[30, 10, 6, 2]",
    ] {
        assert!(md.contains(needle), "`{needle}` missing from report.md");
    }

    assert_one_line_error(
        &cli(&[
            "sweep",
            "--config",
            cfg,
            "--out",
            out.to_str().unwrap(),
            "--shard",
            "3/3",
        ]),
        &["shard", "0 <= K < N"],
    );
    assert_one_line_error(
        &cli(&["report", tmp.path().to_str().unwrap()]),
        &["neither a run directory"],
    );
}

#[test]
fn run_report_writes_every_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, run) = train_small(tmp.path(), |c| c);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(&["report", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for stem in [
        "fig1-phase1-loss",
        "fig2-phase2-loss",
        "fig3-activation-shares",
        "fig3b-shares-over-epochs",
    ] {
        assert!(
            run.join("report").join(format!("{stem}.svg")).is_file(),
            "{stem}.svg"
        );
        assert_png_decodes(&run.join("report").join(format!("{stem}.png")));
    }
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(md.contains("Table I") && md.contains("Phase 2 (Mixed)"));
}

#[test]
fn absurd_thread_counts_are_one_line_errors() {
    for cmd in [
        vec!["train", "--threads", "5000"],
        vec![
            "sweep",
            "--config",
            "configs/paper-sweep-quick.toml",
            "--out",
            "x",
            "--threads",
            "99999999999999999999999",
        ],
    ] {
        assert_one_line_error(&cli(&cmd), &["--threads", "from 0 (every core) to 1024"]);
    }
}

/// Ctrl-C through the binary: exit code 130 with the command that continues, and
/// `train --resume` finishing the run.
#[cfg(unix)]
#[test]
fn ctrl_c_exits_130_and_resume_finishes_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let text = std::fs::read_to_string(root().join("configs/tiny.toml"))
        .unwrap()
        .replace("[phase2]\nepochs = 2", "[phase2]\nepochs = 150")
        .replace(
            "\"../data/mnist\"",
            &format!("{:?}", root().join("data/mnist")),
        );
    let cfg = write_config(tmp.path(), "long.toml", &text);
    let args = [
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = interrupt_after(&args, &out.join("metrics.csv"), 5);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("train --resume"), "{stderr}");
    assert!(out.join("state.safetensors").is_file() && !out.join("summary.json").exists());
    let o = cli(&["train", "--resume", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("\"epochs\": 150"), "{summary}");
    assert!(!out.join("state.safetensors").exists());
}

/// A sweep interrupted inside a cell (Ctrl-C) resumes that cell from its state file when
/// run again, and finishes it.
#[cfg(unix)]
#[test]
fn an_interrupted_sweep_cell_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = "[sweep]\narchitectures = [[32]]\nmethods = [\"relu\"]\nseeds = [0]\n[phase1]\nepochs = 1\nlr = 0.003\n[phase2]\nepochs = 150\nlr = 0.003\n[training]\nbatch_size = 64\n[data]\ndir = \"data/mnist\"\ntrain_limit = 3000\ntest_limit = 500\n"
        // Paths in a config are relative to its folder.
        .replace("\"data/mnist\"", &format!("{:?}", root().join("data/mnist")));
    let cfg = write_config(tmp.path(), "sweep.toml", &sweep);
    let out = tmp.path().join("sweep");
    let args = [
        "sweep",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = interrupt_after(&args, &out.join("cells/a01-relu-s0/metrics.csv"), 5);
    // Exit 130 as `train` (tests/hostile_sweeps.rs), saying how to continue.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted at cell a01-relu-s0; run the same command"),
        "{stderr}"
    );
    assert!(out.join("cells/a01-relu-s0/state.safetensors").is_file());
    let o = cli(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("a01-relu-s0: resumed, test accuracy"),
        "{stdout}"
    );
    assert_eq!(results_rows(&out), ["a01-relu-s0"]);
}
