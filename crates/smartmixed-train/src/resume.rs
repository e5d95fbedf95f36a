//! The resume state of a run: written atomically at the end of every epoch as
//! `state.safetensors` (the current network, Adam's moments and step, where training
//! stands and which data it trains on), removed when the run finishes. With per-epoch
//! random streams this is all a resumed run needs to end exactly as an uninterrupted one;
//! [`check`] holds every position field to what the config allows before a resume trusts it.

use std::collections::HashMap;
use std::path::Path;

use dfdx::prelude::*;
use safetensors::SafeTensors;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use smartmixed_core::Phase;

use crate::checkpoint;
use crate::data::Splits;
use crate::fsutil::write_atomic;
use crate::model::{Hidden, Network};
use crate::ops::TrainDevice;
use crate::optim::Adam;
use crate::rundir::STATE;
use crate::stopping::Watch;
use crate::summary::{Evaluation, PhaseSummary};
use crate::{Error, Mode, Result, TrainConfig};

const POSITION_KEY: &str = "resume";
const STEP_KEY: &str = "adam_step";

/// Where training stands after a completed epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    pub phase: Phase,
    pub epochs_done: usize,
    pub best_epoch: usize,
    pub best_validation: Evaluation,
    /// Phases finished before this one.
    pub completed: Vec<PhaseSummary>,
    /// Training seconds so far.
    pub seconds: f64,
    /// The resolved config the run trains, so that a resume after config.toml was edited
    /// is refused ([`TrainConfig::differences`]). Absent in states written before it was
    /// recorded.
    pub config: Option<TrainConfig>,
    /// What the phase's end rule has observed (choice changes, lowest validation loss).
    pub watch: Watch,
    /// The data the run trains on, so that a resume on other data is refused. Absent in
    /// states written before it was recorded (those resume unchecked).
    pub data: Option<Fingerprint>,
}

/// What identifies a run's data: the sizes, and 64-bit FNV-1a hashes of every label and
/// of every preprocessed input value (what training sees), split by split. Cheap next to
/// an epoch; a changed file, subset, split or standardisation changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub train: usize,
    pub validation: usize,
    pub test: usize,
    pub features: usize,
    pub classes: usize,
    pub labels: u64,
    pub values: u64,
}

/// FNV-1a, 64 bits, over 32-bit words (labels are widened), seeded by the previous hash.
fn fnv(mut h: u64, words: impl Iterator<Item = u32>) -> u64 {
    for w in words {
        h = (h ^ u64::from(w)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Fingerprint {
    pub fn of(data: &Splits) -> Self {
        let (mut labels, mut values) = (0xcbf2_9ce4_8422_2325u64, 0xcbf2_9ce4_8422_2325u64);
        for set in [&data.train, &data.validation, &data.test] {
            labels = fnv(labels, set.labels().iter().map(|&l| u32::from(l)));
            let all: Vec<usize> = (0..set.len()).collect();
            for chunk in all.chunks(1024) {
                let batch = set.batch(chunk, data.classes);
                values = fnv(values, batch.inputs.iter().map(|v| v.to_bits()));
            }
        }
        Self {
            train: data.train.len(),
            validation: data.validation.len(),
            test: data.test.len(),
            features: data.train.features(),
            classes: data.classes,
            labels,
            values,
        }
    }

    /// What differs from `now`, one phrase per figure ("train items: 1200 then, 1000 now").
    pub fn differences(&self, now: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        for (name, then, now) in [
            ("train items", self.train, now.train),
            ("validation items", self.validation, now.validation),
            ("test items", self.test, now.test),
            ("features", self.features, now.features),
            ("classes", self.classes, now.classes),
        ] {
            if then != now {
                out.push(format!("{name}: {then} then, {now} now"));
            }
        }
        if self.labels != now.labels {
            out.push("the labels differ".into());
        }
        if self.values != now.values {
            out.push("the input values differ".into());
        }
        out
    }
}

/// A loaded state.
pub struct State<D: TrainDevice> {
    pub position: Position,
    pub net: Network<D>,
    pub adam: Adam<D>,
    /// Adam's step count as the file records it ([`check`] compares it with the epochs).
    pub adam_step: i32,
}

/// Writes the state of `dir`'s run. Each moment becomes bytes as soon as it is exported,
/// so the write holds no more than [`TrainConfig::memory_estimate`] counts.
pub fn save<D: TrainDevice>(
    dev: &D,
    dir: &Path,
    net: &Network<D>,
    adam: &Adam<D>,
    position: &Position,
) -> Result<()> {
    let (step, moments) = adam
        .export(dev)
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    let mut extra = Vec::new();
    for (i, (m, v)) in moments.into_iter().enumerate() {
        extra.push((
            format!("adam.m.{i}"),
            vec![m.len()],
            checkpoint::to_le_bytes(&m),
        ));
        extra.push((
            format!("adam.v.{i}"),
            vec![v.len()],
            checkpoint::to_le_bytes(&v),
        ));
    }
    let mut meta = HashMap::from([(
        POSITION_KEY.to_string(),
        serde_json::to_string(position).unwrap_or_default(),
    )]);
    meta.insert(STEP_KEY.into(), step.to_string());
    let bytes = checkpoint::to_bytes_with(net, extra, meta);
    write_atomic(&dir.join(STATE), &bytes)
}

/// What is wrong with a state, without its path.
type Problem<T> = std::result::Result<T, String>;

/// Field `name` of the position object; `None` where it is missing and has no default.
fn field<T: DeserializeOwned>(
    map: &serde_json::Map<String, serde_json::Value>,
    name: &str,
    default: Option<T>,
) -> Problem<T> {
    match (map.get(name), default) {
        (Some(v), _) => serde_json::from_value(v.clone())
            .map_err(|e| format!("metadata `{POSITION_KEY}` field `{name}`: {e}")),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(format!("metadata `{POSITION_KEY}` field `{name}` missing")),
    }
}

/// The position, field by field, so that an error names the field at fault.
fn parse_position(text: &str) -> Problem<Position> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("metadata `{POSITION_KEY}` is not a JSON object: {e}"))?;
    Ok(Position {
        phase: field(&map, "phase", None)?,
        epochs_done: field(&map, "epochs_done", None)?,
        best_epoch: field(&map, "best_epoch", None)?,
        best_validation: field(&map, "best_validation", None)?,
        completed: field(&map, "completed", None)?,
        seconds: field(&map, "seconds", None)?,
        config: field(&map, "config", Some(None))?,
        watch: field(&map, "watch", Some(Watch::default()))?,
        data: field(&map, "data", Some(None))?,
    })
}

/// Reads the state of `dir`'s run (its position is checked by [`check`]).
pub fn load<D: TrainDevice>(dev: &D, dir: &Path) -> Result<State<D>> {
    let path = dir.join(STATE);
    let bad = |message: String| Error::Checkpoint {
        path: path.clone(),
        message,
    };
    let bytes = smartmixed_core::tensorfile::read_file(&path).map_err(|e| {
        Error::io(
            &path,
            "cannot read resume state (the run may have finished, or never completed an epoch: then start it again with --out)",
            e,
        )
    })?;
    let net = checkpoint::from_bytes(dev, &bytes, &path)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let position = meta
        .get(POSITION_KEY)
        .ok_or_else(|| bad(format!("metadata `{POSITION_KEY}` missing")))
        .and_then(|p| parse_position(p).map_err(bad))?;
    let step = meta
        .get(STEP_KEY)
        .ok_or_else(|| bad(format!("metadata `{STEP_KEY}` missing")))?;
    let adam_step: i32 = step.parse().map_err(|_| {
        bad(format!(
            "metadata `{STEP_KEY}` is `{step}`, expected a whole number of optimiser steps from 0 to {}",
            i32::MAX
        ))
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let read = |name: String, len: usize, second: bool| -> Result<Vec<f32>> {
        let t = st
            .tensor(&name)
            .map_err(|_| bad(format!("tensor `{name}` missing")))?;
        if t.shape() != [len] {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}, expected [{len}]",
                t.shape()
            )));
        }
        let values = checkpoint::from_le_bytes(t.data());
        // A second moment is a mean of squares: finite and never negative.
        if let Some(i) = values
            .iter()
            .position(|v| !v.is_finite() || (second && *v < 0.0))
        {
            return Err(bad(format!(
                "tensor `{name}` holds {} at element {i}, expected a finite{} moment",
                values[i],
                if second { ", non-negative" } else { "" }
            )));
        }
        Ok(values)
    };
    let params = net.params();
    let mut moments = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let len = p.shape().num_elements();
        moments.push((
            read(format!("adam.m.{i}"), len, false)?,
            read(format!("adam.v.{i}"), len, true)?,
        ));
    }
    let adam = Adam::import(dev, &params, adam_step, &moments)
        .map_err(|e| bad(format!("device error: {e:?}")))?;
    Ok(State {
        position,
        net,
        adam,
        adam_step,
    })
}

/// The epoch budget of `phase` under `cfg`, and the field that sets it.
fn budget(cfg: &TrainConfig, phase: Phase) -> (usize, &'static str) {
    match phase {
        Phase::Phase1 => (cfg.phase1.epochs, "phase1.epochs"),
        Phase::Phase2 => (cfg.phase2.epochs, "phase2.epochs"),
        Phase::Fixed => (cfg.total_epochs(), "phase1.epochs + phase2.epochs"),
    }
}

/// `value` of field `name` within `lo..=hi`.
fn within(name: &str, value: usize, lo: usize, hi: usize, why: &str) -> Problem<()> {
    if (lo..=hi).contains(&value) {
        return Ok(());
    }
    Err(format!(
        "metadata `{POSITION_KEY}` field `{name}` is {value}, expected {lo} to {hi} ({why})"
    ))
}

/// A loss (finite, not negative) and an accuracy (in [0, 1]) of field `name`.
fn figures(name: &str, loss: f64, accuracy: f64) -> Problem<()> {
    if !(loss.is_finite() && loss >= 0.0) {
        return Err(format!(
            "metadata `{POSITION_KEY}` field `{name}` has loss {loss}, expected a finite loss >= 0"
        ));
    }
    if !(0.0..=1.0).contains(&accuracy) {
        return Err(format!(
            "metadata `{POSITION_KEY}` field `{name}` has accuracy {accuracy}, expected 0 to 1"
        ));
    }
    Ok(())
}

/// Seconds of field `name`: finite and not negative.
fn seconds(name: &str, s: f64) -> Problem<()> {
    if s.is_finite() && s >= 0.0 {
        return Ok(());
    }
    Err(format!(
        "metadata `{POSITION_KEY}` field `{name}` is {s}, expected finite seconds >= 0"
    ))
}

/// Checks that `net` has the kind phase `phase` trains and the widths `widths`.
pub(crate) fn check_network<D: TrainDevice>(
    net: &Network<D>,
    phase: Phase,
    widths: &[usize],
) -> Problem<()> {
    let selective = matches!(net.hidden, Hidden::Selective { .. });
    if selective != (phase == Phase::Phase1) {
        return Err(format!(
            "metadata `kind` is `{}`, expected `{}` for a {phase} network",
            if selective { "selective" } else { "grouped" },
            if selective { "grouped" } else { "selective" },
        ));
    }
    if net.widths() != widths {
        return Err(format!(
            "the tensors give widths {:?}, expected {widths:?} (the data's features, model.hidden, the classes)",
            net.widths()
        ));
    }
    Ok(())
}

/// Checks every position field of `state` against `cfg` and the data (`batches` per
/// epoch, network `widths`), and that the state was written for this data. Errors name
/// the state file and the field.
pub fn check<D: TrainDevice>(
    state: &State<D>,
    cfg: &TrainConfig,
    data: &Splits,
    now: &Fingerprint,
    widths: &[usize],
    path: &Path,
) -> Result<()> {
    let bad = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    if let Some(then) = &state.position.data {
        let changed = then.differences(now);
        if !changed.is_empty() {
            return Err(Error::Mismatch {
                path: path.to_path_buf(),
                message: format!(
                    "the run trained on other data than it is given now ({}); resume with the run's own data{}",
                    changed.join("; "),
                    cfg.data.changed_subset_note()
                ),
            });
        }
    }
    let batches = data.train.len().div_ceil(cfg.training.batch_size.max(1));
    check_position(state, cfg, batches, widths).map_err(bad)
}

/// [`check`] without the path: phase, network, epochs, figures, earlier phases, the end
/// rule's observations, Adam's step and phase 1's temperature.
fn check_position<D: TrainDevice>(
    state: &State<D>,
    cfg: &TrainConfig,
    batches: usize,
    widths: &[usize],
) -> Problem<()> {
    let p = &state.position;
    let allowed: &[Phase] = match cfg.model.mode {
        Mode::Smartmixed => &[Phase::Phase1, Phase::Phase2],
        Mode::Fixed => &[Phase::Fixed],
    };
    let (budget, budget_field) = budget(cfg, p.phase);
    if !allowed.contains(&p.phase) || budget == 0 {
        return Err(format!(
            "metadata `{POSITION_KEY}` field `phase` is {}, expected one of {} with epochs to train (model.mode, {budget_field})",
            p.phase,
            allowed.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
        ));
    }
    check_network(&state.net, p.phase, widths).map_err(|m| {
        format!(
            "{m} (field `phase` of metadata `{POSITION_KEY}` is {})",
            p.phase
        )
    })?;
    if let Hidden::Selective { pool, .. } = &state.net.hidden {
        let names: Vec<&str> = pool.iter().map(|a| a.name).collect();
        if names != cfg.model.pool {
            return Err(format!(
                "metadata `pool` is {names:?}, expected {:?} (model.pool)",
                cfg.model.pool
            ));
        }
    }
    let why = format!("{budget_field} = {budget}");
    within("epochs_done", p.epochs_done, 1, budget, &why)?;
    within(
        "best_epoch",
        p.best_epoch,
        1,
        p.epochs_done,
        "an epoch already trained: 1 to `epochs_done`",
    )?;
    figures(
        "best_validation",
        p.best_validation.loss,
        p.best_validation.accuracy,
    )?;
    seconds("seconds", p.seconds)?;
    check_completed(p, cfg)?;
    check_watch(&p.watch, p.epochs_done, widths)?;
    let expected = batches
        .checked_mul(p.epochs_done)
        .filter(|&s| s <= i32::MAX as usize);
    if expected != usize::try_from(state.adam_step).ok() {
        return Err(format!(
            "metadata `{STEP_KEY}` is {}, expected {} (field `epochs_done` {} x {batches} batches an epoch)",
            state.adam_step,
            expected.map_or("at most 2^31-1".to_string(), |s| s.to_string()),
            p.epochs_done
        ));
    }
    if let Hidden::Selective { temperature, .. } = &state.net.hidden {
        let p1 = &cfg.phase1;
        let t = crate::epochs::temperature(
            p1.temperature,
            p1.temperature_final,
            p.epochs_done,
            p1.epochs,
        );
        if *temperature != t {
            return Err(format!(
                "metadata `temperature` is {temperature}, expected {t} (phase 1's temperature in epoch {})",
                p.epochs_done
            ));
        }
    }
    Ok(())
}

/// The phases finished before the state's: none, or phase 1 before phase 2.
fn check_completed(p: &Position, cfg: &TrainConfig) -> Problem<()> {
    let expected: &[Phase] = if p.phase == Phase::Phase2 {
        &[Phase::Phase1]
    } else {
        &[]
    };
    let phases: Vec<Phase> = p.completed.iter().map(|s| s.phase).collect();
    if phases != expected {
        return Err(format!(
            "metadata `{POSITION_KEY}` field `completed` lists phases {phases:?}, expected {expected:?} before {}",
            p.phase
        ));
    }
    for (i, s) in p.completed.iter().enumerate() {
        let name = format!("completed[{i}]");
        let (budget, budget_field) = budget(cfg, s.phase);
        within(
            &format!("{name}.epochs"),
            s.epochs,
            1,
            budget,
            &format!("{budget_field} = {budget}"),
        )?;
        within(
            &format!("{name}.best_epoch"),
            s.best_epoch,
            1,
            s.epochs,
            "1 to its `epochs`",
        )?;
        figures(
            &format!("{name} validation"),
            s.validation_loss,
            s.validation_accuracy,
        )?;
        figures(&format!("{name} test"), s.test_loss, s.test_accuracy)?;
        seconds(&format!("{name}.seconds"), s.seconds)?;
        if s.checkpoint != s.phase.checkpoint_file() {
            return Err(format!(
                "metadata `{POSITION_KEY}` field `{name}.checkpoint` is `{}`, expected `{}`",
                s.checkpoint,
                s.phase.checkpoint_file()
            ));
        }
    }
    Ok(())
}

/// The end rule's observations: choice changes per hidden neuron (phase 1; none, or one
/// per neuron, each no later than `epochs_done`) and the lowest loss's epoch.
fn check_watch(w: &Watch, epochs_done: usize, widths: &[usize]) -> Problem<()> {
    let hidden = widths
        .get(1..widths.len().saturating_sub(1))
        .unwrap_or_default();
    let shape: Vec<usize> = w.last_change.iter().map(Vec::len).collect();
    if !shape.is_empty() && shape != hidden {
        return Err(format!(
            "metadata `{POSITION_KEY}` field `watch.last_change` has layers of {shape:?} neurons, expected {hidden:?}"
        ));
    }
    if let Some(&e) = w
        .last_change
        .iter()
        .flatten()
        .find(|&&e| e as usize > epochs_done)
    {
        return Err(format!(
            "metadata `{POSITION_KEY}` field `watch.last_change` holds epoch {e}, expected 0 to `epochs_done` ({epochs_done})"
        ));
    }
    if let Some((epoch, loss)) = w.lowest_loss {
        within(
            "watch.lowest_loss",
            epoch,
            1,
            epochs_done,
            "an epoch already trained",
        )?;
        if !(loss.is_finite() && loss >= 0.0) {
            return Err(format!(
                "metadata `{POSITION_KEY}` field `watch.lowest_loss` has loss {loss}, expected a finite loss >= 0"
            ));
        }
    }
    Ok(())
}

/// Removes the state file of a finished run (a missing file is fine).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(STATE));
}
