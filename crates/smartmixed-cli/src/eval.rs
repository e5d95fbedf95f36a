//! `smartmixed-cli eval`: accuracy, per-class accuracy and confusion matrix of an exported
//! model on labelled data from any source `train` reads (`eval_source`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use smartmixed_infer::{Model, Pool, Scratch};

use crate::eval_source::{self, Request};
use crate::shown;

/// Which items are evaluated, by source.
const WHICH: &str = "Which items are evaluated: an IDX directory's t10k test files; an image \
folder's test/<class>/ images; every row of a --data CSV table (a model trained on that table \
has seen most of them: give --run or --config for its held-out test split); with --config or \
--run, the test split training made (the same files, seeds and stratified splits, \
data.test_limit included). Labels are matched to the model's classes by name (CSV label texts, \
folder names, IDX digits as the classes named \"0\", \"1\", ...); data holding a class the model \
lacks is refused.";

#[derive(clap::Args)]
#[command(after_help = WHICH)]
pub struct EvalArgs {
    /// An exported model directory (model.safetensors + manifest.toml).
    #[arg(long)]
    model: PathBuf,
    /// The data, its format detected as `train` detects it: a .csv table, a folder
    /// holding train/ and test/ image folders (test/ is evaluated), or a directory of
    /// MNIST-style IDX files (the test files are evaluated).
    #[arg(long, conflicts_with_all = ["data_dir", "config", "run"])]
    data: Option<PathBuf>,
    /// Directory with the IDX files; the test files are evaluated (the default source).
    #[arg(long, conflicts_with_all = ["config", "run"])]
    data_dir: Option<PathBuf>,
    /// A training config: its [data] section is loaded and split as training split it,
    /// and the test split is evaluated.
    #[arg(long, conflicts_with = "run")]
    config: Option<PathBuf>,
    /// A run directory: its config.toml's data, as --config.
    #[arg(long)]
    run: Option<PathBuf>,
    /// With --data FILE.csv: the label column (default: the one column that is not one
    /// of the model's features).
    #[arg(long, requires = "data")]
    label: Option<String>,
    /// Threads of the forward passes (at most 256; default: the cores this process may use).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

impl EvalArgs {
    /// The source the arguments name (default: `data/mnist`'s IDX files).
    fn request(&self) -> Request {
        if let Some(run) = &self.run {
            return Request::Config(run.join(smartmixed_train::rundir::CONFIG));
        }
        if let Some(cfg) = &self.config {
            return Request::Config(cfg.clone());
        }
        let path = self
            .data
            .clone()
            .or_else(|| self.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("data/mnist"));
        Request::Path {
            path,
            label: self.label.clone(),
        }
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    let mut model = Model::load_dir(&args.model)?;
    if let Some(threads) = args.threads {
        model = model.with_pool(Pool::new(threads.into())?);
    }
    let source = eval_source::load(&model, &args.model, args.request())?;
    let test = &source.data;
    let classes = model.classes();
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
                    "{}: items {} to {}",
                    source.origin,
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
    let present = confusion.iter().filter(|row| row.iter().any(|&v| v > 0));
    println!(
        "data: {}; {} items of {} classes",
        shown(&source.origin),
        test.len(),
        present.count()
    );
    println!(
        "test accuracy: {:.2}% ({correct}/{})",
        100.0 * correct as f64 / test.len() as f64,
        test.len()
    );
    println!("per-class accuracy (the model's classes):");
    for (c, row) in confusion.iter().enumerate() {
        let n: usize = row.iter().sum();
        let name = shown(&model.class_name(c));
        if n == 0 {
            println!("  {c} {name}: no items");
        } else {
            println!(
                "  {c} {name}: {:.2}% of {n}",
                100.0 * row[c] as f64 / n as f64
            );
        }
    }
    println!("confusion matrix (rows: true class, columns: predicted, numbered as above):");
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
