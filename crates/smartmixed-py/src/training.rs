//! Training from Python: a config (a TOML file, or a dict sent as JSON) on its files, or
//! in-memory arrays (`fit_arrays`, behind `SmartMixedClassifier.fit`), on the Rust
//! trainer. The run executes on a thread of its own while the calling thread, GIL
//! released between polls, hands each epoch to the Python callback and checks for
//! signals (Python runs signal handlers only on the main thread): Ctrl-C stops the run
//! after its current batch, as in the CLI, and raises `KeyboardInterrupt`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use smartmixed_core::Phase;
use smartmixed_train::data::{ArrayData, Arrays, Splits};
use smartmixed_train::rundir::{self, EpochRecord, RunDir};
use smartmixed_train::{checkpoint, export, Cpu, Progress, Summary, TrainConfig, Trainer};

use crate::errors;

/// How often the calling thread looks for signals and epochs.
const POLL: Duration = Duration::from_millis(50);

/// Sends each finished epoch to the calling thread.
struct Epochs(Sender<String>);

impl Progress for Epochs {
    fn epoch(&mut self, record: &EpochRecord, _choices: Option<&[Vec<usize>]>) {
        if let Ok(json) = serde_json::to_string(record) {
            // The receiver is gone only once the run is over.
            let _ = self.0.send(json);
        }
    }
}

/// A config from JSON text (a Python dict), validated; `origin` names it in errors.
fn config_from_json(json: &str, origin: &str) -> PyResult<TrainConfig> {
    let cfg: TrainConfig =
        serde_json::from_str(json).map_err(|e| PyValueError::new_err(format!("{origin}: {e}")))?;
    cfg.validate(origin).map_err(errors::core)?;
    Ok(cfg)
}

/// Trains `cfg` on `data` into the new run directory `out`, with `callback(epoch_json)`
/// after each epoch; the summary. A `resumable` run saves the state `--resume` continues
/// from after every epoch.
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    cfg: &TrainConfig,
    origin: &str,
    data: &Splits,
    out: &Path,
    resumable: bool,
    threads: usize,
    callback: Option<&Bound<'_, PyAny>>,
) -> PyResult<Summary> {
    smartmixed_train::check_data_fits(cfg, data, origin).map_err(errors::train)?;
    let mut run_dir = RunDir::create(out).map_err(errors::train)?;
    if !resumable {
        run_dir = run_dir.without_resume_state();
    }
    let stop = AtomicBool::new(false);
    let (tx, rx) = channel::<String>();
    // `Receiver` is not `Sync`; the mutex lets the GIL-free wait borrow it.
    let rx = Mutex::new(rx);
    let threads = smartmixed_train::capped_threads(threads);
    std::thread::scope(|s| {
        let trainer = s.spawn(|| {
            let mut progress = Epochs(tx);
            let dev = Cpu::default();
            Trainer {
                dev: &dev,
                config: cfg,
                data,
                run: &mut run_dir,
                progress: &mut progress,
                stop: &stop,
                threads,
            }
            .run()
        });
        let mut failure: Option<PyErr> = None;
        loop {
            let next = py.detach(|| match rx.lock() {
                Ok(rx) => rx.recv_timeout(POLL),
                Err(_) => Err(RecvTimeoutError::Disconnected),
            });
            let ended = match next {
                Ok(epoch) => {
                    if let (Some(cb), None) = (callback, &failure) {
                        if let Err(e) = call(py, cb, &epoch) {
                            failure = Some(e);
                        }
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if failure.is_none() {
                failure = py.check_signals().err();
            }
            if failure.is_some() {
                stop.store(true, Ordering::Relaxed);
            }
            if ended {
                break;
            }
        }
        let result = py.detach(|| trainer.join());
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "the training thread panicked",
                ))
            }
        };
        match (failure, result) {
            (Some(e), _) => Err(e),
            (None, r) => r.map_err(errors::train),
        }
    })
}

/// `callback(json.loads(epoch))`.
fn call(py: Python<'_>, callback: &Bound<'_, PyAny>, epoch: &str) -> PyResult<()> {
    let record = py.import("json")?.call_method1("loads", (epoch,))?;
    callback.call1((record,))?;
    Ok(())
}

/// `overrides` (nested objects) laid over `base`, field by field.
fn merge(base: &mut serde_json::Value, overrides: serde_json::Value) {
    match (base, overrides) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// A TOML file as JSON, errors naming the file and the line.
fn toml_file_as_json(path: &Path) -> PyResult<serde_json::Value> {
    let origin = path.display().to_string();
    let text = smartmixed_core::tensorfile::read_text(path, smartmixed_core::MAX_TEXT_BYTES)
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("{origin}: cannot read: {e}")))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let (field, message) = smartmixed_core::toml_error(&text, &e);
        PyValueError::new_err(format!("{origin}: {field}: {message}"))
    })?;
    serde_json::to_value(table).map_err(|e| PyValueError::new_err(format!("{origin}: {e}")))
}

/// A config file's relative `[data]` paths (`dir`, `file`, `test_file`) resolved against
/// the file's folder, as `smartmixed-cli train --config` reads them (overrides and dicts
/// stay relative to the working directory, as `--set` does): from the working directory, a
/// config's `../data/wine.csv` read another table, or none.
fn paths_from_the_file_s_folder(table: &mut serde_json::Value, path: &Path) -> PyResult<()> {
    let Some(data) = table.get_mut("data").and_then(|d| d.as_object_mut()) else {
        return Ok(());
    };
    let folder = match path.parent() {
        Some(f) if !f.as_os_str().is_empty() => f,
        _ => Path::new("."),
    };
    let cannot = |e: String| {
        pyo3::exceptions::PyOSError::new_err(format!(
            "{}: cannot resolve its folder: {e}",
            path.display()
        ))
    };
    let folder = std::path::absolute(folder).map_err(|e| cannot(e.to_string()))?;
    for key in ["dir", "file", "test_file"] {
        if let Some(serde_json::Value::String(p)) = data.get_mut(key) {
            if Path::new(p.as_str()).is_relative() {
                let joined = smartmixed_train::fsutil::lexically_normal(&folder.join(p.as_str()));
                *p = joined
                    .to_str()
                    .ok_or_else(|| cannot("the folder's name is not UTF-8".into()))?
                    .to_string();
            }
        }
    }
    Ok(())
}

/// Trains a config, a TOML file (`path`) or JSON text (`config_json`, a Python dict),
/// with `overrides_json` (nested sections) laid over it, into the run directory `out`;
/// the summary as JSON text.
#[pyfunction]
#[pyo3(signature = (out, path=None, config_json=None, overrides_json=None, threads=0, callback=None))]
pub fn train_config(
    py: Python<'_>,
    out: PathBuf,
    path: Option<PathBuf>,
    config_json: Option<String>,
    overrides_json: Option<String>,
    threads: usize,
    callback: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    let parse = |json: &str, what: &str| {
        serde_json::from_str::<serde_json::Value>(json)
            .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
    };
    let (mut base, origin) = match (&path, &config_json) {
        (Some(path), None) => {
            let mut table = toml_file_as_json(path)?;
            paths_from_the_file_s_folder(&mut table, path)?;
            (table, path.display().to_string())
        }
        (None, Some(json)) => (parse(json, "config")?, "the config dict".to_string()),
        _ => {
            return Err(PyValueError::new_err(
                "give a config path or a config dict, not both",
            ))
        }
    };
    let origin = match overrides_json {
        Some(json) => {
            merge(&mut base, parse(&json, "overrides")?);
            format!("{origin} with overrides")
        }
        None => origin,
    };
    let mut cfg = config_from_json(&base.to_string(), &origin)?;
    // Recorded absolute, as `train` records them: a resume or `eval --run` from another
    // folder reads the same data.
    for p in [
        Some(&mut cfg.data.dir),
        cfg.data.file.as_mut(),
        cfg.data.test_file.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        *p = std::path::absolute(&*p)
            .map(|a| smartmixed_train::fsutil::lexically_normal(&a))
            .map_err(|e| {
                pyo3::exceptions::PyOSError::new_err(format!(
                    "{}: cannot make it absolute: {e}",
                    p.display()
                ))
            })?;
    }
    let data = py
        .detach(|| Splits::load(&cfg.data, cfg.data.classes))
        .map_err(errors::train)?;
    let summary = run(
        py,
        &cfg,
        &origin,
        &data,
        &out,
        true,
        threads,
        callback.as_ref(),
    )?;
    serde_json::to_string(&summary).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A set of arrays: rows of `x` and their labels.
fn arrays(x: &PyReadonlyArray2<'_, f32>, y: &PyReadonlyArray1<'_, u8>) -> PyResult<Arrays> {
    let values = x.as_array().iter().copied().collect();
    let labels = y.as_array().iter().copied().collect();
    Ok(Arrays { values, labels })
}

/// Trains the config (JSON text; its `data` section gives the split seeds and fraction)
/// on arrays: `x` rows of `shape`, `y` class indices into `class_names`, an optional
/// validation set, in the run directory `out`, which the caller deletes afterwards (so no
/// resume state is saved). Returns the summary (JSON text) and the selected network's
/// export (`model.safetensors` bytes, the manifest in their metadata).
#[pyfunction]
#[pyo3(signature = (config_json, out, x, y, shape, class_names, feature_names, divisor=1.0, standardize=true, validation=None, threads=0, callback=None, origin=String::from("config")))]
#[allow(clippy::too_many_arguments)]
pub fn fit_arrays<'py>(
    py: Python<'py>,
    config_json: &str,
    out: PathBuf,
    x: PyReadonlyArray2<'py, f32>,
    y: PyReadonlyArray1<'py, u8>,
    shape: Vec<usize>,
    class_names: Vec<String>,
    feature_names: Vec<String>,
    divisor: f32,
    standardize: bool,
    validation: Option<(PyReadonlyArray2<'py, f32>, PyReadonlyArray1<'py, u8>)>,
    threads: usize,
    callback: Option<Bound<'py, PyAny>>,
    origin: String,
) -> PyResult<(String, Bound<'py, PyBytes>)> {
    let cfg = config_from_json(config_json, &origin)?;
    if x.shape()[0] != y.len() {
        return Err(PyValueError::new_err(format!(
            "X has {} rows, y {} labels",
            x.shape()[0],
            y.len()
        )));
    }
    let data = ArrayData {
        shape,
        class_names,
        feature_names,
        divisor,
        standardize,
        train: arrays(&x, &y)?,
        validation: validation.as_ref().map(|(x, y)| arrays(x, y)).transpose()?,
        test: None,
    };
    let splits = py
        .detach(|| Splits::from_arrays(data, &cfg.data))
        .map_err(errors::train)?;
    let summary = run(
        py,
        &cfg,
        &origin,
        &splits,
        &out,
        false,
        threads,
        callback.as_ref(),
    )?;
    let weights = py
        .detach(|| exported(&out).map(|(w, _)| w))
        .map_err(errors::train)?;
    let json = serde_json::to_string(&summary).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((json, PyBytes::new(py, &weights)))
}

/// The best checkpoint of a run (phase 2's, or a fixed baseline's) as export bytes, with
/// the input and class description its summary recorded.
fn exported(run: &Path) -> smartmixed_train::Result<(Vec<u8>, smartmixed_core::Manifest)> {
    let net = checkpoint::load(&Cpu::default(), &best_checkpoint(run)?)?;
    let description = description(run)?;
    export::to_bytes(&net, &description)
}

/// Phase 2's best checkpoint, or a fixed baseline's (what `smartmixed-cli export` takes);
/// an error naming both when neither exists (a run of `phase2.epochs = 0` ends after
/// phase 1, a run that never finished an epoch has none).
fn best_checkpoint(run: &Path) -> smartmixed_train::Result<PathBuf> {
    [Phase::Phase2, Phase::Fixed]
        .iter()
        .map(|p| run.join(p.checkpoint_file()))
        .find(|p| p.is_file())
        .ok_or_else(|| smartmixed_train::Error::Io {
            path: run.to_path_buf(),
            action: "no phase2-best.safetensors or fixed-best.safetensors in this run directory (a run of phase2.epochs = 0 has only phase 1's checkpoint: `smartmixed-cli export --phase 1` exports it)",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "expected a finished phase 2 or fixed baseline",
            ),
        })
}

/// The input and classes a finished run recorded (none for an unfinished run).
fn description(run: &Path) -> smartmixed_train::Result<export::Description> {
    let summary_path = run.join(rundir::SUMMARY);
    if !summary_path.is_file() {
        return Ok(export::Description::default());
    }
    let summary = rundir::read_summary(&summary_path)?;
    Ok(export::Description {
        input: summary.input,
        class_names: summary.class_names,
    })
}

/// `weights` (an export's `model.safetensors` bytes, the manifest in their metadata) with
/// the input standardisation `(x / divisor - mean) / std` recorded in the manifest in place
/// of the one there (empty lists: none), the tensors unchanged: `SmartMixedClassifier`
/// trains on rows it standardised itself in float64, and exports the network with that
/// standardisation in float32, for raw rows, as every export takes them.
#[pyfunction]
pub fn with_standardisation<'py>(
    py: Python<'py>,
    weights: &[u8],
    mean: Vec<f32>,
    std: Vec<f32>,
) -> PyResult<Bound<'py, PyBytes>> {
    use smartmixed_core::manifest::MANIFEST_METADATA_KEY;
    let invalid = |e: safetensors::SafeTensorError| {
        PyValueError::new_err(format!("weights: not a safetensors export: {e}"))
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(weights).map_err(invalid)?;
    let mut meta = header.metadata().clone().unwrap_or_default();
    let text = meta.get(MANIFEST_METADATA_KEY).ok_or_else(|| {
        PyValueError::new_err(format!(
            "weights: no `{MANIFEST_METADATA_KEY}` in the safetensors metadata"
        ))
    })?;
    let mut manifest = smartmixed_core::Manifest::from_toml(text).map_err(errors::core)?;
    let mut input = manifest.input_description();
    input.mean = mean;
    input.std = std;
    manifest.input = Some(input);
    manifest.validate().map_err(errors::core)?;
    meta.insert(MANIFEST_METADATA_KEY.to_string(), manifest.to_toml());
    let tensors = safetensors::SafeTensors::deserialize(weights).map_err(invalid)?;
    let bytes = safetensors::serialize(tensors.tensors(), &Some(meta)).map_err(invalid)?;
    // What the runtime makes of it (and every check of a load).
    smartmixed_infer::Model::from_safetensors(&bytes).map_err(errors::infer)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Exports a run's best checkpoint (as `smartmixed-cli export --run RUN --safetensors
/// OUT`); a model already in `out` is replaced only with `force`.
#[pyfunction]
#[pyo3(signature = (run, out, force=false))]
pub fn export_run(py: Python<'_>, run: PathBuf, out: PathBuf, force: bool) -> PyResult<()> {
    py.detach(|| {
        let net = checkpoint::load(&Cpu::default(), &best_checkpoint(&run)?)?;
        export::export_described(&net, &out, force, &description(&run)?).map(|_| ())
    })
    .map_err(errors::train)
}
