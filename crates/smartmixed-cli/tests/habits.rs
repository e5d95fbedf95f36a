//! The CLI's habits as a new user meets them (issue 20, "set-up and habits", items 3, 4
//! and 6): reports of unfinished runs and sweeps, progress inside sweep cells, config paths
//! relative to the config file, `--set` and `--print-config`, `--data-dir` with tables,
//! export's `--out`, and the resume hint.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs the binary in `cwd`.
fn cli_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smartmixed-cli"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run smartmixed-cli")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Keeps the first `rows` data rows of `dir/metrics.csv` and removes summary.json, as a
/// run that is still training looks.
fn unfinish(dir: &Path, rows: usize) {
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let kept: Vec<&str> = metrics.lines().take(rows + 1).collect();
    std::fs::write(dir.join("metrics.csv"), kept.join("\n") + "\n").unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `report` refused a run without summary.json; now it reports what metrics.csv holds so
/// far and says where the run is, or that no epoch has finished.
#[test]
fn report_reads_an_unfinished_run_and_says_where_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, run) = train_small(tmp.path(), |c| {
        c.replace("[phase2]\nepochs = 1", "[phase2]\nepochs = 3")
    });
    assert!(o.status.success(), "{}", stderr(&o));
    // phase1 epoch 1 and phase2 epoch 1 of 3 done.
    unfinish(&run, 2);
    let o = cli(&["report", s(&run)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(md.contains("running: phase2 epoch 1 of 3"), "{md}");
    assert!(run.join("report/fig1-phase1-loss.png").is_file(), "{md}");
    assert!(run.join("report/fig2-phase2-loss.png").is_file(), "{md}");
    assert!(!md.contains("NaN"), "{md}");
    // Fig. 3b names each layer with its width (from the config: no summary yet) and marks
    // phase 1's best epoch so far.
    let fig3b = std::fs::read_to_string(run.join("report/fig3b-shares-over-epochs.svg")).unwrap();
    assert!(
        fig3b.contains("layer 1 (16)") && fig3b.contains("layer 2 (8)"),
        "{fig3b}"
    );
    assert!(fig3b.contains("selected (epoch 1)"), "{fig3b}");

    // A run that has not finished an epoch: config.toml and nothing else.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::copy(run.join("config.toml"), fresh.join("config.toml")).unwrap();
    let o = cli(&["report", s(&fresh)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(fresh.join("report/report.md")).unwrap();
    assert!(md.contains("no epoch has finished yet"), "{md}");
}

fn sweep_config(tmp: &Path, methods: &str) -> PathBuf {
    let data = tmp.join("data");
    synthetic_data(&data, 120, 40);
    let text = format!(
        "[sweep]\narchitectures = [[6]]\nmethods = [{methods}]\nseeds = [0]\n[phase1]\nepochs = 1\nlr = 0.01\n[phase2]\nepochs = 1\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nclasses = 2\ndir = {:?}\n",
        data.display().to_string()
    );
    write_config(tmp, "sweep.toml", &text)
}

/// A report over a subset showed MRR 0.0000, NaN rows and zero bars for methods that never
/// ran; now it ranks only what finished and lists cells still running or not run.
#[test]
fn a_sweep_report_over_a_subset_ranks_only_what_ran_and_marks_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = sweep_config(tmp.path(), "\"relu\", \"tanh\", \"smartmixed\"");
    let out = tmp.path().join("sweep");
    let o = cli(&[
        "sweep",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--only",
        "method=relu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // a01-tanh-s0 is running: one epoch of its two done.
    let cells = out.join("cells");
    copy_dir(&cells.join("a01-relu-s0"), &cells.join("a01-tanh-s0"));
    let config = std::fs::read_to_string(cells.join("a01-tanh-s0/config.toml")).unwrap();
    std::fs::write(
        cells.join("a01-tanh-s0/config.toml"),
        config.replace("activation = \"relu\"", "activation = \"tanh\""),
    )
    .unwrap();
    unfinish(&cells.join("a01-tanh-s0"), 1);
    let o = cli(&["report", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(!md.contains("NaN"), "{md}");
    assert!(!md.contains("0.0000"), "{md}");
    assert!(md.contains("| relu | 1.0000 |"), "{md}");
    assert!(!md.contains("| tanh |"), "{md}");
    assert!(!md.contains("| smartmixed |"), "{md}");
    assert!(
        md.contains("a01-tanh-s0: running: fixed epoch 1 of 2"),
        "{md}"
    );
    assert!(md.contains("Not run: a01-smartmixed-s0"), "{md}");
    assert!(
        md.contains("**Provisional**: 2 cells of sweep.toml"),
        "{md}"
    );
}

/// `--only method=smartmixed-auto` on a sweep whose methods lack it says how to add it.
#[test]
fn only_a_method_the_sweep_lacks_names_sweep_methods() {
    let o = cli(&[
        "sweep",
        "--config",
        "configs/paper-sweep-quick.toml",
        "--out",
        "target/never-created",
        "--only",
        "method=smartmixed-auto",
    ]);
    assert_one_line_error(
        &o,
        &[
            "--only method=smartmixed-auto",
            "sweep.methods",
            "smartmixed",
        ],
    );
    assert!(!root().join("target/never-created").exists());
}

/// A sweep printed nothing inside a cell; now each epoch of a cell is a line naming the
/// cell, with the phase's elapsed time and ETA.
#[test]
fn a_sweep_shows_the_epochs_inside_each_cell_with_elapsed_time_and_eta() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = sweep_config(tmp.path(), "\"relu\"");
    let o = cli(&[
        "sweep",
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("sweep")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.contains("a01-relu-s0") && l.contains("fixed epoch 2/2"))
        .unwrap_or_else(|| panic!("no epoch line for the cell: {err}"));
    assert!(line.starts_with("[1/1] a01-relu-s0"), "{line}");
    assert!(line.contains("elapsed 00:00:0"), "{line}");
    assert!(line.contains("ETA 00:00:00"), "{line}");
}

/// The epoch line printed an unlabeled "choices per layer [1, 0, 4, 3, 15, 41]"; it now
/// says what the numbers are, and gives elapsed time and an ETA.
#[test]
fn epoch_lines_label_the_choice_counts_and_show_elapsed_and_eta() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _) = train_small(tmp.path(), |c| {
        c.replace("[phase1]\nepochs = 1", "[phase1]\nepochs = 2")
    });
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let line = err
        .lines()
        .find(|l| l.starts_with("phase1 epoch 1/2"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("elapsed 00:00:"), "{line}");
    assert!(line.contains("ETA 00:00:"), "{line}");
    // SMALL's hidden layers are 16 and 8 wide; each list adds up to its width.
    let label = "neurons choosing relu/sigmoid/tanh/leaky_relu/elu/selu per layer: ";
    let lists = line.split_once(label).unwrap_or_else(|| panic!("{line}")).1;
    let widths: Vec<usize> = lists
        .split("] [")
        .map(|l| {
            l.trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|n| n.parse::<usize>().unwrap())
                .sum()
        })
        .collect();
    assert_eq!(widths, vec![16, 8], "{line}");
}

/// A config under `proj/cfg/` whose data is `../data`, trained from another directory:
/// the path is the config file's, not the working directory's.
#[test]
fn config_paths_are_relative_to_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    synthetic_data(&proj.join("data"), 200, 60);
    std::fs::create_dir_all(proj.join("cfg")).unwrap();
    write_config(
        &proj.join("cfg"),
        "c.toml",
        &format!("{SMALL}[data]\nclasses = 2\ndir = \"../data\"\n"),
    );
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let o = cli_in(
        &elsewhere,
        &["train", "--config", "../proj/cfg/c.toml", "--out", "run"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(elsewhere.join("run/summary.json").is_file());
    // The run records where the data was, so that --resume works from anywhere.
    let recorded = std::fs::read_to_string(elsewhere.join("run/config.toml")).unwrap();
    let recorded: toml::Table = toml::from_str(&recorded).unwrap();
    let dir = PathBuf::from(recorded["data"]["dir"].as_str().unwrap());
    assert!(dir.is_absolute(), "{dir:?}");
    assert_eq!(
        dir.canonicalize().unwrap(),
        proj.join("data").canonicalize().unwrap()
    );

    // A path on the command line is relative to the working directory, and recorded
    // absolute: it was recorded as typed, so `eval --run` from elsewhere read no data.
    let o = cli_in(
        &proj,
        &[
            "train",
            "--config",
            "cfg/c.toml",
            "--data-dir",
            "./data/../data",
            "--out",
            "run",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let recorded = std::fs::read_to_string(proj.join("run/config.toml")).unwrap();
    let recorded: toml::Table = toml::from_str(&recorded).unwrap();
    let dir = PathBuf::from(recorded["data"]["dir"].as_str().unwrap());
    assert!(dir.is_absolute(), "{dir:?}");
    assert_eq!(dir, proj.join("data").canonicalize().unwrap());
    let model = tmp.path().join("model");
    export(&proj.join("run"), &model);
    let o = cli_in(
        &elsewhere,
        &["eval", "--model", s(&model), "--run", s(&proj.join("run"))],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("test"), "{o:?}");

    // The repository's configs name the vendored data from their own folder.
    let o = cli_in(
        &elsewhere,
        &[
            "train",
            "--config",
            s(&root().join("configs/tiny.toml")),
            "--print-config",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap();
    let dir = PathBuf::from(printed["data"]["dir"].as_str().unwrap());
    assert_eq!(
        dir.canonicalize().unwrap(),
        root().join("data/mnist").canonicalize().unwrap()
    );
}

/// `--set section.key=value` overrides any field (TOML values, bare words as strings);
/// `--print-config` shows the result with every default; an unknown key is a one-line
/// error naming `--set`, as an unknown key in a file names the file.
#[test]
fn set_overrides_any_field_and_print_config_shows_every_default() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "c.toml",
        &format!("{SMALL}[data]\nclasses = 2\n"),
    );
    let o = cli(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        "phase1.auto.threshold=0.25",
        "--set",
        "training.select=val_accuracy",
        "--set",
        "model.hidden=[5, 3]",
        "--print-config",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert_eq!(
        printed["phase1"]["auto"]["threshold"].as_float(),
        Some(0.25)
    );
    assert_eq!(printed["training"]["select"].as_str(), Some("val_accuracy"));
    assert_eq!(
        printed["model"]["hidden"],
        toml::Value::Array(vec![5.into(), 3.into()])
    );
    // Defaults the file never mentions (the paper's values).
    assert_eq!(printed["training"]["clip_norm"].as_float(), Some(1.0));
    assert_eq!(printed["phase1"]["temperature"].as_float(), Some(0.3));
    assert_eq!(printed["phase1"]["auto"]["window"].as_integer(), Some(5));
    // Nothing was trained.
    assert!(!tmp.path().join("runs").exists());

    let o = cli(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        "model.hiden=[4]",
        "--print-config",
    ]);
    assert_one_line_error(&o, &["--set model.hiden=[4]", "unknown field `hiden`"]);
    let o = cli(&[
        "train",
        "--config",
        s(&cfg),
        "--set",
        "phase1.lr=-1",
        "--print-config",
    ]);
    assert_one_line_error(&o, &["--set", "phase1.lr", "expected a finite number > 0"]);
    let o = cli(&["train", "--set", "phase1.lr", "--print-config"]);
    assert_one_line_error(&o, &["--set", "phase1.lr", "KEY=VALUE"]);
}

fn csv_table(tmp: &Path) -> PathBuf {
    let mut text = String::from("a,b,label\n");
    for i in 0..60 {
        let c = i % 2;
        text.push_str(&format!(
            "{},{},{}\n",
            c as f64 + 0.01 * i as f64,
            1 - c,
            ["no", "yes"][c]
        ));
    }
    let path = tmp.join("t.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// `train --data-dir DIR` with a CSV config was silently ignored, and the start line said
/// "images" for table rows.
#[test]
fn data_dir_with_a_table_config_is_refused_and_tables_are_counted_in_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let table = csv_table(tmp.path());
    let cfg = write_config(
        tmp.path(),
        "t.toml",
        &format!(
            "{SMALL}[data]\nfile = {:?}\nlabel = \"label\"\n",
            table.display().to_string()
        ),
    );
    let o = cli(&[
        "train",
        "--config",
        s(&cfg),
        "--data-dir",
        s(tmp.path()),
        "--out",
        s(&tmp.path().join("never")),
    ]);
    assert_one_line_error(&o, &["--data-dir", "data.file", "t.csv"]);
    assert!(!tmp.path().join("never").exists());
    let o = cli(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("run")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let start = stderr(&o)
        .lines()
        .find(|l| l.starts_with("training "))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(start.contains(" test rows,"), "{start}");
    assert!(!start.contains("images"), "{start}");
}

/// `export --safetensors OUT` named a directory; `--out` does, and a file name ending in
/// .safetensors is refused instead of becoming a directory of that name.
#[test]
fn export_writes_into_out_and_refuses_a_safetensors_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, run) = train_small(tmp.path(), |c| c);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = tmp.path().join("model");
    cli_ok(&["export", "--run", s(&run), "--out", s(&model)]);
    assert!(model.join("model.safetensors").is_file());
    assert!(model.join("manifest.toml").is_file());
    let file = tmp.path().join("m/model.safetensors");
    assert_one_line_error(
        &cli(&["export", "--run", s(&run), "--out", s(&file)]),
        &["m/model.safetensors", "a directory"],
    );
    assert!(!file.exists());
}

/// The resume hint printed the bare name `smartmixed-cli`, which nothing may have
/// installed; it now prints the program as it was run.
#[cfg(unix)]
#[test]
fn the_resume_hint_names_the_program_as_it_was_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 200, 60);
    let cfg = write_config(
        tmp.path(),
        "c.toml",
        &format!("{SMALL}[data]\nclasses = 2\n").replace("epochs = 1", "epochs = 400"),
    );
    let run = tmp.path().join("run");
    let o = interrupt_after(
        &[
            "train",
            "--config",
            s(&cfg),
            "--data-dir",
            s(&data),
            "--out",
            s(&run),
        ],
        &run.join("metrics.csv"),
        2,
    );
    let err = stderr(&o);
    let hint = format!(
        "continue with: {} train --resume {}",
        env!("CARGO_BIN_EXE_smartmixed-cli"),
        run.display()
    );
    assert!(err.contains(&hint), "{err}");
}
