//! KIP-848 consumer groups (`group.protocol=consumer`) as a state machine.
//!
//! The coordinator owns the assignment: a membership or subscription change bumps the
//! group epoch, the server assignor computes a target assignment for that epoch, and each
//! member converges to its target through its own heartbeats. Reconciliation is
//! incremental and revocation comes first: a member is given a partition only once no
//! other member owns it or is still revoking it, so **no partition is ever owned by two
//! members at once**.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use crate::assignor::{assign, Assignment};
use crate::config::{Assignor, GroupConfig};
use crate::error::ErrorCode;
use crate::record::{ConsumerGroupRecord, ConsumerMemberRecord, TopicId, TopicPartitions};
use crate::rng::SplitMix64;
use crate::types::{
    ConsumerGroupDescription, ConsumerHeartbeat, ConsumerHeartbeatResult,
    ConsumerMemberDescription, TopicView,
};

/// Epoch a member sends to leave.
pub(crate) const LEAVE_EPOCH: i32 = -1;
/// Epoch a static member sends to leave temporarily (it keeps its assignment).
pub(crate) const STATIC_LEAVE_EPOCH: i32 = -2;

/// Internal topics a regex subscription never matches.
const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// A member's reconciliation state (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// The member owns its whole target for its epoch.
    Stable,
    /// The member must revoke partitions before it can move to the new epoch.
    UnrevokedPartitions,
    /// The member is at the target epoch but waits for partitions others still own.
    UnreleasedPartitions,
}

impl MemberState {
    fn code(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }

    fn from_code(c: i8) -> MemberState {
        match c {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerMember {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) rack_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) subscribed_topic_names: Vec<String>,
    pub(crate) subscribed_topic_regex: Option<String>,
    pub(crate) resolved_regex_topics: Vec<String>,
    pub(crate) server_assignor: Option<String>,
    pub(crate) member_epoch: i32,
    pub(crate) previous_member_epoch: i32,
    pub(crate) state: MemberState,
    /// What the member has been told it owns.
    pub(crate) assigned: Assignment,
    /// What it has been told to give up and has not confirmed yet (still owned).
    pub(crate) pending_revocation: Assignment,
    session_deadline_ms: Option<i64>,
    revocation_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    fn new(member_id: String) -> Self {
        ConsumerMember {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            resolved_regex_topics: Vec::new(),
            server_assignor: None,
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: None,
            revocation_deadline_ms: None,
        }
    }

    /// Topic names this member subscribes to, by name or by regex.
    pub(crate) fn subscribes_to(&self, topic: &str) -> bool {
        self.subscribed_topic_names.iter().any(|t| t == topic)
            || self.resolved_regex_topics.iter().any(|t| t == topic)
    }

    fn all_topic_names(&self) -> impl Iterator<Item = &String> {
        self.subscribed_topic_names
            .iter()
            .chain(self.resolved_regex_topics.iter())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerGroup {
    pub(crate) id: String,
    pub(crate) group_epoch: i32,
    pub(crate) assignment_epoch: i32,
    pub(crate) state_timestamp_ms: i64,
    pub(crate) members: BTreeMap<String, ConsumerMember>,
    static_members: BTreeMap<String, String>,
    pub(crate) target: BTreeMap<String, Assignment>,
    /// Subscribed topics as last seen: name -> (id, partitions).
    subscription_metadata: BTreeMap<String, (TopicId, i32)>,
    /// The last ConsumerGroup record emitted or replayed.
    pub(crate) persisted: Option<ConsumerGroupRecord>,
    /// Compiled subscription regexes, by pattern.
    regex_cache: BTreeMap<String, Regex>,
    /// Fingerprint of the topic names regexes were last resolved against; `None` forces
    /// a resolution (a regex changed or a member joined).
    resolved_against: Option<u64>,
}

pub(crate) fn to_topic_partitions(a: &Assignment) -> TopicPartitions {
    a.iter()
        .filter(|(_, ps)| !ps.is_empty())
        .map(|(t, ps)| (*t, ps.iter().copied().collect()))
        .collect()
}

fn from_topic_partitions(tps: &[(TopicId, Vec<i32>)]) -> Assignment {
    let mut a = Assignment::new();
    for (t, ps) in tps {
        a.entry(*t).or_default().extend(ps.iter().copied());
    }
    a.retain(|_, ps| !ps.is_empty());
    a
}

fn is_empty_assignment(a: &Assignment) -> bool {
    a.values().all(BTreeSet::is_empty)
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(t, ps)| b.get(t).is_some_and(|qs| !ps.is_disjoint(qs)))
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|qs| ps.is_subset(qs)))
}

fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    // Kafka matches the whole topic name (RE2/J `matches()`).
    Regex::new(&format!("^(?:{pattern})$"))
}

/// Validates a regex as Kafka would before accepting a subscription.
pub(crate) fn validate_regex(pattern: &str) -> Result<(), String> {
    anchored_regex(pattern)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl ConsumerGroup {
    pub(crate) fn new(id: &str, now: i64) -> Self {
        ConsumerGroup {
            id: id.to_owned(),
            group_epoch: 0,
            assignment_epoch: 0,
            state_timestamp_ms: now,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscription_metadata: BTreeMap::new(),
            persisted: None,
            regex_cache: BTreeMap::new(),
            resolved_against: None,
        }
    }

    pub(crate) fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.group_epoch {
            "Assigning"
        } else if self.members.values().any(|m| {
            m.member_epoch != STATIC_LEAVE_EPOCH
                && (m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        }) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub(crate) fn subscribes_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscribes_to(topic))
    }

    fn bump_epoch(&mut self) {
        self.group_epoch = self.group_epoch.saturating_add(1);
    }

    /// The assignor most members prefer, else the configured default.
    fn group_assignor(&self, default: Assignor) -> Assignor {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref().and_then(Assignor::from_name) {
                *votes.entry(a).or_default() += 1;
            }
        }
        let mut best = (default, votes.get(&default).copied().unwrap_or(0));
        for (a, v) in votes {
            if v > best.1 {
                best = (a, v);
            }
        }
        best.0
    }

    /// Recomputes the target assignment if the group epoch moved past it.
    fn maybe_compute_target(&mut self, cfg: &GroupConfig) {
        if self.assignment_epoch >= self.group_epoch {
            return;
        }
        let partition_counts: BTreeMap<TopicId, i32> = self
            .subscription_metadata
            .values()
            .map(|(id, n)| (*id, *n))
            .collect();
        let subscriptions: BTreeMap<String, BTreeSet<TopicId>> = self
            .members
            .values()
            .map(|m| {
                let ids = m
                    .all_topic_names()
                    .filter_map(|t| self.subscription_metadata.get(t).map(|(id, _)| *id))
                    .collect();
                (m.member_id.clone(), ids)
            })
            .collect();
        let assignor = self.group_assignor(cfg.consumer_assignor);
        self.target = assign(assignor, &subscriptions, &partition_counts, &self.target);
        self.assignment_epoch = self.group_epoch;
    }

    /// Refreshes the subscribed topics' metadata (and regex resolutions) from the broker's
    /// view; true when anything the assignor uses changed.
    ///
    /// `may_match` narrows what regexes resolve to (Kafka: the topics the member whose
    /// heartbeat triggers the resolution may describe). As in Kafka, a resolution is kept
    /// until the topic names, a regex or the members change.
    fn refresh_metadata(
        &mut self,
        topics: &[(String, TopicId, i32)],
        may_match: &dyn Fn(&str) -> bool,
    ) -> bool {
        let mut changed = false;
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for (n, _, _) in topics {
                n.hash(&mut h);
            }
            h.finish()
        };
        // Regexes are resolved again only when the topic names or a regex changed.
        if self.resolved_against != Some(fingerprint) {
            self.resolved_against = Some(fingerprint);
            let in_use: BTreeSet<&String> = self
                .members
                .values()
                .filter_map(|m| m.subscribed_topic_regex.as_ref())
                .collect();
            self.regex_cache.retain(|p, _| in_use.contains(p));
            for m in self.members.values_mut() {
                let resolved: Vec<String> = match m.subscribed_topic_regex.as_deref() {
                    Some(p) if !p.is_empty() => {
                        if !self.regex_cache.contains_key(p) {
                            if let Ok(re) = anchored_regex(p) {
                                self.regex_cache.insert(p.to_owned(), re);
                            }
                        }
                        match self.regex_cache.get(p) {
                            Some(re) => {
                                let mut v: Vec<String> = topics
                                    .iter()
                                    .map(|(n, _, _)| n)
                                    .filter(|n| {
                                        !INTERNAL_TOPICS.contains(&n.as_str())
                                            && re.is_match(n)
                                            && may_match(n)
                                    })
                                    .cloned()
                                    .collect();
                                v.sort();
                                v.dedup();
                                v
                            }
                            None => Vec::new(),
                        }
                    }
                    _ => Vec::new(),
                };
                if resolved != m.resolved_regex_topics {
                    m.resolved_regex_topics = resolved;
                    changed = true;
                }
            }
        }
        let subscribed: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(ConsumerMember::all_topic_names)
            .collect();
        let metadata: BTreeMap<String, (TopicId, i32)> = topics
            .iter()
            .filter(|(n, _, _)| subscribed.contains(n))
            .map(|(n, id, p)| (n.clone(), (*id, *p)))
            .collect();
        if metadata != self.subscription_metadata {
            self.subscription_metadata = metadata;
            changed = true;
        }
        changed
    }

    /// Who owns (or is still revoking) each partition, except `except`.
    fn owners_except(&self, except: &str) -> BTreeSet<(TopicId, i32)> {
        let mut owned = BTreeSet::new();
        for m in self.members.values() {
            if m.member_id == except {
                continue;
            }
            for a in [&m.assigned, &m.pending_revocation] {
                for (t, ps) in a {
                    for p in ps {
                        owned.insert((*t, *p));
                    }
                }
            }
        }
        owned
    }

    /// Kafka's `CurrentAssignmentBuilder`: moves a member towards its target, revoking
    /// first and only assigning partitions nobody else owns.
    fn reconcile(&mut self, now: i64, member_id: &str, owned: Option<&Assignment>) {
        let taken = self.owners_except(member_id);
        let target_epoch = self.assignment_epoch;
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let m = self.members.get_mut(member_id).expect("member exists");
        if m.member_epoch == STATIC_LEAVE_EPOCH {
            return;
        }
        // Bounded: each pass either returns or strictly advances the state.
        for _ in 0..3 {
            match m.state {
                MemberState::UnrevokedPartitions => {
                    let revoked = owned.is_some_and(|o| !intersects(o, &m.pending_revocation));
                    if !revoked {
                        return;
                    }
                    m.pending_revocation.clear();
                    m.revocation_deadline_ms = None;
                    m.state = MemberState::Stable;
                    if m.member_epoch == target_epoch {
                        // The target moved back while revoking: fill what's free.
                        m.state = MemberState::UnreleasedPartitions;
                    }
                }
                MemberState::Stable | MemberState::UnreleasedPartitions
                    if m.member_epoch == target_epoch =>
                {
                    if m.state == MemberState::Stable && is_subset(&target, &m.assigned) {
                        return;
                    }
                    let mut missing = false;
                    for (t, ps) in &target {
                        for p in ps {
                            let have = m.assigned.get(t).is_some_and(|s| s.contains(p));
                            if have {
                                continue;
                            }
                            if taken.contains(&(*t, *p)) {
                                missing = true;
                            } else {
                                m.assigned.entry(*t).or_default().insert(*p);
                            }
                        }
                    }
                    m.state = if missing {
                        MemberState::UnreleasedPartitions
                    } else {
                        MemberState::Stable
                    };
                    return;
                }
                MemberState::Stable | MemberState::UnreleasedPartitions => {
                    // A new target epoch: revoke what is no longer ours first.
                    let mut keep = Assignment::new();
                    let mut revoke = Assignment::new();
                    for (t, ps) in &m.assigned {
                        for p in ps {
                            let wanted = target.get(t).is_some_and(|s| s.contains(p));
                            let dest = if wanted { &mut keep } else { &mut revoke };
                            dest.entry(*t).or_default().insert(*p);
                        }
                    }
                    if !is_empty_assignment(&revoke) {
                        m.assigned = keep;
                        m.pending_revocation = revoke;
                        m.state = MemberState::UnrevokedPartitions;
                        m.revocation_deadline_ms =
                            Some(now.saturating_add(i64::from(m.rebalance_timeout_ms.max(0))));
                        // The member may already have dropped them (e.g. it owns nothing).
                        continue;
                    }
                    m.previous_member_epoch = m.member_epoch;
                    m.member_epoch = target_epoch;
                    m.state = MemberState::UnreleasedPartitions;
                }
            }
        }
    }

    /// Handles a heartbeat with epoch >= 0 or a leave; the request is already validated
    /// and the group type checked.
    pub(crate) fn heartbeat(
        &mut self,
        now: i64,
        cfg: &GroupConfig,
        rng: &mut SplitMix64,
        req: ConsumerHeartbeat,
        topics: &dyn TopicView,
    ) -> ConsumerHeartbeatResult {
        let epoch = req.member_epoch;
        if epoch == LEAVE_EPOCH || epoch == STATIC_LEAVE_EPOCH {
            return self.leave(now, cfg, req);
        }

        let mut member_id = req.member_id.clone();
        let mut is_join = false;
        // The group epoch moves at most once per heartbeat, whatever changed.
        let mut bump = false;
        if epoch == 0 {
            is_join = true;
            if member_id.is_empty() {
                member_id = rng.kafka_uuid_string();
            }
            if let Some(instance) = &req.instance_id {
                match self.static_members.get(instance).cloned() {
                    Some(old) if old != member_id => {
                        let old_epoch = self.members.get(&old).map(|m| m.member_epoch);
                        if old_epoch != Some(STATIC_LEAVE_EPOCH) && old_epoch.is_some() {
                            return ConsumerHeartbeatResult::error(
                                ErrorCode::UNRELEASED_INSTANCE_ID,
                                format!("Static member {old} with instance id {instance} is still in the group"),
                                &member_id,
                            );
                        }
                        // The new incarnation takes over the old one's assignment.
                        if let Some(mut m) = self.members.remove(&old) {
                            m.member_id = member_id.clone();
                            m.member_epoch = m.previous_member_epoch.max(0);
                            if let Some(t) = self.target.remove(&old) {
                                self.target.insert(member_id.clone(), t);
                            }
                            self.members.insert(member_id.clone(), m);
                        }
                        self.static_members
                            .insert(instance.clone(), member_id.clone());
                    }
                    Some(_) => {}
                    None => {
                        if let Some(m) = self.members.get(&member_id) {
                            if m.instance_id.as_ref() != Some(instance) {
                                return ConsumerHeartbeatResult::error(
                                    ErrorCode::INVALID_REQUEST,
                                    "member id already used by another member",
                                    &member_id,
                                );
                            }
                        }
                    }
                }
            }
            if let Some(m) = self.members.get_mut(&member_id) {
                // A rejoin: the member owns nothing now, whatever we told it before.
                m.assigned.clear();
                m.pending_revocation.clear();
                m.revocation_deadline_ms = None;
                m.state = MemberState::Stable;
                if m.member_epoch == STATIC_LEAVE_EPOCH {
                    m.member_epoch = m.previous_member_epoch.max(0);
                }
                // Force a fresh computation towards the current target.
                if m.member_epoch >= self.assignment_epoch {
                    m.previous_member_epoch = m.member_epoch;
                    m.state = MemberState::UnreleasedPartitions;
                }
            } else {
                if self.members.len() >= cfg.max_group_size {
                    return ConsumerHeartbeatResult::error(
                        ErrorCode::GROUP_MAX_SIZE_REACHED,
                        "The consumer group has reached its maximum capacity",
                        &member_id,
                    );
                }
                let mut m = ConsumerMember::new(member_id.clone());
                m.instance_id = req.instance_id.clone();
                if let Some(i) = &req.instance_id {
                    self.static_members.insert(i.clone(), member_id.clone());
                }
                self.members.insert(member_id.clone(), m);
                bump = true;
            }
        } else {
            let Some(m) = self.members.get(&member_id) else {
                return ConsumerHeartbeatResult::error(
                    ErrorCode::UNKNOWN_MEMBER_ID,
                    format!("Member {member_id} is not a member of group {}", self.id),
                    &member_id,
                );
            };
            if let Some(instance) = &req.instance_id {
                if self.static_members.get(instance) != Some(&member_id) {
                    return ConsumerHeartbeatResult::error(
                        ErrorCode::FENCED_INSTANCE_ID,
                        "instance id is used by another member",
                        &member_id,
                    );
                }
            }
            if epoch > m.member_epoch {
                return ConsumerHeartbeatResult::error(
                    ErrorCode::FENCED_MEMBER_EPOCH,
                    format!(
                        "The consumer group member has a greater member epoch ({epoch}) than the one known by the group coordinator ({})",
                        m.member_epoch
                    ),
                    &member_id,
                );
            }
            if epoch < m.member_epoch {
                let owned_ok = req
                    .topic_partitions
                    .as_ref()
                    .is_none_or(|o| is_subset(&from_topic_partitions(o), &m.assigned));
                if epoch != m.previous_member_epoch || !owned_ok {
                    return ConsumerHeartbeatResult::error(
                        ErrorCode::FENCED_MEMBER_EPOCH,
                        format!(
                            "The consumer group member has a smaller member epoch ({epoch}) than the one known by the group coordinator ({})",
                            m.member_epoch
                        ),
                        &member_id,
                    );
                }
            }
        }

        // Apply the request's changes.
        let m = self.members.get_mut(&member_id).expect("member exists");
        let before = m.assigned.clone();
        let before_epoch = m.member_epoch;
        let mut subscription_changed = bump;
        if req.rebalance_timeout_ms >= 0 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(names) = req.subscribed_topic_names {
            let mut names = names;
            names.sort();
            names.dedup();
            if names != m.subscribed_topic_names {
                m.subscribed_topic_names = names;
                subscription_changed = true;
            }
        }
        if let Some(re) = req.subscribed_topic_regex {
            let re = if re.is_empty() { None } else { Some(re) };
            if re != m.subscribed_topic_regex {
                m.subscribed_topic_regex = re;
                subscription_changed = true;
                self.resolved_against = None;
            }
        }
        if let Some(a) = req.server_assignor {
            let a = if a.is_empty() { None } else { Some(a) };
            if a != m.server_assignor {
                m.server_assignor = a;
                subscription_changed = true;
            }
        }
        if req.rack_id.is_some() && req.rack_id != m.rack_id {
            m.rack_id = req.rack_id;
        }
        if !req.client_id.is_empty() {
            m.client_id = req.client_id;
        }
        if !req.client_host.is_empty() {
            m.client_host = req.client_host;
        }
        m.session_deadline_ms =
            Some(now.saturating_add(i64::from(cfg.consumer_session_timeout_ms)));
        let metadata_changed =
            self.refresh_metadata(&topics.topics(), &|t| topics.regex_may_match(t));
        if subscription_changed || metadata_changed {
            self.bump_epoch();
        }
        self.maybe_compute_target(cfg);

        let owned = req.topic_partitions.as_deref().map(from_topic_partitions);
        let owned = if is_join {
            Some(Assignment::new())
        } else {
            owned
        };
        self.reconcile(now, &member_id, owned.as_ref());

        let m = &self.members[&member_id];
        // The assignment is sent when it changed, and whenever the member reports owning
        // something else (for example because it lost a response, possibly one asking it
        // to revoke partitions).
        let send_assignment = is_join
            || m.assigned != before
            || m.member_epoch != before_epoch
            || owned.as_ref().is_some_and(|o| {
                let mut o = o.clone();
                o.retain(|_, ps| !ps.is_empty());
                let mut a = m.assigned.clone();
                a.retain(|_, ps| !ps.is_empty());
                o != a
            });
        ConsumerHeartbeatResult {
            error: ErrorCode::NONE,
            error_message: None,
            member_id: member_id.clone(),
            member_epoch: m.member_epoch,
            heartbeat_interval_ms: cfg.consumer_heartbeat_interval_ms,
            assignment: send_assignment.then(|| to_topic_partitions(&m.assigned)),
        }
    }

    fn leave(
        &mut self,
        now: i64,
        cfg: &GroupConfig,
        req: ConsumerHeartbeat,
    ) -> ConsumerHeartbeatResult {
        let member_id = req.member_id.clone();
        // A static member may leave by instance id alone.
        let resolved = match (&req.instance_id, self.members.contains_key(&member_id)) {
            (_, true) => Some(member_id.clone()),
            (Some(i), false) => self.static_members.get(i).cloned(),
            (None, false) => None,
        };
        let Some(id) = resolved else {
            return ConsumerHeartbeatResult::error(
                ErrorCode::UNKNOWN_MEMBER_ID,
                format!("Member {member_id} is not a member of group {}", self.id),
                &member_id,
            );
        };
        if let Some(instance) = &req.instance_id {
            if self.static_members.get(instance) != Some(&id) {
                return ConsumerHeartbeatResult::error(
                    ErrorCode::FENCED_INSTANCE_ID,
                    "instance id is used by another member",
                    &member_id,
                );
            }
        }
        if req.member_epoch == STATIC_LEAVE_EPOCH && req.instance_id.is_some() {
            let m = self.members.get_mut(&id).expect("resolved");
            if m.member_epoch != STATIC_LEAVE_EPOCH {
                m.previous_member_epoch = m.member_epoch;
                m.member_epoch = STATIC_LEAVE_EPOCH;
            }
            // The partitions it is revoking are gone with the process.
            m.pending_revocation.clear();
            m.revocation_deadline_ms = None;
            if m.state == MemberState::UnrevokedPartitions {
                m.state = MemberState::Stable;
            }
            m.session_deadline_ms =
                Some(now.saturating_add(i64::from(cfg.consumer_session_timeout_ms)));
        } else {
            self.remove_member(now, cfg, &id);
        }
        ConsumerHeartbeatResult {
            error: ErrorCode::NONE,
            error_message: None,
            member_id: id,
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }

    fn remove_member(&mut self, now: i64, cfg: &GroupConfig, member_id: &str) {
        let Some(m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(i) = &m.instance_id {
            if self.static_members.get(i).map(String::as_str) == Some(member_id) {
                self.static_members.remove(i);
            }
        }
        self.target.remove(member_id);
        // Metadata of topics nobody subscribes to any more is dropped.
        let still: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(ConsumerMember::all_topic_names)
            .collect();
        self.subscription_metadata.retain(|n, _| still.contains(n));
        self.bump_epoch();
        self.maybe_compute_target(cfg);
        if self.members.is_empty() {
            self.state_timestamp_ms = now;
        }
    }

    /// Session and revocation timeouts.
    pub(crate) fn tick(&mut self, now: i64, cfg: &GroupConfig) {
        let session = i64::from(cfg.consumer_session_timeout_ms);
        for m in self.members.values_mut() {
            if m.session_deadline_ms.is_none() {
                m.session_deadline_ms = Some(now.saturating_add(session));
            }
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms.is_some_and(|d| d <= now)
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            self.remove_member(now, cfg, &id);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| {
                [
                    Some(m.session_deadline_ms.unwrap_or(i64::MIN)),
                    m.revocation_deadline_ms,
                ]
            })
            .flatten()
            .min()
    }

    pub(crate) fn to_record(&self) -> ConsumerGroupRecord {
        ConsumerGroupRecord {
            group: self.id.clone(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            state_timestamp_ms: self.state_timestamp_ms,
            subscription_metadata: self
                .subscription_metadata
                .iter()
                .map(|(n, (id, p))| (n.clone(), *id, *p))
                .collect(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberRecord {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    resolved_regex_topics: m.resolved_regex_topics.clone(),
                    server_assignor: m.server_assignor.clone(),
                    member_epoch: m.member_epoch,
                    previous_member_epoch: m.previous_member_epoch,
                    state: m.state.code(),
                    assigned: to_topic_partitions(&m.assigned),
                    pending_revocation: to_topic_partitions(&m.pending_revocation),
                    target: to_topic_partitions(
                        &self.target.get(&m.member_id).cloned().unwrap_or_default(),
                    ),
                })
                .collect(),
        }
    }

    pub(crate) fn from_record(r: &ConsumerGroupRecord) -> Self {
        let mut g = ConsumerGroup::new(&r.group, r.state_timestamp_ms);
        g.group_epoch = r.group_epoch;
        g.assignment_epoch = r.assignment_epoch;
        g.subscription_metadata = r
            .subscription_metadata
            .iter()
            .map(|(n, id, p)| (n.clone(), (*id, *p)))
            .collect();
        for mr in &r.members {
            let mut m = ConsumerMember::new(mr.member_id.clone());
            m.instance_id = mr.instance_id.clone();
            m.rack_id = mr.rack_id.clone();
            m.client_id = mr.client_id.clone();
            m.client_host = mr.client_host.clone();
            m.rebalance_timeout_ms = mr.rebalance_timeout_ms;
            m.subscribed_topic_names = mr.subscribed_topic_names.clone();
            m.subscribed_topic_regex = mr.subscribed_topic_regex.clone();
            m.resolved_regex_topics = mr.resolved_regex_topics.clone();
            m.server_assignor = mr.server_assignor.clone();
            m.member_epoch = mr.member_epoch;
            m.previous_member_epoch = mr.previous_member_epoch;
            m.state = MemberState::from_code(mr.state);
            m.assigned = from_topic_partitions(&mr.assigned);
            m.pending_revocation = from_topic_partitions(&mr.pending_revocation);
            if let Some(i) = &m.instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.target
                .insert(m.member_id.clone(), from_topic_partitions(&mr.target));
            g.members.insert(m.member_id.clone(), m);
        }
        g.persisted = Some(r.clone());
        g
    }

    pub(crate) fn describe(&self) -> ConsumerGroupDescription {
        ConsumerGroupDescription {
            error: ErrorCode::NONE,
            group_id: self.id.clone(),
            state: self.state_name().to_owned(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: String::new(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberDescription {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    assignment: to_topic_partitions(&m.assigned),
                    target_assignment: to_topic_partitions(
                        &self.target.get(&m.member_id).cloned().unwrap_or_default(),
                    ),
                })
                .collect(),
        }
    }

    /// The name of the assignor the group uses now.
    pub(crate) fn assignor_name(&self, cfg: &GroupConfig) -> &'static str {
        self.group_assignor(cfg.consumer_assignor).name()
    }

    /// Every partition a member has been given or is still revoking, with its owner, for
    /// the "no partition owned twice" invariant.
    pub(crate) fn owned_partitions(&self) -> Vec<(String, TopicId, i32)> {
        let mut out = Vec::new();
        for m in self.members.values() {
            for a in [&m.assigned, &m.pending_revocation] {
                for (t, ps) in a {
                    for p in ps {
                        out.push((m.member_id.clone(), *t, *p));
                    }
                }
            }
        }
        out
    }
}
