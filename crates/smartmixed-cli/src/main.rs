//! The `smartmixed-cli` binary: `train`, `export`, `eval`, `predict`, `inspect`, `sweep`,
//! `report`; argument
//! parsing, progress display and one-line errors.
//! All work happens in the library crates; anyhow lives only here.

mod eval;
mod export;
mod inspect;
mod predict;
mod progress;
mod report;
mod sweep;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Link the plugin crate so its activations can appear in a config's pool.
use smartmixed_activations_extra as _;

#[derive(Parser)]
#[command(
    name = "smartmixed-cli",
    version,
    about = "Train networks whose neurons each pick their own activation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train phase 1 (selection) then phase 2 (mixed), or a fixed-activation baseline.
    Train(train::TrainArgs),
    /// Export a run's best checkpoint as model.safetensors + manifest.toml.
    Export(export::ExportArgs),
    /// Accuracy, per-class accuracy and confusion matrix of an exported model.
    Eval(eval::EvalArgs),
    /// Classify an image (IDX, PGM or PNG) with an exported model.
    Predict(predict::PredictArgs),
    /// Show an exported model's layers and activation groups.
    Inspect(inspect::InspectArgs),
    /// Run (a shard of) the paper's architecture x method x seed sweep, or merge shards.
    Sweep(sweep::SweepArgs),
    /// Write report.md and figures (SVG + PNG) for a run or a sweep directory.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's first line names the argument and what was expected; keep just that.
            let text = e.to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args).map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => eval::run(args).map(|()| ExitCode::SUCCESS),
        Command::Predict(args) => predict::run(args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect::run(args).map(|()| ExitCode::SUCCESS),
        Command::Sweep(args) => sweep::run(args).map(|()| ExitCode::SUCCESS),
        Command::Report(args) => report::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the whole cause chain, joined.
            let msg = e
                .chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("error: {}", msg.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
