//! `eval` and `predict` on every data source the trainer reads (issue 20, items 1 and 2):
//! eval on CSV tables, image folders and a run's own test split, labels matched to the
//! model's classes by name (oracle: predict's per-row classes against labels read
//! independently); data with classes the model lacks refused naming both lists; predict
//! on directories with CSV and JSON-lines tables read back by the csv crate and
//! serde_json, against the runtime's own answers.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use smartmixed_infer::Model;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A generator of numbers in [-0.5, 0.5) from `seed` (an LCG: fixed, dependency-free).
fn noise(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed.wrapping_mul(6364136223846793005) ^ 0x9e37_79b9;
    move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    }
}

const SPECIES: [&str; 3] = ["alpha", "beta", "gamma"];

/// `rows` data lines of three separable classes (`size,species,weight`), class `i % 3`.
fn table_lines(rows: usize, seed: u64) -> Vec<String> {
    let mut noise = noise(seed);
    (0..rows)
        .map(|i| {
            let c = i % 3;
            let size = 10.0 * (c as f64 + 1.0) + 3.0 * noise();
            let weight = 2.0 * c as f64 + noise();
            format!("{size:.3},{},{weight:.4}", SPECIES[c])
        })
        .collect()
}

/// Trains a tiny network on `text` (a CSV with a `species` column) into `tmp/run` and
/// exports it; returns (run, model).
fn csv_model(tmp: &Path, text: &str) -> (PathBuf, PathBuf) {
    let data = tmp.join("plants.csv");
    std::fs::write(&data, text).unwrap();
    let cfg = write_config(
        tmp,
        "table.toml",
        &format!(
            "{SMALL}[data]\nfile = {:?}\nlabel = \"species\"\nvalidation_fraction = 0.2\n",
            s(&data)
        ),
    );
    let run = tmp.join("run");
    cli_ok(&["train", "--config", s(&cfg), "--out", s(&run)]);
    let model = tmp.join("model");
    export(&run, &model);
    (run, model)
}

/// `(correct, total)` from eval's "test accuracy: x% (correct/total)" line.
fn eval_counts(stdout: &str) -> (usize, usize) {
    let counts = stdout
        .split("test accuracy: ")
        .nth(1)
        .and_then(|r| r.split('(').nth(1))
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no accuracy in: {stdout}"));
    let (c, n) = counts.split_once('/').unwrap();
    (c.parse().unwrap(), n.parse().unwrap())
}

/// Predict's CSV table as records (header first), read by the csv crate.
fn read_csv_table(bytes: &[u8]) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_reader(bytes);
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let records = r.records().collect::<Result<Vec<_>, _>>().unwrap();
    (header, records)
}

#[test]
fn eval_on_a_csv_model_with_its_table_counts_what_predict_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = table_lines(90, 1);
    let text = format!("size,species,weight\n{}\n", lines.join("\n"));
    let (run, model) = csv_model(tmp.path(), &text);

    // The table to evaluate: rows reversed (labels first seen as gamma, beta, alpha, the
    // reverse of the model's sorted classes) and columns reordered, so that matching by
    // position instead of by name gives another count.
    let shuffled = tmp.path().join("shuffled.csv");
    let mut out = String::from("weight,size,species\n");
    for line in lines.iter().rev() {
        let f: Vec<&str> = line.split(',').collect();
        out.push_str(&format!("{},{},{}\n", f[2], f[0], f[1]));
    }
    std::fs::write(&shuffled, &out).unwrap();
    let eval = cli_ok(&["eval", "--model", s(&model), "--data", s(&shuffled)]);
    let (correct, total) = eval_counts(&eval);
    assert_eq!(total, 90, "{eval}");
    assert!(
        eval.contains("0 alpha: ") && eval.contains("2 gamma: "),
        "{eval}"
    );

    // Oracle: predict's class per row (its CSV, read by the csv crate) against the labels
    // read by the csv crate from the file.
    let predicted = cli_ok(&[
        "predict",
        "--model",
        s(&model),
        s(&shuffled),
        "--format",
        "csv",
    ]);
    let (header, rows) = read_csv_table(predicted.as_bytes());
    assert_eq!(header, ["input", "item", "class", "name", "probability"]);
    let mut truth = csv::Reader::from_path(&shuffled).unwrap();
    let labels: Vec<String> = truth.records().map(|r| r.unwrap()[2].to_string()).collect();
    assert_eq!(rows.len(), labels.len());
    let mut right = 0;
    for (i, (row, label)) in rows.iter().zip(&labels).enumerate() {
        assert_eq!((&row[0], &row[1]), (s(&shuffled), &*i.to_string()));
        right += usize::from(&row[3] == label);
    }
    assert_eq!(correct, right, "eval {eval}");
    assert!(
        2 * right > total,
        "{right}/{total}: too few right to tell matchings apart"
    );

    // Two columns besides the model's features: which is the label must be said.
    let noted = tmp.path().join("noted.csv");
    let mut text = String::from("weight,note,size,species\n");
    for line in out.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        text.push_str(&format!("{},7,{},{}\n", f[0], f[1], f[2]));
    }
    std::fs::write(&noted, text).unwrap();
    assert_one_line_error(
        &cli(&["eval", "--model", s(&model), "--data", s(&noted)]),
        &[
            "noted.csv",
            "columns note, species are not features",
            "--label",
        ],
    );
    let labelled = [
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&noted),
        "--label",
        "species",
    ];
    assert_eq!(eval_counts(&cli_ok(&labelled)), (correct, total));

    // --run: the run's own test split, as training measured it.
    let summary = summary_json(&run);
    let n = summary["test_samples"].as_u64().unwrap() as usize;
    let accuracy = summary["phases"][1]["test_accuracy"].as_f64().unwrap();
    let eval = cli_ok(&["eval", "--model", s(&model), "--run", s(&run)]);
    assert_eq!(
        eval_counts(&eval),
        ((accuracy * n as f64).round() as usize, n),
        "{eval}"
    );
    assert!(eval.starts_with("data: the test split of "), "{eval}");
    let cfg = tmp.path().join("table.toml");
    assert_eq!(
        eval_counts(&cli_ok(&[
            "eval",
            "--model",
            s(&model),
            "--config",
            s(&cfg)
        ])),
        eval_counts(&eval)
    );

    // The table edited since (its rows reordered): the run's "test split" would now hold
    // rows it trained on, so --run is refused, naming the run and what changed.
    let data = tmp.path().join("plants.csv");
    let text = std::fs::read_to_string(&data).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    assert_one_line_error(
        &cli(&["eval", "--model", s(&model), "--run", s(&run)]),
        &["run", "not what the run trained and tested on", "--data"],
    );
}

/// A 6 x 5 grey PGM whose rows `2k, 2k + 1` are bright (class `k`), with noise.
fn band_pgm(path: &Path, k: usize, seed: u64) {
    let mut noise = noise(seed);
    let mut bytes = b"P5\n5 6\n255\n".to_vec();
    for p in 0..30 {
        let bright = p / 10 == k;
        let base = if bright { 200.0 } else { 30.0 };
        bytes.push((base + 60.0 * noise()) as u8);
    }
    std::fs::write(path, bytes).unwrap();
}

/// The bands, in band order (sorted names: bottom, middle, top are bands 2, 1, 0).
const BANDS: [&str; 3] = ["top", "middle", "bottom"];

/// `dir/<split>/<band>/NN.pgm`, `n` images per class for each of `classes`.
fn band_folder(dir: &Path, split: &str, classes: &[&str], n: usize, seed: u64) {
    for class in classes {
        let k = BANDS.iter().position(|b| b == class).unwrap_or(0);
        let d = dir.join(split).join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            band_pgm(&d.join(format!("{i:02}.pgm")), k, seed * 1000 + i as u64);
        }
    }
}

/// A model trained on a three-band image folder (classes bottom, middle, top).
fn folder_model(tmp: &Path) -> PathBuf {
    let data = tmp.join("bands");
    band_folder(&data, "train", &BANDS, 40, 1);
    band_folder(&data, "test", &BANDS, 5, 2);
    let cfg = write_config(
        tmp,
        "bands.toml",
        &format!(
            "[model]\nhidden = [8]\n[phase1]\nepochs = 2\nlr = 0.02\n[phase2]\nepochs = 2\nlr = 0.02\n[training]\nbatch_size = 8\n[data]\ndir = {:?}\n",
            s(&data)
        ),
    );
    let run = tmp.join("run");
    cli_ok(&["train", "--config", s(&cfg), "--out", s(&run)]);
    let model = tmp.join("model");
    export(&run, &model);
    model
}

#[test]
fn eval_on_a_folder_model_matches_folder_classes_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = folder_model(tmp.path());
    // Only two of the three classes: `middle` and `top` are the data's classes 0 and 1,
    // the model's 1 and 2.
    let subset = tmp.path().join("subset");
    band_folder(&subset, "test", &["top", "middle"], 12, 3);
    let eval = cli_ok(&["eval", "--model", s(&model), "--data", s(&subset)]);
    let (correct, total) = eval_counts(&eval);
    assert_eq!(total, 24, "{eval}");
    assert!(
        eval.contains("0 bottom: no items") && eval.contains("2 top: "),
        "{eval}"
    );
    // Oracle: predict's class names for each folder's images (JSON lines, serde_json).
    let mut right = 0;
    for class in ["middle", "top"] {
        let answers = cli_ok(&[
            "predict",
            "--model",
            s(&model),
            s(&subset.join("test").join(class)),
            "--format",
            "jsonl",
        ]);
        let lines: Vec<serde_json::Value> = answers
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 12);
        right += lines.iter().filter(|l| l["name"] == class).count();
    }
    assert_eq!(correct, right, "{eval}");
    assert!(
        2 * right > total,
        "{right}/{total}: too few right to tell matchings apart"
    );
}

#[test]
fn eval_refuses_data_whose_classes_the_model_lacks_naming_both_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let model = folder_model(tmp.path());
    let extra = tmp.path().join("extra");
    band_folder(&extra, "test", &["top", "left"], 2, 4);
    assert_one_line_error(
        &cli(&["eval", "--model", s(&model), "--data", s(&extra)]),
        &[
            "classes left, top, but the model",
            "has classes bottom, middle, top: left not among them",
        ],
    );
    // IDX digits are the classes named "0", "1": not a folder model's names (this gave
    // 9.56% on MNIST, matched by position).
    let idx = tmp.path().join("idx");
    synthetic_data(&idx, 4, 4);
    assert_one_line_error(
        &cli(&["eval", "--model", s(&model), "--data-dir", s(&idx)]),
        &[
            "classes 0, 1, but the model",
            "has classes bottom, middle, top: 0, 1 not among them",
        ],
    );
    // An IDX model reads the same directory through --data as through --data-dir.
    let (_, idx_model, data) = small_model(&tmp.path().join("m"));
    let by_dir = cli_ok(&["eval", "--model", s(&idx_model), "--data-dir", s(&data)]);
    let by_data = cli_ok(&["eval", "--model", s(&idx_model), "--data", s(&data)]);
    assert_eq!(by_dir, by_data);
    assert_eq!(eval_counts(&by_dir).1, 60, "{by_dir}");
}

/// The raw values of a PGM as the runtime takes them.
fn pixels(path: &Path) -> Vec<f32> {
    let img = smartmixed_train::data::image::read_image(path, 1 << 20).unwrap();
    img.pixels.iter().map(|&p| f32::from(p)).collect()
}

#[test]
fn predict_on_a_directory_writes_tables_an_independent_reader_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = folder_model(tmp.path());
    let model = Model::load_dir(&model_dir).unwrap();
    let dir = tmp.path().join("mixed");
    band_folder(&dir, "probe", &BANDS, 2, 5); // probe/<band>/00.pgm, 01.pgm
    let images = dir.join("probe/top");
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    std::fs::create_dir_all(images.join("nested")).unwrap();
    let files = [images.join("00.pgm"), images.join("01.pgm")];
    let extra = dir.join("probe/bottom/00.pgm");

    // CSV: one row per image, the directory's sorted images then the file given after it.
    let out = tmp.path().join("out.csv");
    let args = ["predict", "--model", s(&model_dir), s(&images), s(&extra)];
    let mut csv_args = args.to_vec();
    csv_args.extend(["--format", "csv", "--probabilities", "--output", s(&out)]);
    assert_eq!(cli_ok(&csv_args), "", "the table goes to --output");
    let (header, rows) = read_csv_table(&std::fs::read(&out).unwrap());
    assert_eq!(
        header,
        [
            "input",
            "item",
            "class",
            "name",
            "probability",
            "p_bottom",
            "p_middle",
            "p_top"
        ]
    );
    let inputs = [&files[0], &files[1], &extra];
    assert_eq!(rows.len(), 3);
    for (row, input) in rows.iter().zip(inputs) {
        let want = model.predict_raw(&pixels(input)).unwrap();
        assert_eq!((&row[0], &row[1]), (s(input), "0"));
        assert_eq!(row[2].parse::<usize>().unwrap(), want.class);
        assert_eq!(row[3], model.class_name(want.class));
        let probs: Vec<f32> = (5..8).map(|c| row[c].parse().unwrap()).collect();
        assert_eq!(probs, want.probabilities, "every digit of each probability");
        let sum: f32 = probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{probs:?}");
        assert_eq!(row[4].parse::<f32>().unwrap(), probs[want.class]);
    }

    // JSON lines with the top 3, most probable first, and every probability.
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "jsonl", "--top-k", "3", "--probabilities"]);
    let answers = cli_ok(&json_args);
    let lines: Vec<serde_json::Value> = answers
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, row) in lines.iter().zip(&rows) {
        assert_eq!(line["input"], row[0]);
        assert_eq!(line["class"].to_string(), row[2]);
        let probs: Vec<f64> = line["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["class"], line["class"], "the best class first");
        let mut order: Vec<usize> = (0..3).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        for (t, &c) in top.iter().zip(&order) {
            assert_eq!(t["class"], c);
            assert_eq!(t["name"], model.class_name(c));
            assert_eq!(t["probability"].as_f64().unwrap(), probs[c]);
        }
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    }
    // --top-k 2 keeps the first two of them; more than the classes is refused.
    let mut two = args.to_vec();
    two.extend(["--format", "jsonl", "--top-k", "2"]);
    let first: serde_json::Value =
        serde_json::from_str(cli_ok(&two).lines().next().unwrap()).unwrap();
    assert_eq!(
        first["top"].as_array().unwrap()[..],
        lines[0]["top"].as_array().unwrap()[..2]
    );
    assert!(first.get("probabilities").is_none());
    let mut four = args.to_vec();
    four.extend(["--top-k", "4"]);
    assert_one_line_error(&cli(&four), &["--top-k 4", "the model has 3 classes"]);

    // Text lines name their file when there are several.
    let text = cli_ok(&args);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .starts_with(&format!("{}: image 0: class ", s(&files[0]))),
        "{text}"
    );
}

#[test]
fn one_bad_file_among_many_is_named_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let model = folder_model(tmp.path());
    let dir = tmp.path().join("probe");
    band_folder(&dir, "x", &["top"], 3, 6);
    let images = dir.join("x/top");
    let bad = images.join("01.pgm");
    std::fs::write(&bad, b"P5\n5 6\n255\nshort").unwrap();
    let out = tmp.path().join("out.jsonl");
    let o = cli(&[
        "predict",
        "--model",
        s(&model),
        s(&images),
        "--format",
        "jsonl",
        "--output",
        s(&out),
    ]);
    assert_one_line_error(&o, &["01.pgm"]);
    assert!(!out.exists(), "a table was written");
    assert!(o.stdout.is_empty());
    // A directory without images says so.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_one_line_error(
        &cli(&["predict", "--model", s(&model), s(&empty)]),
        &["empty", "no .png or .pgm image"],
    );
}
