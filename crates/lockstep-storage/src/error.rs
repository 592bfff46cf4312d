//! The I/O failure every storage error can carry: what was being done, to which file.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// An I/O operation that failed, with the file or directory it was done to.
#[derive(Debug)]
pub struct IoFailure {
    /// What was being done ("sync", "rename", ...).
    pub operation: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The error the system gave.
    pub source: io::Error,
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} {}: {}", self.operation, self.path.display(), self.source)
    }
}

impl std::error::Error for IoFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps an `io::Error` from `operation` on `path`: `.map_err(io_failure("sync", path))?`.
pub(crate) fn io_failure(
    operation: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> IoFailure {
    let path = path.to_path_buf();
    move |source| IoFailure { operation, path, source }
}
