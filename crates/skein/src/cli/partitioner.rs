//! Key → partition, exactly as the Java client's default partitioner does it, so that records
//! written here land where a Java producer would put the same keys:
//! `toPositive(murmur2(key)) % numPartitions` (Kafka's `Utils.murmur2`, seed `0x9747b28c`).

/// MurmurHash2, 32-bit, as Kafka's `Utils.murmur2` computes it (little-endian words, seed
/// `0x9747b28c`), returning Java's signed `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Java's switch falls through from the highest remaining byte down.
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `MIN`).
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_utils_murmur2() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn every_tail_length_is_hashed() {
        // Lengths 0-3 past a whole word exercise each case of Java's fall-through switch;
        // the values were checked against kafka-python's port of the Java function.
        assert_eq!(murmur2(b""), 275_646_681);
        assert_eq!(murmur2(b"a"), -1_563_381_124);
        assert_eq!(murmur2(b"ab"), 316_155_434);
        assert_eq!(murmur2(b"abcd"), -1_323_649_548);
        assert_eq!(murmur2(b"abcde"), 461_995_741);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX);
    }

    #[test]
    fn keys_map_like_the_java_default_partitioner() {
        // Partitions of a 3-partition topic, as kafka-python's Java-compatible partitioner
        // and the Java client pick them.
        assert_eq!(partition_for_key(b"key1", 3), 2);
        assert_eq!(partition_for_key(b"key2", 3), 2);
        assert_eq!(partition_for_key(b"key3", 3), 1);
        assert_eq!(partition_for_key(b"a", 3), 1);
        assert_eq!(partition_for_key(b"abc", 3), 0);
    }
}
