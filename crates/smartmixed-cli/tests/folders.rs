//! Image folders (torchvision's ImageFolder layout) end to end through the binary: train,
//! class names from the folder names, predict an image by name; and each bad folder
//! refused in one line naming the file or folder.

mod common;

use std::path::Path;

use common::{assert_one_line_error, cli, cli_ok, export, root, summary_json, write_config};
use smartmixed_train::data::Dataset;

const NAMES: [&str; 10] = [
    "eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero",
];

/// The class name of MNIST digit `d`.
fn name(d: u8) -> &'static str {
    [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ][d as usize]
}

fn pgm(path: &Path, w: usize, h: usize, pixels: &[u8]) {
    let mut bytes = format!("P5\n{w} {h}\n255\n").into_bytes();
    bytes.extend_from_slice(pixels);
    std::fs::write(path, bytes).unwrap();
}

/// `train` and `test` folders of MNIST test images as PGMs, `per_split` of each.
fn image_folder(dir: &Path, train: usize, test: usize) {
    let mnist = Dataset::load_test(&root().join("data/mnist"), 10).unwrap();
    for (split, range) in [("train", 0..train), ("test", train..train + test)] {
        for i in range {
            let class = dir.join(split).join(name(mnist.labels()[i]));
            std::fs::create_dir_all(&class).unwrap();
            pgm(&class.join(format!("{i:05}.pgm")), 28, 28, mnist.image(i));
        }
    }
}

fn train(tmp: &Path, data: &Path) -> std::process::Output {
    let text = format!(
        "[model]\nhidden = [32]\n[phase1]\nepochs = 2\nlr = 0.003\n[phase2]\nepochs = 2\nlr = 0.003\n[training]\nbatch_size = 32\n[data]\ndir = {:?}\n",
        data.display().to_string()
    );
    let cfg = write_config(tmp, "folder.toml", &text);
    let out = tmp.join(format!(
        "run-{}",
        data.file_name().unwrap().to_string_lossy()
    ));
    cli(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn a_model_trained_from_an_image_folder_names_its_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    image_folder(&data, 1500, 300);
    let o = train(tmp.path(), &data);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = tmp.path().join("run-digits");
    let summary = summary_json(&run);
    assert_eq!(
        summary["class_names"],
        serde_json::json!(NAMES),
        "sorted folder names"
    );
    assert_eq!(summary["input"]["shape"], serde_json::json!([28, 28]));
    assert_eq!(summary["test_samples"], 300);
    let acc = summary["phases"][1]["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.7, "test accuracy {acc}");
    let model = tmp.path().join("model");
    export(&run, &model);
    // The first test image of the seven folder, predicted by name.
    let seven = std::fs::read_dir(data.join("test/seven"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = cli_ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        seven.to_str().unwrap(),
    ]);
    assert!(
        out.starts_with("image 0: class ") && out.contains("seven:"),
        "{out}"
    );
}

#[test]
fn bad_image_folders_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let d = tmp.path().join(name);
        image_folder(&d, 200, 100);
        d
    };
    let mixed = make("mixed");
    let odd = mixed.join("train/one/odd.pgm");
    pgm(&odd, 27, 28, &[0; 27 * 28]);
    assert_one_line_error(
        &train(tmp.path(), &mixed),
        &["odd.pgm", "27 x 28 pixels, the others are 28 x 28"],
    );
    let empty = make("empty");
    std::fs::create_dir_all(empty.join("train/ten")).unwrap();
    assert_one_line_error(
        &train(tmp.path(), &empty),
        &["train/ten", "no .png or .pgm image"],
    );
    let unknown = make("unknown");
    std::fs::create_dir_all(unknown.join("test/eleven")).unwrap();
    assert_one_line_error(
        &train(tmp.path(), &unknown),
        &["test/eleven", "class `eleven` is not among train's"],
    );
    let broken = make("broken");
    std::fs::write(broken.join("train/two/broken.png"), b"\x89PNG\r\n\x1a\nxx").unwrap();
    assert_one_line_error(&train(tmp.path(), &broken), &["broken.png"]);
}

/// A 4 x 4 RGB PNG of one colour, with a little per-pixel variation.
fn rgb_png(path: &Path, rgb: [u8; 3], seed: u8) {
    let mut data = Vec::new();
    for i in 0..16u8 {
        let jitter = i.wrapping_mul(7).wrapping_add(seed) % 24;
        data.extend(rgb.iter().map(|&c| c.saturating_add(jitter)));
    }
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, 4, 4);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&data)
        .unwrap();
}

/// Red and blue of the same luma differ only in colour: with `data.channels = 3` the
/// network sees the channels (input shape [4, 4, 3]) and tells them apart.
#[test]
fn rgb_folders_keep_their_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("colours");
    // Luma 0.299 r + 0.587 g + 0.114 b: red (180, 30, 40) and blue (40, 60, 255) both
    // about 76, so the grey images of the two classes overlap.
    for (class, rgb) in [("blue", [40, 60, 255]), ("red", [180, 30, 40])] {
        for split in ["train", "test"] {
            let dir = data.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..40u8 {
                rgb_png(&dir.join(format!("{i}.png")), rgb, i);
            }
        }
    }
    let text = format!(
        "[model]\nhidden = [8]\n[phase1]\nepochs = 5\nlr = 0.01\n[phase2]\nepochs = 5\nlr = 0.01\n[training]\nbatch_size = 8\n[data]\ndir = {:?}\nchannels = 3\n",
        data.display().to_string()
    );
    let cfg = write_config(tmp.path(), "rgb.toml", &text);
    let run = tmp.path().join("run");
    cli_ok(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let summary = summary_json(&run);
    assert_eq!(summary["input"]["shape"], serde_json::json!([4, 4, 3]));
    assert_eq!(summary["class_names"], serde_json::json!(["blue", "red"]));
    assert_eq!(summary["phases"][1]["test_accuracy"], 1.0);
    let model = tmp.path().join("model");
    export(&run, &model);
    let probe = tmp.path().join("probe.png");
    rgb_png(&probe, [180, 30, 40], 3);
    let out = cli_ok(&[
        "predict",
        "--model",
        model.to_str().unwrap(),
        probe.to_str().unwrap(),
    ]);
    assert!(out.starts_with("image 0: class red "), "{out}");
}
