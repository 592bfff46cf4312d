//! The segmented write-ahead log.
//!
//! The log is a directory of fixed-size, zero-filled segment files `wal-<number>.seg`. Each
//! starts with a header frame; then come record frames, one per [`Wal::append`], each holding
//! the records of that append: an optional truncation, then entries. The log is append-only:
//! a truncation is a record, and replaying the records in order rebuilds the log. Whole
//! segments below a compaction index are deleted.
//!
//! **Recovery** reads every frame in order. A frame that fails its checks is either a torn
//! tail (the last write before a crash, never acknowledged: it is cut off and zeroed) or
//! corruption (a frame that had been synced was damaged). Every frame records the sequence
//! number of the newest frame that was durable when it was written, and a segment is synced
//! before the next one is started. So a bad frame is corruption if a later valid frame records
//! it as synced, or if it lies in any segment but the last; then opening fails with an error
//! naming the file, the offset and the entries affected. Otherwise it, and anything after it,
//! was never synced, never acknowledged, and is cut off. What no log of this kind can tell
//! apart from a torn write is damage to the frames of the last synced batch when nothing was
//! written after them; [`Wal::open_holding`] takes the hard state's commit index so that such
//! damage is reported, never silently cut, when it would lose committed entries.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockstep_core::{Entry, LogIndex, Term};
use serde::{Deserialize, Serialize};

use crate::disk::{Disk, DiskFile};
use crate::error::{io_failure, IoFailure};
use crate::frame::{
    align, body_matches, decode_header, decode_record, encode_frame, encode_record, is_zero,
    FrameKind, FRAME_ALIGN, FRAME_HEADER_BYTES, RECORD_HEADER_BYTES,
};

/// How the log is laid out and bounded.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The size of each segment file.
    pub segment_bytes: u64,
    /// At most this many record bytes in one frame; a larger append is split into several
    /// frames (one record always fits).
    pub frame_bytes_max: u64,
    /// Recent entries kept in memory for reads, in bytes.
    pub cache_bytes_max: u64,
    /// Create the directory if it does not exist.
    pub create_if_missing: bool,
    /// Tests only: acknowledge syncs without syncing, so the crash tests can show they
    /// catch a log that loses acknowledged writes.
    #[doc(hidden)]
    #[cfg(feature = "sabotage")]
    pub sabotage_skip_sync: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: 16 << 20,
            frame_bytes_max: 4 << 20,
            cache_bytes_max: 64 << 20,
            create_if_missing: true,
            #[cfg(feature = "sabotage")]
            sabotage_skip_sync: false,
        }
    }
}

/// What can go wrong with the log. Every variant says what a person can act on.
#[derive(Debug)]
pub enum WalError {
    /// An I/O operation failed.
    Io(IoFailure),
    /// Synced data is damaged. Nothing was dropped; the log must be repaired (from peers).
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        detail: String,
        /// Entries up to here read back intact.
        intact_through: Option<LogIndex>,
        /// Entries from here on were found after the damage, so the damage lies between.
        found_again_from: Option<LogIndex>,
    },
    /// The caller asked for something the log cannot do (a gap, a truncation of nothing).
    Invalid(String),
    /// An earlier write or sync failed, so what is on disk is unknown: reopen the log.
    Poisoned(String),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io(failure) => write!(f, "{failure}"),
            WalError::Corrupt { path, offset, detail, intact_through, found_again_from } => {
                write!(
                    f,
                    "write-ahead log {} is corrupt at byte {offset}: {detail}",
                    path.display()
                )?;
                match intact_through {
                    Some(index) => write!(f, "; entries through {index} are intact")?,
                    None => write!(f, "; no entry before it is affected")?,
                }
                if let Some(index) = found_again_from {
                    write!(f, ", entries before {index} after that may be lost")?;
                }
                write!(f, ". Nothing was discarded; repair this replica's log from its peers")
            }
            WalError::Invalid(reason) => write!(f, "invalid log operation: {reason}"),
            WalError::Poisoned(reason) => {
                write!(f, "the log must be reopened after an earlier failure: {reason}")
            }
        }
    }
}

impl std::error::Error for WalError {}

impl From<IoFailure> for WalError {
    fn from(failure: IoFailure) -> WalError {
        WalError::Io(failure)
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    let failure = io_failure(operation, path);
    move |source| WalError::Io(failure(source))
}

/// A record of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Record {
    /// Remove every entry at this index and above.
    Truncate(LogIndex),
    /// An entry.
    Entry(Entry),
    /// Drop every entry: the log restarts at this index (after a snapshot installed from a
    /// leader replaced it).
    Restart(LogIndex),
}

/// The body of a segment's header frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentHeader {
    /// The segment's number, as in its name.
    number: u64,
    /// The sequence number of its first record frame.
    first_sequence: u64,
    /// The index the next entry had when the segment was started.
    next_index: LogIndex,
}

/// Where an entry lives.
#[derive(Clone, Copy, Debug)]
struct Location {
    term: Term,
    segment: u64,
    /// The record's offset in the segment file.
    offset: u64,
    /// The record's length, framing included.
    len: u32,
}

struct Segment {
    number: u64,
    path: PathBuf,
    file: Box<dyn DiskFile>,
}

/// The write-ahead log. See the module documentation.
pub struct Wal {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    options: WalOptions,
    /// Oldest first; the last is the one being written.
    segments: Vec<Segment>,
    /// Where the next frame goes in the last segment.
    write_offset: u64,
    next_sequence: u64,
    /// The index of `locations[0]` (or of the next entry, if there is none).
    first_index: LogIndex,
    /// The log was restarted (after a snapshot) and holds no entry since: the next entry must
    /// be `first_index`.
    restarted: bool,
    locations: VecDeque<Location>,
    /// The most recent entries, ending at the last index.
    cache: VecDeque<Entry>,
    cache_bytes: u64,
    /// Segments written since their last sync.
    unsynced: BTreeSet<u64>,
    /// The sequence number of the newest frame known durable. Every frame records it, so
    /// recovery can tell a frame that had been synced (damage) from one that had not (a torn
    /// or lost write at a crash).
    synced_through: u64,
    poisoned: Option<String>,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index)
            .field("last_index", &self.last_index())
            .field(
                "segments",
                &self.segments.iter().map(|segment| segment.number).collect::<Vec<_>>(),
            )
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

fn segment_name(number: u64) -> String {
    format!("wal-{number:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let number = name.strip_prefix("wal-")?.strip_suffix(".seg")?.parse().ok()?;
    // Only the exact names this log writes.
    (segment_name(number) == name).then_some(number)
}

impl Wal {
    /// Opens the log in `dir` (creating it if allowed and missing), recovering what is there.
    pub fn open(disk: Arc<dyn Disk>, dir: &Path, options: WalOptions) -> Result<Wal, WalError> {
        Wal::open_holding(disk, dir, options, LogIndex::ZERO)
    }

    /// Opens the log like [`Wal::open`], and fails with [`WalError::Corrupt`] (changing
    /// nothing) if it would end below `must_hold_through`, so that damage recovery cannot
    /// tell from a torn write never loses committed entries silently. Pass the highest index
    /// this replica knows committed and not covered by a durable snapshot, from a hard state
    /// stored only after the log writes it covers were synced (store the hard state after the
    /// log's sync, not before).
    pub fn open_holding(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: WalOptions,
        must_hold_through: LogIndex,
    ) -> Result<Wal, WalError> {
        Wal::open_holding_term(disk, dir, options, must_hold_through, None)
    }

    /// Opens the log like [`Wal::open_holding`], and also fails with [`WalError::Corrupt`]
    /// (changing nothing) if the log holds an entry at `committed.0` whose term is not
    /// `committed.1`: a damaged write that replaced entries (a truncation), cut off as if
    /// torn, would otherwise bring the replaced ones back under the commit index.
    pub fn open_holding_term(
        disk: Arc<dyn Disk>,
        dir: &Path,
        options: WalOptions,
        must_hold_through: LogIndex,
        committed: Option<(LogIndex, Term)>,
    ) -> Result<Wal, WalError> {
        let minimum = MINIMUM_SEGMENT_BYTES;
        if options.segment_bytes < minimum || options.frame_bytes_max == 0 {
            return Err(WalError::Invalid(format!(
                "segment_bytes must be at least {minimum} and frame_bytes_max at least 1"
            )));
        }
        let names = match disk.list(dir) {
            Ok(names) => names,
            Err(error) if error.kind() == io::ErrorKind::NotFound && options.create_if_missing => {
                disk.create_dir_all(dir).map_err(io_error("create directory", dir))?;
                let parent = match dir.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent,
                    _ => Path::new("."),
                };
                disk.sync_dir(parent).map_err(io_error("sync", parent))?;
                Vec::new()
            }
            Err(error) => return Err(io_error("list the log directory", dir)(error)),
        };
        let mut numbers: Vec<u64> = Vec::new();
        for name in &names {
            if let Some(number) = parse_segment_name(name) {
                numbers.push(number);
            } else if name.ends_with(".seg.tmp") {
                // A segment whose creation a crash interrupted: never part of the log.
                let path = dir.join(name);
                disk.remove(&path).map_err(io_error("remove", &path))?;
            }
        }
        numbers.sort_unstable();
        let mut wal = Wal {
            disk,
            dir: dir.to_path_buf(),
            options,
            segments: Vec::new(),
            write_offset: 0,
            next_sequence: 1,
            first_index: LogIndex(1),
            restarted: false,
            locations: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            unsynced: BTreeSet::new(),
            synced_through: 0,
            poisoned: None,
        };
        if numbers.is_empty() {
            if must_hold_through > LogIndex::ZERO {
                return Err(WalError::Corrupt {
                    path: dir.to_path_buf(),
                    offset: 0,
                    detail: format!(
                        "the log is empty but entries through {must_hold_through} were committed"
                    ),
                    intact_through: None,
                    found_again_from: None,
                });
            }
            wal.start_segment(1)?;
            return Ok(wal);
        }
        let count = numbers.len();
        let mut torn_tail = None;
        for (position, number) in numbers.into_iter().enumerate() {
            torn_tail = wal.recover_segment(number, position == 0, position + 1 == count)?;
        }
        if wal.last_index_if_any().unwrap_or(wal.first_index.prev()) < must_hold_through {
            let (path, offset) = torn_tail.clone().unwrap_or_else(|| {
                (wal.segments.last().map(|s| s.path.clone()).unwrap_or_default(), wal.write_offset)
            });
            return Err(WalError::Corrupt {
                path,
                offset,
                detail: format!(
                    "the log ends at {} but entries through {must_hold_through} were committed",
                    wal.last_index()
                ),
                intact_through: wal.last_index_if_any(),
                found_again_from: None,
            });
        }
        if let Some((index, expected)) = committed {
            match wal.term(index) {
                Some(held) if held != expected && index > LogIndex::ZERO => {
                    let (path, offset) = torn_tail.clone().unwrap_or_else(|| {
                        let path = wal.segments.last().map(|s| s.path.clone()).unwrap_or_default();
                        (path, wal.write_offset)
                    });
                    return Err(WalError::Corrupt {
                        path,
                        offset,
                        detail: format!(
                            "entry {index} is of term {held}, but the one committed there is of \
                             term {expected}: a write that replaced it is damaged"
                        ),
                        intact_through: wal.last_index_if_any(),
                        found_again_from: None,
                    });
                }
                _ => {}
            }
        }
        if let Some((path, offset)) = torn_tail {
            // Cut off the torn write and zero what it left, so nothing of it is read again.
            let segment =
                wal.segments.last_mut().ok_or_else(|| WalError::Invalid("no segment".into()))?;
            let len = segment.file.len().map_err(io_error("read the length of", &path))?;
            let zeros = vec![0u8; len.saturating_sub(offset) as usize];
            segment
                .file
                .write_at(offset, &zeros)
                .map_err(io_error("zero the torn tail of", &path))?;
        }
        // What survived a process crash may still sit in the page cache: make it durable
        // before anything counts it as synced.
        for segment in &mut wal.segments {
            segment.file.sync_data().map_err(io_error("sync", &segment.path))?;
        }
        // Likewise a segment's name (a crash between its rename and the directory sync).
        wal.disk.sync_dir(&wal.dir).map_err(io_error("sync", &wal.dir))?;
        wal.synced_through = wal.next_sequence - 1;
        Ok(wal)
    }

    /// Reads one segment back, adding its records to the log. Returns where a torn tail
    /// starts, if the segment has one.
    fn recover_segment(
        &mut self,
        number: u64,
        first: bool,
        last: bool,
    ) -> Result<Option<(PathBuf, u64)>, WalError> {
        let path = self.dir.join(segment_name(number));
        let file = self.disk.open(&path, false).map_err(io_error("open", &path))?;
        let len = file.len().map_err(io_error("read the length of", &path))?;
        if len > self.options.segment_bytes.max(MINIMUM_SEGMENT_BYTES) * 2 {
            let detail = format!("the segment is {len} bytes, far more than segments are");
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                detail,
                intact_through: self.last_index_if_any(),
                found_again_from: None,
            });
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_at(0, &mut bytes).map_err(io_error("read", &path))?;
        let corrupt =
            |wal: &Wal, offset: u64, detail: String, found: Option<LogIndex>| WalError::Corrupt {
                path: path.clone(),
                offset,
                detail,
                intact_through: wal.last_index_if_any(),
                found_again_from: found,
            };
        let header = decode_header(&bytes)
            .filter(|header| header.kind == FrameKind::SegmentHeader)
            .and_then(|header| {
                let end = FRAME_HEADER_BYTES + header.body_len as usize;
                let body = bytes.get(FRAME_HEADER_BYTES..end)?;
                body_matches(&header, body).then_some((header, body))
            })
            .and_then(|(header, body)| {
                postcard::from_bytes::<SegmentHeader>(body).ok().map(|parsed| (header, parsed))
            });
        let Some((frame, segment_header)) = header else {
            return Err(corrupt(self, 0, "the segment header is unreadable".to_string(), None));
        };
        if segment_header.first_sequence == 0
            || segment_header.first_sequence > VALUE_MAX
            || segment_header.next_index.get() > VALUE_MAX
        {
            return Err(corrupt(
                self,
                0,
                "the segment header holds impossible values".into(),
                None,
            ));
        }
        if segment_header.number != number {
            return Err(corrupt(self, 0, "the segment header names another segment".into(), None));
        }
        if first {
            self.next_sequence = segment_header.first_sequence;
            self.first_index = segment_header.next_index;
        } else if segment_header.first_sequence != self.next_sequence {
            let detail = format!(
                "frames {} to {} are missing before this segment",
                self.next_sequence, segment_header.first_sequence
            );
            return Err(corrupt(self, 0, detail, None));
        }
        let mut offset = frame.frame_bytes();
        let mut torn = false;
        while offset + FRAME_HEADER_BYTES as u64 <= len {
            if let Some((header, body)) = self.valid_frame_at(&bytes, offset) {
                let body = body.to_vec();
                self.replay_frame(number, offset, &body)
                    .map_err(|detail| corrupt(self, offset, detail, None))?;
                offset += header.frame_bytes();
                self.next_sequence += 1;
                continue;
            }
            // The log ends here, or something went wrong here. Only a write that had not been
            // synced may be missing or torn; a later frame recording that this one was synced
            // proves damage.
            let evidence = self.find_synced_evidence(&bytes, offset + FRAME_ALIGN);
            if evidence.is_some() || (!last && !is_zero(&bytes[offset as usize..])) {
                let found_index = evidence.and_then(|body| first_entry_index(&body));
                let detail = if last {
                    "a frame is missing or fails its checksum, though a later frame records it \
                     as synced"
                        .to_string()
                } else {
                    "a frame fails its checksum in a segment that was complete".to_string()
                };
                return Err(corrupt(self, offset, detail, found_index));
            }
            torn = !is_zero(&bytes[offset as usize..]);
            break;
        }
        self.segments.push(Segment { number, path: path.clone(), file });
        self.write_offset = offset;
        Ok((last && torn).then_some((path, offset)))
    }

    /// The frame at `offset` if it is a complete, checksummed record frame with the expected
    /// sequence number.
    fn valid_frame_at<'a>(
        &self,
        bytes: &'a [u8],
        offset: u64,
    ) -> Option<(crate::frame::FrameHeader, &'a [u8])> {
        let at = offset as usize;
        let header = decode_header(bytes.get(at..)?)?;
        if header.kind != FrameKind::Records || header.sequence != self.next_sequence {
            return None;
        }
        let start = at + FRAME_HEADER_BYTES;
        let body = bytes.get(start..start.checked_add(header.body_len as usize)?)?;
        body_matches(&header, body).then_some((header, body))
    }

    /// Looks from `offset` on for a valid record frame that records the expected frame as
    /// synced: proof that the frame expected here had been made durable. Returns its body.
    fn find_synced_evidence(&self, bytes: &[u8], mut offset: u64) -> Option<Vec<u8>> {
        while offset + FRAME_HEADER_BYTES as u64 <= bytes.len() as u64 {
            let at = offset as usize;
            if let Some(header) = decode_header(&bytes[at..]) {
                let start = at + FRAME_HEADER_BYTES;
                let end = start.saturating_add(header.body_len as usize);
                if header.kind == FrameKind::Records
                    && header.sequence > self.next_sequence
                    && end <= bytes.len()
                    // The cheap check first; the checksum only for a plausible candidate.
                    && synced_through(&bytes[start..end])
                        .is_some_and(|synced| synced >= self.next_sequence)
                    && body_matches(&header, &bytes[start..end])
                {
                    return Some(bytes[start..end].to_vec());
                }
            }
            offset += FRAME_ALIGN;
        }
        None
    }

    /// Applies the records of one frame to the in-memory log.
    fn replay_frame(&mut self, segment: u64, frame_offset: u64, body: &[u8]) -> Result<(), String> {
        if body.len() < SYNCED_THROUGH_BYTES {
            return Err("a record frame is too short".to_string());
        }
        let mut position = SYNCED_THROUGH_BYTES;
        while position < body.len() {
            let (payload, used) = decode_record(&body[position..])
                .map_err(|error| format!("a record in a checksummed frame is bad: {error:?}"))?;
            let record: Record = postcard::from_bytes(payload)
                .map_err(|error| format!("a record does not decode: {error}"))?;
            let offset = frame_offset + (FRAME_HEADER_BYTES + position) as u64;
            match record {
                Record::Truncate(from) if from.get() > VALUE_MAX => {
                    return Err(format!("a truncation from {from} is impossible"));
                }
                Record::Truncate(from) if from < self.first_index => {
                    // The truncated entries lay in segments since compacted away: the log
                    // restarts at `from`.
                    self.locations.clear();
                    self.first_index = from;
                    self.cache.clear();
                    self.cache_bytes = 0;
                }
                Record::Truncate(from) => self.truncate_in_memory(from)?,
                Record::Restart(from) if from.get() > VALUE_MAX || from == LogIndex::ZERO => {
                    return Err(format!("a restart at {from} is impossible"));
                }
                Record::Restart(from) => self.restart_in_memory(from),
                Record::Entry(entry) => {
                    if entry.index.get() > VALUE_MAX || entry.term.get() > VALUE_MAX {
                        return Err(format!("entry {} holds impossible values", entry.index));
                    }
                    self.check_next(&entry)?;
                    let len = used as u32;
                    self.locations.push_back(Location { term: entry.term, segment, offset, len });
                    self.restarted = false;
                    self.cache_push(entry);
                }
            }
            position += used;
        }
        Ok(())
    }

    // ----- writing ------------------------------------------------------------------------

    /// Appends, after removing every entry from `truncate_from` on (if given), the given
    /// consecutive entries. Written, not yet durable: call [`Wal::sync`].
    pub fn append(
        &mut self,
        truncate_from: Option<LogIndex>,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        if let Some(reason) = &self.poisoned {
            return Err(WalError::Poisoned(reason.clone()));
        }
        // Check everything before writing anything.
        let mut next = match truncate_from {
            Some(from) => {
                if from < self.first_index || from > self.next_index() {
                    return Err(WalError::Invalid(format!(
                        "cannot truncate from {from}: the log holds {}..{}",
                        self.first_index,
                        self.next_index()
                    )));
                }
                from
            }
            None => self.next_index(),
        };
        for (position, entry) in entries.iter().enumerate() {
            // Only the first entry of a new, empty log may start anywhere; after a restart
            // the log continues exactly where the restart says.
            let starts_empty_log = position == 0
                && truncate_from.is_none()
                && self.locations.is_empty()
                && !self.restarted;
            if entry.index != next && !starts_empty_log {
                return Err(WalError::Invalid(format!(
                    "entry {} does not follow index {}",
                    entry.index,
                    next.prev()
                )));
            }
            next = entry.index.next();
        }
        let mut records: Vec<Vec<u8>> = Vec::with_capacity(entries.len() + 1);
        if let Some(from) = truncate_from {
            records.push(encode(&Record::Truncate(from))?);
        }
        for entry in entries {
            records.push(encode(&Record::Entry(entry.clone()))?);
        }
        // Group the records into frames, and check every frame fits in a segment, before
        // writing any of them.
        // A frame holds at most `frame_bytes_max` of records and must fit in an empty segment,
        // so a batch of entries that each fit never fails for being a batch.
        let room = self.options.segment_bytes - self.segment_header_bytes()?;
        let frame_overhead = FRAME_HEADER_BYTES as u64 + SYNCED_THROUGH_BYTES as u64;
        let frame_room = room.saturating_sub(frame_overhead + crate::frame::FRAME_ALIGN);
        let mut frames: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut pending_framed = 0u64;
        let mut pending_bytes = 0u64;
        for record in records {
            let framed = (record.len() + RECORD_HEADER_BYTES) as u64;
            if !pending.is_empty()
                && (pending_bytes + record.len() as u64 > self.options.frame_bytes_max
                    || pending_framed + framed > frame_room)
            {
                frames.push(std::mem::take(&mut pending));
                pending_bytes = 0;
                pending_framed = 0;
            }
            pending_bytes += record.len() as u64;
            pending_framed += framed;
            pending.push(record);
        }
        if !pending.is_empty() {
            frames.push(pending);
        }
        for frame in &frames {
            let framed: u64 =
                frame.iter().map(|record| (record.len() + RECORD_HEADER_BYTES) as u64).sum();
            let bytes = align(FRAME_HEADER_BYTES as u64 + SYNCED_THROUGH_BYTES as u64 + framed);
            if bytes > room {
                return Err(WalError::Invalid(format!(
                    "a {bytes}-byte write does not fit in a {}-byte segment",
                    self.options.segment_bytes
                )));
            }
        }
        let mut entry_iter = entries.iter();
        let mut truncation_pending = truncate_from;
        for (position, frame) in frames.into_iter().enumerate() {
            if let Err(error) = self.write_frame(frame, &mut truncation_pending, &mut entry_iter) {
                if position > 0 && self.poisoned.is_none() {
                    // Part of this append is written and applied: the caller cannot retry it.
                    self.poisoned = Some(format!("an append failed half way: {error}"));
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// The bytes a segment's header frame takes, at most.
    fn segment_header_bytes(&self) -> Result<u64, WalError> {
        let header = SegmentHeader {
            number: u64::MAX,
            first_sequence: u64::MAX,
            next_index: LogIndex(u64::MAX),
        };
        Ok(align((FRAME_HEADER_BYTES + encode(&header)?.len()) as u64))
    }

    /// Writes one frame of encoded records and applies them to the in-memory log.
    fn write_frame(
        &mut self,
        records: Vec<Vec<u8>>,
        truncation: &mut Option<LogIndex>,
        entries: &mut std::slice::Iter<'_, Entry>,
    ) -> Result<(), WalError> {
        let mut body = Vec::new();
        body.extend_from_slice(&self.synced_through.to_le_bytes());
        // (offset in the body, framed length) of each record.
        let mut offsets = Vec::with_capacity(records.len());
        for record in &records {
            let start = body.len();
            encode_record(record, &mut body);
            offsets.push((start, body.len() - start));
        }
        let frame = encode_frame(FrameKind::Records, self.next_sequence, &body);
        if self.write_offset + frame.len() as u64 > self.options.segment_bytes {
            let number = self.segments.last().map_or(1, |segment| segment.number + 1);
            self.start_segment(number)?;
        }
        let offset = self.write_offset;
        let segment =
            self.segments.last_mut().ok_or_else(|| WalError::Invalid("no segment".into()))?;
        if let Err(source) = segment.file.write_at(offset, &frame) {
            let reason = format!("writing {} failed: {source}", segment.path.display());
            self.poisoned = Some(reason);
            return Err(io_error("write", &segment.path)(source));
        }
        let segment_number = segment.number;
        self.unsynced.insert(segment_number);
        self.write_offset += frame.len() as u64;
        self.next_sequence += 1;
        for (position, (record_offset, record_len)) in offsets.into_iter().enumerate() {
            if position == 0 {
                if let Some(from) = truncation.take() {
                    self.truncate_in_memory(from).map_err(WalError::Invalid)?;
                    continue;
                }
            }
            let Some(entry) = entries.next() else { break };
            let location = Location {
                term: entry.term,
                segment: segment_number,
                offset: offset + (FRAME_HEADER_BYTES + record_offset) as u64,
                len: record_len as u32,
            };
            if self.locations.is_empty() {
                self.first_index = entry.index;
            }
            self.locations.push_back(location);
            self.restarted = false;
            self.cache_push(entry.clone());
        }
        Ok(())
    }

    /// Drops every entry: the log restarts at `from` (the next entry appended must be `from`),
    /// after a snapshot through `from - 1` replaced it. Written, not yet durable: call
    /// [`Wal::sync`]. The dropped entries' segments go at the next [`Wal::compact`].
    pub fn restart_at(&mut self, from: LogIndex) -> Result<(), WalError> {
        if let Some(reason) = &self.poisoned {
            return Err(WalError::Poisoned(reason.clone()));
        }
        if from == LogIndex::ZERO || from.get() > VALUE_MAX {
            return Err(WalError::Invalid(format!("cannot restart the log at {from}")));
        }
        let record = encode(&Record::Restart(from))?;
        self.write_frame(vec![record], &mut None, &mut [].iter())?;
        self.restart_in_memory(from);
        Ok(())
    }

    /// Makes every write so far durable: one `fdatasync` per segment written since the last.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if let Some(reason) = &self.poisoned {
            return Err(WalError::Poisoned(reason.clone()));
        }
        let numbers: Vec<u64> = self.unsynced.iter().copied().collect();
        #[cfg(feature = "sabotage")]
        let numbers = if self.options.sabotage_skip_sync { Vec::new() } else { numbers };
        for number in numbers {
            let Some(segment) = self.segments.iter_mut().find(|segment| segment.number == number)
            else {
                return Err(WalError::Invalid(format!("segment {number} was written but is gone")));
            };
            if let Err(source) = segment.file.sync_data() {
                // After a failed fsync the kernel may have dropped the dirty pages: what is on
                // disk is unknown, so refuse to go on (the fsyncgate lesson).
                let reason = format!("syncing {} failed: {source}", segment.path.display());
                self.poisoned = Some(reason);
                return Err(io_error("sync", &segment.path)(source));
            }
        }
        self.unsynced.clear();
        self.synced_through = self.next_sequence - 1;
        Ok(())
    }

    /// Starts segment `number`: written under a temporary name, zero-filled, its header
    /// written and synced, then renamed into place and the directory synced. The segment
    /// before it is synced first, so a bad frame in any segment but the last is corruption.
    fn start_segment(&mut self, number: u64) -> Result<(), WalError> {
        self.sync()?;
        let path = self.dir.join(segment_name(number));
        let temporary = self.dir.join(format!("{}.tmp", segment_name(number)));
        let header = SegmentHeader {
            number,
            first_sequence: self.next_sequence,
            next_index: self.next_index(),
        };
        let frame = encode_frame(FrameKind::SegmentHeader, 0, &encode(&header)?);
        let file = self.prepare_segment(&temporary, &frame).inspect_err(|_| {
            // Best effort: a leftover temporary file is removed at the next open anyway.
            let _ = self.disk.remove(&temporary);
        })?;
        // Once the name is in place the segment is part of the log: a failure from here on
        // leaves the directory in an unknown state, so the log is poisoned.
        let placed = self
            .disk
            .rename(&temporary, &path)
            .map_err(io_error("rename", &temporary))
            .and_then(|()| self.disk.sync_dir(&self.dir).map_err(io_error("sync", &self.dir)));
        if let Err(error) = placed {
            self.poisoned = Some(error.to_string());
            return Err(error);
        }
        self.segments.push(Segment { number, path, file });
        self.write_offset = frame.len() as u64;
        Ok(())
    }

    /// Creates, zero-fills and writes the header of a new segment under a temporary name.
    fn prepare_segment(
        &self,
        temporary: &Path,
        header: &[u8],
    ) -> Result<Box<dyn DiskFile>, WalError> {
        let mut file = self.disk.open(temporary, true).map_err(io_error("create", temporary))?;
        let zeros = vec![0u8; (1 << 20).min(self.options.segment_bytes as usize)];
        let mut written = 0u64;
        while written < self.options.segment_bytes {
            let chunk = (self.options.segment_bytes - written).min(zeros.len() as u64) as usize;
            file.write_at(written, &zeros[..chunk]).map_err(io_error("preallocate", temporary))?;
            written += chunk as u64;
        }
        file.write_at(0, header).map_err(io_error("write the header of", temporary))?;
        file.sync_data().map_err(io_error("sync", temporary))?;
        Ok(file)
    }

    /// Deletes every segment all of whose entries are below `index` (never the one being
    /// written). Only compact below what is committed and captured by a durable snapshot.
    pub fn compact(&mut self, index: LogIndex) -> Result<(), WalError> {
        // Which segments hold live entries depends on truncations that may not be durable yet:
        // make them durable first, or a crash could bring back entries whose segment is gone.
        self.sync()?;
        let Some(active) = self.segments.last().map(|segment| segment.number) else {
            return Ok(());
        };
        let keep_from = match self.location(index) {
            Some(location) => location.segment,
            None if index >= self.next_index() => active,
            None => return Ok(()),
        };
        // Oldest first, one at a time, each removal made durable before the next: the log on
        // disk never has a gap in its segments, and a failed removal is retried next time.
        while self.segments.first().is_some_and(|segment| segment.number < keep_from) {
            let (number, path) = match self.segments.first() {
                Some(segment) => (segment.number, segment.path.clone()),
                None => break,
            };
            self.disk.remove(&path).map_err(io_error("remove", &path))?;
            self.disk.sync_dir(&self.dir).map_err(io_error("sync", &self.dir))?;
            self.segments.remove(0);
            self.unsynced.remove(&number);
            while self.locations.front().is_some_and(|location| location.segment == number) {
                self.locations.pop_front();
                self.first_index = self.first_index.next();
            }
            while self.cache.front().is_some_and(|entry| entry.index < self.first_index) {
                self.cache_pop_front();
            }
        }
        Ok(())
    }

    // ----- reading ------------------------------------------------------------------------

    /// The index of the first entry held (or of the next entry, if none is held).
    pub fn first_index(&self) -> LogIndex {
        self.first_index
    }

    /// The index of the last entry held, or the one before `first_index` if none.
    pub fn last_index(&self) -> LogIndex {
        self.first_index.plus(self.locations.len() as u64).prev()
    }

    fn last_index_if_any(&self) -> Option<LogIndex> {
        (!self.locations.is_empty()).then(|| self.last_index())
    }

    fn next_index(&self) -> LogIndex {
        self.first_index.plus(self.locations.len() as u64)
    }

    /// The term of the entry at `index`, if held.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        self.location(index).map(|location| location.term)
    }

    fn location(&self, index: LogIndex) -> Option<&Location> {
        let offset = index.get().checked_sub(self.first_index.get())?;
        self.locations.get(usize::try_from(offset).ok()?)
    }

    /// The entries `from..=to` that are held, up to `bytes_max` of them (at least one),
    /// from the cache or read back from disk and checked.
    pub fn entries(
        &self,
        from: LogIndex,
        to: LogIndex,
        bytes_max: u64,
    ) -> Result<Vec<Entry>, WalError> {
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut index = from.max(self.first_index);
        let to = to.min(self.last_index());
        let cache_first = self.cache.front().map(|entry| entry.index);
        while index <= to {
            let cached = cache_first
                .and_then(|first| index.get().checked_sub(first.get()))
                .and_then(|offset| self.cache.get(offset as usize))
                .filter(|entry| entry.index == index);
            let entry = match cached {
                Some(entry) => entry.clone(),
                None => self.read_entry(index)?,
            };
            bytes += entry.size_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(entry);
            index = index.next();
        }
        Ok(out)
    }

    fn read_entry(&self, index: LogIndex) -> Result<Entry, WalError> {
        let location = *self
            .location(index)
            .ok_or_else(|| WalError::Invalid(format!("entry {index} is not in the log")))?;
        let segment =
            self.segments.iter().find(|segment| segment.number == location.segment).ok_or_else(
                || WalError::Invalid(format!("entry {index} lies in a removed segment")),
            )?;
        let mut bytes = vec![0u8; location.len as usize];
        segment
            .file
            .read_at(location.offset, &mut bytes)
            .map_err(io_error("read", &segment.path))?;
        let corrupt = |detail: String| WalError::Corrupt {
            path: segment.path.clone(),
            offset: location.offset,
            detail,
            intact_through: Some(index.prev()),
            found_again_from: Some(index.next()),
        };
        let (payload, _) = decode_record(&bytes)
            .map_err(|error| corrupt(format!("entry {index} fails its check: {error:?}")))?;
        match postcard::from_bytes::<Record>(payload) {
            Ok(Record::Entry(entry)) if entry.index == index => Ok(entry),
            _ => Err(corrupt(format!("the record for entry {index} holds something else"))),
        }
    }

    // ----- in-memory bookkeeping ----------------------------------------------------------

    fn check_next(&mut self, entry: &Entry) -> Result<(), String> {
        if self.locations.is_empty() && self.restarted && entry.index != self.first_index {
            return Err(format!("entry {} follows a restart at {}", entry.index, self.first_index));
        }
        if self.locations.is_empty() {
            self.first_index = entry.index;
            return Ok(());
        }
        if entry.index != self.next_index() {
            return Err(format!(
                "entry {} does not follow index {}",
                entry.index,
                self.last_index()
            ));
        }
        Ok(())
    }

    fn restart_in_memory(&mut self, from: LogIndex) {
        self.locations.clear();
        self.first_index = from;
        self.restarted = true;
        self.cache.clear();
        self.cache_bytes = 0;
    }

    fn truncate_in_memory(&mut self, from: LogIndex) -> Result<(), String> {
        if from < self.first_index || from > self.next_index() {
            return Err(format!(
                "a truncation from {from} lies outside the log {}..{}",
                self.first_index,
                self.next_index()
            ));
        }
        let keep = (from.get() - self.first_index.get()) as usize;
        self.locations.truncate(keep);
        while self.cache.back().is_some_and(|entry| entry.index >= from) {
            if let Some(entry) = self.cache.pop_back() {
                self.cache_bytes -= entry.size_bytes();
            }
        }
        Ok(())
    }

    fn cache_push(&mut self, entry: Entry) {
        self.cache_bytes += entry.size_bytes();
        self.cache.push_back(entry);
        while self.cache_bytes > self.options.cache_bytes_max && self.cache.len() > 1 {
            self.cache_pop_front();
        }
    }

    fn cache_pop_front(&mut self) {
        if let Some(entry) = self.cache.pop_front() {
            self.cache_bytes -= entry.size_bytes();
        }
    }
}

/// Damage that opening the log reported, surveyed so that the log can be cut at it and the
/// lost entries fetched again from other replicas (see [`Wal::survey_damage`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment the damage starts in.
    pub segment: u64,
    /// Where in it (0: the segment is unreadable from its header on).
    pub offset: u64,
    /// Entries up to here read back intact and are kept.
    pub intact_through: Option<LogIndex>,
    /// The highest entry index found in any intact frame or segment header of the log (one
    /// after the damage bounds what the damaged frames held): this replica held entries at
    /// least that far, and may have acknowledged them.
    pub found_through: LogIndex,
    /// What was wrong, as opening the log reported it.
    pub detail: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", segment_name(self.segment), self.offset, self.detail)?;
        write!(f, "; the log held entries through {}", self.found_through)
    }
}

impl Wal {
    /// Looks at the damage `error` (from opening the log in `dir`) reported, to cut the log
    /// there: where it starts, and how far the log reached after it. `None` when the log
    /// cannot be cut safely: the error is not damage inside a segment, or nothing intact after
    /// the damage tells how far the log reached (the damaged frames may have held entries
    /// this replica acknowledged, and no bound on them is known).
    pub fn survey_damage(
        disk: &dyn Disk,
        dir: &Path,
        options: &WalOptions,
        error: &WalError,
    ) -> Result<Option<Damage>, WalError> {
        let WalError::Corrupt { path, offset, detail, intact_through, .. } = error else {
            return Ok(None);
        };
        let Some(segment) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(parse_segment_name)
            .filter(|_| path.parent() == Some(dir))
        else {
            return Ok(None);
        };
        let mut numbers: Vec<u64> = disk
            .list(dir)
            .map_err(io_error("list the log directory", dir))?
            .iter()
            .filter_map(|name| parse_segment_name(name))
            .collect();
        numbers.sort_unstable();
        let size_max = options.segment_bytes.max(MINIMUM_SEGMENT_BYTES) * 2;
        // What intact frames after the damage name bounds what the damaged ones held; the
        // frames before it count too, as the whole log is dropped.
        let (mut before, mut after): (Option<LogIndex>, Option<LogIndex>) = (None, None);
        for number in numbers {
            let path = dir.join(segment_name(number));
            let file = disk.open(&path, false).map_err(io_error("open", &path))?;
            let len = file.len().map_err(io_error("read the length of", &path))?.min(size_max);
            let mut bytes = vec![0u8; len as usize];
            file.read_at(0, &mut bytes).map_err(io_error("read", &path))?;
            if number < segment {
                before = before.max(highest_index_in(&bytes, 0));
            } else if number == segment {
                let end = (*offset as usize).min(bytes.len());
                before = before.max(highest_index_in(&bytes[..end], 0));
                after = after.max(highest_index_in(&bytes, *offset + FRAME_ALIGN));
            } else {
                after = after.max(highest_index_in(&bytes, 0));
            }
        }
        Ok(after.map(|after| Damage {
            segment,
            offset: *offset,
            intact_through: *intact_through,
            found_through: after.max(before.unwrap_or(LogIndex::ZERO)),
            detail: detail.clone(),
        }))
    }

    /// The highest entry index any intact frame (or segment header) of the log in `dir`
    /// names, whatever the state of the rest: how far the log reached.
    pub fn highest_index(disk: &dyn Disk, dir: &Path) -> Result<Option<LogIndex>, WalError> {
        let names = match disk.list(dir) {
            Ok(names) => names,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("list the log directory", dir)(error)),
        };
        let mut found = None;
        for number in names.iter().filter_map(|name| parse_segment_name(name)) {
            let path = dir.join(segment_name(number));
            let file = disk.open(&path, false).map_err(io_error("open", &path))?;
            let len = file.len().map_err(io_error("read the length of", &path))?;
            let mut bytes = vec![0u8; len as usize];
            file.read_at(0, &mut bytes).map_err(io_error("read", &path))?;
            found = found.max(highest_index_in(&bytes, 0));
        }
        Ok(found)
    }

    /// Sets every segment of the log in `dir` aside (renamed to `<name>.damaged`, never read
    /// again; remove them at will): the log is empty afterwards. A replica whose log is
    /// damaged drops all of it, not only what follows the damage: a damaged frame may have
    /// held a truncation, so what precedes it may be entries the log had since replaced.
    /// Record what was lost durably before calling this: after it, nothing on disk says.
    pub fn set_aside(disk: &dyn Disk, dir: &Path) -> Result<(), WalError> {
        let mut numbers: Vec<u64> = disk
            .list(dir)
            .map_err(io_error("list the log directory", dir))?
            .iter()
            .filter_map(|name| parse_segment_name(name))
            .collect();
        // Newest first: a crash part way leaves the log a run of consecutive segments.
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        for number in numbers {
            let path = dir.join(segment_name(number));
            let aside = dir.join(format!("{}.damaged", segment_name(number)));
            match disk.remove(&aside) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error("remove", &aside)(error)),
            }
            disk.rename(&path, &aside).map_err(io_error("rename", &path))?;
        }
        disk.sync_dir(dir).map_err(io_error("sync", dir))
    }
}

/// The highest entry index in any intact record frame (checksum good, any sequence) or
/// segment header found in `bytes` from `start` on.
fn highest_index_in(bytes: &[u8], start: u64) -> Option<LogIndex> {
    let mut found: Option<LogIndex> = None;
    let mut offset = align(start);
    while offset + FRAME_HEADER_BYTES as u64 <= bytes.len() as u64 {
        let at = offset as usize;
        let Some(header) = decode_header(&bytes[at..]) else {
            offset += FRAME_ALIGN;
            continue;
        };
        let begin = at + FRAME_HEADER_BYTES;
        let Some(body) = begin
            .checked_add(header.body_len as usize)
            .and_then(|end| bytes.get(begin..end))
            .filter(|body| body_matches(&header, body))
        else {
            offset += FRAME_ALIGN;
            continue;
        };
        match header.kind {
            FrameKind::Records => found = found.max(last_entry_index(body)),
            FrameKind::SegmentHeader => {
                let before = postcard::from_bytes::<SegmentHeader>(body)
                    .ok()
                    .map(|segment| segment.next_index.prev())
                    .filter(|index| *index > LogIndex::ZERO && index.get() <= VALUE_MAX);
                found = found.max(before);
            }
            _ => {}
        }
        offset += header.frame_bytes();
    }
    found
}

/// The highest index the records of a frame body name: an entry's, or the index before a
/// truncation or a restart (the log reached at least that far).
fn last_entry_index(body: &[u8]) -> Option<LogIndex> {
    let mut position = SYNCED_THROUGH_BYTES;
    let mut last = None;
    while position < body.len() {
        let Ok((payload, used)) = decode_record(&body[position..]) else { break };
        let named = match postcard::from_bytes::<Record>(payload) {
            Ok(Record::Entry(entry)) => Some(entry.index),
            Ok(Record::Truncate(from) | Record::Restart(from)) => {
                Some(from.prev()).filter(|index| *index > LogIndex::ZERO)
            }
            Err(_) => None,
        };
        last = last.max(named.filter(|index| index.get() <= VALUE_MAX));
        position += used;
    }
    last
}

/// Tests only: where the record frames of the log in `dir` lie, oldest first, as (segment
/// file, offset, length of header and body, whether damage to it would be found: a later
/// frame records it as synced, or its segment is complete), for damaging one on purpose.
#[doc(hidden)]
pub fn record_frames(disk: &dyn Disk, dir: &Path) -> io::Result<Vec<(PathBuf, u64, u64, bool)>> {
    let mut numbers: Vec<u64> =
        disk.list(dir)?.iter().filter_map(|name| parse_segment_name(name)).collect();
    numbers.sort_unstable();
    let last_segment = numbers.last().copied();
    // (path, offset, len, sequence, synced through, in a complete segment)
    let mut frames = Vec::new();
    for number in numbers {
        let path = dir.join(segment_name(number));
        let file = disk.open(&path, false)?;
        let mut bytes = vec![0u8; file.len()? as usize];
        file.read_at(0, &mut bytes)?;
        let mut offset = 0u64;
        while let Some(header) = decode_header(bytes.get(offset as usize..).unwrap_or_default()) {
            let begin = offset as usize + FRAME_HEADER_BYTES;
            let Some(body) = bytes.get(begin..begin + header.body_len as usize) else { break };
            if !body_matches(&header, body) {
                break;
            }
            if header.kind == FrameKind::Records {
                let len = (FRAME_HEADER_BYTES + body.len()) as u64;
                let synced = synced_through(body).unwrap_or(0);
                let complete = Some(number) != last_segment;
                frames.push((path.clone(), offset, len, header.sequence, synced, complete));
            }
            offset += header.frame_bytes();
        }
    }
    let mut proven_through = 0u64;
    let mut out = Vec::with_capacity(frames.len());
    for (path, offset, len, sequence, synced, complete) in frames.into_iter().rev() {
        out.push((path, offset, len, complete || proven_through >= sequence));
        proven_through = proven_through.max(synced);
    }
    out.reverse();
    Ok(out)
}

/// Segments smaller than this cannot hold a header and a useful frame.
const MINIMUM_SEGMENT_BYTES: u64 = 2 * FRAME_HEADER_BYTES as u64 + 256;

/// Sequence numbers, indexes and terms read from disk above this are impossible.
const VALUE_MAX: u64 = u64::MAX / 2;

/// A record frame's body starts with the `synced_through` its writer knew.
const SYNCED_THROUGH_BYTES: usize = 8;

fn synced_through(body: &[u8]) -> Option<u64> {
    let mut raw = [0u8; SYNCED_THROUGH_BYTES];
    raw.copy_from_slice(body.get(..SYNCED_THROUGH_BYTES)?);
    Some(u64::from_le_bytes(raw))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WalError> {
    postcard::to_stdvec(value).map_err(|error| WalError::Invalid(format!("cannot encode: {error}")))
}

/// The index of the first entry in a frame body, if any.
fn first_entry_index(body: &[u8]) -> Option<LogIndex> {
    let mut position = SYNCED_THROUGH_BYTES;
    while position < body.len() {
        let (payload, used) = decode_record(&body[position..]).ok()?;
        if let Ok(Record::Entry(entry)) = postcard::from_bytes::<Record>(payload) {
            return Some(entry.index);
        }
        position += used;
    }
    None
}
