//! The phases a run trains: their names in files, their labels in tables, their
//! checkpoints. One definition for the trainer, the run directory, resume and the CLI.

use serde::{Deserialize, Serialize};

/// A training phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Selection: every neuron samples its activation (straight-through Gumbel-Softmax).
    Phase1,
    /// The mixed network with frozen choices.
    Phase2,
    /// A fixed-activation baseline (one phase).
    Fixed,
}

impl Phase {
    /// Every phase, in the order a run trains them (a run has phase 1 and 2, or fixed).
    pub const ALL: [Phase; 3] = [Phase::Phase1, Phase::Phase2, Phase::Fixed];

    /// The name in files (`metrics.csv`, `summary.json`, the state file).
    pub fn name(self) -> &'static str {
        match self {
            Phase::Phase1 => "phase1",
            Phase::Phase2 => "phase2",
            Phase::Fixed => "fixed",
        }
    }

    /// The row label of Table I.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Phase1 => "Phase 1 (Selective)",
            Phase::Phase2 => "Phase 2 (Mixed)",
            Phase::Fixed => "Fixed baseline",
        }
    }

    /// The best checkpoint's file name in a run directory.
    pub fn checkpoint_file(self) -> String {
        format!("{}-best.safetensors", self.name())
    }

    /// The phase named `name` in files.
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_name(p.name()), Some(p));
            assert_eq!(
                toml::Value::try_from(p).unwrap().as_str(),
                Some(p.name()),
                "serde name of {p:?}"
            );
        }
        assert_eq!(Phase::from_name("phase3"), None);
        assert_eq!(Phase::Phase2.checkpoint_file(), "phase2-best.safetensors");
    }
}
