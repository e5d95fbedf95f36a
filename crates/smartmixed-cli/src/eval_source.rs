//! The labelled items `eval` runs a model on, from any source `train` reads (IDX
//! directory, CSV table, image folder, or a run's own data section), with their labels
//! matched to the model's classes by name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use smartmixed_core::manifest::image_shape;
use smartmixed_core::InputKind;
use smartmixed_infer::Model;
use smartmixed_train::data::{folder, table, Dataset, Splits};
use smartmixed_train::resume::{self, Fingerprint};
use smartmixed_train::rundir;
use smartmixed_train::{DataConfig, DataFormat, InvalidCells, TrainConfig};

use crate::shown;

/// Where `eval`'s items come from, as its arguments name it.
pub enum Request {
    /// `--data` or `--data-dir`: a .csv file (with its label column, if given) or a
    /// directory.
    Path {
        path: PathBuf,
        label: Option<String>,
    },
    /// `--config` or `--run`: a training config, whose test split is evaluated.
    Config(PathBuf),
}

/// The items to evaluate, labelled with the model's class indices; `origin` says in
/// messages what they are.
pub struct Source {
    pub data: Dataset,
    pub origin: String,
}

/// What a request reads, decided before anything is loaded (so that a model of the
/// wrong kind is refused without reading the data).
enum Plan {
    Csv {
        path: PathBuf,
        label: Option<String>,
    },
    Folder(PathBuf),
    Idx(PathBuf),
    Config(Box<TrainConfig>, PathBuf),
}

impl Plan {
    /// The format, detected as `train` detects it (`DataConfig::format`): a `.csv` name
    /// is a table; a directory holding `train/` (or, for eval, `test/`) is an image
    /// folder; any other directory holds IDX files.
    fn of(request: Request) -> Result<Self> {
        match request {
            Request::Config(path) => {
                let mut cfg = TrainConfig::from_file(&path)?;
                // As `train` reads it: relative paths against the config's folder (a
                // run's config.toml records them absolute already).
                let text =
                    smartmixed_core::tensorfile::read_text(&path, smartmixed_core::MAX_TEXT_BYTES)
                        .with_context(|| format!("{}: cannot read", path.display()))?;
                crate::config_args::resolve_data_paths(&mut cfg.data, &text, &path)?;
                Ok(Self::Config(Box::new(cfg), path))
            }
            Request::Path { path, label } => {
                let detected = DataConfig {
                    file: Some(path.clone()).filter(|_| !path.is_dir()),
                    dir: path.clone(),
                    ..DataConfig::default()
                }
                .format();
                match detected {
                    DataFormat::Csv => Ok(Self::Csv { path, label }),
                    _ if path.is_file() => bail!(
                        "{}: a file, expected a .csv table or a directory (IDX files, or test/<class>/ image folders)",
                        path.display()
                    ),
                    _ if label.is_some() => bail!(
                        "{}: --label names a CSV column, but this is a directory of images",
                        path.display()
                    ),
                    DataFormat::ImageFolder => Ok(Self::Folder(path)),
                    _ if path.join("test").is_dir() => Ok(Self::Folder(path)),
                    _ => Ok(Self::Idx(path)),
                }
            }
        }
    }

    /// Whether the items are table rows (else images).
    fn is_table(&self) -> bool {
        match self {
            Self::Csv { .. } => true,
            Self::Config(cfg, _) => cfg.data.format() == DataFormat::Csv,
            Self::Folder(_) | Self::Idx(_) => false,
        }
    }

    fn origin(&self) -> String {
        match self {
            Self::Csv { path, .. } => format!("{} (every row)", path.display()),
            Self::Folder(dir) => dir.join("test").display().to_string(),
            Self::Idx(dir) => format!("{} (the t10k test files)", dir.display()),
            Self::Config(_, path) => format!("the test split of {}", path.display()),
        }
    }
}

/// The items `request` names, refused unless they fit `model`: the same kind of input
/// (table rows or images), the same features by name or the same image shape, and classes
/// that are all among the model's (matched by name); labels are returned as the model's
/// class indices.
pub fn load(model: &Model, model_dir: &Path, request: Request) -> Result<Source> {
    let plan = Plan::of(request)?;
    let origin = plan.origin();
    let input = model.input_description();
    let table_model = input.kind() == InputKind::Table;
    if table_model && !plan.is_table() {
        bail!(
            "{}: the model takes table rows of {} features ({}), but {origin} holds images: give its CSV table with --data FILE.csv",
            model_dir.display(),
            model.input_size(),
            shown(&input.feature_names.join(", "))
        );
    }
    if !table_model && plan.is_table() {
        bail!(
            "{}: the model takes images of shape {:?}, but {origin} is a CSV table",
            model_dir.display(),
            input.shape
        );
    }
    if let Plan::Idx(dir) = &plan {
        if !dir.exists() {
            bail!(
                "{}: no such file or directory, expected a .csv table or a directory (IDX files, or test/<class>/ image folders)",
                dir.display()
            );
        }
    }
    let channels = match input.kind() {
        InputKind::Image { channels, .. } => channels,
        _ => 1,
    };
    let (data, names) = match plan {
        Plan::Csv { path, label } => read_csv(model, &path, label)?,
        Plan::Folder(dir) => folder::read_test(&dir, channels)?,
        Plan::Idx(dir) => {
            let data = Dataset::load_test(&dir, 256)?;
            // IDX labels are class numbers: label l is the class named `l`.
            let names = (0..=data.labels().iter().copied().max().unwrap_or(0))
                .map(|l| l.to_string())
                .collect();
            (data, names)
        }
        Plan::Config(cfg, path) => {
            let splits = Splits::load(&cfg.data, cfg.data.classes)?;
            check_run_data(&path, &cfg, &splits)?;
            if table_model && splits.input().feature_names != input.feature_names {
                bail!(
                    "{origin}: feature columns {}, the model's are {}",
                    shown(&splits.input().feature_names.join(", ")),
                    shown(&input.feature_names.join(", "))
                );
            }
            let names = splits.class_names();
            (splits.test, names)
        }
    };
    check_shape(model, &data, &origin)?;
    let data = relabelled(model, model_dir, data, &names, &origin)?;
    Ok(Source { data, origin })
}

/// For a run's config (`--run`, or `--config` naming a run's `config.toml`): the data it
/// reads now must be what the run trained and tested on, by the fingerprint its
/// summary.json (or an unfinished run's state) records. A table edited, extended or
/// reordered since splits again into a "test split" that holds training rows, and its
/// accuracy would be reported as held out.
fn check_run_data(config: &Path, cfg: &TrainConfig, splits: &Splits) -> Result<()> {
    let Some(dir) = config
        .parent()
        .filter(|_| config.file_name() == Some(std::ffi::OsStr::new(rundir::CONFIG)))
    else {
        return Ok(());
    };
    let then = if dir.join(rundir::SUMMARY).is_file() {
        rundir::read_summary(&dir.join(rundir::SUMMARY))?.data
    } else if dir.join(rundir::STATE).is_file() {
        resume::load(&smartmixed_train::Cpu::default(), dir)?
            .position
            .data
    } else {
        None
    };
    let Some(then) = then else {
        return Ok(());
    };
    let changed = then.differences(&Fingerprint::of(splits));
    if !changed.is_empty() {
        bail!(
            "{}: the data it names is not what the run trained and tested on ({}), so its test split is no longer held out; evaluate with --data instead{}",
            dir.display(),
            changed.join("; "),
            cfg.data.changed_subset_note()
        );
    }
    Ok(())
}

/// Every row of a CSV table, its features taken by the model's names (in the model's
/// order; other columns are ignored; a model without names takes every column but the
/// label), its label column `label` or else the one column that is not a feature of the
/// model.
fn read_csv(model: &Model, path: &Path, label: Option<String>) -> Result<(Dataset, Vec<String>)> {
    let features = &model.input_description().feature_names;
    let mut wanted = HashSet::with_capacity(features.len());
    if let Some(f) = features.iter().find(|f| !wanted.insert(f.as_str())) {
        bail!(
            "{}: the model names feature `{}` twice, so its columns cannot be told apart",
            path.display(),
            shown(f)
        );
    }
    let label = match label {
        Some(label) => label,
        None => {
            let header = table::read_header(path)?;
            let others: Vec<&str> = header
                .iter()
                .map(String::as_str)
                .filter(|h| !wanted.contains(h))
                .collect();
            match others[..] {
                [one] => one.to_string(),
                _ => bail!(
                    "{}: columns {} are not features of the model, expected exactly one (the label); name the label column with --label",
                    path.display(),
                    shown(&others.join(", "))
                ),
            }
        }
    };
    let t = table::read_table(path, &label, InvalidCells::Error)?;
    let (rows, width) = (t.rows(), model.input_size());
    // Features distinct, each a column of the table: at most the table's values.
    let values = if features.is_empty() || &t.features == features {
        t.values
    } else {
        let position: HashMap<&str, usize> = t
            .features
            .iter()
            .enumerate()
            .map(|(c, h)| (h.as_str(), c))
            .collect();
        let columns = features
            .iter()
            .map(|f| {
                position.get(f.as_str()).copied().ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: line 1: no column `{}`, a feature the model was trained on",
                        path.display(),
                        shown(f)
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let mut values = Vec::with_capacity(rows.saturating_mul(columns.len()));
        for row in t.values.chunks_exact(t.features.len()) {
            values.extend(columns.iter().map(|&c| row[c]));
        }
        values
    };
    if rows.checked_mul(width) != Some(values.len()) {
        bail!(
            "{}: {} feature columns, the model takes {width}",
            path.display(),
            t.features.len()
        );
    }
    Ok((Dataset::from_table(width, values, t.row_labels), t.labels))
}

/// Image items of the model's shape (height and width, channels), every item of its
/// width.
fn check_shape(model: &Model, data: &Dataset, origin: &str) -> Result<()> {
    let input = model.input_description();
    // Any recorded item shape (not a table's, nor a flat [784]) must be the data's, a
    // trailing channel of 1 aside.
    let shaped = input.kind() != InputKind::Table && input.shape.len() >= 2;
    let shape_differs = shaped && image_shape(data.shape()) != image_shape(&input.shape);
    if shape_differs || data.features() != model.input_size() {
        bail!(
            "{origin}: items of shape {:?}, the model takes shape {:?}",
            data.shape(),
            input.shape
        );
    }
    Ok(())
}

/// `data` with each label (an index into `names`) replaced by the model's class of the
/// same name; a class the model lacks, or a model naming one class twice, is refused
/// naming both lists.
fn relabelled(
    model: &Model,
    model_dir: &Path,
    data: Dataset,
    names: &[String],
    origin: &str,
) -> Result<Dataset> {
    let theirs: Vec<String> = (0..model.classes()).map(|c| model.class_name(c)).collect();
    let list = |names: &[String]| shown(&table::class_names(names).join(", "));
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(theirs.len());
    for (c, name) in theirs.iter().enumerate() {
        if index.insert(name, c).is_some() {
            bail!(
                "{}: the model names class `{}` twice, so labels cannot be matched to its classes by name",
                model_dir.display(),
                shown(name)
            );
        }
    }
    // Only the classes that label some item must be the model's.
    let mut used = vec![false; names.len()];
    for &l in data.labels() {
        used[l as usize] = true;
    }
    let missing: Vec<String> = names
        .iter()
        .zip(&used)
        .filter(|&(n, &u)| u && !index.contains_key(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    if !missing.is_empty() {
        let present: Vec<String> = names
            .iter()
            .zip(&used)
            .filter(|&(_, &u)| u)
            .map(|(n, _)| n.clone())
            .collect();
        bail!(
            "{origin}: classes {}, but the model {} has classes {}: {} not among them (labels are matched to the model's classes by name)",
            list(&present),
            model_dir.display(),
            list(&theirs),
            list(&missing)
        );
    }
    // A label is a byte: a model of more than 256 classes takes only its first 256 here.
    let to_model = names
        .iter()
        .map(|n| {
            let c = index.get(n.as_str()).copied().unwrap_or(0);
            u8::try_from(c).map_err(|_| {
                anyhow::anyhow!(
                    "{}: class `{}` is the model's class {c}, and eval matches at most 256 classes",
                    model_dir.display(),
                    shown(n)
                )
            })
        })
        .collect::<Result<Vec<u8>>>()?;
    Ok(data.relabelled(&to_model))
}
