//! The activation-group manifest of an exported model: which contiguous block of each
//! hidden layer uses which activation, and where each stored neuron came from. Stored as
//! TOML beside `model.safetensors` and copied into its `__metadata__`.

use serde::{Deserialize, Serialize};

use crate::{lookup, Error, Result};

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

fn bad<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(Error::Manifest {
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
) -> std::result::Result<(), (Option<usize>, String)> {
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
pub fn check_permutation(index: &[u32], n: usize) -> std::result::Result<(), String> {
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
    pub fn from_toml(text: &str) -> Result<Self> {
        let m: Self = toml::from_str(text).map_err(|e| {
            let (field, message) = crate::config::toml_error(text, &e);
            Error::Manifest { field, message }
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
    pub fn validate(&self) -> Result<()> {
        self.check_header()?;
        let mut inputs = self.inputs;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            layer.check_sizes(i, inputs)?;
            if i == last {
                if !layer.groups.is_empty() {
                    return bad(
                        format!("layers[{i}].groups"),
                        "the output layer has no activation groups",
                    );
                }
            } else {
                layer.check_groups(i)?;
            }
            layer.check_original_index(i)?;
            inputs = layer.outputs;
        }
        Ok(())
    }

    /// The format, version and output activation this build reads, and at least one layer.
    fn check_header(&self) -> Result<()> {
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
        Ok(())
    }

    /// Number of classes (outputs of the last layer).
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }
}

impl LayerManifest {
    /// Layer `i` takes the `inputs` the previous layer gives, and its sizes are sane.
    fn check_sizes(&self, i: usize, inputs: usize) -> Result<()> {
        let f = |name: &str| format!("layers[{i}].{name}");
        if self.inputs != inputs {
            return bad(
                f("inputs"),
                format!("{} but the previous layer gives {inputs}", self.inputs),
            );
        }
        for (name, v) in [("inputs", self.inputs), ("outputs", self.outputs)] {
            if v == 0 || v > MAX_WIDTH {
                return bad(f(name), format!("{v}, expected 1..={MAX_WIDTH}"));
            }
        }
        if self
            .inputs
            .checked_mul(self.outputs)
            .is_none_or(|w| w > MAX_LAYER_WEIGHTS)
        {
            return bad(
                f("outputs"),
                format!(
                    "{} x {} weights exceed {MAX_LAYER_WEIGHTS}",
                    self.outputs, self.inputs
                ),
            );
        }
        Ok(())
    }

    /// The groups of hidden layer `i` partition it and name registered activations.
    fn check_groups(&self, i: usize) -> Result<()> {
        let blocks = self.groups.iter().map(|g| (g.start, g.len));
        if let Err((g, message)) = check_partition(blocks, self.outputs) {
            let field = g.map_or_else(
                || format!("layers[{i}].groups"),
                |g| format!("layers[{i}].groups[{g}]"),
            );
            return bad(field, message);
        }
        for (g, group) in self.groups.iter().enumerate() {
            if let Err(e) = lookup(&group.activation) {
                return bad(format!("layers[{i}].groups[{g}].activation"), e.to_string());
            }
        }
        Ok(())
    }

    /// `original_index`, when present, is a permutation of the layer's neurons.
    fn check_original_index(&self, i: usize) -> Result<()> {
        if self.original_index.is_empty() {
            return Ok(());
        }
        check_permutation(&self.original_index, self.outputs)
            .or_else(|message| bad(format!("layers[{i}].original_index"), message))
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
