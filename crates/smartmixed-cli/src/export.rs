//! `smartmixed-cli export`: a run's best checkpoint as `model.safetensors` + `manifest.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use smartmixed_core::Phase;
use smartmixed_train::config::DataFormat;
use smartmixed_train::{checkpoint, export, rundir, Cpu, TrainConfig};

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A run directory written by `train`.
    #[arg(long)]
    run: PathBuf,
    /// Directory to write model.safetensors and manifest.toml into (created if needed;
    /// `--safetensors DIR` is the older name of this flag).
    #[arg(long = "out", visible_alias = "safetensors", value_name = "DIR")]
    out: PathBuf,
    /// Which phase's best checkpoint: 2 (default; a fixed baseline's own checkpoint when the
    /// run is a baseline) or 1 (exported with its argmax choices).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    phase: u8,
    /// Replace a model already in the --out directory.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ExportArgs) -> Result<()> {
    // An export is two files; a name like `model.safetensors` would become a directory.
    if args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
    {
        bail!(
            "--out {}: expected a directory to write {} and {} into, not a file name",
            args.out.display(),
            smartmixed_core::manifest::WEIGHTS_FILE,
            smartmixed_core::manifest::MANIFEST_FILE
        );
    }
    let candidates: Vec<String> = if args.phase == 1 {
        vec![Phase::Phase1.checkpoint_file()]
    } else {
        vec![
            Phase::Phase2.checkpoint_file(),
            Phase::Fixed.checkpoint_file(),
        ]
    };
    let Some(path) = candidates
        .iter()
        .map(|c| args.run.join(c))
        .find(|p| p.is_file())
    else {
        bail!(
            "{}: no {} in this run directory",
            args.run.display(),
            candidates.join(" or ")
        );
    };
    let (net, recorded) = checkpoint::load_described(&Cpu::default(), &path)?;
    let description = describe(&args.run, &path, recorded)?;
    let manifest = export::export_described(&net, &args.out, args.force, &description)?;
    let hidden: Vec<String> = manifest.layers[..manifest.layers.len() - 1]
        .iter()
        .map(|l| {
            l.groups
                .iter()
                .map(|g| format!("{} {}", g.activation, g.len))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    println!("exported {} to {}", path.display(), args.out.display());
    for (i, h) in hidden.iter().enumerate() {
        println!("  hidden layer {}: {h}", i + 1);
    }
    Ok(())
}

/// What the export says of the input and classes: a finished run's summary.json, else
/// (a run still training, or stopped) what the checkpoint recorded, said on the terminal.
/// A checkpoint from before descriptions were recorded is exported as the flat pixels /
/// 255 it then assumed, except for a table run, whose standardisation would be lost.
fn describe(
    run: &Path,
    checkpoint: &Path,
    recorded: Option<export::Description>,
) -> Result<export::Description> {
    let summary_path = run.join(rundir::SUMMARY);
    if summary_path.is_file() {
        let summary = rundir::read_summary(&summary_path)?;
        return Ok(export::Description {
            input: summary.input,
            class_names: summary.class_names,
        });
    }
    let unfinished = format!(
        "{} has no {} (the run has not finished): exporting its best checkpoint so far, {}",
        run.display(),
        rundir::SUMMARY,
        checkpoint.display()
    );
    if let Some(d) = recorded {
        eprintln!("note: {unfinished}");
        return Ok(d);
    }
    let config = run.join(rundir::CONFIG);
    let table = TrainConfig::from_file(&config)
        .map(|c| c.data.format() == DataFormat::Csv)
        .unwrap_or(true);
    if table {
        bail!(
            "{unfinished}; but that checkpoint predates recorded preprocessing and the run may have trained on a standardised table ({}), which the model would not apply: resume the run (train --resume {}) to finish it, then export",
            config.display(),
            run.display()
        );
    }
    eprintln!("note: {unfinished}; its checkpoint records no input shape, so the model takes flat pixels / 255");
    Ok(export::Description::default())
}
