//! `__transaction_state` records: Kafka's byte layout, round trips, and malformed input.

use skein_txn::{java_string_hash, partition_for, RecordError, TxnLogValue, TxnRecord, TxnState};

fn value(state: TxnState, partitions: Vec<(&str, Vec<i32>)>) -> TxnLogValue {
    TxnLogValue {
        producer_id: 4242,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch: 3,
        timeout_ms: 60_000,
        state,
        partitions: partitions
            .into_iter()
            .map(|(t, ps)| (t.to_owned(), ps))
            .collect(),
        last_update_ms: 1_700_000_000_123,
        start_ms: 1_700_000_000_000,
        client_transaction_version: 0,
    }
}

fn record(v: Option<TxnLogValue>) -> TxnRecord {
    TxnRecord {
        transactional_id: "txn-1".to_owned(),
        value: v,
    }
}

#[test]
fn java_hash_and_partition_match_kafka() {
    // (id, String.hashCode(), partition of 50, partition of 3), computed with Java 17.
    let known: &[(&str, i32, i32, i32)] = &[
        ("", 0, 0, 0),
        ("a", 97, 47, 1),
        ("abc", 96354, 4, 0),
        ("hello", 99162322, 22, 1),
        ("my-txn", -1061187895, 45, 1),
        // hashCode is Integer.MIN_VALUE: Kafka's Utils.abs maps it to 0.
        ("polygenelubricants", i32::MIN, 0, 0),
        ("transactional-id-42", -1774587604, 4, 1),
        // A character outside the BMP counts as two UTF-16 code units.
        ("\u{1F600}x", 54959989, 39, 1),
        ("héllo wörld", 1628148953, 3, 2),
        ("producer-1", 1752578230, 30, 1),
    ];
    for (id, hash, p50, p3) in known {
        assert_eq!(java_string_hash(id), *hash, "{id}");
        assert_eq!(partition_for(id, 50), *p50, "{id} of 50");
        assert_eq!(partition_for(id, 3), *p3, "{id} of 3");
    }
    assert_eq!(partition_for("a", 0), 0, "no partitions configured");
}

#[test]
fn key_is_version_prefixed_string() {
    let r = record(None);
    assert_eq!(r.key(), [0, 0, 0, 5, b't', b'x', b'n', b'-', b'1']);
    assert_eq!(r.value(), None);
    assert_eq!(TxnRecord::decode(&r.key(), None).unwrap(), r);
}

#[test]
fn value_version_0_layout() {
    let r = record(Some(value(TxnState::Ongoing, vec![("t", vec![1, 2])])));
    let bytes = r.value_at(0).unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(&0i16.to_be_bytes());
    want.extend_from_slice(&4242i64.to_be_bytes());
    want.extend_from_slice(&3i16.to_be_bytes());
    want.extend_from_slice(&60_000i32.to_be_bytes());
    want.push(1); // Ongoing
    want.extend_from_slice(&1i32.to_be_bytes()); // one topic
    want.extend_from_slice(&1i16.to_be_bytes());
    want.push(b't');
    want.extend_from_slice(&2i32.to_be_bytes());
    want.extend_from_slice(&1i32.to_be_bytes());
    want.extend_from_slice(&2i32.to_be_bytes());
    want.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
    want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    assert_eq!(bytes, want);
    assert_eq!(TxnRecord::decode(&r.key(), Some(&bytes)).unwrap(), r);
}

#[test]
fn value_version_1_layout_with_tags() {
    let mut v = value(TxnState::PrepareCommit, vec![("ab", vec![7])]);
    v.previous_producer_id = 99;
    let r = record(Some(v));
    let bytes = r.value().unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(&1i16.to_be_bytes());
    want.extend_from_slice(&4242i64.to_be_bytes());
    want.extend_from_slice(&3i16.to_be_bytes());
    want.extend_from_slice(&60_000i32.to_be_bytes());
    want.push(2); // PrepareCommit
    want.push(2); // compact array: 1 entry
    want.push(3); // compact string "ab"
    want.extend_from_slice(b"ab");
    want.push(2); // compact array: 1 partition
    want.extend_from_slice(&7i32.to_be_bytes());
    want.push(0); // no tags in the entry
    want.extend_from_slice(&1_700_000_000_123i64.to_be_bytes());
    want.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
    want.push(1); // one tagged field
    want.push(0); // tag 0: PreviousProducerId
    want.push(8);
    want.extend_from_slice(&99i64.to_be_bytes());
    assert_eq!(bytes, want);
    assert_eq!(TxnRecord::decode(&r.key(), Some(&bytes)).unwrap(), r);
}

#[test]
fn empty_state_writes_null_partitions_in_both_versions() {
    let r = record(Some(value(TxnState::Empty, vec![])));
    let v0 = r.value_at(0).unwrap();
    assert_eq!(
        &v0[2 + 8 + 2 + 4 + 1..2 + 8 + 2 + 4 + 1 + 4],
        &(-1i32).to_be_bytes()
    );
    let v1 = r.value_at(1).unwrap();
    assert_eq!(v1[2 + 8 + 2 + 4 + 1], 0, "compact null");
    for bytes in [v0, v1] {
        assert_eq!(TxnRecord::decode(&r.key(), Some(&bytes)).unwrap(), r);
    }
}

#[test]
fn all_states_and_tags_round_trip() {
    for state in TxnState::ALL {
        assert_eq!(TxnState::from_id(state.id()), Some(state));
        assert_eq!(TxnState::from_name(state.name()), Some(state));
        let mut v = value(state, vec![("a", vec![0, 1]), ("b", vec![5])]);
        v.next_producer_id = 7;
        v.client_transaction_version = 2;
        v.previous_producer_id = 6;
        let r = record(Some(v));
        assert_eq!(
            TxnRecord::decode(&r.key(), r.value().as_deref()).unwrap(),
            r
        );
    }
    assert_eq!(TxnState::from_id(8), None);
    assert_eq!(TxnState::from_id(-1), None);
    assert_eq!(TxnState::from_name("ongoing"), None);
}

#[test]
fn unknown_tags_are_skipped() {
    let r = record(Some(value(TxnState::Ongoing, vec![("t", vec![0])])));
    let mut bytes = r.value().unwrap();
    // Replace the empty top-level tag section with one unknown tag of 3 bytes.
    assert_eq!(bytes.pop(), Some(0));
    bytes.extend_from_slice(&[1, 9, 3, 1, 2, 3]);
    assert_eq!(TxnRecord::decode(&r.key(), Some(&bytes)).unwrap(), r);
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let r = record(Some(value(
        TxnState::Ongoing,
        vec![("topic", vec![1, 2, 3])],
    )));
    let key = r.key();
    for version in [0, 1] {
        let bytes = r.value_at(version).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                TxnRecord::decode(&key, Some(&bytes[..cut])).is_err(),
                "v{version} cut {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(
            TxnRecord::decode(&key, Some(&long)),
            Err(RecordError::TrailingBytes(1))
        );
    }
    for cut in 0..key.len() {
        assert!(TxnRecord::decode(&key[..cut], None).is_err());
    }
    // Unknown versions.
    assert!(matches!(
        TxnRecord::decode(&[0, 1, 0, 0], None),
        Err(RecordError::UnsupportedVersion { what: "key", .. })
    ));
    let mut bytes = r.value_at(0).unwrap();
    bytes[1] = 2;
    assert!(matches!(
        TxnRecord::decode(&key, Some(&bytes)),
        Err(RecordError::UnsupportedVersion {
            what: "value",
            version: 2
        })
    ));
    // An unknown state byte.
    let mut bytes = r.value_at(0).unwrap();
    bytes[2 + 8 + 2 + 4] = 42;
    assert!(matches!(
        TxnRecord::decode(&key, Some(&bytes)),
        Err(RecordError::Invalid {
            field: "transaction status",
            ..
        })
    ));
    // A huge partition count does not allocate.
    let mut bytes = r.value_at(0).unwrap();
    bytes[17..21].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(matches!(
        TxnRecord::decode(&key, Some(&bytes)),
        Err(RecordError::UnexpectedEof { .. })
    ));
    // Invalid UTF-8 in the id.
    assert!(matches!(
        TxnRecord::decode(&[0, 0, 0, 1, 0xff], None),
        Err(RecordError::Invalid {
            field: "utf-8 string",
            ..
        })
    ));
}
