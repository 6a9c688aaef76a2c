//! Kafka's UUID: 16 raw bytes on the wire, shown as URL-safe base64 without padding (the form
//! `kafka-topics.sh` prints for topic ids).

use std::fmt;
use std::str::FromStr;

/// A Kafka UUID (topic ids, directory ids, member ids in KIP-848). The zero value means "none".
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Uuid {
    /// The all-zero UUID, which Kafka uses for "no id".
    pub const ZERO: Uuid = Uuid([0; 16]);

    /// A random (version 4) UUID. Like Kafka's `Uuid.randomUuid`, never the all-zero id and
    /// never one whose base64 form starts with '-', which command lines would read as an option.
    pub fn random() -> Uuid {
        loop {
            let u = Uuid(*uuid::Uuid::new_v4().as_bytes());
            if !u.is_zero() && !u.to_string().starts_with('-') {
                return u;
            }
        }
    }

    /// True for the all-zero UUID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Returns the raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl From<[u8; 16]> for Uuid {
    fn from(raw: [u8; 16]) -> Self {
        Uuid(raw)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(22);
        for chunk in self.0.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        f.write_str(&out)
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// The string was not 22 characters of URL-safe base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Kafka UUID (expected 22 characters of URL-safe base64)")]
pub struct ParseUuidError;

impl FromStr for Uuid {
    type Err = ParseUuidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 22 {
            return Err(ParseUuidError);
        }
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut out = [0u8; 16];
        let mut pos = 0;
        for &c in s {
            let v = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(ParseUuidError)? as u32;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                out[pos] = (bits >> nbits) as u8;
                pos += 1;
                bits &= (1 << nbits) - 1;
            }
        }
        // The last character carries 4 padding bits, which must be zero (canonical form).
        if bits != 0 {
            return Err(ParseUuidError);
        }
        Ok(Uuid(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = Uuid([
            0x6b, 0x8e, 0x2a, 0x47, 0x30, 0x2b, 0x4d, 0x71, 0x8a, 0x0c, 0x00, 0x5a, 0x91, 0xee,
            0xff, 0x01,
        ]);
        let s = id.to_string();
        assert_eq!(s.len(), 22);
        assert_eq!(s.parse::<Uuid>().unwrap(), id);
        assert_eq!(Uuid::ZERO.to_string(), "AAAAAAAAAAAAAAAAAAAAAA");
        let r = Uuid::random();
        assert_eq!(r.to_string().parse::<Uuid>().unwrap(), r);
        assert!("short".parse::<Uuid>().is_err());
    }

    #[test]
    fn random_ids_never_look_like_options() {
        for _ in 0..10_000 {
            let r = Uuid::random();
            assert!(!r.is_zero() && !r.to_string().starts_with('-'), "{r}");
        }
    }
}
