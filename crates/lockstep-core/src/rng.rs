//! The core's only source of randomness: a small seeded generator.
//!
//! Election timeouts must be random so that split votes resolve, and reproducible so that a
//! failing run replays exactly from its seed. The generator is SplitMix64, written out here
//! rather than taken from a crate so that its stream can never change under an upgrade: a
//! seed recorded today must replay the same schedule in every later build.

/// A deterministic pseudo-random generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `low..high` (`low` when the range is empty). The slight modulo bias is
    /// irrelevant for timeouts and keeps the stream simple to reason about.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn stream_is_pinned() {
        // SplitMix64's published first output for seed 0; guards against accidental edits.
        assert_eq!(SeededRng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn range_stays_in_bounds() {
        let mut rng = SeededRng::new(7);
        for _ in 0..1000 {
            let value = rng.range(10, 20);
            assert!((10..20).contains(&value));
        }
        assert_eq!(rng.range(5, 5), 5);
    }
}
