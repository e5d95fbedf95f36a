//! SmartMixed training on dfdx: data, the two hidden-layer ops, models, both phases,
//! checkpoints and run directories.

pub mod checkpoint;
pub mod data;
mod error;
pub mod export;
mod fsutil;
pub mod kernels;
mod matmul;
pub mod memory;
pub mod model;
pub mod ops;
pub mod optim;
pub mod pool;
mod recycle;
pub mod resume;
pub mod rundir;
pub mod trainer;

pub use error::{Error, Result};

/// The devices a run trains on, re-exported so that callers need not depend on dfdx.
pub use dfdx::tensor::Cpu;
#[cfg(feature = "cuda")]
pub use dfdx::tensor::Cuda;
