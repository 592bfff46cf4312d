//! LtHash: a homomorphic hash of a set, updated in constant time per element.
//!
//! The hash of a set is the sum, lane by lane modulo 2^16, of its elements' hashes, each
//! element hashed to [`LANES`] 16-bit lanes by BLAKE3's extendable output. Adding an element
//! adds its lanes; removing it subtracts them; the order of additions does not matter. So a
//! state machine can keep the digest of its whole state current with one element hash per
//! change, instead of reading the whole state to digest it (Bellare and Micciancio's
//! construction, with the parameters of "Securing Update Propagation with Homomorphic Hashing",
//! Lewi, Kim, Maykov and Weis: 1,024 lanes of 16 bits, at least 200 bits of security).
//!
//! An element added 2^16 times cancels out: the elements hashed here are each unique (they name
//! their revision), so the set is a set, never a multiset.

/// The number of 16-bit lanes.
pub const LANES: usize = 1024;

/// The hash of a set of byte strings. See the module documentation.
#[derive(Clone, PartialEq, Eq)]
pub struct LtHash {
    lanes: Box<[u16; LANES]>,
}

impl Default for LtHash {
    fn default() -> LtHash {
        LtHash::new()
    }
}

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash({})", self.checksum().to_hex())
    }
}

/// An element's lanes: BLAKE3's extendable output of its bytes, read as little-endian u16s.
fn element_lanes(element: &[u8]) -> [u16; LANES] {
    let mut bytes = [0u8; LANES * 2];
    blake3::Hasher::new().update(element).finalize_xof().fill(&mut bytes);
    let mut lanes = [0u16; LANES];
    for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([pair[0], pair[1]]);
    }
    lanes
}

impl LtHash {
    /// The hash of the empty set.
    pub fn new() -> LtHash {
        LtHash { lanes: Box::new([0; LANES]) }
    }

    /// Adds `element` to the set.
    pub fn add(&mut self, element: &[u8]) {
        let other = element_lanes(element);
        for (lane, add) in self.lanes.iter_mut().zip(other) {
            *lane = lane.wrapping_add(add);
        }
    }

    /// Removes `element` (added before) from the set.
    pub fn remove(&mut self, element: &[u8]) {
        let other = element_lanes(element);
        for (lane, sub) in self.lanes.iter_mut().zip(other) {
            *lane = lane.wrapping_sub(sub);
        }
    }

    /// A 32-byte checksum of the lanes (BLAKE3 of them), to compare and print.
    pub fn checksum(&self) -> blake3::Hash {
        blake3::hash(&self.to_bytes())
    }

    /// The lanes as bytes (little-endian), [`LANES`] * 2 of them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.lanes.iter().flat_map(|lane| lane.to_le_bytes()).collect()
    }

    /// The hash whose lanes `bytes` holds (as [`LtHash::to_bytes`] wrote them); `None` if it
    /// is not [`LANES`] * 2 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<LtHash> {
        if bytes.len() != LANES * 2 {
            return None;
        }
        let mut hash = LtHash::new();
        for (lane, pair) in hash.lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_and_removal_undoes_addition() {
        let mut forward = LtHash::new();
        let mut backward = LtHash::new();
        let elements: Vec<Vec<u8>> = (0u32..50).map(|i| i.to_le_bytes().to_vec()).collect();
        for element in &elements {
            forward.add(element);
        }
        for element in elements.iter().rev() {
            backward.add(element);
        }
        assert_eq!(forward, backward);
        assert_ne!(forward, LtHash::new());
        for element in &elements {
            forward.remove(element);
        }
        assert_eq!(forward, LtHash::new());
    }

    #[test]
    fn different_sets_differ_and_bytes_round_trip() {
        let mut one = LtHash::new();
        one.add(b"a");
        one.add(b"b");
        let mut other = LtHash::new();
        other.add(b"a");
        other.add(b"c");
        assert_ne!(one.checksum(), other.checksum());
        assert_eq!(LtHash::from_bytes(&one.to_bytes()), Some(one.clone()));
        assert_eq!(LtHash::from_bytes(&[0; 7]), None);
    }
}
