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
            if name.ends_with(".snap.tmp") {
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
        let path = self.dir.join(file_name(&meta));
        let temporary = self.dir.join(format!("{}.tmp", file_name(&meta)));
        let mut file = self.disk.open(&temporary, true).map_err(io_error("create", &temporary))?;
        // A temporary file left by an earlier attempt must not lend this one its bytes.
        file.set_len(0).map_err(io_error("truncate", &temporary))?;
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
    let body = bytes
        .get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.body_len as usize)
        .filter(|body| body_matches(&header, body))
        .ok_or_else(|| corrupt("the footer fails its checksum"))?;
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
        let newest = (self.meta.last_index.get(), self.meta.last_term.get());
        let mut removed = false;
        for name in self.disk.list(&self.dir).map_err(io_error("list", &self.dir))? {
            // Only older snapshots: a newer one (installed meanwhile) stays.
            if parse_file_name(&name).is_some_and(|position| position < newest) {
                let path = self.dir.join(&name);
                self.disk.remove(&path).map_err(io_error("remove", &path))?;
                removed = true;
            }
        }
        if removed {
            self.disk.sync_dir(&self.dir).map_err(io_error("sync", &self.dir))?;
        }
        Ok(StoredSnapshot { path: self.path.clone(), footer })
    }
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
