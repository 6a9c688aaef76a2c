//! [`Coordinator`]: every group of this node, their committed offsets, and the dispatch of
//! requests to the classic or KIP-848 state machine.
//!
//! Each public method takes plain inputs plus `now_ms` and returns its answer and the
//! [`Effect`]s to carry out. Nothing here reads a clock, touches a socket or writes a file.

use std::collections::{BTreeMap, BTreeSet};

mod txn;
pub use txn::{TxnCommitRequest, TxnOffsetRecords};

use crate::classic::{ClassicGroup, Ctx, CONSUMER_PROTOCOL_TYPE};
use crate::config::{Assignor, GroupConfig};
use crate::consumer::{validate_regex, ConsumerGroup, LEAVE_EPOCH, STATIC_LEAVE_EPOCH};
use crate::error::ErrorCode;
use crate::record::{GroupRecord, TopicId};
use crate::rng::SplitMix64;
use crate::types::{
    CommitRequest, CommittedOffset, ConsumerGroupDescription, ConsumerHeartbeat,
    ConsumerHeartbeatResult, Effect, FetchedOffset, GroupDescription, GroupListing, JoinRequest,
    JoinResult, LeaveMemberResult, PartitionResult, SyncRequest, SyncResult, Token, TopicView,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: String,
    pub(crate) commit_timestamp_ms: i64,
    /// Order of the commit in `__consumer_offsets` (calls and replays come in log order): a
    /// transactional offset replaces a committed one at its commit only if written later.
    pub(crate) seq: u64,
}

#[derive(Debug, Clone)]
pub(crate) enum GroupKind {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) kind: GroupKind,
    pub(crate) offsets: BTreeMap<(String, i32), OffsetEntry>,
    /// TxnOffsetCommit offsets per producer id, invisible until its transaction commits.
    pub(crate) pending_txn: BTreeMap<i64, BTreeMap<(String, i32), OffsetEntry>>,
}

impl Group {
    fn classic(id: &str, now: i64) -> Self {
        Group {
            kind: GroupKind::Classic(ClassicGroup::new(id, now)),
            offsets: BTreeMap::new(),
            pending_txn: BTreeMap::new(),
        }
    }

    /// No members of either kind (the group only holds offsets, if anything).
    fn has_no_members(&self) -> bool {
        match &self.kind {
            GroupKind::Classic(c) => c.has_no_members(),
            GroupKind::Consumer(c) => c.members.is_empty(),
        }
    }

    /// When `entry` expires, if it can (Kafka's offset expiration conditions).
    fn expiry_ms(&self, topic: &str, entry: &OffsetEntry, retention_ms: i64) -> Option<i64> {
        let base = match &self.kind {
            GroupKind::Classic(c) => match c.protocol_type.as_deref() {
                // Standalone consumers: from the commit.
                None => entry.commit_timestamp_ms,
                // Group-managed and empty: from the moment it became empty.
                Some(_) if c.is_empty() => c.state_timestamp_ms,
                Some(CONSUMER_PROTOCOL_TYPE) if c.state == crate::classic::ClassicState::Stable => {
                    match c.subscribed_topics() {
                        Some(topics) if !topics.contains(topic) => entry.commit_timestamp_ms,
                        _ => return None,
                    }
                }
                Some(_) => return None,
            },
            GroupKind::Consumer(c) => {
                if c.subscribes_to(topic) {
                    return None;
                }
                entry.commit_timestamp_ms
            }
        };
        Some(base.saturating_add(retention_ms))
    }
}

/// All consumer groups coordinated by this node.
#[derive(Debug, Clone)]
pub struct Coordinator {
    config: GroupConfig,
    rng: SplitMix64,
    groups: BTreeMap<String, Group>,
    /// The last [`OffsetEntry::seq`] handed out.
    seq: u64,
    /// When the next periodic cleanup (offset expiry, deletion of empty groups) runs;
    /// `None` until the first tick, which runs one and schedules the next an interval later.
    next_cleanup_ms: Option<i64>,
}

fn persist_offset(fx: &mut Vec<Effect>, group: &str, topic: &str, partition: i32, e: &OffsetEntry) {
    fx.push(Effect::Persist(GroupRecord::OffsetCommit {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
        offset: e.offset,
        leader_epoch: e.leader_epoch,
        metadata: e.metadata.clone(),
        commit_timestamp_ms: e.commit_timestamp_ms,
    }));
}

fn offset_tombstone(group: &str, topic: &str, partition: i32) -> Effect {
    Effect::Persist(GroupRecord::OffsetDelete {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
    })
}

impl Coordinator {
    /// A coordinator seeded from the process's hash randomness (no clock involved), so
    /// member ids generated after a restart never repeat those of earlier runs.
    pub fn new(config: GroupConfig) -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5EED_u64);
        Self::new_with_seed(config, seed)
    }

    /// A coordinator whose member ids come from `seed`, so tests replay exactly.
    /// Production callers must pass real entropy so ids differ across restarts.
    pub fn new_with_seed(config: GroupConfig, seed: u64) -> Self {
        Coordinator {
            config,
            rng: SplitMix64::new(seed),
            groups: BTreeMap::new(),
            seq: 0,
            next_cleanup_ms: None,
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Forgets every group whose id `belongs` says (its partition of the offsets topic is now
    /// led elsewhere, or is about to be replayed); returns how many went, and the answers of
    /// their waiting JoinGroup and SyncGroup requests: NOT_COORDINATOR at once, as Kafka's
    /// coordinator answers them when it unloads a group, so their clients look up the new
    /// coordinator rather than wait out the rebalance.
    pub fn unload_groups(&mut self, mut belongs: impl FnMut(&str) -> bool) -> (usize, Vec<Effect>) {
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|id| belongs(id))
            .cloned()
            .collect();
        let mut fx = Vec::new();
        for id in &gone {
            if let Some(Group {
                kind: GroupKind::Classic(c),
                ..
            }) = self.groups.remove(id)
            {
                c.answer_waiting(ErrorCode::NOT_COORDINATOR, &mut fx);
            }
        }
        (gone.len(), fx)
    }

    /// The ids of all groups (any type, any state).
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    // ------------------------------------------------------------ classic protocol

    /// JoinGroup. The response arrives as an [`Effect::Join`] for `token`, in this call's
    /// effects or a later call's (another member's request or [`Coordinator::tick`]).
    pub fn join_group(&mut self, now_ms: i64, token: Token, req: JoinRequest) -> Vec<Effect> {
        let mut fx = Vec::new();
        let fail = |e: ErrorCode, fx: &mut Vec<Effect>, member: &str| {
            fx.push(Effect::Join(token, JoinResult::error(e, member)));
        };
        if req.group_id.is_empty() {
            fail(ErrorCode::INVALID_GROUP_ID, &mut fx, &req.member_id);
            return fx;
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            fail(ErrorCode::INVALID_SESSION_TIMEOUT, &mut fx, &req.member_id);
            return fx;
        }
        let group_id = req.group_id.clone();
        match self.groups.get_mut(&group_id) {
            None if !req.member_id.is_empty() => {
                fail(ErrorCode::UNKNOWN_MEMBER_ID, &mut fx, &req.member_id);
                return fx;
            }
            None => {
                self.groups
                    .insert(group_id.clone(), Group::classic(&group_id, now_ms));
            }
            Some(g) => {
                if let GroupKind::Consumer(c) = &g.kind {
                    if !c.members.is_empty() {
                        fail(
                            ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                            &mut fx,
                            &req.member_id,
                        );
                        return fx;
                    }
                    // An empty consumer group becomes a classic group, keeping its offsets.
                    g.kind = GroupKind::Classic(ClassicGroup::new(&group_id, now_ms));
                }
            }
        }
        let g = self.groups.get_mut(&group_id).expect("present");
        let GroupKind::Classic(c) = &mut g.kind else {
            unreachable!("converted above")
        };
        let mut cx = Ctx {
            now: now_ms,
            cfg: &self.config,
            rng: &mut self.rng,
            fx: &mut fx,
        };
        c.join(&mut cx, token, req);
        self.drop_if_unused(&group_id);
        fx
    }

    /// SyncGroup. The response arrives as an [`Effect::Sync`] for `token`.
    pub fn sync_group(&mut self, now_ms: i64, token: Token, req: SyncRequest) -> Vec<Effect> {
        let mut fx = Vec::new();
        if req.group_id.is_empty() {
            fx.push(Effect::Sync(
                token,
                SyncResult::error(ErrorCode::INVALID_GROUP_ID),
            ));
            return fx;
        }
        let Some(GroupKind::Classic(c)) = self.groups.get_mut(&req.group_id).map(|g| &mut g.kind)
        else {
            fx.push(Effect::Sync(
                token,
                SyncResult::error(ErrorCode::UNKNOWN_MEMBER_ID),
            ));
            return fx;
        };
        let mut cx = Ctx {
            now: now_ms,
            cfg: &self.config,
            rng: &mut self.rng,
            fx: &mut fx,
        };
        c.sync(&mut cx, token, req);
        fx
    }

    /// Heartbeat (classic protocol).
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> ErrorCode {
        if group_id.is_empty() {
            return ErrorCode::INVALID_GROUP_ID;
        }
        match self.groups.get_mut(group_id).map(|g| &mut g.kind) {
            Some(GroupKind::Classic(c)) => {
                c.heartbeat(now_ms, generation_id, member_id, group_instance_id)
            }
            _ => ErrorCode::UNKNOWN_MEMBER_ID,
        }
    }

    /// LeaveGroup: (top-level error, per-member results, effects). For LeaveGroup v0-v2
    /// (one member, no per-member errors) answer with the single member's error.
    pub fn leave_group(
        &mut self,
        now_ms: i64,
        group_id: &str,
        members: Vec<(String, Option<String>)>,
    ) -> (ErrorCode, Vec<LeaveMemberResult>, Vec<Effect>) {
        let mut fx = Vec::new();
        if group_id.is_empty() {
            return (ErrorCode::INVALID_GROUP_ID, Vec::new(), fx);
        }
        let Some(GroupKind::Classic(c)) = self.groups.get_mut(group_id).map(|g| &mut g.kind) else {
            let results = members
                .into_iter()
                .map(|(m, i)| (m, i, ErrorCode::UNKNOWN_MEMBER_ID))
                .collect();
            return (ErrorCode::NONE, results, fx);
        };
        let mut results = Vec::with_capacity(members.len());
        let mut cx = Ctx {
            now: now_ms,
            cfg: &self.config,
            rng: &mut self.rng,
            fx: &mut fx,
        };
        for (member_id, instance_id) in members {
            let e = c.leave(&mut cx, &member_id, instance_id.as_deref());
            results.push((member_id, instance_id, e));
        }
        self.drop_if_unused(group_id);
        (ErrorCode::NONE, results, fx)
    }

    // ------------------------------------------------------------ offsets

    fn validate_commit(&mut self, now_ms: i64, req: &CommitRequest) -> ErrorCode {
        let Some(g) = self.groups.get_mut(&req.group_id) else {
            return if req.generation_id < 0 {
                ErrorCode::NONE
            } else {
                ErrorCode::ILLEGAL_GENERATION
            };
        };
        match &mut g.kind {
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
                } else if !c.is_empty() {
                    return ErrorCode::UNKNOWN_MEMBER_ID;
                }
                if c.state == crate::classic::ClassicState::CompletingRebalance {
                    return ErrorCode::REBALANCE_IN_PROGRESS;
                }
                c.touch(now_ms, &req.member_id);
                ErrorCode::NONE
            }
            GroupKind::Consumer(c) => {
                if req.generation_id < 0 && c.members.is_empty() {
                    return ErrorCode::NONE;
                }
                let Some(m) = c.members.get(&req.member_id) else {
                    return ErrorCode::UNKNOWN_MEMBER_ID;
                };
                if req.generation_id != m.member_epoch {
                    return ErrorCode::STALE_MEMBER_EPOCH;
                }
                ErrorCode::NONE
            }
        }
    }

    /// OffsetCommit: per-partition errors and the records to persist.
    pub fn commit_offsets(
        &mut self,
        now_ms: i64,
        req: CommitRequest,
    ) -> (Vec<PartitionResult>, Vec<Effect>) {
        let mut fx = Vec::new();
        let error = self.validate_commit(now_ms, &req);
        if !error.is_none() {
            let results = req
                .offsets
                .into_iter()
                .map(|o| ((o.topic, o.partition), error))
                .collect();
            return (results, fx);
        }
        let group_id = req.group_id.clone();
        let g = self
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::classic(&group_id, now_ms));
        let mut results = Vec::with_capacity(req.offsets.len());
        for o in req.offsets {
            let metadata = o.metadata.unwrap_or_default();
            if metadata.len() > self.config.offset_metadata_max_bytes {
                results.push(((o.topic, o.partition), ErrorCode::OFFSET_METADATA_TOO_LARGE));
                continue;
            }
            self.seq += 1;
            let entry = OffsetEntry {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata,
                commit_timestamp_ms: now_ms,
                seq: self.seq,
            };
            persist_offset(&mut fx, &group_id, &o.topic, o.partition, &entry);
            g.offsets.insert((o.topic.clone(), o.partition), entry);
            results.push(((o.topic, o.partition), ErrorCode::NONE));
        }
        self.drop_if_unused(&group_id);
        (results, fx)
    }

    /// OffsetFetch. `None` = all committed partitions; a requested partition without a
    /// commit gets offset -1 and metadata "". Offsets of open transactions are never
    /// returned, but this answer cannot carry per-partition errors: with `require_stable`
    /// use [`Coordinator::fetch_offsets_stable`], which answers UNSTABLE_OFFSET_COMMIT for
    /// partitions with pending transactional offsets.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[(String, i32)]>,
        require_stable: bool,
    ) -> Result<Vec<FetchedOffset>, ErrorCode> {
        let _ = require_stable;
        let offsets = self.groups.get(group_id).map(|g| &g.offsets);
        let view = |e: &OffsetEntry| CommittedOffset {
            offset: e.offset,
            leader_epoch: e.leader_epoch,
            metadata: e.metadata.clone(),
        };
        Ok(match partitions {
            None => offsets
                .into_iter()
                .flatten()
                .map(|((t, p), e)| (t.clone(), *p, view(e)))
                .collect(),
            Some(list) => list
                .iter()
                .map(|(t, p)| {
                    let c = offsets
                        .and_then(|o| o.get(&(t.clone(), *p)))
                        .map(view)
                        .unwrap_or_else(CommittedOffset::none);
                    (t.clone(), *p, c)
                })
                .collect(),
        })
    }

    /// OffsetFetch v9+ member validation (KIP-848): a fetch naming a member of a consumer
    /// group must carry its current epoch.
    pub fn validate_offset_fetch(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
    ) -> ErrorCode {
        match self.groups.get(group_id).map(|g| &g.kind) {
            Some(GroupKind::Consumer(c)) if !member_id.is_empty() || member_epoch >= 0 => {
                match c.members.get(member_id) {
                    None => ErrorCode::UNKNOWN_MEMBER_ID,
                    Some(m) if m.member_epoch != member_epoch => ErrorCode::STALE_MEMBER_EPOCH,
                    Some(_) => ErrorCode::NONE,
                }
            }
            _ => ErrorCode::NONE,
        }
    }

    /// OffsetDelete: (group error, per-partition errors, records).
    pub fn delete_offsets(
        &mut self,
        now_ms: i64,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> (ErrorCode, Vec<PartitionResult>, Vec<Effect>) {
        let _ = now_ms;
        let mut fx = Vec::new();
        let Some(g) = self.groups.get_mut(group_id) else {
            return (ErrorCode::GROUP_ID_NOT_FOUND, Vec::new(), fx);
        };
        // The topics whose offsets may not be deleted: those a member subscribes to.
        let protected: BTreeSet<String> = match &g.kind {
            GroupKind::Classic(c) if c.is_empty() => BTreeSet::new(),
            GroupKind::Classic(c) => match c.subscribed_topics() {
                Some(topics) => topics,
                None => return (ErrorCode::NON_EMPTY_GROUP, Vec::new(), fx),
            },
            GroupKind::Consumer(c) => c
                .members
                .values()
                .flat_map(|m| {
                    m.subscribed_topic_names
                        .iter()
                        .chain(m.resolved_regex_topics.iter())
                        .cloned()
                })
                .collect(),
        };
        let mut results = Vec::with_capacity(partitions.len());
        for (t, p) in partitions {
            if protected.contains(t) {
                results.push(((t.clone(), *p), ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC));
                continue;
            }
            if g.offsets.remove(&(t.clone(), *p)).is_some() {
                fx.push(offset_tombstone(group_id, t, *p));
            }
            results.push(((t.clone(), *p), ErrorCode::NONE));
        }
        (ErrorCode::NONE, results, fx)
    }

    /// Drops the offsets of a deleted topic from every group.
    pub fn topic_deleted(&mut self, topic: &str) -> Vec<Effect> {
        let mut fx = Vec::new();
        for (id, g) in self.groups.iter_mut() {
            let gone: Vec<(String, i32)> = g
                .offsets
                .keys()
                .filter(|(t, _)| t == topic)
                .cloned()
                .collect();
            for k in gone {
                g.offsets.remove(&k);
                fx.push(offset_tombstone(id, &k.0, k.1));
            }
        }
        fx
    }

    /// (group, topic, partition, committed offset) for every committed offset, so the
    /// caller can compute lag against log end offsets.
    pub fn lag_inputs(&self) -> Vec<(String, String, i32, i64)> {
        self.groups
            .iter()
            .flat_map(|(id, g)| {
                g.offsets
                    .iter()
                    .map(move |((t, p), e)| (id.clone(), t.clone(), *p, e.offset))
            })
            .collect()
    }

    // ------------------------------------------------------------ admin

    /// DescribeGroups for one group. Unknown groups and consumer (KIP-848) groups are
    /// described as "Dead" with no error, like Kafka before DescribeGroups v6.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        match self.groups.get(group_id).map(|g| &g.kind) {
            Some(GroupKind::Classic(c)) => c.describe(),
            _ => GroupDescription {
                error: ErrorCode::NONE,
                group_id: group_id.to_owned(),
                state: "Dead".to_owned(),
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            },
        }
    }

    /// ListGroups, filtered by states and types (case-insensitive; empty = all).
    pub fn list_groups(&self, states: &[String], types: &[String]) -> Vec<GroupListing> {
        let matches = |filter: &[String], v: &str| {
            filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(v))
        };
        self.groups
            .iter()
            .map(|(id, g)| match &g.kind {
                GroupKind::Classic(c) => GroupListing {
                    group_id: id.clone(),
                    protocol_type: c.protocol_type.clone().unwrap_or_default(),
                    state: c.state.name().to_owned(),
                    group_type: "classic".to_owned(),
                },
                GroupKind::Consumer(c) => GroupListing {
                    group_id: id.clone(),
                    protocol_type: CONSUMER_PROTOCOL_TYPE.to_owned(),
                    state: c.state_name().to_owned(),
                    group_type: "consumer".to_owned(),
                },
            })
            .filter(|l| matches(states, &l.state) && matches(types, &l.group_type))
            .collect()
    }

    /// DeleteGroups: per-group errors and the tombstones to write.
    pub fn delete_groups(
        &mut self,
        now_ms: i64,
        ids: &[String],
    ) -> (Vec<(String, ErrorCode)>, Vec<Effect>) {
        let _ = now_ms;
        let mut fx = Vec::new();
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let e = match self.groups.get(id) {
                None => ErrorCode::GROUP_ID_NOT_FOUND,
                Some(g) => {
                    let empty = match &g.kind {
                        GroupKind::Classic(c) => c.is_empty(),
                        GroupKind::Consumer(c) => c.members.is_empty(),
                    };
                    if empty {
                        self.remove_group(id, &mut fx);
                        ErrorCode::NONE
                    } else {
                        ErrorCode::NON_EMPTY_GROUP
                    }
                }
            };
            results.push((id.clone(), e));
        }
        (results, fx)
    }

    fn remove_group(&mut self, id: &str, fx: &mut Vec<Effect>) {
        if let Some(g) = self.groups.remove(id) {
            for (t, p) in g.offsets.keys() {
                fx.push(offset_tombstone(id, t, *p));
            }
            fx.push(Effect::Persist(GroupRecord::GroupDelete {
                group: id.to_owned(),
            }));
        }
    }

    /// Forgets a classic group that was created by a request but never got a member,
    /// an offset or a record.
    fn drop_if_unused(&mut self, id: &str) {
        let unused = self.groups.get(id).is_some_and(|g| {
            g.offsets.is_empty()
                && g.pending_txn.is_empty()
                && matches!(&g.kind, GroupKind::Classic(c)
                    if c.has_no_members() && c.is_empty() && c.persisted.is_none() && c.generation == 0)
        });
        if unused {
            self.groups.remove(id);
        }
    }

    // ------------------------------------------------------------ timers

    /// Fires everything due at `now_ms`: pending-member, session, rebalance and sync
    /// timeouts, the initial rebalance delay, KIP-848 session and revocation timeouts,
    /// and, once per `offsets_retention_check_interval_ms`, offset expiry and the deletion of
    /// empty groups without offsets.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let retention = self.config.offsets_retention_ms;
        // Offset expiry and the deletion of empty groups run once per
        // `offsets.retention.check.interval.ms`, as Kafka's periodic cleanup does.
        let interval = self.config.offsets_retention_check_interval_ms.max(1);
        let cleanup = self.next_cleanup_ms.is_none_or(|at| now_ms >= at);
        if cleanup {
            self.next_cleanup_ms = Some(now_ms.saturating_add(interval));
        }
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            let g = self.groups.get_mut(&id).expect("listed");
            match &mut g.kind {
                GroupKind::Classic(c) => {
                    let mut cx = Ctx {
                        now: now_ms,
                        cfg: &self.config,
                        rng: &mut self.rng,
                        fx: &mut fx,
                    };
                    c.tick(&mut cx);
                }
                GroupKind::Consumer(c) => {
                    c.tick(now_ms, &self.config);
                    Self::persist_consumer(c, &mut fx);
                }
            }
            if !cleanup {
                continue;
            }
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|((t, _), e)| g.expiry_ms(t, e, retention).is_some_and(|x| x <= now_ms))
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                g.offsets.remove(&k);
                fx.push(offset_tombstone(&id, &k.0, k.1));
            }
            let empty = match &g.kind {
                GroupKind::Classic(c) => c.is_empty() && c.has_no_members(),
                GroupKind::Consumer(c) => c.members.is_empty(),
            };
            if empty && g.offsets.is_empty() && g.pending_txn.is_empty() {
                self.remove_group(&id, &mut fx);
            }
        }
        fx
    }

    /// The earliest time [`Coordinator::tick`] has work; `Some(i64::MIN)` means "now"
    /// (for example right after a replay).
    pub fn next_deadline(&self) -> Option<i64> {
        let retention = self.config.offsets_retention_ms;
        // Cleanup work waits for the next periodic cleanup (the first tick runs one).
        let cleanup_at = |d: i64| Some(self.next_cleanup_ms.map_or(d, |c| c.max(d)));
        let mut next: Option<i64> = None;
        let mut consider = |d: Option<i64>| {
            if let Some(d) = d {
                next = Some(next.map_or(d, |n| n.min(d)));
            }
        };
        for g in self.groups.values() {
            match &g.kind {
                GroupKind::Classic(c) => consider(c.next_deadline()),
                GroupKind::Consumer(c) => consider(c.next_deadline()),
            }
            if g.has_no_members() && g.offsets.is_empty() && g.pending_txn.is_empty() {
                consider(cleanup_at(i64::MIN));
            }
            for ((t, _), e) in &g.offsets {
                consider(g.expiry_ms(t, e, retention).and_then(cleanup_at));
            }
        }
        next
    }

    // ------------------------------------------------------------ persistence

    fn persist_consumer(c: &mut ConsumerGroup, fx: &mut Vec<Effect>) {
        let record = c.to_record();
        if c.persisted.as_ref() != Some(&record) {
            c.persisted = Some(record.clone());
            fx.push(Effect::Persist(GroupRecord::ConsumerGroup(record)));
        }
    }

    /// Applies one record read back from `__consumer_offsets` at startup (in log order).
    pub fn replay(&mut self, record: &GroupRecord) {
        match record {
            GroupRecord::OffsetCommit {
                group,
                topic,
                partition,
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            } => {
                self.seq += 1;
                let g = self
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::classic(group, 0));
                g.offsets.insert(
                    (topic.clone(), *partition),
                    OffsetEntry {
                        offset: *offset,
                        leader_epoch: *leader_epoch,
                        metadata: metadata.clone(),
                        commit_timestamp_ms: *commit_timestamp_ms,
                        seq: self.seq,
                    },
                );
            }
            GroupRecord::OffsetDelete {
                group,
                topic,
                partition,
            } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.offsets.remove(&(topic.clone(), *partition));
                }
                self.drop_if_unused(group);
            }
            GroupRecord::GroupMetadata(r) => {
                let kind = GroupKind::Classic(ClassicGroup::from_record(r));
                self.groups
                    .entry(r.group.clone())
                    .and_modify(|g| g.kind = kind.clone())
                    .or_insert(Group {
                        kind,
                        offsets: BTreeMap::new(),
                        pending_txn: BTreeMap::new(),
                    });
            }
            GroupRecord::ConsumerGroup(r) => {
                let kind = GroupKind::Consumer(ConsumerGroup::from_record(r));
                self.groups
                    .entry(r.group.clone())
                    .and_modify(|g| g.kind = kind.clone())
                    .or_insert(Group {
                        kind,
                        offsets: BTreeMap::new(),
                        pending_txn: BTreeMap::new(),
                    });
            }
            GroupRecord::GroupDelete { group } => {
                if let Some(g) = self.groups.get_mut(group) {
                    g.kind = GroupKind::Classic(ClassicGroup::new(group, 0));
                }
                self.drop_if_unused(group);
            }
        }
    }

    /// The persisted state as records: replaying them into a fresh coordinator rebuilds
    /// what replaying the whole log would. The caller writes these and may then drop
    /// older records of `__consumer_offsets`.
    pub fn snapshot(&self) -> Vec<GroupRecord> {
        let mut out = Vec::new();
        for (id, g) in &self.groups {
            match &g.kind {
                GroupKind::Classic(c) => {
                    if let Some(r) = &c.persisted {
                        out.push(GroupRecord::GroupMetadata(r.clone()));
                    }
                }
                GroupKind::Consumer(c) => {
                    if let Some(r) = &c.persisted {
                        out.push(GroupRecord::ConsumerGroup(r.clone()));
                    }
                }
            }
            for ((t, p), e) in &g.offsets {
                out.push(GroupRecord::OffsetCommit {
                    group: id.clone(),
                    topic: t.clone(),
                    partition: *p,
                    offset: e.offset,
                    leader_epoch: e.leader_epoch,
                    metadata: e.metadata.clone(),
                    commit_timestamp_ms: e.commit_timestamp_ms,
                });
            }
        }
        out
    }

    // ------------------------------------------------------------ KIP-848

    /// ConsumerGroupHeartbeat (KIP-848). `topics` is the broker's current topic view.
    pub fn consumer_heartbeat(
        &mut self,
        now_ms: i64,
        req: ConsumerHeartbeat,
        topics: &dyn TopicView,
    ) -> (ConsumerHeartbeatResult, Vec<Effect>) {
        let mut fx = Vec::new();
        let member = req.member_id.clone();
        let invalid = |msg: &str| {
            (
                ConsumerHeartbeatResult::error(ErrorCode::INVALID_REQUEST, msg, &member),
                Vec::new(),
            )
        };
        if req.group_id.is_empty() {
            return invalid("GroupId can't be empty.");
        }
        if req.instance_id.as_deref() == Some("") {
            return invalid("InstanceId can't be empty.");
        }
        if req.rack_id.as_deref() == Some("") {
            return invalid("RackId can't be empty.");
        }
        if req.member_epoch < STATIC_LEAVE_EPOCH {
            return invalid("MemberEpoch is invalid.");
        }
        if req.member_epoch != 0 && req.member_id.is_empty() {
            return invalid("MemberId can't be empty.");
        }
        if req.member_epoch == STATIC_LEAVE_EPOCH && req.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
        if req.member_epoch == 0 {
            if req.rebalance_timeout_ms < 0 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
            if req.topic_partitions.as_ref().is_some_and(|t| !t.is_empty()) {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
        }
        if let Some(a) = req.server_assignor.as_deref() {
            if !a.is_empty() && Assignor::from_name(a).is_none() {
                return (
                    ConsumerHeartbeatResult::error(
                        ErrorCode::UNSUPPORTED_ASSIGNOR,
                        format!("ServerAssignor {a} is not supported. Supported assignors: uniform, range."),
                        &member,
                    ),
                    fx,
                );
            }
        }
        if let Some(re) = req.subscribed_topic_regex.as_deref() {
            if !re.is_empty() {
                if let Err(e) = validate_regex(re) {
                    return (
                        ConsumerHeartbeatResult::error(
                            ErrorCode::INVALID_REGULAR_EXPRESSION,
                            format!("SubscribedTopicRegex `{re}` is not a valid regular expression: {e}"),
                            &member,
                        ),
                        fx,
                    );
                }
            }
        }

        let group_id = req.group_id.clone();
        let leaving = req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH;
        match self.groups.get_mut(&group_id) {
            None if req.member_epoch == 0 => {
                self.groups.insert(
                    group_id.clone(),
                    Group {
                        kind: GroupKind::Consumer(ConsumerGroup::new(&group_id, now_ms)),
                        offsets: BTreeMap::new(),
                        pending_txn: BTreeMap::new(),
                    },
                );
            }
            None => {
                // Like Kafka: a member of (or leaving) a group that does not exist is told so.
                return (
                    ConsumerHeartbeatResult::error(
                        ErrorCode::GROUP_ID_NOT_FOUND,
                        format!("Group {group_id} not found."),
                        &member,
                    ),
                    fx,
                );
            }
            Some(g) => {
                if let GroupKind::Classic(c) = &g.kind {
                    if c.has_no_members() && req.member_epoch == 0 {
                        // An empty classic group becomes a consumer group, keeping offsets.
                        g.kind = GroupKind::Consumer(ConsumerGroup::new(&group_id, now_ms));
                    } else {
                        let e = if leaving {
                            ErrorCode::UNKNOWN_MEMBER_ID
                        } else {
                            ErrorCode::GROUP_ID_NOT_FOUND
                        };
                        return (
                            ConsumerHeartbeatResult::error(
                                e,
                                format!("Group {group_id} is not a consumer group."),
                                &member,
                            ),
                            fx,
                        );
                    }
                }
            }
        }
        let g = self.groups.get_mut(&group_id).expect("present");
        let GroupKind::Consumer(c) = &mut g.kind else {
            unreachable!("checked above")
        };
        let result = c.heartbeat(now_ms, &self.config, &mut self.rng, req, topics);
        Self::persist_consumer(c, &mut fx);
        (result, fx)
    }

    /// ConsumerGroupDescribe for one group; GROUP_ID_NOT_FOUND for unknown and classic
    /// groups. Topic names are resolved through `topics`'s ids by the caller if needed.
    pub fn describe_consumer_group(
        &self,
        group_id: &str,
        topics: &dyn TopicView,
    ) -> ConsumerGroupDescription {
        let _ = topics;
        match self.groups.get(group_id).map(|g| &g.kind) {
            Some(GroupKind::Consumer(c)) => {
                let mut d = c.describe();
                d.assignor_name = c.assignor_name(&self.config).to_owned();
                d
            }
            // Kafka leaves the state empty for a group it cannot describe.
            _ => ConsumerGroupDescription {
                error: ErrorCode::GROUP_ID_NOT_FOUND,
                group_id: group_id.to_owned(),
                state: String::new(),
                group_epoch: -1,
                assignment_epoch: -1,
                assignor_name: String::new(),
                members: Vec::new(),
            },
        }
    }

    // ------------------------------------------------------------ introspection (tests)

    /// Every (member, topic id, partition) a KIP-848 member owns or is still revoking.
    /// Used by invariant checks: no partition may appear twice within a group.
    pub fn consumer_owned_partitions(&self, group_id: &str) -> Vec<(String, TopicId, i32)> {
        match self.groups.get(group_id).map(|g| &g.kind) {
            Some(GroupKind::Consumer(c)) => c.owned_partitions(),
            _ => Vec::new(),
        }
    }

    /// Member ids handed out with MEMBER_ID_REQUIRED and not yet used.
    pub fn pending_member_ids(&self, group_id: &str) -> Vec<String> {
        match self.groups.get(group_id).map(|g| &g.kind) {
            Some(GroupKind::Classic(c)) => c.pending_member_ids().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The current generation and leader of a classic group.
    pub fn classic_generation(&self, group_id: &str) -> Option<(i32, Option<String>)> {
        match self.groups.get(group_id).map(|g| &g.kind) {
            Some(GroupKind::Classic(c)) => Some((c.generation, c.leader.clone())),
            _ => None,
        }
    }
}
