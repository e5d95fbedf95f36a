//! The run directory: resolved config, `metrics.csv`, `choices.csv`, checkpoints and
//! `summary.json`, every file written atomically.

use std::path::{Path, PathBuf};

use serde::Serialize;
use smartmixed_core::tensorfile::read_text;
use smartmixed_core::Phase;

use crate::fsutil::write_atomic;
use crate::{Error, Result, TrainConfig};

/// File names inside a run directory.
pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.csv";
pub const CHOICES: &str = "choices.csv";
pub const SUMMARY: &str = "summary.json";
/// The per-epoch resume state (network, optimiser moments, position) behind `--resume`.
pub const STATE: &str = "state.safetensors";

/// Every file a run writes, so that a directory holding any of them is never reused.
pub fn run_files() -> Vec<String> {
    let mut files: Vec<String> = [CONFIG, METRICS, CHOICES, SUMMARY, STATE]
        .iter()
        .map(|f| f.to_string())
        .collect();
    files.extend(Phase::ALL.iter().map(|p| p.checkpoint_file()));
    files
}

/// Whether `path` holds a run that never completed an epoch: its config.toml (one this
/// trainer reads) but neither a resume state nor a summary. Every epoch ends by writing
/// the state and a run by writing the summary, so nothing there can be resumed (a run
/// killed in its first epoch, or while writing its first state) and `--out` may start
/// the run again in place.
pub fn never_completed_an_epoch(path: &Path) -> bool {
    path.join(CONFIG).is_file()
        && !path.join(STATE).exists()
        && !path.join(SUMMARY).exists()
        && TrainConfig::from_file(&path.join(CONFIG)).is_ok()
}

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRecord {
    pub phase: Phase,
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub validation_accuracy: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
    /// Mean global gradient norm before clipping.
    pub grad_norm: f64,
    /// Phase 1: the fraction of hidden neurons whose argmax choice changed in this epoch
    /// (0 in other phases; what `phase1.transition = "auto"` watches).
    pub choices_changed: f64,
    /// Phase 1: the fraction whose choice changed in the last `phase1.auto.window` epochs,
    /// the figure `transition = "auto"` compares with its threshold.
    pub choices_changed_window: f64,
}

/// The largest metrics.csv or choices.csv read back (a 350-epoch run writes 40 kB).
const MAX_CSV_BYTES: u64 = 64 << 20;

fn read_run_file(path: &Path) -> Result<String> {
    read_text(path, MAX_CSV_BYTES).map_err(|e| Error::io(path, "cannot read", e))
}

/// A CSV file's header and rows, cells trimmed; errors name the line and column.
struct Table<'a> {
    path: &'a Path,
    header: Vec<&'a str>,
    rows: Vec<(usize, Vec<&'a str>)>,
}

impl<'a> Table<'a> {
    fn parse(path: &'a Path, text: &'a str) -> Self {
        let mut lines = text.lines();
        let header = lines
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .collect();
        let rows = lines
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 2, l.split(',').map(str::trim).collect()))
            .collect();
        Table { path, header, rows }
    }

    fn bad(&self, line: usize, message: String) -> Error {
        Error::Mismatch {
            path: self.path.to_path_buf(),
            message: format!("line {line}: {message}"),
        }
    }

    fn column(&self, name: &str) -> Result<usize> {
        self.optional(name)
            .ok_or_else(|| self.bad(1, format!("no column `{name}` in the header")))
    }

    fn optional(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| *h == name)
    }

    fn cell(&self, (line, cells): &(usize, Vec<&'a str>), c: usize) -> Result<&'a str> {
        cells.get(c).copied().ok_or_else(|| {
            let expected = self.header.len();
            self.bad(
                *line,
                format!("{} fields, expected {expected}", cells.len()),
            )
        })
    }

    /// A cell parsed as `T`; `what` says what was expected.
    fn parse_cell<T: std::str::FromStr>(
        &self,
        row: &(usize, Vec<&'a str>),
        c: usize,
        what: &str,
    ) -> Result<T> {
        let v = self.cell(row, c)?;
        v.parse()
            .map_err(|_| self.bad(row.0, format!("{}: `{v}` is not {what}", self.header[c])))
    }
}

/// Reads `metrics.csv` back, by its header's column names (columns added later may be
/// missing: they read as 0). A cell that is not a number is an error naming the line and
/// the column; non-finite numbers (a diverged run) are kept.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = read_run_file(path)?;
    let t = Table::parse(path, &text);
    let [phase, epoch, train, val_loss, val_acc] = [
        "phase",
        "epoch",
        "train_loss",
        "validation_loss",
        "validation_accuracy",
    ]
    .map(|name| t.column(name));
    let (phase, epoch, train, val_loss, val_acc) = (phase?, epoch?, train?, val_loss?, val_acc?);
    let extra = [
        "seconds",
        "samples_per_second",
        "grad_norm",
        "choices_changed",
        "choices_changed_window",
    ]
    .map(|name| t.optional(name));
    let mut records = Vec::new();
    for row in &t.rows {
        let number = |c: usize| t.parse_cell::<f64>(row, c, "a number");
        let maybe = |c: Option<usize>| c.map_or(Ok(0.0), number);
        let name = t.cell(row, phase)?;
        let phase = Phase::from_name(name).ok_or_else(|| {
            t.bad(
                row.0,
                format!("phase: `{name}`, expected phase1, phase2 or fixed"),
            )
        })?;
        records.push(EpochRecord {
            phase,
            epoch: t.parse_cell(row, epoch, "a whole number")?,
            train_loss: number(train)?,
            validation_loss: number(val_loss)?,
            validation_accuracy: number(val_acc)?,
            seconds: maybe(extra[0])?,
            samples_per_second: maybe(extra[1])?,
            grad_norm: maybe(extra[2])?,
            choices_changed: maybe(extra[3])?,
            choices_changed_window: maybe(extra[4])?,
        });
    }
    Ok(records)
}

/// One row of `choices.csv`: after phase-1 `epoch`, `count` neurons of hidden `layer`
/// (from 1) chose `activation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceRow {
    pub epoch: usize,
    pub layer: usize,
    pub activation: String,
    pub count: usize,
}

/// Reads `choices.csv` back; a missing file is no rows (fixed baselines write none).
pub fn read_choices(path: &Path) -> Result<Vec<ChoiceRow>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = read_run_file(path)?;
    let mut rows = Vec::new();
    for (i, l) in text.lines().enumerate().skip(1) {
        if l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        let bad = |what: &str| Error::Mismatch {
            path: path.to_path_buf(),
            message: format!(
                "line {}: {what}; expected epoch,layer,activation,count",
                i + 1
            ),
        };
        if f.len() != 4 {
            return Err(bad(&format!("{} fields", f.len())));
        }
        let whole = |k: usize, name: &str| {
            f[k].parse::<usize>()
                .map_err(|_| bad(&format!("{name} `{}` is not a whole number", f[k])))
        };
        rows.push(ChoiceRow {
            epoch: whole(0, "epoch")?,
            layer: whole(1, "layer")?,
            activation: f[2].to_string(),
            count: whole(3, "count")?,
        });
    }
    Ok(rows)
}

/// Consecutive layers `1..=layers` pooled into at most `max` bands of nearly equal size,
/// each `(first, last)` inclusive: a report draws a bounded number of panels however many
/// layers a run has.
pub fn layer_bands(layers: usize, max: usize) -> Vec<(usize, usize)> {
    let n = layers.min(max.max(1));
    (0..n)
        .map(|b| {
            // b * layers / n without overflow: layers < 2^64 and b < n <= max.
            let at = |b: usize| (b as u128 * layers as u128 / n as u128) as usize;
            (at(b) + 1, at(b + 1))
        })
        .collect()
}

/// The most distinct activation names `choices.csv` may hold (a config's pool holds at
/// most 255).
pub const MAX_CHOICE_ACTIVATIONS: usize = 255;

/// `choices.csv` summarised for figures: the hidden layers found, pooled into at most
/// `max_bands` bands of consecutive layers, and per band and activation its share of the
/// band's neurons after each phase-1 epoch. Memory grows with the rows read, never with
/// the layer or epoch numbers they hold.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceShares {
    /// Activation names in the order first seen.
    pub activations: Vec<String>,
    /// Distinct hidden layers in the file.
    pub layers: usize,
    pub bands: Vec<ShareBand>,
}

/// One band of [`ChoiceShares`].
#[derive(Debug, Clone, PartialEq)]
pub struct ShareBand {
    /// The first and last layer number it pools.
    pub layers: (usize, usize),
    /// Per activation, the `(epoch, percent)` points where the band recorded it.
    pub series: Vec<Vec<(f64, f64)>>,
}

/// Reads `choices.csv` (see [`read_choices`]) into [`ChoiceShares`] with at most
/// `max_bands` bands; counts are added with checked arithmetic (an overflow is an error
/// naming the file).
pub fn read_choice_shares(path: &Path, max_bands: usize) -> Result<ChoiceShares> {
    use std::collections::{BTreeMap, BTreeSet};
    let rows = read_choices(path)?;
    let bad = |message: String| Error::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    let layers: BTreeSet<usize> = rows.iter().map(|r| r.layer).collect();
    let layer_numbers: Vec<usize> = layers.into_iter().collect();
    let bands = layer_bands(layer_numbers.len(), max_bands);
    let band_of = |layer: usize| {
        // Position among the distinct layers, then the band holding that position.
        let i = layer_numbers.partition_point(|&l| l < layer) + 1;
        bands.partition_point(|&(_, last)| last < i)
    };
    let mut activations: Vec<String> = Vec::new();
    // (band, epoch, activation) -> count, and (band, epoch) -> total.
    let mut counts: BTreeMap<(usize, usize, usize), u64> = BTreeMap::new();
    let mut totals: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    for r in &rows {
        let a = match activations.iter().position(|n| *n == r.activation) {
            Some(a) => a,
            None if activations.len() < MAX_CHOICE_ACTIVATIONS => {
                activations.push(r.activation.clone());
                activations.len() - 1
            }
            None => {
                return Err(bad(format!(
                "more than {MAX_CHOICE_ACTIVATIONS} distinct activations, expected a pool's names"
            )))
            }
        };
        let b = band_of(r.layer);
        let overflow = || {
            bad(format!(
                "the counts of epoch {} add up to more than 2^64",
                r.epoch
            ))
        };
        let c = counts.entry((b, r.epoch, a)).or_default();
        *c = c.checked_add(r.count as u64).ok_or_else(overflow)?;
        let t = totals.entry((b, r.epoch)).or_default();
        *t = t.checked_add(r.count as u64).ok_or_else(overflow)?;
    }
    let mut out: Vec<ShareBand> = bands
        .iter()
        .map(|&(first, last)| ShareBand {
            layers: (layer_numbers[first - 1], layer_numbers[last - 1]),
            series: vec![Vec::new(); activations.len()],
        })
        .collect();
    for (&(b, epoch, a), &c) in &counts {
        let total = totals.get(&(b, epoch)).copied().unwrap_or(0).max(1);
        out[b].series[a].push((epoch as f64, 100.0 * c as f64 / total as f64));
    }
    Ok(ChoiceShares {
        activations,
        layers: layer_numbers.len(),
        bands: out,
    })
}

#[cfg(test)]
mod choice_share_tests {
    use super::*;

    #[test]
    fn bands_cover_every_layer_once_and_are_bounded() {
        assert_eq!(layer_bands(3, 24), [(1, 1), (2, 2), (3, 3)]);
        assert_eq!(layer_bands(10, 4), [(1, 2), (3, 5), (6, 7), (8, 10)]);
        assert!(layer_bands(0, 24).is_empty());
        for (layers, max) in [(6000, 24), (25, 24), (usize::MAX, 24), (7, 0)] {
            let b = layer_bands(layers, max);
            assert!(b.len() <= max.max(1));
            assert_eq!(b[0].0, 1);
            assert_eq!(b.last().unwrap().1, layers);
            assert!(b
                .windows(2)
                .all(|w| w[1].0 == w[0].1 + 1 && w[0].0 <= w[0].1));
        }
    }

    #[test]
    fn shares_pool_the_layers_of_a_band() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHOICES);
        // Three layers in at most two bands: layer 1, then layers 2 and 3.
        std::fs::write(
            &path,
            "epoch,layer,activation,count\n1,1,relu,3\n1,1,tanh,1\n1,2,relu,1\n1,2,tanh,3\n1,3,relu,2\n2,3,tanh,4\n",
        )
        .unwrap();
        let s = read_choice_shares(&path, 2).unwrap();
        assert_eq!(s.activations, ["relu", "tanh"]);
        assert_eq!(s.layers, 3);
        assert_eq!(s.bands.len(), 2);
        // Band 1 is layer 1 alone: 3 of 4 relu.
        assert_eq!(s.bands[0].layers, (1, 1));
        assert_eq!(s.bands[0].series, [vec![(1.0, 75.0)], vec![(1.0, 25.0)]]);
        // Band 2 pools layers 2 and 3: epoch 1 has 1 + 2 relu and 3 tanh of 6; epoch 2
        // only tanh.
        assert_eq!(s.bands[1].layers, (2, 3));
        assert_eq!(
            s.bands[1].series,
            [vec![(1.0, 50.0)], vec![(1.0, 50.0), (2.0, 100.0)]]
        );
        // Counts that overflow are an error, not a wrapped share.
        std::fs::write(
            &path,
            format!(
                "epoch,layer,activation,count\n1,1,relu,{m}\n1,1,tanh,{m}\n",
                m = usize::MAX
            ),
        )
        .unwrap();
        let e = read_choice_shares(&path, 2).unwrap_err().to_string();
        assert!(
            e.contains("choices.csv") && e.contains("more than 2^64"),
            "{e}"
        );
    }
}

/// Reads `summary.json` back and checks what readers index: at least an input and an
/// output width, at least one phase.
pub fn read_summary(path: &Path) -> Result<crate::trainer::Summary> {
    let text = read_run_file(path)?;
    let bad = |message: String| Error::Mismatch {
        path: path.to_path_buf(),
        message,
    };
    let summary: crate::trainer::Summary =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if summary.architecture.len() < 2 || summary.architecture.contains(&0) {
        return Err(bad(format!(
            "architecture: {:?}, expected input, hidden and output widths, each > 0",
            summary.architecture
        )));
    }
    if summary.phases.is_empty() {
        return Err(bad("phases: empty, expected at least one phase".into()));
    }
    Ok(summary)
}

/// An open run directory; CSV files are rewritten whole (atomically) after each epoch.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    metrics: String,
    choices: String,
    /// Whether each epoch saves the state `--resume` continues from and rewrites the CSV
    /// files, and each improving epoch its phase's best checkpoint; false for a throwaway
    /// directory ([`RunDir::without_resume_state`]).
    resumable: bool,
}

impl RunDir {
    /// Creates (or opens an existing) directory for a new run. A directory holding any
    /// file a run writes is refused, so nothing in it can be overwritten, unless it holds
    /// a run that [never completed an epoch](never_completed_an_epoch): that run starts
    /// again in place.
    pub fn create(path: &Path) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                message: "is a file, expected a run directory to create".into(),
            });
        }
        let restart = never_completed_an_epoch(path);
        for f in run_files().iter().filter(|_| !restart) {
            if path.join(f).exists() {
                return Err(Error::Mismatch {
                    path: path.to_path_buf(),
                    message: format!(
                        "already holds a run (its {f} would be overwritten); choose another --out"
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
            metrics: "phase,epoch,train_loss,validation_loss,validation_accuracy,seconds,samples_per_second,grad_norm,choices_changed,choices_changed_window\n".into(),
            choices: "epoch,layer,activation,count\n".into(),
            resumable: true,
        }
    }

    /// For a directory deleted when the run ends (a scikit-learn `fit`'s): no epoch saves
    /// the resume state (weights, Adam moments, position), which nobody could resume from
    /// (a tenth of a small table's fit: wine, 1 ms of 11 for 20 epochs), and the CSV files
    /// are written once, with the summary, instead of whole after every epoch (nobody reads
    /// them meanwhile: epochs reach a caller through [`crate::Progress`]), as is each
    /// phase's best checkpoint, at the phase's end.
    pub fn without_resume_state(mut self) -> Self {
        self.resumable = false;
        self
    }

    /// Whether each epoch saves the resume state (see [`Self::without_resume_state`]).
    pub fn resumable(&self) -> bool {
        self.resumable
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
        if never_completed_an_epoch(path) {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "this run never completed an epoch (no {STATE}), so there is nothing to resume; start it again with `train --config {} --out {}`",
                    path.join(CONFIG).display(),
                    path.display()
                ),
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
    pub fn truncate_after(&mut self, phase: Phase, epochs_done: usize) -> Result<()> {
        let keep_metric = |line: &str| {
            let mut f = line.split(',');
            match (
                f.next().and_then(Phase::from_name),
                f.next().and_then(|e| e.parse::<usize>().ok()),
            ) {
                (Some(p), Some(e)) => p < phase || (p == phase && e <= epochs_done),
                _ => true, // the header
            }
        };
        let keep_choice =
            |line: &str| match line.split(',').next().and_then(|e| e.parse::<usize>().ok()) {
                Some(e) => phase != Phase::Phase1 || e <= epochs_done,
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
            "{},{},{:.6},{:.6},{:.6},{:.3},{:.1},{:.6},{:.6},{:.6}\n",
            r.phase,
            r.epoch,
            r.train_loss,
            r.validation_loss,
            r.validation_accuracy,
            r.seconds,
            r.samples_per_second,
            r.grad_norm,
            r.choices_changed,
            r.choices_changed_window
        ));
        if !self.resumable {
            return Ok(());
        }
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
        if !self.resumable {
            return Ok(());
        }
        write_atomic(&self.path.join(CHOICES), self.choices.as_bytes())
    }

    /// The run's summary; in a directory [without resume state](Self::without_resume_state)
    /// also the CSV files the epochs left unwritten.
    pub fn write_summary(&self, summary: &impl Serialize) -> Result<()> {
        if !self.resumable {
            write_atomic(&self.path.join(METRICS), self.metrics.as_bytes())?;
            if self.choices.lines().nth(1).is_some() {
                write_atomic(&self.path.join(CHOICES), self.choices.as_bytes())?;
            }
        }
        let json = serde_json::to_string_pretty(summary).unwrap_or_default();
        write_atomic(&self.path.join(SUMMARY), json.as_bytes())
    }
}
