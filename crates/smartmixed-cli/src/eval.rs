//! `smartmixed-cli eval`: accuracy, per-class accuracy and confusion matrix of an exported
//! model on labelled data from any source `train` reads (`eval_source`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use smartmixed_infer::{LoadOptions, Model, Pool, Precision, Scratch};

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
    /// The arithmetic: f32 (the trainer's), bf16 (weights and each layer's input
    /// rounded to bf16, f32 sums) or int8 (i8 weights scaled per neuron, each layer's
    /// input quantised per row, i32 sums); with bf16 or int8 the f32 answers are computed
    /// too, and the share of items whose class equals f32's is printed.
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

/// What a reduced precision must keep (issue 22's targets): test accuracy within this
/// many points of f32's, and at least this share of items given f32's class.
fn target(precision: Precision) -> (f64, f64) {
    match precision {
        Precision::Int8 => (0.2, 0.995),
        _ => (0.05, 0.999),
    }
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

/// Each item's predicted class.
fn predictions(model: &Model, source: &eval_source::Source) -> Result<Vec<usize>> {
    let (test, classes) = (&source.data, model.classes());
    let mut predicted = Vec::with_capacity(test.len());
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
        predicted.extend(
            logits
                .chunks_exact(classes)
                .map(smartmixed_core::math::argmax),
        );
    }
    Ok(predicted)
}

pub fn run(args: EvalArgs) -> Result<()> {
    let options = LoadOptions {
        precision: args.precision,
    };
    let pool = match args.threads {
        Some(threads) => Pool::new(threads.into())?,
        None => Pool::global().clone(),
    };
    let model = Model::load_dir_with(&args.model, &options)?.with_pool(pool.clone());
    let source = eval_source::load(&model, &args.model, args.request())?;
    let test = &source.data;
    let classes = model.classes();
    let predicted = predictions(&model, &source)?;
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&label, &pred) in test.labels().iter().zip(&predicted) {
        confusion[label as usize][pred] += 1;
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
    if args.precision != Precision::F32 {
        let reference = Model::load_dir(&args.model)?.with_pool(pool);
        let exact = predictions(&reference, &source)?;
        let same = exact.iter().zip(&predicted).filter(|(a, b)| a == b).count();
        let exact_correct = test
            .labels()
            .iter()
            .zip(&exact)
            .filter(|(&l, &p)| l as usize == p)
            .count();
        let n = test.len().max(1) as f64;
        let (acc, acc32) = (correct as f64 / n, exact_correct as f64 / n);
        let points = 100.0 * (acc - acc32);
        println!(
            "{}; f32 test accuracy {:.2}% ({points:+.2} points); {:.2}% of items ({same}/{}) get f32's class",
            model.kernel_description(),
            100.0 * acc32,
            100.0 * same as f64 / n,
            test.len()
        );
        let (within, agreement) = target(args.precision);
        if points.abs() > within || (same as f64) < agreement * n {
            println!(
                "below the {} target on these items: within {within} points of f32 and at least {:.1}% of classes equal to f32's",
                args.precision.name(),
                100.0 * agreement
            );
        }
    }
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
