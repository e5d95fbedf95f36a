//! The resume state of a run: written atomically at the end of every epoch as
//! `state.safetensors` (the current network, Adam's moments and step, and where training
//! stands), removed when the run finishes. With per-epoch random streams this is all a
//! resumed run needs to end exactly as an uninterrupted one.

use std::collections::HashMap;
use std::path::Path;

use dfdx::prelude::*;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use smartmixed_core::{Phase, TrainConfig};

use crate::checkpoint;
use crate::fsutil::write_atomic;
use crate::model::Network;
use crate::ops::TrainDevice;
use crate::optim::Adam;
use crate::rundir::STATE;
use crate::stopping::Watch;
use crate::summary::{Evaluation, PhaseSummary};
use crate::{Error, Result};

const POSITION_KEY: &str = "resume";

/// Where training stands after a completed epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub config: Option<TrainConfig>,
    /// What the phase's end rule has observed (choice changes, lowest validation loss).
    #[serde(default)]
    pub watch: Watch,
}

/// A loaded state.
pub struct State<D: TrainDevice> {
    pub position: Position,
    pub net: Network<D>,
    pub adam: Adam<D>,
}

/// Writes the state of `dir`'s run.
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
    for (i, (m, v)) in moments.iter().enumerate() {
        extra.push((
            format!("adam.m.{i}"),
            vec![m.len()],
            checkpoint::to_le_bytes(m),
        ));
        extra.push((
            format!("adam.v.{i}"),
            vec![v.len()],
            checkpoint::to_le_bytes(v),
        ));
    }
    let mut meta = HashMap::from([(
        POSITION_KEY.to_string(),
        serde_json::to_string(position).unwrap_or_default(),
    )]);
    meta.insert("adam_step".into(), step.to_string());
    let bytes = checkpoint::to_bytes_with(net, extra, meta);
    write_atomic(&dir.join(STATE), &bytes)
}

/// Reads the state of `dir`'s run.
pub fn load<D: TrainDevice>(dev: &D, dir: &Path) -> Result<State<D>> {
    let path = dir.join(STATE);
    let bad = |message: String| Error::Checkpoint {
        path: path.clone(),
        message,
    };
    let bytes = smartmixed_core::tensorfile::read_file(&path).map_err(|e| {
        Error::io(
            &path,
            "cannot read resume state (the run may have finished, or never completed an epoch)",
            e,
        )
    })?;
    let net = checkpoint::from_bytes(dev, &bytes, &path)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let position: Position = meta
        .get(POSITION_KEY)
        .and_then(|p| serde_json::from_str(p).ok())
        .ok_or_else(|| bad(format!("metadata `{POSITION_KEY}` missing or invalid")))?;
    let step: i32 = meta
        .get("adam_step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("metadata `adam_step` missing".into()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let read = |name: String, len: usize| -> Result<Vec<f32>> {
        let t = st
            .tensor(&name)
            .map_err(|_| bad(format!("tensor `{name}` missing")))?;
        if t.shape() != [len] {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}, expected [{len}]",
                t.shape()
            )));
        }
        Ok(checkpoint::from_le_bytes(t.data()))
    };
    let params = net.params();
    let mut moments = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let len = p.shape().num_elements();
        moments.push((
            read(format!("adam.m.{i}"), len)?,
            read(format!("adam.v.{i}"), len)?,
        ));
    }
    let adam = Adam::import(dev, &params, step, &moments)
        .map_err(|e| bad(format!("device error: {e:?}")))?;
    Ok(State {
        position,
        net,
        adam,
    })
}

/// Removes the state file of a finished run (a missing file is fine).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(STATE));
}
