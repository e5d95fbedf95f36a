//! `smartmixed-cli report PATH`: a report directory (`report.md` plus every figure as SVG
//! and PNG) for a run directory or a sweep directory.

mod plot;
mod ranking;
mod run;
mod sweep;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// How ties in accuracy are ranked, stated in every sweep report.
pub const TIE_RULE: &str = "Ties in test accuracy get competition ranks (\"1224\"): tied methods share the best rank of their tie and the next rank is skipped.";

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A run directory (from `train`) or a sweep directory (from `sweep`).
    path: PathBuf,
    /// Where to write the report (default: PATH/report).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.path.join("report"));
    let sweep = args.path.join("cells").is_dir();
    if !sweep && !args.path.join(smartmixed_train::rundir::METRICS).is_file() {
        bail!(
            "{}: neither a run directory (metrics.csv) nor a sweep directory (cells/)",
            args.path.display()
        );
    }
    std::fs::create_dir_all(&out)
        .with_context(|| format!("{}: cannot create report directory", out.display()))?;
    let files = if sweep {
        sweep::report(&args.path, &out)?
    } else {
        run::report(&args.path, &out)?
    };
    println!("wrote {} in {}", files.join(", "), out.display());
    Ok(())
}
