//! Checkpoints as safetensors: PyTorch-style tensors (`layers.{i}.weight` `[out, in]`,
//! `layers.{i}.bias` `[out]`, phase 1's `layers.{i}.logits` `[pool, neurons]`), f32
//! little-endian, and the hidden activations in the `__metadata__` strings.

use std::collections::HashMap;
use std::path::Path;

use dfdx::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use smartmixed_core::lookup;
use smartmixed_core::manifest::{check_partition, check_permutation};

use crate::export::Description;
use crate::fsutil::write_atomic;
use crate::kernels::Block;
use crate::model::{Dense, Hidden, Network};
use crate::ops::{Matrix, TrainDevice};
use crate::{Error, Result};

/// Value of the `format` metadata key.
pub const FORMAT: &str = "smartmixed-checkpoint-1";

/// f32 values as safetensors stores them (little-endian bytes).
pub(crate) fn to_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`to_le_bytes`].
pub(crate) fn from_le_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `(name, shape, little-endian bytes)` of every weight and bias, PyTorch-style.
pub(crate) fn layer_tensors<D: TrainDevice>(
    net: &Network<D>,
) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let mut tensors = Vec::new();
    for (i, layer) in net.layers.iter().enumerate() {
        let (out, inp) = *layer.weight.shape();
        tensors.push((
            format!("layers.{i}.weight"),
            vec![out, inp],
            to_le_bytes(&layer.weight.as_vec()),
        ));
        tensors.push((
            format!("layers.{i}.bias"),
            vec![out],
            to_le_bytes(&layer.bias.as_vec()),
        ));
    }
    tensors
}

/// safetensors bytes of f32 tensors and string metadata.
pub(crate) fn serialize(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    meta: HashMap<String, String>,
) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            // Shapes and byte lengths agree by construction.
            let view = TensorView::new(Dtype::F32, shape.clone(), data).expect("consistent tensor");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, &Some(meta)).expect("serialising in-memory tensors")
}

/// Serialises a network to safetensors bytes.
pub fn to_bytes<D: TrainDevice>(net: &Network<D>) -> Vec<u8> {
    to_bytes_with(net, Vec::new(), HashMap::new())
}

/// [`to_bytes`] plus extra f32 tensors and metadata (the resume state).
pub(crate) fn to_bytes_with<D: TrainDevice>(
    net: &Network<D>,
    extra: Vec<(String, Vec<usize>, Vec<u8>)>,
    mut meta: HashMap<String, String>,
) -> Vec<u8> {
    let mut tensors = layer_tensors(net);
    tensors.extend(extra);
    meta.insert("format".to_string(), FORMAT.to_string());
    match &net.hidden {
        Hidden::Selective {
            pool,
            logits,
            temperature,
        } => {
            for (i, l) in logits.iter().enumerate() {
                let (p, n) = *l.shape();
                tensors.push((
                    format!("layers.{i}.logits"),
                    vec![p, n],
                    to_le_bytes(&l.as_vec()),
                ));
            }
            let names: Vec<&str> = pool.iter().map(|a| a.name).collect();
            meta.insert("kind".into(), "selective".into());
            meta.insert(
                "pool".into(),
                serde_json::to_string(&names).unwrap_or_default(),
            );
            meta.insert("temperature".into(), temperature.to_string());
        }
        Hidden::Grouped {
            groups,
            original_index,
        } => {
            let groups: Vec<Vec<(&str, usize, usize)>> = groups
                .iter()
                .map(|gs| {
                    gs.iter()
                        .map(|g| (g.activation.name, g.start, g.len))
                        .collect()
                })
                .collect();
            meta.insert("kind".into(), "grouped".into());
            meta.insert(
                "groups".into(),
                serde_json::to_string(&groups).unwrap_or_default(),
            );
            meta.insert(
                "original_index".into(),
                serde_json::to_string(original_index).unwrap_or_default(),
            );
        }
    }
    serialize(&tensors, meta)
}

/// Writes a checkpoint atomically.
pub fn save<D: TrainDevice>(net: &Network<D>, path: &Path) -> Result<()> {
    write_atomic(path, &to_bytes(net))
}

/// The metadata key of [`save_described`]'s description (JSON).
pub const DESCRIPTION_KEY: &str = "description";

/// [`save`] with what the network's input and classes are (the trainer's checkpoints), so
/// that `export` of a run without summary.json keeps the preprocessing.
pub fn save_described<D: TrainDevice>(
    net: &Network<D>,
    path: &Path,
    description: &Description,
) -> Result<()> {
    let json = serde_json::to_string(description).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("cannot describe the input: {e}"),
    })?;
    let meta = HashMap::from([(DESCRIPTION_KEY.to_string(), json)]);
    write_atomic(path, &to_bytes_with(net, Vec::new(), meta))
}

/// [`load`] and the description [`save_described`] recorded (`None`: a checkpoint saved
/// without one, such as those of runs trained before it was recorded).
pub fn load_described<D: TrainDevice>(
    dev: &D,
    path: &Path,
) -> Result<(Network<D>, Option<Description>)> {
    let bytes = smartmixed_core::tensorfile::read_file(path)
        .map_err(|e| Error::io(path, "cannot read checkpoint", e))?;
    let net = from_bytes(dev, &bytes, path)?;
    let fail = |message: String| Error::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let file = Contents::read(&bytes).map_err(fail)?;
    let description = match file.meta.get(DESCRIPTION_KEY) {
        None => None,
        Some(_) => {
            let d: Description = file.meta_json(DESCRIPTION_KEY).map_err(fail)?;
            if let Some(input) = &d.input {
                input
                    .check(net.layers[0].weight.shape().1)
                    .map_err(|e| fail(format!("metadata `{DESCRIPTION_KEY}`: {e}")))?;
            }
            Some(d)
        }
    };
    Ok((net, description))
}

/// Reads a checkpoint written by [`save`], checking every tensor and the metadata.
pub fn load<D: TrainDevice>(dev: &D, path: &Path) -> Result<Network<D>> {
    let bytes = smartmixed_core::tensorfile::read_file(path)
        .map_err(|e| Error::io(path, "cannot read checkpoint", e))?;
    from_bytes(dev, &bytes, path)
}

/// [`load`] from bytes; `origin` names them in errors.
pub fn from_bytes<D: TrainDevice>(dev: &D, bytes: &[u8], origin: &Path) -> Result<Network<D>> {
    parse(dev, bytes).map_err(|message| Error::Checkpoint {
        path: origin.to_path_buf(),
        message,
    })
}

/// What is wrong with a checkpoint, without its path.
type Problem<T> = std::result::Result<T, String>;

/// The layers, then the hidden layers' kind: selective (phase 1) or grouped (phase 2).
fn parse<D: TrainDevice>(dev: &D, bytes: &[u8]) -> Problem<Network<D>> {
    let file = Contents::read(bytes)?;
    if file.meta("format")? != FORMAT {
        return Err(format!(
            "metadata `format` is `{}`, expected `{FORMAT}`",
            file.meta("format")?
        ));
    }
    let layers = file.layers(dev)?;
    let hidden_widths: Vec<usize> = layers[..layers.len() - 1]
        .iter()
        .map(|l| l.weight.shape().0)
        .collect();
    let hidden = match file.meta("kind")?.as_str() {
        "selective" => file.selective(dev, &hidden_widths)?,
        "grouped" => file.grouped(&hidden_widths)?,
        other => {
            return Err(format!(
                "metadata `kind` is `{other}`, expected `selective` or `grouped`"
            ))
        }
    };
    Ok(Network { layers, hidden })
}

/// A parsed safetensors file: its tensors and its string metadata.
struct Contents<'a> {
    tensors: SafeTensors<'a>,
    meta: HashMap<String, String>,
}

impl<'a> Contents<'a> {
    fn read(bytes: &'a [u8]) -> Problem<Self> {
        smartmixed_core::tensorfile::check_layout(bytes)?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| format!("not safetensors: {e}"))?;
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| format!("not safetensors: {e}"))?;
        let meta = header.metadata().clone().unwrap_or_default();
        Ok(Contents { tensors, meta })
    }

    fn meta(&self, key: &str) -> Problem<&String> {
        self.meta
            .get(key)
            .ok_or_else(|| format!("metadata key `{key}` missing"))
    }

    /// A JSON-valued metadata entry.
    fn meta_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Problem<T> {
        serde_json::from_str(self.meta(key)?).map_err(|e| format!("metadata `{key}`: {e}"))
    }

    /// An f32 tensor of the given shape (any shape when `None`), all values finite.
    fn tensor(&self, name: &str, shape: Option<&[usize]>) -> Problem<(Vec<usize>, Vec<f32>)> {
        let t = self
            .tensors
            .tensor(name)
            .map_err(|_| format!("tensor `{name}` missing"))?;
        if t.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor `{name}` has dtype {:?}, expected F32",
                t.dtype()
            ));
        }
        if shape.is_some_and(|s| t.shape() != s) {
            return Err(format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                t.shape(),
                shape.unwrap_or_default()
            ));
        }
        let values = from_le_bytes(t.data());
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "tensor `{name}` holds a NaN or infinite value at element {i}"
            ));
        }
        Ok((t.shape().to_vec(), values))
    }

    /// `layers.{i}.weight` and `.bias` for i = 0, 1, ... while they exist, each layer
    /// taking the previous one's outputs.
    fn layers<D: TrainDevice>(&self, dev: &D) -> Problem<Vec<Dense<D>>> {
        let mut layers = Vec::new();
        let mut inputs = None;
        let names = self.tensors.names();
        while names
            .iter()
            .any(|n| **n == format!("layers.{}.weight", layers.len()))
        {
            let i = layers.len();
            let (shape, w) = self.tensor(&format!("layers.{i}.weight"), None)?;
            if shape.len() != 2 || inputs.is_some_and(|n| n != shape[1]) {
                return Err(format!(
                    "tensor `layers.{i}.weight` has shape {shape:?}, expected [out, {}]",
                    inputs.unwrap_or(0)
                ));
            }
            let (_, b) = self.tensor(&format!("layers.{i}.bias"), Some(&[shape[0]]))?;
            layers.push(Dense {
                weight: dev.tensor_from_vec(w, (shape[0], shape[1])),
                bias: dev.tensor_from_vec(b, (1, shape[0])),
            });
            inputs = Some(shape[0]);
        }
        if layers.is_empty() {
            return Err("tensor `layers.0.weight` missing".into());
        }
        Ok(layers)
    }

    /// Phase 1's pool, temperature and per-layer logits.
    fn selective<D: TrainDevice>(&self, dev: &D, widths: &[usize]) -> Problem<Hidden<D>> {
        let names: Vec<String> = self.meta_json("pool")?;
        let pool = names
            .iter()
            .map(|n| lookup(n).map_err(|e| e.to_string()))
            .collect::<Problem<Vec<_>>>()?;
        let temperature: f32 = self
            .meta("temperature")?
            .parse()
            .map_err(|e| format!("metadata `temperature`: {e}"))?;
        let logits = widths
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let (_, v) = self.tensor(&format!("layers.{i}.logits"), Some(&[pool.len(), n]))?;
                Ok(dev.tensor_from_vec(v, (pool.len(), n)))
            })
            .collect::<Problem<Vec<Matrix<D>>>>()?;
        Ok(Hidden::Selective {
            pool,
            logits,
            temperature,
        })
    }

    /// Phase 2's activation blocks and neuron permutation, checked per layer.
    fn grouped<D: TrainDevice>(&self, widths: &[usize]) -> Problem<Hidden<D>> {
        let raw: Vec<Vec<(String, usize, usize)>> = self.meta_json("groups")?;
        let original_index: Vec<Vec<u32>> = self.meta_json("original_index")?;
        if raw.len() != widths.len() || original_index.len() != widths.len() {
            return Err(format!(
                "metadata describes {} hidden layers, the tensors {}",
                raw.len(),
                widths.len()
            ));
        }
        let groups = raw
            .iter()
            .zip(&original_index)
            .zip(widths)
            .enumerate()
            .map(|(l, ((gs, index), &n))| layer_blocks(l, gs, index, n))
            .collect::<Problem<Vec<_>>>()?;
        Ok(Hidden::Grouped {
            groups,
            original_index,
        })
    }
}

/// Hidden layer `l`'s blocks, checked to partition its `n` neurons, with `index` a
/// permutation of them.
fn layer_blocks(
    l: usize,
    blocks: &[(String, usize, usize)],
    index: &[u32],
    n: usize,
) -> Problem<Vec<Block>> {
    check_partition(blocks.iter().map(|(_, start, len)| (*start, *len)), n).map_err(
        |(g, message)| match g {
            Some(g) => format!("metadata `groups` layer {l} group {g}: {message}"),
            None => format!("metadata `groups` layer {l}: {message}"),
        },
    )?;
    check_permutation(index, n).map_err(|m| format!("metadata `original_index` layer {l}: {m}"))?;
    blocks
        .iter()
        .map(|(name, start, len)| {
            Ok(Block {
                activation: lookup(name).map_err(|e| e.to_string())?,
                start: *start,
                len: *len,
            })
        })
        .collect()
}
