//! The quorum controller, one rule at a time: registration and broker epochs, heartbeats,
//! unfencing once caught up, fencing after `broker.session.timeout.ms`, ISR shrink that never
//! empties, leader election and epochs, leadership coming back, controlled shutdown, topic
//! creation (placement and its errors), deletion, growth, configs and producer ids.

use skein_metadata::controller::{
    AlterConfigs, AlterPartition, ConfigOp, Heartbeat, HeartbeatReply, NewPartitions, NewTopic,
    RegisterBroker, TopicRef,
};
use skein_metadata::image::{ConfigResource, Endpoint, NO_LEADER};
use skein_metadata::{
    encode_batch, ControllerConfig, ErrorCode, MetadataImage, Outcome, QuorumController,
};
use skein_protocol::Uuid;

struct Cluster {
    ctl: QuorumController,
    image: MetadataImage,
    offset: u64,
    now: u64,
}

impl Cluster {
    fn new() -> Self {
        Cluster {
            ctl: QuorumController::new(ControllerConfig::default()),
            image: MetadataImage::new(),
            offset: 0,
            now: 1_000,
        }
    }

    fn commit<R>(&mut self, out: Outcome<R>) -> R {
        if !out.records.is_empty() {
            self.offset += 1;
            self.image
                .apply_entry(self.offset, &encode_batch(&out.records))
                .expect("controller records apply");
        }
        out.reply
    }

    fn register(&mut self, id: i32, incarnation: u8, rack: Option<&str>) -> i64 {
        let out = self
            .ctl
            .register_broker(&self.image, &request(id, incarnation, rack), self.now)
            .expect("registers");
        self.commit(out).broker_epoch
    }

    fn heartbeat(&mut self, id: i32, flags: (bool, bool)) -> HeartbeatReply {
        let epoch = self.image.broker(id).unwrap().epoch;
        let hb = Heartbeat {
            broker_id: id,
            broker_epoch: epoch,
            metadata_offset: self.offset,
            want_fence: flags.0,
            want_shutdown: flags.1,
        };
        let out = self.ctl.heartbeat(&self.image, &hb, self.now).unwrap();
        self.commit(out)
    }

    /// Registers brokers `1..=n` and unfences them.
    fn with_brokers(n: i32) -> Self {
        let mut c = Cluster::new();
        for id in 1..=n {
            c.register(id, 0, Some(["a", "b", "c"][(id as usize - 1) % 3]));
        }
        for id in 1..=n {
            let reply = c.heartbeat(id, (false, false));
            assert!(!reply.is_fenced && reply.is_caught_up);
        }
        c
    }

    fn create(&mut self, name: &str, partitions: i32, rf: i16) -> Uuid {
        let out = self.ctl.create_topics(
            &self.image,
            &[NewTopic {
                name: name.into(),
                num_partitions: partitions,
                replication_factor: rf,
                assignments: vec![],
                configs: vec![],
            }],
            false,
            42,
        );
        let reply = self.commit(out);
        reply[0].result.clone().expect("created").topic_id
    }

    fn tick_at(&mut self, now: u64) -> Vec<i32> {
        self.now = now;
        let out = self.ctl.tick(&self.image, now);
        self.commit(out).fenced
    }
}

fn request(id: i32, incarnation: u8, rack: Option<&str>) -> RegisterBroker {
    RegisterBroker {
        broker_id: id,
        incarnation_id: Uuid([incarnation; 16]),
        endpoints: vec![Endpoint {
            name: "PLAINTEXT".into(),
            host: "localhost".into(),
            port: 9092,
            security_protocol: 0,
        }],
        rack: rack.map(String::from),
        previous_broker_epoch: -1,
    }
}

#[test]
fn brokers_register_fenced_with_growing_epochs_and_unfence_once_caught_up() {
    let mut c = Cluster::new();
    let e1 = c.register(1, 0, None);
    let e2 = c.register(2, 0, None);
    assert!(e2 > e1);
    assert!(c.image.broker(1).unwrap().fenced);
    // Not caught up: stays fenced.
    let hb = Heartbeat {
        broker_id: 1,
        broker_epoch: e1,
        metadata_offset: 0,
        want_fence: false,
        want_shutdown: false,
    };
    let out = c.ctl.heartbeat(&c.image, &hb, c.now).unwrap();
    assert!(out.records.is_empty());
    assert!(out.reply.is_fenced && !out.reply.is_caught_up);
    // Caught up to its registration: unfenced.
    let reply = c.heartbeat(1, (false, false));
    assert!(!reply.is_fenced && reply.is_caught_up);
    assert!(!c.image.broker(1).unwrap().fenced);
    // A stale epoch is refused.
    let stale = Heartbeat {
        broker_epoch: e1 - 1,
        ..hb
    };
    let err = c.ctl.heartbeat(&c.image, &stale, c.now).unwrap_err();
    assert_eq!(err.code, ErrorCode::STALE_BROKER_EPOCH);
    let unknown = Heartbeat { broker_id: 9, ..hb };
    assert_eq!(
        c.ctl.heartbeat(&c.image, &unknown, c.now).unwrap_err().code,
        ErrorCode::STALE_BROKER_EPOCH
    );
    // Re-registration of the same incarnation gets a new, higher epoch.
    let e1b = c.register(1, 0, None);
    assert!(e1b > e2);
}

#[test]
fn a_live_node_id_cannot_be_taken_by_another_incarnation() {
    let mut c = Cluster::with_brokers(1);
    let err = c
        .ctl
        .register_broker(&c.image, &request(1, 7, None), c.now + 1_000)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::DUPLICATE_BROKER_REGISTRATION);
    // Once its session expired, the new incarnation may register.
    c.now += 10_000;
    let epoch = c.register(1, 7, None);
    assert_eq!(c.image.broker(1).unwrap().epoch, epoch);
    assert!(c.image.broker(1).unwrap().fenced);
}

#[test]
fn silent_brokers_are_fenced_after_the_session_timeout_and_isrs_never_empty() {
    let mut c = Cluster::with_brokers(3);
    let t = c.create("t", 3, 2);
    c.create("solo", 3, 1);
    let start = c.now;
    // Brokers 1 and 2 keep heartbeating; 3 goes silent.
    c.now = start + 5_000;
    c.heartbeat(1, (false, false));
    c.heartbeat(2, (false, false));
    assert!(
        c.tick_at(start + 9_000).is_empty(),
        "not past the timeout yet"
    );
    assert_eq!(c.tick_at(start + 9_001), vec![3]);
    assert!(c.image.broker(3).unwrap().fenced);
    for (name, topic) in [("t", c.image.topic(t).unwrap().clone())]
        .into_iter()
        .chain([("solo", c.image.topic_by_name("solo").unwrap().clone())])
    {
        for s in &topic.partitions {
            assert!(!s.isr.is_empty(), "{name}: {s:?}");
            assert_ne!(s.leader, 3, "{name}: {s:?}");
            if s.isr == [3] {
                assert_eq!(s.leader, NO_LEADER, "{name}: sole member fenced: offline");
            } else {
                assert!(!s.isr.contains(&3), "{name}: {s:?}");
                assert_ne!(s.leader, NO_LEADER);
            }
        }
    }
    // Broker 3 comes back (same epoch, caught up): unfenced, and it leads again the
    // partitions left leaderless with it in the ISR, with a new leader epoch.
    let offline: Vec<(i32, i32)> = c
        .image
        .topic_by_name("solo")
        .unwrap()
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, s)| s.leader == NO_LEADER)
        .map(|(p, s)| (p as i32, s.leader_epoch))
        .collect();
    assert!(!offline.is_empty());
    assert_eq!(c.image.fenced_brokers(), vec![3]);
    assert_eq!(
        c.image.offline_partitions(),
        offline
            .iter()
            .map(|(p, _)| ("solo".to_string(), *p))
            .collect::<Vec<_>>()
    );
    c.now = start + 12_000;
    let reply = c.heartbeat(3, (false, false));
    assert!(!reply.is_fenced);
    assert!(c.image.offline_partitions().is_empty() && c.image.fenced_brokers().is_empty());
    let solo = c.image.topic_by_name("solo").unwrap();
    for (p, epoch) in offline {
        let s = &solo.partitions[p as usize];
        assert_eq!(s.leader, 3);
        assert_eq!(s.leader_epoch, epoch + 1);
    }
}

#[test]
fn controlled_shutdown_moves_leaderships_then_says_shut_down() {
    let mut c = Cluster::with_brokers(3);
    let t = c.create("t", 6, 3);
    c.create("solo", 3, 1);
    let led = |c: &Cluster, id: i32| {
        c.image
            .topic(t)
            .unwrap()
            .partitions
            .iter()
            .filter(|s| s.leader == id)
            .count()
    };
    assert_eq!(led(&c, 1), 2);
    let first = c.heartbeat(1, (false, true));
    assert!(!first.should_shut_down, "leaderships are moving first");
    assert!(c.image.broker(1).unwrap().in_controlled_shutdown);
    assert_eq!(led(&c, 1), 0);
    for s in &c.image.topic(t).unwrap().partitions {
        assert!(!s.isr.contains(&1), "{s:?}");
    }
    // It keeps the partition it alone holds: nothing to hand over.
    let solo = c.image.topic_by_name("solo").unwrap();
    assert!(solo.partitions.iter().any(|s| s.leader == 1));
    let second = c.heartbeat(1, (false, true));
    assert!(
        !second.should_shut_down,
        "the new leaders have not reported the handover yet"
    );
    c.heartbeat(2, (false, false));
    let third = c.heartbeat(1, (false, true));
    assert!(!third.should_shut_down, "broker 3 has not caught up yet");
    c.heartbeat(3, (false, false));
    let fourth = c.heartbeat(1, (false, true));
    assert!(fourth.should_shut_down);
    // New topics avoid it.
    let u = c.create("u", 4, 2);
    assert!(c
        .image
        .topic(u)
        .unwrap()
        .partitions
        .iter()
        .all(|s| !s.hosts(1)));
}

#[test]
fn a_broker_asking_to_be_fenced_is_fenced() {
    let mut c = Cluster::with_brokers(2);
    c.create("t", 2, 2);
    let reply = c.heartbeat(2, (true, false));
    assert!(reply.is_fenced);
    assert!(c.image.broker(2).unwrap().fenced);
    for s in &c.image.topic_by_name("t").unwrap().partitions {
        assert_eq!((s.leader, s.isr.clone()), (1, vec![1]));
    }
}

#[test]
fn topics_are_placed_over_racks_with_balanced_leaders() {
    let mut c = Cluster::with_brokers(6);
    let t = c.create("t", 12, 3);
    let topic = c.image.topic(t).unwrap();
    let mut leaders = [0; 7];
    for s in &topic.partitions {
        let racks: std::collections::BTreeSet<_> = s
            .replicas
            .iter()
            .map(|r| c.image.broker(*r).unwrap().rack.clone())
            .collect();
        assert_eq!(racks.len(), 3, "{s:?}");
        assert_eq!(
            (s.leader, s.leader_epoch, s.partition_epoch),
            (s.replicas[0], 0, 0)
        );
        leaders[s.leader as usize] += 1;
    }
    assert_eq!(&leaders[1..], &[2, 2, 2, 2, 2, 2]);
}

#[test]
fn topic_creation_errors() {
    let mut c = Cluster::with_brokers(2);
    c.create("t", 1, 1);
    let out = c.ctl.create_topics(
        &c.image,
        &[
            NewTopic {
                name: "t".into(),
                num_partitions: 1,
                replication_factor: 1,
                assignments: vec![],
                configs: vec![],
            },
            NewTopic {
                name: "big".into(),
                num_partitions: 1,
                replication_factor: 3,
                assignments: vec![],
                configs: vec![],
            },
            NewTopic {
                name: "zero".into(),
                num_partitions: 0,
                replication_factor: 1,
                assignments: vec![],
                configs: vec![],
            },
            NewTopic {
                name: "manual".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: vec![vec![1, 2], vec![2, 9]],
                configs: vec![],
            },
            NewTopic {
                name: "ok".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: vec![vec![2, 1], vec![1, 2]],
                configs: vec![("cleanup.policy".into(), "compact".into())],
            },
        ],
        false,
        1,
    );
    let codes: Vec<Option<ErrorCode>> = out
        .reply
        .iter()
        .map(|r| r.result.as_ref().err().map(|e| e.code))
        .collect();
    assert_eq!(
        codes,
        vec![
            Some(ErrorCode::TOPIC_ALREADY_EXISTS),
            Some(ErrorCode::INVALID_REPLICATION_FACTOR),
            Some(ErrorCode::INVALID_PARTITIONS),
            Some(ErrorCode::INVALID_REPLICA_ASSIGNMENT),
            None,
        ]
    );
    c.commit(out);
    let ok = c.image.topic_by_name("ok").unwrap();
    assert_eq!(ok.partitions[0].leader, 2);
    assert_eq!(
        c.image
            .configs(&ConfigResource::topic("ok"))
            .unwrap()
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );
    // validate_only: same answers, no records.
    let out = c.ctl.create_topics(
        &c.image,
        &[NewTopic {
            name: "v".into(),
            num_partitions: 3,
            replication_factor: 2,
            assignments: vec![],
            configs: vec![],
        }],
        true,
        1,
    );
    assert!(out.records.is_empty() && out.reply[0].result.is_ok());
}

#[test]
fn delete_grow_configs_and_producer_ids() {
    let mut c = Cluster::with_brokers(3);
    let t = c.create("t", 2, 2);
    // Growth only.
    let out = c.ctl.create_partitions(
        &c.image,
        &[
            NewPartitions {
                name: "t".into(),
                count: 5,
                assignments: None,
            },
            NewPartitions {
                name: "nope".into(),
                count: 5,
                assignments: None,
            },
        ],
        false,
        3,
    );
    assert!(out.reply[0].result.is_ok());
    assert_eq!(
        out.reply[1].result.as_ref().unwrap_err().code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
    c.commit(out);
    assert_eq!(c.image.topic(t).unwrap().partitions.len(), 5);
    assert!(c
        .image
        .topic(t)
        .unwrap()
        .partitions
        .iter()
        .all(|s| s.replicas.len() == 2));
    let out = c.ctl.create_partitions(
        &c.image,
        &[NewPartitions {
            name: "t".into(),
            count: 4,
            assignments: None,
        }],
        false,
        3,
    );
    assert_eq!(
        out.reply[0].result.as_ref().unwrap_err().code,
        ErrorCode::INVALID_PARTITIONS
    );
    assert!(out.records.is_empty());

    // Configs: set then delete.
    let resource = ConfigResource::topic("t");
    let out = c.ctl.incremental_alter_configs(
        &c.image,
        &[AlterConfigs {
            resource: resource.clone(),
            ops: vec![("retention.ms".into(), ConfigOp::Set("10".into()))],
        }],
        false,
    );
    c.commit(out);
    assert_eq!(c.image.configs(&resource).unwrap()["retention.ms"], "10");
    let out = c.ctl.incremental_alter_configs(
        &c.image,
        &[
            AlterConfigs {
                resource: resource.clone(),
                ops: vec![("retention.ms".into(), ConfigOp::Delete)],
            },
            AlterConfigs {
                resource: ConfigResource::topic("nope"),
                ops: vec![("retention.ms".into(), ConfigOp::Delete)],
            },
        ],
        false,
    );
    assert_eq!(
        out.reply[1].result.as_ref().unwrap_err().code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
    c.commit(out);
    assert!(c.image.configs(&resource).is_none());

    // Producer ids in blocks of 1000.
    let epoch = c.image.broker(2).unwrap().epoch;
    let first = c.ctl.allocate_producer_ids(&c.image, 2, epoch).unwrap();
    let first = c.commit(first);
    let second = c.ctl.allocate_producer_ids(&c.image, 2, epoch).unwrap();
    let second = c.commit(second);
    assert_eq!((first.first, first.len), (0, 1000));
    assert_eq!((second.first, second.len), (1000, 1000));
    assert_eq!(
        c.ctl
            .allocate_producer_ids(&c.image, 2, epoch + 1)
            .unwrap_err()
            .code,
        ErrorCode::STALE_BROKER_EPOCH
    );

    // Delete by id and by name; unknown ones are errors.
    let out = c.ctl.delete_topics(
        &c.image,
        &[
            TopicRef::Id(t),
            TopicRef::Name("gone".into()),
            TopicRef::Id(Uuid([1; 16])),
        ],
    );
    assert_eq!(out.reply[0].result, Ok(("t".to_string(), t)));
    assert_eq!(
        out.reply[1].result.as_ref().unwrap_err().code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        out.reply[2].result.as_ref().unwrap_err().code,
        ErrorCode::UNKNOWN_TOPIC_ID
    );
    c.commit(out);
    assert!(c.image.topic(t).is_none());
}

#[test]
fn a_new_controller_gives_every_broker_a_fresh_session() {
    let mut c = Cluster::with_brokers(2);
    let start = c.now;
    // Failover long after the last heartbeats: no broker is fenced for silence the new
    // controller did not observe.
    let mut fresh = QuorumController::new(ControllerConfig::default());
    fresh.activate(&c.image, start + 20_000);
    c.ctl = fresh;
    assert!(c.tick_at(start + 20_001).is_empty());
    assert_eq!(c.tick_at(start + 29_001), vec![1, 2]);
}

#[test]
fn controllers_register_with_their_directory_id() {
    let mut c = Cluster::new();
    let endpoints = vec![Endpoint {
        name: "CONTROLLER".into(),
        host: "localhost".into(),
        port: 9093,
        security_protocol: 0,
    }];
    let out = c
        .ctl
        .register_controller(&c.image, 1, Uuid([5; 16]), &endpoints)
        .unwrap();
    c.commit(out);
    let reg = &c.image.controllers()[&1];
    assert_eq!(
        (reg.directory_id, reg.endpoints.clone()),
        (Uuid([5; 16]), endpoints.clone())
    );
    let again = c
        .ctl
        .register_controller(&c.image, 1, Uuid([5; 16]), &endpoints)
        .unwrap();
    assert!(again.records.is_empty(), "nothing changed");
    assert!(c
        .ctl
        .register_controller(&c.image, 1, Uuid::ZERO, &endpoints)
        .is_err());
}

#[test]
fn leaders_change_their_isr_with_the_current_epochs() {
    let mut c = Cluster::with_brokers(3);
    let t = c.create("t", 1, 3);
    let p = c.image.partition(t, 0).unwrap().clone();
    let leader = p.leader;
    let epoch_of = |c: &Cluster, id: i32| c.image.broker(id).map_or(-1, |b| b.epoch);
    let others: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| *r != leader)
        .collect();
    let ask = |c: &mut Cluster, isr: Vec<i32>, partition_epoch: i32| {
        let change = AlterPartition {
            topic_id: t,
            partition: 0,
            leader_epoch: c.image.partition(t, 0).unwrap().leader_epoch,
            partition_epoch,
            new_isr: isr.iter().map(|r| (*r, epoch_of(c, *r))).collect(),
        };
        let out = c
            .ctl
            .alter_partition(&c.image, leader, epoch_of(c, leader), &[change])
            .unwrap();
        c.commit(out).remove(0).result
    };
    // Shrink to the leader alone, then grow back.
    let shrunk = ask(&mut c, vec![leader], p.partition_epoch).unwrap();
    assert_eq!(
        (shrunk.isr.clone(), shrunk.partition_epoch),
        (vec![leader], 1)
    );
    assert_eq!(c.image.partition(t, 0).unwrap(), &shrunk);
    // A stale partition epoch is refused.
    let stale = ask(&mut c, vec![leader, others[0]], p.partition_epoch).unwrap_err();
    assert_eq!(stale.code, ErrorCode::INVALID_UPDATE_VERSION);
    let grown = ask(&mut c, vec![leader, others[0]], 1).unwrap();
    assert_eq!(grown.isr, vec![leader, others[0]]);
    // Without the leader, or with a non-replica: invalid.
    assert_eq!(
        ask(&mut c, vec![others[0]], 2).unwrap_err().code,
        ErrorCode::INVALID_REQUEST
    );
    assert_eq!(
        ask(&mut c, vec![leader, 9], 2).unwrap_err().code,
        ErrorCode::INVALID_REQUEST
    );
    // A fenced broker cannot join.
    c.heartbeat(others[1], (true, false));
    assert_eq!(
        ask(&mut c, vec![leader, others[0], others[1]], 2)
            .unwrap_err()
            .code,
        ErrorCode::INELIGIBLE_REPLICA
    );
    // Only the leader may ask.
    let change = AlterPartition {
        topic_id: t,
        partition: 0,
        leader_epoch: 0,
        partition_epoch: 2,
        new_isr: vec![(others[0], -1)],
    };
    let out = c
        .ctl
        .alter_partition(&c.image, others[0], epoch_of(&c, others[0]), &[change])
        .unwrap();
    assert_eq!(
        out.reply[0].result.as_ref().unwrap_err().code,
        ErrorCode::NOT_LEADER_OR_FOLLOWER
    );
    assert!(c
        .ctl
        .alter_partition(&c.image, leader, -5, &[])
        .is_err_and(|e| e.code == ErrorCode::STALE_BROKER_EPOCH));
}

mod fuzz {
    //! Arbitrary operations with arbitrary arguments: the controller never panics, and every
    //! record it proposes applies to the image (it cannot be talked into corrupting it).

    use super::*;
    use proptest::prelude::*;
    use skein_protocol::testing::Rng;

    fn name(rng: &mut Rng) -> String {
        match rng.below(6) {
            0 => String::new(),
            1 => "x".repeat(300),
            _ => format!("t{}", rng.below(4)),
        }
    }

    fn ids(rng: &mut Rng) -> Vec<i32> {
        (0..rng.below(4)).map(|_| rng.below(8) as i32 - 2).collect()
    }

    fn step(c: &mut Cluster, rng: &mut Rng) {
        c.now += rng.below(5_000);
        let id = rng.below(8) as i32 - 2;
        let epoch = c.image.broker(id).map_or(rng.below(3) as i64, |b| b.epoch);
        match rng.below(11) {
            0 => {
                let r = c.ctl.register_broker(
                    &c.image,
                    &request(id, rng.below(3) as u8, rng.chance(2).then_some("r")),
                    c.now,
                );
                if let Ok(out) = r {
                    c.commit(out);
                }
            }
            1 => {
                let hb = Heartbeat {
                    broker_id: id,
                    broker_epoch: epoch,
                    metadata_offset: rng.below(c.offset + 2),
                    want_fence: rng.chance(4),
                    want_shutdown: rng.chance(4),
                };
                if let Ok(out) = c.ctl.heartbeat(&c.image, &hb, c.now) {
                    c.commit(out);
                }
            }
            2 => {
                let out = c.ctl.tick(&c.image, c.now);
                c.commit(out);
            }
            3 => {
                let topics: Vec<NewTopic> = (0..1 + rng.below(3))
                    .map(|_| NewTopic {
                        name: name(rng),
                        num_partitions: rng.below(12) as i32 - 2,
                        replication_factor: rng.below(6) as i16 - 2,
                        assignments: if rng.chance(3) {
                            (0..rng.below(4)).map(|_| ids(rng)).collect()
                        } else {
                            vec![]
                        },
                        configs: (0..rng.below(3))
                            .map(|_| (format!("k{}", rng.below(3)), "v".to_string()))
                            .collect(),
                    })
                    .collect();
                let out = c
                    .ctl
                    .create_topics(&c.image, &topics, rng.chance(5), rng.next_u64());
                c.commit(out);
            }
            4 => {
                let refs: Vec<TopicRef> = (0..1 + rng.below(3))
                    .map(|_| {
                        if rng.chance(2) {
                            TopicRef::Name(name(rng))
                        } else {
                            TopicRef::Id(
                                c.image
                                    .topic_by_name(&name(rng))
                                    .map_or(Uuid([rng.below(3) as u8; 16]), |t| t.id),
                            )
                        }
                    })
                    .collect();
                let out = c.ctl.delete_topics(&c.image, &refs);
                c.commit(out);
            }
            5 => {
                let out = c.ctl.create_partitions(
                    &c.image,
                    &[NewPartitions {
                        name: name(rng),
                        count: rng.below(14) as i32 - 2,
                        assignments: rng
                            .chance(3)
                            .then(|| (0..rng.below(4)).map(|_| ids(rng)).collect()),
                    }],
                    rng.chance(5),
                    rng.next_u64(),
                );
                c.commit(out);
            }
            6 => {
                let resource = ConfigResource {
                    resource_type: rng.below(7) as i8 - 1,
                    name: if rng.chance(2) {
                        name(rng)
                    } else {
                        (rng.below(5) as i32 - 1).to_string()
                    },
                };
                let ops = (0..rng.below(4))
                    .map(|_| {
                        let key = if rng.chance(8) {
                            String::new()
                        } else {
                            format!("k{}", rng.below(3))
                        };
                        let op = if rng.chance(2) {
                            ConfigOp::Delete
                        } else {
                            ConfigOp::Set("v".into())
                        };
                        (key, op)
                    })
                    .collect();
                let out = c.ctl.incremental_alter_configs(
                    &c.image,
                    &[AlterConfigs { resource, ops }],
                    rng.chance(5),
                );
                c.commit(out);
            }
            7 => {
                if let Ok(out) = c.ctl.allocate_producer_ids(&c.image, id, epoch) {
                    c.commit(out);
                }
            }
            8 => {
                let parts: Vec<(Uuid, i32, i32, i32)> = c
                    .image
                    .topics()
                    .values()
                    .flat_map(|t| {
                        t.partitions
                            .iter()
                            .enumerate()
                            .map(|(p, s)| (t.id, p as i32, s.leader_epoch, s.partition_epoch))
                    })
                    .collect();
                if let Some(&(topic, p, le, pe)) =
                    parts.get(rng.below(parts.len() as u64 + 1) as usize)
                {
                    let change = AlterPartition {
                        topic_id: topic,
                        partition: p + i32::from(rng.chance(8)),
                        leader_epoch: le - i32::from(rng.chance(8)),
                        partition_epoch: pe - i32::from(rng.chance(8)),
                        new_isr: ids(rng)
                            .into_iter()
                            .map(|r| (r, rng.below(4) as i64 - 1))
                            .collect(),
                    };
                    let leader = c.image.partition(topic, p).map_or(id, |s| s.leader);
                    let epoch = c.image.broker(leader).map_or(0, |b| b.epoch);
                    if let Ok(out) = c.ctl.alter_partition(&c.image, leader, epoch, &[change]) {
                        c.commit(out);
                    }
                }
            }
            9 => {
                let requests: Vec<skein_metadata::reassign::Reassignment> = (0..1 + rng.below(3))
                    .map(|_| skein_metadata::reassign::Reassignment {
                        topic: name(rng),
                        partition: rng.below(4) as i32 - 1,
                        replicas: rng
                            .chance(4)
                            .then(|| ids(rng))
                            .or_else(|| rng.chance(2).then(|| (1..=rng.below(4) as i32).collect())),
                    })
                    .collect();
                let out = c.ctl.alter_partition_reassignments(&c.image, &requests);
                c.commit(out);
            }
            _ => {
                let mut fresh = QuorumController::new(ControllerConfig::default());
                fresh.activate(&c.image, c.now);
                c.ctl = fresh;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_operations_never_corrupt_the_image(seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            let mut c = Cluster::new();
            for _ in 0..150 {
                step(&mut c, &mut rng);
            }
            let mut restored = MetadataImage::new();
            if let Some(at) = c.image.last_offset() {
                restored.restore(at, &c.image.snapshot()).unwrap();
                prop_assert_eq!(restored, c.image);
            }
        }
    }
}
