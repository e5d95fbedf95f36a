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
/// The manifest version this crate writes; it reads this and every earlier one (version 1
/// has no `input` table: see [`Manifest::input_description`]).
pub const MANIFEST_VERSION: u32 = 2;
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
    /// What one input is and how raw values become the network's input (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputManifest>,
    /// The name of each output class, in output order (version 2; empty: unnamed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// Every hidden neuron's output clamped to `[-c, c]` after its activation: phase 1
    /// clamps at 10 (the authors' code), so its exports say so and compute what phase 1
    /// evaluated (none: phase 2 and the baselines, which do not clamp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_clamp: Option<f32>,
}

/// One input as the model expects it: its shape, and the preprocessing training applied,
/// `x = (raw / divisor - mean[i]) / std[i]` per feature `i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputManifest {
    /// E.g. `[28, 28]` for MNIST images, `[n]` for a table of `n` columns; the product is
    /// the model's input width.
    pub shape: Vec<usize>,
    /// `255` for 8-bit pixels, `1` for tables (a division, as training computes it, so
    /// that the runtime sees bit for bit what training saw).
    pub divisor: f32,
    /// Per-feature mean subtracted after scaling (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mean: Vec<f32>,
    /// Per-feature standard deviation divided by (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub std: Vec<f32>,
    /// The name of each feature (a table's column names; empty for images).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_names: Vec<String>,
}

impl InputManifest {
    /// 8-bit images of `shape` scaled to `[0, 1]`: what every model trained on IDX or
    /// image data sees.
    pub fn pixels(shape: Vec<usize>) -> Self {
        Self {
            shape,
            divisor: 255.0,
            mean: Vec::new(),
            std: Vec::new(),
            feature_names: Vec::new(),
        }
    }

    /// Applies the preprocessing to `raw` (rows of the input width) into `out`.
    pub fn apply(&self, raw: &[f32], out: &mut [f32]) {
        let len = raw.len().min(out.len());
        out[..len].copy_from_slice(&raw[..len]);
        self.apply_in_place(&mut out[..len]);
    }

    /// [`Self::apply`] on rows of raw values, overwriting them.
    pub fn apply_in_place(&self, values: &mut [f32]) {
        if self.mean.is_empty() && self.std.is_empty() {
            // Images: a division alone (what `(x - 0) / 1` gives, without the lookups).
            for x in values.iter_mut() {
                *x /= self.divisor;
            }
            return;
        }
        let n = self.shape.iter().product::<usize>().max(1);
        let d = self.divisor;
        if self.mean.len() == n && self.std.len() == n {
            // Zipped slices (no lookup per value) so the loop vectorises; the same
            // arithmetic in the same order as below, so the same bits.
            for row in values.chunks_exact_mut(n) {
                for ((x, &mean), &std) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                    *x = (*x / d - mean) / std;
                }
            }
            return;
        }
        for row in values.chunks_exact_mut(n) {
            for (i, x) in row.iter_mut().enumerate() {
                let mean = self.mean.get(i).copied().unwrap_or(0.0);
                let std = self.std.get(i).copied().unwrap_or(1.0);
                *x = (*x / d - mean) / std;
            }
        }
    }

    /// What kind of input this is: a table's rows (feature names given), images of a
    /// known shape (`[h, w]`, `[h, w, 1]` or `[h, w, 3]`), or a flat run of values whose
    /// image shape the manifest does not record (version 1, or a shape such as `[784]`).
    pub fn kind(&self) -> InputKind {
        match *image_shape(&self.shape) {
            _ if !self.feature_names.is_empty() => InputKind::Table,
            [h, w] => InputKind::Image {
                height: h,
                width: w,
                channels: 1,
            },
            [h, w, 3] => InputKind::Image {
                height: h,
                width: w,
                channels: 3,
            },
            _ => InputKind::Flat,
        }
    }

    /// The shape matches `inputs`, per-feature lists have one entry per feature, and the
    /// preprocessing is numerically sound ([`Self::check_numbers`]).
    pub fn check(&self, inputs: usize) -> Result<()> {
        let width = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if self.shape.is_empty() || width != Some(inputs) {
            return bad(
                "input.shape",
                format!("{:?}, expected a shape of {inputs} values", self.shape),
            );
        }
        for (name, list) in [
            ("mean", self.mean.len()),
            ("std", self.std.len()),
            ("feature_names", self.feature_names.len()),
        ] {
            if list != 0 && list != inputs {
                return bad(
                    format!("input.{name}"),
                    format!("{list} entries, expected {inputs} (one per feature) or none"),
                );
            }
        }
        if let Some(i) = (1..self.feature_names.len())
            .find(|&i| self.feature_names[..i].contains(&self.feature_names[i]))
        {
            return bad(
                format!("input.feature_names[{i}]"),
                format!(
                    "`{}` appears twice, expected distinct names",
                    self.feature_names[i]
                ),
            );
        }
        self.check_numbers()
    }

    /// The preprocessing can only give finite values the network can take: the divisor
    /// and every standard deviation are normal positive numbers (a subnormal divisor makes
    /// every pixel infinite), means are finite, and per feature the affine map it amounts
    /// to, `x = raw * scale + offset` with `scale = 1 / (divisor * std)` and
    /// `offset = -mean / std`, has `|scale|` and `|offset|` at most [`MAX_PREPROCESSED`].
    /// Images have a declared raw range, 0 to 255: both ends must map, as `apply`
    /// computes them in f32, to values within the same bound. Table rows have no declared
    /// range; the runtime refuses any row whose preprocessed value is not finite.
    fn check_numbers(&self) -> Result<()> {
        let normal = |v: f32| v.is_normal() && v > 0.0;
        if !normal(self.divisor) {
            return bad(
                "input.divisor",
                format!(
                    "{:e}, expected a positive number of at least {:e}",
                    self.divisor,
                    f32::MIN_POSITIVE
                ),
            );
        }
        if let Some(i) = self.mean.iter().position(|m| !m.is_finite()) {
            return bad(
                format!("input.mean[{i}]"),
                format!("{:e}, expected a finite number", self.mean[i]),
            );
        }
        if let Some(i) = self.std.iter().position(|&s| !normal(s)) {
            return bad(
                format!("input.std[{i}]"),
                format!(
                    "{:e}, expected a positive number of at least {:e}",
                    self.std[i],
                    f32::MIN_POSITIVE
                ),
            );
        }
        let features = self.mean.len().max(self.std.len()).max(1);
        for i in 0..features {
            let mean = self.mean.get(i).copied().unwrap_or(0.0);
            let std = self.std.get(i).copied().unwrap_or(1.0);
            let scale = 1.0 / (f64::from(self.divisor) * f64::from(std));
            let offset = -f64::from(mean) / f64::from(std);
            let at = |name: &str| {
                if self.mean.is_empty() && self.std.is_empty() {
                    format!("input.{name}")
                } else {
                    format!("input.{name}[{i}]")
                }
            };
            if scale > MAX_PREPROCESSED {
                return bad(
                    if self.std.is_empty() { "input.divisor".to_string() } else { at("std") },
                    format!(
                        "divisor {:e} x std {std:e} scales raw values by {scale:.3e}, more than {MAX_PREPROCESSED:e}",
                        self.divisor
                    ),
                );
            }
            if offset.abs() > MAX_PREPROCESSED {
                return bad(
                    at("mean"),
                    format!("mean {mean:e} / std {std:e} = {:.3e}, more than {MAX_PREPROCESSED:e} in size", offset.abs()),
                );
            }
            if self.feature_names.is_empty() {
                for raw in [0.0f32, 255.0] {
                    let x = (raw / self.divisor - mean) / std;
                    if !(x.is_finite() && f64::from(x.abs()) <= MAX_PREPROCESSED) {
                        return bad(
                            "input.divisor",
                            format!(
                                "a pixel of {raw} becomes {x} after preprocessing, expected a finite value within {MAX_PREPROCESSED:e}"
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// The largest magnitude a preprocessing scale, offset or preprocessed pixel may have:
/// far beyond any sane standardisation, and far enough below f32's 3.4e38 that a layer's
/// products of such values with weights near 1 stay finite.
pub const MAX_PREPROCESSED: f64 = 1e30;

/// What one input of a model is (see [`InputManifest::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A table's row of named features.
    Table,
    /// An image of `height` rows and `width` columns, `channels` values per pixel.
    Image {
        height: usize,
        width: usize,
        channels: usize,
    },
    /// Pixels whose image shape is unknown (a version-1 manifest): only their count.
    Flat,
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

/// An item shape with a trailing channel of 1 dropped (`[h, w, 1]` is the grey image
/// `[h, w]`, as numpy and TensorFlow often store it), so that shapes compare as images.
pub fn image_shape(shape: &[usize]) -> &[usize] {
    match shape {
        [_, _, 1] => &shape[..2],
        _ => shape,
    }
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
            let (field, message) = crate::toml_error(text, &e);
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
        if let Some(input) = &self.input {
            input.check(self.inputs)?;
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.classes() {
            return bad(
                "class_names",
                format!(
                    "{} names for {} classes",
                    self.class_names.len(),
                    self.classes()
                ),
            );
        }
        Ok(())
    }

    /// What the input is: the `input` table, or for version-1 manifests (written before it
    /// existed, by a trainer that read only 8-bit IDX images) pixels / 255 of a flat shape.
    pub fn input_description(&self) -> InputManifest {
        self.input
            .clone()
            .unwrap_or_else(|| InputManifest::pixels(vec![self.inputs]))
    }

    /// The format, version and output activation this build reads, and at least one layer.
    fn check_header(&self) -> Result<()> {
        if self.format != MANIFEST_FORMAT {
            return bad(
                "format",
                format!("`{}`, expected `{MANIFEST_FORMAT}`", self.format),
            );
        }
        if !(1..=MANIFEST_VERSION).contains(&self.version) {
            return bad(
                "version",
                format!(
                    "unsupported version {}, this build reads 1 to {MANIFEST_VERSION}",
                    self.version
                ),
            );
        }
        if self.version == 1 && (self.input.is_some() || !self.class_names.is_empty()) {
            return bad(
                "version",
                "1 has no input table or class names; expected 2".to_string(),
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
        if let Some(c) = self.hidden_clamp {
            if !(c.is_normal() && c > 0.0) {
                return bad(
                    "hidden_clamp",
                    format!("{c}, expected a positive normal number"),
                );
            }
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
            input: None,
            class_names: vec![],
            hidden_clamp: None,
        }
    }

    /// Version 2: a 2 x 2 input standardised per feature, named classes.
    fn described() -> Manifest {
        Manifest {
            version: 2,
            input: Some(InputManifest {
                shape: vec![2, 2],
                divisor: 2.0,
                mean: vec![0.0, 1.0, 2.0, 3.0],
                std: vec![1.0, 2.0, 4.0, 8.0],
                feature_names: vec![],
            }),
            class_names: vec!["no".into(), "yes".into()],
            ..valid()
        }
    }

    #[test]
    fn a_hidden_clamp_round_trips_and_must_be_a_positive_normal_number() {
        let m = Manifest {
            hidden_clamp: Some(10.0),
            ..described()
        };
        let text = m.to_toml();
        assert!(text.contains("hidden_clamp = 10.0"), "{text}");
        assert_eq!(Manifest::from_toml(&text).unwrap(), m);
        assert_eq!(
            Manifest::from_toml(&described().to_toml())
                .unwrap()
                .hidden_clamp,
            None
        );
        for c in [0.0, -1.0, f32::NAN, f32::INFINITY, 1e-40] {
            let m = Manifest {
                hidden_clamp: Some(c),
                ..described()
            };
            match m.validate() {
                Err(Error::Manifest { field, .. }) => assert_eq!(field, "hidden_clamp"),
                other => panic!("{c}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_input_description_applies_scale_mean_and_std_per_feature() {
        let m = Manifest::from_toml(&described().to_toml()).unwrap();
        let input = m.input_description();
        let raw = [2.0, 4.0, 8.0, 16.0, 0.0, 0.0, 0.0, 0.0];
        let mut out = [0.0; 8];
        input.apply(&raw, &mut out);
        // (raw / 2 - mean) / std, by hand.
        assert_eq!(out, [1.0, 0.5, 0.5, 0.625, 0.0, -0.5, -0.5, -0.375]);
        // Version 1 (no input table): pixels / 255 in a flat shape.
        let v1 = valid().input_description();
        assert_eq!((v1.shape, v1.divisor), (vec![4], 255.0));
    }

    fn input(m: &mut Manifest) -> &mut InputManifest {
        m.input.as_mut().unwrap()
    }

    #[test]
    fn an_invalid_input_description_is_refused_naming_the_field() {
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|m| input(m).shape = vec![3]),
                "input.shape: [3], expected a shape of 4",
            ),
            (Box::new(|m| input(m).divisor = 0.0), "input.divisor"),
            (
                Box::new(|m| input(m).mean.pop().map_or((), |_| ())),
                "input.mean: 3 entries",
            ),
            (Box::new(|m| input(m).std[2] = -1.0), "input.std[2]"),
            (Box::new(|m| input(m).mean[1] = f32::NAN), "input.mean[1]"),
            (
                Box::new(|m| m.class_names.push("maybe".into())),
                "class_names: 3 names for 2 classes",
            ),
            (Box::new(|m| m.version = 1), "version: 1 has no input table"),
        ];
        for (edit, needle) in cases {
            let mut m = described();
            edit(&mut m);
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "`{needle}` not in `{e}`");
        }
    }

    /// The hostile-input pass's manifests: each validated, and each could only give NaN
    /// or infinities. By hand: 1e-45 and 1e-38 are subnormal; 1 / (2 * 2e-38) = 2.5e37 >
    /// 1e30; 3e38 / 1e5 = 3e33 > 1e30; 255 / 1e-37 = 2.55e39 overflows f32 although scale
    /// 1 / (1e-37 * 1e10) = 1e27 and offset 0 are within bounds.
    #[test]
    fn preprocessing_that_can_only_overflow_is_refused_naming_the_field() {
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|m| input(m).divisor = 1e-45),
                "input.divisor: 1e-45, expected a positive number of at least 1.1754944e-38",
            ),
            (Box::new(|m| input(m).std[1] = 1e-45), "input.std[1]"),
            (
                Box::new(|m| {
                    input(m).mean[0] = 3e38;
                    input(m).std[0] = 2e-38;
                }),
                "input.std[0]: divisor 2e0 x std 2e-38 scales raw values by 2.500e37",
            ),
            (
                Box::new(|m| {
                    input(m).mean[3] = 3e38;
                    input(m).std[3] = 1e5;
                }),
                "input.mean[3]: mean 3e38 / std 1e5 = 3.000e33",
            ),
            (
                Box::new(|m| {
                    let i = input(m);
                    (i.mean, i.std, i.divisor) = (vec![], vec![], 1e-37);
                }),
                "input.divisor: divisor 1e-37 x std 1e0 scales raw values by 1.000e37",
            ),
            (
                Box::new(|m| {
                    let i = input(m);
                    (i.mean, i.std, i.divisor) = (vec![], vec![1e10; 4], 1e-37);
                }),
                "input.divisor: a pixel of 255 becomes inf after preprocessing",
            ),
            (
                Box::new(|m| {
                    input(m).feature_names = vec!["a".into(), "b".into(), "a".into(), "c".into()]
                }),
                "input.feature_names[2]: `a` appears twice",
            ),
        ];
        for (edit, needle) in cases {
            let mut m = described();
            edit(&mut m);
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "`{needle}` not in `{e}`");
        }
        // Extreme but sound: a tiny std on a small mean, a huge divisor.
        let mut m = described();
        input(&mut m).std[0] = 1e-20;
        input(&mut m).divisor = 1e20;
        m.validate().unwrap();
    }

    #[test]
    fn the_kind_of_input_follows_names_and_shape() {
        let mut i = InputManifest::pixels(vec![28, 28]);
        assert_eq!(
            i.kind(),
            InputKind::Image {
                height: 28,
                width: 28,
                channels: 1
            }
        );
        i.shape = vec![8, 4, 3];
        assert_eq!(
            i.kind(),
            InputKind::Image {
                height: 8,
                width: 4,
                channels: 3
            }
        );
        // A trailing channel of 1 is a grey image, as numpy writes [N, 28, 28, 1].
        i.shape = vec![28, 14, 1];
        assert_eq!(
            i.kind(),
            InputKind::Image {
                height: 28,
                width: 14,
                channels: 1
            }
        );
        assert_eq!(image_shape(&[28, 14, 1]), &[28, 14]);
        assert_eq!(image_shape(&[28, 14, 3]), &[28, 14, 3]);
        assert_eq!(image_shape(&[1]), &[1]);
        i.shape = vec![28, 28, 4];
        assert_eq!(i.kind(), InputKind::Flat);
        i.shape = vec![784];
        assert_eq!(i.kind(), InputKind::Flat);
        i.shape = vec![2];
        i.feature_names = vec!["a".into(), "b".into()];
        assert_eq!(i.kind(), InputKind::Table);
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
