//! The runtime's error type: every way a model file or a call can be wrong.

use std::path::PathBuf;

/// Why loading or running a model failed.
/// `#[non_exhaustive]`: new failure modes are added without breaking callers' matches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An error in a named file (loading from paths).
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// Truncated or corrupt safetensors bytes.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    #[error("manifest is not UTF-8")]
    ManifestEncoding,
    /// An invalid manifest or an activation no linked crate registers.
    #[error(transparent)]
    Core(#[from] smartmixed_core::Error),
    #[error("tensor `{0}` missing from the weights")]
    MissingTensor(String),
    #[error("tensor `{name}` has dtype {found}, expected F32")]
    Dtype { name: String, found: String },
    #[error("tensor `{name}` has shape {found:?}, the manifest says {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` holds a NaN or infinite value at element {index}")]
    NonFinite { name: String, index: usize },
    /// Memory for a tensor could not be allocated.
    #[error("cannot allocate {bytes} bytes for {what}")]
    OutOfMemory { what: String, bytes: u128 },
    /// The weights and the manifest describe different networks.
    #[error("manifest and weights disagree: {0}")]
    Mismatch(String),
    #[error("input has {len} values, expected batch {batch} x {inputs} inputs = {}", *batch as u128 * *inputs as u128)]
    InputSize {
        len: usize,
        batch: usize,
        inputs: usize,
    },
    #[error("output has room for {len} values, expected batch {batch} x {classes} classes = {}", *batch as u128 * *classes as u128)]
    OutputSize {
        len: usize,
        batch: usize,
        classes: usize,
    },
    /// An input value that is NaN or infinite: the network's answer would be meaningless.
    #[error("input row {row}, value {index} is {value}, expected a finite number")]
    NonFiniteInput {
        row: usize,
        index: usize,
        value: f32,
    },
    /// A finite raw value that the manifest's preprocessing takes out of f32's range.
    #[error("input row {row}, {feature}: raw value {raw} becomes {value} after the manifest's preprocessing, expected a finite number")]
    NonFinitePreprocessed {
        row: usize,
        feature: String,
        raw: f32,
        value: f32,
    },
    /// Logits that are NaN or infinite (finite inputs so large that a layer overflows).
    #[error("the output for input row {row} is not finite (class {class} scores {value}): the input is outside what the model can compute")]
    NonFiniteOutput {
        row: usize,
        class: usize,
        value: f32,
    },
    /// Code run by the forward pass panicked (an activation from a plugin crate, say) on
    /// the calling thread or a [`crate::Scratch`]'s worker: the call's output is lost, but
    /// the model and the scratch stay usable.
    #[error("the forward pass panicked on {thread}: {message}")]
    Panicked { thread: String, message: String },
    /// A [`crate::BatchedModel`] whose queue has no room for the rows submitted (it holds
    /// at most `capacity`): try later.
    #[error("the request queue is full (it holds at most {capacity} rows)")]
    QueueFull { capacity: usize },
    /// A [`crate::BatchedModel`] that is shutting down takes no more requests.
    #[error("the batcher is shutting down and takes no more requests")]
    ShutDown,
    /// Options of a [`crate::BatchedModel`] out of range.
    #[error("batch options: {field} = {message}")]
    BatchOptions { field: String, message: String },
    /// The OS refused a thread.
    #[error("cannot start a thread: {0}")]
    Thread(String),
    /// A layer too wide for int8: its i32 sums could overflow.
    #[error("tensor `{name}` has {inputs} inputs, more than int8's limit of {limit} (its 32-bit sums could overflow): load it in f32 or bf16")]
    Int8TooWide {
        name: String,
        inputs: usize,
        limit: usize,
    },
    /// A batch whose working buffers would exceed [`crate::MAX_BATCH_VALUES`].
    #[error(
        "batch {batch} needs {values} working values per buffer, more than the limit of {limit}"
    )]
    BatchTooLarge {
        batch: usize,
        values: u128,
        limit: usize,
    },
}

impl Error {
    /// This error with the input row it names (if it names one) set to `row`: a row run
    /// alone (the batcher reruns a failed batch row by row) is row 0 of its own pass, but
    /// the caller knows it by its place among the rows it submitted.
    pub(crate) fn at_row(self, row: usize) -> Self {
        match self {
            Error::NonFiniteInput { index, value, .. } => {
                Error::NonFiniteInput { row, index, value }
            }
            Error::NonFinitePreprocessed {
                feature,
                raw,
                value,
                ..
            } => Error::NonFinitePreprocessed {
                row,
                feature,
                raw,
                value,
            },
            Error::NonFiniteOutput { class, value, .. } => {
                Error::NonFiniteOutput { row, class, value }
            }
            e => e,
        }
    }

    /// Whether the message names an input row.
    pub fn names_a_row(&self) -> bool {
        matches!(
            self,
            Error::NonFiniteInput { .. }
                | Error::NonFinitePreprocessed { .. }
                | Error::NonFiniteOutput { .. }
        )
    }
}

/// `Result` with the runtime's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
