//! The sweep config: architectures x methods x seeds, each cell an ordinary training run;
//! cell directory names, the merge plan of shard directories and `results.csv`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use smartmixed_core::{Error, Result};

use crate::config::{
    default_pool, DataConfig, Mode, ModelConfig, OutputLoss, Phase1Config, Phase2Config,
    TrainingConfig, Transition,
};
use crate::TrainConfig;

/// The method name of the two-phase SmartMixed run in `sweep.methods`.
pub const SMARTMIXED: &str = "smartmixed";
/// SmartMixed with `phase1.transition = "auto"` and early stopping of phase 2
/// (`training.patience = sweep.auto_patience`), the sweep's other sections unchanged.
pub const SMARTMIXED_AUTO: &str = "smartmixed-auto";

/// A sweep: the `[sweep]` table plus the training sections every cell shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    pub sweep: SweepSection,
    #[serde(default)]
    pub phase1: Phase1Config,
    #[serde(default)]
    pub phase2: Phase2Config,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub data: DataConfig,
}

/// What to sweep over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSection {
    /// Hidden widths of each architecture, in the paper's order (cells are numbered from 1).
    pub architectures: Vec<Vec<usize>>,
    /// Fixed activations by name, and `smartmixed`.
    pub methods: Vec<String>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// SmartMixed's pool.
    #[serde(default = "default_pool")]
    pub pool: Vec<String>,
    #[serde(default)]
    pub output_loss: OutputLoss,
    /// Phase 2's early-stopping patience in `smartmixed-auto` cells.
    #[serde(default = "default_auto_patience")]
    pub auto_patience: usize,
}

/// The most cells a sweep may have (the paper's sweep has 126): the cells are listed, and
/// each one's config validated, before anything trains.
pub const MAX_CELLS: usize = 100_000;

fn default_seeds() -> Vec<u64> {
    vec![0]
}

fn default_auto_patience() -> usize {
    10
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    /// 1-based position in `sweep.architectures`.
    pub architecture: usize,
    pub hidden: Vec<usize>,
    pub method: String,
    pub seed: u64,
}

impl Cell {
    /// The cell's directory name, e.g. `a03-leaky_relu-s0`.
    pub fn id(&self) -> String {
        format!("a{:02}-{}-s{}", self.architecture, self.method, self.seed)
    }

    /// Reads a directory name written by [`Cell::id`] back (the widths are not in it).
    pub fn from_id(id: &str, hidden: Vec<usize>) -> Option<Self> {
        let rest = id.strip_prefix('a')?;
        let (arch, rest) = rest.split_once('-')?;
        let (method, seed) = rest.rsplit_once("-s")?;
        Some(Cell {
            architecture: arch.parse().ok()?,
            hidden,
            method: method.to_string(),
            seed: seed.parse().ok()?,
        })
    }

    /// Reads a cell directory's name as a cell of `cfg`: exactly as [`Cell::id`] writes
    /// it, for an architecture, a method and a seed the config has. The error says what
    /// was expected.
    pub fn of_config(name: &OsStr, cfg: &SweepConfig) -> std::result::Result<Self, String> {
        let expected = "expected a cell name such as a01-relu-s0 (aNN-METHOD-sSEED)";
        let text = name
            .to_str()
            .ok_or_else(|| format!("the name is not UTF-8; {expected}"))?;
        // Quoted as Rust would (a newline as `\n`), so that a message stays one line.
        let shown = text.escape_debug().to_string();
        let parsed = Cell::from_id(text, Vec::new())
            .filter(|c| c.id() == text)
            .ok_or_else(|| format!("`{shown}` is not a cell name; {expected}"))?;
        let archs = cfg.sweep.architectures.len();
        let hidden = parsed
            .architecture
            .checked_sub(1)
            .and_then(|a| cfg.sweep.architectures.get(a))
            .ok_or_else(|| {
                format!(
                    "`{shown}`: architecture {} is not in sweep.architectures (1 to {archs})",
                    parsed.architecture
                )
            })?;
        if !cfg.sweep.methods.contains(&parsed.method) {
            return Err(format!(
                "`{shown}`: method `{}` is not in sweep.methods ({})",
                parsed.method.escape_debug(),
                cfg.sweep.methods.join(", ")
            ));
        }
        if !cfg.sweep.seeds.contains(&parsed.seed) {
            return Err(format!(
                "`{shown}`: seed {} is not in sweep.seeds",
                parsed.seed
            ));
        }
        Ok(Cell {
            hidden: hidden.clone(),
            ..parsed
        })
    }
}

impl SweepConfig {
    /// Reads, parses and validates a sweep file (every cell's config is validated too).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::config::read_config(path)?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let cfg: Self = crate::config::parse_toml(text, origin)?;
        let fail = |field: &str, message: &str| Error::Config {
            origin: origin.into(),
            field: field.into(),
            message: message.into(),
        };
        if cfg.sweep.architectures.is_empty() {
            return Err(fail(
                "sweep.architectures",
                "expected at least one architecture",
            ));
        }
        if cfg.sweep.methods.is_empty() {
            return Err(fail("sweep.methods", "expected at least one method"));
        }
        if cfg.sweep.seeds.is_empty() {
            return Err(fail("sweep.seeds", "expected at least one seed"));
        }
        if cfg.sweep.auto_patience == 0 {
            return Err(fail("sweep.auto_patience", "expected a count > 0, got 0"));
        }
        for (i, m) in cfg.sweep.methods.iter().enumerate() {
            if cfg.sweep.methods[..i].contains(m) {
                return Err(fail(
                    &format!("sweep.methods[{i}]"),
                    &format!("duplicate method `{m}`"),
                ));
            }
        }
        // A repeated seed names one cell directory twice (the second run was skipped as
        // "finished earlier"); a repeated architecture trains the same cells again under
        // another number and ranks them as another network.
        for (i, seed) in cfg.sweep.seeds.iter().enumerate() {
            if cfg.sweep.seeds[..i].contains(seed) {
                return Err(fail(
                    &format!("sweep.seeds[{i}]"),
                    &format!("duplicate seed {seed}"),
                ));
            }
        }
        for (i, a) in cfg.sweep.architectures.iter().enumerate() {
            if let Some(j) = cfg.sweep.architectures[..i].iter().position(|b| b == a) {
                return Err(fail(
                    &format!("sweep.architectures[{i}]"),
                    &format!("{a:?} repeats sweep.architectures[{j}]"),
                ));
            }
        }
        let (archs, methods, seeds) = (
            cfg.sweep.architectures.len(),
            cfg.sweep.methods.len(),
            cfg.sweep.seeds.len(),
        );
        let cells = archs
            .checked_mul(methods)
            .and_then(|n| n.checked_mul(seeds))
            .filter(|&n| n <= MAX_CELLS);
        if cells.is_none() {
            return Err(fail(
                "sweep",
                &format!(
                    "{archs} architectures x {methods} methods x {seeds} seeds is more than {MAX_CELLS} cells; split the sweep into several files"
                ),
            ));
        }
        for cell in cfg.cells() {
            cfg.cell_config(&cell)
                .validate(&format!("{origin} (cell {})", cell.id()))
                .map_err(|e| cfg.in_sweep_terms(&cell, e))?;
        }
        Ok(cfg)
    }

    /// The dotted fields (of `[sweep]`, `[phase1]`, ...) on which two sweep configs
    /// disagree, ignoring `data.dir` (shards may find the same data in other places).
    pub fn differences(&self, other: &SweepConfig) -> Vec<String> {
        crate::config::field_differences(self, other)
    }

    /// The field of this sweep file that a field of `cell`'s training config comes from
    /// (`model.hidden[0]` of cell a02 is `sweep.architectures[1][0]`): errors about a cell
    /// name what the user can edit, not a config.toml that does not exist.
    pub fn sweep_field(&self, cell: &Cell, field: &str) -> String {
        let index = |list: &[String], v: &str| list.iter().position(|m| m == v).unwrap_or(0);
        let seed = self.sweep.seeds.iter().position(|&s| s == cell.seed);
        if let Some(rest) = field.strip_prefix("model.hidden") {
            format!(
                "sweep.architectures[{}]{rest}",
                cell.architecture.saturating_sub(1)
            )
        } else if field == "model.activation" {
            format!(
                "sweep.methods[{}]",
                index(&self.sweep.methods, &cell.method)
            )
        } else if let Some(rest) = field.strip_prefix("model.pool") {
            format!("sweep.pool{rest}")
        } else if field == "model.output_loss" {
            "sweep.output_loss".into()
        } else if field == "training.seed" {
            format!("sweep.seeds[{}]", seed.unwrap_or(0))
        } else if field == "training.patience" && cell.method == SMARTMIXED_AUTO {
            "sweep.auto_patience".into()
        } else {
            field.to_string()
        }
    }

    /// `e` with a cell config's field renamed by [`Self::sweep_field`] (other errors
    /// unchanged).
    pub fn in_sweep_terms(&self, cell: &Cell, e: Error) -> Error {
        match e {
            Error::Config {
                origin,
                field,
                message,
            } => Error::Config {
                origin,
                field: self.sweep_field(cell, &field),
                message,
            },
            other => other,
        }
    }

    /// Every cell, in order: architecture, then method, then seed.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for (a, hidden) in self.sweep.architectures.iter().enumerate() {
            for method in &self.sweep.methods {
                for &seed in &self.sweep.seeds {
                    cells.push(Cell {
                        architecture: a + 1,
                        hidden: hidden.clone(),
                        method: method.clone(),
                        seed,
                    });
                }
            }
        }
        cells
    }

    /// The training config of one cell.
    pub fn cell_config(&self, cell: &Cell) -> TrainConfig {
        let auto = cell.method == SMARTMIXED_AUTO;
        let smartmixed = auto || cell.method == SMARTMIXED;
        let mut config = TrainConfig {
            model: ModelConfig {
                hidden: cell.hidden.clone(),
                inputs: None,
                mode: if smartmixed {
                    Mode::Smartmixed
                } else {
                    Mode::Fixed
                },
                activation: (!smartmixed).then(|| cell.method.clone()),
                pool: self.sweep.pool.clone(),
                output_loss: self.sweep.output_loss,
            },
            phase1: self.phase1.clone(),
            phase2: self.phase2.clone(),
            training: TrainingConfig {
                seed: cell.seed,
                ..self.training.clone()
            },
            data: self.data.clone(),
        };
        if auto {
            config.phase1.transition = Transition::Auto;
            config.training.patience = Some(self.sweep.auto_patience);
        }
        config
    }
}

/// The file naming the sweep config inside a sweep directory.
pub const SWEEP_FILE: &str = "sweep.toml";
/// The file a finished cell's directory holds.
const SUMMARY_FILE: &str = "summary.json";
/// The largest summary.json compared when a cell is in two shards.
const MAX_SUMMARY_BYTES: u64 = 64 << 20;

/// What merging shard directories makes: the one sweep config they share (its text as
/// the first shard recorded it) and each finished cell with the directory holding it.
#[derive(Debug)]
pub struct MergePlan {
    pub config: SweepConfig,
    pub text: String,
    pub cells: Vec<(Cell, PathBuf)>,
}

/// Reads a sweep directory's recorded config: its text and the parsed config.
pub fn read_sweep_dir_config(dir: &Path) -> Result<(String, SweepConfig)> {
    let path = dir.join(SWEEP_FILE);
    if !path.is_file() {
        return Err(Error::Sweep {
            path: dir.to_path_buf(),
            message: format!("no {SWEEP_FILE}, so not a sweep directory (or shard) to merge"),
        });
    }
    let text = smartmixed_core::tensorfile::read_text(&path, smartmixed_core::MAX_TEXT_BYTES)
        .map_err(|e| Error::Sweep {
            path: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
    let config = SweepConfig::from_toml_str(&text, &path.display().to_string())?;
    Ok((text, config))
}

/// Plans the merge of shard directories: every shard must record the same sweep config;
/// every finished cell's directory name must be a cell of it; a cell finished in two
/// shards must have identical `summary.json` files (the same run) or the merge is refused.
pub fn plan_merge(shards: &[PathBuf]) -> Result<MergePlan> {
    let first = shards.first().ok_or_else(|| Error::Sweep {
        path: PathBuf::new(),
        message: "no shard directories to merge".into(),
    })?;
    let (text, config) = read_sweep_dir_config(first)?;
    let mut cells: BTreeMap<Cell, PathBuf> = BTreeMap::new();
    let mut data: Option<(crate::resume::Fingerprint, PathBuf)> = None;
    for shard in shards {
        let (_, other) = read_sweep_dir_config(shard)?;
        let changed = config.differences(&other);
        if !changed.is_empty() {
            return Err(Error::Sweep {
                path: shard.join(SWEEP_FILE),
                message: format!(
                    "differs from {} in {}; only shards of one sweep config can be merged",
                    first.join(SWEEP_FILE).display(),
                    changed.join(", ")
                ),
            });
        }
        let dir = shard.join("cells");
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::Sweep {
            path: dir.clone(),
            message: format!("cannot list the cells: {e}"),
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::Sweep {
                path: dir.clone(),
                message: format!("cannot list the cells: {e}"),
            })?;
            let path = entry.path();
            if !path.join(SUMMARY_FILE).is_file() {
                continue; // unfinished: not merged
            }
            let cell =
                Cell::of_config(&entry.file_name(), &config).map_err(|message| Error::Sweep {
                    path: path.clone(),
                    message,
                })?;
            check_cell_config(&config, &cell, &path, &mut data)?;
            match cells.get(&cell) {
                Some(kept) if !same_summary(kept, &path)? => {
                    return Err(Error::Sweep {
                        path: path.clone(),
                        message: format!(
                            "cell {} is also in {} with a different summary.json; remove one copy before merging",
                            cell.id(),
                            kept.display()
                        ),
                    })
                }
                Some(_) => {}
                None => {
                    cells.insert(cell, path);
                }
            }
        }
    }
    Ok(MergePlan {
        config,
        text,
        cells: cells.into_iter().collect(),
    })
}

/// The cell's recorded config.toml is what `config` asks of `cell` (its data paths aside:
/// sweep.toml keeps them as written, relative to a folder the merge does not know), and
/// its summary's data fingerprint is the first cell's (`data`, set by the first call), so
/// shards trained on different data (or under edited configs) are not merged.
fn check_cell_config(
    config: &SweepConfig,
    cell: &Cell,
    dir: &Path,
    data: &mut Option<(crate::resume::Fingerprint, PathBuf)>,
) -> Result<()> {
    let path = dir.join(crate::rundir::CONFIG);
    let sweep_error = |path: &Path, message: String| Error::Sweep {
        path: path.to_path_buf(),
        message,
    };
    // A cell without its config.toml (copied by hand) is checked by its data alone.
    let changed = if path.is_file() {
        let recorded = TrainConfig::from_file(&path)
            .map_err(|e| sweep_error(&path, format!("cannot read the cell's config: {e}")))?;
        let mut expected = config.cell_config(cell);
        expected.data.dir = recorded.data.dir.clone();
        expected.data.file = recorded.data.file.clone();
        expected.data.test_file = recorded.data.test_file.clone();
        recorded.differences(&expected)
    } else {
        Vec::new()
    };
    if !changed.is_empty() {
        return Err(sweep_error(
            &path,
            format!(
                "differs in {} from what the sweep config asks of cell {}; only cells of one sweep config can be merged",
                changed.join(", "),
                cell.id()
            ),
        ));
    }
    let summary_path = dir.join(SUMMARY_FILE);
    let summary = crate::rundir::read_summary(&summary_path)
        .map_err(|e| sweep_error(&summary_path, format!("cannot read: {e}")))?;
    let Some(fingerprint) = summary.data else {
        return Ok(()); // a run from before fingerprints were recorded
    };
    let (reference, origin) = data.get_or_insert_with(|| (fingerprint, summary_path.clone()));
    let differences = reference.differences(&fingerprint);
    if differences.is_empty() {
        return Ok(());
    }
    Err(sweep_error(
        &summary_path,
        format!(
            "trained on other data than {} ({}); only cells trained on the same data can be merged",
            origin.display(),
            differences
                .join(", ")
                .replace(" then,", " there,")
                .replace(" now", " here")
        ),
    ))
}

/// Whether two cell directories hold byte-identical `summary.json` files.
fn same_summary(a: &Path, b: &Path) -> Result<bool> {
    let read = |d: &Path| {
        let path = d.join(SUMMARY_FILE);
        smartmixed_core::tensorfile::read_text(&path, MAX_SUMMARY_BYTES).map_err(|e| Error::Sweep {
            path,
            message: format!("cannot read: {e}"),
        })
    };
    Ok(read(a)? == read(b)?)
}

/// One row of `results.csv`: a finished cell and its last phase's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub cell: Cell,
    pub validation_accuracy: f64,
    pub test_accuracy: f64,
    pub best_epoch: usize,
    /// Epochs over all phases.
    pub epochs: usize,
    pub seconds: f64,
}

/// The columns of `results.csv`.
pub const RESULTS_HEADER: [&str; 10] = [
    "cell",
    "architecture",
    "hidden",
    "method",
    "seed",
    "validation_accuracy",
    "test_accuracy",
    "best_epoch",
    "epochs",
    "seconds",
];

/// `results.csv` as bytes, written by the csv crate: a field holding a comma, a quote or a
/// newline is quoted, so every row reads back as ten fields.
pub fn results_csv(rows: &[ResultRow]) -> Result<Vec<u8>> {
    let fail = |e: csv::Error| Error::Sweep {
        path: PathBuf::from("results.csv"),
        message: format!("cannot write: {e}"),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(RESULTS_HEADER).map_err(fail)?;
    for r in rows {
        let hidden: Vec<String> = r.cell.hidden.iter().map(|w| w.to_string()).collect();
        w.write_record([
            r.cell.id(),
            r.cell.architecture.to_string(),
            hidden.join("-"),
            r.cell.method.clone(),
            r.cell.seed.to_string(),
            format!("{:.6}", r.validation_accuracy),
            format!("{:.6}", r.test_accuracy),
            r.best_epoch.to_string(),
            r.epochs.to_string(),
            format!("{:.1}", r.seconds),
        ])
        .map_err(fail)?;
    }
    w.into_inner().map_err(|e| Error::Sweep {
        path: PathBuf::from("results.csv"),
        message: format!("cannot write: {e}"),
    })
}

/// The cells of shard `k` of `n` (0 <= k < n): every `n`-th cell from the `k`-th, so every
/// cell is in exactly one shard and shards get similar mixes of small and large networks.
pub fn shard(cells: &[Cell], k: usize, n: usize) -> Vec<Cell> {
    cells
        .iter()
        .enumerate()
        .filter(|(i, _)| n > 0 && i % n == k)
        .map(|(_, c)| c.clone())
        .collect()
}

/// A `--only` filter: `arch=1,3`, `method=relu,smartmixed` or `seed=0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellFilter {
    Architecture(Vec<usize>),
    Method(Vec<String>),
    Seed(Vec<u64>),
}

impl std::str::FromStr for CellFilter {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (key, values) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected KEY=VALUES with KEY arch, method or seed"))?;
        let list: Vec<&str> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        if list.is_empty() {
            return Err(format!("`{s}`: no values"));
        }
        let nums = |what: &str| -> std::result::Result<Vec<u64>, String> {
            list.iter()
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("`{s}`: `{v}` is not a {what}"))
                })
                .collect()
        };
        match key.trim() {
            "arch" | "architecture" => Ok(Self::Architecture(
                nums("number")?.into_iter().map(|v| v as usize).collect(),
            )),
            "method" => Ok(Self::Method(list.iter().map(|v| v.to_string()).collect())),
            "seed" => Ok(Self::Seed(nums("seed")?)),
            other => Err(format!(
                "`{s}`: unknown key `{other}`, expected arch, method or seed"
            )),
        }
    }
}

impl CellFilter {
    /// The first value of this filter that no cell of `cells` has (`method=relux`,
    /// `arch=99`): such a filter would silently select nothing.
    pub fn missing_value(&self, cells: &[Cell]) -> Option<String> {
        match self {
            Self::Architecture(a) => a
                .iter()
                .find(|v| !cells.iter().any(|c| c.architecture == **v))
                .map(|v| format!("arch={v}")),
            Self::Method(m) => m
                .iter()
                .find(|v| !cells.iter().any(|c| &c.method == *v))
                .map(|v| format!("method={v}")),
            Self::Seed(s) => s
                .iter()
                .find(|v| !cells.iter().any(|c| c.seed == **v))
                .map(|v| format!("seed={v}")),
        }
    }

    pub fn accepts(&self, c: &Cell) -> bool {
        match self {
            Self::Architecture(a) => a.contains(&c.architecture),
            Self::Method(m) => m.contains(&c.method),
            Self::Seed(s) => s.contains(&c.seed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWEEP: &str = "[sweep]\narchitectures = [[8], [8, 4], [6]]\nmethods = [\"relu\", \"tanh\", \"smartmixed\"]\nseeds = [0, 1]\n[phase1]\nepochs = 1\n[phase2]\nepochs = 1\n";

    #[test]
    fn smartmixed_auto_cells_transition_automatically_and_stop_early() {
        let text = SWEEP.replace(
            "\"smartmixed\"]",
            "\"smartmixed\", \"smartmixed-auto\"]\nauto_patience = 4",
        );
        let sweep = SweepConfig::from_toml_str(&text, "t").unwrap();
        let cells = sweep.cells();
        let config =
            |method: &str| sweep.cell_config(cells.iter().find(|c| c.method == method).unwrap());
        let (auto, paper) = (config(SMARTMIXED_AUTO), config(SMARTMIXED));
        assert_eq!(auto.model.mode, Mode::Smartmixed);
        assert_eq!(auto.phase1.transition, Transition::Auto);
        assert_eq!(auto.training.patience, Some(4));
        assert_eq!(paper.phase1.transition, Transition::Fixed);
        assert_eq!(paper.training.patience, None);
        let zero = text.replace("auto_patience = 4", "auto_patience = 0");
        let e = SweepConfig::from_toml_str(&zero, "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sweep.auto_patience"), "{e}");
    }

    #[test]
    fn cell_ids_read_back() {
        for cell in SweepConfig::from_toml_str(SWEEP, "t").unwrap().cells() {
            assert_eq!(Cell::from_id(&cell.id(), cell.hidden.clone()), Some(cell));
        }
        let odd = Cell {
            architecture: 12,
            hidden: vec![],
            method: "leaky_relu-s-x".into(),
            seed: 7,
        };
        assert_eq!(Cell::from_id(&odd.id(), vec![]), Some(odd));
        assert_eq!(Cell::from_id("b01-relu-s0", vec![]), None);
        assert_eq!(Cell::from_id("a01-relu-sx", vec![]), None);
    }

    #[test]
    fn cells_are_the_full_product_and_shards_partition_them() {
        let cfg = SweepConfig::from_toml_str(SWEEP, "s.toml").unwrap();
        let cells = cfg.cells();
        assert_eq!(cells.len(), 3 * 3 * 2);
        assert_eq!(cells[0].id(), "a01-relu-s0");
        for n in 1..=7 {
            let mut seen: Vec<Cell> = (0..n).flat_map(|k| shard(&cells, k, n)).collect();
            seen.sort();
            let mut all = cells.clone();
            all.sort();
            assert_eq!(seen, all, "n = {n}");
            let sizes: Vec<usize> = (0..n).map(|k| shard(&cells, k, n).len()).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
        }
        let c = &cells[5];
        let tc = cfg.cell_config(c);
        assert_eq!(tc.training.seed, c.seed);
        assert_eq!(tc.model.hidden, c.hidden);
    }

    #[test]
    fn filters_parse_and_select() {
        let cfg = SweepConfig::from_toml_str(SWEEP, "s.toml").unwrap();
        let f: Vec<CellFilter> = [
            "arch=2,3".parse().unwrap(),
            "method=smartmixed".parse().unwrap(),
        ]
        .to_vec();
        let picked: Vec<String> = cfg
            .cells()
            .iter()
            .filter(|c| f.iter().all(|f| f.accepts(c)))
            .map(Cell::id)
            .collect();
        assert_eq!(
            picked,
            [
                "a02-smartmixed-s0",
                "a02-smartmixed-s1",
                "a03-smartmixed-s0",
                "a03-smartmixed-s1"
            ]
        );
        let cells = SweepConfig::from_toml_str(SWEEP, "s.toml").unwrap().cells();
        let missing = |f: &str| f.parse::<CellFilter>().unwrap().missing_value(&cells);
        assert_eq!(missing("method=relu,relux"), Some("method=relux".into()));
        assert_eq!(missing("arch=1,99"), Some("arch=99".into()));
        assert_eq!(missing("seed=1,2"), Some("seed=2".into()));
        assert_eq!(missing("method=tanh,smartmixed"), None);
        assert!("colour=red".parse::<CellFilter>().is_err());
        assert!("seed=x".parse::<CellFilter>().is_err());
    }

    #[test]
    fn bad_sweeps_name_the_field() {
        let e = SweepConfig::from_toml_str(&SWEEP.replace("\"tanh\"", "\"tanhh\""), "s.toml")
            .unwrap_err()
            .to_string();
        // The sweep's own fields, not those of a cell config.toml that does not exist.
        assert!(
            e.contains("sweep.methods[1]") && e.contains("tanhh") && !e.contains("model."),
            "{e}"
        );
        let e = SweepConfig::from_toml_str(
            &SWEEP.replace("[[8], [8, 4], [6]]", "[[8], [0]]"),
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sweep.architectures[1][0]") && e.contains("a02") && !e.contains("model."),
            "{e}"
        );
    }

    /// A repeated seed made two cells of one directory (the second "finished earlier,
    /// skipped", results.csv one row short); a repeated architecture trained the same
    /// network twice under two numbers; a product of millions of cells was listed and
    /// validated for minutes, growing by gigabytes, before anything was said.
    #[test]
    fn repeated_values_and_oversized_products_are_refused() {
        let e = |text: &str| {
            SweepConfig::from_toml_str(text, "s.toml")
                .unwrap_err()
                .to_string()
        };
        let seeds = e(&SWEEP.replace("seeds = [0, 1]", "seeds = [0, 1, 0]"));
        assert!(
            seeds.starts_with("s.toml: sweep.seeds[2]: duplicate seed 0"),
            "{seeds}"
        );
        let archs = e(&SWEEP.replace("[[8], [8, 4], [6]]", "[[8], [8, 4], [8, 4]]"));
        assert!(
            archs.starts_with(
                "s.toml: sweep.architectures[2]: [8, 4] repeats sweep.architectures[1]"
            ),
            "{archs}"
        );
        let many: Vec<String> = (0..400).map(|s| s.to_string()).collect();
        let widths: Vec<String> = (1..=300).map(|w| format!("[{w}]")).collect();
        let huge = SWEEP
            .replace("seeds = [0, 1]", &format!("seeds = [{}]", many.join(", ")))
            .replace("[[8], [8, 4], [6]]", &format!("[{}]", widths.join(", ")));
        let start = std::time::Instant::now();
        let big = e(&huge);
        assert!(
            big.starts_with("s.toml: sweep: 300 architectures x 3 methods x 400 seeds is more than 100000 cells"),
            "{big}"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // At the limit itself the sweep is accepted.
        let at_limit: Vec<String> = (0..MAX_CELLS / 9).map(|s| s.to_string()).collect();
        let ok = SweepConfig::from_toml_str(
            &SWEEP.replace(
                "seeds = [0, 1]",
                &format!("seeds = [{}]", at_limit.join(", ")),
            ),
            "s.toml",
        )
        .unwrap();
        assert!(ok.cells().len() <= MAX_CELLS);
    }

    #[test]
    fn cell_directory_names_must_be_cells_of_the_config() {
        let cfg = SweepConfig::from_toml_str(SWEEP, "s.toml").unwrap();
        let ok = Cell::of_config(OsStr::new("a02-tanh-s1"), &cfg).unwrap();
        assert_eq!(ok.hidden, vec![8, 4]);
        for (name, why) in [
            ("a01-re,lu-s0", "method `re,lu`"),
            ("a01-gelu-s0", "method `gelu`"),
            ("a04-relu-s0", "architecture 4"),
            ("a00-relu-s0", "architecture 0"),
            ("a01-relu-s2", "seed 2"),
            ("a1-relu-s0", "not a cell name"),
            ("a01-relu-s00", "not a cell name"),
            ("a99999999999999999999999-relu-s0", "not a cell name"),
            ("a01-relu-s18446744073709551616", "not a cell name"),
            ("a01-relu\n-s0", "method"),
        ] {
            let e = Cell::of_config(OsStr::new(name), &cfg).unwrap_err();
            assert!(e.contains(why), "{name}: {e}");
        }
    }

    #[test]
    fn sweep_differences_name_the_fields() {
        let a = SweepConfig::from_toml_str(SWEEP, "a").unwrap();
        let b = SweepConfig::from_toml_str(
            &SWEEP.replace(
                "seeds = [0, 1]",
                "seeds = [0, 2]\npool = [\"relu\", \"tanh\"]",
            ),
            "b",
        )
        .unwrap();
        assert_eq!(a.differences(&a), Vec::<String>::new());
        let mut d = a.differences(&b);
        d.sort();
        assert_eq!(d, ["sweep.pool", "sweep.seeds"]);
        let mut moved = a.clone();
        moved.data.dir = "elsewhere".into();
        assert!(a.differences(&moved).is_empty());
    }

    #[test]
    fn results_csv_quotes_fields_and_reads_back() {
        let row = |method: &str, epochs| ResultRow {
            cell: Cell {
                architecture: 1,
                hidden: vec![8, 4],
                method: method.into(),
                seed: u64::MAX,
            },
            validation_accuracy: 0.5,
            test_accuracy: 0.25,
            best_epoch: 3,
            epochs,
            seconds: 1.25,
        };
        let rows = [row("relu", 4), row("re,lu", 5), row("a\"b\nc", 6)];
        let bytes = results_csv(&rows).unwrap();
        // An independent reader: a hand-written CSV field splitter would share our bugs,
        // the csv crate's reader with default (RFC 4180) settings does not.
        let mut r = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(&bytes[..]);
        assert_eq!(
            r.headers().unwrap(),
            &csv::StringRecord::from(&RESULTS_HEADER[..])
        );
        let read: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
        assert_eq!(read.len(), 3);
        for (rec, want) in read.iter().zip(&rows) {
            assert_eq!(rec.len(), 10, "{rec:?}");
            assert_eq!(&rec[0], want.cell.id());
            assert_eq!(&rec[2], "8-4");
            assert_eq!(&rec[3], want.cell.method);
            assert_eq!(&rec[4], "18446744073709551615");
            assert_eq!(&rec[8], want.epochs.to_string());
        }
    }
}
