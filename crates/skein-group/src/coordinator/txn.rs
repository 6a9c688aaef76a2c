//! Transactional offset commits (TxnOffsetCommit, KIP-98 / KIP-447).
//!
//! A TxnOffsetCommit stores its offsets *pending* under the group and the producer id; they
//! are invisible to OffsetFetch (which answers UNSTABLE_OFFSET_COMMIT for such partitions
//! when asked for stable offsets) until the transaction's marker reaches the group's
//! `__consumer_offsets` partition: [`Coordinator::complete_txn`] then makes them the
//! committed offsets (COMMIT) or drops them (ABORT).
//!
//! The records are the ordinary offset commit records, but the caller appends them as one
//! transactional batch of the producer id and epoch ([`TxnOffsetRecords`]). When replaying
//! `__consumer_offsets`, records of a transactional batch go through
//! [`Coordinator::replay_txn`] with the batch's producer id, and each control batch through
//! [`Coordinator::complete_txn`].

use super::{Coordinator, Group, GroupKind, OffsetEntry};
use crate::error::ErrorCode;
use crate::record::GroupRecord;
use crate::types::{CommitOffset, CommittedOffset, PartitionResult};

/// A TxnOffsetCommit request (all versions; versions 0-2 carry no member fields: pass
/// generation -1, member "" and no instance id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnCommitRequest {
    pub transactional_id: String,
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Version 3+: the generation (classic) or member epoch (consumer group); -1 if unknown.
    pub generation_id: i32,
    /// Version 3+; "" if unknown.
    pub member_id: String,
    /// Version 3+.
    pub group_instance_id: Option<String>,
    pub offsets: Vec<CommitOffset>,
}

/// The records of a TxnOffsetCommit: append them to the group's `__consumer_offsets`
/// partition as one transactional batch of `producer_id` / `producer_epoch` (the partition's
/// producer state checks the epoch, as for any transactional write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOffsetRecords {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub records: Vec<GroupRecord>,
}

impl Coordinator {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Kafka's member checks for TxnOffsetCommit: only when the request names a member or
    /// generation (version 3+); a stale generation or member epoch is ILLEGAL_GENERATION.
    fn validate_txn_commit(&self, req: &TxnCommitRequest) -> ErrorCode {
        let Some(g) = self.groups.get(&req.group_id) else {
            // An unknown group is created as a simple group, unless a generation is given.
            return if req.generation_id < 0 {
                ErrorCode::NONE
            } else {
                ErrorCode::ILLEGAL_GENERATION
            };
        };
        match &g.kind {
            GroupKind::Classic(c) => {
                if req.generation_id < 0 && c.is_empty() {
                    return ErrorCode::NONE;
                }
                if req.generation_id >= 0
                    || !req.member_id.is_empty()
                    || req.group_instance_id.is_some()
                {
                    if let Err(e) =
                        c.validate_member(&req.member_id, req.group_instance_id.as_deref())
                    {
                        return e;
                    }
                    if req.generation_id != c.generation {
                        return ErrorCode::ILLEGAL_GENERATION;
                    }
                }
                // Unlike OffsetCommit, neither a missing member nor a rebalance in progress
                // refuses a transactional commit.
                ErrorCode::NONE
            }
            GroupKind::Consumer(c) => {
                if req.generation_id < 0 && c.members.is_empty() {
                    return ErrorCode::NONE;
                }
                if req.generation_id == -1
                    && req.member_id.is_empty()
                    && req.group_instance_id.is_none()
                {
                    return ErrorCode::NONE;
                }
                match c.members.get(&req.member_id) {
                    None => ErrorCode::UNKNOWN_MEMBER_ID,
                    Some(m) if m.member_epoch != req.generation_id => ErrorCode::ILLEGAL_GENERATION,
                    Some(_) => ErrorCode::NONE,
                }
            }
        }
    }

    /// TxnOffsetCommit: per-partition errors, and the records to append as a transactional
    /// batch (`None` when nothing is to be written). The offsets stay pending until
    /// [`Coordinator::complete_txn`].
    pub fn txn_commit_offsets(
        &mut self,
        now_ms: i64,
        req: TxnCommitRequest,
    ) -> (Vec<PartitionResult>, Option<TxnOffsetRecords>) {
        let all = |e: ErrorCode, offsets: Vec<CommitOffset>| {
            offsets
                .into_iter()
                .map(|o| ((o.topic, o.partition), e))
                .collect::<Vec<_>>()
        };
        if req.group_id.is_empty() {
            return (all(ErrorCode::INVALID_GROUP_ID, req.offsets), None);
        }
        let error = self.validate_txn_commit(&req);
        if !error.is_none() {
            return (all(error, req.offsets), None);
        }
        let group_id = req.group_id.clone();
        let max_metadata = self.config.offset_metadata_max_bytes;
        let mut results = Vec::with_capacity(req.offsets.len());
        let mut records = Vec::new();
        let mut entries = Vec::new();
        for o in req.offsets {
            let metadata = o.metadata.unwrap_or_default();
            if metadata.len() > max_metadata {
                results.push(((o.topic, o.partition), ErrorCode::OFFSET_METADATA_TOO_LARGE));
                continue;
            }
            let entry = OffsetEntry {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata,
                commit_timestamp_ms: now_ms,
                seq: self.next_seq(),
            };
            records.push(GroupRecord::OffsetCommit {
                group: group_id.clone(),
                topic: o.topic.clone(),
                partition: o.partition,
                offset: entry.offset,
                leader_epoch: entry.leader_epoch,
                metadata: entry.metadata.clone(),
                commit_timestamp_ms: now_ms,
            });
            entries.push(((o.topic.clone(), o.partition), entry));
            results.push(((o.topic, o.partition), ErrorCode::NONE));
        }
        if entries.is_empty() {
            return (results, None);
        }
        let g = self
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::classic(&group_id, now_ms));
        g.pending_txn
            .entry(req.producer_id)
            .or_default()
            .extend(entries);
        (
            results,
            Some(TxnOffsetRecords {
                producer_id: req.producer_id,
                producer_epoch: req.producer_epoch,
                records,
            }),
        )
    }

    /// A COMMIT (`committed`) or ABORT marker of `producer_id` was written to (or replayed
    /// from) a `__consumer_offsets` partition: for every group that `belongs` to that
    /// partition, the producer's pending offsets become committed (each only if written
    /// after the partition's current committed offset) or are dropped.
    pub fn complete_txn(
        &mut self,
        producer_id: i64,
        committed: bool,
        mut belongs: impl FnMut(&str) -> bool,
    ) {
        let ids: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.pending_txn.contains_key(&producer_id))
            .map(|(id, _)| id.clone())
            .filter(|id| belongs(id))
            .collect();
        for id in ids {
            let g = self.groups.get_mut(&id).expect("listed");
            let pending = g.pending_txn.remove(&producer_id).unwrap_or_default();
            if committed {
                for (k, e) in pending {
                    if g.offsets.get(&k).is_none_or(|cur| e.seq > cur.seq) {
                        g.offsets.insert(k, e);
                    }
                }
            }
            self.drop_if_unused(&id);
        }
    }

    /// Replays one record of a transactional batch of `producer_id` read back from
    /// `__consumer_offsets` (in log order): an offset commit becomes pending until the
    /// producer's marker is replayed through [`Coordinator::complete_txn`]. Other records
    /// replay as usual.
    pub fn replay_txn(&mut self, producer_id: i64, record: &GroupRecord) {
        let GroupRecord::OffsetCommit {
            group,
            topic,
            partition,
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        } = record
        else {
            self.replay(record);
            return;
        };
        let seq = self.next_seq();
        let g = self
            .groups
            .entry(group.clone())
            .or_insert_with(|| Group::classic(group, 0));
        g.pending_txn.entry(producer_id).or_default().insert(
            (topic.clone(), *partition),
            OffsetEntry {
                offset: *offset,
                leader_epoch: *leader_epoch,
                metadata: metadata.clone(),
                commit_timestamp_ms: *commit_timestamp_ms,
                seq,
            },
        );
    }

    /// True when a transaction has uncommitted offsets for this partition of the group.
    pub fn has_pending_txn_offsets(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.groups.get(group_id).is_some_and(|g| {
            g.pending_txn
                .values()
                .any(|m| m.contains_key(&(topic.to_owned(), partition)))
        })
    }

    /// The producer ids with pending transactional offsets in the group.
    pub fn pending_txn_producers(&self, group_id: &str) -> Vec<i64> {
        self.groups
            .get(group_id)
            .map(|g| g.pending_txn.keys().copied().collect())
            .unwrap_or_default()
    }

    /// OffsetFetch with per-partition errors: like [`Coordinator::fetch_offsets`], but with
    /// `require_stable` a partition with pending transactional offsets is answered
    /// UNSTABLE_OFFSET_COMMIT (offset -1), as Kafka does, so the consumer retries.
    pub fn fetch_offsets_stable(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
        require_stable: bool,
    ) -> Result<Vec<(String, i32, CommittedOffset, ErrorCode)>, ErrorCode> {
        let fetched = self.fetch_offsets(group_id, partitions, require_stable)?;
        Ok(fetched
            .into_iter()
            .map(|(t, p, c)| {
                if require_stable && self.has_pending_txn_offsets(group_id, &t, p) {
                    (
                        t,
                        p,
                        CommittedOffset::none(),
                        ErrorCode::UNSTABLE_OFFSET_COMMIT,
                    )
                } else {
                    (t, p, c, ErrorCode::NONE)
                }
            })
            .collect())
    }
}
