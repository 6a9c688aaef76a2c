//! Elections asked for by operators and policy: ElectLeaders (preferred and unclean, with
//! Kafka's per-partition errors), automatic preferred-leader balancing by
//! `leader.imbalance.per.broker.percentage`, and unclean elections with KIP-704's leader
//! recovery state (RECOVERING until the leader reports RECOVERED; no ISR growth meanwhile).

use skein_metadata::controller::{AlterConfigs, AlterPartition, ConfigOp, ElectionType};
use skein_metadata::image::{ConfigResource, PartitionState, NO_LEADER};
use skein_metadata::{ControllerConfig, ErrorCode, MetadataImage};
use skein_protocol::Uuid;

mod common;
use common::Cluster;

impl Cluster {
    /// The leader of `topic`-`p` asks for `isr` (and RECOVERED when `recovered`).
    fn alter(
        &mut self,
        topic: Uuid,
        p: i32,
        isr: &[i32],
        recovered: bool,
    ) -> Result<PartitionState, ErrorCode> {
        let part = self.part(topic, p);
        let leader = part.leader;
        let change = AlterPartition {
            topic_id: topic,
            partition: p,
            leader_epoch: part.leader_epoch,
            partition_epoch: part.partition_epoch,
            new_isr: isr.iter().map(|r| (*r, -1)).collect(),
        };
        let epoch = self.image.broker(leader).unwrap().epoch;
        if recovered {
            let out = self
                .ctl
                .alter_partition_recovered(&self.image, leader, epoch, &change)
                .map_err(|e| e.code)?;
            Ok(self.commit(out))
        } else {
            let out = self
                .ctl
                .alter_partition(&self.image, leader, epoch, &[change])
                .map_err(|e| e.code)?;
            self.commit(out).remove(0).result.map_err(|e| e.code)
        }
    }

    fn elect(
        &mut self,
        election: ElectionType,
        named: Option<&[(String, Vec<i32>)]>,
    ) -> Vec<(String, i32, ErrorCode)> {
        let out = self.ctl.elect_leaders(&self.image, election, named);
        self.commit(out)
            .into_iter()
            .map(|r| {
                let code = r.result.map_or_else(|e| e.code, |()| ErrorCode::NONE);
                (r.topic, r.partition, code)
            })
            .collect()
    }
}

fn named(topic: &str, parts: &[i32]) -> Vec<(String, Vec<i32>)> {
    vec![(topic.to_string(), parts.to_vec())]
}

#[test]
fn preferred_election_moves_leadership_back_to_the_first_replica() {
    let mut c = Cluster::new(ControllerConfig::default(), 3);
    let t = c.create("t", vec![vec![1, 2, 3]]);
    assert_eq!(c.part(t, 0).leader, 1);
    // Broker 1 goes away: 2 leads, ISR [2, 3].
    c.heartbeat(1, true);
    let p = c.part(t, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.leader_epoch),
        (2, vec![2, 3], 1)
    );
    let preferred = named("t", &[0]);
    assert_eq!(
        c.elect(ElectionType::Preferred, Some(&preferred)),
        vec![("t".into(), 0, ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE)]
    );
    // Back, but not in the ISR yet: still not available.
    c.heartbeat(1, false);
    assert_eq!(
        c.elect(ElectionType::Preferred, Some(&preferred))[0].2,
        ErrorCode::PREFERRED_LEADER_NOT_AVAILABLE
    );
    // Caught up (the leader adds it): elected, the leader epoch bumped.
    c.alter(t, 0, &[2, 3, 1], false).unwrap();
    assert_eq!(
        c.elect(ElectionType::Preferred, Some(&preferred)),
        vec![("t".into(), 0, ErrorCode::NONE)]
    );
    let p = c.part(t, 0);
    assert_eq!((p.leader, p.leader_epoch), (1, 2));
    assert_eq!(p.isr, vec![2, 3, 1]);
    // Again: not needed; unknown topic and partition.
    assert_eq!(
        c.elect(ElectionType::Preferred, Some(&preferred))[0].2,
        ErrorCode::ELECTION_NOT_NEEDED
    );
    let unknown = vec![("t".to_string(), vec![5]), ("nope".to_string(), vec![0])];
    assert_eq!(
        c.elect(ElectionType::Preferred, Some(&unknown)),
        vec![
            ("t".into(), 5, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
            ("nope".into(), 0, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    // All partitions (null list): the not-needed ones are left out.
    assert!(c.elect(ElectionType::Preferred, None).is_empty());
    // UNCLEAN where a leader exists: not needed.
    assert_eq!(
        c.elect(ElectionType::Unclean, Some(&preferred))[0].2,
        ErrorCode::ELECTION_NOT_NEEDED
    );
}

#[test]
fn a_partition_named_twice_is_elected_once() {
    let mut c = Cluster::new(ControllerConfig::default(), 2);
    let t = c.create("t", vec![vec![1, 2]]);
    c.heartbeat(1, true);
    c.heartbeat(1, false);
    c.alter(t, 0, &[2, 1], false).unwrap();
    let epoch = c.part(t, 0).leader_epoch;
    let twice = vec![("t".to_string(), vec![0, 0])];
    let results = c.elect(ElectionType::Preferred, Some(&twice));
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.2 == ErrorCode::NONE));
    assert_eq!(c.part(t, 0).leader_epoch, epoch + 1);
}

#[test]
fn balancing_follows_the_per_broker_imbalance_percentage() {
    let config = ControllerConfig {
        leader_imbalance_per_broker_percentage: 60,
        ..ControllerConfig::default()
    };
    let mut c = Cluster::new(config, 3);
    // Broker 1 is preferred for p0 and p1, broker 2 for p2.
    let t = c.create("b", vec![vec![1, 2, 3], vec![1, 3, 2], vec![2, 1, 3]]);
    c.heartbeat(1, true);
    c.heartbeat(1, false);
    for p in 0..3 {
        let isr = {
            let mut isr = c.part(t, p).isr;
            isr.push(1);
            isr
        };
        c.alter(t, p, &isr, false).unwrap();
    }
    let leaders: Vec<i32> = (0..3).map(|p| c.part(t, p).leader).collect();
    assert_eq!(leaders, vec![2, 3, 2]);
    // 2 of broker 1's 2 preferred partitions are led by others: 100% > 60%, both move back.
    let out = c.ctl.balance_leaders(&c.image);
    let moved = c.commit(out);
    assert_eq!(
        moved
            .iter()
            .map(|m| (m.partition, m.from, m.to))
            .collect::<Vec<_>>(),
        vec![(0, 2, 1), (1, 3, 1)]
    );
    assert_eq!(c.part(t, 0).leader, 1);
    assert_eq!(c.part(t, 1).leader, 1);
    assert!(c.ctl.balance_leaders(&c.image).records.is_empty());
    // One of two (50%) is not above 60%: left alone.
    c.heartbeat(1, true);
    c.heartbeat(1, false);
    c.alter(t, 0, &[2, 3, 1], false).unwrap();
    let p1 = c.part(t, 1);
    let isr: Vec<i32> = p1.isr.iter().copied().chain([1]).collect();
    c.alter(t, 1, &isr, false).unwrap();
    let out = c.elect(ElectionType::Preferred, Some(&named("b", &[1])));
    assert_eq!(out[0].2, ErrorCode::NONE);
    assert_eq!((c.part(t, 0).leader, c.part(t, 1).leader), (2, 1));
    assert!(c.ctl.balance_leaders(&c.image).records.is_empty());
}

#[test]
fn unclean_election_takes_a_live_out_of_sync_replica_which_recovers_before_the_isr_grows() {
    let mut c = Cluster::new(ControllerConfig::default(), 3);
    let t = c.create("u", vec![vec![1, 2, 3]]);
    // The followers fall behind: ISR [1]; then the leader dies.
    c.alter(t, 0, &[1], false).unwrap();
    c.heartbeat(1, true);
    let p = c.part(t, 0);
    assert_eq!((p.leader, p.isr.clone()), (NO_LEADER, vec![1]));
    // Not allowed by config: nothing happens on its own.
    assert!(c
        .ctl
        .elect_unclean_leaders(&c.image, None)
        .records
        .is_empty());
    assert!(!c.ctl.unclean_allowed(&c.image, "u"));
    // ElectLeaders UNCLEAN: the first live replica, alone in the ISR, RECOVERING.
    let before = p.leader_epoch;
    assert_eq!(
        c.elect(ElectionType::Unclean, Some(&named("u", &[0]))),
        vec![("u".into(), 0, ErrorCode::NONE)]
    );
    let p = c.part(t, 0);
    assert_eq!((p.leader, p.isr.clone()), (2, vec![2]));
    assert_eq!(p.leader_epoch, before + 1);
    assert!(p.leader_recovering);
    // While recovering the ISR may not grow.
    assert_eq!(
        c.alter(t, 0, &[2, 3], false),
        Err(ErrorCode::INVALID_REQUEST)
    );
    assert_eq!(c.alter(t, 0, &[2, 3], true).map(|_| ()), Ok(()));
    let p = c.part(t, 0);
    assert!(!p.leader_recovering);
    assert_eq!(p.isr, vec![2, 3]);
    // The recovered state survives a snapshot.
    let mut restored = MetadataImage::new();
    restored.restore(c.offset, &c.image.snapshot()).unwrap();
    assert_eq!(restored.partition(t, 0), c.image.partition(t, 0));
}

#[test]
fn turning_the_config_on_lets_the_controller_elect_and_recovered_survives_snapshots() {
    let mut c = Cluster::new(ControllerConfig::default(), 3);
    let t = c.create("u", vec![vec![1, 2, 3], vec![2, 3, 1]]);
    c.alter(t, 0, &[1], false).unwrap();
    c.heartbeat(1, true);
    assert_eq!(c.part(t, 0).leader, NO_LEADER);
    assert_eq!(c.part(t, 1).leader, 2, "partition 1 had a live ISR member");
    let out = c.ctl.incremental_alter_configs(
        &c.image,
        &[AlterConfigs {
            resource: ConfigResource::topic("u"),
            ops: vec![(
                "unclean.leader.election.enable".into(),
                ConfigOp::Set("true".into()),
            )],
        }],
        false,
    );
    c.commit(out);
    assert!(c.ctl.unclean_allowed(&c.image, "u"));
    let out = c.ctl.elect_unclean_leaders(&c.image, None);
    let moved = c.commit(out);
    assert_eq!(moved.len(), 1);
    assert_eq!(
        (moved[0].partition, moved[0].to, moved[0].unclean),
        (0, 2, true)
    );
    let p = c.part(t, 0);
    assert!(p.leader_recovering);
    // RECOVERING survives a snapshot too.
    let mut restored = MetadataImage::new();
    restored.restore(c.offset, &c.image.snapshot()).unwrap();
    assert!(restored.partition(t, 0).unwrap().leader_recovering);
    // With no replica live at all: ELIGIBLE_LEADERS_NOT_AVAILABLE.
    c.heartbeat(2, true);
    c.heartbeat(3, true);
    assert_eq!(c.part(t, 0).leader, NO_LEADER);
    assert_eq!(
        c.elect(ElectionType::Unclean, Some(&named("u", &[0])))[0].2,
        ErrorCode::ELIGIBLE_LEADERS_NOT_AVAILABLE
    );
}

#[test]
fn the_cluster_wide_default_and_the_static_default_apply_without_a_topic_override() {
    let config = ControllerConfig {
        unclean_leader_election: true,
        ..ControllerConfig::default()
    };
    let mut c = Cluster::new(config, 2);
    c.create("u", vec![vec![1, 2]]);
    assert!(c.ctl.unclean_allowed(&c.image, "u"));
    let out = c.ctl.incremental_alter_configs(
        &c.image,
        &[AlterConfigs {
            resource: ConfigResource::broker(""),
            ops: vec![(
                "unclean.leader.election.enable".into(),
                ConfigOp::Set("false".into()),
            )],
        }],
        false,
    );
    c.commit(out);
    assert!(!c.ctl.unclean_allowed(&c.image, "u"));
}
