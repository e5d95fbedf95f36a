//! `smartmixed-cli predict`: classify images given as an IDX file (every image in it), a
//! PGM (P2 or P5) or a PNG (converted to 8-bit grey, or RGB for colour models), or table
//! rows given as a CSV file with a header (the model's feature columns by name). The kind
//! of file is read from its first bytes, not its name (a `.csv` name means a table), and
//! its shape must be the model's: an image model takes images of its height and width, a
//! table model takes table rows. Raw values go through the preprocessing the model's
//! manifest records (pixels / 255; a table's standardisation).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use smartmixed_core::InputKind;
use smartmixed_infer::Model;
use smartmixed_train::data::image::{read_image_as, MAX_PIXELS};
use smartmixed_train::data::read_idx;
use smartmixed_train::data::table::read_rows;

use crate::shown;

#[derive(clap::Args)]
pub struct PredictArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// An IDX image file (gz or raw), a PGM or PNG image, or a .csv of table rows.
    input: PathBuf,
}

/// What a file given to `predict` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Table,
    Image,
    Idx,
}

/// A `.csv` name means a table; otherwise the first bytes decide (PNG's signature, PGM's
/// `P2`/`P5`), and anything else is read as IDX (raw or gzip), whose reader checks its
/// own magic.
fn sniff(path: &Path) -> Result<Source> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        return Ok(Source::Table);
    }
    let mut head = [0u8; 2];
    let n = std::fs::File::open(path)
        .and_then(|f| f.take(2).read(&mut head))
        .with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(match &head[..n] {
        [0x89, b'P'] | [b'P', b'2'] | [b'P', b'5'] => Source::Image,
        _ => Source::Idx,
    })
}

/// What an image model takes, as a user reads it: "28 x 28 images", "32 x 32 RGB
/// images", or for a model that records no image shape, "images of 784 pixels".
fn wanted(kind: InputKind, expected: usize) -> String {
    match kind {
        InputKind::Image {
            height,
            width,
            channels: 3,
        } => format!("{height} x {width} RGB images"),
        InputKind::Image { height, width, .. } => format!("{height} x {width} images"),
        _ => format!("images of {expected} pixels"),
    }
}

/// The images of `path` as raw values, one row per image, checked against the model's
/// image shape (or, for a model that records none, its value count).
fn load_images(path: &Path, source: Source, kind: InputKind, expected: usize) -> Result<Vec<f32>> {
    let channels = match kind {
        InputKind::Image { channels, .. } => channels,
        _ => 1,
    };
    let bytes = if source == Source::Image {
        // Up to the reader's own bound, so that a wrong size is told as one.
        let img = read_image_as(path, MAX_PIXELS, channels)?;
        let fits = match kind {
            InputKind::Image { height, width, .. } => (img.height, img.width) == (height, width),
            _ => img.pixels.len() == expected,
        };
        if !fits {
            let wanted = wanted(kind, expected);
            bail!(
                "{}: image of {} x {} pixels (height x width), the model takes {wanted}",
                path.display(),
                img.height,
                img.width
            );
        }
        img.pixels
    } else {
        let idx = read_idx(path)?;
        let fits = match kind {
            InputKind::Image {
                height,
                width,
                channels,
            } => {
                let shape: &[usize] = &[height, width, channels];
                let shape = if channels == 1 { &shape[..2] } else { shape };
                idx.dims.get(1..) == Some(shape)
            }
            _ => idx.dims.len() >= 2 && idx.item_len() == expected,
        };
        if !fits {
            let wanted = wanted(kind, expected);
            bail!(
                "{}: IDX images of dims {:?} (count, then each image's shape), the model takes {wanted}",
                path.display(),
                idx.dims
            );
        }
        if idx.count() == 0 {
            bail!("{}: 0 images, expected at least 1", path.display());
        }
        idx.data
    };
    Ok(bytes.iter().map(|&p| f32::from(p)).collect())
}

/// The rows of `path`, raw, one after another; each is the model's input width.
fn load(model: &Model, path: &Path) -> Result<(&'static str, Vec<f32>)> {
    let input = model.input_description();
    let kind = input.kind();
    let source = sniff(path)?;
    match (source, kind) {
        (Source::Table, InputKind::Table) => {
            Ok(("row", read_rows(path, &input.feature_names, model.input_size())?))
        }
        (Source::Table, _) => bail!(
            "{}: a CSV table, but the model takes images of shape {:?}: give an IDX, PGM or PNG file",
            path.display(),
            input.shape
        ),
        (_, InputKind::Table) => bail!(
            "{}: an image file, but the model takes table rows of {} features ({}): give a .csv file with those columns",
            path.display(),
            model.input_size(),
            shown(&input.feature_names.join(", "))
        ),
        (source, kind) => Ok((
            "image",
            load_images(path, source, kind, model.input_size())?,
        )),
    }
}

pub fn run(args: PredictArgs) -> Result<()> {
    let model = Model::load_dir(&args.model)?;
    let (what, raw) = load(&model, &args.input)?;
    let width = model.input_size().max(1);
    let names: Vec<String> = (0..model.classes())
        .map(|c| shown(&model.class_name(c)))
        .collect();
    // Every row first: an error (a value the model cannot compute) prints nothing.
    let predictions = raw
        .chunks_exact(width)
        .enumerate()
        .map(|(i, row)| {
            model
                .predict_raw(row)
                .with_context(|| format!("{}: {what} {i}", args.input.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    for (i, p) in predictions.iter().enumerate() {
        let probs: Vec<String> = p
            .probabilities
            .iter()
            .zip(&names)
            .map(|(v, name)| format!("{name}:{v:.4}"))
            .collect();
        println!(
            "{what} {i}: class {} (p = {:.4}); probabilities {}",
            names[p.class],
            p.probabilities[p.class],
            probs.join(" ")
        );
    }
    Ok(())
}
