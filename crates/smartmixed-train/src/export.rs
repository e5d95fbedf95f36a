//! Export: a trained network as `model.safetensors` (PyTorch names and layout, f32) plus
//! `manifest.toml` (activation groups and original neuron indices), the format
//! `smartmixed-infer` loads. Phase-1 networks are exported with their argmax choices.

use std::collections::HashMap;
use std::path::Path;

use dfdx::prelude::*;
use smartmixed_core::manifest::{MANIFEST_FORMAT, MANIFEST_VERSION};
use smartmixed_core::{GroupManifest, InputManifest, LayerManifest, Manifest};

use crate::checkpoint::{layer_tensors, serialize};
use crate::fsutil::write_atomic;
use crate::model::{Hidden, Network};
use crate::ops::TrainDevice;
use crate::{Error, Result};

pub use smartmixed_core::manifest::{MANIFEST_FILE, MANIFEST_METADATA_KEY, WEIGHTS_FILE};

/// The grouped network to export: itself, or phase 1's argmax transition.
pub fn mixed<D: TrainDevice>(net: &Network<D>) -> Network<D> {
    net.to_mixed(None).unwrap_or_else(|| net.clone())
}

/// What an export says about the model's input and classes: from the run's summary.json,
/// or for a run that has not finished, from its checkpoint's metadata (training records it
/// in every checkpoint, so that an export never loses the preprocessing).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    #[serde(default)]
    pub input: Option<InputManifest>,
    #[serde(default)]
    pub class_names: Vec<String>,
}

/// The manifest of a grouped network.
pub fn manifest<D: TrainDevice>(net: &Network<D>, description: &Description) -> Manifest {
    let Hidden::Grouped {
        groups,
        original_index,
    } = &mixed(net).hidden
    else {
        unreachable!("mixed() always returns a grouped network")
    };
    let last = net.layers.len() - 1;
    let layers = net
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (outputs, inputs) = *l.weight.shape();
            LayerManifest {
                inputs,
                outputs,
                groups: if i == last {
                    vec![]
                } else {
                    groups[i]
                        .iter()
                        .map(|g| GroupManifest {
                            activation: g.activation.name.into(),
                            start: g.start,
                            len: g.len,
                        })
                        .collect()
                },
                original_index: if i == last {
                    (0..outputs as u32).collect()
                } else {
                    original_index[i].clone()
                },
            }
        })
        .collect();
    Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        inputs: net.layers[0].weight.shape().1,
        output_activation: "identity".into(),
        layers,
        input: description.input.clone(),
        class_names: description.class_names.clone(),
        // Phase 1 evaluates its argmax network with every hidden output clamped.
        hidden_clamp: matches!(net.hidden, Hidden::Selective { .. })
            .then_some(crate::kernels::CLAMP),
    }
}

/// Writes `dir/model.safetensors` and `dir/manifest.toml`, atomically each, with no input
/// description. A model already in `dir` is replaced only if `replace` is set.
pub fn export<D: TrainDevice>(net: &Network<D>, dir: &Path, replace: bool) -> Result<Manifest> {
    export_described(net, dir, replace, &Description::default())
}

/// [`export`] with the manifest describing the input and the classes.
pub fn export_described<D: TrainDevice>(
    net: &Network<D>,
    dir: &Path,
    replace: bool,
    description: &Description,
) -> Result<Manifest> {
    if !replace {
        if let Some(f) = [WEIGHTS_FILE, MANIFEST_FILE]
            .iter()
            .find(|f| dir.join(f).exists())
        {
            return Err(Error::Mismatch {
                path: dir.to_path_buf(),
                message: format!("already holds {f}; pass --force to replace the model there"),
            });
        }
    }
    let (weights, manifest) = to_bytes(net, description)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(dir, "cannot create export directory", e))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
    write_atomic(&dir.join(MANIFEST_FILE), manifest.to_toml().as_bytes())?;
    Ok(manifest)
}

/// The export in memory: `model.safetensors`'s bytes (the manifest in their metadata, so
/// `smartmixed_infer::Model::from_safetensors` loads them alone) and the manifest.
pub fn to_bytes<D: TrainDevice>(
    net: &Network<D>,
    description: &Description,
) -> Result<(Vec<u8>, Manifest)> {
    let manifest = manifest(net, description);
    manifest.validate()?;
    let meta = HashMap::from([(MANIFEST_METADATA_KEY.to_string(), manifest.to_toml())]);
    Ok((serialize(&layer_tensors(&mixed(net)), meta), manifest))
}
