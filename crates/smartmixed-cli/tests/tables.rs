//! CSV tables end to end through the binary: train on a table, export a manifest that
//! describes its input (feature names, standardisation) and classes, predict rows from a
//! CSV through the CLI and through the runtime API with the same answers; and each bad
//! table refused in one line naming the file, line and column.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_one_line_error, cli, cli_ok, export, summary_json, write_config};
use smartmixed_infer::Model;

const CLASSES: [&str; 3] = ["alpha", "beta", "gamma"];

/// `rows` rows of three separable classes; feature scales differ by 10^4, so only a
/// standardised network learns from every feature quickly.
fn table(rows: usize, seed: u64) -> String {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut noise = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    let mut text = String::from("size,species,weight,ratio\n");
    for i in 0..rows {
        let c = i % 3;
        let size = 100.0 * (c as f64 + 1.0) + 30.0 * noise();
        let weight = 2.0 * c as f64 + noise();
        let ratio = 0.01 * (2.0 - c as f64) + 0.004 * noise();
        text.push_str(&format!(
            "{size:.3},{},{weight:.4},{ratio:.5}\n",
            CLASSES[c]
        ));
    }
    text
}

fn config(tmp: &Path, file: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "[model]\nhidden = [16, 8]\n[phase1]\nepochs = 4\nlr = 0.01\n[phase2]\nepochs = 4\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nfile = {:?}\nlabel = \"species\"\nvalidation_fraction = 0.2\n{extra}",
        file.display().to_string()
    );
    write_config(tmp, "table.toml", &text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_model_trained_from_csv_predicts_csv_rows_through_the_cli_and_the_runtime_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("plants.csv");
    std::fs::write(&data, table(300, 1)).unwrap();
    let run = tmp.path().join("run");
    cli_ok(&[
        "train",
        "--config",
        s(&config(tmp.path(), &data, "")),
        "--out",
        s(&run),
    ]);
    let summary = summary_json(&run);
    assert_eq!(summary["class_names"], serde_json::json!(CLASSES));
    assert_eq!(
        summary["input"]["feature_names"],
        serde_json::json!(["size", "weight", "ratio"])
    );
    assert_eq!(summary["test_samples"], 60, "a stratified fifth held out");
    let acc = summary["phases"][1]["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "test accuracy {acc}");

    let model_dir = tmp.path().join("model");
    export(&run, &model_dir);
    let out = cli_ok(&["inspect", "--model", s(&model_dir)]);
    assert!(
        out.contains("features: size, weight, ratio")
            && out.contains("classes: alpha, beta, gamma"),
        "{out}"
    );
    // The manifest's standardisation is the training split's: its means sit near the
    // generator's (size around 200, weight around 2, ratio around 0.01).
    let model = Model::load_dir(&model_dir).unwrap();
    let input = model.input_description();
    assert!(
        (input.mean[0] - 200.0).abs() < 15.0 && (input.mean[1] - 2.0).abs() < 0.3,
        "{input:?}"
    );
    assert!(input.std.iter().all(|&s| s > 0.0));

    // Rows to classify: columns in another order, the label column kept (ignored).
    let rows = tmp.path().join("rows.csv");
    let fresh = table(12, 99);
    let mut shuffled = String::from("ratio,species,size,weight\n");
    let mut expected = Vec::new();
    for line in fresh.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        shuffled.push_str(&format!("{},{},{},{}\n", f[3], f[1], f[0], f[2]));
        let raw: Vec<f32> = [f[0], f[2], f[3]]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let p = model.predict_raw(&raw).unwrap();
        expected.push((model.class_name(p.class), f[1].to_string()));
    }
    std::fs::write(&rows, shuffled).unwrap();
    let out = cli_ok(&["predict", "--model", s(&model_dir), s(&rows)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 12, "{out}");
    let mut right = 0;
    for (i, (line, (class, truth))) in lines.iter().zip(&expected).enumerate() {
        assert!(
            line.starts_with(&format!("row {i}: class {class} (p = ")),
            "{line} vs {class}"
        );
        right += usize::from(class == truth);
    }
    assert!(right >= 10, "{right}/12 rows right");
}

#[test]
fn bad_tables_are_refused_in_one_line_naming_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let train = |name: &str, text: &str, extra: &str| {
        let data = tmp.path().join(name);
        std::fs::write(&data, text).unwrap();
        let cfg = config(tmp.path(), &data, extra);
        cli(&[
            "train",
            "--config",
            s(&cfg),
            "--out",
            s(&tmp.path().join(format!("run-{name}"))),
        ])
    };
    let good = table(60, 3);
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    lines[2].push_str(",9"); // file line 3
    let ragged = lines.join("\n");
    assert_one_line_error(
        &train("ragged.csv", &ragged, ""),
        &["ragged.csv", "line 3", "5 fields, expected 4"],
    );
    let word = good
        .replacen(",beta,", ",beta,heavy", 1)
        .replacen("heavy", "", 0);
    let _ = word;
    let text = good.replacen(",alpha,", ",alpha,x", 1);
    assert_one_line_error(
        &train("word.csv", &text, ""),
        &["word.csv", "line 2", "column `weight`", "is not a number"],
    );
    let one_row = "size,species,weight,ratio\n1,alpha,2,3\n";
    assert_one_line_error(
        &train("one.csv", one_row, ""),
        &["one.csv", "holds 1 classes, expected 2 to 256"],
    );
    let two_rows = "size,species,weight,ratio\n1,alpha,2,3\n1,beta,2,3\n";
    assert_one_line_error(
        &train("two.csv", two_rows, ""),
        &["two.csv", "leaves no", "expected more rows"],
    );
    // An unknown label in the test file names the row and the classes.
    let test = tmp.path().join("test.csv");
    std::fs::write(&test, table(6, 5).replacen("gamma", "delta", 1)).unwrap();
    let extra = format!("test_file = {:?}\n", test.display().to_string());
    assert_one_line_error(
        &train("known.csv", &good, &extra),
        &[
            "test.csv",
            "data row 3: label `delta` is not a class",
            "alpha, beta, gamma",
        ],
    );
    // A missing label column, and a CSV format without a label.
    let no_label = good.replace("species", "kind");
    assert_one_line_error(
        &train("nolabel.csv", &no_label, ""),
        &["nolabel.csv", "line 1: no column `species`"],
    );
    let data = tmp.path().join("x.csv");
    std::fs::write(&data, &good).unwrap();
    let cfg = write_config(
        tmp.path(),
        "nolabel.toml",
        &format!(
            "[model]\nhidden = [4]\n[data]\nfile = {:?}\n",
            data.display().to_string()
        ),
    );
    assert_one_line_error(
        &cli(&[
            "train",
            "--config",
            s(&cfg),
            "--out",
            s(&tmp.path().join("r")),
        ]),
        &["nolabel.toml", "data.label"],
    );
    // Dropping rows with bad cells instead.
    let text = good.replacen(",alpha,", ",alpha,x", 1);
    let o = train("dropped.csv", &text, "invalid = \"drop\"\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
