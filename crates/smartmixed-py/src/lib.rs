//! `smartmixed._native`: the runtime ([`model`]) and the trainer ([`training`]) for the
//! `smartmixed` Python package (python/smartmixed). Built by maturin with the `python`
//! feature; without it the crate is empty, so the workspace builds where Python is absent.

#[cfg(feature = "python")]
mod errors;
#[cfg(feature = "python")]
mod model;
#[cfg(feature = "python")]
mod training;

// Linked so that models whose groups use its activations load and train.
use smartmixed_activations_extra as _;

/// The module's Rust allocations on mimalloc, as the CLI's: a training step allocates and
/// frees a tensor per operation, and glibc's malloc took an eighth of a small fit's
/// training thread (wine; `perf`: `_int_malloc`, `_int_free`, `malloc_consolidate`).
/// Python's own objects keep Python's allocator; nothing allocated here is freed there.
#[cfg(feature = "python")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _native(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    use pyo3::prelude::*;
    m.add_class::<model::Model>()?;
    m.add_function(wrap_pyfunction!(training::train_config, m)?)?;
    m.add_function(wrap_pyfunction!(training::fit_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(training::export_run, m)?)?;
    m.add_function(wrap_pyfunction!(training::with_standardisation, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
