//! [`ThreadedStorage`]: the driver's storage on a log thread, with group commit.
//!
//! The driver hands each write to the log thread and goes on (sending what need not wait,
//! applying, answering). The log thread takes every write queued since its last sync, writes
//! them all, syncs once (the log, and the hard state if its term or vote changed), and reports
//! the newest of them durable: under load one `fdatasync` covers many writes. A new commit
//! index alone is stored after the report, at most every 50 ms (see `LogStore::sync_log`). Checkpoints are written on the same
//! checkpoint thread: the store is locked only to start one and to record it, never while the
//! state is written out, so log syncs go on meanwhile.
//!
//! Snapshot files (reading chunks to send, receiving chunks, finishing a received snapshot)
//! are handled on the driver's thread under the same lock; they are rare and short. Nothing the
//! driver does at every checkpoint waits for that lock (it may wait behind a slow sync): the
//! log is compacted on the log thread after its next sync, and the latest checkpoint is kept
//! apart, under a lock of its own. The checkpoint thread runs at a lower priority than the
//! others, so that writing a large state out takes the CPU the replica thread leaves.
//!
//! Reports go through `report`, which must never block (the server sends them on an
//! unbounded channel): the log thread must not wait on the replica thread while it holds the
//! store, and it finishes every queued write even when nobody listens any more.

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use lockstep_core::{InstallSnapshot, LogIndex, Persist, SnapshotMeta, StateSnapshot};
use lockstep_node::{write_checkpoint, Checkpoint, LogStore, Storage};

/// What the log thread reports to the replica.
pub enum StorageReport {
    /// Every write up to this one is durable.
    Durable(u64),
    /// A checkpoint is durable.
    CheckpointSaved(SnapshotMeta),
    /// A checkpoint could not be written (the replica goes on; it retries later).
    CheckpointFailed(String),
    /// A write or sync failed: what is on disk is unknown, the replica must stop.
    Failed(String),
}

type Report = Arc<dyn Fn(StorageReport) -> bool + Send + Sync>;

enum Job {
    Write(u64, Persist),
    /// Drop the log through this index (a durable checkpoint covers it).
    Compact(LogIndex),
}

/// See the module documentation.
pub struct ThreadedStorage {
    store: Arc<Mutex<LogStore>>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    checkpoints: Option<mpsc::Sender<(SnapshotMeta, Box<dyn StateSnapshot>)>>,
    checkpoint_thread: Option<JoinHandle<()>>,
    /// The latest durable checkpoint, as the store last said (see the module documentation).
    latest: Arc<Mutex<Option<Checkpoint>>>,
    command_bytes_max: u64,
    /// Test only: reports every write durable as it is submitted.
    early_ack: Option<Report>,
}

fn lock<T>(store: &Mutex<T>) -> MutexGuard<'_, T> {
    store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records the store's latest checkpoint where the replica thread reads it.
fn note_latest(store: &LogStore, latest: &Mutex<Option<Checkpoint>>) {
    *lock(latest) = store.latest_checkpoint();
}

/// Nice value of the checkpoint thread: it yields the CPU to the replica and log threads.
const CHECKPOINT_THREAD_NICE: i32 = 10;

impl ThreadedStorage {
    /// Starts the log thread over `store`; it reports through `report` (which returns false
    /// once nobody listens; the thread still finishes every write queued).
    pub fn start(store: LogStore, report: Report) -> io::Result<ThreadedStorage> {
        ThreadedStorage::start_with(store, report, false)
    }

    /// As [`ThreadedStorage::start`]; with `early_ack` (test only: a deliberately broken
    /// server) every write is reported durable as soon as it is handed over, and the log
    /// thread writes and syncs only once a second.
    #[doc(hidden)]
    pub fn start_with(
        store: LogStore,
        report: Report,
        early_ack: bool,
    ) -> io::Result<ThreadedStorage> {
        let command_bytes_max = store.command_bytes_max();
        // Compiled out of builds without the `sabotage` feature.
        let early_ack = cfg!(feature = "sabotage") && early_ack;
        let early_ack_report = early_ack.then(|| report.clone());
        let latest = Arc::new(Mutex::new(store.latest_checkpoint()));
        let store = Arc::new(Mutex::new(store));
        let (sender, receiver) = mpsc::channel();
        let thread = {
            let store = store.clone();
            let report = report.clone();
            std::thread::Builder::new()
                .name("lockstep-log".to_string())
                .spawn(move || log_thread(&store, &receiver, &*report, early_ack))?
        };
        let (checkpoints, pending) = mpsc::channel();
        let checkpoint_thread = {
            let store = store.clone();
            let latest = latest.clone();
            std::thread::Builder::new()
                .name("lockstep-checkpoint".to_string())
                .spawn(move || checkpoint_thread(&store, &latest, &pending, &*report))?
        };
        Ok(ThreadedStorage {
            store,
            jobs: Some(sender),
            thread: Some(thread),
            checkpoints: Some(checkpoints),
            checkpoint_thread: Some(checkpoint_thread),
            latest,
            command_bytes_max,
            early_ack: early_ack_report,
        })
    }

    /// The last index the latest durable checkpoint covers.
    pub fn latest_checkpoint_index(&self) -> Option<LogIndex> {
        lock(&self.latest).as_ref().map(|checkpoint| checkpoint.meta.last_index)
    }

    /// Finishes every queued write and checkpoint, then stops the log thread.
    pub fn stop(&mut self) {
        self.jobs = None;
        self.checkpoints = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.checkpoint_thread.take() {
            let _ = thread.join();
        }
    }

    fn send(&mut self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // A closed channel means the log thread stopped after a failure it reported.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for ThreadedStorage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new commit index alone (no new term or vote) is stored at most this often.
const COMMIT_STORE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

fn log_thread(
    store: &Mutex<LogStore>,
    jobs: &mpsc::Receiver<Job>,
    report: &dyn Fn(StorageReport) -> bool,
    early_ack: bool,
) {
    let mut commit_stored = Instant::now();
    loop {
        let first = match jobs.recv_timeout(COMMIT_STORE_EVERY) {
            Ok(job) => job,
            // Idle: the commit index the last batch left pending is stored now.
            Err(mpsc::RecvTimeoutError::Timeout) => {
                commit_stored = Instant::now();
                if let Err(error) = lock(store).sync_commit() {
                    report(StorageReport::Failed(error.to_string()));
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stopping: the last commit index goes to disk as well (a replica would learn
                // it again from its leader, but a restart then replays less).
                if let Err(error) = lock(store).sync_commit() {
                    tracing::warn!("storing the last commit index failed: {error}");
                }
                return;
            }
        };
        if early_ack {
            // The sabotage: what was acknowledged waits here, in memory, for a second.
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut newest = None;
        let mut compact = None;
        let written = batch.len();
        let started;
        {
            let mut guard = lock(store);
            for job in batch {
                let (id, persist) = match job {
                    Job::Write(id, persist) => (id, persist),
                    Job::Compact(index) => {
                        compact = compact.max(Some(index));
                        continue;
                    }
                };
                if let Err(error) = guard.write(&persist) {
                    drop(guard);
                    report(StorageReport::Failed(error.to_string()));
                    return;
                }
                newest = Some(id);
            }
            started = Instant::now();
            if let Err(error) = guard.sync_log() {
                drop(guard);
                report(StorageReport::Failed(error.to_string()));
                return;
            }
        }
        metrics::histogram!("lockstep_sync_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("lockstep_sync_batch_writes").record(written as f64);
        if let Some(id) = newest.filter(|_| !early_ack) {
            // Nobody may be listening any more (shutting down): the writes still finish.
            let _ = report(StorageReport::Durable(id));
        }
        // A new commit index alone is stored after the report, and at most every
        // `COMMIT_STORE_EVERY` (or once the thread is idle that long): the acknowledgement
        // does not wait for it, and under load most syncs of the log need no sync of the hard
        // state (`LogStore::sync_log`). A commit index lost in a crash is learnt again from
        // the leader.
        if commit_stored.elapsed() >= COMMIT_STORE_EVERY {
            commit_stored = Instant::now();
            if let Err(error) = lock(store).sync_commit() {
                report(StorageReport::Failed(error.to_string()));
                return;
            }
        }
        if let Some(index) = compact {
            // After the sync and its report: removing files never delays a commit. A failed
            // compaction leaves segments that recovery skips; the store's failure is reported
            // by the next write, or within 50 ms by the idle store of the commit index.
            if let Err(error) = lock(store).compact(index) {
                tracing::error!("compacting the log through {index} failed: {error}");
            }
        }
    }
}

fn checkpoint_thread(
    store: &Mutex<LogStore>,
    latest: &Mutex<Option<Checkpoint>>,
    checkpoints: &mpsc::Receiver<(SnapshotMeta, Box<dyn StateSnapshot>)>,
    report: &dyn Fn(StorageReport) -> bool,
) {
    // Best effort: a platform that cannot lower a thread's priority writes at the same one.
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), CHECKPOINT_THREAD_NICE)
    {
        tracing::debug!("the checkpoint thread keeps its priority: {error}");
    }
    while let Ok((meta, state)) = checkpoints.recv() {
        let started = Instant::now();
        let begun = lock(store).begin_checkpoint(meta.clone());
        let outcome = match begun {
            // A newer snapshot is already the latest: this one is moot, and done.
            Ok(None) => StorageReport::CheckpointSaved(meta),
            Ok(Some(writer)) => {
                let written = write_checkpoint(writer, state.as_ref());
                let mut guard = lock(store);
                let finished = guard.finish_checkpoint(written).map(|_| ());
                note_latest(&guard, latest);
                match finished {
                    Ok(()) => StorageReport::CheckpointSaved(meta),
                    Err(error) => StorageReport::CheckpointFailed(error.to_string()),
                }
            }
            Err(error) => StorageReport::CheckpointFailed(error.to_string()),
        };
        metrics::histogram!("lockstep_checkpoint_seconds").record(started.elapsed().as_secs_f64());
        let _ = report(outcome);
    }
}

impl Storage for ThreadedStorage {
    fn submit(&mut self, write: u64, persist: Persist) {
        self.send(Job::Write(write, persist));
        if let Some(report) = &self.early_ack {
            let _ = report(StorageReport::Durable(write));
        }
    }

    fn command_bytes_max(&self) -> u64 {
        self.command_bytes_max
    }

    fn start_checkpoint(&mut self, meta: SnapshotMeta, state: Box<dyn StateSnapshot>) {
        if let Some(checkpoints) = &self.checkpoints {
            let _ = checkpoints.send((meta, state));
        }
    }

    fn latest_checkpoint(&self) -> Option<Checkpoint> {
        lock(&self.latest).clone()
    }

    fn read_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, String> {
        lock(&self.store).read_checkpoint(checkpoint, offset, len)
    }

    fn compact(&mut self, index: LogIndex) {
        self.send(Job::Compact(index));
    }

    fn receive_snapshot_chunk(&mut self, chunk: &InstallSnapshot) -> Result<u64, String> {
        lock(&self.store).receive_chunk(chunk)
    }

    fn snapshot_bytes_received(&self) -> u64 {
        lock(&self.store).snapshot_bytes_received()
    }

    fn finish_snapshot(&mut self) -> Result<Box<dyn io::Read>, String> {
        let mut guard = lock(&self.store);
        let finished = guard.finish_received();
        note_latest(&guard, &self.latest);
        finished
    }

    fn received_snapshot_reader(&mut self) -> Result<Box<dyn io::Read>, String> {
        lock(&self.store).received_reader()
    }

    fn abandon_snapshot(&mut self) {
        lock(&self.store).abandon_received();
    }
}
