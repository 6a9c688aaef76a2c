//! KIP-966 eligible leader replicas, one test per rule: members leaving an ISR that is below
//! `min.insync.replicas` go to the ELR (ISR + ELR never above the minimum), the ELR clears
//! once the ISR is back at the minimum, fenced members stay in it but are not elected, an
//! unclean shutdown moves a member to the last known ELR, elections go ISR → ELR → unclean
//! (which clears both), the setting turns it all off, and snapshots keep it.

use skein_metadata::controller::{
    AlterConfigs, AlterPartition, ConfigOp, ElectionType, Heartbeat, RegisterBroker,
};
use skein_metadata::image::{ConfigResource, Endpoint, PartitionState, NO_LEADER};
use skein_metadata::{ControllerConfig, ErrorCode, MetadataImage};
use skein_protocol::Uuid;

mod common;
use common::Cluster;

fn config(min_isr: i32) -> ControllerConfig {
    ControllerConfig {
        min_insync_replicas: min_isr,
        eligible_leader_replicas: true,
        ..ControllerConfig::default()
    }
}

impl Cluster {
    /// Broker `id` is fenced (its heartbeat asks for it, as a lost session would).
    fn fence(&mut self, id: i32) {
        self.heartbeat(id, true);
        assert!(self.image.broker(id).unwrap().fenced);
    }

    /// Broker `id` starts again (a new incarnation): `clean` presents its current epoch as
    /// the one its log is intact under, else -1 (an unclean shutdown, KIP-966). Registered
    /// and, when `unfence`, unfenced.
    fn restart(&mut self, id: i32, clean: bool, unfence: bool) {
        let existing = self.image.broker(id).unwrap().clone();
        let req = RegisterBroker {
            broker_id: id,
            incarnation_id: Uuid([
                id as u8,
                existing.incarnation_id.0[1].wrapping_add(1),
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ]),
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "localhost".into(),
                port: 9092,
                security_protocol: 0,
            }],
            rack: None,
            previous_broker_epoch: if clean { existing.epoch } else { -1 },
        };
        let out = self
            .ctl
            .register_broker(&self.image, &req, self.now)
            .unwrap();
        self.commit(out);
        if unfence {
            let hb = Heartbeat {
                broker_id: id,
                broker_epoch: self.image.broker(id).unwrap().epoch,
                metadata_offset: self.offset,
                want_fence: false,
                want_shutdown: false,
            };
            let out = self.ctl.heartbeat(&self.image, &hb, self.now).unwrap();
            self.commit(out);
            assert!(!self.image.broker(id).unwrap().fenced);
        }
    }

    /// The leader of `topic`-0 asks for `isr`.
    fn alter(&mut self, topic: Uuid, isr: &[i32]) -> Result<PartitionState, ErrorCode> {
        let part = self.part(topic, 0);
        let change = AlterPartition {
            topic_id: topic,
            partition: 0,
            leader_epoch: part.leader_epoch,
            partition_epoch: part.partition_epoch,
            new_isr: isr.iter().map(|r| (*r, -1)).collect(),
        };
        let epoch = self.image.broker(part.leader).unwrap().epoch;
        let out = self
            .ctl
            .alter_partition(&self.image, part.leader, epoch, &[change])
            .map_err(|e| e.code)?;
        self.commit(out).remove(0).result.map_err(|e| e.code)
    }

    fn set_topic_config(&mut self, topic: &str, key: &str, value: &str) {
        let out = self.ctl.incremental_alter_configs(
            &self.image,
            &[AlterConfigs {
                resource: ConfigResource::topic(topic),
                ops: vec![(key.into(), ConfigOp::Set(value.into()))],
            }],
            false,
        );
        self.commit(out);
    }
}

/// (leader, ISR, ELR, last known ELR) of `topic`-0.
fn shape(c: &Cluster, topic: Uuid) -> (i32, Vec<i32>, Vec<i32>, Vec<i32>) {
    let p = c.part(topic, 0);
    (p.leader, p.isr, p.elr, p.last_known_elr)
}

fn three(min_isr: i32) -> (Cluster, Uuid) {
    let mut c = Cluster::new(config(min_isr), 3);
    let t = c.create("t", vec![vec![1, 2, 3]]);
    assert_eq!(shape(&c, t), (1, vec![1, 2, 3], vec![], vec![]));
    (c, t)
}

#[test]
fn members_leaving_an_isr_below_the_minimum_become_eligible() {
    let (mut c, t) = three(2);
    c.fence(3);
    // The ISR is still at the minimum: no ELR.
    assert_eq!(shape(&c, t), (1, vec![1, 2], vec![], vec![]));
    c.fence(2);
    assert_eq!(shape(&c, t), (1, vec![1], vec![2], vec![]));
    // The last member leaves too (it is fenced): the ISR empties, the partition waits.
    let epoch = c.part(t, 0).leader_epoch;
    c.fence(1);
    let (leader, isr, mut elr, last) = shape(&c, t);
    assert_eq!((leader, isr.clone(), last), (NO_LEADER, vec![], vec![]));
    assert!(isr.len() + elr.len() <= 2, "ISR + ELR within min ISR");
    elr.sort();
    assert_eq!(elr, vec![1, 2]);
    assert_eq!(c.part(t, 0).leader_epoch, epoch + 1);
}

#[test]
fn isr_plus_elr_never_exceeds_the_minimum() {
    let (mut c, t) = three(2);
    // The leader drops both followers at once: only one of them fits in the ELR.
    let after = c.alter(t, &[1]).unwrap();
    assert_eq!(after.isr, vec![1]);
    assert_eq!(after.elr, vec![2]);
    assert_eq!(shape(&c, t), (1, vec![1], vec![2], vec![]));
    // Every broker fenced at once (a tick): ISR empty, ELR within the minimum.
    let (mut c, t) = three(2);
    for id in [1, 2, 3] {
        c.fence(id);
    }
    let p = c.part(t, 0);
    assert!(p.isr.is_empty());
    assert_eq!(p.elr.len(), 2, "{p:?}");
}

#[test]
fn the_elr_clears_when_the_isr_reaches_the_minimum() {
    let (mut c, t) = three(2);
    c.alter(t, &[1, 2]).unwrap();
    assert_eq!(shape(&c, t), (1, vec![1, 2], vec![], vec![]));
    c.alter(t, &[1]).unwrap();
    assert_eq!(shape(&c, t), (1, vec![1], vec![2], vec![]));
    // 3 (never eligible) joins: the ISR is at the minimum again, the ELR goes.
    c.alter(t, &[1, 3]).unwrap();
    assert_eq!(shape(&c, t), (1, vec![1, 3], vec![], vec![]));
    c.alter(t, &[1]).unwrap();
    assert_eq!(shape(&c, t), (1, vec![1], vec![3], vec![]));
    // An ELR member joining the ISR leaves the ELR.
    c.alter(t, &[1, 3]).unwrap();
    assert_eq!(shape(&c, t), (1, vec![1, 3], vec![], vec![]));
}

#[test]
fn an_elr_member_leads_when_the_isr_is_empty_and_it_is_back() {
    let (mut c, t) = three(2);
    c.fence(3);
    c.fence(2);
    c.fence(1);
    // 3 was never eligible: it comes back and may not lead.
    c.restart(3, true, true);
    assert_eq!(c.part(t, 0).leader, NO_LEADER);
    assert!(c.part(t, 0).isr.is_empty());
    // 2 returns after a clean shutdown: it leads alone, 1 stays eligible.
    let epoch = c.part(t, 0).leader_epoch;
    c.restart(2, true, true);
    assert_eq!(shape(&c, t), (2, vec![2], vec![1], vec![]));
    assert_eq!(c.part(t, 0).leader_epoch, epoch + 1);
    // 3 catches up and joins: ISR at the minimum, ELR cleared.
    c.alter(t, &[2, 3]).unwrap();
    assert_eq!(shape(&c, t), (2, vec![2, 3], vec![], vec![]));
}

#[test]
fn a_fenced_member_stays_eligible_but_is_not_elected() {
    let (mut c, t) = three(2);
    c.fence(3);
    c.fence(2);
    // 2 is in the ELR, fenced. The leader 1 goes: 2 cannot lead while fenced.
    c.fence(1);
    let p = c.part(t, 0);
    assert_eq!(p.leader, NO_LEADER);
    assert!(p.elr.contains(&2) && p.elr.contains(&1));
    // Registered again (clean) but still fenced: not elected.
    c.restart(1, true, false);
    assert_eq!(c.part(t, 0).leader, NO_LEADER);
    assert!(c.part(t, 0).elr.contains(&1));
}

#[test]
fn an_unclean_shutdown_leaves_the_elr_for_the_last_known_elr() {
    let (mut c, t) = three(2);
    c.fence(3);
    c.fence(2);
    c.fence(1);
    // 2 lost its log: out of the ELR, into the last known ELR; unfenced, it may not lead.
    c.restart(2, false, true);
    assert_eq!(shape(&c, t), (NO_LEADER, vec![], vec![1], vec![2]));
    // 1 lost its log too: no eligible replica is left.
    c.restart(1, false, true);
    let (leader, isr, elr, mut last) = shape(&c, t);
    last.sort();
    assert_eq!(
        (leader, isr, elr, last),
        (NO_LEADER, vec![], vec![], vec![1, 2])
    );
    // Only an unclean election brings it back; it clears the ELR and last known ELR.
    let out = c.ctl.elect_leaders(
        &c.image,
        ElectionType::Unclean,
        Some(&[("t".to_string(), vec![0])]),
    );
    let r = c.commit(out);
    assert_eq!(r[0].result, Ok(()));
    let p = c.part(t, 0);
    assert_eq!(p.leader, 1);
    assert_eq!(p.isr, vec![1]);
    assert!(p.elr.is_empty() && p.last_known_elr.is_empty(), "{p:?}");
    assert!(p.leader_recovering);
}

#[test]
fn a_clean_restart_keeps_the_member_eligible() {
    let (mut c, t) = three(2);
    c.fence(3);
    c.fence(2);
    c.fence(1);
    // 1 restarts cleanly (registered, not yet unfenced): still eligible.
    c.restart(1, true, false);
    assert!(c.part(t, 0).elr.contains(&1));
    // Once unfenced it leads from the ELR, a clean election.
    c.restart(1, true, true);
    assert_eq!(c.part(t, 0).leader, 1);
    assert_eq!(c.part(t, 0).isr, vec![1]);
    assert_eq!(c.part(t, 0).elr, vec![2]);
    assert!(!c.part(t, 0).leader_recovering);
}

#[test]
fn an_unclean_election_prefers_the_elr() {
    let (mut c, t) = three(2);
    c.fence(3);
    c.fence(2);
    c.fence(1);
    c.restart(3, true, true);
    // 3 is live but not eligible; unclean elections are allowed for the topic now.
    c.set_topic_config("t", "unclean.leader.election.enable", "true");
    let out = c.ctl.elect_unclean_leaders(&c.image, None);
    let moved = c.commit(out);
    assert_eq!(moved.len(), 1);
    assert!(moved[0].unclean);
    assert_eq!(shape(&c, t), (3, vec![3], vec![], vec![]));

    // With an eligible member live, the election is clean and keeps the ELR rules.
    let (mut c, t) = three(2);
    c.fence(3);
    c.fence(2);
    c.fence(1);
    c.restart(2, true, false);
    c.restart(3, true, true);
    let p = c.part(t, 0);
    assert_eq!(p.leader, NO_LEADER, "2 is fenced: {p:?}");
    c.restart(2, true, true);
    assert_eq!(c.part(t, 0).leader, 2);
    assert!(!c.part(t, 0).leader_recovering);
}

#[test]
fn a_controlled_shutdown_of_the_last_member_hands_over_to_the_elr() {
    let (mut c, t) = three(2);
    c.fence(3);
    c.alter(t, &[1]).unwrap();
    assert_eq!(shape(&c, t), (1, vec![1], vec![2], vec![]));
    // 1 shuts down: it keeps leading while unfenced (the last ISR member), then is fenced
    // and the active ELR member 2 takes over.
    let mut done = false;
    for _ in 0..10 {
        let hb = Heartbeat {
            broker_id: 1,
            broker_epoch: c.image.broker(1).unwrap().epoch,
            metadata_offset: c.offset,
            want_fence: false,
            want_shutdown: true,
        };
        let out = c.ctl.heartbeat(&c.image, &hb, c.now).unwrap();
        let reply = c.commit(out);
        c.heartbeat(2, false);
        if reply.should_shut_down {
            done = true;
            break;
        }
    }
    assert!(done, "controlled shutdown completes");
    assert_eq!(shape(&c, t), (2, vec![2], vec![1], vec![]));
}

#[test]
fn the_topic_minimum_counts() {
    let mut c = Cluster::new(config(1), 3);
    let t = c.create("t", vec![vec![1, 2, 3]]);
    c.set_topic_config("t", "min.insync.replicas", "3");
    c.fence(3);
    assert_eq!(shape(&c, t), (1, vec![1, 2], vec![3], vec![]));
    // With min ISR 1 the last member still moves to the ELR when fenced.
    let u = c.create("u", vec![vec![1, 2, 3]]);
    c.fence(2);
    c.fence(1);
    let p = c.part(u, 0);
    assert_eq!(
        (p.leader, p.isr.clone(), p.elr.clone()),
        (NO_LEADER, vec![], vec![1])
    );
}

#[test]
fn turned_off_the_last_member_stays_and_old_elrs_clear() {
    let mut c = Cluster::new(
        ControllerConfig {
            min_insync_replicas: 2,
            ..ControllerConfig::default()
        },
        3,
    );
    let t = c.create("t", vec![vec![1, 2, 3]]);
    c.fence(3);
    c.fence(2);
    c.fence(1);
    assert_eq!(shape(&c, t), (NO_LEADER, vec![1], vec![], vec![]));

    // An ELR written while it was on is cleared by the next change once it is off.
    let (mut on, t) = three(2);
    on.fence(3);
    on.fence(2);
    assert_eq!(on.part(t, 0).elr, vec![2]);
    let image = on.image.clone();
    let mut off = Cluster {
        ctl: skein_metadata::QuorumController::new(ControllerConfig {
            min_insync_replicas: 2,
            ..ControllerConfig::default()
        }),
        image,
        offset: on.offset,
        now: on.now,
    };
    off.ctl.activate(&off.image, off.now);
    off.restart(3, true, true);
    assert_eq!(off.part(t, 0).elr, Vec::<i32>::new());
}

#[test]
fn snapshots_keep_the_elr() {
    let (mut c, t) = three(2);
    c.fence(3);
    c.fence(2);
    c.fence(1);
    c.restart(2, false, true);
    let p = c.part(t, 0);
    assert!(!p.elr.is_empty() && !p.last_known_elr.is_empty());
    let mut restored = MetadataImage::new();
    restored
        .restore(c.offset, &c.image.snapshot())
        .expect("restores");
    assert_eq!(restored, c.image);
    assert_eq!(restored.partition(t, 0), Some(&p));
}
