//! The activation-group manifest of an exported model: which contiguous block of each
//! hidden layer uses which activation, and where each stored neuron came from. Stored as
//! TOML beside `model.safetensors` and copied into its `__metadata__`.

use serde::{Deserialize, Serialize};

use crate::lookup;

/// The weights file of an exported model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The manifest file of an exported model directory.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The safetensors `__metadata__` key holding a copy of the manifest.
pub const MANIFEST_METADATA_KEY: &str = "smartmixed.manifest";
/// Value of [`Manifest::format`].
pub const MANIFEST_FORMAT: &str = "smartmixed-manifest";
/// The manifest version this crate writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest width accepted for any layer: refuses absurd sizes before allocating.
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest weight count accepted for one layer (4 GiB of f32).
pub const MAX_LAYER_WEIGHTS: usize = 1 << 30;

/// A whole exported network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Input width (pixels per image).
    pub inputs: usize,
    /// What the output layer applies to its pre-activations: `identity` (logits).
    pub output_activation: String,
    /// Hidden layers then the output layer; `layers.{i}` names its tensors.
    pub layers: Vec<LayerManifest>,
}

/// One affine layer and, for hidden layers, its activation groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerManifest {
    pub inputs: usize,
    pub outputs: usize,
    /// Contiguous blocks partitioning `0..outputs`; empty for the output layer.
    #[serde(default)]
    pub groups: Vec<GroupManifest>,
    /// For each stored neuron, its index in the trained layer before grouping.
    #[serde(default)]
    pub original_index: Vec<u32>,
}

/// `len` neurons from `start` that share `activation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupManifest {
    pub activation: String,
    pub start: usize,
    pub len: usize,
}

/// Why a manifest is invalid; `field` is the dotted path at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ManifestError {
    pub field: String,
    pub message: String,
}

fn bad<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError {
        field: field.into(),
        message: message.into(),
    })
}

/// Checks that `(start, len)` blocks partition `0..n` in order, without gaps, overlaps or
/// empty blocks (the one check of activation groups, for manifests and checkpoints). The
/// error names the block at fault (`None`: the blocks as a whole) and what is wrong.
pub fn check_partition(
    blocks: impl IntoIterator<Item = (usize, usize)>,
    n: usize,
) -> Result<(), (Option<usize>, String)> {
    let mut next = 0usize;
    for (g, (start, len)) in blocks.into_iter().enumerate() {
        if start != next {
            let what = if start < next {
                "overlaps the previous group"
            } else {
                "leaves a gap"
            };
            return Err((
                Some(g),
                format!("starts at {start} and {what} (expected start {next})"),
            ));
        }
        if len == 0 {
            return Err((Some(g), "empty group".into()));
        }
        next = start.saturating_add(len);
        if next > n {
            return Err((
                Some(g),
                format!("runs to {next}, past the layer's {n} neurons"),
            ));
        }
    }
    if next != n {
        return Err((None, format!("cover {next} of {n} neurons")));
    }
    Ok(())
}

/// Checks that `index` is a permutation of `0..n`.
pub fn check_permutation(index: &[u32], n: usize) -> Result<(), String> {
    if index.len() != n {
        return Err(format!("{} entries for {n} neurons", index.len()));
    }
    let mut seen = vec![false; n];
    for &o in index {
        match seen.get_mut(o as usize) {
            Some(s) if !*s => *s = true,
            _ => return Err(format!("{o} is out of range or repeated")),
        }
    }
    Ok(())
}

impl Manifest {
    /// Parses TOML and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ManifestError> {
        let m: Self = toml::from_str(text).map_err(|e| {
            let (field, message) = crate::config::toml_error(text, &e);
            ManifestError { field, message }
        })?;
        m.validate()?;
        Ok(m)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks the format, version, that layers chain, that sizes are sane, that each hidden
    /// layer's groups partition it contiguously with registered activations, and that
    /// `original_index` is a permutation.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return bad(
                "format",
                format!("`{}`, expected `{MANIFEST_FORMAT}`", self.format),
            );
        }
        if self.version != MANIFEST_VERSION {
            return bad(
                "version",
                format!(
                    "unsupported version {}, this build reads {MANIFEST_VERSION}",
                    self.version
                ),
            );
        }
        if self.output_activation != "identity" {
            return bad(
                "output_activation",
                format!("`{}`, expected `identity`", self.output_activation),
            );
        }
        if self.layers.is_empty() {
            return bad("layers", "expected at least one layer");
        }
        let mut inputs = self.inputs;
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            let f = |name: &str| format!("layers[{i}].{name}");
            if l.inputs != inputs {
                return bad(
                    f("inputs"),
                    format!("{} but the previous layer gives {inputs}", l.inputs),
                );
            }
            for (name, v) in [("inputs", l.inputs), ("outputs", l.outputs)] {
                if v == 0 || v > MAX_WIDTH {
                    return bad(f(name), format!("{v}, expected 1..={MAX_WIDTH}"));
                }
            }
            if l.inputs
                .checked_mul(l.outputs)
                .is_none_or(|w| w > MAX_LAYER_WEIGHTS)
            {
                return bad(
                    f("outputs"),
                    format!(
                        "{} x {} weights exceed {MAX_LAYER_WEIGHTS}",
                        l.outputs, l.inputs
                    ),
                );
            }
            if i == last {
                if !l.groups.is_empty() {
                    return bad(f("groups"), "the output layer has no activation groups");
                }
            } else {
                let blocks = l.groups.iter().map(|g| (g.start, g.len));
                if let Err((g, message)) = check_partition(blocks, l.outputs) {
                    return bad(
                        g.map_or_else(|| f("groups"), |g| format!("layers[{i}].groups[{g}]")),
                        message,
                    );
                }
                for (g, group) in l.groups.iter().enumerate() {
                    if let Err(e) = lookup(&group.activation) {
                        return bad(format!("layers[{i}].groups[{g}].activation"), e.to_string());
                    }
                }
            }
            if !l.original_index.is_empty() {
                if l.original_index.len() != l.outputs {
                    return bad(
                        f("original_index"),
                        format!(
                            "{} entries for {} neurons",
                            l.original_index.len(),
                            l.outputs
                        ),
                    );
                }
                if let Err(message) = check_permutation(&l.original_index, l.outputs) {
                    return bad(f("original_index"), message);
                }
            }
            inputs = l.outputs;
        }
        Ok(())
    }

    /// Number of classes (outputs of the last layer).
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: 1,
            inputs: 4,
            output_activation: "identity".into(),
            layers: vec![
                LayerManifest {
                    inputs: 4,
                    outputs: 3,
                    groups: vec![
                        GroupManifest {
                            activation: "relu".into(),
                            start: 0,
                            len: 2,
                        },
                        GroupManifest {
                            activation: "elu".into(),
                            start: 2,
                            len: 1,
                        },
                    ],
                    original_index: vec![2, 0, 1],
                },
                LayerManifest {
                    inputs: 3,
                    outputs: 2,
                    groups: vec![],
                    original_index: vec![],
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_rejects_each_defect() {
        let m = valid();
        assert_eq!(Manifest::from_toml(&m.to_toml()).unwrap(), m);
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|m| m.version = 9), "version"),
            (Box::new(|m| m.layers[0].groups[1].start = 1), "overlaps"),
            (Box::new(|m| m.layers[0].groups[1].start = 3), "gap"),
            (
                Box::new(|m| m.layers[0].groups[1].len = 5),
                "past the layer",
            ),
            (
                Box::new(|m| m.layers[0].groups.pop().map(|_| ()).unwrap_or(())),
                "cover 2 of 3",
            ),
            (
                Box::new(|m| m.layers[0].groups[0].activation = "nope".into()),
                "unknown activation",
            ),
            (Box::new(|m| m.layers[1].inputs = 5), "previous layer"),
            (
                Box::new(|m| m.layers[0].original_index = vec![0, 0, 1]),
                "repeated",
            ),
            (
                Box::new(|m| m.layers[1].outputs = usize::MAX),
                "expected 1..=",
            ),
            (Box::new(|m| m.layers.clear()), "at least one layer"),
        ];
        for (edit, needle) in cases {
            let mut m = valid();
            edit(&mut m);
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "`{needle}` not in `{e}`");
        }
    }
}
