//! `smartmixed-cli predict`: classify images given as IDX files (every image in each), PGM
//! (P2 or P5) or PNG files (converted to 8-bit grey, or RGB for colour models) or
//! directories of them, or table rows given as CSV files with a header (the model's
//! feature columns by name). The kind of file is read from its first bytes, not its name
//! (a `.csv` name means a table), and its shape must be the model's: an image model takes
//! images of its height and width, a table model takes table rows. Raw values go through
//! the preprocessing the model's manifest records (pixels / 255; a table's
//! standardisation). The answers are a table (`predict_output`).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use smartmixed_core::manifest::image_shape;
use smartmixed_core::{InputKind, InputManifest};
use smartmixed_infer::{LoadOptions, Model, Precision};
use smartmixed_train::data::folder::images_in;
use smartmixed_train::data::image::{read_image_as, MAX_PIXELS};
use smartmixed_train::data::read_idx;
use smartmixed_train::data::table::read_rows;

use crate::predict_output::{self, Answer, Format, Shape};
use crate::shown;

#[derive(clap::Args)]
#[command(
    after_help = "Every input is read and classified before anything is written: a bad file \
among many is a one-line error naming it, with a non-zero exit and nothing written."
)]
pub struct PredictArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// The arithmetic: f32 (the trainer's), bf16 (weights and each layer's input
    /// rounded to bf16, f32 sums) or int8 (i8 weights scaled per neuron, each layer's
    /// input quantised per row, i32 sums).
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// IDX image files (gz or raw), PGM or PNG images, .csv files of table rows, or
    /// directories: every .png and .pgm image directly inside one (sorted by name).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// text: one line per row (with several inputs, each starts with its file); csv:
    /// columns input, item, class, name, probability (item: the image's index in an IDX
    /// file, the data row's in a CSV, from 0; then --top-k's and --probabilities'
    /// columns); jsonl: one JSON object per row with those fields.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Also the K most probable classes per row, most probable first (class, name,
    /// probability each; ties in class order).
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..))]
    top_k: Option<u16>,
    /// Also every class's probability, in class order (the text format always shows
    /// them).
    #[arg(long)]
    probabilities: bool,
    /// Write the table to this file (atomically) instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
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
/// images", "IDX items of shape [28, 28, 4]", or for a model that records no image
/// shape, "images of 784 pixels".
fn wanted(input: &InputManifest, expected: usize) -> String {
    match input.kind() {
        InputKind::Image {
            height,
            width,
            channels: 3,
        } => format!("{height} x {width} RGB images"),
        InputKind::Image { height, width, .. } => format!("{height} x {width} images"),
        _ if input.shape.len() >= 2 => format!("IDX items of shape {:?}", input.shape),
        _ => format!("images of {expected} pixels"),
    }
}

/// The images of `path` as raw values, one row per image, checked against the model's
/// image shape (or, for a model that records none, its value count).
fn load_images(
    path: &Path,
    source: Source,
    input: &InputManifest,
    expected: usize,
) -> Result<Vec<f32>> {
    let kind = input.kind();
    // A model whose items have a shape that is no image (such as [28, 28, 4]) takes IDX
    // items of exactly that shape; one that records no shape ([784]) takes any of its size.
    let shaped = input.shape.len() >= 2;
    let channels = match kind {
        InputKind::Image { channels, .. } => channels,
        _ => 1,
    };
    let bytes = if source == Source::Image {
        // Up to the reader's own bound, so that a wrong size is told as one.
        let img = read_image_as(path, MAX_PIXELS, channels)?;
        let fits = match kind {
            InputKind::Image { height, width, .. } => (img.height, img.width) == (height, width),
            _ => !shaped && img.pixels.len() == expected,
        };
        if !fits {
            let wanted = wanted(input, expected);
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
        let item = idx.dims.get(1..).map(image_shape);
        let fits = if shaped {
            item == Some(image_shape(&input.shape))
        } else {
            idx.dims.len() >= 2 && idx.item_len() == expected
        };
        if !fits {
            let wanted = wanted(input, expected);
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
        (source, _) => Ok((
            "image",
            load_images(path, source, input, model.input_size())?,
        )),
    }
}

/// The files `inputs` stand for, in order: a directory is its images, sorted.
fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let images = images_in(input)?;
            if images.is_empty() {
                bail!(
                    "{}: no .png or .pgm image directly inside this directory",
                    input.display()
                );
            }
            files.extend(images);
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

pub fn run(args: PredictArgs) -> Result<()> {
    let options = LoadOptions {
        precision: args.precision,
    };
    let model = Model::load_dir_with(&args.model, &options)?;
    let top_k = args.top_k.map(usize::from);
    if let Some(k) = top_k.filter(|&k| k > model.classes()) {
        bail!(
            "--top-k {k}: the model has {} classes, expected K from 1 to {}",
            model.classes(),
            model.classes()
        );
    }
    let files = expand(&args.inputs)?;
    let width = model.input_size().max(1);
    // Every row of every file first: an error (a bad file, a value the model cannot
    // compute) writes nothing.
    let mut answers = Vec::new();
    for file in &files {
        let (what, raw) = load(&model, file)?;
        for (item, row) in raw.chunks_exact(width).enumerate() {
            let prediction = model
                .predict_raw(row)
                .with_context(|| format!("{}: {what} {item}", file.display()))?;
            answers.push(Answer {
                input: file,
                what,
                item,
                prediction,
            });
        }
    }
    let names: Vec<String> = (0..model.classes()).map(|c| model.class_name(c)).collect();
    let shape = Shape {
        format: args.format,
        top_k,
        probabilities: args.probabilities,
        several_inputs: files.len() > 1,
    };
    let table = predict_output::render(&answers, &names, shape)?;
    match &args.output {
        Some(path) => crate::write_atomic(path, &table),
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&table)
                .and_then(|()| out.flush())
                .context("cannot write to standard output")
        }
    }
}
