//! What a run reports: per-phase figures (Table I) and `summary.json`.

use serde::{Deserialize, Serialize};
use smartmixed_core::{InputManifest, Phase};

use crate::{Mode, Select};

/// Loss and accuracy over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
}

impl Evaluation {
    /// Whether `self` beats `best` under `rule` (the other figure breaks ties).
    pub fn beats(&self, best: &Evaluation, rule: Select) -> bool {
        rule.better((self.loss, self.accuracy), (best.loss, best.accuracy))
    }
}

/// A phase that ended before its epoch budget: after which epoch, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyEnd {
    pub epoch: usize,
    pub reason: String,
}

/// The Table I figures of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub phase: Phase,
    /// Epochs trained (fewer than configured when the phase ended early).
    pub epochs: usize,
    pub best_epoch: usize,
    pub validation_loss: f64,
    pub validation_accuracy: f64,
    pub test_accuracy: f64,
    pub test_loss: f64,
    pub seconds: f64,
    pub checkpoint: String,
    /// Set when an automatic transition or early stopping ended the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_early: Option<EarlyEnd>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mode: Mode,
    pub architecture: Vec<usize>,
    pub seed: u64,
    pub split_seed: u64,
    pub train_samples: usize,
    pub validation_samples: usize,
    pub test_samples: usize,
    pub phases: Vec<PhaseSummary>,
    /// The rule that picked each phase's best checkpoint (`training.select`).
    #[serde(default)]
    pub select: Select,
    /// Whether the training threads flushed subnormal floats to zero
    /// (`training.flush_denormals` on a CPU that can).
    #[serde(default)]
    pub flush_denormals: bool,
    /// Training threads.
    #[serde(default)]
    pub threads: usize,
    /// What one input is and how raw values became it; `export` copies it into the
    /// manifest. Absent in runs from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputManifest>,
    /// The classes' names, in output order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// Table rows left out for an invalid cell (`data.invalid = "drop"`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_rows: usize,
    /// What identifies the data trained on, so that sweep cells trained on other data
    /// are not ranked together (absent in runs from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::resume::Fingerprint>,
    /// Per hidden layer, neurons per activation after phase 1 (SmartMixed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_choices: Option<Vec<Vec<(String, usize)>>>,
    pub seconds: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
