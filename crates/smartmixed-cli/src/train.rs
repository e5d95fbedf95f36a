//! `smartmixed-cli train`: resolve the config, load the data, train, print Table I.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use smartmixed_core::InputKind;
use smartmixed_train::config::DataFormat;
use smartmixed_train::data::Splits;
use smartmixed_train::rundir::RunDir;
use smartmixed_train::{check_data_fits, Summary, Trainer};
use smartmixed_train::{Mode, TrainConfig};

use crate::progress::Reporter;

/// The default config, built in so `train` works with no file.
const QUICK: &str = include_str!("../../../configs/quick.toml");

#[derive(clap::Args)]
pub struct TrainArgs {
    /// TOML config (default: the built-in configs/quick.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue an interrupted run from its last completed epoch (its config.toml is used;
    /// only --data-dir may be given with it).
    #[arg(long, conflicts_with_all = ["config", "out", "phase1_epochs", "phase2_epochs", "seed", "train_limit", "test_limit"])]
    resume: Option<PathBuf>,
    /// Run directory to create (default: runs/run-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Epochs of phase 1 (`phase1.epochs`; with `transition = "auto"`, the most it takes).
    #[arg(long, value_parser = parse_toml_count)]
    phase1_epochs: Option<usize>,
    /// Epochs of phase 2 (`phase2.epochs`).
    #[arg(long, value_parser = parse_toml_count)]
    phase2_epochs: Option<usize>,
    /// Seed of weight init, shuffling and Gumbel noise (`training.seed`).
    #[arg(long, value_parser = parse_seed, allow_negative_numbers = true)]
    seed: Option<u64>,
    /// `data.dir`: the IDX files or the image folder, relative to the working directory
    /// (a CSV config names its table in `data.file`; use --set data.file=PATH).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Train on a random subset of this many training images.
    #[arg(long, value_parser = parse_toml_count)]
    train_limit: Option<usize>,
    /// Test on this many test items: the first ones of IDX files, a seeded random subset of an image folder's or a table's (whose first items are often one class).
    #[arg(long, value_parser = parse_toml_count)]
    test_limit: Option<usize>,
    /// Training threads (default: every core; at most 4 per core are started).
    #[arg(long, default_value_t = 0, hide_default_value = true, value_parser = parse_threads)]
    threads: usize,
    /// Override any config field: `--set section.key=VALUE` (VALUE as TOML, or a bare
    /// string), e.g. `--set phase1.auto.threshold=0.2`; repeatable, applied in order after
    /// the other flags. A path given here is relative to the working directory.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::config_args::parse_set, conflicts_with = "resume")]
    sets: Vec<crate::config_args::Set>,
    /// Print the resolved config (file, flags and --set, with every default) as TOML and
    /// exit without training.
    #[arg(long, conflicts_with = "resume")]
    print_config: bool,
}

/// `--threads`: 0 (every core) up to [`smartmixed_train::MAX_THREADS`].
pub fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    let max = smartmixed_train::MAX_THREADS;
    match s.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!(
            "expected a thread count from 0 (every core) to {max}"
        )),
    }
}

/// `--seed`: a seed config.toml can record (TOML integers are i64).
fn parse_seed(s: &str) -> std::result::Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a seed; expected a whole number from 0 to {}",
            i64::MAX
        )),
    }
}

/// The threads a run of `asked` starts, with a warning when that is fewer (more than
/// [`smartmixed_train::THREADS_PER_CORE`] per core only adds waiting).
pub fn capped_threads(asked: usize) -> usize {
    let threads = smartmixed_train::capped_threads(asked);
    if threads < asked {
        eprintln!(
            "warning: --threads {asked} is more than {} per core on these {} cores; training on {threads} threads",
            smartmixed_train::THREADS_PER_CORE,
            threads / smartmixed_train::THREADS_PER_CORE
        );
    }
    threads
}

/// A count that config.toml can record (TOML integers are i64).
fn parse_toml_count(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(n as usize),
        _ => Err(format!("expected a whole number from 0 to {}", i64::MAX)),
    }
}

/// The config and the name errors give it. Relative paths in a config file are relative
/// to its folder (the built-in config's to `configs/` under the working directory, where
/// it comes from); paths from flags and `--set` to the working directory.
fn resolve(args: &TrainArgs) -> Result<(TrainConfig, String)> {
    let (text, path) = match &args.config {
        Some(path) => (
            smartmixed_core::tensorfile::read_text(path, smartmixed_core::MAX_TEXT_BYTES)
                .with_context(|| format!("{}: cannot read config", path.display()))?,
            path.clone(),
        ),
        None => (QUICK.to_string(), PathBuf::from("configs/quick.toml")),
    };
    let origin = path.display().to_string();
    // Parsed unvalidated, so that flags and --set may mend a field; a parse error is
    // core's, naming the line.
    let mut cfg: TrainConfig = match toml::from_str(&text) {
        Ok(cfg) => cfg,
        Err(e) => {
            TrainConfig::from_toml_str(&text, &origin)?;
            anyhow::bail!("{origin}: {}", e.message());
        }
    };
    crate::config_args::resolve_data_paths(&mut cfg.data, &text, &path)?;
    let mut overridden = !args.sets.is_empty();
    let mut set = |b: bool| overridden |= b;
    if let Some(e) = args.phase1_epochs {
        cfg.phase1.epochs = e;
        set(true);
    }
    if let Some(e) = args.phase2_epochs {
        cfg.phase2.epochs = e;
        set(true);
    }
    if let Some(s) = args.seed {
        cfg.training.seed = s;
    }
    if let Some(d) = &args.data_dir {
        cfg.data.dir = d.clone();
    }
    if let Some(n) = args.train_limit {
        cfg.data.train_limit = Some(n);
        set(true);
    }
    if let Some(n) = args.test_limit {
        cfg.data.test_limit = Some(n);
        set(true);
    }
    let mut cfg = crate::config_args::apply_sets(cfg, &args.sets)?;
    let origin = if !args.sets.is_empty() {
        format!(
            "{origin} with {}",
            crate::config_args::shown_sets(&args.sets)
        )
    } else if overridden || args.seed.is_some() {
        format!("{origin} with command-line overrides")
    } else {
        origin
    };
    cfg.validate(&origin)?;
    if let Some(d) = &args.data_dir {
        set_data_dir(&mut cfg, d, &origin)?;
    }
    crate::config_args::absolute_data_paths(&mut cfg.data)?;
    Ok((cfg, origin))
}

/// `--data-dir`: `data.dir`, for IDX files and image folders only; a CSV config would
/// ignore it, so it is refused naming the table.
fn set_data_dir(cfg: &mut TrainConfig, dir: &Path, origin: &str) -> Result<()> {
    if cfg.data.format() == DataFormat::Csv {
        anyhow::bail!(
            "--data-dir {}: {origin} reads the CSV table data.file = {}, which --data-dir does not change; give the table with --set data.file=PATH",
            dir.display(),
            cfg.data
                .file
                .as_deref()
                .map_or_else(|| "?".into(), |f| f.display().to_string())
        );
    }
    cfg.data.dir = dir.to_path_buf();
    Ok(())
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let (cfg, origin, mut run) = match &args.resume {
        Some(dir) => {
            // Checked first, so that a directory that is not a run says so.
            let run = RunDir::open(dir)?;
            let path = dir.join(smartmixed_train::rundir::CONFIG);
            // A run's config.toml records paths as training resolved them (absolute
            // since paths became relative to the config file), so they are not resolved
            // again here.
            let mut cfg = TrainConfig::from_file(&path)?;
            let origin = path.display().to_string();
            if let Some(d) = &args.data_dir {
                set_data_dir(&mut cfg, d, &origin)?;
            }
            (cfg, origin, Some(run))
        }
        None => {
            let (cfg, origin) = resolve(&args)?;
            if args.print_config {
                print!("{}", cfg.to_toml_string()?);
                return Ok(ExitCode::SUCCESS);
            }
            (cfg, origin, None)
        }
    };
    let data = crate::progress::while_loading("loading data", || {
        Splits::load(&cfg.data, cfg.data.classes)
    })?;
    check_data_fits(&cfg, &data, &origin)?;
    let mut run = match run.take() {
        Some(run) => run,
        None => {
            let out = default_out(&args);
            if smartmixed_train::rundir::never_completed_an_epoch(&out) {
                eprintln!(
                    "{} holds a run that never completed an epoch; starting it again",
                    out.display()
                );
            }
            RunDir::create(&out)?
        }
    };
    let threads = capped_threads(args.threads);
    train_in(&cfg, &data, &mut run, args.resume.is_some(), threads)
}

fn default_out(args: &TrainArgs) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("runs/run-{secs}"))
    })
}

/// The line that says what is about to train, on what, and where.
fn announce(cfg: &TrainConfig, data: &Splits, out: &std::path::Path, resume: bool) {
    let what = match cfg.model.mode {
        Mode::Smartmixed => "SmartMixed".to_string(),
        Mode::Fixed => format!(
            "a fixed-{} baseline",
            cfg.model.activation.as_deref().unwrap_or("?")
        ),
    };
    let unit = match data.train.input().kind() {
        InputKind::Table => "rows",
        _ => "images",
    };
    eprintln!(
        "{} {what} on {} train / {} validation / {} test {unit}, run directory {}",
        if resume { "resuming" } else { "training" },
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        out.display()
    );
    for column in &data.imprecise_features {
        let file = cfg
            .data
            .file
            .as_deref()
            .unwrap_or(std::path::Path::new("?"));
        eprintln!("warning: {}: {column}", file.display());
    }
    if data.dropped_rows > 0 {
        eprintln!(
            "left out {} table row(s) with an invalid cell (data.invalid = \"drop\"; summary.json records the count)",
            data.dropped_rows
        );
    }
}

/// Trains (or resumes) in `run`, with progress, Ctrl-C handling and the final table.
fn train_in(
    cfg: &TrainConfig,
    data: &Splits,
    run: &mut RunDir,
    resume: bool,
    threads: usize,
) -> Result<ExitCode> {
    let out = run.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    // A second Ctrl-C while stopping is ignored; the current batch finishes first.
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed));
    let mut reporter = Reporter::new(&cfg.model.pool, None);
    announce(cfg, data, &out, resume);
    #[cfg(feature = "cuda")]
    let dev = smartmixed_train::Cuda::try_build(0, cfg.training.seed)
        .map_err(|e| anyhow::anyhow!("cannot open CUDA device 0: {e:?}"))?;
    #[cfg(not(feature = "cuda"))]
    let dev = smartmixed_train::Cpu::default();
    let mut trainer = Trainer {
        dev: &dev,
        config: cfg,
        data,
        run,
        progress: &mut reporter,
        stop: &stop,
        threads,
    };
    let result = if resume {
        trainer.resume()
    } else {
        trainer.run()
    };
    reporter.finish();
    match result {
        Ok(summary) => {
            print_table(&summary);
            println!("run directory: {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(smartmixed_train::Error::Interrupted) => {
            eprintln!(
                "interrupted; continue with: {} train --resume {}",
                program(),
                out.display()
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e.into()),
    }
}

/// This program as it was run (argv[0]): the hint then runs from the same directory
/// whether it came from `cargo install` (a name on PATH), a path such as
/// `target/release/smartmixed-cli`, or `cargo run` (which runs the built binary's path).
pub fn program() -> String {
    std::env::args_os()
        .next()
        .map(|a| crate::shown(&a.to_string_lossy()))
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "smartmixed-cli".into())
}

/// Table I of the paper: phase, validation accuracy, test accuracy.
fn print_table(s: &Summary) {
    println!();
    println!(
        "{:<22} {:>20} {:>15} {:>11} {:>7}",
        "Training phase", "Validation accuracy", "Test accuracy", "Best epoch", "Epochs"
    );
    for p in &s.phases {
        let label = p.phase.label();
        let early = if p.ended_early.is_some() { "*" } else { "" };
        println!(
            "{:<22} {:>19.2}% {:>14.2}% {:>11} {:>6}{early}",
            label,
            100.0 * p.validation_accuracy,
            100.0 * p.test_accuracy,
            p.best_epoch,
            p.epochs
        );
    }
    println!(
        "best epoch by {}{}",
        s.select.name(),
        if s.phases.iter().any(|p| p.ended_early.is_some()) {
            "; * ended early (summary.json says why)"
        } else {
            ""
        }
    );
    println!(
        "wall time: {:.1} s on {} threads, subnormals {}",
        s.seconds,
        s.threads,
        if s.flush_denormals {
            "flushed to zero"
        } else {
            "kept (IEEE)"
        }
    );
}
