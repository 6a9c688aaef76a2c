//! `__consumer_offsets` record encoding: round trips, compaction keys, and hostile bytes.

use bytes::Bytes;
use proptest::prelude::*;
use skein_group::*;

fn s() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{0,12}"
}

fn tps() -> impl Strategy<Value = TopicPartitions> {
    prop::collection::vec(
        (any::<[u8; 16]>(), prop::collection::vec(any::<i32>(), 0..4)),
        0..3,
    )
}

fn classic_member() -> impl Strategy<Value = ClassicMemberRecord> {
    (
        s(),
        prop::option::of(s()),
        s(),
        s(),
        any::<i32>(),
        any::<i32>(),
        prop::collection::vec(any::<u8>(), 0..16),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(
            |(
                member_id,
                group_instance_id,
                client_id,
                client_host,
                session_timeout_ms,
                rebalance_timeout_ms,
                sub,
                asg,
            )| ClassicMemberRecord {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                session_timeout_ms,
                rebalance_timeout_ms,
                subscription: Bytes::from(sub),
                assignment: Bytes::from(asg),
            },
        )
}

fn consumer_member() -> impl Strategy<Value = ConsumerMemberRecord> {
    (
        (
            s(),
            prop::option::of(s()),
            prop::option::of(s()),
            s(),
            s(),
            any::<i32>(),
        ),
        (
            prop::collection::vec(s(), 0..3),
            prop::option::of(s()),
            prop::collection::vec(s(), 0..3),
            prop::option::of(s()),
        ),
        (any::<i32>(), any::<i32>(), 0i8..3, tps(), tps(), tps()),
    )
        .prop_map(|(a, b, c)| ConsumerMemberRecord {
            member_id: a.0,
            instance_id: a.1,
            rack_id: a.2,
            client_id: a.3,
            client_host: a.4,
            rebalance_timeout_ms: a.5,
            subscribed_topic_names: b.0,
            subscribed_topic_regex: b.1,
            resolved_regex_topics: b.2,
            server_assignor: b.3,
            member_epoch: c.0,
            previous_member_epoch: c.1,
            state: c.2,
            assigned: c.3,
            pending_revocation: c.4,
            target: c.5,
        })
}

fn record() -> impl Strategy<Value = GroupRecord> {
    prop_oneof![
        (
            s(),
            s(),
            any::<i32>(),
            any::<i64>(),
            any::<i32>(),
            ".{0,20}",
            any::<i64>()
        )
            .prop_map(
                |(group, topic, partition, offset, leader_epoch, metadata, commit_timestamp_ms)| {
                    GroupRecord::OffsetCommit {
                        group,
                        topic,
                        partition,
                        offset,
                        leader_epoch,
                        metadata,
                        commit_timestamp_ms,
                    }
                }
            ),
        (s(), s(), any::<i32>()).prop_map(|(group, topic, partition)| GroupRecord::OffsetDelete {
            group,
            topic,
            partition
        }),
        s().prop_map(|group| GroupRecord::GroupDelete { group }),
        (
            s(),
            s(),
            any::<i32>(),
            prop::option::of(s()),
            prop::option::of(s()),
            any::<i64>(),
            prop::collection::vec(classic_member(), 0..3)
        )
            .prop_map(
                |(
                    group,
                    protocol_type,
                    generation,
                    protocol_name,
                    leader,
                    state_timestamp_ms,
                    members,
                )| {
                    GroupRecord::GroupMetadata(ClassicGroupRecord {
                        group,
                        protocol_type,
                        generation,
                        protocol_name,
                        leader,
                        state_timestamp_ms,
                        members,
                    })
                }
            ),
        (
            s(),
            any::<i32>(),
            any::<i32>(),
            any::<i64>(),
            prop::collection::vec((s(), any::<[u8; 16]>(), any::<i32>()), 0..3),
            prop::collection::vec(consumer_member(), 0..3)
        )
            .prop_map(
                |(
                    group,
                    group_epoch,
                    assignment_epoch,
                    state_timestamp_ms,
                    subscription_metadata,
                    members,
                )| {
                    GroupRecord::ConsumerGroup(ConsumerGroupRecord {
                        group,
                        group_epoch,
                        assignment_epoch,
                        state_timestamp_ms,
                        subscription_metadata,
                        members,
                    })
                }
            ),
    ]
}

proptest! {
    #[test]
    fn round_trip(r in record()) {
        let key = r.key();
        let value = r.value();
        let back = GroupRecord::decode(&key, value.as_deref()).unwrap();
        prop_assert_eq!(&back, &r);
        prop_assert_eq!(back.partition_key(), r.partition_key());
        // Every strict prefix of the value is an error, never a panic.
        if let Some(v) = &value {
            for cut in 0..v.len() {
                prop_assert!(GroupRecord::decode(&key, Some(&v[..cut])).is_err());
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(key in prop::collection::vec(any::<u8>(), 0..64), value in prop::option::of(prop::collection::vec(any::<u8>(), 0..256))) {
        let _ = GroupRecord::decode(&key, value.as_deref());
    }

    #[test]
    fn mutated_records_never_panic(r in record(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let key = r.key();
        if let Some(mut v) = r.value() {
            for (i, b) in flips {
                let i = i.index(v.len());
                v[i] = b;
            }
            let _ = GroupRecord::decode(&key, Some(&v));
        }
    }
}

#[test]
fn keys_compact_together() {
    let commit = GroupRecord::OffsetCommit {
        group: "g".into(),
        topic: "t".into(),
        partition: 1,
        offset: 5,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 9,
    };
    let tomb = GroupRecord::OffsetDelete {
        group: "g".into(),
        topic: "t".into(),
        partition: 1,
    };
    assert_eq!(commit.key(), tomb.key());
    assert_eq!(tomb.value(), None);
    assert_eq!(&commit.key()[..2], &KEY_TYPE_OFFSET.to_be_bytes());
    let meta = GroupRecord::GroupMetadata(ClassicGroupRecord {
        group: "g".into(),
        protocol_type: String::new(),
        generation: 0,
        protocol_name: None,
        leader: None,
        state_timestamp_ms: 0,
        members: vec![],
    });
    let consumer = GroupRecord::ConsumerGroup(ConsumerGroupRecord {
        group: "g".into(),
        group_epoch: 1,
        assignment_epoch: 1,
        state_timestamp_ms: 0,
        subscription_metadata: vec![],
        members: vec![],
    });
    let del = GroupRecord::GroupDelete { group: "g".into() };
    assert_eq!(meta.key(), consumer.key());
    assert_eq!(meta.key(), del.key());
    assert_eq!(&meta.key()[..2], &KEY_TYPE_GROUP.to_be_bytes());
    assert_eq!(del.partition_key(), "g");
}

#[test]
fn huge_counts_are_rejected_without_allocating() {
    // A classic group value claiming i32::MAX members.
    let mut v = vec![0, 0, 0];
    v.extend_from_slice(&0i32.to_be_bytes()); // protocol type ""
    v.extend_from_slice(&1i32.to_be_bytes()); // generation
    v.extend_from_slice(&(-1i32).to_be_bytes());
    v.extend_from_slice(&(-1i32).to_be_bytes());
    v.extend_from_slice(&0i64.to_be_bytes());
    v.extend_from_slice(&i32::MAX.to_be_bytes());
    let key = GroupRecord::GroupDelete { group: "g".into() }.key();
    assert!(matches!(
        GroupRecord::decode(&key, Some(&v)),
        Err(RecordError::UnexpectedEof { .. })
    ));
    assert!(matches!(
        GroupRecord::decode(&[0, 9], None),
        Err(RecordError::UnknownKeyType(9))
    ));
    assert!(matches!(
        GroupRecord::decode(&[0, 2, 0xff, 0xff, 0xff, 0xfe], None),
        Err(RecordError::Invalid { .. })
    ));
}
