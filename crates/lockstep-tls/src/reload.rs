//! A configuration rebuilt when its files change.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Error;

type Build<T> = Box<dyn Fn() -> Result<T, Error> + Send + Sync>;

struct State<T> {
    current: Arc<T>,
    /// The files' contents when `current` was built.
    contents: Vec<Option<Vec<u8>>>,
}

/// A configuration built from files, rebuilt by [`Reloading::reload_if_changed`] when any of
/// them changed. Connections take [`Reloading::current`] when they start, so a rebuild affects
/// only connections made after it.
pub struct Reloading<T> {
    files: Vec<PathBuf>,
    build: Build<T>,
    state: Mutex<State<T>>,
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T> Reloading<T> {
    /// Builds the configuration now; an error if it cannot be.
    pub fn new(
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, Error> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, Error> {
        let contents = read_all(&files);
        let current = Arc::new(build()?);
        Ok(Reloading {
            files,
            build: Box::new(build),
            state: Mutex::new(State { current, contents }),
        })
    }

    /// The configuration for a connection starting now.
    pub fn current(&self) -> Arc<T> {
        lock(&self.state).current.clone()
    }

    /// Rebuilds the configuration if any of its files changed since it was built. `Ok(true)`
    /// when it was rebuilt; on an error the configuration in use stays (a half-written file
    /// is tried again at the next call).
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
        let contents = read_all(&self.files);
        if contents == lock(&self.state).contents {
            return Ok(false);
        }
        let rebuilt = Arc::new((self.build)()?);
        let mut state = lock(&self.state);
        state.current = rebuilt;
        state.contents = contents;
        Ok(true)
    }

    /// The files it is built from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("files", &self.files).finish()
    }
}

fn read_all(files: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|path| std::fs::read(path).ok()).collect()
}
