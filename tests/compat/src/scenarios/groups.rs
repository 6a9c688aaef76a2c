//! Consumer group scenarios: the classic protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup),
//! offsets (OffsetCommit/OffsetFetch/OffsetDelete), group administration (DescribeGroups,
//! ListGroups, DeleteGroups) and KIP-848's ConsumerGroupHeartbeat.

use std::time::Duration;

use anyhow::{ensure, Result};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};
use skein_protocol::messages::consumer_group_describe_request::ConsumerGroupDescribeRequest;
use skein_protocol::messages::consumer_group_heartbeat_request::ConsumerGroupHeartbeatRequest;
use skein_protocol::messages::consumer_group_heartbeat_response::ConsumerGroupHeartbeatResponse;
use skein_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use skein_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use skein_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use skein_protocol::messages::heartbeat_request::HeartbeatRequest;
use skein_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use skein_protocol::messages::join_group_response::JoinGroupResponse;
use skein_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use skein_protocol::messages::list_groups_request::ListGroupsRequest;
use skein_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use skein_protocol::messages::offset_delete_request::{
    OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use skein_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use skein_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};

use super::Scenario;
use crate::{err, present, v, wait_for, Client, Ctx};

pub fn scenarios() -> Vec<Scenario> {
    macro_rules! s {
        ($($name:literal => $f:ident,)*) => { vec![$(Scenario { name: $name, run: $f },)*] };
    }
    s![
        "group.find_coordinator" => find_coordinator,
        "group.join_member_id_required" => join_member_id_required,
        "group.join_sync_heartbeat_describe" => join_sync_heartbeat,
        "group.heartbeat_unknown_member" => heartbeat_unknown_member,
        "group.heartbeat_wrong_generation" => heartbeat_wrong_generation,
        "group.heartbeat_unknown_group" => heartbeat_unknown_group,
        "group.sync_unknown_member" => sync_unknown_member,
        "group.leave_then_describe" => leave_then_describe,
        "group.leave_unknown_member" => leave_unknown_member,
        "group.static_member_replaced" => static_member_replaced,
        "group.join_invalid_session_timeout" => join_invalid_session_timeout,
        "group.join_inconsistent_protocol" => join_inconsistent_protocol,
        "group.describe_unknown" => describe_unknown,
        "group.describe_empty_with_offsets" => describe_empty_with_offsets,
        "group.list_after_last_member_leaves" => list_after_last_leave,
        "group.list_states_filter" => list_states_filter,
        "group.delete_non_empty" => delete_non_empty,
        "group.delete_unknown" => delete_unknown,
        "group.delete_empty_then_commit_again" => delete_empty_then_commit,
        "offsets.commit_fetch_standalone" => commit_fetch_standalone,
        "offsets.fetch_unknown_group" => fetch_unknown_group,
        "offsets.fetch_all_topics" => fetch_all_topics,
        "offsets.commit_unknown_topic" => commit_unknown_topic,
        "offsets.commit_wrong_generation" => commit_wrong_generation,
        "offsets.commit_unknown_member" => commit_unknown_member,
        "offsets.commit_by_member" => commit_by_member,
        "offsets.delete_subscribed_topic" => offset_delete_subscribed,
        "offsets.delete_empty_group" => offset_delete_empty,
        "offsets.delete_unknown_group" => offset_delete_unknown_group,
        "group.join_empty_group_id" => join_empty_group_id,
        "group.heartbeat_during_rebalance" => heartbeat_during_rebalance,
        "group.sync_wrong_protocol_name" => sync_wrong_protocol,
        "group.find_coordinator_transaction" => find_coordinator_transaction,
        "offsets.commit_metadata_too_large" => commit_metadata_too_large,
        "consumer_group.join_and_assignment" => cg_join,
        "consumer_group.leave" => cg_leave,
        "consumer_group.fenced_epoch" => cg_fenced,
        "consumer_group.unknown_member" => cg_unknown_member,
        "consumer_group.join_without_subscription" => cg_missing_subscription,
        "consumer_group.describe" => cg_describe,
        "consumer_group.classic_describe_and_list" => cg_classic_views,
    ]
}

/// ConsumerProtocolSubscription v0: topics, no user data.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

/// ConsumerProtocolAssignment v0: one topic's partitions, no user data.
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

fn join_request(
    group: &str,
    member_id: &str,
    instance: Option<&str>,
    protocol_type: &str,
    topics: &[&str],
) -> JoinGroupRequest {
    JoinGroupRequest {
        group_id: group.to_owned(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        member_id: member_id.to_owned(),
        group_instance_id: instance.map(str::to_owned),
        protocol_type: protocol_type.to_owned(),
        protocols: vec![JoinGroupRequestProtocol {
            name: "range".into(),
            metadata: subscription(topics),
            ..Default::default()
        }],
        reason: None,
        ..Default::default()
    }
}

fn join(c: &mut Client, req: JoinGroupRequest) -> Result<JoinGroupResponse> {
    c.send(v::JOIN_GROUP, req)
}

/// A member that has joined (after MEMBER_ID_REQUIRED) and synced: the group is Stable.
struct Member {
    id: String,
    generation: i32,
}

fn join_and_sync(c: &mut Client, group: &str, topic: &str) -> Result<Member> {
    let first = join(c, join_request(group, "", None, "consumer", &[topic]))?;
    ensure!(
        first.error_code == 79,
        "first join: error {}",
        first.error_code
    );
    let second = join(
        c,
        join_request(group, &first.member_id, None, "consumer", &[topic]),
    )?;
    ensure!(
        second.error_code == 0,
        "second join: error {}",
        second.error_code
    );
    let s = sync(
        c,
        group,
        &second.member_id,
        second.generation_id,
        true,
        topic,
    )?;
    ensure!(s.0 == 0, "sync: error {}", s.0);
    Ok(Member {
        id: second.member_id,
        generation: second.generation_id,
    })
}

fn sync(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    leader: bool,
    topic: &str,
) -> Result<(i16, Bytes)> {
    let r = c.send(
        v::SYNC_GROUP,
        SyncGroupRequest {
            group_id: group.to_owned(),
            generation_id: generation,
            member_id: member.to_owned(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: if leader {
                vec![SyncGroupRequestAssignment {
                    member_id: member.to_owned(),
                    assignment: assignment(topic, &[0, 1]),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            ..Default::default()
        },
    )?;
    Ok((r.error_code, r.assignment))
}

fn heartbeat(
    c: &mut Client,
    group: &str,
    member: &str,
    generation: i32,
    instance: Option<&str>,
) -> Result<Value> {
    let r = c.send(
        v::HEARTBEAT,
        HeartbeatRequest {
            group_id: group.to_owned(),
            generation_id: generation,
            member_id: member.to_owned(),
            group_instance_id: instance.map(str::to_owned),
            ..Default::default()
        },
    )?;
    Ok(err(r.error_code))
}

fn leave(c: &mut Client, group: &str, members: &[(&str, Option<&str>)]) -> Result<Value> {
    let r = c.send(
        v::LEAVE_GROUP,
        LeaveGroupRequest {
            group_id: group.to_owned(),
            members: members
                .iter()
                .map(|(m, i)| MemberIdentity {
                    member_id: (*m).to_owned(),
                    group_instance_id: i.map(str::to_owned),
                    reason: None,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    )?;
    Ok(
        json!({"error": err(r.error_code), "members": r.members.iter().map(|m| err(m.error_code)).collect::<Vec<_>>()}),
    )
}

fn describe_group(c: &mut Client, group: &str) -> Result<Value> {
    let r = c.send(
        v::DESCRIBE_GROUPS,
        DescribeGroupsRequest {
            groups: vec![group.to_owned()],
            include_authorized_operations: false,
            ..Default::default()
        },
    )?;
    let g = &r.groups[0];
    Ok(json!({
        "error": err(g.error_code),
        "state": g.group_state,
        "protocol_type": g.protocol_type,
        "protocol": g.protocol_data,
        "members": g.members.len(),
        "member_assignments_nonempty": g.members.iter().all(|m| !m.member_assignment.is_empty()),
    }))
}

fn list_groups(c: &mut Client, states: &[&str], types: &[&str], prefix: &str) -> Result<Value> {
    let r = c.send(
        v::LIST_GROUPS,
        ListGroupsRequest {
            states_filter: states.iter().map(|s| (*s).to_owned()).collect(),
            types_filter: types.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        },
    )?;
    let mut ours: Vec<Value> = r
        .groups
        .iter()
        .filter(|g| g.group_id.starts_with(prefix))
        .map(|g| json!({"group": g.group_id, "state": g.group_state, "protocol_type": g.protocol_type, "type": g.group_type}))
        .collect();
    ours.sort_by_key(|g| g["group"].as_str().unwrap_or_default().to_owned());
    Ok(json!({"error": err(r.error_code), "groups": ours}))
}

fn commit(
    c: &mut Client,
    group: &str,
    generation: i32,
    member: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Value> {
    let r = c.send(
        v::OFFSET_COMMIT,
        OffsetCommitRequest {
            group_id: group.to_owned(),
            generation_id_or_member_epoch: generation,
            member_id: member.to_owned(),
            group_instance_id: None,
            retention_time_ms: -1,
            topics: vec![OffsetCommitRequestTopic {
                name: topic.to_owned(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: partition,
                    committed_offset: offset,
                    committed_leader_epoch: -1,
                    commit_timestamp: -1,
                    committed_metadata: Some("meta-data".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| p.error_code)
        .unwrap_or(-100);
    Ok(err(p))
}

fn fetch_offsets(c: &mut Client, group: &str, topics: Option<&[(&str, &[i32])]>) -> Result<Value> {
    let r = c.send(
        v::OFFSET_FETCH,
        OffsetFetchRequest {
            groups: vec![OffsetFetchRequestGroup {
                group_id: group.to_owned(),
                member_id: None,
                member_epoch: -1,
                topics: topics.map(|ts| {
                    ts.iter()
                        .map(|(t, ps)| OffsetFetchRequestTopics {
                            name: (*t).to_owned(),
                            partition_indexes: ps.to_vec(),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }],
            require_stable: false,
            ..Default::default()
        },
    )?;
    let g = &r.groups[0];
    let mut parts = vec![];
    for t in &g.topics {
        for p in &t.partitions {
            parts.push(json!({"topic": t.name, "partition": p.partition_index, "offset": p.committed_offset, "metadata": p.metadata, "error": err(p.error_code)}));
        }
    }
    parts.sort_by_key(|p| {
        (
            p["topic"].as_str().unwrap_or_default().to_owned(),
            p["partition"].as_i64(),
        )
    });
    Ok(json!({"error": err(g.error_code), "partitions": parts}))
}

fn offset_delete(c: &mut Client, group: &str, topic: &str, partition: i32) -> Result<Value> {
    let r = c.send(
        0,
        OffsetDeleteRequest {
            group_id: group.to_owned(),
            topics: vec![OffsetDeleteRequestTopic {
                name: topic.to_owned(),
                partitions: vec![OffsetDeleteRequestPartition {
                    partition_index: partition,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map(|p| err(p.error_code));
    Ok(json!({"error": err(r.error_code), "partition": p}))
}

fn delete_groups(c: &mut Client, groups: &[&str]) -> Result<Value> {
    let r = c.send(
        v::DELETE_GROUPS,
        DeleteGroupsRequest {
            groups_names: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Default::default()
        },
    )?;
    Ok(json!(r
        .results
        .iter()
        .map(|g| err(g.error_code))
        .collect::<Vec<_>>()))
}

fn setup(ctx: &Ctx) -> Result<(Client, String, String)> {
    let mut c = ctx.client()?;
    let topic = ctx.name("t");
    ctx.create_topic(&mut c, &topic, 2, &[])?;
    let group = ctx.name("g");
    wait_coordinator(&mut c, &group)?;
    Ok((c, group, topic))
}

/// Waits until the group's coordinator is ready: right after start, Kafka answers
/// COORDINATOR_NOT_AVAILABLE while it creates and loads __consumer_offsets, and clients retry.
pub fn wait_coordinator(c: &mut Client, group: &str) -> Result<()> {
    wait_for("group coordinator", Duration::from_secs(90), || {
        let r = c.send(
            v::FIND_COORDINATOR,
            FindCoordinatorRequest {
                key: String::new(),
                key_type: 0,
                coordinator_keys: vec![group.to_owned()],
                ..Default::default()
            },
        )?;
        Ok((r.coordinators[0].error_code == 0).then_some(()))
    })
}

fn find_coordinator(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    wait_coordinator(&mut c, &ctx.name("warm"))?;
    let m = ctx.metadata(&mut c, Some(&[]), false)?;
    let r = c.send(
        v::FIND_COORDINATOR,
        FindCoordinatorRequest {
            key: String::new(),
            key_type: 0,
            coordinator_keys: vec![ctx.name("g")],
            ..Default::default()
        },
    )?;
    let co = &r.coordinators[0];
    let old = c.send(
        2,
        FindCoordinatorRequest {
            key: ctx.name("g"),
            key_type: 0,
            ..Default::default()
        },
    )?;
    Ok(json!({
        "error": err(co.error_code),
        "is_the_broker": co.node_id == m.brokers[0].node_id && co.port == m.brokers[0].port,
        "v2_error": err(old.error_code),
        "v2_is_the_broker": old.node_id == m.brokers[0].node_id,
    }))
}

fn join_member_id_required(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let r = join(&mut c, join_request(&g, "", None, "consumer", &[&t]))?;
    Ok(
        json!({"error": err(r.error_code), "member_id_given": !r.member_id.is_empty(), "generation": r.generation_id}),
    )
}

fn join_sync_heartbeat(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let first = join(&mut c, join_request(&g, "", None, "consumer", &[&t]))?;
    let second = join(
        &mut c,
        join_request(&g, &first.member_id, None, "consumer", &[&t]),
    )?;
    let (serr, got) = sync(
        &mut c,
        &g,
        &second.member_id,
        second.generation_id,
        true,
        &t,
    )?;
    let hb = heartbeat(&mut c, &g, &second.member_id, second.generation_id, None)?;
    Ok(json!({
        "join": err(second.error_code),
        "generation": second.generation_id,
        "protocol_type": second.protocol_type,
        "protocol": second.protocol_name,
        "leader_is_self": second.leader == second.member_id,
        "members_seen_by_leader": second.members.len(),
        "member_metadata_relayed": second.members.first().map(|m| m.metadata == subscription(&[&t])),
        "sync": err(serr),
        "assignment_relayed": got == assignment(&t, &[0, 1]),
        "heartbeat": hb,
        "describe": describe_group(&mut c, &g)?,
    }))
}

fn heartbeat_unknown_member(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    Ok(json!({"heartbeat": heartbeat(&mut c, &g, "no-such-member", m.generation, None)?}))
}

fn heartbeat_wrong_generation(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    Ok(json!({
        "generation_plus_1": heartbeat(&mut c, &g, &m.id, m.generation + 1, None)?,
        "generation_minus_1": heartbeat(&mut c, &g, &m.id, m.generation - 1, None)?,
        "still_ok": heartbeat(&mut c, &g, &m.id, m.generation, None)?,
    }))
}

fn heartbeat_unknown_group(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    wait_coordinator(&mut c, &ctx.name("g"))?;
    Ok(json!({"heartbeat": heartbeat(&mut c, &ctx.name("g"), "m", 1, None)?}))
}

fn sync_unknown_member(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    let (e, _) = sync(&mut c, &g, "no-such-member", m.generation, false, &t)?;
    Ok(json!({"sync": err(e)}))
}

fn leave_then_describe(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    // With a committed offset the emptied group stays (see list_after_last_member_leaves
    // for one without).
    commit(&mut c, &g, m.generation, &m.id, &t, 0, 1)?;
    let l = leave(&mut c, &g, &[(&m.id, None)])?;
    Ok(
        json!({"leave": l, "describe": describe_group(&mut c, &g)?, "heartbeat_after": heartbeat(&mut c, &g, &m.id, m.generation, None)?}),
    )
}

fn leave_unknown_member(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    let l = leave(&mut c, &g, &[("no-such-member", None), (&m.id, None)])?;
    let unknown_group = leave(&mut c, &ctx.name("other"), &[("x", None)])?;
    Ok(json!({"leave": l, "unknown_group": unknown_group}))
}

fn static_member_replaced(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let a = join(
        &mut c,
        join_request(&g, "", Some("instance-1"), "consumer", &[&t]),
    )?;
    let (sa, _) = sync_static(&mut c, &g, &a, &t)?;
    // The same instance joins again without its member id: it replaces the old member.
    let b = join(
        &mut c,
        join_request(&g, "", Some("instance-1"), "consumer", &[&t]),
    )?;
    let old_hb = heartbeat(
        &mut c,
        &g,
        &a.member_id,
        a.generation_id,
        Some("instance-1"),
    )?;
    let new_hb = heartbeat(
        &mut c,
        &g,
        &b.member_id,
        b.generation_id,
        Some("instance-1"),
    )?;
    let d = describe_group(&mut c, &g)?;
    Ok(json!({
        "first_join": err(a.error_code),
        "first_sync": err(sa),
        "rejoin": err(b.error_code),
        "new_member_id": a.member_id != b.member_id,
        "same_generation": a.generation_id == b.generation_id,
        "old_member_heartbeat": old_hb,
        "new_member_heartbeat": new_hb,
        "describe": d,
    }))
}

fn sync_static(c: &mut Client, g: &str, j: &JoinGroupResponse, t: &str) -> Result<(i16, Bytes)> {
    let r = c.send(
        v::SYNC_GROUP,
        SyncGroupRequest {
            group_id: g.to_owned(),
            generation_id: j.generation_id,
            member_id: j.member_id.clone(),
            group_instance_id: Some("instance-1".into()),
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: vec![SyncGroupRequestAssignment {
                member_id: j.member_id.clone(),
                assignment: assignment(t, &[0, 1]),
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    Ok((r.error_code, r.assignment))
}

fn join_invalid_session_timeout(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let mut low = join_request(&g, "", None, "consumer", &[&t]);
    low.session_timeout_ms = 1;
    let mut high = join_request(&g, "", None, "consumer", &[&t]);
    high.session_timeout_ms = 1_000_000_000;
    Ok(
        json!({"1ms": err(join(&mut c, low)?.error_code), "1e9ms": err(join(&mut c, high)?.error_code)}),
    )
}

fn join_inconsistent_protocol(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    join_and_sync(&mut c, &g, &t)?;
    let mut d = ctx.client()?;
    let other_type = join(&mut d, join_request(&g, "", None, "connect", &[&t]))?;
    let mut other_name = join_request(&g, "", None, "consumer", &[&t]);
    other_name.protocols[0].name = "roundrobin".into();
    let mut e = ctx.client()?;
    let other_name = join(&mut e, other_name)?;
    Ok(
        json!({"other_protocol_type": err(other_type.error_code), "no_common_protocol": err(other_name.error_code)}),
    )
}

fn describe_unknown(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    wait_coordinator(&mut c, &ctx.name("g"))?;
    describe_group(&mut c, &ctx.name("g"))
}

fn describe_empty_with_offsets(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let cm = commit(&mut c, &g, -1, "", &t, 0, 5)?;
    Ok(
        json!({"commit": cm, "describe": describe_group(&mut c, &g)?, "list": list_groups(&mut c, &[], &[], &ctx.prefix)?}),
    )
}

fn list_after_last_leave(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    let while_stable = list_groups(&mut c, &[], &[], &ctx.prefix)?;
    leave(&mut c, &g, &[(&m.id, None)])?;
    // The group has no members and no committed offsets now. Is it still listed a moment
    // later (polled, so a broker that drops it is seen doing so at once)?
    let after_leave = listed_until_gone(&mut c, &ctx.prefix)?;
    Ok(json!({
        "while_stable": while_stable,
        "listed_up_to_2s_after_leave": after_leave,
        "describe_after_leave": describe_group(&mut c, &g)?,
        "delete_groups_after_leave": delete_groups(&mut c, &[&g])?,
    }))
}

/// ListGroups (this scenario's groups), polled until none is listed or 2 s have passed
/// (short, so that Kafka's periodic cleanup, every 10 minutes, rarely falls inside).
fn listed_until_gone(c: &mut Client, prefix: &str) -> Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let l = list_groups(c, &[], &[], prefix)?;
        if l["groups"].as_array().is_some_and(|g| g.is_empty())
            || std::time::Instant::now() > deadline
        {
            return Ok(l);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn list_states_filter(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    join_and_sync(&mut c, &g, &t)?;
    let empty = ctx.name("h");
    commit(&mut c, &empty, -1, "", &t, 0, 1)?;
    Ok(json!({
        "stable": list_groups(&mut c, &["Stable"], &[], &ctx.prefix)?,
        "empty": list_groups(&mut c, &["Empty"], &[], &ctx.prefix)?,
        "classic_type": list_groups(&mut c, &[], &["classic"], &ctx.prefix)?,
        "consumer_type": list_groups(&mut c, &[], &["consumer"], &ctx.prefix)?,
    }))
}

fn delete_non_empty(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    join_and_sync(&mut c, &g, &t)?;
    Ok(
        json!({"delete": delete_groups(&mut c, &[&g])?, "describe_after": describe_group(&mut c, &g)?}),
    )
}

fn delete_unknown(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    wait_coordinator(&mut c, &ctx.name("g"))?;
    delete_groups(&mut c, &[&ctx.name("g")])
}

fn delete_empty_then_commit(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    commit(&mut c, &g, -1, "", &t, 0, 3)?;
    let d = delete_groups(&mut c, &[&g])?;
    let after = fetch_offsets(&mut c, &g, Some(&[(&t, &[0])]))?;
    let again = commit(&mut c, &g, -1, "", &t, 0, 4)?;
    Ok(
        json!({"delete": d, "offsets_after_delete": after, "describe_after_delete": describe_group(&mut c, &g)?, "commit_again": again, "offsets_now": fetch_offsets(&mut c, &g, Some(&[(&t, &[0])]))?}),
    )
}

fn commit_fetch_standalone(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let a = commit(&mut c, &g, -1, "", &t, 0, 42)?;
    let b = commit(&mut c, &g, -1, "", &t, 1, 7)?;
    Ok(json!({"commit": [a, b], "fetch": fetch_offsets(&mut c, &g, Some(&[(&t, &[0, 1])]))?}))
}

fn fetch_unknown_group(ctx: &Ctx) -> Result<Value> {
    let (mut c, _, t) = setup(ctx)?;
    Ok(json!({
        "listed": fetch_offsets(&mut c, &ctx.name("nope"), Some(&[(&t, &[0])]))?,
        "all": fetch_offsets(&mut c, &ctx.name("nope"), None)?,
    }))
}

fn fetch_all_topics(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    commit(&mut c, &g, -1, "", &t, 1, 9)?;
    let t2 = ctx.name("u");
    ctx.create_topic(&mut c, &t2, 1, &[])?;
    commit(&mut c, &g, -1, "", &t2, 0, 1)?;
    Ok(
        json!({"all": fetch_offsets(&mut c, &g, None)?, "unknown_topic": fetch_offsets(&mut c, &g, Some(&[(&ctx.name("nope"), &[0])]))?}),
    )
}

fn commit_unknown_topic(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    Ok(json!({
        "unknown_topic": commit(&mut c, &g, -1, "", &ctx.name("nope"), 0, 1)?,
        "unknown_partition": commit(&mut c, &g, -1, "", &t, 9, 1)?,
    }))
}

fn commit_wrong_generation(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    Ok(json!({
        "generation_plus_1": commit(&mut c, &g, m.generation + 1, &m.id, &t, 0, 1)?,
        "standalone_on_live_group": commit(&mut c, &g, -1, "", &t, 0, 1)?,
    }))
}

fn commit_unknown_member(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    Ok(json!({"unknown_member": commit(&mut c, &g, m.generation, "no-such-member", &t, 0, 1)?}))
}

fn commit_by_member(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    let r = commit(&mut c, &g, m.generation, &m.id, &t, 1, 11)?;
    Ok(json!({"commit": r, "fetch": fetch_offsets(&mut c, &g, Some(&[(&t, &[0, 1])]))?}))
}

fn offset_delete_subscribed(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    commit(&mut c, &g, m.generation, &m.id, &t, 0, 1)?;
    Ok(
        json!({"delete": offset_delete(&mut c, &g, &t, 0)?, "fetch": fetch_offsets(&mut c, &g, Some(&[(&t, &[0])]))?}),
    )
}

fn offset_delete_empty(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    commit(&mut c, &g, -1, "", &t, 0, 1)?;
    commit(&mut c, &g, -1, "", &t, 1, 2)?;
    Ok(
        json!({"delete": offset_delete(&mut c, &g, &t, 0)?, "fetch": fetch_offsets(&mut c, &g, Some(&[(&t, &[0, 1])]))?}),
    )
}

fn offset_delete_unknown_group(ctx: &Ctx) -> Result<Value> {
    let (mut c, _, t) = setup(ctx)?;
    offset_delete(&mut c, &ctx.name("nope"), &t, 0)
}

fn cgh(
    c: &mut Client,
    req: ConsumerGroupHeartbeatRequest,
) -> Result<ConsumerGroupHeartbeatResponse> {
    c.send(v::CONSUMER_GROUP_HEARTBEAT, req)
}

fn cg_join_request(group: &str, topic: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest {
        group_id: group.to_owned(),
        member_id: String::new(),
        member_epoch: 0,
        instance_id: None,
        rack_id: None,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(vec![topic.to_owned()]),
        subscribed_topic_regex: None,
        server_assignor: None,
        topic_partitions: Some(vec![]),
        ..Default::default()
    }
}

/// Joins with KIP-848 and heartbeats until the member owns every partition of `topic`.
fn cg_member(c: &mut Client, group: &str, topic: &str) -> Result<(String, i32, usize, i32)> {
    let r = cgh(c, cg_join_request(group, topic))?;
    ensure!(r.error_code == 0, "join: error {}", r.error_code);
    let member = r.member_id.clone().unwrap_or_default();
    let mut epoch = r.member_epoch;
    let interval = r.heartbeat_interval_ms;
    let mut owned = r
        .assignment
        .as_ref()
        .map(|a| a.topic_partitions.iter().map(|t| t.partitions.len()).sum())
        .unwrap_or(0);
    let owned = wait_for("assignment", Duration::from_secs(30), || {
        if owned == 2 {
            return Ok(Some(owned));
        }
        let r = cgh(
            c,
            ConsumerGroupHeartbeatRequest {
                group_id: group.to_owned(),
                member_id: member.clone(),
                member_epoch: epoch,
                ..Default::default()
            },
        )?;
        ensure!(r.error_code == 0, "heartbeat: error {}", r.error_code);
        epoch = r.member_epoch;
        if let Some(a) = &r.assignment {
            owned = a.topic_partitions.iter().map(|t| t.partitions.len()).sum();
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(None)
    })?;
    Ok((member, epoch, owned, interval))
}

fn cg_join(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let r = cgh(&mut c, cg_join_request(&g, &t))?;
    let (_, epoch, owned, _) = cg_member(&mut c, &ctx.name("g2"), &t)?;
    Ok(json!({
        "join": err(r.error_code),
        "member_id_given": r.member_id.as_deref().is_some_and(|m| !m.is_empty()),
        "first_epoch": r.member_epoch,
        "heartbeat_interval_ms": r.heartbeat_interval_ms,
        // Kafka may bump the group epoch again when it sees the new topic's metadata.
        "epoch_when_assigned_positive": epoch >= 1,
        "partitions_owned": owned,
    }))
}

fn cg_leave(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let (member, _, _, _) = cg_member(&mut c, &g, &t)?;
    let r = cgh(
        &mut c,
        ConsumerGroupHeartbeatRequest {
            group_id: g.clone(),
            member_id: member,
            member_epoch: -1,
            ..Default::default()
        },
    )?;
    // No member and no offsets: is the group still there a moment later (polled)?
    let list = listed_until_gone(&mut c, &ctx.prefix)?;
    Ok(
        json!({"leave": err(r.error_code), "epoch": r.member_epoch, "listed_up_to_2s_after_leave": list, "describe_then": cg_describe_one(&mut c, &g)?}),
    )
}

fn cg_fenced(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let (member, epoch, _, _) = cg_member(&mut c, &g, &t)?;
    let ahead = cgh(
        &mut c,
        ConsumerGroupHeartbeatRequest {
            group_id: g.clone(),
            member_id: member.clone(),
            member_epoch: epoch + 5,
            ..Default::default()
        },
    )?;
    Ok(json!({"epoch_ahead": err(ahead.error_code), "message": present(&ahead.error_message)}))
}

fn cg_unknown_member(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    cg_member(&mut c, &g, &t)?;
    let r = cgh(
        &mut c,
        ConsumerGroupHeartbeatRequest {
            group_id: g.clone(),
            member_id: "no-such-member".into(),
            member_epoch: 1,
            ..Default::default()
        },
    )?;
    let r2 = cgh(
        &mut c,
        ConsumerGroupHeartbeatRequest {
            group_id: ctx.name("nope"),
            member_id: "no-such-member".into(),
            member_epoch: 1,
            ..Default::default()
        },
    )?;
    let r3 = cgh(
        &mut c,
        ConsumerGroupHeartbeatRequest {
            group_id: ctx.name("nope"),
            member_id: "no-such-member".into(),
            member_epoch: -1,
            ..Default::default()
        },
    )?;
    Ok(
        json!({"existing_group": err(r.error_code), "unknown_group": err(r2.error_code), "leave_unknown_group": err(r3.error_code)}),
    )
}

fn cg_missing_subscription(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let mut req = cg_join_request(&g, &t);
    req.subscribed_topic_names = None;
    let no_sub = cgh(&mut c, req)?;
    let mut req = cg_join_request(&g, &t);
    req.rebalance_timeout_ms = -1;
    let no_timeout = cgh(&mut c, req)?;
    let mut req = cg_join_request(&g, &t);
    req.server_assignor = Some("no-such-assignor".into());
    let bad_assignor = cgh(&mut c, req)?;
    Ok(
        json!({"no_subscription": err(no_sub.error_code), "no_rebalance_timeout": err(no_timeout.error_code), "unknown_assignor": err(bad_assignor.error_code)}),
    )
}

fn cg_describe_one(c: &mut Client, g: &str) -> Result<Value> {
    let r = c.send(
        0,
        ConsumerGroupDescribeRequest {
            group_ids: vec![g.to_owned()],
            include_authorized_operations: false,
            ..Default::default()
        },
    )?;
    let d = &r.groups[0];
    Ok(json!({
        "error": err(d.error_code),
        "state": d.group_state,
        "members": d.members.len(),
        "assigned_partitions": d.members.iter().map(|m| m.assignment.topic_partitions.iter().map(|t| t.partitions.len()).sum::<usize>()).sum::<usize>(),
        "subscriptions": d.members.iter().map(|m| m.subscribed_topic_names.len()).collect::<Vec<_>>(),
    }))
}

fn cg_describe(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    cg_member(&mut c, &g, &t)?;
    let d = cg_describe_one(&mut c, &g)?;
    let r = c.send(
        0,
        ConsumerGroupDescribeRequest {
            group_ids: vec![g.clone()],
            include_authorized_operations: false,
            ..Default::default()
        },
    )?;
    Ok(
        json!({"describe": d, "assignor": r.groups[0].assignor_name, "unknown": cg_describe_one(&mut c, &ctx.name("nope"))?}),
    )
}

fn cg_classic_views(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    cg_member(&mut c, &g, &t)?;
    Ok(json!({
        "describe_groups": describe_group(&mut c, &g)?,
        "list_groups": list_groups(&mut c, &[], &[], &ctx.prefix)?,
    }))
}

fn join_empty_group_id(ctx: &Ctx) -> Result<Value> {
    let (mut c, _, t) = setup(ctx)?;
    let r = join(&mut c, join_request("", "", None, "consumer", &[&t]))?;
    Ok(json!({"join": err(r.error_code)}))
}

fn heartbeat_during_rebalance(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let m = join_and_sync(&mut c, &g, &t)?;
    // A second member's join starts a rebalance (its JoinGroup is held until the first
    // member rejoins, so it is sent on its own connection and not waited for).
    let mut d = ctx.client()?;
    let first = join(&mut d, join_request(&g, "", None, "consumer", &[&t]))?;
    let second = first.member_id.clone();
    d.send_without_reply(
        v::JOIN_GROUP,
        join_request(&g, &second, None, "consumer", &[&t]),
    )?;
    let hb = wait_for("REBALANCE_IN_PROGRESS", Duration::from_secs(30), || {
        let r = heartbeat(&mut c, &g, &m.id, m.generation, None)?;
        Ok((r != json!("NONE")).then_some(r))
    })?;
    let state = describe_group(&mut c, &g)?["state"].clone();
    Ok(json!({"second_member_first_join": err(first.error_code), "heartbeat": hb, "state": state}))
}

fn sync_wrong_protocol(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let first = join(&mut c, join_request(&g, "", None, "consumer", &[&t]))?;
    let j = join(
        &mut c,
        join_request(&g, &first.member_id, None, "consumer", &[&t]),
    )?;
    let r = c.send(
        v::SYNC_GROUP,
        SyncGroupRequest {
            group_id: g.clone(),
            generation_id: j.generation_id,
            member_id: j.member_id.clone(),
            protocol_type: Some("consumer".into()),
            protocol_name: Some("roundrobin".into()),
            ..Default::default()
        },
    )?;
    Ok(json!({"sync": err(r.error_code)}))
}

fn find_coordinator_transaction(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let key = ctx.name("tx");
    // A fresh Kafka answers COORDINATOR_NOT_AVAILABLE (retriable) until its first such
    // request has created __transaction_state; ask again, as a client would, for a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = c.send(
            v::FIND_COORDINATOR,
            FindCoordinatorRequest {
                key: String::new(),
                key_type: 1,
                coordinator_keys: vec![key.clone()],
                ..Default::default()
            },
        )?;
        let code = r.coordinators[0].error_code;
        if code != 15 || std::time::Instant::now() >= deadline {
            return Ok(json!({"error": err(code)}));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn commit_metadata_too_large(ctx: &Ctx) -> Result<Value> {
    let (mut c, g, t) = setup(ctx)?;
    let r = c.send(
        v::OFFSET_COMMIT,
        OffsetCommitRequest {
            group_id: g.clone(),
            generation_id_or_member_epoch: -1,
            retention_time_ms: -1,
            topics: vec![OffsetCommitRequestTopic {
                name: t.clone(),
                partitions: vec![OffsetCommitRequestPartition {
                    partition_index: 0,
                    committed_offset: 3,
                    committed_leader_epoch: -1,
                    commit_timestamp: -1,
                    committed_metadata: Some("m".repeat(5000)),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let e = r.topics[0].partitions[0].error_code;
    Ok(json!({"commit": err(e), "fetch": fetch_offsets(&mut c, &g, Some(&[(&t, &[0])]))?}))
}
