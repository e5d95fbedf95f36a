//! Hostile inputs to `sweep` and `report` (issue 18, items 5 and 7, and the sweep
//! messages): each ends in a one-line error or a bounded result, never a panic, a wrapped
//! number, a broken results.csv or damage to files already there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A small sweep config (no data is read to parse it).
const SWEEP: &str = "[sweep]\narchitectures = [[6], [4]]\nmethods = [\"relu\", \"tanh\", \"smartmixed\"]\nseeds = [0, 1]\n[phase1]\nepochs = 1\n[phase2]\nepochs = 1\n[data]\nclasses = 2\n";

/// A finished cell's summary.json: one phase of `epochs` epochs with this test accuracy.
fn summary(test_accuracy: f64, epochs: &str) -> String {
    format!(
        r#"{{"mode":"fixed","architecture":[30,6,2],"seed":0,"split_seed":42,"train_samples":100,"validation_samples":10,"test_samples":10,"phases":[{{"phase":"fixed","epochs":{epochs},"best_epoch":1,"validation_loss":0.4,"validation_accuracy":0.5,"test_accuracy":{test_accuracy},"test_loss":0.4,"seconds":1.0,"checkpoint":"fixed-best.safetensors"}}],"flush_denormals":true,"threads":2,"seconds":2.5}}"#
    )
}

/// A shard directory recording `config`, with these finished cells.
fn shard(dir: &Path, config: &str, cells: &[(&str, String)]) -> PathBuf {
    std::fs::create_dir_all(dir.join("cells")).unwrap();
    std::fs::write(dir.join("sweep.toml"), config).unwrap();
    for (name, summary) in cells {
        let cell = dir.join("cells").join(name);
        std::fs::create_dir_all(&cell).unwrap();
        std::fs::write(cell.join("summary.json"), summary).unwrap();
    }
    dir.to_path_buf()
}

fn merge(shards: &[&Path], out: &Path) -> Output {
    let mut args = vec!["sweep", "--merge"];
    args.extend(shards.iter().map(|p| s(p)));
    args.extend(["--out", s(out)]);
    cli(&args)
}

/// results.csv read back by an independent reader (the csv crate, RFC 4180 quoting).
fn results(out: &Path) -> Vec<csv::StringRecord> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(out.join("results.csv"))
        .unwrap();
    assert_eq!(r.headers().unwrap().len(), 10);
    r.records().map(|r| r.unwrap()).collect()
}

/// Item 5: shards trained under different configs merged with exit 0, keeping the first
/// shard's sweep.toml.
#[test]
fn merge_refuses_shards_of_different_configs_naming_both_and_the_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let a = shard(
        &tmp.path().join("a"),
        SWEEP,
        &[("a01-relu-s0", summary(0.9, "1"))],
    );
    let b = shard(
        &tmp.path().join("b"),
        &SWEEP.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"),
        &[("a01-tanh-s0", summary(0.8, "1"))],
    );
    let out = tmp.path().join("merged");
    assert_one_line_error(
        &merge(&[&a, &b], &out),
        &["a/sweep.toml", "b/sweep.toml", "sweep.seeds", "differs"],
    );
    assert!(!out.join("results.csv").exists());
    // The same config with its data elsewhere is the same sweep.
    let moved = format!("{SWEEP}dir = \"/elsewhere\"\n");
    std::fs::write(b.join("sweep.toml"), moved).unwrap();
    assert_ok(&merge(&[&a, &b], &out));
    assert_eq!(results(&out).len(), 2);
}

/// Item 5: a cell present in two shards kept the first copy without a word.
#[test]
fn merge_refuses_a_cell_in_two_shards_unless_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let a = shard(
        &tmp.path().join("a"),
        SWEEP,
        &[("a01-relu-s0", summary(0.9, "1"))],
    );
    let b = shard(
        &tmp.path().join("b"),
        SWEEP,
        &[("a01-relu-s0", summary(0.7, "1"))],
    );
    let out = tmp.path().join("merged");
    assert_one_line_error(
        &merge(&[&a, &b], &out),
        &[
            "a01-relu-s0",
            "a/cells",
            "b/cells",
            "different summary.json",
        ],
    );
    // An identical copy (the same run copied twice) merges once.
    std::fs::write(b.join("cells/a01-relu-s0/summary.json"), summary(0.9, "1")).unwrap();
    assert_ok(&merge(&[&a, &b], &out));
    let rows = results(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][6], "0.900000");
}

/// Item 5: unknown methods and names that are not cells (`a01-re,lu-s0` made an 11-field
/// row, a newline a broken one) were merged.
#[test]
fn merge_refuses_unknown_methods_and_names_that_are_not_cells_of_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("a01-gelu-s0", "method `gelu` is not in sweep.methods"),
        ("a01-re,lu-s0", "method `re,lu`"),
        ("a01-relu\n-s0", "a01-relu"),
        ("a03-relu-s0", "architecture 3"),
        ("a01-relu-s7", "seed 7"),
        ("a1-relu-s0", "not a cell name"),
        ("a01-relu-s99999999999999999999", "not a cell name"),
    ];
    for (i, (name, why)) in cases.iter().enumerate() {
        let a = shard(
            &tmp.path().join(format!("a{i}")),
            SWEEP,
            &[
                ("a01-relu-s0", summary(0.9, "1")),
                (name, summary(0.5, "1")),
            ],
        );
        let out = tmp.path().join(format!("merged{i}"));
        assert_one_line_error(&merge(&[&a], &out), &[why]);
        assert!(!out.join("results.csv").exists(), "{name}");
    }
}

/// Item 5: the epoch sum wrapped (2^64-1 + 2 = 1); results.csv is read back by the csv
/// crate with the values the summaries hold.
#[test]
fn merge_checks_the_epoch_sum_and_writes_results_that_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let two_phases = |first: &str| {
        summary(0.75, first).replace(
            r#"}],"flush"#,
            r#"},{"phase":"fixed","epochs":2,"best_epoch":2,"validation_loss":0.3,"validation_accuracy":0.625,"test_accuracy":0.75,"test_loss":0.3,"seconds":1.0,"checkpoint":"x"}],"flush"#,
        )
    };
    let a = shard(
        &tmp.path().join("a"),
        SWEEP,
        &[
            ("a01-relu-s0", two_phases("18446744073709551615")),
            (
                "a02-tanh-s1",
                two_phases("3").replace("[30,6,2]", "[30,4,2]"),
            ),
        ],
    );
    let out = tmp.path().join("merged");
    assert_one_line_error(
        &merge(&[&a], &out),
        &["a01-relu-s0", "summary.json", "epochs add up to more than"],
    );
    std::fs::write(a.join("cells/a01-relu-s0/summary.json"), two_phases("4")).unwrap();
    // A cell whose summary's widths are not its architecture's was trained elsewhere.
    let tanh = a.join("cells/a02-tanh-s1/summary.json");
    std::fs::write(&tanh, two_phases("3")).unwrap();
    assert_one_line_error(
        &merge(&[&a], &out),
        &[
            "a02-tanh-s1/summary.json",
            "hidden widths [6]",
            "architecture 2",
            "[4]",
        ],
    );
    std::fs::write(&tanh, two_phases("3").replace("[30,6,2]", "[30,4,2]")).unwrap();
    assert_ok(&merge(&[&a], &out));
    let rows = results(&out);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.len(), 10, "{r:?}");
    }
    // Hand-computed from the summaries: epochs 4 + 2 and 3 + 2; the last phase's figures.
    let row = |r: &csv::StringRecord| r.iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        row(&rows[0]),
        [
            "a01-relu-s0",
            "1",
            "6",
            "relu",
            "0",
            "0.625000",
            "0.750000",
            "2",
            "6",
            "2.5"
        ]
    );
    assert_eq!(
        row(&rows[1]),
        [
            "a02-tanh-s1",
            "2",
            "4",
            "tanh",
            "1",
            "0.625000",
            "0.750000",
            "2",
            "5",
            "2.5"
        ]
    );
}

/// Sweep message: a dangling link from an earlier merge said "cannot link: File exists".
#[cfg(unix)]
#[test]
fn merge_replaces_a_dangling_link_of_an_earlier_merge_and_refuses_other_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let a = shard(
        &tmp.path().join("a"),
        SWEEP,
        &[("a01-relu-s0", summary(0.9, "1"))],
    );
    let out = tmp.path().join("merged");
    assert_ok(&merge(&[&a], &out));
    // The shard moves: the earlier merge's link dangles.
    let moved = tmp.path().join("moved");
    std::fs::rename(&a, &moved).unwrap();
    let link = out.join("cells/a01-relu-s0");
    assert!(!link.exists() && link.symlink_metadata().is_ok());
    let o = merge(&[&moved], &out);
    assert_ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("which no longer exists"), "{stdout}");
    assert_eq!(
        std::fs::canonicalize(&link).unwrap(),
        std::fs::canonicalize(moved.join("cells/a01-relu-s0")).unwrap()
    );
    assert_eq!(results(&out).len(), 1);
    // A directory of the user's own where a link would go is refused, saying what it is.
    let out2 = tmp.path().join("merged2");
    std::fs::create_dir_all(out2.join("cells/a01-relu-s0")).unwrap();
    assert_one_line_error(
        &merge(&[&moved], &out2),
        &[
            "merged2/cells/a01-relu-s0",
            "a directory",
            "not a link from an earlier merge",
        ],
    );
}

/// Sweep message: a sweep refused for memory named `cells/a01-relu-s0/config.toml`, a
/// file that does not exist, and the field of that file; invalid cells named
/// `model.activation`, which the sweep file does not have.
#[test]
fn a_refused_sweep_config_names_the_sweep_file_and_its_field() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 40, 20);
    let text = SWEEP
        .replace("[[6], [4]]", "[[6], [1048576, 1048576]]")
        .replace("[data]\n", &format!("[data]\ndir = {:?}\n", s(&data)));
    let cfg = write_config(tmp.path(), "big.toml", &text);
    let out = tmp.path().join("sweep");
    let o = cli(&["sweep", "--config", s(&cfg), "--out", s(&out)]);
    assert_one_line_error(
        &o,
        &[
            "big.toml",
            "(cell a02-relu-s0)",
            "sweep.architectures[1]",
            "needs about",
        ],
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("config.toml"));
    assert!(!out.exists(), "the sweep directory was created");
    let cfg = write_config(
        tmp.path(),
        "bad.toml",
        &SWEEP.replace("\"tanh\"", "\"tanhh\""),
    );
    let o = cli(&["sweep", "--config", s(&cfg), "--out", s(&out)]);
    assert_one_line_error(&o, &["bad.toml", "sweep.methods[1]", "tanhh"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("model."));
}

/// Sweep message: `sweep` exited 2 on Ctrl-C where `train` exits 130.
#[cfg(unix)]
#[test]
fn sweep_exits_130_on_ctrl_c_as_train_does() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 200, 40);
    let text = format!(
        "[sweep]\narchitectures = [[8]]\nmethods = [\"relu\"]\n[phase1]\nepochs = 400\nlr = 0.01\n[phase2]\nepochs = 400\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nclasses = 2\ndir = {:?}\n",
        s(&data)
    );
    let cfg = write_config(tmp.path(), "long.toml", &text);
    let out = tmp.path().join("sweep");
    let o = interrupt_after(
        &["sweep", "--config", s(&cfg), "--out", s(&out)],
        &out.join("cells/a01-relu-s0/metrics.csv"),
        3,
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted at cell a01-relu-s0") && !stderr.contains("error"),
        "{stderr}"
    );
    assert!(out.join("results.csv").is_file());
}

/// A fabricated finished SmartMixed run of `layers` hidden layers of 8 neurons.
fn wide_run(dir: &Path, layers: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut arch = vec!["30".to_string()];
    arch.extend(std::iter::repeat_n("8".to_string(), layers));
    arch.push("2".into());
    let choices = vec![r#"[["relu",5],["tanh",3]]"#; layers].join(",");
    let summary = format!(
        r#"{{"mode":"smartmixed","architecture":[{}],"seed":0,"split_seed":42,"train_samples":100,"validation_samples":10,"test_samples":10,"phases":[{{"phase":"phase1","epochs":2,"best_epoch":2,"validation_loss":0.4,"validation_accuracy":0.9,"test_accuracy":0.9,"test_loss":0.4,"seconds":1.0,"checkpoint":"phase1-best.safetensors"}}],"flush_denormals":true,"threads":2,"final_choices":[{choices}],"seconds":2.0}}"#,
        arch.join(",")
    );
    std::fs::write(dir.join("summary.json"), summary).unwrap();
    std::fs::write(
        dir.join("metrics.csv"),
        "phase,epoch,train_loss,validation_loss,validation_accuracy\nphase1,1,0.5,0.4,0.8\nphase1,2,0.4,0.35,0.9\n",
    )
    .unwrap();
    let mut csv = String::from("epoch,layer,activation,count\n");
    for epoch in 1..=2 {
        for l in 1..=layers {
            csv.push_str(&format!(
                "{epoch},{l},relu,{}\n{epoch},{l},tanh,{}\n",
                4 + epoch,
                4 - epoch
            ));
        }
    }
    std::fs::write(dir.join("choices.csv"), csv).unwrap();
}

/// Item 7: a choices.csv of 6000 layers drew 6000 panels (4.1 GB, abort).
#[test]
fn a_report_of_6000_layers_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    wide_run(&run, 6000);
    let o = cli_within(&["report", s(&run)], Duration::from_secs(120));
    assert_ok(&o);
    let report = run.join("report");
    let mut total = 0;
    for e in std::fs::read_dir(&report).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len();
        total += len;
        assert!(len < 4 << 20, "{:?}: {len} bytes", e.file_name());
    }
    assert!(total < 12 << 20, "{total} bytes");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("6000 hidden layers"), "{md}");
    // 24 bands of 250 layers; every layer chose 5 relu of 8 (62.5%), pooled alike.
    assert!(md.contains("| 1-250 | 62.5% | 37.5% |"), "{md}");
    assert!(md.contains("| 5751-6000 |"), "{md}");
    assert_eq!(md.matches("\n| ").count(), 24 + 2 + 1, "{md}");
    // The PNG is within the pixel bound: 1800 x 3040.
    let decoder = png::Decoder::new(
        std::fs::File::open(report.join("fig3b-shares-over-epochs.png")).unwrap(),
    );
    let info = decoder.read_info().unwrap();
    let (w, h) = (info.info().width, info.info().height);
    assert!(w <= 1800 && h <= 3040, "{w} x {h}");
    // Fig. 3's 24 bands get room for their tick labels (200 + 70 x 24 px, capped at the
    // bound), and a panel names its band as layers.
    let decoder =
        png::Decoder::new(std::fs::File::open(report.join("fig3-activation-shares.png")).unwrap());
    assert_eq!(decoder.read_info().unwrap().info().width, 1800);
    let svg = std::fs::read_to_string(report.join("fig3b-shares-over-epochs.svg")).unwrap();
    assert!(
        svg.contains("layers 1-250"),
        "no `layers 1-250` panel title"
    );
}

/// Item 7: after an aborted report, an earlier report's figure was a 0-byte file; now a
/// report that fails midway (a damaged checkpoint, read after two figures were drawn)
/// leaves every file of the earlier report as it was.
#[test]
fn a_report_that_fails_midway_leaves_the_earlier_report_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = shard(
        &tmp.path().join("sweep"),
        SWEEP,
        &[
            ("a01-relu-s0", summary(0.9, "1")),
            ("a01-smartmixed-s0", summary(0.6, "1")),
        ],
    );
    assert_ok(&cli(&["report", s(&sweep)]));
    let report = sweep.join("report");
    let snapshot = |dir: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot(&report);
    assert!(
        before.iter().any(|(n, _)| n == "fig4-mrr.png"),
        "{before:?}"
    );
    // The ranking flips (so the MRR figure would change) and the SmartMixed cell's
    // checkpoint, read for Fig. 6 after Figs. 4 and 5, is damaged.
    std::fs::write(
        sweep.join("cells/a01-relu-s0/summary.json"),
        summary(0.1, "1"),
    )
    .unwrap();
    std::fs::write(
        sweep.join("cells/a01-smartmixed-s0/phase2-best.safetensors"),
        b"not a checkpoint",
    )
    .unwrap();
    assert_one_line_error(&cli(&["report", s(&sweep)]), &["phase2-best.safetensors"]);
    let after = snapshot(&report);
    assert_eq!(before.len(), after.len());
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        assert!(a == b, "{name} changed");
    }
}

/// Item 5's "checked sums everywhere", in the run report: a summary.json whose counts of
/// one layer add up past 2^64 wrapped (or panicked) into Fig. 3's shares.
#[test]
fn a_report_refuses_counts_that_overflow_naming_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    wide_run(&run, 2);
    let summary = std::fs::read_to_string(run.join("summary.json")).unwrap();
    let huge = format!(
        r#"[["relu",{m}],["tanh",{m}]],[["relu",5],["tanh",3]]"#,
        m = u64::MAX
    );
    let bad = summary.replace(r#"[["relu",5],["tanh",3]],[["relu",5],["tanh",3]]"#, &huge);
    assert_ne!(bad, summary);
    std::fs::write(run.join("summary.json"), bad).unwrap();
    assert_one_line_error(
        &cli(&["report", s(&run)]),
        &[
            "summary.json",
            "final_choices",
            "layers 1",
            "more than 2^64",
        ],
    );
    assert!(!run.join("report/report.md").exists());
}

/// A sweep config of one relu cell for each of two architectures, on `data` (as written).
fn two_arch_sweep(data: &str, phase2_epochs: usize) -> String {
    format!(
        "[sweep]\narchitectures = [[6], [4]]\nmethods = [\"relu\"]\nseeds = [0]\n[phase1]\nepochs = 1\nlr = 0.01\n[phase2]\nepochs = {phase2_epochs}\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nclasses = 2\ndir = {data:?}\n"
    )
}

#[test]
fn shards_of_one_sweep_text_on_different_data_are_not_merged() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);
    // The same text, `dir = "data"`, in two folders whose data differ.
    for (folder, train) in [("a", 120), ("b", 100)] {
        common::synthetic_data(&p(folder).join("data"), train, 40);
        common::write_config(&p(folder), "sweep.toml", &two_arch_sweep("data", 1));
    }
    for (folder, shard) in [("a", "0/2"), ("b", "1/2")] {
        let cfg = p(folder).join("sweep.toml");
        let out = p(&format!("shard-{folder}"));
        common::cli_ok(&[
            "sweep",
            "--config",
            s(&cfg),
            "--out",
            s(&out),
            "--shard",
            shard,
        ]);
    }
    let o = cli(&[
        "sweep",
        "--merge",
        s(&p("shard-a")),
        s(&p("shard-b")),
        "--out",
        s(&p("merged")),
    ]);
    assert_one_line_error(
        &o,
        &["summary.json", "trained on other data", "train items"],
    );
    assert!(!p("merged").join("results.csv").exists());
}

#[test]
fn a_sweep_with_only_refuses_when_unselected_cells_were_trained_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::synthetic_data(&data, 120, 40);
    let cfg = common::write_config(tmp.path(), "sweep.toml", &two_arch_sweep(s(&data), 1));
    let out = tmp.path().join("sweep");
    let sweep_only = |only: &str| {
        cli(&[
            "sweep",
            "--config",
            s(&cfg),
            "--out",
            s(&out),
            "--only",
            only,
        ])
    };
    assert_ok(&sweep_only("arch=1"));
    let recorded = std::fs::read_to_string(out.join("sweep.toml")).unwrap();
    common::write_config(tmp.path(), "sweep.toml", &two_arch_sweep(s(&data), 2));
    let o = sweep_only("arch=2");
    assert_one_line_error(&o, &["a01-relu-s0", "phase2.epochs", "--retrain-changed"]);
    assert_eq!(
        std::fs::read_to_string(out.join("sweep.toml")).unwrap(),
        recorded
    );
    // The same config on other data: refused as well, naming the data.
    common::write_config(tmp.path(), "sweep.toml", &two_arch_sweep(s(&data), 1));
    common::synthetic_data(&data, 100, 40);
    let o = sweep_only("arch=2");
    assert_one_line_error(&o, &["a01-relu-s0", "the data (train items"]);
}

#[test]
fn a_report_ranks_only_the_cells_of_the_recorded_sweep_config() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::synthetic_data(&data, 120, 40);
    let cfg = common::write_config(tmp.path(), "sweep.toml", &two_arch_sweep(s(&data), 1));
    let out = tmp.path().join("sweep");
    let sweep = || common::cli_ok(&["sweep", "--config", s(&cfg), "--out", s(&out)]);
    sweep();
    // The config now has architecture 1 only: architecture 2's finished cell stays on
    // disk, trained under the earlier config, and must not be ranked with this one's.
    let one_arch = two_arch_sweep(s(&data), 1).replace("[[6], [4]]", "[[6]]");
    common::write_config(tmp.path(), "sweep.toml", &one_arch);
    sweep();
    assert!(out.join("cells/a02-relu-s0/summary.json").is_file());
    let report = tmp.path().join("report");
    let o = cli(&["report", s(&out), "--out", s(&report)]);
    assert_ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("not cells of sweep.toml: a02-relu-s0"),
        "{stderr}"
    );
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(md.contains("1 finished cells; 1 architectures"), "{md}");
    assert!(md.contains("Left out: a02-relu-s0"), "{md}");
}
