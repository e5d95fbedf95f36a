//! `smartmixed-cli report PATH`: a report directory (`report.md` plus every figure as SVG
//! and PNG) for a run directory or a sweep directory, finished or still running.

mod plot;
mod ranking;
mod run;
mod sweep;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use smartmixed_train::rundir::CONFIG;

/// A report being written: its markdown so far and the figures rendered, held in memory
/// until [`Writer::finish`]. `run` and `sweep` add their sections as methods of their own.
struct Writer<'a> {
    out: &'a Path,
    md: String,
    files: Vec<(String, Vec<u8>)>,
}

impl<'a> Writer<'a> {
    /// A report into `out` that starts with `md`.
    fn new(out: &'a Path, md: String) -> Self {
        Self {
            out,
            md,
            files: Vec::new(),
        }
    }

    /// Renders `fig` as `stem.svg` and `stem.png` (written by `finish`) and shows the PNG
    /// in the markdown.
    fn save(&mut self, fig: &plot::Figure, stem: &str, alt: &str) -> Result<()> {
        let (svg, png) = fig
            .render()
            .with_context(|| format!("{}: cannot draw", self.out.join(stem).display()))?;
        self.md.push_str(&format!("\n![{alt}]({stem}.png)\n\n"));
        self.files.push((format!("{stem}.svg"), svg.into_bytes()));
        self.files.push((format!("{stem}.png"), png));
        Ok(())
    }

    /// Writes every figure and then `report.md`, each atomically, and only once all were
    /// drawn: a report that fails midway leaves an earlier report's files as they were.
    /// Returns the files written.
    fn finish(mut self) -> Result<Vec<String>> {
        self.files.push((
            "report.md".into(),
            std::mem::take(&mut self.md).into_bytes(),
        ));
        for (name, bytes) in &self.files {
            crate::write_atomic(&self.out.join(name), bytes)?;
        }
        Ok(self.files.into_iter().map(|(name, _)| name).collect())
    }
}

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
    let run_file = |f: &str| args.path.join(f).is_file();
    if !sweep && !run_file(smartmixed_train::rundir::METRICS) && !run_file(CONFIG) {
        bail!(
            "{}: neither a run directory (metrics.csv, or config.toml for a run that has not finished an epoch) nor a sweep directory (cells/)",
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
