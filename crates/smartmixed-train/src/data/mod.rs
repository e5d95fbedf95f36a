//! Data: in-memory arrays, IDX files, CSV tables, image folders, single PGM/PNG images, the MNIST directory layout, the
//! stratified split and batching.

mod arrays;
mod dataset;
pub mod folder;
mod idx;
pub mod image;
mod precision;
pub mod table;

pub use arrays::{ArrayData, Arrays};
pub use dataset::{Batch, Dataset, Splits};
pub use idx::{read_idx, IdxArray};
pub use precision::ImpreciseColumn;
