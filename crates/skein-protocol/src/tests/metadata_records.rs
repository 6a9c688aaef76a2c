//! The generated KRaft metadata records: every type and version round-trips through its body
//! codec, the framed encoding writes the highest version and reads any valid one, and unknown
//! types, unknown versions and garbage are errors, never panics.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::codec as c;
use crate::testing::Rng;
use crate::{DecodeError, MetadataRecord, MetadataRecordType};

fn all_versions() -> Vec<(MetadataRecordType, i16)> {
    MetadataRecordType::all()
        .iter()
        .flat_map(|&t| {
            let (lo, hi) = t.valid_versions();
            (lo..=hi).map(move |v| (t, v))
        })
        .collect()
}

#[test]
fn record_types_match_kafka_api_keys() {
    assert_eq!(MetadataRecordType::RegisterBroker as i16, 0);
    assert_eq!(MetadataRecordType::Topic as i16, 2);
    assert_eq!(MetadataRecordType::Partition as i16, 3);
    assert_eq!(MetadataRecordType::Config as i16, 4);
    assert_eq!(MetadataRecordType::PartitionChange as i16, 5);
    assert_eq!(MetadataRecordType::RemoveTopic as i16, 9);
    assert_eq!(MetadataRecordType::ProducerIds as i16, 15);
    assert_eq!(MetadataRecordType::BrokerRegistrationChange as i16, 17);
    assert_eq!(MetadataRecordType::RegisterController as i16, 27);
    for &t in MetadataRecordType::all() {
        assert_eq!(MetadataRecordType::from_i16(t as i16), Some(t));
        assert!(t.supports(t.latest_version()));
    }
    assert_eq!(MetadataRecordType::from_i16(6), None);
}

#[test]
fn framed_encoding_uses_the_latest_version() {
    let record = MetadataRecord::from(crate::metadata_records::PartitionRecord {
        partition_id: 3,
        replicas: vec![1, 2],
        isr: vec![1],
        leader: 1,
        ..Default::default()
    });
    let mut buf = BytesMut::new();
    record.encode(&mut buf).unwrap();
    let mut bytes = buf.freeze();
    assert_eq!(bytes[0], 3, "type");
    assert_eq!(bytes[1], 2, "PartitionRecord's highest version");
    assert_eq!(MetadataRecord::decode(&mut bytes).unwrap(), record);
    assert!(bytes.is_empty());
}

#[test]
fn unknown_types_and_versions_are_errors() {
    let mut buf = BytesMut::new();
    c::put_uvarint(&mut buf, 6); // no record type 6
    c::put_uvarint(&mut buf, 0);
    assert_eq!(
        MetadataRecord::decode(&mut buf.freeze()),
        Err(DecodeError::UnknownApiKey(6))
    );
    let mut buf = BytesMut::new();
    c::put_uvarint(&mut buf, 2); // TopicRecord has only version 0
    c::put_uvarint(&mut buf, 1);
    assert!(matches!(
        MetadataRecord::decode(&mut buf.freeze()),
        Err(DecodeError::UnsupportedVersion {
            api_key: 2,
            version: 1
        })
    ));
    let mut buf = BytesMut::new();
    c::put_uvarint(&mut buf, 70_000);
    c::put_uvarint(&mut buf, 0);
    assert!(MetadataRecord::decode(&mut buf.freeze()).is_err());
    let mut buf = BytesMut::new();
    c::put_uvarint(&mut buf, 2);
    c::put_uvarint(&mut buf, 70_000);
    assert!(MetadataRecord::decode(&mut buf.freeze()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_record_and_version_round_trips(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for (t, version) in all_versions() {
            let record = MetadataRecord::random(t, version, &mut rng);
            prop_assert_eq!(record.record_type(), t);
            let mut buf = BytesMut::new();
            record.encode_body(&mut buf, version).unwrap();
            let mut input = buf.freeze();
            let decoded = MetadataRecord::decode_body(t, version, &mut input).unwrap();
            prop_assert!(input.is_empty(), "{} v{}: bytes left over", t, version);
            prop_assert_eq!(&decoded, &record);
            // Framed: encoded at the latest version, decoded from the version it names.
            let record = MetadataRecord::random(t, t.latest_version(), &mut rng);
            let mut framed = BytesMut::new();
            record.encode(&mut framed).unwrap();
            let mut input = framed.freeze();
            let again = MetadataRecord::decode(&mut input).unwrap();
            prop_assert!(input.is_empty());
            prop_assert_eq!(again, record);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut input = Bytes::from(bytes);
        while !input.is_empty() {
            if MetadataRecord::decode(&mut input).is_err() {
                break;
            }
        }
    }

    #[test]
    fn corrupted_records_never_panic(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for (t, version) in all_versions() {
            let mut buf = BytesMut::new();
            c::put_uvarint(&mut buf, t as i16 as u32);
            c::put_uvarint(&mut buf, version as u32);
            MetadataRecord::random(t, version, &mut rng).encode_body(&mut buf, version).unwrap();
            let mut bytes = buf.to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64 + 1) as usize;
                match rng.below(4) {
                    0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                    1 if at < bytes.len() => bytes[at] = 0xff,
                    2 => bytes.insert(at, rng.next_u64() as u8),
                    _ => bytes.truncate(at),
                }
            }
            let _ = MetadataRecord::decode(&mut Bytes::from(bytes));
        }
    }
}
