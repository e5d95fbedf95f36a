//! Hostile input, round two: exported models and what `eval` and `predict` are given. Each
//! test is one defect that once gave a wrong answer with exit 0 (or an error naming the
//! wrong thing): eval ignoring the manifest's preprocessing, manifests that can only give
//! NaN, inputs of the right size but the wrong shape or kind, class folders that are not
//! UTF-8 or missing from test/, class names printed with their control characters.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Copies `model` to `to` with its manifest.toml edited by `edit`, and without the copy
/// of the manifest in the weights' metadata (which would otherwise have to match).
fn edited(model: &Path, to: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    let text = std::fs::read_to_string(model.join("manifest.toml")).unwrap();
    let changed = edit(text.clone());
    assert_ne!(changed, text, "the edit changed nothing");
    std::fs::write(to.join("manifest.toml"), changed).unwrap();
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let out = edit_safetensors_header(&bytes, |h| {
        h.remove("__metadata__");
    });
    std::fs::write(to.join("model.safetensors"), out).unwrap();
    to.to_path_buf()
}

/// The class `predict` prints for each image of `input`, in order.
fn predicted(model: &Path, input: &Path) -> Vec<usize> {
    cli_ok(&["predict", "--model", s(model), s(input)])
        .lines()
        .map(|l| {
            let class = l.split("class ").nth(1).unwrap();
            class.split(' ').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// Eval's confusion matrix (rows: true class) as printed.
fn confusion(eval_output: &str) -> Vec<Vec<usize>> {
    let rows = eval_output
        .lines()
        .skip_while(|l| !l.starts_with("confusion matrix"))
        .skip(2);
    rows.map(|l| {
        l.split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    })
    .collect()
}

/// Defect 2: `eval` preprocessed with the data set's own pixels / 255 while `predict`
/// applied the manifest's: two answers for one model. Oracle: eval's confusion matrix
/// must be the one `predict`'s per-image classes make against the labels, for a manifest
/// whose preprocessing changes the answers (checked, so the test can fail).
#[test]
fn eval_applies_the_manifests_preprocessing_as_predict_does() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, data) = small_model(tmp.path());
    // Top rows darkened and bottom rows brightened: bright-top images look bright-bottom.
    let mut means = vec!["0.9"; 15];
    means.extend(["-0.9"; 15]);
    let means = format!("mean = [{}]\n", means.join(", "));
    let shifted = edited(&model, &tmp.path().join("shifted"), |t| {
        t.replace("divisor = 255.0\n", &format!("divisor = 255.0\n{means}"))
    });
    let images = data.join("t10k-images-idx3-ubyte");
    let before = predicted(&model, &images);
    let after = predicted(&shifted, &images);
    assert_ne!(before, after, "the edited preprocessing changes no answer");
    let mut want = vec![vec![0usize; 2]; 2];
    for (i, &class) in after.iter().enumerate() {
        want[i % 2][class] += 1; // synthetic_data labels image i with i % 2
    }
    let eval = cli_ok(&["eval", "--model", s(&shifted), "--data-dir", s(&data)]);
    assert_eq!(confusion(&eval), want, "{eval}");
}

/// Defect 3: manifests that validated but could only give NaN or infinities (`predict`
/// printed `p = NaN` with exit 0). Every command refuses them, naming the file and field.
#[test]
fn manifests_whose_preprocessing_overflows_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, data) = small_model(tmp.path());
    let list = |first: &str, rest: &str| {
        let mut v = vec![rest; 30];
        v[0] = first;
        format!("[{}]", v.join(", "))
    };
    let cases = [
        ("divisor = 1e-45".to_string(), "input.divisor"),
        (
            format!("divisor = 255.0\nstd = {}", list("1e-45", "1.0")),
            "input.std[0]",
        ),
        (
            format!(
                "divisor = 255.0\nmean = {}\nstd = {}",
                list("3e38", "0.0"),
                list("2e-38", "1.0")
            ),
            "input.std[0]",
        ),
    ];
    let images = data.join("t10k-images-idx3-ubyte");
    for (i, (replacement, field)) in cases.iter().enumerate() {
        let bad = edited(&model, &tmp.path().join(format!("bad{i}")), |t| {
            t.replace("divisor = 255.0", replacement)
        });
        for args in [
            vec!["predict", "--model", s(&bad), s(&images)],
            vec!["eval", "--model", s(&bad), "--data-dir", s(&data)],
            vec!["inspect", "--model", s(&bad)],
        ] {
            assert_one_line_error(&cli(&args), &["manifest.toml", field]);
        }
    }
}

fn pgm(path: &Path, w: usize, h: usize, value: u8) -> PathBuf {
    let mut bytes = format!("P5\n{w} {h}\n255\n").into_bytes();
    bytes.extend(std::iter::repeat_n(value, w * h));
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

fn grey_png(path: &Path, w: u32, h: u32, value: u8) -> PathBuf {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    writer
        .write_image_data(&vec![value; (w * h) as usize])
        .unwrap();
    path.to_path_buf()
}

/// Defect 4: only the number of values was compared, so a 30 x 1 or 5 x 6 image, or IDX
/// images of dims [n, 5, 6], were classified by a 6 x 5 model; a PNG named without
/// `.png` was refused as a bad IDX file; a CSV went to an image model.
#[test]
fn predict_compares_the_full_shape_and_the_kind_of_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, model, _) = small_model(tmp.path());
    let dir = tmp.path();
    let m = s(&model);
    let right = pgm(&dir.join("right.pgm"), 5, 6, 200);
    let answer = cli_ok(&["predict", "--model", m, s(&right)]);
    assert!(answer.starts_with("image 0: class"), "{answer}");
    for (w, h) in [(6, 5), (30, 1), (1, 30)] {
        let wrong = pgm(&dir.join(format!("w{w}x{h}.pgm")), w, h, 200);
        assert_one_line_error(
            &cli(&["predict", "--model", m, s(&wrong)]),
            &[
                &format!("image of {h} x {w} pixels (height x width)"),
                "the model takes 6 x 5 images",
            ],
        );
    }
    // A PNG is read as one whatever its name; same pixels, same answer as the PGM.
    let unnamed = grey_png(&dir.join("no-extension"), 5, 6, 200);
    assert_eq!(cli_ok(&["predict", "--model", m, s(&unnamed)]), answer);
    let wide = grey_png(&dir.join("wide.idx"), 6, 5, 200);
    assert_one_line_error(
        &cli(&["predict", "--model", m, s(&wide)]),
        &["wide.idx", "image of 5 x 6 pixels"],
    );
    // ([2, 6, 5, 1] is the same grey images, and answered: tests/hostile_shapes.rs.)
    for dims in [vec![2u32, 5, 6], vec![2, 30], vec![2, 6, 5, 2]] {
        let path = dir.join(format!("dims{}.idx", dims.len()));
        let values = dims.iter().product::<u32>() as usize;
        std::fs::write(&path, idx_bytes(&dims, &vec![7; values])).unwrap();
        assert_one_line_error(
            &cli(&["predict", "--model", m, s(&path)]),
            &[&format!("IDX images of dims {dims:?}"), "6 x 5 images"],
        );
    }
    let ok = dir.join("ok.idx");
    std::fs::write(&ok, idx_bytes(&[2, 6, 5], &[7; 60])).unwrap();
    assert_eq!(predicted(&model, &ok).len(), 2);
    let csv = dir.join("rows.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    assert_one_line_error(
        &cli(&["predict", "--model", m, s(&csv)]),
        &["rows.csv", "a CSV table, but the model takes images"],
    );
}

/// The other side of defect 4: a 5 x 1 image was read as a row of a 5-feature table.
#[test]
fn a_table_model_refuses_images_of_as_many_values() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("a,b,c,d,e,label\n");
    for i in 0..60 {
        let c = i % 2;
        text.push_str(&format!("{},{},{},1,2,{c}\n", c * 10 + i % 7, i % 5, 3 - c));
    }
    let table = tmp.path().join("t.csv");
    std::fs::write(&table, text).unwrap();
    let cfg = write_config(
        tmp.path(),
        "t.toml",
        &format!(
            "{SMALL}[data]\nfile = {:?}\nlabel = \"label\"\n",
            table.display().to_string()
        ),
    );
    let run = tmp.path().join("run");
    cli_ok(&["train", "--config", s(&cfg), "--out", s(&run)]);
    let model = tmp.path().join("model");
    export(&run, &model);
    let image = pgm(&tmp.path().join("five.pgm"), 5, 1, 3);
    assert_one_line_error(
        &cli(&["predict", "--model", s(&model), s(&image)]),
        &[
            "five.pgm",
            "an image file, but the model takes table rows of 5 features (a, b, c, d, e)",
        ],
    );
    assert_one_line_error(
        &cli(&[
            "eval",
            "--model",
            s(&model),
            "--data-dir",
            s(&tmp.path().join("none")),
        ]),
        &[
            "model",
            "takes table rows of 5 features (a, b, c, d, e), but",
            "holds images: give its CSV table with --data FILE.csv",
        ],
    );
}

/// A 4 x 4 image folder: `train/<class>` and `test/<class>` for each of `test_classes`,
/// images bright for the first class, dark for the others.
fn folder(dir: &Path, classes: &[&std::ffi::OsStr], test_classes: usize) {
    for (split, n, count) in [("train", classes.len(), 24), ("test", test_classes, 6)] {
        for (c, class) in classes.iter().take(n).enumerate() {
            let d = dir.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..count {
                let v = if c == 0 { 200 + i as u8 } else { 20 + i as u8 };
                pgm(&d.join(format!("{i}.pgm")), 4, 4, v);
            }
        }
    }
}

fn train_folder(tmp: &Path, data: &Path) -> (std::process::Output, PathBuf) {
    let cfg = write_config(
        tmp,
        "f.toml",
        &format!("{SMALL}[data]\ndir = {:?}\n", data.display().to_string()),
    );
    let run = tmp.join(format!(
        "run-{}",
        data.file_name().unwrap().to_string_lossy()
    ));
    (cli(&["train", "--config", s(&cfg), "--out", s(&run)]), run)
}

/// Messages: a class missing from test/ gave a raw "No such file or directory"; two
/// non-UTF-8 class folders became one class `\u{fffd}`.
#[test]
fn class_folders_must_be_utf8_and_present_in_test() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    folder(&missing, &["a".as_ref(), "b".as_ref()], 1);
    assert_one_line_error(
        &train_folder(tmp.path(), &missing).0,
        &["test/b", "no folder for class `b`"],
    );
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let bytes = tmp.path().join("bytes");
        let (x, y) = (
            std::ffi::OsStr::from_bytes(b"\xff"),
            std::ffi::OsStr::from_bytes(b"\xfe"),
        );
        folder(&bytes, &[x, y], 2);
        assert_one_line_error(
            &train_folder(tmp.path(), &bytes).0,
            &["is not UTF-8, expected a UTF-8 name"],
        );
    }
}

/// Messages: class names from folder names (or CSV labels) were printed raw, so a name
/// holding an ANSI escape recoloured the user's terminal. Oracle: the escape appears as
/// `\u{1b}` and no control character reaches stdout.
#[test]
fn class_names_with_control_characters_are_printed_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ansi");
    folder(&data, &["\u{1b}[31mred".as_ref(), "blue".as_ref()], 2);
    let (o, run) = train_folder(tmp.path(), &data);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = tmp.path().join("model");
    export(&run, &model);
    let image = pgm(&tmp.path().join("x.pgm"), 4, 4, 210);
    for out in [
        cli_ok(&["predict", "--model", s(&model), s(&image)]),
        cli_ok(&["inspect", "--model", s(&model)]),
    ] {
        assert!(out.contains("\\u{1b}[31mred"), "{out}");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    }
}
