//! The one error type of `smartmixed-train`; every variant renders as one line that names
//! the file (and field or byte offset) at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading data, training or saving.
/// `#[non_exhaustive]`: new failure modes are added without breaking callers' matches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Core(#[from] smartmixed_core::Error),
    /// A file that cannot be opened, read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A data file whose content is wrong; `offset` is the byte offset in the
    /// (decompressed) file.
    #[error("{}: byte {offset}: {message}", path.display())]
    Data {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    /// Data that is fine alone but does not fit the config or the other files.
    #[error("{}: {message}", path.display())]
    Mismatch { path: PathBuf, message: String },
    /// A checkpoint that is not what this trainer wrote.
    #[error("{}: invalid checkpoint: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// The loss stopped being finite; the last good checkpoint is kept.
    #[error("{phase} epoch {epoch} batch {batch}: loss is {loss}; stopped (the best checkpoint so far is kept in the run directory)")]
    NonFiniteLoss {
        phase: smartmixed_core::Phase,
        epoch: usize,
        batch: usize,
        loss: f32,
    },
    /// Phase 1's logits stopped being finite while the loss stayed finite (the forward
    /// pass uses their argmax, which a NaN turns into the pool's first entry everywhere).
    #[error("{phase} epoch {epoch}: a logit of hidden layer {layer} is {value}: the logits' Adam updates overflowed f32 (lower phase1.logit_lr, or phase1.lr where logit_lr is unset); stopped (the best checkpoint so far is kept in the run directory)")]
    NonFiniteLogits {
        phase: smartmixed_core::Phase,
        epoch: usize,
        /// 1-based.
        layer: usize,
        value: f32,
    },
    /// The loss on the validation or test set is not finite: the network's outputs
    /// overflowed there (the inputs are checked finite when loaded).
    #[error("{phase} epoch {epoch}: the {set} loss is {loss}: the network's outputs overflow on {set} items; stopped (the best checkpoint so far is kept in the run directory)")]
    NonFiniteEvaluation {
        phase: smartmixed_core::Phase,
        epoch: usize,
        set: &'static str,
        loss: f64,
    },
    /// The training device failed (allocation, a CUDA call).
    #[error("device error: {0}")]
    Device(String),
    /// The user asked to stop (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

/// `Result` with the trainer's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
