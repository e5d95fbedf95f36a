//! Atomic writes (`smartmixed_core::fsutil`) with the trainer's error, naming the file.

use std::path::Path;

use crate::{Error, Result};

/// [`smartmixed_core::fsutil::write_atomic`], its failure naming `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    smartmixed_core::fsutil::write_atomic(path, bytes)
        .map_err(|e| Error::io(path, "cannot write", e))
}
