//! [`LocalStorage`]: the driver's [`Storage`] over a [`LogStore`], done on the caller's thread.
//!
//! Writes go to the log at once (written, not durable); the caller decides when to
//! [`LocalStorage::sync`] them, and reports the synced writes to the driver. Checkpoints the
//! driver hands over wait until the caller writes them with [`LocalStorage::save_checkpoint`]
//! (the simulator does so at a later event, so applying goes on meanwhile). Any failure is
//! kept: the replica must stop (see [`LocalStorage::failure`]).

use std::io;

use lockstep_core::{InstallSnapshot, LogIndex, Persist, SnapshotMeta, StateSnapshot};

use crate::checkpoint::Checkpoint;
use crate::driver::Storage;
use crate::store::{LogStore, StoreError};

/// A checkpoint handed over by the driver and not yet written.
type PendingCheckpoint = (SnapshotMeta, Box<dyn StateSnapshot>);

/// See the module documentation.
pub struct LocalStorage {
    store: LogStore,
    /// The newest write submitted and not yet synced (0: none).
    submitted: u64,
    failed: Option<String>,
    pending_checkpoint: Option<PendingCheckpoint>,
    sabotage_drop_votes: bool,
    /// Syncs so far: a new commit index alone is stored at every third, as the server's log
    /// thread stores it only now and then (so a crash finds it stale).
    syncs: u64,
}

impl LocalStorage {
    /// Storage over `store`.
    pub fn new(store: LogStore) -> LocalStorage {
        LocalStorage {
            store,
            submitted: 0,
            failed: None,
            pending_checkpoint: None,
            sabotage_drop_votes: false,
            syncs: 0,
        }
    }

    /// The store.
    pub fn store(&self) -> &LogStore {
        &self.store
    }

    /// Why this storage failed, if it did: the replica must stop.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The newest write submitted since the last sync (0: none).
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// The newest write submitted since the last sync, forgetting it (0: none): sync, then
    /// report it with `Driver::write_durable`.
    pub fn take_submitted(&mut self) -> u64 {
        std::mem::take(&mut self.submitted)
    }

    /// Makes every write so far durable, but for a new commit index alone, which is stored at
    /// every third sync only (see [`LogStore::sync_log`]).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.syncs += 1;
        let synced = self.store.sync_log().and_then(|()| match self.syncs % 3 {
            0 => self.store.sync_commit(),
            _ => Ok(()),
        });
        if let Err(error) = &synced {
            self.failed = Some(error.to_string());
        }
        synced
    }

    /// Whether a checkpoint waits to be written.
    pub fn checkpoint_pending(&self) -> bool {
        self.pending_checkpoint.is_some()
    }

    /// The checkpoint waiting to be written, if any.
    pub fn take_checkpoint(&mut self) -> Option<(SnapshotMeta, Box<dyn StateSnapshot>)> {
        self.pending_checkpoint.take()
    }

    /// Writes a checkpoint durably (then report it with `Driver::checkpoint_saved`).
    pub fn save_checkpoint(
        &mut self,
        meta: SnapshotMeta,
        state: &dyn StateSnapshot,
    ) -> Result<(), StoreError> {
        self.store.save_checkpoint(meta, state).map(|_| ())
    }

    /// Stores every hard state without its vote, so a restarted replica can vote twice in a
    /// term. Only for showing that the simulator catches it.
    #[doc(hidden)]
    #[cfg(feature = "sabotage")]
    pub fn sabotage_drop_votes(&mut self) {
        self.sabotage_drop_votes = true;
    }
}

impl Storage for LocalStorage {
    fn submit(&mut self, write: u64, mut persist: Persist) {
        if self.failed.is_some() {
            return;
        }
        if cfg!(feature = "sabotage") && self.sabotage_drop_votes {
            if let Some(hard_state) = &mut persist.hard_state {
                hard_state.vote = None;
            }
        }
        match self.store.write(&persist) {
            Ok(()) => self.submitted = write,
            Err(error) => self.failed = Some(error.to_string()),
        }
    }

    fn command_bytes_max(&self) -> u64 {
        self.store.command_bytes_max()
    }

    fn start_checkpoint(&mut self, meta: SnapshotMeta, state: Box<dyn StateSnapshot>) {
        self.pending_checkpoint = Some((meta, state));
    }

    fn latest_checkpoint(&self) -> Option<Checkpoint> {
        self.store.latest_checkpoint()
    }

    fn read_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, String> {
        self.store.read_checkpoint(checkpoint, offset, len)
    }

    fn compact(&mut self, index: LogIndex) {
        if let Err(error) = self.store.compact(index) {
            self.failed = Some(error.to_string());
        }
    }

    fn receive_snapshot_chunk(&mut self, chunk: &InstallSnapshot) -> Result<u64, String> {
        self.store.receive_chunk(chunk)
    }

    fn snapshot_bytes_received(&self) -> u64 {
        self.store.snapshot_bytes_received()
    }

    fn finish_snapshot(&mut self) -> Result<Box<dyn io::Read>, String> {
        self.store.finish_received()
    }

    fn received_snapshot_reader(&mut self) -> Result<Box<dyn io::Read>, String> {
        self.store.received_reader()
    }

    fn abandon_snapshot(&mut self) {
        self.store.abandon_received();
    }
}
