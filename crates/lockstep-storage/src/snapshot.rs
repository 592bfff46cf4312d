//! Snapshot files.
//!
//! A snapshot is written as a stream to a temporary file, its bytes hashed with BLAKE3 as they
//! go; then a footer frame (the metadata, the length and the digest) and the footer's offset
//! are appended, the file is synced, renamed into place, and the directory synced. Only then
//! are older snapshots removed. Reading streams the bytes back and checks the digest at the
//! end, so a flipped bit anywhere is an error, never a silently wrong state.
//!
//! ```text
//! snap-<last index>-<last term>.snap:  data | footer frame | footer offset (u64)
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::SnapshotMeta;
use serde::{Deserialize, Serialize};

use crate::disk::{Disk, DiskFile};
use crate::error::{io_failure, IoFailure};
use crate::frame::{body_matches, decode_header, encode_frame, FrameKind, FRAME_HEADER_BYTES};

/// A footer larger than this is not believed.
const FOOTER_BYTES_MAX: u64 = 16 << 20;

/// What is stored with a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFooter {
    /// The log position and configuration the snapshot covers.
    pub meta: SnapshotMeta,
    /// Metadata of the layers above (for example the client sessions), opaque here.
    pub extra: Vec<u8>,
    /// Bytes of snapshot data.
    pub data_len: u64,
    /// BLAKE3 of the data.
    pub digest: [u8; 32],
}

/// What can go wrong with snapshot files.
#[derive(Debug)]
pub enum SnapshotError {
    /// An I/O operation failed.
    Io(IoFailure),
    /// A snapshot file is damaged.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io(failure) => write!(f, "{failure}"),
            SnapshotError::Corrupt { path, detail } => {
                write!(f, "snapshot {} is damaged: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for SnapshotError {}

impl From<SnapshotError> for io::Error {
    fn from(error: SnapshotError) -> io::Error {
        io::Error::other(error.to_string())
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let failure = io_failure(operation, path);
    move |source| SnapshotError::Io(failure(source))
}

fn file_name(meta: &SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}.snap", meta.last_index.get(), meta.last_term.get())
}

/// Parses `snap-<index>-<term>.snap` into (index, term).
fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = rest.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// A directory of snapshot files.
pub struct SnapshotStore {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
}

/// A stored snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSnapshot {
    /// Its file.
    pub path: PathBuf,
    /// What the footer says.
    pub footer: SnapshotFooter,
}

impl SnapshotStore {
    /// The snapshots in `dir` (created if missing). Leftover temporary files are removed.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path) -> Result<SnapshotStore, SnapshotError> {
        disk.create_dir_all(dir).map_err(io_error("create", dir))?;
        for name in disk.list(dir).map_err(io_error("list", dir))? {
            if name.ends_with(".tmp") {
                let path = dir.join(&name);
                disk.remove(&path).map_err(io_error("remove", &path))?;
            }
        }
        Ok(SnapshotStore { disk, dir: dir.to_path_buf() })
    }

    /// Starts writing a snapshot of `meta`; stream its bytes in, then [`SnapshotWriter::finish`].
    pub fn create(
        &self,
        meta: SnapshotMeta,
        extra: Vec<u8>,
    ) -> Result<SnapshotWriter, SnapshotError> {
        let (path, temporary, file) = self.fresh_temporary(&meta, "tmp")?;
        Ok(SnapshotWriter {
            disk: Arc::clone(&self.disk),
            dir: self.dir.clone(),
            path,
            temporary,
            file,
            meta,
            extra,
            written: 0,
            hasher: blake3::Hasher::new(),
        })
    }

    /// The final path of snapshot `meta`, and an empty temporary file beside it (named with
    /// `suffix`) to write it in.
    fn fresh_temporary(
        &self,
        meta: &SnapshotMeta,
        suffix: &str,
    ) -> Result<(PathBuf, PathBuf, Box<dyn DiskFile>), SnapshotError> {
        let path = self.dir.join(file_name(meta));
        let temporary = self.dir.join(format!("{}.{suffix}", file_name(meta)));
        let mut file = self.disk.open(&temporary, true).map_err(io_error("create", &temporary))?;
        // A temporary file left by an earlier attempt must not lend this one its bytes.
        file.set_len(0).map_err(io_error("truncate", &temporary))?;
        Ok((path, temporary, file))
    }

    /// The newest snapshot, checked as far as its footer (its data is checked as it is read).
    pub fn latest(&self) -> Result<Option<StoredSnapshot>, SnapshotError> {
        let mut names: Vec<(u64, u64, String)> = self
            .disk
            .list(&self.dir)
            .map_err(io_error("list", &self.dir))?
            .into_iter()
            .filter_map(|name| parse_file_name(&name).map(|(index, term)| (index, term, name)))
            .collect();
        names.sort();
        let Some((index, term, name)) = names.pop() else { return Ok(None) };
        let path = self.dir.join(name);
        let file = self.disk.open(&path, false).map_err(io_error("open", &path))?;
        let footer = read_footer(file.as_ref(), &path)?;
        if (footer.meta.last_index.get(), footer.meta.last_term.get()) != (index, term) {
            return Err(SnapshotError::Corrupt {
                path,
                detail: "its footer describes another snapshot than its name".to_string(),
            });
        }
        Ok(Some(StoredSnapshot { path, footer }))
    }

    /// The length of `snapshot`'s file (data, footer and footer offset): what a transfer to
    /// another replica sends.
    pub fn file_len(&self, snapshot: &StoredSnapshot) -> Result<u64, SnapshotError> {
        let file =
            self.disk.open(&snapshot.path, false).map_err(io_error("open", &snapshot.path))?;
        file.len().map_err(io_error("read", &snapshot.path))
    }

    /// Reads `buf.len()` bytes of `snapshot`'s file at `offset`, to send them.
    pub fn read_file_at(
        &self,
        snapshot: &StoredSnapshot,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), SnapshotError> {
        let file =
            self.disk.open(&snapshot.path, false).map_err(io_error("open", &snapshot.path))?;
        file.read_at(offset, buf).map_err(io_error("read", &snapshot.path))
    }

    /// Starts receiving the file of snapshot `meta`, `total_bytes` long, from another replica:
    /// write its bytes in order, then [`SnapshotReceiver::finish`]. Nothing is visible, and
    /// the current snapshot stays, until the whole file is written and checked.
    pub fn receive(
        &self,
        meta: SnapshotMeta,
        total_bytes: u64,
    ) -> Result<SnapshotReceiver, SnapshotError> {
        // Apart from a snapshot this replica may be writing of the same index itself.
        let (path, temporary, file) = self.fresh_temporary(&meta, "recv.tmp")?;
        Ok(SnapshotReceiver {
            disk: Arc::clone(&self.disk),
            dir: self.dir.clone(),
            path,
            temporary,
            file,
            meta,
            total_bytes,
            received: 0,
        })
    }

    /// Reads `snapshot`'s whole data and checks it against its digest: damage is
    /// [`SnapshotError::Corrupt`], a failing read [`SnapshotError::Io`].
    pub fn verify(&self, snapshot: &StoredSnapshot) -> Result<(), SnapshotError> {
        let path = &snapshot.path;
        let file = self.disk.open(path, false).map_err(io_error("open", path))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut position = 0u64;
        while position < snapshot.footer.data_len {
            let count = (snapshot.footer.data_len - position).min(buf.len() as u64) as usize;
            file.read_at(position, &mut buf[..count]).map_err(io_error("read", path))?;
            hasher.update(&buf[..count]);
            position += count as u64;
        }
        if *hasher.finalize().as_bytes() != snapshot.footer.digest {
            return Err(SnapshotError::Corrupt {
                path: path.clone(),
                detail: "its data does not match its BLAKE3 digest".to_string(),
            });
        }
        Ok(())
    }

    /// Sets the damaged snapshot file `path` aside (renamed to `<name>.damaged`, never read
    /// again; remove it at will).
    pub fn set_aside(&self, path: &Path) -> Result<(), SnapshotError> {
        let name = path.file_name().map(|name| name.to_string_lossy().to_string());
        let aside = self.dir.join(format!("{}.damaged", name.unwrap_or_default()));
        match self.disk.remove(&aside) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error("remove", &aside)(error)),
        }
        self.disk.rename(path, &aside).map_err(io_error("rename", path))?;
        self.disk.sync_dir(&self.dir).map_err(io_error("sync", &self.dir))
    }

    /// A reader of `snapshot`'s data that fails at the end if the digest does not match.
    pub fn reader(&self, snapshot: &StoredSnapshot) -> Result<SnapshotReader, SnapshotError> {
        let file =
            self.disk.open(&snapshot.path, false).map_err(io_error("open", &snapshot.path))?;
        Ok(SnapshotReader {
            file,
            path: snapshot.path.clone(),
            position: 0,
            len: snapshot.footer.data_len,
            digest: snapshot.footer.digest,
            hasher: blake3::Hasher::new(),
            failed: false,
        })
    }
}

fn read_footer(file: &dyn DiskFile, path: &Path) -> Result<SnapshotFooter, SnapshotError> {
    let corrupt = |detail: &str| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let len = file.len().map_err(io_error("read", path))?;
    if len < 8 {
        return Err(corrupt("too short to hold a footer"));
    }
    let mut raw = [0u8; 8];
    file.read_at(len - 8, &mut raw).map_err(io_error("read", path))?;
    let footer_offset = u64::from_le_bytes(raw);
    let footer_len = (len - 8)
        .checked_sub(footer_offset)
        .ok_or_else(|| corrupt("the footer offset is past the end"))?;
    if footer_len < FRAME_HEADER_BYTES as u64 || footer_len > FOOTER_BYTES_MAX {
        return Err(corrupt("the footer has an impossible size"));
    }
    let mut bytes = vec![0u8; footer_len as usize];
    file.read_at(footer_offset, &mut bytes).map_err(io_error("read", path))?;
    let header = decode_header(&bytes)
        .filter(|header| header.kind == FrameKind::SnapshotMeta)
        .ok_or_else(|| corrupt("the footer frame is unreadable"))?;
    let end = FRAME_HEADER_BYTES + header.body_len as usize;
    let body = bytes
        .get(FRAME_HEADER_BYTES..end)
        .filter(|body| body_matches(&header, body))
        .ok_or_else(|| corrupt("the footer fails its checksum"))?;
    // The padding after the footer's body is not under its checksum: it must be zeros.
    if !bytes.get(end..).is_some_and(crate::frame::is_zero) {
        return Err(corrupt("the footer's padding is not zeros"));
    }
    let footer: SnapshotFooter =
        postcard::from_bytes(body).map_err(|_| corrupt("the footer does not decode"))?;
    if footer.data_len != footer_offset {
        return Err(corrupt("the footer disagrees with the data length"));
    }
    Ok(footer)
}

/// Streams a snapshot into a temporary file; nothing is visible until `finish`.
pub struct SnapshotWriter {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    path: PathBuf,
    temporary: PathBuf,
    file: Box<dyn DiskFile>,
    meta: SnapshotMeta,
    extra: Vec<u8>,
    written: u64,
    hasher: blake3::Hasher,
}

impl io::Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(self.written, buf)?;
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotWriter {
    /// Writes the footer, makes the snapshot durable under its final name, and only then
    /// removes every older snapshot.
    pub fn finish(mut self) -> Result<StoredSnapshot, SnapshotError> {
        let footer = SnapshotFooter {
            meta: self.meta.clone(),
            extra: std::mem::take(&mut self.extra),
            data_len: self.written,
            digest: *self.hasher.finalize().as_bytes(),
        };
        let body = postcard::to_stdvec(&footer).map_err(|error| SnapshotError::Corrupt {
            path: self.path.clone(),
            detail: format!("the footer does not encode: {error}"),
        })?;
        let mut tail = encode_frame(FrameKind::SnapshotMeta, 0, &body);
        tail.extend_from_slice(&self.written.to_le_bytes());
        let temporary = self.temporary.clone();
        self.file.write_at(self.written, &tail).map_err(io_error("write", &temporary))?;
        self.file
            .set_len(self.written + tail.len() as u64)
            .map_err(io_error("truncate", &temporary))?;
        self.file.sync_data().map_err(io_error("sync", &temporary))?;
        self.disk.rename(&temporary, &self.path).map_err(io_error("rename", &temporary))?;
        self.disk.sync_dir(&self.dir).map_err(io_error("sync", &self.dir))?;
        // The snapshot is durable under its name: removing the older ones is tidying, and a
        // failure there (tried again after the next snapshot) must not report this one lost.
        let _ = remove_older(self.disk.as_ref(), &self.dir, &self.meta);
        Ok(StoredSnapshot { path: self.path.clone(), footer })
    }
}

/// Receives a snapshot file sent by another replica, in order, into a temporary file.
pub struct SnapshotReceiver {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    path: PathBuf,
    temporary: PathBuf,
    file: Box<dyn DiskFile>,
    meta: SnapshotMeta,
    total_bytes: u64,
    received: u64,
}

impl SnapshotReceiver {
    /// The snapshot being received.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The file's whole length.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// How many bytes have been written: the offset the next chunk must start at.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Writes the chunk at `offset`, which must be [`SnapshotReceiver::received`], and must not
    /// run past the end.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), SnapshotError> {
        let corrupt =
            |detail: String| SnapshotError::Corrupt { path: self.temporary.clone(), detail };
        if offset < self.received && offset.saturating_add(data.len() as u64) <= self.received {
            // A duplicate of what is held (a resent or duplicated chunk): nothing to do.
            return Ok(());
        }
        if offset != self.received {
            return Err(corrupt(format!(
                "a chunk at byte {offset} arrived while {} bytes were written",
                self.received
            )));
        }
        let end = offset.checked_add(data.len() as u64).filter(|end| *end <= self.total_bytes);
        let Some(end) = end else {
            return Err(corrupt(format!(
                "a {}-byte chunk at byte {offset} runs past the {}-byte snapshot",
                data.len(),
                self.total_bytes
            )));
        };
        let temporary = self.temporary.clone();
        self.file.write_at(offset, data).map_err(io_error("write", &temporary))?;
        self.received = end;
        Ok(())
    }

    /// Checks the whole file as [`SnapshotReceiver::finish`] does, without making it durable:
    /// the snapshot as it stands in its temporary file, to read before deciding to keep it.
    pub fn checked(&mut self) -> Result<StoredSnapshot, SnapshotError> {
        let footer = self.check()?;
        Ok(StoredSnapshot { path: self.temporary.clone(), footer })
    }

    /// Gives up on this snapshot: its temporary file is removed.
    pub fn abandon(self) {
        let _ = self.disk.remove(&self.temporary);
    }

    /// Checks the whole file (its footer must describe the snapshot announced, its data must
    /// match the footer's BLAKE3 digest, and that digest must be `expected_digest` when given),
    /// makes it durable under its final name, and removes older snapshots. A file that fails a
    /// check is removed and never used.
    pub fn finish(
        mut self,
        expected_digest: Option<[u8; 32]>,
    ) -> Result<StoredSnapshot, SnapshotError> {
        let temporary = self.temporary.clone();
        let checked = self.check().and_then(|footer| match expected_digest {
            Some(digest) if digest != footer.digest => Err(SnapshotError::Corrupt {
                path: temporary.clone(),
                detail: "its digest is not the one announced by the sender".to_string(),
            }),
            _ => Ok(footer),
        });
        if checked.is_err() {
            let _ = self.disk.remove(&temporary);
        }
        let footer = checked?;
        self.file.sync_data().map_err(io_error("sync", &temporary))?;
        self.disk.rename(&temporary, &self.path).map_err(io_error("rename", &temporary))?;
        self.disk.sync_dir(&self.dir).map_err(io_error("sync", &self.dir))?;
        // The snapshot is durable under its name: removing the older ones is tidying, and a
        // failure there (tried again after the next snapshot) must not report this one lost.
        let _ = remove_older(self.disk.as_ref(), &self.dir, &self.meta);
        Ok(StoredSnapshot { path: self.path.clone(), footer })
    }

    fn check(&mut self) -> Result<SnapshotFooter, SnapshotError> {
        let corrupt = |detail: &str| SnapshotError::Corrupt {
            path: self.temporary.clone(),
            detail: detail.to_string(),
        };
        if self.received != self.total_bytes {
            return Err(corrupt("the transfer ended before the whole snapshot arrived"));
        }
        let footer = read_footer(self.file.as_ref(), &self.temporary)?;
        if footer.meta != self.meta {
            return Err(corrupt("its footer describes another snapshot than the one announced"));
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut position = 0u64;
        while position < footer.data_len {
            let count = (footer.data_len - position).min(buf.len() as u64) as usize;
            self.file
                .read_at(position, &mut buf[..count])
                .map_err(io_error("read", &self.temporary))?;
            hasher.update(&buf[..count]);
            position += count as u64;
        }
        if *hasher.finalize().as_bytes() != footer.digest {
            return Err(corrupt("its data does not match its BLAKE3 digest"));
        }
        Ok(footer)
    }
}

/// Removes every snapshot in `dir` older than `meta` (a newer one installed meanwhile stays).
fn remove_older(disk: &dyn Disk, dir: &Path, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
    let newest = (meta.last_index.get(), meta.last_term.get());
    let mut removed = false;
    for name in disk.list(dir).map_err(io_error("list", dir))? {
        if parse_file_name(&name).is_some_and(|position| position < newest) {
            let path = dir.join(&name);
            disk.remove(&path).map_err(io_error("remove", &path))?;
            removed = true;
        }
    }
    if removed {
        disk.sync_dir(dir).map_err(io_error("sync", dir))?;
    }
    Ok(())
}

/// Streams a snapshot's data back, checking its digest when the end is reached.
pub struct SnapshotReader {
    file: Box<dyn DiskFile>,
    path: PathBuf,
    position: u64,
    len: u64,
    digest: [u8; 32],
    hasher: blake3::Hasher,
    /// The digest did not match: every later read fails too.
    failed: bool,
}

impl io::Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(format!(
                "snapshot {} is damaged: its data does not match its BLAKE3 digest",
                self.path.display()
            )));
        }
        let remaining = self.len - self.position;
        if remaining == 0 {
            return Ok(0);
        }
        let count = (buf.len() as u64).min(remaining) as usize;
        self.file.read_at(self.position, &mut buf[..count])?;
        self.hasher.update(&buf[..count]);
        self.position += count as u64;
        if self.position == self.len && *self.hasher.finalize().as_bytes() != self.digest {
            self.failed = true;
            let error = SnapshotError::Corrupt {
                path: self.path.clone(),
                detail: "its data does not match its BLAKE3 digest".to_string(),
            };
            return Err(error.into());
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::disk::{Faults, SimDisk};
    use lockstep_core::{LogIndex, Membership, NodeId, Term};

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_index: LogIndex(index),
            last_term: Term(2),
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        }
    }

    fn write(store: &SnapshotStore, index: u64, data: &[u8]) -> StoredSnapshot {
        let mut writer = store.create(meta(index), b"sessions".to_vec()).expect("create");
        for chunk in data.chunks(1000) {
            writer.write_all(chunk).expect("write");
        }
        writer.finish().expect("finish")
    }

    #[test]
    fn a_snapshot_round_trips_and_replaces_the_older_one() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let store = SnapshotStore::open(disk.clone(), Path::new("/r/snapshots")).expect("open");
        write(&store, 10, &[1u8; 5000]);
        let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        write(&store, 20, &data);
        disk.crash();
        let store = SnapshotStore::open(disk, Path::new("/r/snapshots")).expect("reopen");
        let latest = store.latest().expect("readable").expect("present");
        assert_eq!(latest.footer.meta, meta(20));
        assert_eq!(latest.footer.extra, b"sessions");
        let mut back = Vec::new();
        store.reader(&latest).expect("reader").read_to_end(&mut back).expect("intact");
        assert_eq!(back, data);
    }

    #[test]
    fn a_retried_snapshot_does_not_inherit_a_failed_attempt_s_bytes() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let store = SnapshotStore::open(disk.clone(), Path::new("/r/snapshots")).expect("open");
        let mut abandoned = store.create(meta(10), Vec::new()).expect("create");
        abandoned.write_all(&[1u8; 9000]).expect("write");
        drop(abandoned);
        let stored = write(&store, 10, &[2u8; 100]);
        let mut back = Vec::new();
        store.reader(&stored).expect("reader").read_to_end(&mut back).expect("intact");
        assert_eq!(back, vec![2u8; 100]);
    }

    #[test]
    fn a_flipped_bit_in_the_data_is_detected_on_load() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let store = SnapshotStore::open(disk.clone(), Path::new("/r/snapshots")).expect("open");
        let stored = write(&store, 10, &[9u8; 8000]);
        disk.flip_bit(&stored.path, 4321, 5).expect("flip");
        let latest = store.latest().expect("footer intact").expect("present");
        let mut back = Vec::new();
        let error =
            store.reader(&latest).expect("reader").read_to_end(&mut back).expect_err("caught");
        assert!(error.to_string().contains("BLAKE3"), "{error}");
    }

    #[test]
    fn a_damaged_footer_is_reported() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let store = SnapshotStore::open(disk.clone(), Path::new("/r/snapshots")).expect("open");
        let stored = write(&store, 10, &[9u8; 100]);
        disk.flip_bit(&stored.path, 110, 0).expect("flip in the footer");
        let error = store.latest().expect_err("reported");
        assert!(error.to_string().contains("damaged"), "{error}");
        disk.put(&stored.path, b"short");
        assert!(store.latest().is_err());
    }

    #[test]
    fn a_snapshot_file_sent_in_chunks_arrives_whole_and_damage_is_refused() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let sender = SnapshotStore::open(disk.clone(), Path::new("/a/snapshots")).expect("open");
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        let stored = write(&sender, 30, &data);
        let total = sender.file_len(&stored).expect("length");
        let receiver_store =
            SnapshotStore::open(disk.clone(), Path::new("/b/snapshots")).expect("open");
        write(&receiver_store, 10, &[1u8; 10]);
        let send = |receiver: &mut SnapshotReceiver, flip: Option<u64>| {
            let mut offset = 0;
            while offset < total {
                let mut chunk = vec![0u8; 4096.min(total - offset) as usize];
                sender.read_file_at(&stored, offset, &mut chunk).expect("reads");
                if let Some(at) = flip.filter(|at| (offset..offset + 4096).contains(at)) {
                    chunk[(at - offset) as usize] ^= 1;
                }
                receiver.write(offset, &chunk).expect("writes");
                offset += chunk.len() as u64;
            }
        };
        // A chunk out of order is refused.
        let mut receiver = receiver_store.receive(meta(30), total).expect("receive");
        assert!(receiver.write(4096, &[0u8; 10]).is_err());
        // A duplicate of what is held is taken and changes nothing.
        assert!(receiver.write(0, &[]).is_ok());
        assert!(receiver.write(0, &vec![0u8; total as usize + 1]).is_err());
        // A flipped bit is caught at the end and nothing is installed.
        send(&mut receiver, Some(20_000));
        assert!(receiver.finish(None).is_err());
        assert_eq!(receiver_store.latest().expect("ok").expect("present").footer.meta, meta(10));
        // Announced as another snapshot than its footer says: refused.
        let mut receiver = receiver_store.receive(meta(31), total).expect("receive");
        send(&mut receiver, None);
        assert!(receiver.finish(None).is_err());
        // Whole and intact: installed, and the older one removed.
        let mut receiver = receiver_store.receive(meta(30), total).expect("receive");
        send(&mut receiver, None);
        let installed = receiver.finish(None).expect("installed");
        disk.crash();
        let receiver_store =
            SnapshotStore::open(disk.clone(), Path::new("/b/snapshots")).expect("reopen");
        let latest = receiver_store.latest().expect("ok").expect("present");
        assert_eq!(latest, installed);
        let mut back = Vec::new();
        receiver_store.reader(&latest).expect("reader").read_to_end(&mut back).expect("intact");
        assert_eq!(back, data);
        assert_eq!(disk.list(Path::new("/b/snapshots")).expect("list").len(), 1);
    }

    #[test]
    fn an_unfinished_snapshot_is_invisible_and_cleaned_up() {
        let disk = Arc::new(SimDisk::new(1, Faults::default()));
        let store = SnapshotStore::open(disk.clone(), Path::new("/r/snapshots")).expect("open");
        write(&store, 10, &[1u8; 100]);
        let mut writer = store.create(meta(20), Vec::new()).expect("create");
        writer.write_all(&[2u8; 100]).expect("write");
        drop(writer);
        disk.crash();
        let store = SnapshotStore::open(disk.clone(), Path::new("/r/snapshots")).expect("reopen");
        assert_eq!(store.latest().expect("ok").expect("present").footer.meta, meta(10));
        let names = disk.list(Path::new("/r/snapshots")).expect("list");
        assert!(names.iter().all(|name| !name.ends_with(".tmp")), "{names:?}");
    }
}
