//! The embeddable SmartMixed runtime: loads `model.safetensors` plus `manifest.toml`,
//! validates both, and runs grouped inference: per layer one matmul, then one pass that
//! adds the bias and applies each activation to its contiguous block of neurons.
//!
//! ```no_run
//! use smartmixed_infer::{Model, Scratch};
//!
//! let model = Model::load_dir("exported/")?;          // Send + Sync: share it in an Arc
//! let mut scratch = Scratch::new();                    // per caller: buffers, reused
//! let batch = 32;
//! let input = vec![0.0f32; batch * model.input_size()];
//! let mut logits = vec![0.0f32; batch * model.classes()];
//! model.forward(&input, batch, &mut scratch, &mut logits)?; // no allocation once warm
//! let p = model.predict(&input[..model.input_size()])?;
//! println!("class {} with probability {:.3}", p.class, p.probabilities[p.class]);
//! # Ok::<(), smartmixed_infer::Error>(())
//! ```
//!
//! Activations are looked up by name in the `smartmixed-core` registry, so plugin
//! activations work when their crate is linked.

#[cfg(target_arch = "x86_64")]
mod amx;
mod batched;
mod bf16;
mod error;
mod exec;
mod fast_act;
mod int8;
mod kernel;
mod model;
mod packed;

pub use batched::{
    BatchOptions, BatchStats, BatchedModel, Ticket, BATCH_BUCKETS, MAX_BATCH_ROWS, MAX_QUEUE,
    MAX_REGATHER, MAX_WAIT,
};
pub use error::{Error, Result};
pub use exec::{Pool, Scratch, MAX_THREADS};
pub use kernel::Kernel;
pub use model::{
    LoadOptions, Model, Precision, Prediction, MANIFEST_FILE, MANIFEST_METADATA_KEY,
    MAX_BATCH_VALUES, WEIGHTS_FILE,
};
/// Core types that appear in this crate's API, so an embedder depends on this crate alone.
pub use smartmixed_core::{
    fpenv, register_activation, Activation, Error as CoreError, GroupManifest, InputManifest,
    LayerManifest, Manifest,
};

/// The README's Rust examples, compiled as doc tests so they stay correct.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
