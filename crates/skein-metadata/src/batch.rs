//! One metadata log entry = one atomic batch of records.
//!
//! Layout: a format version byte (0), the record count as an unsigned varint, then each record
//! as an unsigned varint length followed by that many bytes holding the framed record
//! (`MetadataRecord::encode`: unsigned varint type, unsigned varint version, body). The length
//! prefix makes every record's bytes exact: a body that does not consume all of them, or wants
//! more, is an error.
//!
//! Decoding never panics and never allocates from a count it has not checked: the count must be
//! within the limit and within what the remaining bytes could hold (every record takes at least
//! [`MIN_RECORD_BYTES`]), and the whole input must be within the byte limit.

use bytes::{BufMut, Bytes, BytesMut};
use skein_protocol::codec as c;
use skein_protocol::MetadataRecord;

use crate::Error;

/// The batch format version this crate writes and reads.
pub const BATCH_VERSION: u8 = 0;

/// The fewest bytes a framed record takes: its length, type and version (one byte each).
pub const MIN_RECORD_BYTES: usize = 3;

/// Limits checked while decoding, before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most records one batch may hold.
    pub max_records: usize,
    /// The most bytes one batch may take.
    pub max_bytes: usize,
}

/// Limits for one log entry (one controller decision). The controller keeps user operations
/// far below them ([`crate::controller::MAX_RECORDS_PER_OP`]); fencing a broker that is in
/// many ISRs makes the largest entries.
pub const ENTRY_LIMITS: Limits = Limits {
    max_records: 1_000_000,
    max_bytes: 64 << 20,
};

/// Limits for a snapshot (the whole image as one batch).
pub const SNAPSHOT_LIMITS: Limits = Limits {
    max_records: 50_000_000,
    max_bytes: 2 << 30,
};

/// Encodes `records` as one batch. Records built by this crate always encode; a record whose
/// fields cannot be written (a string longer than the wire allows) is an error.
pub fn try_encode_batch(records: &[MetadataRecord]) -> Result<Bytes, Error> {
    let mut out = BytesMut::new();
    out.put_u8(BATCH_VERSION);
    let count = u32::try_from(records.len())
        .map_err(|_| Error::Batch(format!("{} records do not fit a batch", records.len())))?;
    c::put_uvarint(&mut out, count);
    let mut one = BytesMut::new();
    for record in records {
        one.clear();
        record
            .encode(&mut one)
            .map_err(|e| Error::Batch(format!("cannot encode {}: {e}", record.record_type())))?;
        let len = u32::try_from(one.len())
            .map_err(|_| Error::Batch(format!("{} record too large", record.record_type())))?;
        c::put_uvarint(&mut out, len);
        out.extend_from_slice(&one);
    }
    Ok(out.freeze())
}

/// Encodes `records` as one batch (the contract's `encode_batch`).
///
/// # Panics
/// Only if a record cannot be encoded at all (a string or array longer than `i32::MAX`), which
/// the image and controller never build; use [`try_encode_batch`] for records of unknown
/// origin.
pub fn encode_batch(records: &[MetadataRecord]) -> Bytes {
    match try_encode_batch(records) {
        Ok(bytes) => bytes,
        Err(e) => panic!("metadata records built by Skein must encode: {e}"),
    }
}

/// Decodes a batch with the [`ENTRY_LIMITS`] (the contract's `decode_batch`).
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, Error> {
    decode_batch_with_limits(bytes, ENTRY_LIMITS)
}

/// Decodes a batch, refusing anything beyond `limits`.
pub fn decode_batch_with_limits(
    bytes: &[u8],
    limits: Limits,
) -> Result<Vec<MetadataRecord>, Error> {
    if bytes.len() > limits.max_bytes {
        return Err(Error::Batch(format!(
            "{} bytes, more than the limit of {}",
            bytes.len(),
            limits.max_bytes
        )));
    }
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(Error::Batch("empty".into()));
    };
    if version != BATCH_VERSION {
        return Err(Error::Batch(format!("unknown batch version {version}")));
    }
    let mut buf = Bytes::copy_from_slice(rest);
    let count = c::get_uvarint(&mut buf).map_err(|e| Error::Batch(format!("count: {e}")))? as usize;
    if count > limits.max_records {
        return Err(Error::Batch(format!(
            "{count} records, more than the limit of {}",
            limits.max_records
        )));
    }
    if count > buf.len() / MIN_RECORD_BYTES {
        return Err(Error::Batch(format!(
            "{count} records cannot fit in {} bytes",
            buf.len()
        )));
    }
    let mut records = Vec::with_capacity(count);
    for i in 0..count {
        let len = c::get_uvarint(&mut buf)
            .map_err(|e| Error::Batch(format!("record {i} length: {e}")))?
            as usize;
        if len > buf.len() {
            return Err(Error::Batch(format!(
                "record {i} claims {len} bytes, {} remain",
                buf.len()
            )));
        }
        let mut one = buf.split_to(len);
        let record = MetadataRecord::decode(&mut one)
            .map_err(|e| Error::Batch(format!("record {i}: {e}")))?;
        if !one.is_empty() {
            return Err(Error::Batch(format!(
                "record {i} ({}) leaves {} bytes unread",
                record.record_type(),
                one.len()
            )));
        }
        records.push(record);
    }
    if !buf.is_empty() {
        return Err(Error::Batch(format!(
            "{} trailing bytes after {count} records",
            buf.len()
        )));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use skein_protocol::metadata_records::{NoOpRecord, TopicRecord};
    use skein_protocol::testing::Rng;
    use skein_protocol::{MetadataRecordType, Uuid};

    fn topic(name: &str) -> MetadataRecord {
        TopicRecord {
            name: name.into(),
            topic_id: Uuid([7; 16]),
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn round_trips() {
        let records = vec![topic("a"), NoOpRecord::default().into(), topic("b")];
        let bytes = encode_batch(&records);
        assert_eq!(bytes[0], BATCH_VERSION);
        assert_eq!(bytes[1], 3);
        assert_eq!(decode_batch(&bytes).unwrap(), records);
        assert_eq!(decode_batch(&encode_batch(&[])).unwrap(), vec![]);
    }

    #[test]
    fn refuses_bad_headers_and_counts() {
        assert!(decode_batch(&[]).is_err());
        assert!(decode_batch(&[1, 0]).is_err(), "unknown version");
        // A huge count in a tiny batch fails before allocating.
        assert!(decode_batch(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let mut bytes = encode_batch(&[topic("a")]).to_vec();
        bytes.push(0);
        assert!(decode_batch(&bytes).is_err(), "trailing byte");
        let limits = Limits {
            max_records: 1,
            max_bytes: 1 << 20,
        };
        let two = encode_batch(&[topic("a"), topic("b")]);
        assert!(decode_batch_with_limits(&two, limits).is_err());
        let small = Limits {
            max_records: 10,
            max_bytes: 4,
        };
        assert!(decode_batch_with_limits(&two, small).is_err());
    }

    #[test]
    fn a_record_must_fill_its_length_exactly() {
        let mut one = BytesMut::new();
        topic("a").encode(&mut one).unwrap();
        // Claim one byte more than the record holds, with a padding byte after it.
        let mut bytes = vec![BATCH_VERSION, 1, one.len() as u8 + 1];
        bytes.extend_from_slice(&one);
        bytes.push(0);
        assert!(decode_batch(&bytes).is_err());
        // Claim one byte less.
        let mut bytes = vec![BATCH_VERSION, 1, one.len() as u8 - 1];
        bytes.extend_from_slice(&one);
        assert!(decode_batch(&bytes).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(&bytes);
            // With a valid header, so the records themselves get exercised.
            let mut framed = vec![BATCH_VERSION, (bytes.len() / 8) as u8 & 0x7f];
            framed.extend_from_slice(&bytes);
            let _ = decode_batch(&framed);
        }

        #[test]
        fn random_records_round_trip_and_survive_corruption(seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            let types = MetadataRecordType::all();
            let records: Vec<MetadataRecord> = (0..rng.below(6))
                .map(|_| {
                    let t = types[rng.below(types.len() as u64) as usize];
                    MetadataRecord::random(t, t.latest_version(), &mut rng)
                })
                .collect();
            let bytes = encode_batch(&records);
            prop_assert_eq!(decode_batch(&bytes).unwrap(), records);
            let mut bad = bytes.to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bad.len() as u64 + 1) as usize;
                match rng.below(4) {
                    0 if at < bad.len() => bad[at] ^= 1 << rng.below(8),
                    1 if at < bad.len() => bad[at] = 0xff,
                    2 => bad.insert(at, rng.next_u64() as u8),
                    _ => bad.truncate(at),
                }
            }
            let _ = decode_batch(&bad);
        }
    }
}
