//! The metadata image: entries apply atomically, bad records are errors that leave the image
//! unchanged (never panics, even on random records and random bytes), deltas say what each
//! broker must do, and image → snapshot → restore gives an equal image.

use proptest::prelude::*;
use skein_metadata::image::{
    broker_change_record, partition_change_record, partition_record, remove_topic_record,
    ConfigResource, PartitionState, NO_LEADER,
};
use skein_metadata::{decode_batch, encode_batch, Error, MetadataImage};
use skein_protocol::metadata_records::{
    ConfigRecord, ProducerIdsRecord, RegisterBrokerRecord, RegisterControllerRecord, TopicRecord,
};
use skein_protocol::testing::Rng;
use skein_protocol::{MetadataRecord, MetadataRecordType, Uuid};

fn broker(id: i32, epoch: i64, fenced: bool) -> MetadataRecord {
    RegisterBrokerRecord {
        broker_id: id,
        broker_epoch: epoch,
        incarnation_id: Uuid([id as u8; 16]),
        rack: (id % 2 == 0).then(|| "r0".to_string()),
        fenced,
        ..Default::default()
    }
    .into()
}

fn topic(name: &str, id: u8) -> MetadataRecord {
    TopicRecord {
        name: name.into(),
        topic_id: Uuid([id; 16]),
        ..Default::default()
    }
    .into()
}

fn part(topic: u8, p: i32, replicas: &[i32], leader: i32) -> MetadataRecord {
    partition_record(
        Uuid([topic; 16]),
        p,
        &PartitionState {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            ..Default::default()
        },
    )
    .into()
}

fn config(resource: ConfigResource, name: &str, value: Option<&str>) -> MetadataRecord {
    ConfigRecord {
        resource_type: resource.resource_type,
        resource_name: resource.name,
        name: name.into(),
        value: value.map(String::from),
        ..Default::default()
    }
    .into()
}

/// Three brokers (1 fenced), a controller, two topics, configs, a producer-id block.
fn populated() -> MetadataImage {
    let mut image = MetadataImage::new();
    image
        .apply_entry(
            1,
            &encode_batch(&[
                RegisterControllerRecord {
                    controller_id: 1,
                    incarnation_id: Uuid([9; 16]),
                    ..Default::default()
                }
                .into(),
                broker(1, 1, false),
                broker(2, 1, false),
                broker(3, 1, true),
            ]),
        )
        .unwrap();
    image
        .apply_entry(
            4,
            &encode_batch(&[
                topic("a", 1),
                part(1, 0, &[1, 2], 1),
                part(1, 1, &[2, 1], 2),
                topic("b", 2),
                part(2, 0, &[2], 2),
                config(ConfigResource::topic("a"), "retention.ms", Some("1000")),
                config(ConfigResource::broker(""), "log.retention.ms", Some("5")),
                ProducerIdsRecord {
                    broker_id: 1,
                    broker_epoch: 1,
                    next_producer_id: 1000,
                    ..Default::default()
                }
                .into(),
            ]),
        )
        .unwrap();
    image
}

#[test]
fn applies_entries_and_reports_deltas() {
    let mut image = populated();
    assert_eq!(image.last_offset(), Some(4));
    assert_eq!(image.broker(2).unwrap().registration_offset, 1);
    assert_eq!(image.topic_by_name("a").unwrap().partitions.len(), 2);
    assert_eq!(image.next_producer_id(), 1000);

    // Broker 1 is fenced: partition a-0 moves to 2, a-1 drops 1 from its ISR.
    let mut to_2 = partition_change_record(Uuid([1; 16]), 0);
    to_2.isr = Some(vec![2]);
    to_2.leader = 2;
    let mut shrink = partition_change_record(Uuid([1; 16]), 1);
    shrink.isr = Some(vec![2]);
    let delta = image
        .apply_entry(
            7,
            &encode_batch(&[
                broker_change_record(1, 1, 1, 0).into(),
                to_2.into(),
                shrink.into(),
            ]),
        )
        .unwrap();
    let a0 = image.partition(Uuid([1; 16]), 0).unwrap();
    assert_eq!((a0.leader, a0.leader_epoch, a0.partition_epoch), (2, 1, 1));
    let a1 = image.partition(Uuid([1; 16]), 1).unwrap();
    assert_eq!((a1.leader, a1.leader_epoch, a1.partition_epoch), (2, 0, 1));
    assert!(image.broker(1).unwrap().fenced);
    assert_eq!(delta.brokers_changed, vec![1]);
    let local = delta.local_changes(2);
    assert_eq!(local.leaders.len(), 2, "{local:?}");
    assert!(local.followers.is_empty() && local.removed.is_empty());
    let local = delta.local_changes(1);
    assert_eq!(
        local.followers.len(),
        2,
        "still a replica of both: {local:?}"
    );

    // Deleting topic a: brokers 1 and 2 drop its partitions; its configs go.
    let delta = image
        .apply_entry(
            8,
            &encode_batch(&[remove_topic_record(Uuid([1; 16])).into()]),
        )
        .unwrap();
    assert!(image.topic_by_name("a").is_none());
    assert!(image.configs(&ConfigResource::topic("a")).is_none());
    assert_eq!(delta.topics_deleted.len(), 1);
    assert_eq!(delta.local_changes(1).removed.len(), 2);
    assert_eq!(delta.config_changes.len(), 1);
    assert_eq!(delta.config_changes[0].value, None);
}

#[test]
fn a_bad_record_rolls_the_whole_entry_back() {
    let mut image = populated();
    let before = image.clone();
    let cases: Vec<(&str, Vec<MetadataRecord>)> = vec![
        (
            "partition of an unknown topic",
            vec![topic("c", 3), part(3, 0, &[1], 1), part(4, 0, &[1], 1)],
        ),
        (
            "leader outside the ISR",
            vec![topic("c", 3), {
                let mut p = partition_change_record(Uuid([1; 16]), 0);
                p.isr = Some(vec![2]);
                p.into()
            }],
        ),
        (
            "ISR member not a replica",
            vec![{
                let mut p = partition_change_record(Uuid([1; 16]), 0);
                p.isr = Some(vec![1, 5]);
                p.into()
            }],
        ),
        (
            "stale broker epoch",
            vec![broker(4, 2, true), broker_change_record(2, 0, 1, 0).into()],
        ),
        ("a partition gap", vec![part(2, 2, &[1], 1)]),
        ("duplicate topic name", vec![topic("a", 5)]),
        ("duplicate replicas", vec![part(2, 1, &[1, 1], 1)]),
        (
            "config for an unknown topic",
            vec![config(ConfigResource::topic("zz"), "x", Some("y"))],
        ),
        (
            "producer ids going backwards",
            vec![ProducerIdsRecord {
                next_producer_id: 10,
                ..Default::default()
            }
            .into()],
        ),
        (
            "a registration epoch going backwards",
            vec![broker(2, 0, true)],
        ),
        (
            "a record Skein does not support",
            vec![MetadataRecord::random(
                MetadataRecordType::AccessControlEntry,
                0,
                &mut Rng::new(1),
            )],
        ),
        (
            "deleting then recreating then failing",
            vec![
                remove_topic_record(Uuid([2; 16])).into(),
                topic("b", 6),
                part(6, 0, &[1], 1),
                part(6, 0, &[1], 7),
            ],
        ),
    ];
    for (what, records) in cases {
        let err = image.apply_entry(9, &encode_batch(&records));
        assert!(
            matches!(err, Err(Error::Record { offset: 9, .. })),
            "{what}: {err:?}"
        );
        assert_eq!(image, before, "{what}: the image changed");
    }
    assert!(matches!(
        image.apply_entry(4, &encode_batch(&[])),
        Err(Error::OffsetNotIncreasing { .. })
    ));
    assert!(matches!(
        image.apply_entry(9, &[0, 5]),
        Err(Error::Batch(_))
    ));
    assert_eq!(image, before);
}

#[test]
fn snapshot_restores_an_equal_image() {
    let image = populated();
    let snapshot = image.snapshot();
    let records = decode_batch(&snapshot).unwrap();
    assert!(matches!(records[0], MetadataRecord::RegisterController(_)));
    let mut restored = MetadataImage::new();
    restored.restore(4, &snapshot).unwrap();
    assert_eq!(restored, image);
    // The registration offset survives (it is not the snapshot's offset).
    assert_eq!(restored.broker(1).unwrap().registration_offset, 1);
    // A bad snapshot leaves the image alone.
    let mut bad = snapshot.to_vec();
    bad.truncate(bad.len() - 3);
    assert!(restored.restore(5, &bad).is_err());
    assert_eq!(restored, image);
}

#[test]
fn an_empty_image_snapshots_to_an_empty_batch() {
    let image = MetadataImage::new();
    assert!(decode_batch(&image.snapshot()).unwrap().is_empty());
    let mut restored = populated();
    restored.restore(0, &image.snapshot()).unwrap();
    assert_eq!(restored.last_offset(), Some(0));
    assert!(restored.brokers().is_empty() && restored.topics().is_empty());
    assert_eq!(NO_LEADER, -1);
}

/// Random images: a random sequence of valid-ish entries (some refused), then the round trip.
fn random_image(seed: u64) -> MetadataImage {
    let mut rng = Rng::new(seed);
    let mut image = MetadataImage::new();
    let mut offset = 0;
    for _ in 0..rng.below(40) {
        offset += 1 + rng.below(3);
        let id = 1 + rng.below(5) as i32;
        let t = 1 + rng.below(6) as u8;
        let replicas: Vec<i32> = (1..=1 + rng.below(3) as i32).collect();
        let records: Vec<MetadataRecord> = match rng.below(8) {
            0 => vec![broker(
                id,
                image.broker(id).map_or(0, |b| b.epoch) + 1 + rng.below(3) as i64,
                rng.chance(2),
            )],
            1 => vec![topic(&format!("t{t}"), t)],
            2 => {
                let p = image.topic(Uuid([t; 16])).map_or(0, |x| x.partitions.len());
                vec![part(t, p as i32, &replicas, replicas[0])]
            }
            3 => {
                let mut c = partition_change_record(Uuid([t; 16]), 0);
                c.isr = Some(vec![1]);
                c.leader = if rng.chance(2) { 1 } else { -1 };
                vec![c.into()]
            }
            4 => vec![config(
                if rng.chance(2) {
                    ConfigResource::topic(format!("t{t}"))
                } else {
                    ConfigResource::broker(id.to_string())
                },
                &format!("k{}", rng.below(3)),
                rng.chance(3).then_some("v"),
            )],
            5 => vec![remove_topic_record(Uuid([t; 16])).into()],
            6 => match image.broker(id) {
                Some(b) => vec![broker_change_record(
                    id,
                    b.epoch,
                    [-1, 0, 1][rng.below(3) as usize],
                    rng.below(2) as i8,
                )
                .into()],
                None => vec![],
            },
            _ => vec![ProducerIdsRecord {
                next_producer_id: image.next_producer_id() + 1000,
                ..Default::default()
            }
            .into()],
        };
        let _ = image.apply_entry(offset, &encode_batch(&records));
    }
    image
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn image_snapshot_restore_round_trips(seed in any::<u64>()) {
        let image = random_image(seed);
        let mut restored = MetadataImage::new();
        restored.restore(image.last_offset().unwrap_or(0), &image.snapshot()).unwrap();
        if image.last_offset().is_some() {
            prop_assert_eq!(&restored, &image);
        }
        // And again: a snapshot of the restored image is the same bytes.
        prop_assert_eq!(restored.snapshot(), image.snapshot());
    }

    /// Random records of every type (mostly nonsense for the image) never panic, and a refused
    /// entry changes nothing.
    #[test]
    fn random_records_never_panic(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut image = random_image(seed ^ 0x5555);
        let types = MetadataRecordType::all();
        for offset in 1000..1010 {
            let records: Vec<MetadataRecord> = (0..1 + rng.below(4))
                .map(|_| {
                    let t = types[rng.below(types.len() as u64) as usize];
                    MetadataRecord::random(t, t.latest_version(), &mut rng)
                })
                .collect();
            let before = image.clone();
            if image.apply_entry(offset, &encode_batch(&records)).is_err() {
                prop_assert_eq!(&image, &before);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut image = populated();
        let before = image.clone();
        if image.apply_entry(100, &bytes).is_err() {
            prop_assert_eq!(&image, &before);
        }
        let _ = image.restore(100, &bytes);
    }
}

#[test]
fn acls_apply_undo_and_survive_a_snapshot() {
    use skein_protocol::metadata_records::{
        AccessControlEntryRecord, RemoveAccessControlEntryRecord,
    };
    let acl = |id: u8, name: &str| -> MetadataRecord {
        AccessControlEntryRecord {
            id: Uuid([id; 16]),
            resource_type: 2,
            resource_name: name.into(),
            pattern_type: 3,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: 4,
            permission_type: 3,
            ..Default::default()
        }
        .into()
    };
    let mut image = populated();
    let before = image.acls().clone();
    image
        .apply_records(10, &[acl(1, "orders"), acl(2, "pay")])
        .unwrap();
    assert_eq!(image.acls().len(), 2);
    assert!(!std::sync::Arc::ptr_eq(&before, image.acls()));
    assert_eq!(image.acls()[&Uuid([1; 16])].resource_name, "orders");
    // Removing an unknown id refuses the whole entry, the first record included.
    let remove = |id: u8| -> MetadataRecord {
        RemoveAccessControlEntryRecord {
            id: Uuid([id; 16]),
            ..Default::default()
        }
        .into()
    };
    let snapshot_before = image.clone();
    assert!(image.apply_records(11, &[remove(1), remove(9)]).is_err());
    assert_eq!(image, snapshot_before);
    let mut restored = MetadataImage::new();
    restored.restore(10, &image.snapshot()).unwrap();
    assert_eq!(restored, image);
    image.apply_records(12, &[remove(1)]).unwrap();
    assert_eq!(image.acls().len(), 1);
}

fn client_quota(
    entity: &[(&str, Option<&str>)],
    key: &str,
    value: f64,
    remove: bool,
) -> MetadataRecord {
    use skein_protocol::metadata_records::client_quota_record::EntityData;
    skein_protocol::metadata_records::ClientQuotaRecord {
        entity: entity
            .iter()
            .map(|(t, n)| EntityData {
                entity_type: t.to_string(),
                entity_name: n.map(String::from),
                ..Default::default()
            })
            .collect(),
        key: key.into(),
        value,
        remove,
        ..Default::default()
    }
    .into()
}

#[test]
fn client_quotas_apply_undo_and_survive_snapshots() {
    let mut image = MetadataImage::new();
    let alice_app = [("user", Some("alice")), ("client-id", Some("app"))];
    image
        .apply_records(
            1,
            &[
                client_quota(&alice_app, "producer_byte_rate", 1024.0, false),
                client_quota(&[("user", None)], "consumer_byte_rate", 2048.0, false),
                client_quota(&[("client-id", None)], "request_percentage", 50.0, false),
            ],
        )
        .unwrap();
    // Stored by entity sorted by type: the order the record gave does not matter.
    let key = vec![
        ("client-id".to_string(), Some("app".to_string())),
        ("user".to_string(), Some("alice".to_string())),
    ];
    assert_eq!(image.client_quotas()[&key]["producer_byte_rate"].0, 1024.0);
    assert_eq!(image.client_quotas().len(), 3);
    // A bad record in an entry undoes the entry's other changes.
    let before = image.clone();
    let bad = image.apply_records(
        2,
        &[
            client_quota(&[("user", None)], "consumer_byte_rate", 1.0, true),
            client_quota(&[("user", Some("a")), ("user", Some("b"))], "x", 1.0, false),
        ],
    );
    assert!(bad.is_err());
    assert_eq!(image, before);
    // Removing the last key removes the entity.
    image
        .apply_records(
            3,
            &[client_quota(
                &[("user", None)],
                "consumer_byte_rate",
                0.0,
                true,
            )],
        )
        .unwrap();
    assert_eq!(image.client_quotas().len(), 2);
    let mut restored = MetadataImage::new();
    restored.restore(3, &image.snapshot()).unwrap();
    assert_eq!(restored, image);
}
