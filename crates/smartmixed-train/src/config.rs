//! The training config: TOML parsed with unknown keys rejected, then validated so that
//! every error names the file and the field at fault.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use smartmixed_core::{lookup, toml_error, Error, Result, PAPER_POOL};

/// A whole `train` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    #[serde(default)]
    pub phase1: Phase1Config,
    #[serde(default)]
    pub phase2: Phase2Config,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub data: DataConfig,
}

/// What network to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Hidden widths; the input width comes from the data and the output from the classes.
    pub hidden: Vec<usize>,
    /// Expected input width; when given, data of another width is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<usize>,
    #[serde(default)]
    pub mode: Mode,
    /// The one activation of every hidden neuron when `mode = "fixed"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<String>,
    /// The candidate activations of phase 1, in order.
    #[serde(default = "default_pool")]
    pub pool: Vec<String>,
    #[serde(default)]
    pub output_loss: OutputLoss,
}

/// SmartMixed (two phases) or a plain MLP with one activation (the paper's baselines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Smartmixed,
    /// One phase of `phase1.epochs + phase2.epochs` epochs at `phase2.lr`, so a baseline
    /// gets the same epoch budget as the SmartMixed run it is compared with.
    Fixed,
}

/// How the output layer's logits become a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputLoss {
    /// Softmax cross-entropy on the logits (the paper's intent).
    #[default]
    CrossEntropy,
    /// The authors' code: softmax on the output, then cross-entropy on that (a double
    /// softmax; losses sit near 1.5). For comparison with their curves only.
    DoubleSoftmax,
}

/// Phase 1: selection with the straight-through Gumbel-Softmax.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase1Config {
    /// The epochs of phase 1; with `transition = "auto"`, the most it may take.
    pub epochs: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// The logits' own Adam learning rate (`None`: `lr`). At 1e-4 the logits move so
    /// slowly that early choices are nearly random against Gumbel noise of scale ~1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_lr: Option<f64>,
    /// The temperature of the last epoch, reached geometrically from `temperature`
    /// (`None`: constant, the paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_final: Option<f64>,
    /// When phase 1 ends: after `epochs` (the paper's alpha), or when the choices settle.
    #[serde(default)]
    pub transition: Transition,
    /// The rule of `transition = "auto"`.
    #[serde(default)]
    pub auto: AutoTransition,
}

/// When phase 1 hands over to phase 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// After `phase1.epochs` epochs (the paper).
    #[default]
    Fixed,
    /// When the choices have settled and the validation loss stopped improving (see
    /// [`AutoTransition`]), at most after `phase1.epochs`.
    Auto,
}

/// Phase 1 ends after epoch `e` when `e >= min_epochs`, fewer than `threshold` of the
/// hidden neurons changed their argmax choice in the last `window` epochs, and the
/// validation loss has not improved for `patience` epochs.
///
/// The defaults (10, 5, 0.3, 5) come from the paper's representative network at the
/// paper's settings: the choices never settle completely under Gumbel noise (6-10% of the
/// neurons still change their argmax every epoch at epochs 20-37), while the share that
/// changed in the last 5 epochs falls from 84% (epoch 3) to 34% (epoch 15) and 23-25%
/// (epochs 27-30). metrics.csv records both figures per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTransition {
    #[serde(default = "default_auto_min_epochs")]
    pub min_epochs: usize,
    #[serde(default = "default_auto_window")]
    pub window: usize,
    /// A fraction of the hidden neurons, in `[0, 1]`.
    #[serde(default = "default_auto_threshold")]
    pub threshold: f64,
    #[serde(default = "default_auto_patience")]
    pub patience: usize,
}

/// Which validation figure picks a phase's best checkpoint; the other breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// Lowest validation loss (the authors' rule).
    #[default]
    ValLoss,
    /// Highest validation accuracy.
    ValAccuracy,
}

impl Select {
    /// The name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Select::ValLoss => "val_loss",
            Select::ValAccuracy => "val_accuracy",
        }
    }

    /// Whether `(loss, accuracy)` is better than `best` under this rule.
    pub fn better(self, (loss, accuracy): (f64, f64), best: (f64, f64)) -> bool {
        match self {
            Select::ValLoss => loss < best.0 || (loss == best.0 && accuracy > best.1),
            Select::ValAccuracy => accuracy > best.1 || (accuracy == best.1 && loss < best.0),
        }
    }
}

/// Phase 2: the mixed network with frozen choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase2Config {
    pub epochs: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub init: Phase2Init,
}

/// Where phase 2's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase2Init {
    /// Keep phase 1's weights and biases (the paper, eq. 9).
    #[default]
    Transfer,
    /// Fresh weights (the authors' code).
    Reinit,
}

/// Optimiser and batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Global gradient-norm clip; `0` turns clipping off.
    #[serde(default = "default_clip")]
    pub clip_norm: f64,
    /// Seeds weight init, shuffling and Gumbel noise.
    #[serde(default)]
    pub seed: u64,
    /// Every training thread flushes subnormal floats to zero (see
    /// [`smartmixed_core::fpenv`]): late in a long run they slow the step 3-4x. `false` keeps
    /// IEEE subnormals.
    #[serde(default = "default_true")]
    pub flush_denormals: bool,
    /// Early stopping of phase 2 and of fixed baselines: stop when the selected figure
    /// has not improved for this many epochs (`None`: off, the paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// The rule that picks each phase's best checkpoint.
    #[serde(default)]
    pub select: Select,
}

/// Where the data is and how it is split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A directory with the four MNIST-style IDX files (gzipped or raw).
    #[serde(default = "default_data_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Seed of the stratified train/validation split (42 in the authors' code).
    #[serde(default = "default_split_seed")]
    pub split_seed: u64,
    /// Number of classes; every label must be below it.
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// Use only this many training images (a seeded random subset, before the split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Use only this many test items: the first ones of IDX files; a seeded random subset
    /// (by `split_seed`) of an image folder's or a table's, whose first items are often of
    /// one class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Where the data comes from; default: `csv` when `data.file` ends in `.csv`,
    /// `image_folder` when `data.dir` holds a `train` folder, else `idx` (the MNIST layout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,
    /// `format = "csv"`: the table (a header row, numeric feature columns, one label
    /// column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// `format = "csv"`: a separate test table with the same columns (else a stratified
    /// `test_fraction` of `file` is held out, drawn with `test_seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_file: Option<PathBuf>,
    /// `format = "csv"`: the label column's name; its values (integers or strings) become
    /// the classes in sorted order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    #[serde(default)]
    pub test_seed: u64,
    /// `format = "csv"`: standardise every feature with the training split's mean and
    /// standard deviation (recorded in the exported manifest).
    #[serde(default = "default_true")]
    pub standardize: bool,
    /// `format = "csv"`: what a missing or non-numeric cell does.
    #[serde(default)]
    pub invalid: InvalidCells,
    /// `format = "image_folder"`: 1 reads every image as grey, 3 as RGB (grey images
    /// replicated); the input's shape is `[height, width]` or `[height, width, 3]`.
    #[serde(default = "default_channels")]
    pub channels: usize,
}

/// The kinds of data `train` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// MNIST-style IDX files in `data.dir`.
    Idx,
    /// A CSV table in `data.file`.
    Csv,
    /// `data.dir/train/<class>/*.png|pgm` and `data.dir/test/<class>/*`.
    ImageFolder,
}

/// What a missing or non-numeric CSV cell does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidCells {
    /// An error naming the row and the column.
    #[default]
    Error,
    /// The row is left out (and counted in the loading message).
    Drop,
}

impl DataConfig {
    /// Why a run of this data made by an earlier version can have another fingerprint
    /// though the files are the same: said beside "other data" refusals.
    pub fn changed_subset_note(&self) -> &'static str {
        if self.test_limit.is_some() && self.format() != DataFormat::Idx {
            " (a run made before 2026-12-04 with data.test_limit tested the first items of an image folder or table, now a seeded subset: the same files give another test split)"
        } else {
            ""
        }
    }

    /// The format asked for, or the one `file` implies.
    pub fn format(&self) -> DataFormat {
        self.format.unwrap_or_else(|| {
            let csv = self
                .file
                .as_ref()
                .and_then(|f| f.extension())
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if csv {
                DataFormat::Csv
            } else if self.dir.join("train").is_dir() {
                DataFormat::ImageFolder
            } else {
                DataFormat::Idx
            }
        })
    }
}

pub(crate) fn default_pool() -> Vec<String> {
    PAPER_POOL.iter().map(|s| s.to_string()).collect()
}
fn default_lr() -> f64 {
    1e-4
}
fn default_temperature() -> f64 {
    0.3
}
fn default_batch() -> usize {
    128
}
fn default_clip() -> f64 {
    1.0
}
fn default_true() -> bool {
    true
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data/mnist")
}
fn default_validation_fraction() -> f64 {
    0.1
}
fn default_classes() -> usize {
    10
}
fn default_split_seed() -> u64 {
    42
}
fn default_channels() -> usize {
    1
}
fn default_test_fraction() -> f64 {
    0.2
}
fn default_auto_min_epochs() -> usize {
    10
}
fn default_auto_window() -> usize {
    5
}
fn default_auto_threshold() -> f64 {
    0.3
}
fn default_auto_patience() -> usize {
    5
}

impl Default for AutoTransition {
    fn default() -> Self {
        Self {
            min_epochs: default_auto_min_epochs(),
            window: default_auto_window(),
            threshold: default_auto_threshold(),
            patience: default_auto_patience(),
        }
    }
}

impl Default for Phase1Config {
    fn default() -> Self {
        Self {
            epochs: 50,
            lr: default_lr(),
            temperature: default_temperature(),
            logit_lr: None,
            temperature_final: None,
            transition: Transition::default(),
            auto: AutoTransition::default(),
        }
    }
}
impl Default for Phase2Config {
    fn default() -> Self {
        Self {
            epochs: 350,
            lr: default_lr(),
            init: Phase2Init::default(),
        }
    }
}
impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            clip_norm: default_clip(),
            seed: 0,
            flush_denormals: true,
            patience: None,
            select: Select::default(),
        }
    }
}
impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dir: default_data_dir(),
            validation_fraction: default_validation_fraction(),
            split_seed: default_split_seed(),
            classes: default_classes(),
            train_limit: None,
            test_limit: None,
            format: None,
            file: None,
            test_file: None,
            label: None,
            test_fraction: default_test_fraction(),
            test_seed: 0,
            standardize: true,
            invalid: InvalidCells::default(),
            channels: default_channels(),
        }
    }
}

/// The widest hidden layer a config may ask for.
const MAX_HIDDEN: usize = 1 << 20;

/// A field at fault and what is wrong with it, before the file's name is added.
type Problem = std::result::Result<(), (String, String)>;

fn problem(field: &str, message: String) -> Problem {
    Err((field.to_string(), message))
}

fn positive(field: &str, v: f64) -> Problem {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        problem(
            field,
            format!("expected a finite number > 0, got {}", shown(v)),
        )
    }
}

/// `v` as a message shows it: plain where that is short, else in exponent form (`1e-50`,
/// not fifty zeros).
fn shown(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || (1e-4..1e15).contains(&v.abs()) {
        v.to_string()
    } else {
        format!("{v:e}")
    }
}

/// A learning rate: training computes in f32, where a rate below the smallest normal f32
/// is zero (subnormals are flushed) and one above the largest is infinite, so the run
/// would train nothing, or NaN, and report it as a result.
fn learning_rate(field: &str, v: f64) -> Problem {
    positive(field, v)?;
    let (min, max) = (f64::from(f32::MIN_POSITIVE), f64::from(f32::MAX));
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        problem(
            field,
            format!(
                "expected a rate that f32 holds, from {min:.1e} to {max:.1e}, got {}",
                shown(v)
            ),
        )
    }
}

/// The Gumbel-softmax temperatures phase 1 may use. Outside this range the softmax's
/// gradient to the logits vanishes in f32 (below: one-hot or NaN, since `score / tau`
/// overflows; above: uniform, with gradients under Adam's epsilon), so phase 1 would keep
/// its initial, random choices, or NaN logits, and the run would report them as chosen.
pub const TEMPERATURE_RANGE: (f64, f64) = (1e-3, 1e6);

fn temperature(field: &str, v: f64) -> Problem {
    positive(field, v)?;
    let (min, max) = TEMPERATURE_RANGE;
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        problem(
            field,
            format!(
                "expected a temperature from {min} to {max:e}, got {}: outside it the Gumbel-softmax passes no gradient to the logits in f32, and phase 1 would keep its initial choices",
                shown(v)
            ),
        )
    }
}

/// The smallest gradient-norm clip other than 0 (off): a smaller one scales every
/// gradient below Adam's epsilon (1e-8), or to zero in f32, and training stands still.
pub const MIN_CLIP_NORM: f64 = 1e-6;

/// A config file's text, at most [`smartmixed_core::MAX_TEXT_BYTES`] (configs and sweep configs).
pub(crate) fn read_config(path: &Path) -> Result<String> {
    smartmixed_core::tensorfile::read_text(path, smartmixed_core::MAX_TEXT_BYTES).map_err(
        |source| Error::ReadConfig {
            path: path.display().to_string(),
            source,
        },
    )
}

/// TOML text parsed into `T`; a parse error names `origin` and the line.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let (field, message) = toml_error(text, &e);
        Error::Config {
            origin: origin.to_string(),
            field,
            message,
        }
    })
}

/// The dotted fields whose values differ between two configs of one type (a train config
/// or a sweep config), ignoring `data.dir`.
pub(crate) fn field_differences<T: Serialize>(a: &T, b: &T) -> Vec<String> {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let fields = |c: &T| {
        let mut out = Vec::new();
        flatten("", &serde_json::to_value(c).unwrap_or_default(), &mut out);
        out.retain(|(k, _)| k != "data.dir");
        out
    };
    let (a, b) = (fields(a), fields(b));
    let mut changed: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.iter().find(|(k2, _)| k2 == k).map(|(_, v2)| v2) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    for (k, _) in &b {
        if !a.iter().any(|(k2, _)| k2 == k) {
            changed.push(k.clone());
        }
    }
    changed
}

impl TrainConfig {
    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_config(path)?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let config: Self = parse_toml(text, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The config as TOML, as a run directory records it.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Config {
            origin: "config".into(),
            field: "toml".into(),
            message: format!("cannot be written as TOML: {e}"),
        })
    }

    /// Checks every field; the first problem is returned naming its field.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let fail = |field: &str, message: String| Error::Config {
            origin: origin.to_string(),
            field: field.to_string(),
            message,
        };
        self.check_model()
            .and_then(|()| self.check_numbers())
            .and_then(|()| self.check_integers())
            .map_err(|(field, message)| fail(&field, message))
    }

    /// Widths, mode and activation names.
    fn check_model(&self) -> Problem {
        let m = &self.model;
        if m.hidden.is_empty() {
            return problem("model.hidden", "expected at least one hidden width".into());
        }
        if let Some(i) = m.hidden.iter().position(|&w| w == 0 || w > MAX_HIDDEN) {
            return problem(
                &format!("model.hidden[{i}]"),
                format!(
                    "expected a width from 1 to {MAX_HIDDEN}, got {}",
                    m.hidden[i]
                ),
            );
        }
        match (m.mode, &m.activation) {
            (Mode::Fixed, None) => problem(
                "model.activation",
                "mode = \"fixed\" needs an activation name".into(),
            ),
            (Mode::Fixed, Some(name)) => {
                lookup(name)
                    .map(|_| ())
                    .or_else(|e| problem("model.activation", e.to_string()))?;
                self.check_pool()
            }
            (Mode::Smartmixed, Some(_)) => problem(
                "model.activation",
                "only used with mode = \"fixed\"; SmartMixed uses model.pool".into(),
            ),
            (Mode::Smartmixed, None) => self.check_pool(),
        }
    }

    fn check_pool(&self) -> Problem {
        let pool = &self.model.pool;
        if pool.is_empty() {
            return problem("model.pool", "expected at least one activation".into());
        }
        if pool.len() > u8::MAX as usize {
            return problem("model.pool", "expected at most 255 activations".into());
        }
        for (i, name) in pool.iter().enumerate() {
            let field = format!("model.pool[{i}]");
            lookup(name)
                .map(|_| ())
                .or_else(|e| problem(&field, e.to_string()))?;
            if pool[..i].contains(name) {
                return problem(&field, format!("duplicate activation `{name}`"));
            }
        }
        Ok(())
    }

    /// Rates, temperatures, fractions and counts within their ranges.
    fn check_numbers(&self) -> Problem {
        let (p1, t, d) = (&self.phase1, &self.training, &self.data);
        temperature("phase1.temperature", p1.temperature)?;
        learning_rate("phase1.lr", p1.lr)?;
        learning_rate("phase2.lr", self.phase2.lr)?;
        if let Some(v) = p1.logit_lr {
            learning_rate("phase1.logit_lr", v)?;
        }
        if let Some(v) = p1.temperature_final {
            temperature("phase1.temperature_final", v)?;
        }
        let th = p1.auto.threshold;
        if !(0.0..=1.0).contains(&th) {
            return problem(
                "phase1.auto.threshold",
                format!("expected a fraction from 0 to 1, got {th}"),
            );
        }
        let clip = t.clip_norm;
        if !(clip.is_finite() && (clip == 0.0 || clip >= MIN_CLIP_NORM)) {
            return problem(
                "training.clip_norm",
                format!(
                    "expected 0 (no clipping) or a finite norm from {MIN_CLIP_NORM:e}, got {}: a smaller clip scales every gradient below Adam's epsilon and training stands still",
                    shown(clip)
                ),
            );
        }
        let vf = d.validation_fraction;
        if !(vf > 0.0 && vf < 1.0) {
            return problem(
                "data.validation_fraction",
                format!("expected a fraction strictly between 0 and 1, got {vf}"),
            );
        }
        let paths = [
            ("data.dir", Some(&d.dir)),
            ("data.file", d.file.as_ref()),
            ("data.test_file", d.test_file.as_ref()),
        ];
        if let Some((field, _)) = paths
            .iter()
            .find(|(_, p)| p.is_some_and(|p| p.as_os_str().is_empty()))
        {
            // Else an empty path surfaced later as a failure to resolve "".
            return problem(field, "expected a path, got an empty string".into());
        }
        if let Some(file) = d.file.as_ref().filter(|_| d.format() != DataFormat::Csv) {
            // Else the run would read data.dir and report it missing instead.
            return problem(
                "data.file",
                format!(
                    "`{}` is read only as a CSV table; expected a name ending in .csv or data.format = \"csv\"",
                    file.display()
                ),
            );
        }
        if d.format() == DataFormat::Csv {
            if d.file.is_none() {
                return problem(
                    "data.file",
                    "format = \"csv\" needs the table's path".into(),
                );
            }
            if d.label.as_deref().is_none_or(str::is_empty) {
                return problem(
                    "data.label",
                    "format = \"csv\" needs the label column's name".into(),
                );
            }
        }
        if ![1, 3].contains(&d.channels) {
            return problem(
                "data.channels",
                format!("expected 1 (grey) or 3 (RGB), got {}", d.channels),
            );
        }
        let tf = d.test_fraction;
        if !(tf > 0.0 && tf < 1.0) {
            return problem(
                "data.test_fraction",
                format!("expected a fraction strictly between 0 and 1, got {tf}"),
            );
        }
        if !(2..=256).contains(&d.classes) {
            return problem(
                "data.classes",
                format!("expected 2 to 256 classes, got {}", d.classes),
            );
        }
        let counts = [
            ("training.batch_size", Some(t.batch_size)),
            ("training.patience", t.patience),
            ("phase1.auto.window", Some(p1.auto.window)),
            ("data.train_limit", d.train_limit),
            ("data.test_limit", d.test_limit),
        ];
        for (field, value) in counts {
            if value == Some(0) {
                return problem(field, "expected a count > 0, got 0".into());
            }
        }
        Ok(())
    }

    /// Every integer fits TOML's i64 (config.toml must be able to record it), and the
    /// epochs add up to something above zero that fits too.
    fn check_integers(&self) -> Problem {
        let (p1, t, d) = (&self.phase1, &self.training, &self.data);
        let integers = [
            ("training.seed", Some(t.seed)),
            ("data.split_seed", Some(d.split_seed)),
            ("data.test_seed", Some(d.test_seed)),
            ("phase1.epochs", Some(p1.epochs as u64)),
            ("phase2.epochs", Some(self.phase2.epochs as u64)),
            ("phase1.auto.min_epochs", Some(p1.auto.min_epochs as u64)),
            ("phase1.auto.window", Some(p1.auto.window as u64)),
            ("phase1.auto.patience", Some(p1.auto.patience as u64)),
            ("training.batch_size", Some(t.batch_size as u64)),
            ("training.patience", t.patience.map(|n| n as u64)),
            ("model.inputs", self.model.inputs.map(|n| n as u64)),
            ("data.train_limit", d.train_limit.map(|n| n as u64)),
            ("data.test_limit", d.test_limit.map(|n| n as u64)),
        ];
        for (field, value) in integers {
            if let Some(v) = value.filter(|&v| v > i64::MAX as u64) {
                return problem(
                    field,
                    format!("{v} is outside TOML's integer range (at most {})", i64::MAX),
                );
            }
        }
        match p1
            .epochs
            .checked_add(self.phase2.epochs)
            .filter(|&n| n as u64 <= i64::MAX as u64)
        {
            None => problem(
                "phase2.epochs",
                format!(
                    "phase1.epochs + phase2.epochs overflows (more than {})",
                    i64::MAX
                ),
            ),
            Some(0) => problem(
                "phase1.epochs",
                "phase1.epochs + phase2.epochs must be > 0".into(),
            ),
            Some(_) => Ok(()),
        }
    }

    /// The dotted fields whose values differ between `self` and `other`, ignoring
    /// `data.dir` (the same data may move, and `--data-dir` may say where).
    pub fn differences(&self, other: &TrainConfig) -> Vec<String> {
        field_differences(self, other)
    }

    /// Every epoch the run trains, both phases together (saturating; [`Self::validate`]
    /// refuses a sum that overflows).
    pub fn total_epochs(&self) -> usize {
        self.phase1.epochs.saturating_add(self.phase2.epochs)
    }

    /// About how many bytes training this config on `inputs`-wide data with `classes`
    /// classes needs: [`Self::memory_parts`] added. `None` if the figure overflows `u64`.
    pub fn memory_estimate(&self, inputs: usize, classes: usize) -> Option<u64> {
        let (params, rows) = self.memory_parts(inputs, classes);
        params?.checked_add(rows?)
    }

    /// The two parts of [`Self::memory_estimate`], each `None` if it overflows `u64`:
    ///
    /// - the parameters (weights, biases, logits), each held 12 times at the peak, the
    ///   end of an epoch: 6 while training (the weights, their gradients, Adam's two
    ///   moments, the best copy, the transfer copy) and 6 while the resume state is written
    ///   (the moments and the weights as bytes, 3, and safetensors' serialised file, 3);
    /// - per layer the activations of a batch (at least an evaluation batch of 1000 rows)
    ///   four times over, phase 1 also per pool entry, and the inputs twice.
    pub fn memory_parts(&self, inputs: usize, classes: usize) -> (Option<u64>, Option<u64>) {
        let pool = if self.model.mode == Mode::Smartmixed {
            self.model.pool.len() as u64
        } else {
            0
        };
        let rows = (self.training.batch_size as u64).max(1000);
        let mut widths = vec![inputs as u64];
        widths.extend(self.model.hidden.iter().map(|&w| w as u64));
        widths.push(classes as u64);
        let mut params = Some(0u64);
        let mut per_row = widths[0].checked_mul(2);
        for (l, pair) in widths.windows(2).enumerate() {
            let (fan_in, out) = (pair[0], pair[1]);
            let hidden = l + 2 < widths.len();
            let layer = fan_in
                .checked_add(1)
                .and_then(|f| f.checked_mul(out))
                .and_then(|p| p.checked_add(if hidden { pool.checked_mul(out)? } else { 0 }));
            params = params.zip(layer).and_then(|(a, b)| a.checked_add(b));
            let act = out.checked_mul(4 + if hidden { pool } else { 0 });
            per_row = per_row.zip(act).and_then(|(a, b)| a.checked_add(b));
        }
        (
            params.and_then(|p| p.checked_mul(12 * 4)),
            per_row.and_then(|r| r.checked_mul(rows)?.checked_mul(4)),
        )
    }

    /// Refuses a config whose [`Self::memory_estimate`] exceeds `available` bytes, naming
    /// the field whose part dominates: `training.batch_size` when a batch's activations do
    /// at a batch above the evaluation batch, else `model.hidden`.
    pub fn check_memory(
        &self,
        origin: &str,
        inputs: usize,
        classes: usize,
        available: u64,
    ) -> Result<()> {
        let needed = self.memory_estimate(inputs, classes);
        if needed.is_some_and(|n| n <= available) {
            return Ok(());
        }
        let (params, rows) = self.memory_parts(inputs, classes);
        let batch_dominates =
            self.training.batch_size > 1000 && rows.is_none_or(|r| params.is_some_and(|p| r > p));
        let gb = |b: Option<u64>| {
            // A size past u64 is what a config of absurd width or batch gives.
            b.map_or("over 18 EB".to_string(), |n| match n as f64 {
                n if n < 1e9 => format!("about {:.1} MB", n / 1e6),
                n => format!("about {:.1} GB", n / 1e9),
            })
        };
        Err(Error::Config {
            origin: origin.to_string(),
            field: if batch_dominates {
                "training.batch_size"
            } else {
                "model.hidden"
            }
            .into(),
            message: format!(
                "training {:?} on {inputs} inputs at batch {} needs {} ({} for the parameters, {} for a batch's activations), more than the {:.1} GB of memory this process can still use",
                self.model.hidden,
                self.training.batch_size,
                gb(needed),
                gb(params),
                gb(rows),
                available as f64 / 1e9
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[model]\nhidden = [8, 4]\n";

    fn err(text: &str) -> String {
        TrainConfig::from_toml_str(text, "t.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn minimal_config_takes_the_paper_defaults() {
        let c = TrainConfig::from_toml_str(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.model.pool, PAPER_POOL);
        assert_eq!(c.phase1.epochs, 50);
        assert_eq!(c.phase2.epochs, 350);
        assert_eq!(c.phase1.lr, 1e-4);
        assert_eq!(c.phase1.temperature, 0.3);
        assert_eq!(c.training.batch_size, 128);
        assert_eq!(c.training.clip_norm, 1.0);
        assert_eq!(c.data.split_seed, 42);
        let again = TrainConfig::from_toml_str(&c.to_toml_string().unwrap(), "round").unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            ("[model]\nhidden = [8, 4]\nbogus = 1\n", "line 3"),
            ("[model]\nhidden = [8, 0]\n", "model.hidden[1]"),
            ("[model]\nhidden = []\n", "model.hidden"),
            ("[model]\nhidden = [8]\npool = []\n", "model.pool"),
            (
                "[model]\nhidden = [8]\npool = [\"relu\", \"nope\"]\n",
                "model.pool[1]",
            ),
            (
                "[model]\nhidden = [8]\npool = [\"relu\", \"relu\"]\n",
                "model.pool[1]",
            ),
            (
                "[model]\nhidden = [8]\nmode = \"fixed\"\n",
                "model.activation",
            ),
            (
                "[model]\nhidden = [8]\n[phase1]\nepochs = 1\ntemperature = 0.0\n",
                "phase1.temperature",
            ),
            (
                "[model]\nhidden = [8]\n[phase1]\nepochs = 1\nlr = -1.0\n",
                "phase1.lr",
            ),
            (
                "[model]\nhidden = [8]\n[phase2]\nepochs = 1\nlr = 0.0\n",
                "phase2.lr",
            ),
            (
                "[model]\nhidden = [8]\n[training]\nbatch_size = 0\n",
                "training.batch_size",
            ),
            (
                "[model]\nhidden = [8]\n[data]\nvalidation_fraction = 1.5\n",
                "data.validation_fraction",
            ),
            (
                "[model]\nhidden = [8]\n[phase1]\nepochs = 0\n[phase2]\nepochs = 0\n",
                "phase1.epochs",
            ),
        ];
        for (text, field) in cases {
            let e = err(text);
            assert!(e.starts_with("t.toml: "), "{e}");
            assert!(e.contains(field), "{field} not in: {e}");
            assert!(!e.contains('\n'), "not one line: {e}");
        }
    }

    /// Issue 18 item 9: the estimate counts the resume state's serialisation (12 copies
    /// of every parameter, not 8). Hand-computed for 2 inputs, hidden [3], 2 classes, the
    /// paper's pool of 6 and batch 16 (rows: the evaluation batch of 1000).
    #[test]
    fn the_memory_estimate_counts_the_state_write_by_hand() {
        let c =
            TrainConfig::from_toml_str("[model]\nhidden = [3]\n[training]\nbatch_size = 16\n", "t")
                .unwrap();
        // Parameters: (2 + 1) x 3 + 6 x 3 logits + (3 + 1) x 2 = 35, x 12 copies x 4 bytes.
        // Per row: 2 x 2 inputs + 3 x (4 + 6) + 2 x 4 = 42 floats, x 1000 rows x 4 bytes.
        assert_eq!(c.memory_parts(2, 2), (Some(35 * 48), Some(42 * 4000)));
        assert_eq!(c.memory_estimate(2, 2), Some(35 * 48 + 42 * 4000));
    }

    /// Issue 18: an oversized batch was refused as a `model.hidden` problem.
    #[test]
    fn the_memory_check_names_the_field_that_dominates() {
        let field = |text: &str| {
            let c = TrainConfig::from_toml_str(text, "t.toml").unwrap();
            let e = c
                .check_memory("t.toml", 784, 10, 1 << 30)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("t.toml: ") && e.contains("GB of memory"),
                "{e}"
            );
            e.split(": ").nth(1).unwrap_or_default().to_string()
        };
        let big_batch = "[model]\nhidden = [16]\n[training]\nbatch_size = 100000000\n";
        assert_eq!(field(big_batch), "training.batch_size");
        assert_eq!(
            field("[model]\nhidden = [1048576, 1048576]\n"),
            "model.hidden"
        );
        // Wide layers at a small batch: the evaluation batch's rows, the widths' fault.
        assert_eq!(field("[model]\nhidden = [1000000]\n"), "model.hidden");
        let overflow = "[model]\nhidden = [16]\n[training]\nbatch_size = 9223372036854775807\n";
        assert_eq!(field(overflow), "training.batch_size");
        // A size past u64 reads as such, not as "about more than" one.
        let e = TrainConfig::from_toml_str(overflow, "t.toml")
            .unwrap()
            .check_memory("t.toml", 784, 10, 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "needs over 18 EB (about 0.6 MB for the parameters, over 18 EB for a batch's"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_empty_data_path_is_refused_naming_its_field() {
        for (line, field) in [
            ("dir = \"\"", "data.dir"),
            ("file = \"\"\nformat = \"csv\"\nlabel = \"y\"", "data.file"),
            ("test_file = \"\"", "data.test_file"),
        ] {
            let text = format!("{MINIMAL}[data]\n{line}\n");
            let e = TrainConfig::from_toml_str(&text, "t.toml")
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("t.toml: {field}: expected a path, got an empty string"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_table_file_is_named_unless_its_name_or_the_format_says_csv() {
        let table = |file: &str, format: &str| {
            format!("{MINIMAL}[data]\nfile = \"{file}\"\nlabel = \"y\"\n{format}")
        };
        let e = err(&table("plants.txt", ""));
        assert!(e.starts_with("t.toml: data.file: `plants.txt`"), "{e}");
        assert!(e.contains("data.format = \"csv\""), "{e}");
        let e = err(&table("plants.csv", "format = \"idx\"\n"));
        assert!(e.contains("data.file: `plants.csv`"), "{e}");
        let c =
            TrainConfig::from_toml_str(&table("plants.txt", "format = \"csv\"\n"), "t").unwrap();
        assert_eq!(c.data.format(), DataFormat::Csv);
        let c = TrainConfig::from_toml_str(&table("plants.CSV", ""), "t").unwrap();
        assert_eq!(c.data.format(), DataFormat::Csv);
    }

    /// Values `positive` let through but f32 training turns into nothing or NaN: a rate
    /// that is 0 or infinite in f32, a temperature whose softmax passes no gradient (or
    /// NaN logits), a clip that zeroes every gradient. Each was a run that exited 0.
    #[test]
    fn values_that_f32_training_would_silently_void_are_refused() {
        let cases = [
            (
                "[phase1]\nepochs = 1\nlr = 1e-50\n",
                "phase1.lr",
                "f32 holds",
            ),
            (
                "[phase2]\nepochs = 1\nlr = 1e300\n",
                "phase2.lr",
                "f32 holds",
            ),
            (
                "[phase1]\nepochs = 1\nlogit_lr = 1e39\n",
                "phase1.logit_lr",
                "got 1e39",
            ),
            (
                "[phase1]\nepochs = 1\ntemperature = 1e-40\n",
                "phase1.temperature",
                "got 1e-40",
            ),
            (
                "[phase1]\nepochs = 1\ntemperature = 1e300\n",
                "phase1.temperature",
                "from 0.001 to 1e6",
            ),
            (
                "[phase1]\nepochs = 1\ntemperature_final = 5e-324\n",
                "phase1.temperature_final",
                "initial choices",
            ),
            (
                "[training]\nclip_norm = 1e-300\n",
                "training.clip_norm",
                "0 (no clipping)",
            ),
            ("[training]\nclip_norm = nan\n", "training.clip_norm", "NaN"),
            ("[phase1]\nepochs = 1\nlr = -inf\n", "phase1.lr", "got -inf"),
        ];
        for (tail, field, why) in cases {
            let e = err(&format!("{MINIMAL}{tail}"));
            assert!(e.starts_with(&format!("t.toml: {field}: ")), "{e}");
            assert!(e.contains(why), "{why} not in: {e}");
            assert!(!e.contains('\n') && e.len() < 300, "{e}");
        }
        // The edges themselves, 0 (clipping off) and the paper's values stay valid.
        for tail in [
            "[phase1]\nepochs = 1\ntemperature = 0.001\ntemperature_final = 1e6\n",
            "[phase1]\nepochs = 1\nlr = 1.1754944e-38\nlogit_lr = 3.4e38\n",
            "[training]\nclip_norm = 0.0\n",
            "[training]\nclip_norm = 1e-6\n",
            "[phase1]\nepochs = 1\nlr = 1e-30\n",
        ] {
            TrainConfig::from_toml_str(&format!("{MINIMAL}{tail}"), "t.toml").unwrap();
        }
    }

    #[test]
    fn unknown_activation_error_lists_registered_names() {
        let e = err("[model]\nhidden = [8]\nmode = \"fixed\"\nactivation = \"swish9\"\n");
        assert!(e.contains("swish9") && e.contains("leaky_relu"), "{e}");
    }
}
