//! Items whose shape or encoding disagrees with the model or with their own header, each
//! refused in one line (never read with the wrong stride, size or depth), and the shapes
//! that are the same image under another spelling (`[h, w, 1]`) accepted.

mod common;

use std::path::Path;

use common::{
    assert_one_line_error, cli, cli_ok, export, idx_bytes, summary_json, synthetic_data,
    train_small_on, write_config, SMALL,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Rewrites `dir`'s `stem` images (6x5) with item dims `dims` (the same bytes).
fn redim(dir: &Path, stem: &str, dims: &[u32]) {
    let path = dir.join(format!("{stem}-images-idx3-ubyte"));
    let bytes = std::fs::read(&path).unwrap();
    let n = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
    let all = [&[n][..], dims].concat();
    std::fs::write(&path, idx_bytes(&all, &bytes[16..])).unwrap();
}

#[test]
fn a_trailing_channel_of_one_is_a_grey_image_whose_size_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 200, 60);
    redim(&data, "train", &[6, 5, 1]);
    redim(&data, "t10k", &[6, 5, 1]);
    let out = train_small_on(tmp.path(), &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = tmp.path().join("run");
    assert_eq!(
        summary_json(&run)["input"]["shape"],
        serde_json::json!([6, 5])
    );
    let model = tmp.path().join("model");
    export(&run, &model);
    // 30 values of another shape: refused, where only the count had been compared.
    let other = tmp.path().join("other.idx");
    std::fs::write(&other, idx_bytes(&[1, 5, 6], &[0; 30])).unwrap();
    let o = cli(&["predict", "--model", s(&model), s(&other)]);
    assert_one_line_error(&o, &["other.idx", "[1, 5, 6]", "6 x 5 images"]);
    // The same images with or without their channel: answered alike.
    let (a, b) = (tmp.path().join("a.idx"), tmp.path().join("b.idx"));
    let pixels: Vec<u8> = (0..60).map(|i| (i * 37 % 256) as u8).collect();
    std::fs::write(&a, idx_bytes(&[2, 6, 5], &pixels)).unwrap();
    std::fs::write(&b, idx_bytes(&[2, 6, 5, 1], &pixels)).unwrap();
    let answers = |p: &Path| cli_ok(&["predict", "--model", s(&model), s(p)]);
    assert_eq!(answers(&a), answers(&b));
    // eval on a data set of another shape with the same pixel count.
    let eval_dir = tmp.path().join("eval");
    synthetic_data(&eval_dir, 10, 10);
    redim(&eval_dir, "t10k", &[5, 6]);
    let o = cli(&["eval", "--model", s(&model), "--data-dir", s(&eval_dir)]);
    assert_one_line_error(&o, &["[5, 6]", "[6, 5]"]);
}

#[test]
fn training_refuses_test_images_of_another_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synthetic_data(&data, 200, 60);
    redim(&data, "t10k", &[5, 6]);
    let o = train_small_on(tmp.path(), &data);
    assert_one_line_error(
        &o,
        &["test images of shape [5, 6], training images of shape [6, 5]"],
    );
}

/// A PNG of `w` x 1 pixels.
fn png(path: &Path, color: png::ColorType, depth: png::BitDepth, w: u32, data: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(file, w, 1);
    enc.set_color(color);
    enc.set_depth(depth);
    enc.write_header().unwrap().write_image_data(data).unwrap();
}

#[test]
fn folders_skip_hidden_entries_and_refuse_images_that_would_read_wrongly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("f");
    for (split, n) in [("train", 12), ("test", 4)] {
        for class in ["a", "b"] {
            let folder = dir.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..n {
                let v = if class == "a" { 20 + i } else { 220 - i };
                png(
                    &folder.join(format!("{i}.png")),
                    png::ColorType::Grayscale,
                    png::BitDepth::Eight,
                    4,
                    &[v; 4],
                );
            }
        }
        // A notebook's checkpoint folder and a macOS resource fork: no class, no image.
        let hidden = dir.join(split).join(".ipynb_checkpoints");
        std::fs::create_dir_all(&hidden).unwrap();
        std::fs::write(hidden.join("x.png"), b"not read").unwrap();
        std::fs::write(dir.join(split).join("a").join("._0.png"), b"junk").unwrap();
    }
    let text = format!(
        "{SMALL}[data]\nformat = \"image_folder\"\ndir = {:?}\nvalidation_fraction = 0.25\n",
        s(&dir)
    );
    let cfg = write_config(tmp.path(), "f.toml", &text);
    let run = tmp.path().join("run");
    cli_ok(&["train", "--config", s(&cfg), "--out", s(&run)]);
    assert_eq!(
        summary_json(&run)["class_names"],
        serde_json::json!(["a", "b"])
    );
    let model = tmp.path().join("model");
    export(&run, &model);
    // 16-bit samples and a digit drawn in alpha: refused, where they had read as black.
    let deep = tmp.path().join("deep.png");
    png(
        &deep,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        4,
        &[0, 200, 0, 200, 0, 200, 0, 200],
    );
    assert_one_line_error(
        &cli(&["predict", "--model", s(&model), s(&deep)]),
        &["deep.png", "16-bit"],
    );
    let alpha = tmp.path().join("alpha.png");
    png(
        &alpha,
        png::ColorType::Rgba,
        png::BitDepth::Eight,
        4,
        &[0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 255],
    );
    assert_one_line_error(
        &cli(&["predict", "--model", s(&model), s(&alpha)]),
        &["alpha.png", "pixel 1", "transparent"],
    );
    // A PGM whose header is not its data's size.
    let lie = tmp.path().join("lie.pgm");
    std::fs::write(&lie, [&b"P5 4 1 255\n"[..], &[77; 9]].concat()).unwrap();
    assert_one_line_error(
        &cli(&["predict", "--model", s(&model), s(&lie)]),
        &["lie.pgm", "5 more bytes"],
    );
    // A JPEG among a class's images, or a folder inside a class folder: both would be
    // left out of training in silence, so training refuses them, naming the entry.
    let jpeg = dir.join("train").join("b").join("extra.JPG");
    std::fs::write(&jpeg, b"\xff\xd8\xff").unwrap();
    let again = tmp.path().join("again");
    assert_one_line_error(
        &cli(&["train", "--config", s(&cfg), "--out", s(&again)]),
        &["extra.JPG", ".jpg image", "PNG and PGM only"],
    );
    std::fs::remove_file(&jpeg).unwrap();
    let nested = dir.join("train").join("a").join("more");
    std::fs::create_dir_all(&nested).unwrap();
    let third = tmp.path().join("third");
    assert_one_line_error(
        &cli(&["train", "--config", s(&cfg), "--out", s(&third)]),
        &["more", "a folder inside a class folder"],
    );
}
