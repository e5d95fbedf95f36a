//! `smartmixed-cli eval`: accuracy, per-class accuracy and confusion matrix of an exported
//! model on a data set's test files.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use smartmixed_core::InputKind;
use smartmixed_infer::{Model, Pool, Scratch};
use smartmixed_train::data::Dataset;

use crate::shown;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// Directory with the IDX files; the test files are evaluated.
    #[arg(long, default_value = "data/mnist")]
    data_dir: PathBuf,
    /// Threads of the forward passes (at most 256; default: the cores this process may use).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

/// The test set fits the model: image models of a recorded shape need images of that
/// shape (a 784-value model of 28 x 28 refuses 56 x 14), every model the same number of
/// values, and IDX labels, which are class numbers, a model whose classes are numbered
/// `0, 1, ...` (a folder model's named classes cannot be matched to them).
fn check_fits(model: &Model, test: &Dataset, dir: &std::path::Path) -> Result<()> {
    let input = model.input_description();
    let shape_differs =
        matches!(input.kind(), InputKind::Image { .. }) && test.shape() != input.shape;
    if shape_differs || test.features() != model.input_size() {
        bail!(
            "{}: test images of shape {:?}, the model takes shape {:?}",
            dir.display(),
            test.shape(),
            input.shape
        );
    }
    let names = &model.manifest().class_names;
    if let Some((c, name)) = names
        .iter()
        .enumerate()
        .find(|(c, name)| **name != c.to_string())
    {
        bail!(
            "{}: IDX labels are class numbers, but the model's class {c} is named `{}`: its classes cannot be matched to these labels",
            dir.display(),
            shown(name)
        );
    }
    Ok(())
}

pub fn run(args: EvalArgs) -> Result<()> {
    let mut model = Model::load_dir(&args.model)?;
    if let Some(threads) = args.threads {
        model = model.with_pool(Pool::new(threads.into())?);
    }
    if model.input_description().kind() == InputKind::Table {
        bail!(
            "{}: the model takes table rows of {} features, and eval reads IDX image test files only",
            args.model.display(),
            model.input_size()
        );
    }
    let classes = model.classes();
    let test = &Dataset::load_test(&args.data_dir, classes)?;
    check_fits(&model, test, &args.data_dir)?;
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut scratch = Scratch::new();
    let all: Vec<usize> = (0..test.len()).collect();
    let (mut raw, mut logits) = (Vec::new(), Vec::new());
    for chunk in all.chunks(1000) {
        // Raw values through the model's own preprocessing, as predict and any
        // embedding service run it: the manifest's, not the data set's.
        raw.clear();
        for &i in chunk {
            test.extend_raw(i, &mut raw);
        }
        logits.resize(chunk.len() * classes, 0.0);
        model
            .forward_raw(&raw, chunk.len(), &mut scratch, &mut logits)
            .with_context(|| {
                format!(
                    "{}: test images {} to {}",
                    args.data_dir.display(),
                    chunk[0],
                    chunk[chunk.len() - 1]
                )
            })?;
        let labels = chunk.iter().map(|&i| test.labels()[i]);
        for (row, label) in logits.chunks_exact(classes).zip(labels) {
            let pred = smartmixed_core::math::argmax(row);
            confusion[label as usize][pred] += 1;
        }
    }
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    println!(
        "test accuracy: {:.2}% ({correct}/{})",
        100.0 * correct as f64 / test.len() as f64,
        test.len()
    );
    println!("per-class accuracy:");
    for (c, row) in confusion.iter().enumerate() {
        let n: usize = row.iter().sum();
        println!(
            "  {c}: {:.2}% of {n}",
            100.0 * row[c] as f64 / n.max(1) as f64
        );
    }
    println!("confusion matrix (rows: true class, columns: predicted):");
    print!("     ");
    for c in 0..classes {
        print!("{c:>6}");
    }
    println!();
    for (c, row) in confusion.iter().enumerate() {
        print!("{c:>4} ");
        for v in row {
            print!("{v:>6}");
        }
        println!();
    }
    Ok(())
}
