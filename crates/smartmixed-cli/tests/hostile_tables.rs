//! Hostile or careless CSV tables given to the binary (issue 18, items 1 and 8, and the
//! table messages): each ends in a one-line error naming the file and what is wrong, never
//! a table read differently by `train` and `predict`, nor memory spent on a file without
//! line ends.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{assert_one_line_error, cli, cli_within, export, write_config};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `rows` rows of two separable classes under `header` (three columns: two features and
/// `species`, in the header's order).
fn table(header: &str, rows: usize) -> String {
    let mut text = format!("{header}\n");
    for i in 0..rows {
        let c = i % 2;
        let (a, b) = (c as f64 * 4.0 + (i % 7) as f64 * 0.1, 1.0 - c as f64);
        let label = ["alpha", "beta"][c];
        let cells: Vec<String> = header
            .split(',')
            .enumerate()
            .map(|(k, name)| match (k, name.trim()) {
                (_, "species") => label.to_string(),
                (0, _) => format!("{a:.2}"),
                _ => format!("{b:.2}"),
            })
            .collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    text
}

/// A config training a tiny network on `file`, with `extra` lines in `[data]`.
fn config(tmp: &Path, file: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "[model]\nhidden = [4]\n[phase1]\nepochs = 1\nlr = 0.01\n[phase2]\nepochs = 1\nlr = 0.01\n[training]\nbatch_size = 16\n[data]\nfile = {:?}\nlabel = \"species\"\nvalidation_fraction = 0.2\n{extra}",
        s(file)
    );
    write_config(tmp, "table.toml", &text)
}

/// `train` on a table holding `text`, named `name`.
fn train_on(tmp: &Path, name: &str, text: &str, extra: &str) -> Output {
    let data = tmp.join(name);
    std::fs::write(&data, text).unwrap();
    train_file(tmp, &data, extra)
}

fn train_file(tmp: &Path, data: &Path, extra: &str) -> Output {
    let cfg = config(tmp, data, extra);
    cli(&["train", "--config", s(&cfg), "--out", s(&tmp.join("run"))])
}

/// Item 1: `a,a,label` trained on both columns while predict read the first twice.
#[test]
fn a_repeated_feature_name_is_refused_naming_the_file_line_1_and_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let out = train_on(tmp.path(), "twice.csv", &table("a,a,species", 40), "");
    assert_one_line_error(
        &out,
        &[
            "twice.csv",
            "line 1: column `a` appears twice (columns 1 and 2)",
        ],
    );
    // Names are compared after trimming, as the reader gives them.
    let out = train_on(tmp.path(), "spaced.csv", &table(" a,species,a ", 40), "");
    assert_one_line_error(&out, &["spaced.csv", "column `a` appears twice"]);
}

/// A second label column was read as a feature: "`alpha` is not a number".
#[test]
fn a_repeated_label_column_is_refused_not_read_as_a_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let text = table("a,species,species", 40);
    let out = train_on(tmp.path(), "labels.csv", &text, "");
    assert_one_line_error(
        &out,
        &[
            "labels.csv",
            "line 1: column `species` appears twice (columns 2 and 3)",
        ],
    );
}

/// An unterminated quote made the rest of the file one label: "holds 1 classes".
#[test]
fn an_unterminated_quote_is_named_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = table("a,b,species", 40).lines().map(String::from).collect();
    lines[3] = "1,2,\"alpha".into(); // file line 4
    let out = train_on(tmp.path(), "quote.csv", &lines.join("\n"), "");
    assert_one_line_error(&out, &["quote.csv", "line 4: unterminated quote"]);
}

/// A `model.inputs` mismatch on a table reported "data/mnist: the images have 5 pixels".
#[test]
fn model_inputs_on_a_table_names_the_table_and_its_feature_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("plants.csv");
    std::fs::write(&data, table("a,species,b", 40)).unwrap();
    let cfg = config(tmp.path(), &data, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("hidden = [4]", "hidden = [4]\ninputs = 7");
    let cfg = write_config(tmp.path(), "inputs.toml", &text);
    let out = cli(&[
        "train",
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("r7")),
    ]);
    assert_one_line_error(
        &out,
        &["plants.csv: model.inputs = 7, but the table has 2 feature columns"],
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("mnist"));
}

/// A `data.file` not ending in `.csv` fell back to "data/mnist does not exist".
#[test]
fn a_table_not_named_csv_is_named_or_read_as_the_format_says() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("plants.txt");
    std::fs::write(&data, table("a,species,b", 40)).unwrap();
    let out = train_file(tmp.path(), &data, "");
    assert_one_line_error(
        &out,
        &[
            "table.toml",
            "data.file: `",
            "plants.txt` is read only as a CSV table",
        ],
    );
    // An explicit format reads it as a table, and trains.
    let out = train_file(tmp.path(), &data, "format = \"csv\"\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Item 8: `/dev/zero` as a table reached 2.1 GB before the size limit refused it.
#[test]
fn a_table_without_line_ends_is_refused_at_line_1() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), Path::new("/dev/zero"), "format = \"csv\"\n");
    let out = cli_within(
        &[
            "train",
            "--config",
            s(&cfg),
            "--out",
            s(&tmp.path().join("run")),
        ],
        Duration::from_secs(30),
    );
    assert_one_line_error(&out, &["/dev/zero: line 1 is longer than 1048576 bytes"]);
}

/// Predict's reader follows training's rules: a short row says how many fields (it said
/// "`` is not a number"), a repeated name is refused, a file without line ends stops.
#[test]
fn predict_reads_rows_by_the_rules_training_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let out = train_on(
        tmp.path(),
        "plants.csv",
        &table("size,species,weight", 60),
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = tmp.path().join("model");
    export(&tmp.path().join("run"), &model);
    let predict = |name: &str, text: &str| {
        let rows = tmp.path().join(name);
        std::fs::write(&rows, text).unwrap();
        cli(&["predict", "--model", s(&model), s(&rows)])
    };
    let out = predict("good.csv", "weight,size\n1,0.5\n0,4.2\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_one_line_error(
        &predict("short.csv", "weight,size,species\n1,0.5,alpha\n0\n"),
        &["short.csv: line 3: 1 fields, expected 3 as in the header"],
    );
    assert_one_line_error(
        &predict("twice.csv", "size,weight, size\n1,0.5,4\n"),
        &["twice.csv: line 1: column `size` appears twice (columns 1 and 3)"],
    );
    #[cfg(unix)]
    {
        let zero = tmp.path().join("zero.csv");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let out = cli_within(
            &["predict", "--model", s(&model), s(&zero)],
            Duration::from_secs(30),
        );
        assert_one_line_error(&out, &["zero.csv: line 1 is longer than 1048576 bytes"]);
    }
}

#[test]
fn line_numbers_count_crlf_and_cr_line_ends_as_one() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, end) in [("crlf.csv", "\r\n"), ("cr.csv", "\r"), ("lf.csv", "\n")] {
        let text = table("a,b,species", 20).replace('\n', end);
        // Line 5 (the header is line 1): a cell that is no number.
        let mut lines: Vec<&str> = text.split(end).collect();
        lines[4] = "x,1.00,alpha";
        let o = train_on(tmp.path(), name, &lines.join(end), "");
        assert_one_line_error(&o, &[name, "line 5: column `a`"]);
    }
}

#[test]
fn dropped_rows_are_counted_and_overflowing_standardisation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = table("a,b,species", 40);
    text.push_str("1,2;5,alpha\n1;5,2,beta\n");
    let o = train_on(tmp.path(), "drop.csv", &text, "invalid = \"drop\"\n");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("left out 2 table row(s)"));
    assert_eq!(
        common::summary_json(&tmp.path().join("run"))["dropped_rows"],
        2
    );
    // A test row whose huge cell overflows once standardised: scored, its NaN logits had
    // given a test accuracy and a summary.json that could not be read back.
    let test = tmp.path().join("test.csv");
    let mut rows = table("a,b,species", 10);
    rows.push_str("4.00,3e38,alpha\n");
    std::fs::write(&test, rows).unwrap();
    std::fs::remove_dir_all(tmp.path().join("run")).unwrap();
    let extra = format!("test_file = {:?}\n", s(&test));
    let o = train_on(tmp.path(), "train.csv", &table("a,b,species", 40), &extra);
    assert_one_line_error(
        &o,
        &["test.csv", "test item 10, feature `b`", "3e38 becomes inf"],
    );
}

/// A column of Unix times (1.7e9 + 10 k) rounds to steps of 128 in f32 as it is read:
/// training goes on (the model sees what f32 holds, as the runtime will), but says so,
/// naming the file and the column; an ordinary column is not named.
#[test]
fn a_column_that_f32_cannot_hold_is_named_in_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("time,width,species\n");
    for i in 0..120 {
        let c = i % 2;
        text.push_str(&format!(
            "{},{:.2},{}\n",
            1_700_000_000 + 10 * i,
            c as f64 * 4.0 + (i % 7) as f64 * 0.1,
            ["alpha", "beta"][c]
        ));
    }
    let o = train_on(tmp.path(), "times.csv", &text, "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("times.csv: column `time`: values up to 1.70000119e9")
            && warnings[0].contains("subtract an offset"),
        "{err}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let o = train_on(tmp.path(), "plain.csv", &table("a,b,species", 120), "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("warning:"), "{err}");
}
