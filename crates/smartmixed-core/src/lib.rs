//! SmartMixed's shared vocabulary: what the trainer and the runtime both need (the
//! activation registry, the exported model's manifest, the tensor file, the floating-point
//! mode, the error type). Kept free of dfdx so the embeddable runtime can build on it; the
//! training and sweep configs live in `smartmixed-train`.

pub mod activation;
pub mod builtin;
mod error;
pub mod fpenv;
pub mod manifest;
pub mod math;
mod phase;
pub mod tensorfile;
/// Only for tests (core's own and activation authors'): enable the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tomlerr;

pub use activation::{apply_blocks, lookup, registered_names, Activation, Block};
pub use error::{Error, Result};
pub use manifest::{GroupManifest, InputKind, InputManifest, LayerManifest, Manifest};
pub use phase::Phase;
pub use tomlerr::toml_error;

/// Re-exported so that [`register_activation!`] works in crates that do not depend on
/// `inventory` themselves.
#[doc(hidden)]
pub use inventory;

/// The largest config, sweep config or manifest read (1 MiB): endless inputs such as
/// `/dev/zero` stop there.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;

/// The paper's pool, in the paper's order.
pub const PAPER_POOL: [&str; 6] = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu"];
