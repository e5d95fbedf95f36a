//! The runtime's and the trainer's errors as Python exceptions: the one-line message,
//! as `ValueError` for anything wrong with the input (files, arrays, configs), `OSError`
//! for files that cannot be read or written, `RuntimeError` for failures of the machine.

use pyo3::exceptions::{
    PyKeyboardInterrupt, PyMemoryError, PyOSError, PyRuntimeError, PyValueError,
};
use pyo3::PyErr;

/// A runtime error.
pub fn infer(e: smartmixed_infer::Error) -> PyErr {
    use smartmixed_infer::Error as E;
    let message = e.to_string();
    match e {
        E::Io { .. } => PyOSError::new_err(message),
        E::OutOfMemory { .. } => PyMemoryError::new_err(message),
        E::Panicked { .. } | E::Thread(_) => PyRuntimeError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// The trainer's advice in the CLI's words (its flags), in the Python functions' (their
/// parameters).
const PYTHON_WORDS: [(&str, &str); 2] = [
    ("pass --force to replace", "pass force=True to replace"),
    ("choose another --out", "choose another `out`"),
];

/// A trainer error.
pub fn train(e: smartmixed_train::Error) -> PyErr {
    use smartmixed_train::Error as E;
    let message = PYTHON_WORDS
        .iter()
        .fold(e.to_string(), |m, (cli, python)| m.replace(cli, python));
    match e {
        E::Io { .. } => PyOSError::new_err(message),
        E::Interrupted => PyKeyboardInterrupt::new_err(message),
        E::NonFiniteLoss { .. }
        | E::NonFiniteEvaluation { .. }
        | E::NonFiniteLogits { .. }
        | E::Device(_) => PyRuntimeError::new_err(message),
        _ => PyValueError::new_err(message),
    }
}

/// A core error (configs are validated there).
pub fn core(e: smartmixed_core::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}
