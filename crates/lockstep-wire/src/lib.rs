//! # lockstep-wire: frames on the wire
//!
//! Everything lockstep sends over a connection — between replicas and between clients and
//! replicas — travels in frames:
//!
//! ```text
//! length (u32 LE, of what follows) | version (u8) | kind (u8) | crc32c (u32 LE, of the body) | body
//! ```
//!
//! The body is a postcard encoding of the frame's content ([`protocol`] defines the peer
//! handshake and the native client protocol). A frame that is too large, has an
//! unknown version or kind, fails its checksum or does not decode is an error with a reason —
//! never a panic — and the connection that sent it should be closed: after a bad frame nothing
//! later on it can be trusted.
//!
//! ```
//! use lockstep_wire::{encode, Decoder, Kind};
//!
//! let frame = encode(Kind::Client, &("put", 7u64)).unwrap();
//! let mut decoder = Decoder::new(1 << 20);
//! decoder.extend(&frame[..5]);            // frames arrive in pieces
//! assert!(decoder.next_frame().unwrap().is_none());
//! decoder.extend(&frame[5..]);
//! let (kind, body) = decoder.next_frame().unwrap().unwrap();
//! assert_eq!(kind, Kind::Client);
//! let value: (String, u64) = lockstep_wire::decode(&body).unwrap();
//! assert_eq!(value, ("put".to_string(), 7));
//! ```

#![deny(missing_docs)]

pub mod protocol;
pub use protocol::{
    AdminRequest, AuditRequest, AuditView, ClientError, ClientMessage, MemberInfo, MemberRequest,
    PeerAuditView, PeerHello, PeerStream, Progress, ReadConsistency, ReplicaStatus, ServerMessage,
};

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version of the frame format this build writes and reads.
pub const VERSION: u8 = 1;

/// Bytes before the body: length, version, kind, checksum.
pub const HEADER_BYTES: usize = 4 + 1 + 1 + 4;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A replica introduces itself on a new peer connection (cluster id, its id).
    Hello,
    /// A consensus message between replicas.
    Peer,
    /// A chunk of a snapshot between replicas (on its own connection).
    Snapshot,
    /// A client's request or a replica's answer.
    Client,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::Peer => 2,
            Kind::Snapshot => 3,
            Kind::Client => 4,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::Hello,
            2 => Kind::Peer,
            3 => Kind::Snapshot,
            4 => Kind::Client,
            _ => return None,
        })
    }
}

/// Why bytes from a connection are not a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The frame claims more bytes than allowed.
    TooLarge {
        /// Its claimed length.
        bytes: u64,
        /// The most allowed.
        max: u64,
    },
    /// The frame is shorter than its header.
    TooShort {
        /// Its claimed length.
        bytes: u64,
    },
    /// A frame format version this build does not speak.
    UnknownVersion(u8),
    /// A kind of frame this build does not know.
    UnknownKind(u8),
    /// The body does not match its CRC32C.
    BadChecksum,
    /// The body does not decode as what was expected.
    Undecodable(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { bytes, max } => {
                write!(f, "a frame of {bytes} bytes is larger than the {max} allowed")
            }
            WireError::TooShort { bytes } => {
                write!(f, "a frame of {bytes} bytes is shorter than its header")
            }
            WireError::UnknownVersion(version) => write!(
                f,
                "frame format version {version} is not this build's ({VERSION}); upgrade or \
                 downgrade so both ends speak one version"
            ),
            WireError::UnknownKind(kind) => write!(f, "unknown frame kind {kind}"),
            WireError::BadChecksum => write!(f, "a frame fails its CRC32C checksum"),
            WireError::Undecodable(reason) => write!(f, "a frame does not decode: {reason}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Encodes `value` as one frame of `kind`.
pub fn encode<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Result<Bytes, WireError> {
    let body =
        postcard::to_stdvec(value).map_err(|error| WireError::Undecodable(error.to_string()))?;
    let length = (HEADER_BYTES - 4 + body.len()) as u64;
    let length = u32::try_from(length)
        .map_err(|_| WireError::TooLarge { bytes: length, max: u32::MAX as u64 })?;
    let mut frame = BytesMut::with_capacity(HEADER_BYTES + body.len());
    frame.put_u32_le(length);
    frame.put_u8(VERSION);
    frame.put_u8(kind.code());
    frame.put_u32_le(crc32c::crc32c(&body));
    frame.extend_from_slice(&body);
    Ok(frame.freeze())
}

/// Decodes a frame's body as `T`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(body).map_err(|error| WireError::Undecodable(error.to_string()))
}

/// Cuts a byte stream into frames, checking each.
#[derive(Debug)]
pub struct Decoder {
    buffer: BytesMut,
    frame_bytes_max: u64,
}

impl Decoder {
    /// A decoder that refuses frames longer than `frame_bytes_max` (header included).
    pub fn new(frame_bytes_max: u64) -> Decoder {
        Decoder { buffer: BytesMut::new(), frame_bytes_max }
    }

    /// Changes the largest frame accepted from now on (a connection that has identified
    /// itself may send larger ones).
    pub fn set_frame_bytes_max(&mut self, frame_bytes_max: u64) {
        self.frame_bytes_max = frame_bytes_max;
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet make a whole frame.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, if one has arrived: its kind and its checked body. After an
    /// error, the connection must be closed: the decoder's position in the stream is lost.
    pub fn next_frame(&mut self) -> Result<Option<(Kind, Bytes)>, WireError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let length = u64::from(u32::from_le_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]));
        if length + 4 > self.frame_bytes_max {
            return Err(WireError::TooLarge { bytes: length + 4, max: self.frame_bytes_max });
        }
        if length < (HEADER_BYTES - 4) as u64 {
            return Err(WireError::TooShort { bytes: length + 4 });
        }
        // The version is checked as soon as it arrives, before waiting for a body that may
        // never come.
        if self.buffer.len() >= 5 && self.buffer[4] != VERSION {
            return Err(WireError::UnknownVersion(self.buffer[4]));
        }
        if (self.buffer.len() as u64) < length + 4 {
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(length as usize + 4);
        frame.advance(5);
        let code = frame.get_u8();
        let kind = Kind::from_code(code).ok_or(WireError::UnknownKind(code))?;
        let checksum = frame.get_u32_le();
        let body = frame.freeze();
        if crc32c::crc32c(&body) != checksum {
            return Err(WireError::BadChecksum);
        }
        Ok(Some((kind, body)))
    }
}
