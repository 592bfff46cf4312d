//! The on-disk framing shared by the log and the hard state.
//!
//! A **frame** is one write: a 24-byte header and a body, padded to 8 bytes.
//!
//! ```text
//! magic u32 | version u8 | kind u8 | reserved u16 | body_len u32 | crc32c u32 | sequence u64 | body
//! ```
//!
//! The CRC32C covers the header (with the CRC field as zero) and the body. Frames of the log
//! carry a sequence number that grows by one per frame across all segments, so a frame left
//! over from before a truncation or a crash is never taken for a current one.
//!
//! Inside a log frame the body is a run of **records**, each framed on its own:
//!
//! ```text
//! len u32 | crc32c u32 | version u8 | payload (postcard)
//! ```
//!
//! where `len` counts the payload and the CRC covers the version byte and the payload.

/// Marks the start of every frame ("LKST").
pub const FRAME_MAGIC: u32 = 0x4C4B_5354;
/// The format version of frames and records this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes in a frame header.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Frames start at multiples of this.
pub const FRAME_ALIGN: u64 = 8;
/// Bytes of a record's framing before its payload.
pub const RECORD_HEADER_BYTES: usize = 9;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A segment's header.
    SegmentHeader = 1,
    /// Log records.
    Records = 2,
    /// A copy of the hard state.
    HardState = 3,
    /// A snapshot's metadata.
    SnapshotMeta = 4,
    /// A note a replica keeps about its own state (entries its log lost to damage).
    Note = 5,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::SegmentHeader),
            2 => Some(FrameKind::Records),
            3 => Some(FrameKind::HardState),
            4 => Some(FrameKind::SnapshotMeta),
            5 => Some(FrameKind::Note),
            _ => None,
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame holds.
    pub kind: FrameKind,
    /// Bytes in the body.
    pub body_len: u32,
    /// The stored checksum.
    pub crc: u32,
    /// The frame's sequence number.
    pub sequence: u64,
}

impl FrameHeader {
    /// The frame's length on disk, padding included.
    pub fn frame_bytes(&self) -> u64 {
        align(FRAME_HEADER_BYTES as u64 + u64::from(self.body_len))
    }
}

/// Rounds `bytes` up to the frame alignment.
pub fn align(bytes: u64) -> u64 {
    bytes.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

fn header_bytes(
    kind: FrameKind,
    body_len: u32,
    crc: u32,
    sequence: u64,
) -> [u8; FRAME_HEADER_BYTES] {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    header[4] = FORMAT_VERSION;
    header[5] = kind as u8;
    header[8..12].copy_from_slice(&body_len.to_le_bytes());
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header[16..24].copy_from_slice(&sequence.to_le_bytes());
    header
}

fn frame_crc(kind: FrameKind, body_len: u32, sequence: u64, body: &[u8]) -> u32 {
    let header = header_bytes(kind, body_len, 0, sequence);
    crc32c::crc32c_append(crc32c::crc32c(&header), body)
}

/// Encodes a frame, padded to the alignment.
pub fn encode_frame(kind: FrameKind, sequence: u64, body: &[u8]) -> Vec<u8> {
    let body_len = u32::try_from(body.len()).expect("frame bodies are bounded far below 4 GiB");
    let crc = frame_crc(kind, body_len, sequence, body);
    let mut frame = Vec::with_capacity(align((FRAME_HEADER_BYTES + body.len()) as u64) as usize);
    frame.extend_from_slice(&header_bytes(kind, body_len, crc, sequence));
    frame.extend_from_slice(body);
    frame.resize(align(frame.len() as u64) as usize, 0);
    frame
}

/// Decodes a header if it has the magic, a known version and a known kind. Says nothing yet
/// about whether the body matches.
pub fn decode_header(bytes: &[u8]) -> Option<FrameHeader> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return None;
    }
    let word = |range: std::ops::Range<usize>| -> u32 {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(&bytes[range]);
        u32::from_le_bytes(raw)
    };
    // The reserved bytes are not covered by the checksum, so they must be zero.
    if word(0..4) != FRAME_MAGIC || bytes[4] != FORMAT_VERSION || bytes[6] != 0 || bytes[7] != 0 {
        return None;
    }
    let kind = FrameKind::from_byte(bytes[5])?;
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&bytes[16..24]);
    Some(FrameHeader {
        kind,
        body_len: word(8..12),
        crc: word(12..16),
        sequence: u64::from_le_bytes(sequence),
    })
}

/// Whether `body` is the body the header's checksum was computed over.
pub fn body_matches(header: &FrameHeader, body: &[u8]) -> bool {
    body.len() == header.body_len as usize
        && frame_crc(header.kind, header.body_len, header.sequence, body) == header.crc
}

/// Whether the bytes are all zero (never-written, preallocated space).
pub fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|byte| *byte == 0)
}

/// Appends one record holding `payload` to `out`.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("records are bounded far below 4 GiB");
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[FORMAT_VERSION]), payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(payload);
}

/// Why a record did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end inside the record.
    Truncated,
    /// A version this build does not read.
    UnknownVersion(u8),
    /// The checksum does not match.
    Checksum,
}

/// Decodes the record at the start of `bytes`: its payload and its total length.
pub fn decode_record(bytes: &[u8]) -> Result<(&[u8], usize), RecordError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::Truncated);
    }
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[0..4]);
    let len = u32::from_le_bytes(raw) as usize;
    raw.copy_from_slice(&bytes[4..8]);
    let crc = u32::from_le_bytes(raw);
    let version = bytes[8];
    let end = RECORD_HEADER_BYTES.checked_add(len).ok_or(RecordError::Truncated)?;
    if end > bytes.len() {
        return Err(RecordError::Truncated);
    }
    if version != FORMAT_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let payload = &bytes[RECORD_HEADER_BYTES..end];
    if crc32c::crc32c_append(crc32c::crc32c(&[version]), payload) != crc {
        return Err(RecordError::Checksum);
    }
    Ok((payload, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_any_flipped_bit() {
        let frame = encode_frame(FrameKind::Records, 42, b"some body bytes");
        assert_eq!(frame.len() as u64 % FRAME_ALIGN, 0);
        let header = decode_header(&frame).expect("header");
        assert_eq!(header.sequence, 42);
        let body = &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + header.body_len as usize];
        assert!(body_matches(&header, body));
        for position in 0..FRAME_HEADER_BYTES + body.len() {
            for bit in 0..8 {
                let mut damaged = frame.clone();
                damaged[position] ^= 1 << bit;
                let intact = decode_header(&damaged).is_some_and(|header| {
                    let end = FRAME_HEADER_BYTES + header.body_len as usize;
                    end <= damaged.len() && body_matches(&header, &damaged[FRAME_HEADER_BYTES..end])
                });
                assert!(!intact, "a flip at byte {position} bit {bit} went unnoticed");
            }
        }
    }

    #[test]
    fn records_round_trip_and_reject_damage() {
        let mut out = Vec::new();
        encode_record(b"first", &mut out);
        encode_record(b"second", &mut out);
        let (payload, used) = decode_record(&out).expect("first");
        assert_eq!(payload, b"first");
        let (payload, _) = decode_record(&out[used..]).expect("second");
        assert_eq!(payload, b"second");
        let mut damaged = out.clone();
        damaged[RECORD_HEADER_BYTES] ^= 1;
        assert_eq!(decode_record(&damaged), Err(RecordError::Checksum));
        assert_eq!(decode_record(&out[..5]), Err(RecordError::Truncated));
        let mut huge = out.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_record(&huge), Err(RecordError::Truncated));
    }
}
