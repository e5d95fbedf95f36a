//! The run directory: resolved config, `metrics.csv`, `choices.csv`, checkpoints and
//! `summary.json`, every file written atomically.

use std::path::{Path, PathBuf};

use serde::Serialize;
use smartmixed_core::TrainConfig;

use crate::fsutil::write_atomic;
use crate::{Error, Result};

/// File names inside a run directory.
pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.csv";
pub const CHOICES: &str = "choices.csv";
pub const SUMMARY: &str = "summary.json";
/// The phases a run trains, each with a best checkpoint [`checkpoint_file`].
pub const PHASES: [&str; 3] = ["phase1", "phase2", "fixed"];

/// The best checkpoint of `phase` (`phase1-best.safetensors`, ...).
pub fn checkpoint_file(phase: &str) -> String {
    format!("{phase}-best.safetensors")
}

/// Every file a run writes, so that a directory holding any of them is never reused.
pub fn run_files() -> Vec<String> {
    let mut files: Vec<String> = [CONFIG, METRICS, CHOICES, SUMMARY, crate::resume::STATE]
        .iter()
        .map(|f| f.to_string())
        .collect();
    files.extend(PHASES.iter().map(|p| checkpoint_file(p)));
    files
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRecord {
    /// `phase1`, `phase2` or `fixed`.
    pub phase: String,
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub validation_accuracy: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// Mean global gradient norm before clipping.
    pub grad_norm: f64,
}

/// An open run directory; CSV files are rewritten whole (atomically) after each epoch.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    metrics: String,
    choices: String,
}

impl RunDir {
    /// Creates (or opens an existing) directory for a new run. A directory holding any
    /// file a run writes is refused, so nothing in it can be overwritten.
    pub fn create(path: &Path) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                message: "is a file, expected a run directory to create".into(),
            });
        }
        for f in run_files() {
            if path.join(&f).exists() {
                return Err(Error::Mismatch {
                    path: path.to_path_buf(),
                    message: format!(
                        "already holds {f}, which a run would overwrite; choose another --out"
                    ),
                });
            }
        }
        std::fs::create_dir_all(path)
            .map_err(|e| Error::io(path, "cannot create run directory", e))?;
        Ok(Self::create_unchecked(path))
    }

    fn create_unchecked(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            metrics: "phase,epoch,train_loss,validation_loss,validation_accuracy,seconds,samples_per_second,grad_norm\n".into(),
            choices: "epoch,layer,activation,count\n".into(),
        }
    }

    /// Opens the directory of an interrupted run to resume it: its CSV files are read
    /// back, to be trimmed with [`RunDir::truncate_after`].
    pub fn open(path: &Path) -> Result<Self> {
        if !path.join(CONFIG).is_file() {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                message: format!("not a run directory (no {CONFIG}); --resume takes the directory of an interrupted run"),
            });
        }
        if path.join(SUMMARY).is_file() {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                message: "this run already finished (summary.json exists)".into(),
            });
        }
        let mut dir = Self::create_unchecked(path);
        for (file, text) in [(METRICS, &mut dir.metrics), (CHOICES, &mut dir.choices)] {
            match std::fs::read_to_string(path.join(file)) {
                Ok(t) => *text = t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path.join(file), "cannot read", e)),
            }
        }
        Ok(dir)
    }

    /// Drops CSV rows written after epoch `epochs_done` of `phase` (a crash between the
    /// CSV write and the state write can leave one).
    pub fn truncate_after(&mut self, phase: &str, epochs_done: usize) -> Result<()> {
        let order = |p: &str| match p {
            "phase1" => 1,
            "phase2" => 2,
            _ => 3,
        };
        let keep_metric = |line: &str| {
            let mut f = line.split(',');
            match (f.next(), f.next().and_then(|e| e.parse::<usize>().ok())) {
                (Some(p), Some(e)) => order(p) < order(phase) || (p == phase && e <= epochs_done),
                _ => true, // the header
            }
        };
        let keep_choice =
            |line: &str| match line.split(',').next().and_then(|e| e.parse::<usize>().ok()) {
                Some(e) => phase != "phase1" || e <= epochs_done,
                None => true,
            };
        let filter = |text: &str, keep: &dyn Fn(&str) -> bool| -> String {
            text.lines()
                .filter(|l| keep(l))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        self.metrics = filter(&self.metrics, &keep_metric);
        self.choices = filter(&self.choices, &keep_choice);
        write_atomic(&self.path.join(METRICS), self.metrics.as_bytes())?;
        if self.path.join(CHOICES).exists() {
            write_atomic(&self.path.join(CHOICES), self.choices.as_bytes())?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_config(&self, config: &TrainConfig) -> Result<()> {
        write_atomic(&self.path.join(CONFIG), config.to_toml_string()?.as_bytes())
    }

    pub fn add_epoch(&mut self, r: &EpochRecord) -> Result<()> {
        self.metrics.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.3},{:.1},{:.6}\n",
            r.phase,
            r.epoch,
            r.train_loss,
            r.validation_loss,
            r.validation_accuracy,
            r.seconds,
            r.samples_per_second,
            r.grad_norm
        ));
        write_atomic(&self.path.join(METRICS), self.metrics.as_bytes())
    }

    /// Records phase 1's per-layer counts of neurons per activation after `epoch`.
    pub fn add_choices(
        &mut self,
        epoch: usize,
        pool: &[&str],
        counts: &[Vec<usize>],
    ) -> Result<()> {
        for (l, layer) in counts.iter().enumerate() {
            for (name, c) in pool.iter().zip(layer) {
                self.choices
                    .push_str(&format!("{epoch},{},{name},{c}\n", l + 1));
            }
        }
        write_atomic(&self.path.join(CHOICES), self.choices.as_bytes())
    }

    pub fn write_summary(&self, summary: &impl Serialize) -> Result<()> {
        let json = serde_json::to_string_pretty(summary).unwrap_or_default();
        write_atomic(&self.path.join(SUMMARY), json.as_bytes())
    }
}
