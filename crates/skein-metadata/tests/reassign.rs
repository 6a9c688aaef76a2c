//! Partition reassignment (KIP-455) in the quorum controller: the start (replicas = target ∪
//! current, adding / removing), completion when the leader's ISR expansion brings every target
//! replica in sync (removed replicas leave, the leader moves if it was removed, the leader
//! epoch is bumped), cancellation, the errors, an immediate completion for a shrink, and a
//! reassignment surviving a controller failover (a fresh controller on a restored image).

use skein_metadata::controller::AlterPartition;
use skein_metadata::image::PartitionState;
use skein_metadata::reassign::{ongoing_reassignments, Reassignment};
use skein_metadata::{ControllerConfig, ErrorCode, MetadataImage, QuorumController};
use skein_protocol::Uuid;

mod common;
use common::Cluster;

/// Brokers `1..=n`, unfenced, and topic "t" with one partition on `replicas`.
fn cluster(n: i32, replicas: &[i32]) -> (Cluster, Uuid) {
    let mut c = Cluster::new(ControllerConfig::default(), n);
    let id = c.create("t", vec![replicas.to_vec()]);
    (c, id)
}

impl Cluster {
    fn reassign(&mut self, replicas: Option<Vec<i32>>) -> Result<(), ErrorCode> {
        let out = self.ctl.alter_partition_reassignments(
            &self.image,
            &[Reassignment {
                topic: "t".into(),
                partition: 0,
                replicas,
            }],
        );
        self.commit(out).remove(0).result.map_err(|e| e.code)
    }

    /// The leader asks for `isr` (as its ISR expansion or shrink would).
    fn alter_isr(&mut self, t: Uuid, isr: &[i32]) -> Result<PartitionState, ErrorCode> {
        let p = self.part(t, 0);
        let epoch_of = |id: i32| self.image.broker(id).unwrap().epoch;
        let change = AlterPartition {
            topic_id: t,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr.iter().map(|r| (*r, epoch_of(*r))).collect(),
        };
        let out = self
            .ctl
            .alter_partition(&self.image, p.leader, epoch_of(p.leader), &[change])
            .unwrap();
        self.commit(out).remove(0).result.map_err(|e| e.code)
    }
}

#[test]
fn a_move_adds_then_completes_once_the_target_is_in_sync() {
    let (mut c, t) = cluster(4, &[1, 2, 3]);
    let before = c.part(t, 0);
    assert_eq!((before.leader, before.leader_epoch), (1, 0));
    c.reassign(Some(vec![2, 3, 4])).unwrap();
    let moving = c.part(t, 0);
    assert_eq!(moving.replicas, vec![2, 3, 4, 1]);
    assert_eq!(moving.adding_replicas, vec![4]);
    assert_eq!(moving.removing_replicas, vec![1]);
    assert_eq!(moving.isr, vec![1, 2, 3]);
    // The new replica starts as a follower: no leader change, no leader epoch bump.
    assert_eq!((moving.leader, moving.leader_epoch), (1, 0));
    assert_eq!(moving.partition_epoch, before.partition_epoch + 1);
    let listed = ongoing_reassignments(&c.image, None);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (&listed[0].replicas, &listed[0].adding, &listed[0].removing),
        (&vec![2, 3, 4, 1], &vec![4], &vec![1])
    );
    // Filtered listing: the partition, and nothing for unknown ones.
    assert_eq!(
        ongoing_reassignments(&c.image, Some(&[("t".into(), vec![0, 5])])).len(),
        1
    );
    assert!(ongoing_reassignments(&c.image, Some(&[("nope".into(), vec![0])])).is_empty());
    // A shrink of the ISR in the meantime does not complete it.
    let shrunk = c.alter_isr(t, &[1, 2]).unwrap();
    assert!(shrunk.is_reassigning());
    assert_eq!(shrunk.isr, vec![1, 2]);
    c.alter_isr(t, &[1, 2, 3]).unwrap();
    // The leader's expansion with the new replica completes it: 1 leaves, 2 leads.
    let done = c.alter_isr(t, &[1, 2, 3, 4]).unwrap();
    assert_eq!(done, c.part(t, 0));
    assert_eq!(done.replicas, vec![2, 3, 4]);
    assert_eq!(done.isr, vec![2, 3, 4]);
    assert!(!done.is_reassigning());
    assert_eq!(done.leader, 2);
    assert_eq!(done.leader_epoch, moving.leader_epoch + 1);
    assert!(ongoing_reassignments(&c.image, None).is_empty());
}

#[test]
fn a_leader_that_stays_keeps_leading_in_a_new_epoch() {
    let (mut c, t) = cluster(4, &[1, 2, 3]);
    c.reassign(Some(vec![1, 2, 4])).unwrap();
    assert_eq!(c.part(t, 0).removing_replicas, vec![3]);
    let done = c.alter_isr(t, &[1, 2, 3, 4]).unwrap();
    assert_eq!(
        (done.replicas.clone(), done.isr.clone(), done.leader),
        (vec![1, 2, 4], vec![1, 2, 4], 1)
    );
    // A replica was removed: the epoch is bumped so that it is fenced.
    assert_eq!(done.leader_epoch, 1);
}

#[test]
fn a_shrink_or_reorder_within_the_isr_completes_at_once() {
    let (mut c, t) = cluster(3, &[1, 2, 3]);
    c.reassign(Some(vec![2, 1])).unwrap();
    let p = c.part(t, 0);
    assert_eq!(
        (p.replicas.clone(), p.isr.clone()),
        (vec![2, 1], vec![1, 2])
    );
    assert!(!p.is_reassigning());
    assert_eq!((p.leader, p.leader_epoch), (1, 1));
    // The same replicas again: nothing to do, nothing written.
    let offset = c.offset;
    c.reassign(Some(vec![2, 1])).unwrap();
    assert_eq!(c.offset, offset);
}

#[test]
fn cancelling_reverts_to_the_original_replicas() {
    let (mut c, t) = cluster(5, &[1, 2, 3]);
    assert_eq!(
        c.reassign(None),
        Err(ErrorCode::NO_REASSIGNMENT_IN_PROGRESS)
    );
    c.reassign(Some(vec![3, 4, 5])).unwrap();
    // 4 catches up (not yet 5): still in progress, 4 in the ISR.
    let p = c.alter_isr(t, &[1, 2, 3, 4]).unwrap();
    assert!(p.is_reassigning());
    c.reassign(None).unwrap();
    let p = c.part(t, 0);
    // The original replicas in the merged order (target first), as Kafka's KRaft controller
    // reverts them: the log keeps no other order.
    assert_eq!(p.replicas, vec![3, 1, 2]);
    assert_eq!(p.isr, vec![1, 2, 3]);
    assert!(!p.is_reassigning());
    assert_eq!(p.leader, 1);
    // Replicas 4 and 5 were removed: the epoch moves.
    assert_eq!(p.leader_epoch, 1);
    assert_eq!(
        c.reassign(None),
        Err(ErrorCode::NO_REASSIGNMENT_IN_PROGRESS)
    );
}

#[test]
fn bad_targets_are_refused_with_kafkas_errors() {
    let (mut c, _t) = cluster(3, &[1, 2, 3]);
    let bad = ErrorCode::INVALID_REPLICA_ASSIGNMENT;
    assert_eq!(c.reassign(Some(vec![])), Err(bad));
    assert_eq!(c.reassign(Some(vec![1, 1, 2])), Err(bad));
    assert_eq!(c.reassign(Some(vec![1, 2, 9])), Err(bad));
    assert_eq!(c.reassign(Some(vec![-1, 2])), Err(bad));
    let ask = |c: &mut Cluster, topic: &str, partition: i32| {
        let out = c.ctl.alter_partition_reassignments(
            &c.image,
            &[Reassignment {
                topic: topic.into(),
                partition,
                replicas: Some(vec![1, 2]),
            }],
        );
        c.commit(out).remove(0).result.map_err(|e| e.code)
    };
    assert_eq!(
        ask(&mut c, "nope", 0),
        Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
    assert_eq!(
        ask(&mut c, "t", 1),
        Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
    assert_eq!(
        ask(&mut c, "t", -1),
        Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
    );
    // The same partition twice in one request: the second is refused, the first applies.
    let twice = Reassignment {
        topic: "t".into(),
        partition: 0,
        replicas: Some(vec![3, 2, 1]),
    };
    let out = c
        .ctl
        .alter_partition_reassignments(&c.image, &[twice.clone(), twice]);
    let results = c.commit(out);
    assert!(results[0].result.is_ok());
    assert_eq!(
        results[1].result.as_ref().unwrap_err().code,
        ErrorCode::INVALID_REQUEST
    );
    assert_eq!(
        c.image
            .partition(c.image.topic_by_name("t").unwrap().id, 0)
            .unwrap()
            .replicas,
        vec![3, 2, 1]
    );
}

#[test]
fn a_reassignment_survives_failover_and_fencing() {
    let (mut c, t) = cluster(4, &[1, 2, 3]);
    c.reassign(Some(vec![2, 3, 4])).unwrap();
    // The leader (being removed) is fenced: leadership moves to a target replica, the
    // reassignment stays.
    c.heartbeat(1, true);
    let p = c.part(t, 0);
    assert!(p.is_reassigning());
    assert_eq!(p.leader, 2);
    assert_eq!(p.isr, vec![2, 3]);
    // A new controller from a snapshot of the log.
    let mut restored = MetadataImage::new();
    restored
        .restore(c.image.last_offset().unwrap(), &c.image.snapshot())
        .unwrap();
    assert_eq!(restored, c.image);
    c.image = restored;
    let mut fresh = QuorumController::new(ControllerConfig::default());
    fresh.activate(&c.image, c.now);
    c.ctl = fresh;
    let done = c.alter_isr(t, &[2, 3, 4]).unwrap();
    assert_eq!(
        (done.replicas.clone(), done.isr.clone(), done.leader),
        (vec![2, 3, 4], vec![2, 3, 4], 2)
    );
    assert!(!done.is_reassigning());
}
