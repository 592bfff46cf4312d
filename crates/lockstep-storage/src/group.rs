//! Group commit: many appenders, one `fdatasync` per batch.
//!
//! A worker thread owns the [`Wal`]. Appenders submit appends and wait for them to be durable.
//! Whatever arrives while the worker is writing and syncing one batch forms the next batch
//! (bounded in bytes and entries): its appends are written together, synced with one
//! `fdatasync`, and acknowledged together. Under load the cost of a sync is shared by the whole
//! batch; an appender alone pays one sync, as it would without the worker.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use lockstep_core::{Entry, LogIndex};

use crate::wal::{Wal, WalError};

/// Bounds on one batch.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// At most this many entry bytes per batch.
    pub bytes_max: u64,
    /// At most this many entries per batch.
    pub entries_max: usize,
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits { bytes_max: 4 << 20, entries_max: 4096 }
    }
}

/// The outcome of one submitted append: `Ok` once it is durable.
pub type AppendResult = Result<(), Arc<WalError>>;

struct Request {
    truncate_from: Option<LogIndex>,
    entries: Vec<Entry>,
    reply: SyncSender<AppendResult>,
}

/// An append submitted to a [`GroupCommit`], to wait on.
pub struct PendingAppend(Receiver<AppendResult>);

impl PendingAppend {
    /// Waits until the append is durable (or failed).
    pub fn wait(self) -> AppendResult {
        self.0.recv().unwrap_or_else(|_| {
            Err(Arc::new(WalError::Poisoned("the log writer stopped".to_string())))
        })
    }
}

/// The group-commit writer. See the module documentation.
pub struct GroupCommit {
    sender: Option<Sender<Request>>,
    worker: Option<JoinHandle<Wal>>,
}

impl GroupCommit {
    /// Starts the worker thread, which owns `wal` until [`GroupCommit::stop`].
    pub fn start(wal: Wal, limits: BatchLimits) -> std::io::Result<GroupCommit> {
        let (sender, receiver) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("lockstep-wal".to_string())
            .spawn(move || run(wal, receiver, limits))?;
        Ok(GroupCommit { sender: Some(sender), worker: Some(worker) })
    }

    /// Submits an append (truncate from `truncate_from`, then `entries`). Appends are written
    /// in the order they are submitted.
    pub fn submit(&self, truncate_from: Option<LogIndex>, entries: Vec<Entry>) -> PendingAppend {
        let (reply, receiver) = mpsc::sync_channel(1);
        let request = Request { truncate_from, entries, reply };
        if let Some(sender) = &self.sender {
            if let Err(mpsc::SendError(request)) = sender.send(request) {
                let error = WalError::Poisoned("the log writer stopped".to_string());
                let _ = request.reply.send(Err(Arc::new(error)));
            }
        }
        PendingAppend(receiver)
    }

    /// Finishes every submitted append and hands the log back.
    pub fn stop(mut self) -> Option<Wal> {
        self.sender.take();
        self.worker.take().and_then(|worker| worker.join().ok())
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn run(mut wal: Wal, receiver: Receiver<Request>, limits: BatchLimits) -> Wal {
    while let Ok(first) = receiver.recv() {
        let mut entries = first.entries.len();
        let mut bytes: u64 = first.entries.iter().map(Entry::size_bytes).sum();
        let mut batch = vec![first];
        while entries < limits.entries_max && bytes < limits.bytes_max {
            let Ok(next) = receiver.try_recv() else { break };
            entries += next.entries.len();
            bytes += next.entries.iter().map(Entry::size_bytes).sum::<u64>();
            batch.push(next);
        }
        let outcomes = write_batch(&mut wal, &batch);
        let synced =
            if outcomes.iter().any(Result::is_ok) { wal.sync().map_err(Arc::new) } else { Ok(()) };
        for (request, outcome) in batch.into_iter().zip(outcomes) {
            let result = outcome.and_then(|()| synced.clone());
            let _ = request.reply.send(result);
        }
    }
    wal
}

/// Writes a batch with as few appends (frames) as possible: consecutive requests that simply
/// continue the log are merged into one append.
fn write_batch(wal: &mut Wal, batch: &[Request]) -> Vec<AppendResult> {
    let mut outcomes: Vec<AppendResult> = Vec::with_capacity(batch.len());
    let mut group: Vec<usize> = Vec::new();
    let mut merged: Vec<Entry> = Vec::new();
    let flush = |wal: &mut Wal,
                 group: &mut Vec<usize>,
                 merged: &mut Vec<Entry>,
                 outcomes: &mut Vec<AppendResult>| {
        if group.is_empty() {
            return;
        }
        match wal.append(None, merged) {
            // Validation happens before anything is written: append the requests one by one
            // so that only the bad one fails.
            Err(WalError::Invalid(_)) => {
                for position in group.drain(..) {
                    let entries = &batch[position].entries;
                    outcomes[position] = wal.append(None, entries).map_err(Arc::new);
                }
            }
            result => {
                let result = result.map_err(Arc::new);
                for position in group.drain(..) {
                    outcomes[position] = result.clone();
                }
            }
        }
        merged.clear();
    };
    for (position, request) in batch.iter().enumerate() {
        outcomes.push(Ok(()));
        let continues = merged.last().map_or(wal.last_index().next(), |entry| entry.index.next());
        let mergeable = request.truncate_from.is_none()
            && request.entries.first().is_some_and(|entry| entry.index == continues);
        if mergeable {
            merged.extend(request.entries.iter().cloned());
            group.push(position);
            continue;
        }
        flush(wal, &mut group, &mut merged, &mut outcomes);
        outcomes[position] = wal.append(request.truncate_from, &request.entries).map_err(Arc::new);
    }
    flush(wal, &mut group, &mut merged, &mut outcomes);
    outcomes
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use lockstep_core::{Command, EntryPayload, Term};

    use super::*;
    use crate::disk::{Faults, SimDisk};
    use crate::wal::WalOptions;

    fn entry(index: u64) -> Entry {
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(Command {
                data: Bytes::from(vec![1u8; 64]),
                timestamp_millis: 0,
            }),
        }
    }

    #[test]
    fn concurrent_appends_are_durable_in_order() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let dir = Path::new("/r/wal");
        let wal = Wal::open(disk.clone(), dir, WalOptions::default()).expect("open");
        let writer = Arc::new(GroupCommit::start(wal, BatchLimits::default()).expect("start"));
        let next = Arc::new(std::sync::Mutex::new(1u64));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let writer = Arc::clone(&writer);
                let next = Arc::clone(&next);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let pending = {
                            let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                            let pending = writer.submit(None, vec![entry(*next)]);
                            *next += 1;
                            pending
                        };
                        pending.wait().expect("durable");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("appender");
        }
        let writer = Arc::into_inner(writer).expect("sole owner");
        drop(writer.stop());
        disk.crash();
        let wal = Wal::open(disk, dir, WalOptions::default()).expect("reopen");
        assert_eq!(wal.last_index(), LogIndex(400));
        let entries = wal.entries(LogIndex(1), LogIndex(400), u64::MAX).expect("read");
        assert!(entries.iter().enumerate().all(|(i, e)| e.index == LogIndex(i as u64 + 1)));
    }

    #[test]
    fn a_bad_append_fails_alone() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let wal = Wal::open(disk, Path::new("/r/wal"), WalOptions::default()).expect("open");
        let writer = GroupCommit::start(wal, BatchLimits::default()).expect("start");
        let good = writer.submit(None, vec![entry(1)]);
        let gap = writer.submit(None, vec![entry(5)]);
        let inner_gap = writer.submit(None, vec![entry(2), entry(4)]);
        let good_again = writer.submit(None, vec![entry(2)]);
        assert!(good.wait().is_ok());
        assert!(gap.wait().is_err());
        assert!(inner_gap.wait().is_err(), "a gap inside one request fails that request");
        assert!(good_again.wait().is_ok());
    }
}
