//! Partition reassignment, Kafka's KIP-455 model, as controller decisions.
//!
//! A reassignment of a partition to `target` writes, in one `PartitionChangeRecord`:
//! `replicas = target ++ (current − target)` (the target first, in its order, then the
//! replicas being removed), `adding_replicas = target − current`, `removing_replicas =
//! current − target`. The ISR and the leader do not change: the new replicas start as
//! followers, fetch from the leader, and join the ISR through the leader's ordinary ISR
//! expansion (AlterPartition). The reassignment completes in the same decision that makes
//! every target replica an ISR member ([`complete_after_isr_change`]): `replicas = target`,
//! the removed replicas leave the ISR, the leader is re-elected from the target (preferred
//! order, active first) if it was removed, and the leader epoch is bumped because replicas
//! were removed (as Kafka's `PartitionChangeBuilder` does, so that removed replicas are
//! fenced). A reassignment whose target is already in the ISR (a shrink, a reorder)
//! completes at once.
//!
//! Cancelling (null replicas) reverts to the original replicas (`replicas − adding`), drops
//! the adding replicas from the ISR and re-elects the leader among the originals if it was an
//! adding one; it is refused when only adding replicas are in sync, since the ISR is never
//! emptied. Cancelling where nothing is in progress is NO_REASSIGNMENT_IN_PROGRESS. A new
//! reassignment over one in progress is computed against the current (merged) replicas, as
//! Kafka's KRaft controller does.
//!
//! Everything lives in the partition's state in the log, so a reassignment survives a
//! controller failover: the next ISR change of the leader completes it.

use std::collections::BTreeSet;

use skein_protocol::{MetadataRecord, Uuid};

use crate::controller::{choose_leader, QuorumController};
use crate::image::{partition_change_record, MetadataImage, PartitionState, NO_LEADER_CHANGE};
use crate::{ApiError, ErrorCode, Outcome};

/// One partition to move (`replicas: Some`) or whose move to cancel (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Option<Vec<i32>>,
}

/// The per-partition result of [`QuorumController::alter_partition_reassignments`], in
/// request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassignmentResult {
    pub topic: String,
    pub partition: i32,
    pub result: Result<(), ApiError>,
}

/// A reassignment in progress, as ListPartitionReassignments shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl QuorumController {
    /// Starts, replaces or cancels reassignments (AlterPartitionReassignments). Each
    /// partition succeeds or fails on its own; the records of those that succeed are proposed
    /// together.
    pub fn alter_partition_reassignments(
        &mut self,
        image: &MetadataImage,
        requests: &[Reassignment],
    ) -> Outcome<Vec<ReassignmentResult>> {
        let mut seen = BTreeSet::new();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(requests.len());
        for r in requests {
            let result = if !seen.insert((r.topic.clone(), r.partition)) {
                Err(err(
                    ErrorCode::INVALID_REQUEST,
                    "the same partition is reassigned twice in the request",
                ))
            } else if records.len() >= crate::controller::MAX_RECORDS_PER_OP {
                Err(err(
                    ErrorCode::POLICY_VIOLATION,
                    format!(
                        "more than {} partitions in one request",
                        crate::controller::MAX_RECORDS_PER_OP
                    ),
                ))
            } else {
                plan_reassignment(image, r).map(|record| {
                    if let Some(record) = record {
                        records.push(record);
                    }
                })
            };
            results.push(ReassignmentResult {
                topic: r.topic.clone(),
                partition: r.partition,
                result,
            });
        }
        Outcome {
            records,
            reply: results,
        }
    }
}

/// Reassignments in progress (ListPartitionReassignments): of the listed partitions, or of
/// every partition when `filter` is `None`. Unknown topics and partitions are skipped, as in
/// Kafka.
pub fn ongoing_reassignments(
    image: &MetadataImage,
    filter: Option<&[(String, Vec<i32>)]>,
) -> Vec<OngoingReassignment> {
    let mut out = Vec::new();
    let mut push = |name: &str, p: i32, s: &PartitionState| {
        if s.is_reassigning() {
            out.push(OngoingReassignment {
                topic: name.to_string(),
                partition: p,
                replicas: s.replicas.clone(),
                adding: s.adding_replicas.clone(),
                removing: s.removing_replicas.clone(),
            });
        }
    };
    match filter {
        None => {
            for (name, id) in image.topic_ids() {
                if let Some(t) = image.topic(*id) {
                    for (p, s) in t.partitions.iter().enumerate() {
                        push(name, p as i32, s);
                    }
                }
            }
        }
        Some(list) => {
            for (name, parts) in list {
                let Some(t) = image.topic_by_name(name) else {
                    continue;
                };
                for p in parts {
                    if let Some(s) = usize::try_from(*p).ok().and_then(|i| t.partitions.get(i)) {
                        push(name, *p, s);
                    }
                }
            }
        }
    }
    out
}

/// Checks a target replica list as Kafka checks a manual assignment.
fn check_target(image: &MetadataImage, target: &[i32]) -> Result<(), ApiError> {
    let bad = |m: String| Err(err(ErrorCode::INVALID_REPLICA_ASSIGNMENT, m));
    if target.is_empty() {
        return bad("The manual partition assignment includes an empty replica list.".into());
    }
    let mut seen = BTreeSet::new();
    for r in target {
        if !seen.insert(*r) {
            return bad(format!(
                "The manual partition assignment includes the broker {r} more than once."
            ));
        }
        if *r < 0 || image.broker(*r).is_none() {
            return bad(format!(
                "The manual partition assignment includes broker {r}, but no such broker is registered."
            ));
        }
    }
    Ok(())
}

fn plan_reassignment(
    image: &MetadataImage,
    r: &Reassignment,
) -> Result<Option<MetadataRecord>, ApiError> {
    let unknown = || {
        err(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!(
                "Unable to find partition {}-{}: the topic or partition does not exist.",
                r.topic, r.partition
            ),
        )
    };
    let topic = image.topic_by_name(&r.topic).ok_or_else(unknown)?;
    let part = usize::try_from(r.partition)
        .ok()
        .and_then(|p| topic.partitions.get(p))
        .ok_or_else(unknown)?;
    let active = |id: i32| image.broker(id).is_some_and(|b| b.is_active());
    let unfenced = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
    let shape = match &r.replicas {
        None => {
            if !part.is_reassigning() {
                return Err(err(
                    ErrorCode::NO_REASSIGNMENT_IN_PROGRESS,
                    format!(
                        "No ongoing reassignment for partition {}-{}.",
                        r.topic, r.partition
                    ),
                ));
            }
            revert(part, &active, &unfenced).ok_or_else(|| {
                err(
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "Cannot cancel the reassignment of {}-{}: only replicas being added are in sync.",
                        r.topic, r.partition
                    ),
                )
            })?
        }
        Some(target) => {
            check_target(image, target)?;
            let mut shape = part.clone();
            let removing: Vec<i32> = part
                .replicas
                .iter()
                .copied()
                .filter(|x| !target.contains(x))
                .collect();
            shape.adding_replicas = target
                .iter()
                .copied()
                .filter(|x| !part.replicas.contains(x))
                .collect();
            shape.replicas = target.iter().chain(&removing).copied().collect();
            shape.removing_replicas = removing;
            finish(&shape, &active, &unfenced).unwrap_or(shape)
        }
    };
    Ok(to_change(topic.id, r.partition, part, &shape).map(|(_, record)| record))
}

/// The partition with its reassignment cancelled, or `None` if that would empty the ISR.
fn revert(
    part: &PartitionState,
    active: &dyn Fn(i32) -> bool,
    unfenced: &dyn Fn(i32) -> bool,
) -> Option<PartitionState> {
    let mut shape = part.clone();
    shape.replicas = part.original_replicas();
    shape.isr = part
        .isr
        .iter()
        .copied()
        .filter(|r| !part.adding_replicas.contains(r))
        .collect();
    if shape.isr.is_empty() {
        return None;
    }
    shape.adding_replicas.clear();
    shape.removing_replicas.clear();
    shape.leader = choose_leader(&shape, &shape.isr, active, unfenced);
    Some(shape)
}

/// `shape` with its reassignment completed, when every target replica is in its ISR.
fn finish(
    shape: &PartitionState,
    active: &dyn Fn(i32) -> bool,
    unfenced: &dyn Fn(i32) -> bool,
) -> Option<PartitionState> {
    if !shape.is_reassigning() {
        return None;
    }
    let target = shape.target_replicas();
    if !target.iter().all(|r| shape.isr.contains(r)) {
        return None;
    }
    let mut done = shape.clone();
    done.isr = shape
        .isr
        .iter()
        .copied()
        .filter(|r| !shape.removing_replicas.contains(r))
        .collect();
    if done.isr.is_empty() {
        return None;
    }
    done.replicas = target;
    done.adding_replicas.clear();
    done.removing_replicas.clear();
    done.leader = choose_leader(&done, &done.isr, active, unfenced);
    Some(done)
}

/// The record taking `before` to `shape` (leader, ISR, replicas, adding and removing as in
/// `shape`; epochs computed), and the partition after it; `None` when nothing changes. The
/// leader epoch is bumped when the leader changes or a replica is removed.
fn to_change(
    topic: Uuid,
    p: i32,
    before: &PartitionState,
    shape: &PartitionState,
) -> Option<(PartitionState, MetadataRecord)> {
    // KIP-966: the eligible leader replicas stay replicas and outside the ISR.
    let kept = |list: &[i32]| -> Vec<i32> {
        list.iter()
            .copied()
            .filter(|r| shape.replicas.contains(r) && !shape.isr.contains(r))
            .collect()
    };
    let elr = kept(&shape.elr);
    let last_known_elr = kept(&shape.last_known_elr);
    let same = shape.replicas == before.replicas
        && shape.isr == before.isr
        && elr == before.elr
        && last_known_elr == before.last_known_elr
        && shape.leader == before.leader
        && shape.adding_replicas == before.adding_replicas
        && shape.removing_replicas == before.removing_replicas;
    if same {
        return None;
    }
    let mut change = partition_change_record(topic, p);
    let mut after = before.clone();
    if shape.replicas != before.replicas {
        change.replicas = Some(shape.replicas.clone());
    }
    if shape.isr != before.isr {
        change.isr = Some(shape.isr.clone());
    }
    if shape.adding_replicas != before.adding_replicas {
        change.adding_replicas = Some(shape.adding_replicas.clone());
    }
    if shape.removing_replicas != before.removing_replicas {
        change.removing_replicas = Some(shape.removing_replicas.clone());
    }
    if elr != before.elr {
        change.eligible_leader_replicas = Some(elr.clone());
    }
    if last_known_elr != before.last_known_elr {
        change.last_known_elr = Some(last_known_elr.clone());
    }
    let removed_replica = before.replicas.iter().any(|r| !shape.replicas.contains(r));
    change.leader = if shape.leader != before.leader || removed_replica {
        shape.leader
    } else {
        NO_LEADER_CHANGE
    };
    if change.leader != NO_LEADER_CHANGE {
        after.leader_epoch = before.leader_epoch.saturating_add(1);
    }
    after.replicas = shape.replicas.clone();
    after.isr = shape.isr.clone();
    after.leader = shape.leader;
    after.adding_replicas = shape.adding_replicas.clone();
    after.removing_replicas = shape.removing_replicas.clone();
    after.elr = elr;
    after.last_known_elr = last_known_elr;
    after.partition_epoch = before.partition_epoch.saturating_add(1);
    Some((after, change.into()))
}

/// For an ISR change of a partition being reassigned (`isr` and `leader` as the controller
/// decided them): the partition after the change and its record, with the reassignment
/// completed if every target replica is now in sync; `None` when it does not complete (the
/// ordinary ISR change applies).
pub(crate) fn complete_after_isr_change(
    topic: Uuid,
    p: i32,
    part: &PartitionState,
    isr: &[i32],
    leader: i32,
    active: &dyn Fn(i32) -> bool,
    unfenced: &dyn Fn(i32) -> bool,
) -> Option<(PartitionState, Option<MetadataRecord>)> {
    let mut shape = part.clone();
    shape.isr = isr.to_vec();
    shape.leader = leader;
    let done = finish(&shape, active, unfenced)?;
    Some(match to_change(topic, p, part, &done) {
        Some((after, record)) => (after, Some(record)),
        None => (part.clone(), None),
    })
}
