//! The `smartmixed-cli` binary: `train`, `export`, `eval`, `predict`, `inspect`, `serve`,
//! `sweep`, `report`; argument
//! parsing, progress display and one-line errors.
//! All work happens in the library crates; anyhow lives only here.

mod config_args;
mod eval;
mod eval_source;
mod export;
mod inspect;
mod predict;
mod predict_output;
mod progress;
mod report;
mod serve;
mod sweep;
mod train;

use std::process::ExitCode;

/// mimalloc, not the system's: the server allocates per request (the body, the rows, the
/// answer) on several threads. Measured with `examples/load` against the same build on the
/// system allocator, alternating (2-core Xeon, 2026-12-01): 8 binary clients 14.2-15.8k
/// rows/s against 12.6-13.6k, 64 clients 18.7-19.2k against 17.3-19.4k.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

// Link the plugin crate so its activations can appear in a config's pool.
use smartmixed_activations_extra as _;

#[derive(Parser)]
#[command(
    name = "smartmixed-cli",
    version,
    about = "Train networks whose neurons each pick their own activation",
    arg_required_else_help = true
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
    /// Accuracy, per-class accuracy and confusion matrix of an exported model on IDX, CSV or image-folder data.
    Eval(eval::EvalArgs),
    /// Classify images (IDX, PGM, PNG, directories of them) or CSV rows with an exported model.
    Predict(predict::PredictArgs),
    /// Show an exported model's layers and activation groups.
    Inspect(inspect::InspectArgs),
    /// Serve an exported model over HTTP, batching concurrent requests.
    Serve(serve::ServeArgs),
    /// Run (a shard of) the paper's architecture x method x seed sweep, or merge shards.
    Sweep(sweep::SweepArgs),
    /// Write report.md and figures (SVG + PNG) for a run or a sweep directory.
    Report(report::ReportArgs),
}

/// Writes a file atomically (`smartmixed_train::fsutil`), the error naming it.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(smartmixed_train::fsutil::write_atomic(path, bytes)?)
}

/// `text` safe to print on a terminal: control characters (ANSI escapes, newlines,
/// carriage returns in class names read from a CSV or folder names) written as `\u{..}`
/// escapes, everything else as it is.
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rust ignores SIGPIPE, so printing to a closed pipe (`eval ... | head -1`) would panic;
/// Unix tools instead end quietly when the reader goes away. Not for `serve`: there a
/// client that hangs up makes a socket write raise SIGPIPE (hyper writes with `writev`,
/// which has no MSG_NOSIGNAL), and the default action would end the whole server; with
/// SIGPIPE ignored the write fails with EPIPE for that connection only.
#[cfg(unix)]
fn end_quietly_on_broken_pipe() {
    // SAFETY: called in `main` right after parsing, before any other thread exists;
    // setting a signal's disposition to SIG_DFL installs no handler and touches no Rust
    // state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn end_quietly_on_broken_pipe() {}

/// An error and its causes in one line, each cause once: many errors already print their
/// source in their own message.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    shown(&msg.replace('\n', " "))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and the help that no subcommand prints.
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            // clap's first line names the argument and what was expected (a missing
            // argument's name is on the next line); keep just that, in one line.
            let text = e.to_string();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("error: invalid arguments");
            let line = if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
                let missing: Vec<&str> = lines
                    .take_while(|l| l.starts_with(' '))
                    .map(str::trim)
                    .collect();
                format!("{first} {}", missing.join(", "))
            } else {
                first.to_string()
            };
            eprintln!("{line}");
            return ExitCode::from(2);
        }
    };
    // clap prints --help and its errors before this, ignoring a broken pipe itself.
    if !matches!(cli.command, Command::Serve(_)) {
        end_quietly_on_broken_pipe();
    }
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args).map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => eval::run(args).map(|()| ExitCode::SUCCESS),
        Command::Predict(args) => predict::run(args).map(|()| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect::run(args).map(|()| ExitCode::SUCCESS),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Sweep(args) => sweep::run(args),
        Command::Report(args) => report::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and positional argument of every subcommand says what it is in `--help`
    /// (three of train's flags had no text).
    #[test]
    fn every_argument_has_help_text() {
        let mut missing = Vec::new();
        let cli = super::Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if text.trim().is_empty() {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
