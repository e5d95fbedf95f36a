//! `Model`: an immutable, validated network: loading (from a directory, paths or bytes),
//! validation, and the calls (`forward`, `forward_raw`, `predict`) that check their inputs
//! and outputs around the execution layer (`crate::exec`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::AtomicUsize;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use smartmixed_core::{lookup, InputManifest, LayerManifest, Manifest};

use crate::bf16::Bf16Weights;
use crate::exec::{grown, Hooks, Panic, Pool, Scratch};
use crate::fast_act::{Fast, Span};
use crate::int8::Int8Weights;
use crate::kernel::{layer_matmul, Kernel, GEMV_ROWS};
use crate::packed::PackedWeights;
use crate::{Error, Result};
use smartmixed_core::Block;

/// The most values one working buffer of a forward pass may hold (batch x widest layer):
/// 2^30 values, 4 GiB, well past any sensible batch.
pub const MAX_BATCH_VALUES: usize = 1 << 30;

pub use smartmixed_core::manifest::{MANIFEST_FILE, MANIFEST_METADATA_KEY, WEIGHTS_FILE};

#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
    pub(crate) weights: Weights,
    pub(crate) bias: Vec<f32>,
    /// Empty for the output layer (identity).
    pub(crate) blocks: Vec<Block>,
    /// Per block, in bf16 and int8, the fast form of its activation where it has one
    /// ([`crate::fast_act`]); empty in f32, which keeps the exact forms.
    fast: Vec<Option<Fast>>,
    /// Hidden layers of a phase-1 export: outputs clamped to `[-c, c]` after the
    /// activation (the manifest's `hidden_clamp`), as phase 1 evaluated them.
    clamp: Option<f32>,
}

/// How a model holds and multiplies its weights; chosen when it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout: the trainer's arithmetic.
    #[default]
    F32,
    /// Weights held in bf16 and each layer's input rounded to bf16 (to nearest even),
    /// products summed in f32; bias and activations in f32. On CPUs with AVX512-BF16 the
    /// products run on `vdpbf16ps`, elsewhere in portable code with the same bits.
    Bf16,
    /// Weights held as i8 with a scale per output neuron (`max |w| / 127`), each layer's
    /// input quantised per row to u8 with a zero point, products summed exactly in i32,
    /// then scaled back to f32; bias and activations in f32. On AMX-INT8 `tdpbusd`, on
    /// AVX512-VNNI or AVX-VNNI `vpdpbusd`, elsewhere portable code with the same bits.
    Int8,
}

impl Precision {
    /// The name `--precision` takes and `inspect` prints.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown precision `{other}`, expected f32, bf16 or int8"
            )),
        }
    }
}

/// How [`Model::load_dir_with`] and the other `_with` loaders build a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// The arithmetic of the matmuls.
    pub precision: Precision,
}

/// A layer's weights in the form this CPU's kernels read; held once.
#[derive(Debug)]
pub(crate) enum Weights {
    /// bf16 pair panels ([`Precision::Bf16`]).
    Bf16(Bf16Weights),
    /// i8 quad panels with per-column scales ([`Precision::Int8`]).
    Int8(Int8Weights),
    /// Packed for our AVX-512 or AVX2+FMA kernels (matmul and GEMV), on CPUs that have them.
    Packed(PackedWeights),
    /// `W^T`, `[inputs, outputs]` row-major, for gemm and the plain GEMV (CPUs with neither).
    Transposed(Vec<f32>),
}

impl Layer {
    /// `dst = src * W^T` for `batch` rows: below GEMV_ROWS rows a skip-zero GEMV per row,
    /// else the blocked matmul (our packed kernels on AVX-512 and AVX2+FMA, gemm elsewhere); in bf16,
    /// `src` rounded into `pairs` (at least `batch * pairs(inputs)` values) first; in
    /// int8, `src` quantised into `pairs` (at least `batch * row_words()`).
    pub(crate) fn matmul(&self, src: &[f32], dst: &mut [f32], batch: usize, pairs: &mut [u32]) {
        let (k, n) = (self.inputs, self.outputs);
        match &self.weights {
            Weights::Bf16(w) => {
                let q = &mut pairs[..batch * w.row_pairs()];
                crate::bf16::to_pairs(src, batch, k, w.row_pairs(), q);
                w.matmul(q, dst, batch);
            }
            Weights::Int8(w) => w.matmul(src, pairs, dst, batch),
            Weights::Packed(p) if batch >= GEMV_ROWS => p.matmul(src, dst, batch),
            Weights::Packed(p) => {
                for (x, y) in src.chunks_exact(k).zip(dst.chunks_exact_mut(n)).take(batch) {
                    // SAFETY: y holds n values and is borrowed mutably.
                    unsafe { p.gemv_panels(x, y.as_mut_ptr(), 0..p.panels()) }
                }
            }
            Weights::Transposed(wt) => layer_matmul(src, wt, dst, batch, k, n),
        }
    }

    /// `out = act(pre + bias)` on columns `cols` of `rows` rows (rows `n = outputs` apart in
    /// both), each block clipped to them: a block with a fast form in one call for all the
    /// rows ([`crate::fast_act`]), others by their registered form a row at a time.
    ///
    /// # Safety
    /// `pre` and `out` must be valid for `rows * outputs` values with columns `cols` of
    /// `pre` written, columns `cols` of `out` written by no other thread meanwhile.
    pub(crate) unsafe fn activate_cols(
        &self,
        pre: *const f32,
        out: *mut f32,
        rows: usize,
        cols: std::ops::Range<usize>,
    ) {
        let n = self.outputs;
        for (j, blk) in self.blocks.iter().enumerate() {
            let (s, e) = (
                blk.start.max(cols.start),
                (blk.start + blk.len).min(cols.end),
            );
            if s >= e {
                continue;
            }
            match self.fast.get(j).copied().flatten() {
                Some(fast) => fast.apply_rows(Span {
                    pre: pre.add(s),
                    ps: n,
                    bias: self.bias[s..e].as_ptr(),
                    out: out.add(s),
                    os: n,
                    rows,
                    len: e - s,
                }),
                None => {
                    for r in 0..rows {
                        // Only these columns: other threads may write the rest of the rows.
                        let p = std::slice::from_raw_parts(pre.add(r * n + s), e - s);
                        let o = std::slice::from_raw_parts_mut(out.add(r * n + s), e - s);
                        (blk.activation.apply)(p, &self.bias[s..e], o);
                    }
                }
            }
        }
        if let Some(c) = self.clamp {
            for r in 0..rows {
                let o = std::slice::from_raw_parts_mut(out.add(r * n + cols.start), cols.len());
                o.iter_mut().for_each(|v| *v = v.clamp(-c, c));
            }
        }
    }

    /// The epilogue of every row of `pre` (`outputs` wide) into `out`.
    pub(crate) fn activate(&self, pre: &[f32], out: &mut [f32]) {
        let rows = pre.len().min(out.len()) / self.outputs.max(1);
        // SAFETY: both hold `rows * outputs` values; `out` is borrowed mutably.
        unsafe { self.activate_cols(pre.as_ptr(), out.as_mut_ptr(), rows, 0..self.outputs) }
    }

    /// The packed weights, where the split forward pass can use them.
    pub(crate) fn packed(&self) -> Option<&PackedWeights> {
        match &self.weights {
            Weights::Packed(p) => Some(p),
            _ => None,
        }
    }

    /// The bf16 weights, where the column split can use them.
    pub(crate) fn bf16(&self) -> Option<&Bf16Weights> {
        match &self.weights {
            Weights::Bf16(w) => Some(w),
            _ => None,
        }
    }

    /// The int8 weights, where a pass quantises this layer's input in the epilogue
    /// before it.
    pub(crate) fn int8(&self) -> Option<&Int8Weights> {
        match &self.weights {
            Weights::Int8(w) => Some(w),
            _ => None,
        }
    }

    /// The `u32` words a row of this layer's input takes in the scratch's `q` (bf16 pairs
    /// or int8 quads and their scale); 0 in f32.
    pub(crate) fn q_words(&self) -> usize {
        match &self.weights {
            Weights::Bf16(w) => w.row_pairs(),
            Weights::Int8(w) => w.row_words(),
            _ => 0,
        }
    }

    /// The kernel a reduced-precision layer runs on, with its precision (for `inspect`).
    fn reduced_kernel(&self) -> Option<String> {
        match &self.weights {
            Weights::Bf16(w) => Some(format!("bf16: {}", w.kernel_name())),
            Weights::Int8(w) => Some(format!("int8: {}", w.kernel_name())),
            _ => None,
        }
    }
}

/// A loaded SmartMixed network. Immutable and `Send + Sync`: share one across threads.
#[derive(Debug)]
pub struct Model {
    manifest: Manifest,
    /// The manifest's input description, resolved once.
    input: InputManifest,
    layers: Vec<Layer>,
    /// The threads its calls run on, if given one; else [`Pool::global`], started only
    /// when a call first needs it (a model given its own pool at once never starts it).
    pool: Option<Pool>,
    precision: Precision,
}

/// The class with the highest probability, and every class's probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub class: usize,
    pub probabilities: Vec<f32>,
}

fn read_weights(path: &Path) -> Result<Vec<u8>> {
    smartmixed_core::tensorfile::read_file(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_manifest(path: &Path) -> Result<Vec<u8>> {
    smartmixed_core::tensorfile::read_text(path, smartmixed_core::MAX_TEXT_BYTES)
        .map(String::into_bytes)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// The layout checked with readable messages, then parsed.
fn parse_safetensors(weights: &[u8]) -> Result<SafeTensors<'_>> {
    smartmixed_core::tensorfile::check_layout(weights).map_err(Error::Safetensors)?;
    SafeTensors::deserialize(weights).map_err(|e| Error::Safetensors(e.to_string()))
}

/// A manifest copy in the weights' metadata, if there is one, must be the manifest.
fn check_metadata_copy(weights: &[u8], manifest: &Manifest) -> Result<()> {
    let (_, header) =
        SafeTensors::read_metadata(weights).map_err(|e| Error::Safetensors(e.to_string()))?;
    let copy = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(MANIFEST_METADATA_KEY));
    match copy {
        Some(copy) if Manifest::from_toml(copy).ok().as_ref() != Some(manifest) => {
            Err(Error::Mismatch(
                "the manifest differs from the copy in the safetensors metadata".into(),
            ))
        }
        _ => Ok(()),
    }
}

/// The little-endian f32 bytes of tensor `name`, checked to be F32 of `shape` and finite.
fn tensor_bytes<'a>(st: &'a SafeTensors<'a>, name: String, shape: &[usize]) -> Result<&'a [u8]> {
    let t = st
        .tensor(&name)
        .map_err(|_| Error::MissingTensor(name.clone()))?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::Dtype {
            name,
            found: format!("{:?}", t.dtype()),
        });
    }
    if t.shape() != shape {
        return Err(Error::Shape {
            name,
            found: t.shape().to_vec(),
            expected: shape.to_vec(),
        });
    }
    // Non-finite weights would make every prediction NaN without a word.
    if let Some(i) = t
        .data()
        .chunks_exact(4)
        .map(f32_le)
        .position(|v| !v.is_finite())
    {
        return Err(Error::NonFinite { name, index: i });
    }
    Ok(t.data())
}

/// The index of the first value of `values` that is not finite. Blocks are checked by an
/// OR of exponent tests, which vectorises (`position` alone takes a value at a time: a few
/// ms of a 10k-row MNIST call, on the calling thread), and only a failing block is searched.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    const BLOCK: usize = 1024;
    const EXPONENT: u32 = 0x7f80_0000;
    let bad = |c: &[f32]| {
        c.iter()
            .fold(false, |b, v| b | (v.to_bits() & EXPONENT == EXPONENT))
    };
    let (block, chunk) = values.chunks(BLOCK).enumerate().find(|(_, c)| bad(c))?;
    chunk
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| block * BLOCK + i)
}

/// Every value of `values` (rows of `width`) is finite; else the first that is not.
pub(crate) fn check_finite(values: &[f32], width: usize) -> Result<()> {
    match first_non_finite(values) {
        None => Ok(()),
        Some(i) => Err(Error::NonFiniteInput {
            row: i / width.max(1),
            index: i % width.max(1),
            value: values[i],
        }),
    }
}

/// One little-endian f32 from 4 bytes.
fn f32_le(c: &[u8]) -> f32 {
    f32::from_le_bytes([c[0], c[1], c[2], c[3]])
}

impl Layer {
    /// Layer `i` from the weights, as manifest entry `lm` describes it.
    fn build(
        st: &SafeTensors,
        i: usize,
        lm: &LayerManifest,
        precision: Precision,
        clamp: Option<f32>,
    ) -> Result<Self> {
        let (inputs, outputs) = (lm.inputs, lm.outputs);
        let w = tensor_bytes(st, format!("layers.{i}.weight"), &[outputs, inputs])?;
        let b = tensor_bytes(st, format!("layers.{i}.bias"), &[outputs])?;
        let bias: Vec<f32> = b.chunks_exact(4).map(f32_le).collect();
        let out_of_memory = |what: String| Error::OutOfMemory {
            what,
            bytes: inputs as u128 * outputs as u128 * 4,
        };
        // Transposed straight from the file's bytes: peak memory is the file plus the model.
        // Fallible: a service that cannot hold the model gets an error, not an abort.
        let mut weight_t = Vec::new();
        weight_t
            .try_reserve_exact(inputs * outputs)
            .map_err(|_| out_of_memory(format!("layers.{i}.weight")))?;
        weight_t.resize(inputs * outputs, 0.0f32);
        for (o, row) in w.chunks_exact(4 * inputs).enumerate() {
            for (k, c) in row.chunks_exact(4).enumerate() {
                weight_t[k * outputs + o] = f32_le(c);
            }
        }
        let blocks = lm
            .groups
            .iter()
            .map(|g| {
                Ok(Block {
                    activation: lookup(&g.activation)?,
                    start: g.start,
                    len: g.len,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Packed, the transposed copy is dropped: the model holds its weights once.
        let weights = match (precision, Kernel::detect()) {
            (Precision::Bf16, _) => Weights::Bf16(
                Bf16Weights::new(&weight_t, inputs, outputs)
                    .ok_or_else(|| out_of_memory(format!("layers.{i}.weight (bf16)")))?,
            ),
            (Precision::Int8, _) if inputs > crate::int8::MAX_INPUTS => {
                return Err(Error::Int8TooWide {
                    name: format!("layers.{i}.weight"),
                    inputs,
                    limit: crate::int8::MAX_INPUTS,
                })
            }
            (Precision::Int8, _) => Weights::Int8(
                Int8Weights::new(&weight_t, inputs, outputs)
                    .ok_or_else(|| out_of_memory(format!("layers.{i}.weight (int8)")))?,
            ),
            (Precision::F32, Kernel::Avx512 | Kernel::Avx2Fma) => Weights::Packed(
                PackedWeights::new(&weight_t, inputs, outputs)
                    .ok_or_else(|| out_of_memory(format!("layers.{i}.weight (packed)")))?,
            ),
            _ => Weights::Transposed(weight_t),
        };
        let fast = match precision {
            Precision::F32 => Vec::new(),
            Precision::Bf16 | Precision::Int8 => {
                blocks.iter().map(|b| Fast::of(b.activation)).collect()
            }
        };
        Ok(Layer {
            inputs,
            outputs,
            weights,
            bias,
            clamp: clamp.filter(|_| !blocks.is_empty()),
            blocks,
            fast,
        })
    }
}

impl Model {
    /// Loads `dir/model.safetensors` and `dir/manifest.toml`.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_dir_with(dir, &LoadOptions::default())
    }

    /// [`Self::load_dir`] with `options` (the precision).
    pub fn load_dir_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        Self::load_with(&dir.join(WEIGHTS_FILE), &dir.join(MANIFEST_FILE), options)
    }

    /// Loads weights and manifest from two paths.
    /// Errors name the file at fault: the manifest for manifest problems, else the weights.
    pub fn load(weights: &Path, manifest: &Path) -> Result<Self> {
        Self::load_with(weights, manifest, &LoadOptions::default())
    }

    /// [`Self::load`] with `options`.
    pub fn load_with(weights: &Path, manifest: &Path, options: &LoadOptions) -> Result<Self> {
        let in_file = |path: &Path| {
            let path = path.to_path_buf();
            move |e: Error| Error::InFile {
                path,
                source: Box::new(e),
            }
        };
        // The manifest first: it is validated before any tensor is read.
        let m = read_manifest(manifest)?;
        let text =
            std::str::from_utf8(&m).map_err(|_| in_file(manifest)(Error::ManifestEncoding))?;
        let parsed = Manifest::from_toml(text).map_err(|e| in_file(manifest)(e.into()))?;
        let w = read_weights(weights)?;
        Self::build(&w, parsed, options).map_err(in_file(weights))
    }

    /// Loads from the bytes of the two files.
    pub fn from_bytes(weights: &[u8], manifest: &[u8]) -> Result<Self> {
        Self::from_bytes_with(weights, manifest, &LoadOptions::default())
    }

    /// [`Self::from_bytes`] with `options`.
    pub fn from_bytes_with(weights: &[u8], manifest: &[u8], options: &LoadOptions) -> Result<Self> {
        let text = std::str::from_utf8(manifest).map_err(|_| Error::ManifestEncoding)?;
        Self::build(weights, Manifest::from_toml(text)?, options)
    }

    /// Loads from safetensors bytes alone, using the manifest copy in its metadata.
    pub fn from_safetensors(weights: &[u8]) -> Result<Self> {
        parse_safetensors(weights)?;
        let (_, header) =
            SafeTensors::read_metadata(weights).map_err(|e| Error::Safetensors(e.to_string()))?;
        let text = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(MANIFEST_METADATA_KEY))
            .ok_or_else(|| {
                Error::Mismatch(format!(
                    "no `{MANIFEST_METADATA_KEY}` in the safetensors metadata"
                ))
            })?;
        Self::build(weights, Manifest::from_toml(text)?, &LoadOptions::default())
    }

    /// Checks the weights against the manifest, then builds each layer.
    fn build(weights: &[u8], manifest: Manifest, options: &LoadOptions) -> Result<Self> {
        let st = parse_safetensors(weights)?;
        check_metadata_copy(weights, &manifest)?;
        let expected: Vec<String> = (0..manifest.layers.len())
            .flat_map(|i| [format!("layers.{i}.weight"), format!("layers.{i}.bias")])
            .collect();
        if let Some(missing) = expected.iter().find(|n| st.tensor(n).is_err()) {
            return Err(Error::MissingTensor(missing.clone()));
        }
        let mut names = st.names();
        names.sort();
        if let Some(extra) = names.iter().find(|n| !expected.contains(n)) {
            return Err(Error::Mismatch(format!(
                "tensor `{extra}` is in the weights but not in the manifest, which describes {} layers ({} tensors: layers.0.weight to layers.{}.bias)",
                manifest.layers.len(),
                expected.len(),
                manifest.layers.len() - 1
            )));
        }
        let layers = manifest
            .layers
            .iter()
            .enumerate()
            .map(|(i, lm)| Layer::build(&st, i, lm, options.precision, manifest.hidden_clamp))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input: manifest.input_description(),
            manifest,
            layers,
            pool: None,
            precision: options.precision,
        })
    }

    /// This model with its calls run on `pool` instead of the process's [`Pool::global`]
    /// (for a pool of its own size, or one shared with other models).
    pub fn with_pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The pool this model's calls run on.
    pub fn pool(&self) -> &Pool {
        match &self.pool {
            Some(pool) => pool,
            None => Pool::global(),
        }
    }

    /// The precision it was loaded in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The matmul kernel its layers run on this CPU (what `inspect` prints).
    pub fn kernel_description(&self) -> String {
        let fast = self
            .layers
            .iter()
            .any(|l| l.fast.iter().any(Option::is_some));
        match self.layers.first().and_then(Layer::reduced_kernel) {
            Some(name) if fast => format!("{name}; sigmoid, tanh, elu, selu in AVX-512 fast forms"),
            Some(name) => name,
            None => format!("f32: {}", Kernel::detect().describe()),
        }
    }

    /// Pixels (features) per input row.
    pub fn input_size(&self) -> usize {
        self.manifest.inputs
    }

    /// Outputs (logits) per row.
    pub fn classes(&self) -> usize {
        self.manifest.classes()
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Per hidden layer, `(activation, neurons)` for each group in storage order.
    pub fn group_sizes(&self) -> Vec<Vec<(&'static str, usize)>> {
        self.layers
            .iter()
            .filter(|l| !l.blocks.is_empty())
            .map(|l| {
                l.blocks
                    .iter()
                    .map(|b| (b.activation.name, b.len))
                    .collect()
            })
            .collect()
    }

    /// The most outputs of any layer: the width of a forward pass's working buffers.
    fn widest(&self) -> usize {
        self.layers.iter().map(|l| l.outputs).max().unwrap_or(0)
    }

    /// Sizes derived from `batch` are computed without overflow (a wrapped product could
    /// make an empty slice look right) and bounded before any buffer grows.
    fn check(&self, input: &[f32], batch: usize, output: &[f32]) -> Result<()> {
        let values = batch as u128 * self.widest() as u128;
        if values > MAX_BATCH_VALUES as u128 {
            return Err(Error::BatchTooLarge {
                batch,
                values,
                limit: MAX_BATCH_VALUES,
            });
        }
        let fits = |len: usize, width: usize| batch.checked_mul(width) == Some(len);
        if !fits(input.len(), self.input_size()) {
            return Err(Error::InputSize {
                len: input.len(),
                batch,
                inputs: self.input_size(),
            });
        }
        if !fits(output.len(), self.classes()) {
            return Err(Error::OutputSize {
                len: output.len(),
                batch,
                classes: self.classes(),
            });
        }
        Ok(())
    }

    /// What one input is and how raw values become the network's input (the manifest's
    /// `input` table; for version-1 manifests, 8-bit pixels scaled by 1/255).
    pub fn input_description(&self) -> &InputManifest {
        &self.input
    }

    /// Applies the model's preprocessing to `batch` raw rows (pixels 0-255 for image
    /// models, the table's own values for CSV models) into `out`.
    pub fn preprocess(&self, raw: &[f32], batch: usize, out: &mut [f32]) -> Result<()> {
        let fits = |len: usize| batch.checked_mul(self.input_size()) == Some(len);
        if !fits(raw.len()) || !fits(out.len()) {
            return Err(Error::InputSize {
                len: raw.len().min(out.len()),
                batch,
                inputs: self.input_size(),
            });
        }
        self.input.apply(raw, out);
        Ok(())
    }

    /// [`Self::forward`] on raw rows: the manifest's preprocessing first, into `scratch`.
    pub fn forward_raw(
        &self,
        raw: &[f32],
        batch: usize,
        scratch: &mut Scratch,
        output: &mut [f32],
    ) -> Result<()> {
        self.check(raw, batch, output)?;
        check_finite(raw, self.input_size())?;
        let mut input = std::mem::take(&mut scratch.raw);
        let pre = grown(&mut input, raw.len());
        self.input.apply(raw, pre);
        let result = self
            .check_preprocessed(raw, pre)
            .and_then(|()| self.forward_finite(pre, batch, scratch, output));
        scratch.raw = input;
        result
    }

    /// Every preprocessed value is finite; else the first that is not, with its raw value
    /// and the feature's name.
    fn check_preprocessed(&self, raw: &[f32], input: &[f32]) -> Result<()> {
        let Some(i) = first_non_finite(input) else {
            return Ok(());
        };
        let width = self.input_size().max(1);
        let index = i % width;
        let feature = match self.input.feature_names.get(index) {
            Some(name) => format!("feature `{name}`"),
            None => format!("value {index}"),
        };
        Err(Error::NonFinitePreprocessed {
            row: i / width,
            feature,
            raw: raw[i],
            value: input[i],
        })
    }

    /// Logits for `batch` rows of `input` (row-major `[batch, input_size]`) into `output`
    /// (`[batch, classes]`). Allocates only when `scratch` must grow. An input value that
    /// is not finite is [`Error::NonFiniteInput`], naming the first; it is found during
    /// the pass (each chunk of rows checks its own), so `output` then holds unspecified
    /// values.
    ///
    /// A panic in the code a call runs, on any of its threads (an activation from a plugin
    /// crate, say), is returned as [`Error::Panicked`] with the panic's message, once every
    /// thread has stopped; `output` then holds unspecified values, and the model, its pool
    /// and `scratch` serve the next call as before. The panic hook still
    /// runs (it prints the message unless the embedder replaced it); with `panic = "abort"`
    /// the process ends as it would anywhere.
    pub fn forward(
        &self,
        input: &[f32],
        batch: usize,
        scratch: &mut Scratch,
        output: &mut [f32],
    ) -> Result<()> {
        self.check(input, batch, output)?;
        // Checked finite inside the pass, chunk by chunk (see `Hooks::first_bad`).
        let first_bad = AtomicUsize::new(usize::MAX);
        let hooks = Hooks {
            first_bad: Some(&first_bad),
            ..Hooks::default()
        };
        self.guarded(|| self.compute(input, batch, scratch, output, hooks))?;
        let width = self.input_size().max(1);
        match first_bad.into_inner() {
            usize::MAX => self.check_output(output),
            i => Err(Error::NonFiniteInput {
                row: i / width,
                index: i % width,
                value: input[i],
            }),
        }
    }

    /// [`Self::forward`] on inputs already checked (sizes, and every value finite).
    fn forward_finite(
        &self,
        input: &[f32],
        batch: usize,
        scratch: &mut Scratch,
        output: &mut [f32],
    ) -> Result<()> {
        self.guarded(|| self.compute(input, batch, scratch, output, Hooks::default()))?;
        self.check_output(output)
    }

    /// NaN or infinite logits would print as a confident answer or as `p = NaN`: an error.
    fn check_output(&self, output: &[f32]) -> Result<()> {
        match first_non_finite(output) {
            None => Ok(()),
            Some(i) => Err(Error::NonFiniteOutput {
                row: i / self.classes().max(1),
                class: i % self.classes().max(1),
                value: output[i],
            }),
        }
    }

    /// `pass()`, with a panic on the calling thread (the pool workers' come back from the
    /// execution layer as its error) made an [`Error::Panicked`]. Unwind safety: the model
    /// is immutable, a scratch holds only buffers every call overwrites before reading, and
    /// the pool's workers caught their panics and its permits were freed on the way out.
    fn guarded(&self, pass: impl FnOnce() -> std::result::Result<(), Panic>) -> Result<()> {
        let panic = match catch_unwind(AssertUnwindSafe(pass)) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(panic)) => panic,
            Err(payload) => {
                let panic = Panic::new("the calling thread".into(), &*payload);
                // A payload whose drop panics must not escape (it would end a batcher).
                let _ = catch_unwind(AssertUnwindSafe(|| drop(payload)));
                panic
            }
        };
        Err(Error::Panicked {
            thread: panic.thread,
            message: panic.message,
        })
    }

    /// The forward pass proper, on checked sizes and finite inputs.
    fn compute(
        &self,
        input: &[f32],
        batch: usize,
        scratch: &mut Scratch,
        output: &mut [f32],
        hooks: Hooks<'_>,
    ) -> std::result::Result<(), Panic> {
        crate::exec::forward(
            &self.layers,
            input,
            batch,
            scratch,
            output,
            self.pool(),
            hooks,
        )
    }

    /// [`Model::forward`] with a naive per-neuron activation dispatch (a function-pointer
    /// call per value, as an ungrouped network must do). For benchmarks only.
    #[doc(hidden)]
    pub fn forward_per_neuron(
        &self,
        input: &[f32],
        batch: usize,
        scratch: &mut Scratch,
        output: &mut [f32],
    ) -> Result<()> {
        self.check(input, batch, output)?;
        type Scalar = fn(f32) -> f32;
        let per_neuron: Vec<Vec<Scalar>> = self
            .layers
            .iter()
            .map(|l| {
                l.blocks
                    .iter()
                    .flat_map(|b| std::iter::repeat_n(b.activation.forward, b.len))
                    .collect()
            })
            .collect();
        let post = |pre: &[f32], layer: &Layer, out: &mut [f32]| {
            let l = self
                .layers
                .iter()
                .position(|x| std::ptr::eq(x, layer))
                .unwrap_or(0);
            let acts = &per_neuron[l];
            for (p, o) in pre
                .chunks_exact(layer.outputs)
                .zip(out.chunks_exact_mut(layer.outputs))
            {
                for (j, (p, o)) in p.iter().zip(o.iter_mut()).enumerate() {
                    *o = acts[j](p + layer.bias[j]);
                }
            }
        };
        let hooks = Hooks {
            post: Some(&post),
            ..Hooks::default()
        };
        self.guarded(|| self.compute(input, batch, scratch, output, hooks))
    }

    /// The class and softmax probabilities of one input row.
    pub fn predict(&self, input: &[f32]) -> Result<Prediction> {
        let mut logits = vec![0.0; self.classes()];
        self.forward(input, 1, &mut Scratch::new(), &mut logits)?;
        Ok(Prediction::from_logits(&logits))
    }

    /// [`Self::predict`] on one raw row (pixels 0-255, or a table row as in its CSV): the
    /// manifest's preprocessing first.
    pub fn predict_raw(&self, raw: &[f32]) -> Result<Prediction> {
        let mut logits = vec![0.0; self.classes()];
        self.forward_raw(raw, 1, &mut Scratch::new(), &mut logits)?;
        Ok(Prediction::from_logits(&logits))
    }

    /// The name of class `c`: the manifest's, else its number.
    pub fn class_name(&self, c: usize) -> String {
        self.manifest
            .class_names
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    }
}

impl Prediction {
    /// The softmax of `logits`, and the class of the largest logit (as `eval` and training
    /// count it: two logits an ulp apart can round to one probability).
    pub fn from_logits(logits: &[f32]) -> Self {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let probabilities: Vec<f32> = exp.iter().map(|e| e / sum).collect();
        let class = smartmixed_core::math::argmax(logits);
        Prediction {
            class,
            probabilities,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn model_is_send_and_sync() {
        assert_send_sync::<Model>();
    }

    /// The blocked search finds what `position` finds: each kind of non-finite value at
    /// block edges and inside, a later one too; the largest finite, subnormal and negative
    /// zero values are finite.
    #[test]
    fn first_non_finite_agrees_with_position() {
        let mut clean: Vec<f32> = (0..3000).map(|i| i as f32 - 1500.0).collect();
        clean[5] = f32::MAX;
        clean[6] = f32::MIN;
        clean[7] = f32::from_bits(1);
        clean[8] = -0.0;
        assert_eq!(first_non_finite(&clean), None);
        assert_eq!(first_non_finite(&[]), None);
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 1, 1023, 1024, 1025, 2047, 2048, 2999] {
                let mut v = clean.clone();
                v[at] = bad;
                v[(at + 1100).min(2999)] = f32::NAN;
                let expected = v.iter().position(|x| !x.is_finite());
                assert_eq!(first_non_finite(&v), expected, "{bad} at {at}");
                assert_eq!(expected, Some(at));
            }
        }
    }
}
