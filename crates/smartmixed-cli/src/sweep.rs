//! `smartmixed-cli sweep`: the paper's architectures x methods x seeds, each cell an
//! ordinary run directory under `OUT/cells/`; finished cells are skipped, unfinished ones
//! resumed; `--shard K/N` and `--only` select cells; `--merge` joins shard directories.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::write_atomic;
use anyhow::{bail, Context, Result};
use smartmixed_train::data::Splits;
use smartmixed_train::resume::Fingerprint;
use smartmixed_train::rundir::{RunDir, SUMMARY};
use smartmixed_train::sweep::{
    plan_merge, results_csv, shard, Cell, CellFilter, ResultRow, SweepConfig,
};
use smartmixed_train::Cpu;
use smartmixed_train::{Summary, Trainer};

use crate::progress::Reporter;

use crate::train::parse_threads;

/// The results table of a sweep directory.
pub const RESULTS: &str = "results.csv";
/// The copy of the sweep config inside a sweep directory.
pub const SWEEP_CONFIG: &str = "sweep.toml";

#[derive(clap::Args)]
pub struct SweepArgs {
    /// Sweep config (e.g. configs/paper-sweep.toml).
    #[arg(long, required_unless_present = "merge")]
    config: Option<PathBuf>,
    /// Sweep directory to create or continue.
    #[arg(long)]
    out: PathBuf,
    /// Run only shard K of N (0 <= K < N), e.g. `--shard $SLURM_ARRAY_TASK_ID/18`.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Only cells matching KEY=VALUES (KEY: arch, method or seed; values comma-separated).
    /// Repeat to combine.
    #[arg(long)]
    only: Vec<CellFilter>,
    /// Merge these sweep (shard) directories into --out instead of training.
    #[arg(long, num_args = 1.., conflicts_with_all = ["config", "shard", "only"])]
    merge: Vec<PathBuf>,
    /// Retrain cells whose recorded config differs from the sweep config's (they are
    /// refused otherwise, so that results.csv never mixes configs).
    #[arg(long)]
    retrain_changed: bool,
    /// Training threads per cell (default: every core).
    #[arg(long, default_value_t = 0, hide_default_value = true, value_parser = parse_threads)]
    threads: usize,
}

fn parse_shard(s: &str) -> std::result::Result<(usize, usize), String> {
    let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 0/4")?;
    let (k, n): (usize, usize) = (
        k.parse().map_err(|_| "K is not a number")?,
        n.parse().map_err(|_| "N is not a number")?,
    );
    if n == 0 || k >= n {
        return Err(format!("shard {k}/{n}: expected 0 <= K < N"));
    }
    Ok((k, n))
}

/// Trains the selected cells (exit 130 when interrupted, as `train`), or merges shards.
pub fn run(args: SweepArgs) -> Result<ExitCode> {
    if !args.merge.is_empty() {
        return merge(&args.merge, &args.out).map(|()| ExitCode::SUCCESS);
    }
    let config_path = args.config.as_ref().context("--config is required")?;
    // Read once: the same text is parsed here and recorded as sweep.toml below.
    let text = smartmixed_core::tensorfile::read_text(config_path, smartmixed_core::MAX_TEXT_BYTES)
        .with_context(|| format!("{}: cannot read", config_path.display()))?;
    let mut cfg = SweepConfig::from_toml_str(&text, &config_path.display().to_string())?;
    // Relative paths in the sweep file are relative to its folder, as in a train config.
    crate::config_args::resolve_data_paths(&mut cfg.data, &text, config_path)?;
    crate::config_args::absolute_data_paths(&mut cfg.data)?;
    let mut cells = cfg.cells();
    // A value the sweep does not have is a typo or a method the config leaves out (such
    // as smartmixed-auto in the paper's sweeps), not an empty selection.
    if let Some(missing) = args.only.iter().find_map(|f| f.missing_value(&cells)) {
        bail!(
            "--only {missing}: no cell of {} has it (sweep.architectures: 1 to {}; sweep.methods: {}; sweep.seeds: {:?}){}",
            config_path.display(),
            cfg.sweep.architectures.len(),
            cfg.sweep.methods.join(", "),
            cfg.sweep.seeds,
            if missing.starts_with("method=") {
                "; add the method to sweep.methods to run it"
            } else {
                ""
            }
        );
    }
    // Filtered first, then sharded: N shards split the selected cells evenly.
    cells.retain(|c| args.only.iter().all(|f| f.accepts(c)));
    if cells.is_empty() {
        bail!(
            "--only: the filters together select no cell of {}",
            config_path.display()
        );
    }
    if let Some((k, n)) = args.shard {
        let selected = cells.len();
        cells = shard(&cells, k, n);
        if cells.is_empty() {
            bail!(
                "--shard {k}/{n}: {} has {selected} selected cell(s), so shard {k} holds none; use at most {selected} shards",
                config_path.display()
            );
        }
    }
    let data = crate::progress::while_loading("loading data", || {
        Splits::load(&cfg.data, cfg.data.classes)
    })?;
    // Every cell is checked against the data and memory before anything is created, and
    // a refusal names the sweep file and its field (a cell's config.toml does not exist
    // yet).
    for cell in &cells {
        let origin = format!("{} (cell {})", config_path.display(), cell.id());
        smartmixed_train::check_data_fits(&cfg.cell_config(cell), &data, &origin).map_err(|e| {
            match e {
                smartmixed_train::Error::Core(e) => {
                    smartmixed_train::Error::Core(cfg.in_sweep_terms(cell, e))
                }
                other => other,
            }
        })?;
    }
    prepare_directory(&args, &cfg, &data, &text)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed));
    let total = cells.len();
    for (i, cell) in cells.iter().enumerate() {
        let tag = format!("[{}/{total}] {}", i + 1, cell.id());
        match train_cell(&args, &cfg, cell, &data, &stop, &tag) {
            Ok(None) => println!("{tag}: finished earlier, skipped"),
            Ok(Some((s, resumed))) => {
                let last = s.phases.last().context("a run has phases")?;
                println!(
                    "{tag}: {}test accuracy {:.2}% (best epoch {}), {:.1} s",
                    if resumed { "resumed, " } else { "" },
                    100.0 * last.test_accuracy,
                    last.best_epoch,
                    s.seconds
                );
            }
            Err(smartmixed_train::Error::Interrupted) => {
                write_results(&args.out, &cfg)?;
                eprintln!(
                    "interrupted at cell {}; run the same command again to continue",
                    cell.id()
                );
                return Ok(ExitCode::from(130));
            }
            Err(e) => return Err(e).with_context(|| format!("cell {}", cell.id())),
        }
    }
    let n = write_results(&args.out, &cfg)?;
    println!("{n} finished cells in {}", args.out.join(RESULTS).display());
    Ok(ExitCode::SUCCESS)
}

/// Refuses cells trained under another config or on other data (or clears them with
/// --retrain-changed), then creates the sweep directory and records the sweep config in
/// it. Every cell of the config is checked, not only those `--only` selects: results.csv
/// ranks them all.
fn prepare_directory(args: &SweepArgs, cfg: &SweepConfig, data: &Splits, text: &str) -> Result<()> {
    let changed = changed_cells(cfg, &cfg.cells(), &args.out, &Fingerprint::of(data));
    if !changed.is_empty() && !args.retrain_changed {
        bail!(
            "{}: {} cell(s) were trained under another config: {}; pass --retrain-changed to retrain them",
            args.out.display(),
            changed.len(),
            changed
                .iter()
                .map(|(id, fields)| format!("{id} ({fields})"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    std::fs::create_dir_all(args.out.join("cells"))
        .with_context(|| format!("{}: cannot create sweep directory", args.out.display()))?;
    for (id, _) in &changed {
        let dir = args.out.join("cells").join(id);
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("{}: cannot clear changed cell", dir.display()))?;
    }
    write_atomic(&args.out.join(SWEEP_CONFIG), text.as_bytes())
}

/// Trains (or resumes) one cell; `None` if it had finished earlier, else its summary and
/// whether it was resumed.
fn train_cell(
    args: &SweepArgs,
    cfg: &SweepConfig,
    cell: &Cell,
    data: &Splits,
    stop: &AtomicBool,
    tag: &str,
) -> smartmixed_train::Result<Option<(Summary, bool)>> {
    let dir = args.out.join("cells").join(cell.id());
    if dir.join(SUMMARY).is_file() {
        return Ok(None);
    }
    let cell_cfg = cfg.cell_config(cell);
    let resumable = dir.join(smartmixed_train::rundir::STATE).is_file();
    let mut run = if resumable {
        RunDir::open(&dir)?
    } else {
        if dir.exists() {
            // Started but never finished an epoch: start over.
            std::fs::remove_dir_all(&dir).map_err(|e| smartmixed_train::Error::Io {
                path: dir.clone(),
                action: "cannot clear unfinished cell",
                source: e,
            })?;
        }
        RunDir::create(&dir)?
    };
    let mut reporter = Reporter::new(&cell_cfg.model.pool, Some(tag.to_string()));
    let mut trainer = Trainer {
        dev: &Cpu::default(),
        config: &cell_cfg,
        data,
        run: &mut run,
        progress: &mut reporter,
        stop,
        threads: args.threads,
    };
    let summary = if resumable {
        trainer.resume()
    } else {
        trainer.run()
    };
    reporter.finish();
    Ok(Some((summary?, resumable)))
}

/// The cells under `out/cells` (finished or resumable) whose recorded config.toml differs
/// from what `cfg` now asks for, or whose summary records other data than `data`, with
/// what differs.
fn changed_cells(
    cfg: &SweepConfig,
    cells: &[Cell],
    out: &Path,
    data: &Fingerprint,
) -> Vec<(String, String)> {
    cells
        .iter()
        .filter_map(|cell| {
            let dir = out.join("cells").join(cell.id());
            let recorded = dir.join(smartmixed_train::rundir::CONFIG);
            // Cells that never finished an epoch are started over anyway.
            let kept =
                dir.join(SUMMARY).is_file() || dir.join(smartmixed_train::rundir::STATE).is_file();
            if !kept || !recorded.is_file() {
                return None;
            }
            let mut fields = match smartmixed_train::TrainConfig::from_file(&recorded) {
                Ok(old) => old.differences(&cfg.cell_config(cell)),
                Err(_) => vec!["unreadable config.toml".to_string()],
            };
            let summary = smartmixed_train::rundir::read_summary(&dir.join(SUMMARY));
            if let Some(then) = summary.ok().and_then(|s| s.data) {
                let differences = then.differences(data);
                if !differences.is_empty() {
                    fields.push(format!(
                        "the data ({}){}",
                        differences.join(", "),
                        cfg.data.changed_subset_note()
                    ));
                }
            }
            let fields = fields.join(", ");
            (!fields.is_empty()).then(|| (cell.id(), fields))
        })
        .collect()
}

/// One finished cell: its id, directory and summary.
pub struct Finished {
    pub cell: Cell,
    pub dir: PathBuf,
    pub summary: Summary,
}

/// Every finished cell under `dir/cells`, sorted by cell.
pub fn finished_cells(dir: &Path) -> Result<Vec<Finished>> {
    let cells = dir.join("cells");
    let entries = std::fs::read_dir(&cells)
        .with_context(|| format!("{}: not a sweep directory", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        if !path.join(SUMMARY).is_file() {
            continue;
        }
        let summary = smartmixed_train::rundir::read_summary(&path.join(SUMMARY))?;
        // read_summary guarantees an input and an output width.
        let hidden = summary.architecture[1..summary.architecture.len() - 1].to_vec();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(cell) = Cell::from_id(&name, hidden) {
            out.push(Finished {
                cell,
                dir: path,
                summary,
            });
        }
    }
    out.sort_by(|a, b| a.cell.cmp(&b.cell));
    Ok(out)
}

/// The cells of `cfg` among `finished`, and the names of the others (left by an earlier
/// config of the same directory: a cell `--retrain-changed` does not look at); a cell of
/// `cfg` whose recorded widths are not its architecture's is an error naming it.
pub fn of_config(
    finished: Vec<Finished>,
    cfg: &SweepConfig,
) -> Result<(Vec<Finished>, Vec<String>)> {
    let mut cells = Vec::new();
    let mut others = Vec::new();
    for f in finished {
        let name = f.dir.file_name().unwrap_or_default();
        match Cell::of_config(name, cfg) {
            Err(_) => others.push(name.to_string_lossy().escape_debug().to_string()),
            Ok(c) if c.hidden != f.cell.hidden => bail!(
                "{}: architecture: hidden widths {:?}, but architecture {} of the sweep config is {:?}",
                f.dir.join(SUMMARY).display(),
                f.cell.hidden,
                c.architecture,
                c.hidden
            ),
            Ok(_) => cells.push(f),
        }
    }
    Ok((cells, others))
}

/// Writes `dir/results.csv` from the finished cells under `dir/cells` that are cells of
/// `cfg` (others are named on stderr and left out), quoted by the csv crate; a cell whose
/// phases' epochs overflow is an error naming it.
fn write_results(dir: &Path, cfg: &SweepConfig) -> Result<usize> {
    let (cells, others) = of_config(finished_cells(dir)?, cfg)?;
    if !others.is_empty() {
        eprintln!(
            "{}: left out of {RESULTS}, not cells of the sweep config: {}",
            dir.join("cells").display(),
            others.join(", ")
        );
    }
    let mut rows = Vec::with_capacity(cells.len());
    for f in &cells {
        let last = f.summary.phases.last().context("a run has phases")?;
        let epochs = f
            .summary
            .phases
            .iter()
            .try_fold(0usize, |sum, p| sum.checked_add(p.epochs))
            .with_context(|| {
                format!(
                    "{}: the phases' epochs add up to more than {}",
                    f.dir.join(SUMMARY).display(),
                    usize::MAX
                )
            })?;
        rows.push(ResultRow {
            cell: f.cell.clone(),
            validation_accuracy: last.validation_accuracy,
            test_accuracy: last.test_accuracy,
            best_epoch: last.best_epoch,
            epochs,
            seconds: f.summary.seconds,
        });
    }
    write_atomic(&dir.join(RESULTS), &results_csv(&rows)?)?;
    Ok(cells.len())
}

/// Links the finished cells of every shard directory into `out/cells` and writes
/// `out/results.csv`. Refused: shards (or an earlier merge in `out`) recorded under
/// different sweep configs, cell directories whose names are not cells of the config, a
/// cell finished in two shards with different results, and anything other than a link
/// from an earlier merge where a cell's link goes.
fn merge(dirs: &[PathBuf], out: &Path) -> Result<()> {
    // Each shard's summaries are read first, so that a damaged one is named.
    for d in dirs {
        finished_cells(d)?;
    }
    let plan = plan_merge(dirs)?;
    let recorded = out.join(SWEEP_CONFIG);
    if recorded.exists() {
        let (_, earlier) = smartmixed_train::sweep::read_sweep_dir_config(out)?;
        let changed = earlier.differences(&plan.config);
        if !changed.is_empty() {
            bail!(
                "{}: an earlier merge recorded another sweep config (differs from {} in {}); merge into a new --out",
                recorded.display(),
                dirs[0].join(SWEEP_CONFIG).display(),
                changed.join(", ")
            );
        }
    }
    let cells = out.join("cells");
    std::fs::create_dir_all(&cells)
        .with_context(|| format!("{}: cannot create", cells.display()))?;
    for (cell, dir) in &plan.cells {
        let source = std::fs::canonicalize(dir)
            .with_context(|| format!("{}: cannot resolve", dir.display()))?;
        place_link(&source, &cells.join(cell.id()))?;
    }
    if !recorded.exists() {
        write_atomic(&recorded, plan.text.as_bytes())?;
    }
    let n = write_results(out, &plan.config)?;
    println!(
        "merged {n} finished cells into {}",
        out.join(RESULTS).display()
    );
    Ok(())
}

/// Links `target` to `source`: a link an earlier merge left there (dangling, or to
/// another copy) is replaced; the cell's own directory is kept; anything else is refused,
/// saying what is there.
fn place_link(source: &Path, target: &Path) -> Result<()> {
    match std::fs::symlink_metadata(target) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("{}: cannot inspect", target.display())),
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::canonicalize(target).ok().as_deref() == Some(source) {
                return Ok(());
            }
            let was = std::fs::read_link(target).unwrap_or_default();
            println!(
                "{}: replacing the link of an earlier merge (to {}{})",
                target.display(),
                was.display(),
                if was.exists() { "" } else { ", which no longer exists" }
            );
            std::fs::remove_file(target).with_context(|| {
                format!("{}: cannot replace the link of an earlier merge", target.display())
            })?;
        }
        Ok(_) if std::fs::canonicalize(target).ok().as_deref() == Some(source) => return Ok(()),
        Ok(m) => bail!(
            "{}: a {} is already there (not a link from an earlier merge); move it away or merge into a new --out",
            target.display(),
            if m.is_dir() { "directory" } else { "file" }
        ),
    }
    link_dir(source, target)
        .with_context(|| format!("{}: cannot link {}", target.display(), source.display()))
}

#[cfg(unix)]
fn link_dir(source: &Path, target: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(source, target)
}

#[cfg(not(unix))]
fn link_dir(source: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(target)?;
    for e in std::fs::read_dir(source)? {
        let e = e?;
        std::fs::copy(e.path(), target.join(e.file_name()))?;
    }
    Ok(())
}
