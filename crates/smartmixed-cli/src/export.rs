//! `smartmixed-cli export`: a run's best checkpoint as `model.safetensors` + `manifest.toml`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use smartmixed_core::Phase;
use smartmixed_train::{checkpoint, export, rundir, Cpu};

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
    let net = checkpoint::load(&Cpu::default(), &path)?;
    // The input and class description a finished run recorded (an unfinished run has
    // none: the manifest then describes its input as pixels / 255 of a flat shape).
    let summary_path = args.run.join(rundir::SUMMARY);
    let description = if summary_path.is_file() {
        let summary = rundir::read_summary(&summary_path)?;
        export::Description {
            input: summary.input,
            class_names: summary.class_names,
        }
    } else {
        export::Description::default()
    };
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
