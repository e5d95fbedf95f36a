//! `smartmixed-cli predict`: classify images given as an IDX file (every image in it), a
//! PGM (P2 or P5) or a PNG (converted to 8-bit grey), or table rows given as a CSV file
//! with a header (the model's feature columns by name). Raw values go through the
//! preprocessing the model's manifest records (pixels / 255; a table's standardisation).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use smartmixed_infer::Model;
use smartmixed_train::data::image::read_image_as;
use smartmixed_train::data::read_idx;
use smartmixed_train::data::table::read_rows;

#[derive(clap::Args)]
pub struct PredictArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// An IDX image file (gz or raw), a .pgm, a .png, or a .csv of table rows.
    input: PathBuf,
}

/// The images of `path` as bytes, each `expected` values long: `channels` per pixel (3 for
/// a model whose input shape ends in 3, RGB; else grey).
fn load_images(path: &Path, expected: usize, channels: usize) -> Result<Vec<Vec<u8>>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "png" || ext == "pgm" {
        let img = read_image_as(path, expected / channels, channels)?;
        if img.pixels.len() != expected {
            let (what, per_pixel) = if channels == 3 {
                ("RGB values", " x 3")
            } else {
                ("pixels", "")
            };
            bail!(
                "{}: image of {} x {}{per_pixel} = {} {what}, the model expects {expected}",
                path.display(),
                img.width,
                img.height,
                img.pixels.len()
            );
        }
        return Ok(vec![img.pixels]);
    }
    let idx = read_idx(path)?;
    if idx.dims.len() < 2 || idx.item_len() != expected {
        bail!(
            "{}: IDX images of dims {:?}, the model expects {expected} pixels each",
            path.display(),
            idx.dims
        );
    }
    if idx.count() == 0 {
        bail!("{}: 0 images, expected at least 1", path.display());
    }
    Ok(idx.data.chunks(expected).map(<[u8]>::to_vec).collect())
}

pub fn run(args: PredictArgs) -> Result<()> {
    let model = Model::load_dir(&args.model)?;
    let is_csv = args
        .input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (what, rows): (&str, Vec<Vec<f32>>) = if is_csv {
        let features = &model.input_description().feature_names;
        ("row", read_rows(&args.input, features, model.input_size())?)
    } else {
        let shape = &model.input_description().shape;
        let channels = if shape.len() == 3 && shape[2] == 3 {
            3
        } else {
            1
        };
        let images = load_images(&args.input, model.input_size(), channels)?;
        let rows = images
            .iter()
            .map(|img| img.iter().map(|&p| f32::from(p)).collect())
            .collect();
        ("image", rows)
    };
    for (i, raw) in rows.iter().enumerate() {
        let p = model.predict_raw(raw)?;
        let probs: Vec<String> = p
            .probabilities
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{}:{v:.4}", model.class_name(c)))
            .collect();
        println!(
            "{what} {i}: class {} (p = {:.4}); probabilities {}",
            model.class_name(p.class),
            p.probabilities[p.class],
            probs.join(" ")
        );
    }
    Ok(())
}
