//! SmartMixed training on dfdx: data, the two hidden-layer ops, models, both phases,
//! checkpoints and run directories.

pub mod checkpoint;
pub mod data;
mod error;
pub mod export;
pub mod fsutil;
pub mod kernels;
mod matmul;
pub mod memory;
pub mod model;
pub mod ops;
pub mod optim;
pub mod pool;
pub mod ranking;
mod recycle;
pub mod resume;
pub mod rundir;
pub mod trainer;

pub use error::{Error, Result};
