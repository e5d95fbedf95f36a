//! SmartMixed training on dfdx: data, the two hidden-layer ops, models, both phases,
//! checkpoints and run directories.
//!
//! The surface is what the CLI and an embedding program use: [`Trainer`] runs a config
//! into a run directory, [`Network`] is a model in either phase, and the modules
//! [`checkpoint`], [`export`], [`data`] and [`rundir`] read and write the files. The
//! kernels, ops and optimiser stay inside; [`internals`] exposes the few pieces the
//! crate's own tests and benches check directly.

pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
mod cuda;
pub mod data;
mod epochs;
mod error;
pub mod export;
pub mod fsutil;
mod kernels;
mod matmul;
mod memory;
mod model;
mod ops;
mod optim;
mod pool;
mod recycle;
pub mod resume;
pub mod rundir;
mod stopping;
mod summary;
pub mod sweep;
mod trainer;

pub use config::{
    AutoTransition, DataConfig, DataFormat, InvalidCells, Mode, ModelConfig, OutputLoss,
    Phase1Config, Phase2Config, Phase2Init, Select, TrainConfig, TrainingConfig, Transition,
};
pub use error::{Error, Result};
pub use model::{Dense, Hidden, Network};
pub use ops::{Matrix, TrainDevice};
pub use optim::Adam;
pub use pool::{capped_threads, TrainPool, MAX_THREADS, THREADS_PER_CORE};
pub use summary::{EarlyEnd, Evaluation, PhaseSummary, Summary};
pub use sweep::{Cell, CellFilter, SweepConfig};
pub use trainer::{check_data_fits, train_step, Progress, Silent, Trainer};

/// The devices a run trains on, re-exported so that callers need not depend on dfdx.
pub use dfdx::tensor::Cpu;
#[cfg(feature = "cuda")]
pub use dfdx::tensor::Cuda;

/// Pieces of the trainer that its integration tests and benchmarks check against their
/// oracles (the device-generic ops, the sampling, the loss). Not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::kernels::{Block, CLAMP};
    pub use crate::model::{argmax_columns, gumbel, step_benchmarks};
    pub use crate::ops::{generic, values, LayerActivation};
    pub use crate::trainer::loss;
}
