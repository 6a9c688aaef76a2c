//! The classic group protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup) as a state machine.
//!
//! This follows Kafka's `GroupCoordinator`/`ClassicGroup`, including KIP-345 static
//! membership, KIP-394 MEMBER_ID_REQUIRED, KIP-814 skip-assignment and the pending-sync
//! timeout. Delayed operations of Kafka's purgatory become deadlines that
//! [`ClassicGroup::tick`] fires; responses and records become [`Effect`]s.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::config::GroupConfig;
use crate::error::ErrorCode;
use crate::record::{ClassicGroupRecord, ClassicMemberRecord, GroupRecord};
use crate::rng::SplitMix64;
use crate::subscription::parse_subscribed_topics;
use crate::types::{
    Effect, GroupDescription, JoinMember, JoinRequest, JoinResult, MemberDescription, SyncRequest,
    SyncResult, Token,
};

/// The protocol type of Kafka consumers (as opposed to Connect, Streams' own, ...).
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Kafka's classic group states (Dead groups are removed from the coordinator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl ClassicState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
        }
    }
}

/// Everything a classic-group operation needs besides the group.
pub(crate) struct Ctx<'a> {
    pub(crate) now: i64,
    pub(crate) cfg: &'a GroupConfig,
    pub(crate) rng: &'a mut SplitMix64,
    pub(crate) fx: &'a mut Vec<Effect>,
}

#[derive(Debug, Clone)]
pub(crate) struct ClassicMember {
    pub(crate) member_id: String,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
    pub(crate) join_token: Option<Token>,
    pub(crate) sync_token: Option<Token>,
    /// Joined during the current rebalance and never completed a join (KIP-394).
    is_new: bool,
    /// `None` after replay: the session starts at the next tick.
    session_deadline_ms: Option<i64>,
    /// Join order, like Kafka's insertion-ordered member map.
    seq: u64,
}

impl ClassicMember {
    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|p| self.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Kafka's `hasSatisfiedHeartbeat` for a member whose session deadline has passed.
    fn exempt_from_session_expiry(&self) -> bool {
        !self.is_new && (self.join_token.is_some() || self.sync_token.is_some())
    }
}

/// The delayed join of a PreparingRebalance group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinTimer {
    /// Kafka's `InitialDelayedJoin`: an empty group waits for more members.
    Initial {
        deadline_ms: i64,
        remaining_ms: i64,
        new_member_added: bool,
    },
    /// Kafka's `DelayedJoin`: completes when everyone rejoined or at the rebalance timeout.
    Rebalance { deadline_ms: i64 },
}

#[derive(Debug, Clone)]
pub(crate) struct ClassicGroup {
    pub(crate) id: String,
    pub(crate) state: ClassicState,
    pub(crate) state_timestamp_ms: i64,
    /// `None` for groups that only store offsets (standalone consumers).
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) generation: i32,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, ClassicMember>,
    static_members: BTreeMap<String, String>,
    /// Members given an id with MEMBER_ID_REQUIRED, not yet rejoined: id -> deadline.
    pending_members: BTreeMap<String, i64>,
    /// Members that must send SyncGroup for this generation before `sync_deadline_ms`.
    pending_sync: BTreeSet<String>,
    sync_deadline_ms: Option<i64>,
    join_timer: Option<JoinTimer>,
    next_seq: u64,
    /// The last GroupMetadata record emitted or replayed: what a restart would restore.
    pub(crate) persisted: Option<ClassicGroupRecord>,
}

impl ClassicGroup {
    pub(crate) fn new(id: &str, now: i64) -> Self {
        ClassicGroup {
            id: id.to_owned(),
            state: ClassicState::Empty,
            state_timestamp_ms: now,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            sync_deadline_ms: None,
            join_timer: None,
            next_seq: 0,
            persisted: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state == ClassicState::Empty
    }

    /// Answers every waiting JoinGroup and SyncGroup of the group with `error` (the group is
    /// being unloaded: its coordinator moved).
    pub(crate) fn answer_waiting(mut self, error: ErrorCode, fx: &mut Vec<Effect>) {
        for m in self.members.values_mut() {
            if let Some(t) = m.join_token.take() {
                fx.push(Effect::Join(t, JoinResult::error(error, &m.member_id)));
            }
            if let Some(t) = m.sync_token.take() {
                fx.push(Effect::Sync(t, SyncResult::error(error)));
            }
        }
    }

    /// No members, no pending members: nothing but (maybe) offsets.
    pub(crate) fn has_no_members(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty()
    }

    pub(crate) fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    fn transition(&mut self, state: ClassicState, now: i64) {
        self.state = state;
        self.state_timestamp_ms = now;
    }

    /// Kafka's `ClassicGroup.validateMember`.
    pub(crate) fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                None => return Err(ErrorCode::UNKNOWN_MEMBER_ID),
                Some(existing) if existing != member_id => {
                    return Err(ErrorCode::FENCED_INSTANCE_ID)
                }
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// The protocol every member supports with the most first-preference votes; ties go
    /// to the earliest-joined member's preference order.
    fn select_protocol(&self) -> Option<String> {
        let mut ordered: Vec<&ClassicMember> = self.members.values().collect();
        ordered.sort_by_key(|m| m.seq);
        let first = ordered.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|name| {
                ordered
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &ordered {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for c in &candidates {
            let v = votes.get(c).copied().unwrap_or(0);
            if best.is_none_or(|(_, bv)| v > bv) {
                best = Some((c, v));
            }
        }
        best.map(|(n, _)| n.to_owned())
            .or_else(|| first.protocols.first().map(|(n, _)| n.clone()))
    }

    fn max_rebalance_timeout_ms(&self) -> i64 {
        self.members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    fn member_session_deadline(cx: &Ctx<'_>, m: &ClassicMember) -> i64 {
        if m.is_new {
            cx.now.saturating_add(cx.cfg.new_member_join_timeout_ms)
        } else {
            cx.now.saturating_add(i64::from(m.session_timeout_ms))
        }
    }

    fn refresh_session(&mut self, now: i64, member_id: &str) {
        if let Some(m) = self.members.get_mut(member_id) {
            if !m.is_new {
                m.session_deadline_ms = Some(now.saturating_add(i64::from(m.session_timeout_ms)));
            }
        }
    }

    /// The JoinResult a member gets for the current generation without a rebalance.
    fn current_join_result(&self, member_id: &str, skip_assignment: bool) -> JoinResult {
        let members = if self.is_leader(member_id) {
            self.current_member_metadata()
        } else {
            Vec::new()
        };
        JoinResult {
            error: ErrorCode::NONE,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn current_member_metadata(&self) -> Vec<JoinMember> {
        let mut ordered: Vec<&ClassicMember> = self.members.values().collect();
        ordered.sort_by_key(|m| m.seq);
        ordered
            .into_iter()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(self.protocol_name.as_deref()),
            })
            .collect()
    }

    // ---------------------------------------------------------------- JoinGroup

    /// Handles a JoinGroup whose group id and session timeout are already validated.
    pub(crate) fn join(&mut self, cx: &mut Ctx<'_>, token: Token, req: JoinRequest) {
        if req.member_id.is_empty() {
            self.join_new_member(cx, token, req);
        } else {
            self.join_existing_member(cx, token, req);
        }
    }

    fn accepts_joining_member(&self, cx: &Ctx<'_>, member_id: &str) -> bool {
        if self.members.contains_key(member_id) {
            return true;
        }
        match self.state {
            ClassicState::Empty => true,
            ClassicState::PreparingRebalance => {
                let awaiting = self
                    .members
                    .values()
                    .filter(|m| m.join_token.is_some())
                    .count();
                awaiting < cx.cfg.max_group_size
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                self.members.len() < cx.cfg.max_group_size
            }
        }
    }

    fn join_new_member(&mut self, cx: &mut Ctx<'_>, token: Token, req: JoinRequest) {
        let known_static = req
            .group_instance_id
            .as_deref()
            .and_then(|i| self.static_members.get(i))
            .is_some();
        if !known_static && !self.accepts_joining_member(cx, "") {
            cx.fx.push(Effect::Join(
                token,
                JoinResult::error(ErrorCode::GROUP_MAX_SIZE_REACHED, ""),
            ));
            return;
        }
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            cx.fx.push(Effect::Join(
                token,
                JoinResult::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, ""),
            ));
            return;
        }
        match req.group_instance_id.clone() {
            Some(instance) => {
                let new_id = format!("{instance}-{}", cx.rng.uuid_string());
                match self.static_members.get(&instance).cloned() {
                    Some(old_id) => self.replace_static_member(cx, token, &old_id, new_id, req),
                    None => self.add_member_and_rebalance(cx, token, new_id, req),
                }
            }
            None => {
                let new_id = format!("{}-{}", req.client_id, cx.rng.uuid_string());
                if req.require_known_member_id {
                    let deadline = cx
                        .now
                        .saturating_add(i64::from(req.session_timeout_ms.max(0)));
                    self.pending_members.insert(new_id.clone(), deadline);
                    cx.fx.push(Effect::Join(
                        token,
                        JoinResult::error(ErrorCode::MEMBER_ID_REQUIRED, &new_id),
                    ));
                } else {
                    self.add_member_and_rebalance(cx, token, new_id, req);
                }
            }
        }
    }

    fn join_existing_member(&mut self, cx: &mut Ctx<'_>, token: Token, req: JoinRequest) {
        let member_id = req.member_id.clone();
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            cx.fx.push(Effect::Join(
                token,
                JoinResult::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, &member_id),
            ));
            return;
        }
        if self.pending_members.contains_key(&member_id) {
            if !self.accepts_joining_member(cx, &member_id) {
                cx.fx.push(Effect::Join(
                    token,
                    JoinResult::error(ErrorCode::GROUP_MAX_SIZE_REACHED, &member_id),
                ));
                return;
            }
            self.add_member_and_rebalance(cx, token, member_id, req);
            return;
        }
        if let Err(e) = self.validate_member(&member_id, req.group_instance_id.as_deref()) {
            cx.fx
                .push(Effect::Join(token, JoinResult::error(e, &member_id)));
            return;
        }
        let same_protocols = self.members[&member_id].protocols == req.protocols;
        match self.state {
            ClassicState::PreparingRebalance => {
                self.update_member_and_rebalance(cx, token, req);
            }
            ClassicState::CompletingRebalance => {
                if same_protocols {
                    // The member probably missed its JoinGroup response: resend it.
                    self.refresh_session(cx.now, &member_id);
                    let result = self.current_join_result(&member_id, false);
                    cx.fx.push(Effect::Join(token, result));
                } else {
                    self.update_member_and_rebalance(cx, token, req);
                }
            }
            ClassicState::Stable => {
                if self.is_leader(&member_id) || !same_protocols {
                    // The leader rejoining is how a client asks for a rebalance (for
                    // example after a metadata change).
                    self.update_member_and_rebalance(cx, token, req);
                } else {
                    self.refresh_session(cx.now, &member_id);
                    let mut result = self.current_join_result(&member_id, false);
                    result.members.clear();
                    cx.fx.push(Effect::Join(token, result));
                }
            }
            ClassicState::Empty => {
                cx.fx.push(Effect::Join(
                    token,
                    JoinResult::error(ErrorCode::UNKNOWN_MEMBER_ID, &member_id),
                ));
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        cx: &mut Ctx<'_>,
        token: Token,
        member_id: String,
        req: JoinRequest,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut member = ClassicMember {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id.clone(),
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_token: Some(token),
            sync_token: None,
            is_new: true,
            session_deadline_ms: None,
            seq,
        };
        member.session_deadline_ms = Some(Self::member_session_deadline(cx, &member));
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type);
        }
        if let Some(instance) = &req.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.pending_members.remove(&member_id);
        self.members.insert(member_id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(member_id);
        }
        if let Some(JoinTimer::Initial {
            new_member_added, ..
        }) = &mut self.join_timer
        {
            *new_member_added = true;
        }
        self.maybe_prepare_rebalance(cx);
        self.try_complete_join(cx);
    }

    fn update_member_and_rebalance(&mut self, cx: &mut Ctx<'_>, token: Token, req: JoinRequest) {
        let now = cx.now;
        let member = self
            .members
            .get_mut(&req.member_id)
            .expect("validated member");
        if let Some(old) = member.join_token.replace(token) {
            // A duplicate JoinGroup (the client gave up on the first one).
            cx.fx.push(Effect::Join(
                old,
                JoinResult::error(ErrorCode::REBALANCE_IN_PROGRESS, &req.member_id),
            ));
        }
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        if !member.is_new {
            member.session_deadline_ms =
                Some(now.saturating_add(i64::from(member.session_timeout_ms)));
        }
        self.maybe_prepare_rebalance(cx);
        self.try_complete_join(cx);
    }

    /// KIP-345: a static member rejoining with an unknown member id takes over its old
    /// identity; the old member id is fenced.
    fn replace_static_member(
        &mut self,
        cx: &mut Ctx<'_>,
        token: Token,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
    ) {
        let Some(mut member) = self.members.remove(old_id) else {
            // The static map and the member map disagree: treat it as a fresh member.
            self.add_member_and_rebalance(cx, token, new_id, req);
            return;
        };
        if let Some(t) = member.join_token.take() {
            cx.fx.push(Effect::Join(
                t,
                JoinResult::error(ErrorCode::FENCED_INSTANCE_ID, old_id),
            ));
        }
        if let Some(t) = member.sync_token.take() {
            cx.fx.push(Effect::Sync(
                t,
                SyncResult::error(ErrorCode::FENCED_INSTANCE_ID),
            ));
        }
        member.member_id = new_id.clone();
        member.protocols = req.protocols;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_deadline_ms =
            Some(cx.now.saturating_add(i64::from(member.session_timeout_ms)));
        if let Some(instance) = &req.group_instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if self.is_leader(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        self.members.insert(new_id.clone(), member);

        match self.state {
            ClassicState::Stable => {
                let is_leader = self.is_leader(&new_id);
                let unchanged = self.select_protocol() == self.protocol_name;
                if unchanged {
                    // No rebalance: the member keeps its assignment and gets it back from
                    // SyncGroup. A rejoining leader is told to skip computing one (KIP-814);
                    // one too old to understand that is answered, as Kafka does, with the
                    // old leader id, so it takes itself for a follower and assigns nothing.
                    self.persist(cx);
                    self.refresh_session(cx.now, &new_id);
                    let result = if is_leader && !req.supports_skip_assignment {
                        let mut r = self.current_join_result(&new_id, false);
                        r.leader = old_id.to_owned();
                        r.members = Vec::new();
                        r
                    } else {
                        self.current_join_result(&new_id, is_leader)
                    };
                    cx.fx.push(Effect::Join(token, result));
                } else {
                    self.members.get_mut(&new_id).expect("inserted").join_token = Some(token);
                    self.prepare_rebalance(cx);
                    self.try_complete_join(cx);
                }
            }
            ClassicState::CompletingRebalance => {
                // The leader may be assigning with the old member id: start over.
                self.members.get_mut(&new_id).expect("inserted").join_token = Some(token);
                self.prepare_rebalance(cx);
                self.try_complete_join(cx);
            }
            ClassicState::PreparingRebalance | ClassicState::Empty => {
                self.members.get_mut(&new_id).expect("inserted").join_token = Some(token);
                self.try_complete_join(cx);
            }
        }
    }

    fn maybe_prepare_rebalance(&mut self, cx: &mut Ctx<'_>) {
        if matches!(
            self.state,
            ClassicState::Stable | ClassicState::CompletingRebalance | ClassicState::Empty
        ) {
            self.prepare_rebalance(cx);
        }
    }

    fn prepare_rebalance(&mut self, cx: &mut Ctx<'_>) {
        if self.state == ClassicState::CompletingRebalance {
            // Kafka's resetAndPropagateAssignmentError.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(t) = m.sync_token.take() {
                    cx.fx.push(Effect::Sync(
                        t,
                        SyncResult::error(ErrorCode::REBALANCE_IN_PROGRESS),
                    ));
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        let rebalance_timeout = self.max_rebalance_timeout_ms();
        let delay = cx.cfg.initial_rebalance_delay_ms;
        self.join_timer = if self.state == ClassicState::Empty && delay > 0 {
            Some(JoinTimer::Initial {
                deadline_ms: cx.now.saturating_add(delay),
                remaining_ms: (rebalance_timeout - delay).max(0),
                new_member_added: false,
            })
        } else {
            Some(JoinTimer::Rebalance {
                deadline_ms: cx.now.saturating_add(rebalance_timeout),
            })
        };
        self.transition(ClassicState::PreparingRebalance, cx.now);
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_token.is_some())
    }

    fn try_complete_join(&mut self, cx: &mut Ctx<'_>) {
        if self.state == ClassicState::PreparingRebalance
            && matches!(self.join_timer, Some(JoinTimer::Rebalance { .. }))
            && self.all_members_joined()
        {
            self.complete_join(cx);
        }
    }

    /// Kafka's `onCompleteJoin`: the new generation starts.
    fn complete_join(&mut self, cx: &mut Ctx<'_>) {
        self.join_timer = None;
        // Dynamic members that did not rejoin in time are gone; static ones stay until
        // their session expires.
        let failed: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_token.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in failed {
            self.remove_member_internal(cx, &id);
        }
        let leader_rejoined = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.join_token.is_some());
        if !leader_rejoined {
            let mut ordered: Vec<&ClassicMember> = self.members.values().collect();
            ordered.sort_by_key(|m| (m.join_token.is_none(), m.seq));
            self.leader = ordered.first().map(|m| m.member_id.clone());
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.transition(ClassicState::Empty, cx.now);
            self.persist(cx);
            return;
        }
        self.protocol_name = self.select_protocol();
        self.transition(ClassicState::CompletingRebalance, cx.now);
        let all_members = self.current_member_metadata();
        let now = cx.now;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in &ids {
            let is_leader = self.is_leader(id);
            let m = self.members.get_mut(id).expect("listed");
            if let Some(t) = m.join_token.take() {
                cx.fx.push(Effect::Join(
                    t,
                    JoinResult {
                        error: ErrorCode::NONE,
                        generation_id: self.generation,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        leader: self.leader.clone().unwrap_or_default(),
                        skip_assignment: false,
                        member_id: id.clone(),
                        members: if is_leader {
                            all_members.clone()
                        } else {
                            Vec::new()
                        },
                    },
                ));
            }
            m.is_new = false;
            m.session_deadline_ms = Some(now.saturating_add(i64::from(m.session_timeout_ms)));
        }
        self.pending_sync = ids.into_iter().collect();
        self.sync_deadline_ms = Some(now.saturating_add(self.max_rebalance_timeout_ms()));
    }

    /// Removes a member, answering its waiting requests with UNKNOWN_MEMBER_ID.
    fn remove_member_internal(&mut self, cx: &mut Ctx<'_>, member_id: &str) {
        let Some(mut m) = self.members.remove(member_id) else {
            return;
        };
        if let Some(t) = m.join_token.take() {
            cx.fx.push(Effect::Join(
                t,
                JoinResult::error(ErrorCode::UNKNOWN_MEMBER_ID, member_id),
            ));
        }
        if let Some(t) = m.sync_token.take() {
            cx.fx.push(Effect::Sync(
                t,
                SyncResult::error(ErrorCode::UNKNOWN_MEMBER_ID),
            ));
        }
        if let Some(instance) = &m.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.pending_sync.remove(member_id);
        if self.is_leader(member_id) {
            let mut ordered: Vec<&ClassicMember> = self.members.values().collect();
            ordered.sort_by_key(|m| (m.join_token.is_none(), m.seq));
            self.leader = ordered.first().map(|m| m.member_id.clone());
        }
    }

    /// Kafka's `removeMemberAndUpdateGroup`.
    fn remove_member_and_update(&mut self, cx: &mut Ctx<'_>, member_id: &str) {
        self.remove_member_internal(cx, member_id);
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.prepare_rebalance(cx);
                self.try_complete_join(cx);
            }
            ClassicState::PreparingRebalance => self.try_complete_join(cx),
            ClassicState::Empty => {}
        }
    }

    // ---------------------------------------------------------------- SyncGroup

    pub(crate) fn sync(&mut self, cx: &mut Ctx<'_>, token: Token, req: SyncRequest) {
        if let Err(e) = self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            cx.fx.push(Effect::Sync(token, SyncResult::error(e)));
            return;
        }
        if req.generation_id != self.generation {
            cx.fx.push(Effect::Sync(
                token,
                SyncResult::error(ErrorCode::ILLEGAL_GENERATION),
            ));
            return;
        }
        let type_mismatch = req
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t));
        let name_mismatch = req
            .protocol_name
            .as_ref()
            .is_some_and(|n| self.protocol_name.as_ref() != Some(n));
        if type_mismatch || name_mismatch {
            cx.fx.push(Effect::Sync(
                token,
                SyncResult::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL),
            ));
            return;
        }
        match self.state {
            ClassicState::Empty => {
                cx.fx.push(Effect::Sync(
                    token,
                    SyncResult::error(ErrorCode::UNKNOWN_MEMBER_ID),
                ));
            }
            ClassicState::PreparingRebalance => {
                cx.fx.push(Effect::Sync(
                    token,
                    SyncResult::error(ErrorCode::REBALANCE_IN_PROGRESS),
                ));
            }
            ClassicState::CompletingRebalance => {
                self.refresh_session(cx.now, &req.member_id);
                self.mark_synced(&req.member_id);
                let member = self.members.get_mut(&req.member_id).expect("validated");
                if let Some(old) = member.sync_token.replace(token) {
                    cx.fx.push(Effect::Sync(
                        old,
                        SyncResult::error(ErrorCode::REBALANCE_IN_PROGRESS),
                    ));
                }
                if self.is_leader(&req.member_id) {
                    let mut given: BTreeMap<String, Bytes> = BTreeMap::new();
                    for (id, a) in req.assignments {
                        given.insert(id, a);
                    }
                    for (id, m) in self.members.iter_mut() {
                        m.assignment = given.remove(id).unwrap_or_default();
                    }
                    self.transition(ClassicState::Stable, cx.now);
                    self.persist(cx);
                    let protocol_type = self.protocol_type.clone();
                    let protocol_name = self.protocol_name.clone();
                    for m in self.members.values_mut() {
                        if let Some(t) = m.sync_token.take() {
                            cx.fx.push(Effect::Sync(
                                t,
                                SyncResult {
                                    error: ErrorCode::NONE,
                                    protocol_type: protocol_type.clone(),
                                    protocol_name: protocol_name.clone(),
                                    assignment: m.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
            }
            ClassicState::Stable => {
                self.refresh_session(cx.now, &req.member_id);
                self.mark_synced(&req.member_id);
                let assignment = self.members[&req.member_id].assignment.clone();
                cx.fx.push(Effect::Sync(
                    token,
                    SyncResult {
                        error: ErrorCode::NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment,
                    },
                ));
            }
        }
    }

    fn mark_synced(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    // ---------------------------------------------------------------- Heartbeat

    pub(crate) fn heartbeat(
        &mut self,
        now: i64,
        generation_id: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> ErrorCode {
        if let Err(e) = self.validate_member(member_id, instance_id) {
            return e;
        }
        if generation_id != self.generation {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        match self.state {
            ClassicState::Empty => ErrorCode::UNKNOWN_MEMBER_ID,
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                self.refresh_session(now, member_id);
                ErrorCode::NONE
            }
            ClassicState::PreparingRebalance => {
                self.refresh_session(now, member_id);
                ErrorCode::REBALANCE_IN_PROGRESS
            }
        }
    }

    /// Refreshes the session of a member that committed offsets (as Kafka does).
    pub(crate) fn touch(&mut self, now: i64, member_id: &str) {
        self.refresh_session(now, member_id);
    }

    // ---------------------------------------------------------------- LeaveGroup

    pub(crate) fn leave(
        &mut self,
        cx: &mut Ctx<'_>,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> ErrorCode {
        if let Some(instance) = instance_id {
            let Some(existing) = self.static_members.get(instance).cloned() else {
                return ErrorCode::UNKNOWN_MEMBER_ID;
            };
            if !member_id.is_empty() && existing != member_id {
                return ErrorCode::FENCED_INSTANCE_ID;
            }
            self.remove_member_and_update(cx, &existing);
            return ErrorCode::NONE;
        }
        if self.pending_members.remove(member_id).is_some() {
            self.try_complete_join(cx);
            return ErrorCode::NONE;
        }
        if !self.members.contains_key(member_id) {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        }
        self.remove_member_and_update(cx, member_id);
        ErrorCode::NONE
    }

    // ---------------------------------------------------------------- timers

    /// Fires every deadline that has passed: pending members, sessions, the delayed join
    /// and the pending-sync timeout.
    pub(crate) fn tick(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        let expired_pending: Vec<String> = self
            .pending_members
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired_pending {
            self.pending_members.remove(&id);
            self.try_complete_join(cx);
        }

        // Sessions that start after a replay.
        for m in self.members.values_mut() {
            if m.session_deadline_ms.is_none() {
                m.session_deadline_ms = Some(now.saturating_add(i64::from(m.session_timeout_ms)));
            }
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms.is_some_and(|d| d <= now) && !m.exempt_from_session_expiry()
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            self.remove_member_and_update(cx, &id);
        }

        // Loop: an initial delay may be extended, or completing a join may start a timer
        // that has already passed (never with a positive timeout, but be safe).
        for _ in 0..4 {
            match self.join_timer {
                Some(JoinTimer::Initial {
                    deadline_ms,
                    remaining_ms,
                    new_member_added,
                }) if deadline_ms <= now => {
                    if new_member_added && remaining_ms > 0 {
                        let delay = cx.cfg.initial_rebalance_delay_ms.min(remaining_ms);
                        self.join_timer = Some(JoinTimer::Initial {
                            deadline_ms: now.saturating_add(delay),
                            remaining_ms: (remaining_ms - delay).max(0),
                            new_member_added: false,
                        });
                    } else {
                        self.complete_join(cx);
                    }
                }
                Some(JoinTimer::Rebalance { deadline_ms }) if deadline_ms <= now => {
                    self.complete_join(cx);
                }
                _ => break,
            }
        }

        if let Some(d) = self.sync_deadline_ms {
            if d <= now {
                self.sync_deadline_ms = None;
                if matches!(
                    self.state,
                    ClassicState::CompletingRebalance | ClassicState::Stable
                ) && !self.pending_sync.is_empty()
                {
                    let missing: Vec<String> =
                        std::mem::take(&mut self.pending_sync).into_iter().collect();
                    for id in &missing {
                        self.remove_member_internal(cx, id);
                    }
                    self.prepare_rebalance(cx);
                    self.try_complete_join(cx);
                }
                self.pending_sync.clear();
            }
        }
    }

    /// The earliest deadline `tick` acts on.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut consider = |d: i64| next = Some(next.map_or(d, |n: i64| n.min(d)));
        for d in self.pending_members.values() {
            consider(*d);
        }
        for m in self.members.values() {
            match m.session_deadline_ms {
                None => consider(i64::MIN),
                Some(d) if !m.exempt_from_session_expiry() => consider(d),
                Some(_) => {}
            }
        }
        match self.join_timer {
            Some(JoinTimer::Initial { deadline_ms, .. })
            | Some(JoinTimer::Rebalance { deadline_ms }) => consider(deadline_ms),
            None => {}
        }
        if let Some(d) = self.sync_deadline_ms {
            consider(d);
        }
        next
    }

    // ---------------------------------------------------------------- persistence

    pub(crate) fn to_record(&self) -> ClassicGroupRecord {
        let mut ordered: Vec<&ClassicMember> = self.members.values().collect();
        ordered.sort_by_key(|m| m.seq);
        ClassicGroupRecord {
            group: self.id.clone(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: ordered
                .into_iter()
                .map(|m| ClassicMemberRecord {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    subscription: m.metadata(self.protocol_name.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn persist(&mut self, cx: &mut Ctx<'_>) {
        let record = self.to_record();
        self.persisted = Some(record.clone());
        cx.fx
            .push(Effect::Persist(GroupRecord::GroupMetadata(record)));
    }

    /// Rebuilds a group from its last GroupMetadata record: Stable with its members, or
    /// Empty. Sessions start at the next tick.
    pub(crate) fn from_record(record: &ClassicGroupRecord) -> Self {
        let mut g = ClassicGroup::new(&record.group, record.state_timestamp_ms);
        g.protocol_type = if record.protocol_type.is_empty() && record.generation == 0 {
            None
        } else {
            Some(record.protocol_type.clone())
        };
        g.generation = record.generation;
        g.protocol_name = record.protocol_name.clone();
        g.leader = record.leader.clone();
        for m in &record.members {
            let seq = g.next_seq;
            g.next_seq += 1;
            if let Some(i) = &m.group_instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(
                m.member_id.clone(),
                ClassicMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    protocols: vec![(
                        record.protocol_name.clone().unwrap_or_default(),
                        m.subscription.clone(),
                    )],
                    assignment: m.assignment.clone(),
                    join_token: None,
                    sync_token: None,
                    is_new: false,
                    session_deadline_ms: None,
                    seq,
                },
            );
        }
        g.state = if g.members.is_empty() {
            ClassicState::Empty
        } else {
            ClassicState::Stable
        };
        if g.leader
            .as_ref()
            .is_some_and(|l| !g.members.contains_key(l))
        {
            g.leader = g.members.keys().next().cloned();
        }
        g.persisted = Some(record.clone());
        g
    }

    // ---------------------------------------------------------------- queries

    /// The topics all members subscribe to, when this is a consumer-protocol group whose
    /// every member's subscription parses (Kafka's `subscribedTopics`).
    pub(crate) fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            let (_, meta) = m.protocols.iter().find(|(n, _)| n == protocol)?;
            topics.extend(parse_subscribed_topics(meta)?);
        }
        Some(topics)
    }

    pub(crate) fn describe(&self) -> GroupDescription {
        let stable = self.state == ClassicState::Stable;
        let mut ordered: Vec<&ClassicMember> = self.members.values().collect();
        ordered.sort_by_key(|m| m.seq);
        GroupDescription {
            error: ErrorCode::NONE,
            group_id: self.id.clone(),
            state: self.state.name().to_owned(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable {
                self.protocol_name.clone().unwrap_or_default()
            } else {
                String::new()
            },
            members: ordered
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(self.protocol_name.as_deref())
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        }
    }

    /// Test and simulator access: the pending member ids.
    pub(crate) fn pending_member_ids(&self) -> impl Iterator<Item = &String> {
        self.pending_members.keys()
    }
}
