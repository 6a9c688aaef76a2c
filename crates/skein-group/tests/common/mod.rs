//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use skein_group::subscription::encode_subscription;
use skein_group::*;

pub const SESSION_MS: i32 = 10_000;
pub const REBALANCE_MS: i32 = 30_000;

/// A config with no initial rebalance delay, so single joins complete at once.
pub fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        ..GroupConfig::default()
    }
}

pub fn coordinator() -> Coordinator {
    Coordinator::new_with_seed(cfg(), 42)
}

pub fn sub(topics: &[&str]) -> Bytes {
    Bytes::from(encode_subscription(topics, b""))
}

pub fn join_req(group: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), sub(&["t"]))],
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        require_known_member_id: false,
        supports_skip_assignment: true,
        reason: None,
    }
}

pub fn static_join_req(group: &str, member_id: &str, instance: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_req(group, member_id)
    }
}

pub fn sync_req(group: &str, generation: i32, member_id: &str) -> SyncRequest {
    SyncRequest {
        group_id: group.into(),
        generation_id: generation,
        member_id: member_id.into(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments: vec![],
    }
}

pub fn joins(fx: &[Effect]) -> Vec<(Token, JoinResult)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Join(t, r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect()
}

pub fn syncs(fx: &[Effect]) -> Vec<(Token, SyncResult)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Sync(t, r) => Some((*t, r.clone())),
            _ => None,
        })
        .collect()
}

pub fn records(fx: &[Effect]) -> Vec<GroupRecord> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Persist(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn join_of(fx: &[Effect], token: Token) -> JoinResult {
    let all = joins(fx);
    let found: Vec<_> = all.iter().filter(|(t, _)| *t == token).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one Join for token {token}: {fx:#?}"
    );
    found[0].1.clone()
}

pub fn sync_of(fx: &[Effect], token: Token) -> SyncResult {
    let all = syncs(fx);
    let found: Vec<_> = all.iter().filter(|(t, _)| *t == token).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one Sync for token {token}: {fx:#?}"
    );
    found[0].1.clone()
}

/// Joins a single member into an empty group and syncs it: returns (member id, generation).
pub fn stable_single(c: &mut Coordinator, group: &str, now: i64) -> (String, i32) {
    let fx = c.join_group(now, 1, join_req(group, ""));
    let j = join_of(&fx, 1);
    assert_eq!(j.error, ErrorCode::NONE);
    let mut s = sync_req(group, j.generation_id, &j.member_id);
    s.assignments = vec![(j.member_id.clone(), Bytes::from_static(b"a1"))];
    let fx = c.sync_group(now, 2, s);
    assert_eq!(sync_of(&fx, 2).error, ErrorCode::NONE);
    (j.member_id, j.generation_id)
}

pub fn topic_id(n: u8) -> TopicId {
    let mut id = [0u8; 16];
    id[15] = n;
    id[0] = 0x40;
    id
}
