//! `smartmixed-cli eval`: accuracy, per-class accuracy and confusion matrix of an exported
//! model on a data set's test files.

use std::path::PathBuf;

use anyhow::{bail, Result};
use smartmixed_infer::{Model, Scratch};
use smartmixed_train::data::Dataset;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// Directory with the IDX files; the test files are evaluated.
    #[arg(long, default_value = "data/mnist")]
    data_dir: PathBuf,
    /// Matmul threads (at most 256).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let model = Model::load_dir(&args.model)?;
    let classes = model.classes();
    let test = &Dataset::load_test(&args.data_dir, classes)?;
    if test.features() != model.input_size() {
        bail!(
            "{}: images have {} pixels, the model expects {}",
            args.data_dir.display(),
            test.features(),
            model.input_size()
        );
    }
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut scratch = Scratch::new(args.threads.into());
    let all: Vec<usize> = (0..test.len()).collect();
    let mut logits = Vec::new();
    for chunk in all.chunks(1000) {
        let batch = test.batch(chunk, classes);
        logits.resize(chunk.len() * classes, 0.0);
        model.forward(&batch.inputs, chunk.len(), &mut scratch, &mut logits)?;
        for (row, &label) in logits.chunks_exact(classes).zip(&batch.labels) {
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
