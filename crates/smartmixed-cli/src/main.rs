//! The `smartmixed-cli` binary: argument parsing, progress display and one-line errors.
//! All work happens in the library crates; anyhow lives only here.

mod progress;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args),
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
