//! `smartmixed.Model`: an exported model on the runtime. Inputs are numpy arrays of raw
//! values (the manifest's preprocessing is applied, bit for bit as `forward_raw` does); a
//! C-contiguous, aligned float32 or float64 array is read in place, anything else is copied once;
//! the GIL is released while the preprocessing and the forward pass run.

use std::path::PathBuf;
use std::sync::Mutex;

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use smartmixed_core::manifest::{InputKind, InputManifest, MANIFEST_FILE, WEIGHTS_FILE};
use smartmixed_infer::{Pool, Scratch};

use crate::errors;

/// The fewest rows a forward pass is given (see [`Model::forward`]).
const MIN_ROWS: usize = 4;

/// A loaded SmartMixed model (immutable; share it between threads).
#[pyclass(frozen, module = "smartmixed._native")]
pub struct Model {
    inner: smartmixed_infer::Model,
    /// Buffers of earlier calls (the runtime's, and the preprocessed rows), reused (fresh
    /// ones for a 10 000-row batch cost their page faults again); one pair per concurrent
    /// caller at most.
    scratches: Mutex<Vec<(Scratch, Vec<f32>)>>,
}

/// The model's calls on `threads` threads of their own, or on the process's shared pool.
fn pooled(model: smartmixed_infer::Model, threads: Option<usize>) -> PyResult<Model> {
    let inner = match threads {
        Some(0) => {
            return Err(PyValueError::new_err(
                "threads = 0, expected at least 1 (or None: every core)",
            ))
        }
        Some(n) => model.with_pool(Pool::new(n).map_err(errors::infer)?),
        None => model,
    };
    Ok(Model {
        inner,
        scratches: Mutex::new(Vec::new()),
    })
}

/// `x`'s values, row-major: borrowed when `x` is C-contiguous and aligned (float32 or
/// float64; a misaligned array is borrowed from numpy's aligned copy).
enum Rows<'py> {
    F32(numpy::PyReadonlyArrayDyn<'py, f32>),
    F64(numpy::PyReadonlyArrayDyn<'py, f64>),
    Owned(Vec<f32>),
}

/// A borrowed array that is not contiguous after all (its checks said it was).
fn slice_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

impl Rows<'_> {
    fn raw(&self) -> PyResult<Raw<'_>> {
        Ok(match self {
            Rows::F32(a) => Raw::F32(a.as_slice().map_err(slice_error)?),
            Rows::F64(a) => Raw::F64(a.as_slice().map_err(slice_error)?),
            Rows::Owned(v) => Raw::F32(v),
        })
    }
}

/// Raw values as numpy holds them; read without the GIL.
#[derive(Clone, Copy)]
enum Raw<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl<'a> Raw<'a> {
    fn len(self) -> usize {
        match self {
            Raw::F32(v) => v.len(),
            Raw::F64(v) => v.len(),
        }
    }

    fn range(self, r: std::ops::Range<usize>) -> Raw<'a> {
        match self {
            Raw::F32(v) => Raw::F32(&v[r]),
            Raw::F64(v) => Raw::F64(&v[r]),
        }
    }

    /// The values as f32 into `out` (as long): float64 rounded to nearest, values beyond
    /// f32's range infinite (the runtime refuses them by row).
    fn write_f32(self, out: &mut [f32]) {
        match self {
            Raw::F32(v) => out.copy_from_slice(v),
            Raw::F64(v) => {
                for (o, &x) in out.iter_mut().zip(v) {
                    *o = x as f32;
                }
            }
        }
    }

    /// The values as an f32 vector (the slow path that reports a bad value).
    fn to_f32(self) -> Vec<f32> {
        let mut v = vec![0.0; self.len()];
        self.write_f32(&mut v);
        v
    }
}

/// The values one preprocessing step handles at a time (64 KiB of f32: the raw copy, the
/// check and the arithmetic stay in L2 between them).
const BLOCK_VALUES: usize = 16 * 1024;

/// From this many values the preprocessing is split over the model's threads (a thread
/// start costs tens of microseconds; 10k MNIST rows are 7.8M values, ~10 ms on one thread).
const PARALLEL_FROM: usize = 1 << 18;

/// Whether every value is finite: an AND of exponent tests, which vectorises (unlike
/// `position`).
fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    values
        .iter()
        .fold(true, |ok, v| ok & (v.to_bits() & EXPONENT != EXPONENT))
}

/// `raw` (rows of `width`) preprocessed by `input` into `out`, as `forward_raw` computes
/// it (the same `apply_in_place` on whole rows, so the same bits), in one pass over blocks
/// of rows; false if a raw or preprocessed value is not finite (`forward_raw` then names
/// it). Split by rows over up to `threads` threads.
fn preprocess(
    input: &InputManifest,
    raw: Raw<'_>,
    width: usize,
    out: &mut [f32],
    threads: usize,
) -> bool {
    let width = width.max(1);
    let block = (BLOCK_VALUES / width).max(1) * width;
    let part = |raw: Raw<'_>, out: &mut [f32]| {
        let mut ok = true;
        for (start, chunk) in (0..).step_by(block).zip(out.chunks_mut(block)) {
            raw.range(start..start + chunk.len()).write_f32(chunk);
            ok &= all_finite(chunk);
            input.apply_in_place(chunk);
            ok &= all_finite(chunk);
        }
        ok
    };
    let threads = if raw.len() < PARALLEL_FROM {
        1
    } else {
        threads.max(1)
    };
    let rows = raw.len() / width;
    let per = rows.div_ceil(threads) * width;
    if threads == 1 || per == 0 {
        return part(raw, out);
    }
    std::thread::scope(|s| {
        let mut parts = out.chunks_mut(per).enumerate();
        let (_, first) = parts.next().unwrap_or_default();
        let first_len = first.len();
        let mut helpers = Vec::new();
        // A thread that cannot start (or panics) leaves its part undone: false, and the
        // caller's `forward_raw` then computes everything itself.
        let mut ok = true;
        for (i, chunk) in parts {
            let raw = raw.range(i * per..i * per + chunk.len());
            match std::thread::Builder::new().spawn_scoped(s, move || part(raw, chunk)) {
                Ok(h) => helpers.push(h),
                Err(_) => ok = false,
            }
        }
        ok &= part(raw.range(0..first_len), first);
        for h in helpers {
            ok &= h.join().unwrap_or(false);
        }
        ok
    })
}

impl Model {
    /// The shapes `x` may have, as a message names them.
    fn expected(&self) -> String {
        let width = self.inner.input_size();
        match self.inner.input_description().kind() {
            InputKind::Table => format!("(n, {width}) for a table of {width} features"),
            InputKind::Image { height, width: w, channels: 1 } => {
                format!("(n, {height}, {w}), (n, {height}, {w}, 1) or (n, {width}) for {height}x{w} images")
            }
            InputKind::Image { height, width: w, channels } => format!(
                "(n, {height}, {w}, {channels}) or (n, {width}) for {height}x{w} images of {channels} channels"
            ),
            InputKind::Flat => format!("(n, {width})"),
        }
    }

    /// The number of rows of `shape`, if it is a shape this model takes.
    fn rows_of(&self, shape: &[usize]) -> Option<usize> {
        let width = self.inner.input_size();
        let (n, item) = shape.split_first()?;
        let fits = match self.inner.input_description().kind() {
            InputKind::Table | InputKind::Flat => item == [width],
            InputKind::Image {
                height,
                width: w,
                channels: 1,
            } => item == [width] || item == [height, w] || item == [height, w, 1],
            InputKind::Image {
                height,
                width: w,
                channels,
            } => item == [width] || item == [height, w, channels],
        };
        fits.then_some(*n)
    }

    /// Checks `x`'s dtype and shape; its rows, read in place where possible.
    fn rows<'py>(&self, x: &Bound<'py, PyAny>) -> PyResult<(usize, Rows<'py>)> {
        let shape_of = |s: &[usize]| {
            let n = self.rows_of(s).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "input has shape {s:?}, expected {}",
                    self.expected()
                ))
            })?;
            Ok::<usize, PyErr>(n)
        };
        if let Ok(a) = x.cast::<PyArrayDyn<f32>>() {
            let n = shape_of(a.shape())?;
            if !a.is_aligned() {
                // (A view at an odd byte offset: `np.frombuffer(b, offset=1)`.) numpy's
                // copy is aligned and C-contiguous.
                let copy = a.call_method0("copy")?.cast_into::<PyArrayDyn<f32>>()?;
                return Ok((n, Rows::F32(copy.readonly())));
            }
            let ro = a.readonly();
            if a.is_c_contiguous() {
                return Ok((n, Rows::F32(ro)));
            }
            return Ok((n, Rows::Owned(ro.as_array().iter().copied().collect())));
        }
        if let Ok(a) = x.cast::<PyArrayDyn<f64>>() {
            let n = shape_of(a.shape())?;
            if !a.is_aligned() {
                let copy = a.call_method0("copy")?.cast_into::<PyArrayDyn<f64>>()?;
                return Ok((n, Rows::F64(copy.readonly())));
            }
            let ro = a.readonly();
            if a.is_c_contiguous() {
                return Ok((n, Rows::F64(ro)));
            }
            // Values beyond f32's range become infinite: the runtime refuses them by row.
            return Ok((
                n,
                Rows::Owned(ro.as_array().iter().map(|&v| v as f32).collect()),
            ));
        }
        let what = match x.getattr("dtype") {
            Ok(d) if x.is_instance_of::<numpy::PyUntypedArray>() => {
                format!("an array of dtype {d}")
            }
            // A numpy scalar (`np.float32(1)`) has a dtype too.
            Ok(_) => format!("a numpy scalar ({}), not an array", x.get_type().name()?),
            Err(_) => format!("a {}", x.get_type().name()?),
        };
        Err(PyValueError::new_err(format!(
            "input is {what}, expected a numpy array of float32 or float64 (x.astype(numpy.float32))"
        )))
    }

    /// Logits `[n, classes]` of `x`, computed with the GIL released: the raw values read in
    /// place, preprocessed in one pass split over the model's threads (`forward_raw` does it
    /// on the calling thread in four passes: a third of a 10k-row MNIST call), then the
    /// runtime's `forward`; any value that is not finite is left to `forward_raw`, so the
    /// error is the runtime's own.
    fn forward(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
        let (n, rows) = self.rows(x)?;
        let raw = rows.raw()?;
        let classes = self.inner.classes();
        let width = self.inner.input_size();
        let len = n.checked_mul(classes).ok_or_else(|| {
            PyValueError::new_err(format!("{n} rows x {classes} classes overflow"))
        })?;
        if n == 0 {
            return Ok(Vec::new());
        }
        // Under MIN_ROWS rows the runtime takes its GEMV, which agrees with the matmul
        // within 1e-5 only: padded with copies of the last row, every row gets the bits it
        // gets in any larger batch (scikit-learn checks that batches do not matter).
        let batch = n.max(MIN_ROWS);
        let threads = self.inner.pool().threads();
        py.detach(|| {
            let mut out = vec![0.0f32; batch * classes];
            let taken = self.scratches.lock().ok().and_then(|mut s| s.pop());
            let (mut scratch, mut buffer) = taken.unwrap_or_default();
            if buffer.len() < batch * width {
                // Zero pages (calloc), faulted in by the threads that preprocess into them.
                buffer = vec![0.0; batch * width];
            }
            let pre = &mut buffer[..batch * width];
            let result = if preprocess(
                self.inner.input_description(),
                raw,
                width,
                &mut pre[..raw.len()],
                threads,
            ) {
                let (rows, pad) = pre.split_at_mut(raw.len());
                for copy in pad.chunks_exact_mut(width.max(1)) {
                    copy.copy_from_slice(&rows[rows.len() - width..]);
                }
                self.inner.forward(pre, batch, &mut scratch, &mut out)
            } else {
                let mut values = raw.to_f32();
                let last = values[values.len() - width..].to_vec();
                for _ in n..batch {
                    values.extend_from_slice(&last);
                }
                self.inner
                    .forward_raw(&values, batch, &mut scratch, &mut out)
            };
            if let Ok(mut s) = self.scratches.lock() {
                s.push((scratch, buffer));
            }
            result?;
            out.truncate(len);
            Ok(out)
        })
        .map_err(errors::infer)
    }
}

/// Softmax of each row of `logits` (`classes` wide), in place.
fn softmax_rows(logits: &mut [f32], classes: usize) {
    for row in logits.chunks_exact_mut(classes.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// `values` as a numpy array of rows of `width`.
fn matrix<'py>(py: Python<'py>, values: Vec<f32>, width: usize) -> PyResult<Bound<'py, PyAny>> {
    let rows = values.len() / width.max(1);
    Ok(PyArray1::from_vec(py, values)
        .reshape([rows, width])?
        .into_any())
}

#[pymethods]
impl Model {
    /// Loads `dir/model.safetensors` and `dir/manifest.toml`; `threads` threads of its own
    /// (`None`: the process's pool, one thread per core).
    #[staticmethod]
    #[pyo3(signature = (dir, threads=None))]
    fn load(py: Python<'_>, dir: &Bound<'_, PyAny>, threads: Option<usize>) -> PyResult<Self> {
        // str, bytes or os.PathLike, as `open` takes them (a TypeError for anything else).
        let dir: PathBuf = py
            .import("os")?
            .getattr("fsdecode")?
            .call1((dir,))?
            .extract()?;
        for name in [WEIGHTS_FILE, MANIFEST_FILE] {
            let path = dir.join(name);
            // A FIFO would block the read forever, a device read without end.
            if let Ok(meta) = std::fs::metadata(&path) {
                if !meta.is_file() && !meta.is_dir() {
                    return Err(PyOSError::new_err(format!(
                        "{}: not a regular file (a FIFO, socket or device), expected the model's {name}",
                        path.display()
                    )));
                }
            }
        }
        let model = py
            .detach(|| smartmixed_infer::Model::load_dir(&dir))
            .map_err(errors::infer)?;
        pooled(model, threads)
    }

    /// A model from the bytes of its `model.safetensors` (the manifest in its metadata, as
    /// every export writes it).
    #[staticmethod]
    #[pyo3(signature = (weights, threads=None))]
    fn from_bytes(weights: &Bound<'_, PyAny>, threads: Option<usize>) -> PyResult<Self> {
        let copy;
        let bytes = if let Ok(b) = weights.cast::<PyBytes>() {
            b.as_bytes()
        } else if weights.is_instance_of::<PyByteArray>()
            || weights.is_instance_of::<PyMemoryView>()
        {
            // (The buffer protocol is not in the abi3 API before Python 3.11: one copy.)
            copy = weights.py().get_type::<PyBytes>().call1((weights,))?;
            copy.cast::<PyBytes>()?.as_bytes()
        } else {
            return Err(PyTypeError::new_err(format!(
                "weights is a {}, expected bytes, bytearray or memoryview (a model.safetensors file's contents)",
                weights.get_type().name()?
            )));
        };
        let model = smartmixed_infer::Model::from_safetensors(bytes).map_err(errors::infer)?;
        pooled(model, threads)
    }

    /// Logits `[n, classes]` (float32) of raw inputs `x`.
    fn logits<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let out = self.forward(py, x)?;
        let c = self.inner.classes();
        matrix(py, out, c)
    }

    /// Class probabilities `[n, classes]` (float32, softmax of the logits).
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut out = self.forward(py, x)?;
        let c = self.inner.classes();
        softmax_rows(&mut out, c);
        matrix(py, out, c)
    }

    /// The class index of each row (int64; `classes[i]` names it): the first largest logit.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let out = self.forward(py, x)?;
        let c = self.inner.classes().max(1);
        let best: Vec<i64> = out
            .chunks_exact(c)
            .map(|row| smartmixed_core::math::argmax(row) as i64)
            .collect();
        Ok(PyArray1::from_vec(py, best))
    }

    /// The class names, in output order (the class numbers where the manifest names none).
    #[getter]
    fn classes(&self) -> Vec<String> {
        (0..self.inner.classes())
            .map(|c| self.inner.class_name(c))
            .collect()
    }

    /// One input: `shape`, `kind` ("table", "image" or "flat"), `features` (its width),
    /// and the preprocessing `(raw / divisor - mean) / std` with `feature_names`.
    #[getter]
    fn input<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let input = self.inner.input_description();
        let d = PyDict::new(py);
        d.set_item("shape", input.shape.clone())?;
        let kind = match input.kind() {
            InputKind::Table => "table",
            InputKind::Image { .. } => "image",
            InputKind::Flat => "flat",
        };
        d.set_item("kind", kind)?;
        d.set_item("features", self.inner.input_size())?;
        d.set_item("divisor", input.divisor)?;
        d.set_item("mean", input.mean.clone())?;
        d.set_item("std", input.std.clone())?;
        d.set_item("feature_names", input.feature_names.clone())?;
        Ok(d)
    }

    /// Per hidden layer, `(activation, neurons)` for each group in storage order.
    #[getter]
    fn groups(&self) -> Vec<Vec<(String, usize)>> {
        self.inner
            .group_sizes()
            .into_iter()
            .map(|l| l.into_iter().map(|(a, n)| (a.to_string(), n)).collect())
            .collect()
    }

    /// The threads this model's calls may use.
    #[getter]
    fn threads(&self) -> usize {
        self.inner.pool().threads()
    }

    /// The manifest as TOML text.
    #[getter]
    fn manifest(&self) -> String {
        self.inner.manifest().to_toml()
    }

    fn __repr__(&self) -> String {
        let widths: Vec<String> = self
            .inner
            .manifest()
            .layers
            .iter()
            .map(|l| l.outputs.to_string())
            .collect();
        format!(
            "smartmixed.Model({} inputs -> {}, {} classes)",
            self.inner.input_size(),
            widths.join("-"),
            self.inner.classes()
        )
    }
}
