//! `smartmixed-cli predict`: classify an image given as an IDX file (every image in it), a
//! PGM (P2 or P5) or a PNG (converted to 8-bit grey). Pixels are divided by 255, as in training.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use smartmixed_infer::Model;
use smartmixed_train::data::read_idx;

#[derive(clap::Args)]
pub struct PredictArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// An IDX image file (gz or raw), a .pgm or a .png.
    input: PathBuf,
}

/// The images of `path` as grey bytes, each `expected` pixels long.
fn load_images(path: &Path, expected: usize) -> Result<Vec<Vec<u8>>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (pixels, count) = match ext.as_str() {
        "png" => (read_png(path)?, 1),
        "pgm" => (read_pgm(path)?, 1),
        _ => {
            let idx = read_idx(path)?;
            let count = idx.count();
            if idx.dims.len() < 2 || idx.item_len() != expected {
                bail!(
                    "{}: IDX images of dims {:?}, the model expects {expected} pixels each",
                    path.display(),
                    idx.dims
                );
            }
            (idx.data, count)
        }
    };
    if count == 1 && pixels.len() != expected {
        bail!(
            "{}: image has {} pixels, the model expects {expected}",
            path.display(),
            pixels.len()
        );
    }
    Ok(pixels.chunks(expected).map(<[u8]>::to_vec).collect())
}

fn read_png(path: &Path) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{}: not a PNG", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("{}: corrupt PNG", path.display()))?;
    let data = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    Ok(data
        .chunks(channels)
        .map(|px| match channels {
            1 | 2 => px[0],
            // ITU-R BT.601 luma.
            _ => (0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32).round() as u8,
        })
        .collect())
}

fn read_pgm(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    // Header: magic, width, height, maxval, separated by whitespace; '#' starts a comment.
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 && pos < bytes.len() {
        if bytes[pos] == b'#' {
            while pos < bytes.len() && bytes[pos] != b'\n' {
                pos += 1;
            }
        } else if bytes[pos].is_ascii_whitespace() {
            pos += 1;
        } else {
            let start = pos;
            while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            fields.push(String::from_utf8_lossy(&bytes[start..pos]).into_owned());
        }
    }
    let bad = || anyhow::anyhow!("{}: not a PGM (expected P2 or P5 header)", path.display());
    if fields.len() < 4 {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<usize>().map_err(|_| bad());
    let (w, h, max) = (num(&fields[1])?, num(&fields[2])?, num(&fields[3])?);
    if max == 0 || max > 255 {
        bail!("{}: PGM maxval {max}, expected 1..=255", path.display());
    }
    let scale = |v: usize| ((v.min(max) * 255) / max) as u8;
    let pixels: Vec<u8> = match fields[0].as_str() {
        "P5" => bytes
            .get(pos + 1..)
            .unwrap_or(&[])
            .iter()
            .take(w * h)
            .map(|&v| scale(v as usize))
            .collect(),
        "P2" => String::from_utf8_lossy(&bytes[pos..])
            .split_ascii_whitespace()
            .take(w * h)
            .map(|t| num(t).map(scale))
            .collect::<Result<_>>()?,
        _ => return Err(bad()),
    };
    if pixels.len() != w * h {
        bail!(
            "{}: PGM ends after {} of {} pixels",
            path.display(),
            pixels.len(),
            w * h
        );
    }
    Ok(pixels)
}

pub fn run(args: PredictArgs) -> Result<()> {
    let model = Model::load_dir(&args.model)?;
    let images = load_images(&args.input, model.input_size())?;
    for (i, img) in images.iter().enumerate() {
        let x: Vec<f32> = img.iter().map(|&p| p as f32 / 255.0).collect();
        let p = model.predict(&x)?;
        let probs: Vec<String> = p
            .probabilities
            .iter()
            .enumerate()
            .map(|(c, v)| format!("{c}:{v:.4}"))
            .collect();
        println!(
            "image {i}: class {} (p = {:.4}); probabilities {}",
            p.class,
            p.probabilities[p.class],
            probs.join(" ")
        );
    }
    Ok(())
}
