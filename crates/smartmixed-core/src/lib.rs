//! SmartMixed's shared vocabulary: the activation registry, the training config, the
//! exported model's manifest and the error type. Kept free of dfdx so the embeddable runtime can build on it.

pub mod activation;
mod builtin;
pub mod config;
mod error;
pub mod fpenv;
pub mod fsutil;
pub mod manifest;
pub mod math;
mod phase;
pub mod sweep;
pub mod tensorfile;
pub mod testing;

pub use activation::{apply_blocks, lookup, registered_names, Activation, Block};
pub use config::{
    AutoTransition, DataConfig, DataFormat, InvalidCells, Mode, ModelConfig, OutputLoss,
    Phase1Config, Phase2Config, Phase2Init, Select, TrainConfig, TrainingConfig, Transition,
};
pub use error::{Error, Result};
pub use manifest::{GroupManifest, InputKind, InputManifest, LayerManifest, Manifest};
pub use phase::Phase;
pub use sweep::{Cell, CellFilter, SweepConfig};

/// Re-exported so that [`register_activation!`] works in crates that do not depend on
/// `inventory` themselves.
#[doc(hidden)]
pub use inventory;

/// The largest config, sweep config or manifest read (1 MiB): endless inputs such as
/// `/dev/zero` stop there.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;

/// The paper's pool, in the paper's order.
pub const PAPER_POOL: [&str; 6] = ["relu", "sigmoid", "tanh", "leaky_relu", "elu", "selu"];
