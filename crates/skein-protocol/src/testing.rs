//! Random value generators for the round-trip tests: a tiny seeded PRNG and the `Random`
//! trait every generated message implements (behind `cfg(any(test, feature = "testing"))`).
//!
//! Values are valid for the version they are generated for: fields absent in that version keep
//! their defaults and nulls appear only where the version allows them, so
//! `decode(encode(v)) == v` must hold exactly.

use bytes::Bytes;

use crate::Uuid;

/// Arrays nested deeper than this are generated empty, to keep values small.
const MAX_DEPTH: u32 = 3;

/// A seeded xorshift64* generator: deterministic, no dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `1 / n`.
    pub fn chance(&mut self, n: u64) -> bool {
        self.next_u64().is_multiple_of(n)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A short string, sometimes with non-ASCII characters.
    pub fn string(&mut self) -> String {
        const CHARS: &[char] = &['a', 'b', 'z', '0', '9', '-', '_', '.', 'é', '€', '🦀'];
        let len = self.below(8) as usize;
        (0..len)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize])
            .collect()
    }

    /// A few random bytes.
    pub fn bytes(&mut self) -> Bytes {
        let len = self.below(12) as usize;
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// `None` now and then when `nullable`, else `Some(f(self))`.
    pub fn opt<T>(&mut self, nullable: bool, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
        if nullable && self.chance(4) {
            None
        } else {
            Some(f(self))
        }
    }

    /// A short vector (empty beyond the depth limit).
    pub fn vec<T>(&mut self, depth: u32, mut f: impl FnMut(&mut Rng) -> T) -> Vec<T> {
        if depth > MAX_DEPTH {
            return Vec::new();
        }
        let len = self.below(4) as usize;
        (0..len).map(|_| f(self)).collect()
    }

    /// Unknown tagged fields with tags above any known one, in ascending tag order.
    pub fn unknown_tagged_fields(&mut self) -> Vec<(u32, Bytes)> {
        let mut tag = 1000;
        let count = self.below(3);
        (0..count)
            .map(|_| {
                tag += 1 + self.below(5) as u32;
                (tag, self.bytes())
            })
            .collect()
    }
}

/// A value that can be generated at random for a given message version.
pub trait Random: Sized {
    /// A random value valid for `version`; `depth` is the nesting level.
    fn random(rng: &mut Rng, version: i16, depth: u32) -> Self;
}

macro_rules! random_int {
    ($($ty:ty),*) => {$(
        impl Random for $ty {
            fn random(rng: &mut Rng, _version: i16, _depth: u32) -> Self {
                // Favour small values and the edges, where encoding bugs live.
                match rng.below(4) {
                    0 => 0,
                    1 => <$ty>::MAX,
                    2 => <$ty>::MIN,
                    _ => rng.next_u64() as $ty,
                }
            }
        }
    )*};
}

random_int!(i8, i16, i32, i64, u16, u32);

impl Random for bool {
    fn random(rng: &mut Rng, _version: i16, _depth: u32) -> Self {
        rng.chance(2)
    }
}

impl Random for f64 {
    fn random(rng: &mut Rng, _version: i16, _depth: u32) -> Self {
        // Finite values only: NaN != NaN would break the equality check.
        (rng.next_u64() as i64 as f64) / 1024.0
    }
}

impl Random for Uuid {
    fn random(rng: &mut Rng, _version: i16, _depth: u32) -> Self {
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        raw[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        Uuid(raw)
    }
}
