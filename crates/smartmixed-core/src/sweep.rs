//! The sweep config: architectures x methods x seeds, each cell an ordinary training run.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{
    default_pool, DataConfig, Mode, ModelConfig, OutputLoss, Phase1Config, Phase2Config,
    TrainingConfig, Transition,
};
use crate::{Error, Result, TrainConfig};

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
        for cell in cfg.cells() {
            cfg.cell_config(&cell)
                .validate(&format!("{origin} (cell {})", cell.id()))?;
        }
        Ok(cfg)
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
        assert!("colour=red".parse::<CellFilter>().is_err());
        assert!("seed=x".parse::<CellFilter>().is_err());
    }

    #[test]
    fn bad_sweeps_name_the_field() {
        let e = SweepConfig::from_toml_str(&SWEEP.replace("\"tanh\"", "\"tanhh\""), "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.activation") && e.contains("tanhh"), "{e}");
        let e = SweepConfig::from_toml_str(
            &SWEEP.replace("[[8], [8, 4], [6]]", "[[8], [0]]"),
            "s.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.hidden[0]") && e.contains("a02"), "{e}");
    }
}
