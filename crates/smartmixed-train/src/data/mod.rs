//! Data: IDX files, the MNIST directory layout, the stratified split and batching.

mod dataset;
mod idx;

pub use dataset::{Batch, Dataset, Splits};
pub use idx::{read_idx, IdxArray};
