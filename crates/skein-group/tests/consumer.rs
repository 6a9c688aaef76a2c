//! KIP-848 consumer groups: heartbeats, epochs, reconciliation, errors, persistence.

mod common;

use common::*;
use skein_group::*;

const G: &str = "cg";

fn topics(list: &[(&str, u8, i32)]) -> Vec<(String, TopicId, i32)> {
    list.iter()
        .map(|(n, id, p)| ((*n).to_owned(), topic_id(*id), *p))
        .collect()
}

fn join(member: &str, subscribed: &[&str]) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        group_id: G.into(),
        member_id: member.into(),
        member_epoch: 0,
        rebalance_timeout_ms: 5000,
        subscribed_topic_names: Some(subscribed.iter().map(|s| s.to_string()).collect()),
        topic_partitions: Some(vec![]),
        client_id: "cli".into(),
        client_host: "/1.2.3.4".into(),
        ..Default::default()
    }
}

fn hb(member: &str, epoch: i32, owned: Option<TopicPartitions>) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        group_id: G.into(),
        member_id: member.into(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        topic_partitions: owned,
        ..Default::default()
    }
}

fn count(a: &Option<TopicPartitions>) -> usize {
    a.as_ref()
        .map_or(0, |a| a.iter().map(|(_, p)| p.len()).sum())
}

#[test]
fn single_member_gets_everything() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 3), ("b", 2, 1)]);
    let (r, fx) = c.consumer_heartbeat(0, join("m1", &["a", "b"]), &t);
    assert_eq!(r.error, ErrorCode::NONE);
    assert_eq!(r.member_epoch, 1);
    assert_eq!(r.heartbeat_interval_ms, 5000);
    assert_eq!(count(&r.assignment), 4);
    assert!(matches!(&records(&fx)[..], [GroupRecord::ConsumerGroup(g)] if g.group_epoch == 1));
    let d = c.describe_consumer_group(G, &t);
    assert_eq!(d.state, "Stable");
    assert_eq!(d.assignor_name, "uniform");
    assert_eq!(d.members[0].client_id, "cli");
    // A steady heartbeat changes nothing and persists nothing.
    let (r, fx) = c.consumer_heartbeat(1, hb("m1", 1, r.assignment.clone()), &t);
    assert_eq!(
        (r.error, r.member_epoch, r.assignment),
        (ErrorCode::NONE, 1, None)
    );
    assert!(records(&fx).is_empty());
    let l = c.list_groups(&[], &["consumer".into()]);
    assert_eq!(
        (l[0].state.as_str(), l[0].protocol_type.as_str()),
        ("Stable", "consumer")
    );
    assert_eq!(c.describe_group(G).state, "Dead");
}

#[test]
fn revocation_before_assignment() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 4)]);
    let (r1, _) = c.consumer_heartbeat(0, join("m1", &["a"]), &t);
    let owned1 = r1.assignment.clone();
    let (r2, _) = c.consumer_heartbeat(1, join("m2", &["a"]), &t);
    assert_eq!(r2.member_epoch, 2);
    assert_eq!(count(&r2.assignment), 0, "m1 still owns everything");
    assert_eq!(c.describe_consumer_group(G, &t).state, "Reconciling");
    // m1 is asked to revoke two partitions, keeping its epoch.
    let (r1b, _) = c.consumer_heartbeat(2, hb("m1", 1, owned1.clone()), &t);
    assert_eq!(r1b.member_epoch, 1);
    assert_eq!(count(&r1b.assignment), 2);
    // Until m1 confirms, m2 gets nothing.
    let (r2b, _) = c.consumer_heartbeat(3, hb("m2", 2, Some(vec![])), &t);
    assert_eq!(count(&r2b.assignment), 0);
    // m1 confirms by reporting only what it kept: epoch 2.
    let (r1c, _) = c.consumer_heartbeat(4, hb("m1", 1, r1b.assignment.clone()), &t);
    assert_eq!(r1c.member_epoch, 2);
    let (r2c, _) = c.consumer_heartbeat(5, hb("m2", 2, Some(vec![])), &t);
    assert_eq!(count(&r2c.assignment), 2);
    let mut owned = c.consumer_owned_partitions(G);
    owned.sort();
    assert_eq!(owned.len(), 4);
    let (r2d, _) = c.consumer_heartbeat(6, hb("m2", 2, r2c.assignment.clone()), &t);
    assert_eq!(r2d.assignment, None);
    assert_eq!(c.describe_consumer_group(G, &t).state, "Stable");
}

#[test]
fn epoch_fencing() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 2)]);
    let (r1, _) = c.consumer_heartbeat(0, join("m1", &["a"]), &t);
    assert_eq!(
        c.consumer_heartbeat(1, hb("m1", 5, None), &t).0.error,
        ErrorCode::FENCED_MEMBER_EPOCH
    );
    c.consumer_heartbeat(1, join("m2", &["a"]), &t);
    // m1 moves to epoch 2 after revoking.
    let (r, _) = c.consumer_heartbeat(2, hb("m1", 1, r1.assignment.clone()), &t);
    let (r, _) = c.consumer_heartbeat(3, hb("m1", 1, r.assignment.clone()), &t);
    assert_eq!(r.member_epoch, 2);
    // The previous epoch with a subset of the assignment is accepted (lost response)...
    assert_eq!(
        c.consumer_heartbeat(4, hb("m1", 1, r.assignment.clone()), &t)
            .0
            .error,
        ErrorCode::NONE
    );
    // ...but not with partitions it no longer has, nor an older epoch.
    assert_eq!(
        c.consumer_heartbeat(5, hb("m1", 1, r1.assignment.clone()), &t)
            .0
            .error,
        ErrorCode::FENCED_MEMBER_EPOCH
    );
    assert_eq!(
        c.consumer_heartbeat(5, hb("m1", 0, None), &t).0.error,
        ErrorCode::INVALID_REQUEST
    );
    assert_eq!(
        c.consumer_heartbeat(5, hb("ghost", 1, None), &t).0.error,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    let mut other = hb("x", 3, None);
    other.group_id = "nope".into();
    assert_eq!(
        c.consumer_heartbeat(5, other, &t).0.error,
        ErrorCode::GROUP_ID_NOT_FOUND
    );
}

#[test]
fn request_validation() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 2)]);
    let mut r = join("m", &["a"]);
    r.group_id.clear();
    assert_eq!(
        c.consumer_heartbeat(0, r, &t).0.error,
        ErrorCode::INVALID_REQUEST
    );
    let mut r = join("m", &["a"]);
    r.server_assignor = Some("sticky".into());
    assert_eq!(
        c.consumer_heartbeat(0, r, &t).0.error,
        ErrorCode::UNSUPPORTED_ASSIGNOR
    );
    let mut r = join("m", &["a"]);
    r.subscribed_topic_names = None;
    r.subscribed_topic_regex = Some("a(".into());
    assert_eq!(
        c.consumer_heartbeat(0, r, &t).0.error,
        ErrorCode::INVALID_REGULAR_EXPRESSION
    );
    let mut r = join("m", &["a"]);
    r.rebalance_timeout_ms = -1;
    assert_eq!(
        c.consumer_heartbeat(0, r, &t).0.error,
        ErrorCode::INVALID_REQUEST
    );
    let mut r = join("m", &["a"]);
    r.subscribed_topic_names = None;
    assert_eq!(
        c.consumer_heartbeat(0, r, &t).0.error,
        ErrorCode::INVALID_REQUEST
    );
    let mut r = join("m", &["a"]);
    r.topic_partitions = Some(vec![(topic_id(1), vec![0])]);
    assert_eq!(
        c.consumer_heartbeat(0, r, &t).0.error,
        ErrorCode::INVALID_REQUEST
    );
    let mut r = hb("m", -2, None);
    r.instance_id = None;
    assert_eq!(
        c.consumer_heartbeat(0, r, &t).0.error,
        ErrorCode::INVALID_REQUEST
    );
    assert!(c.group_ids().is_empty());
    // An empty member id on join: the coordinator generates one.
    let (r, _) = c.consumer_heartbeat(0, join("", &["a"]), &t);
    assert_eq!(r.error, ErrorCode::NONE);
    assert_eq!(r.member_id.len(), 22);
}

#[test]
fn leave_and_session_timeout_release_partitions() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 2)]);
    c.consumer_heartbeat(0, join("m1", &["a"]), &t);
    let (r2, _) = c.consumer_heartbeat(0, join("m2", &["a"]), &t);
    let (r, _) = c.consumer_heartbeat(1, hb("m1", -1, None), &t);
    assert_eq!((r.error, r.member_epoch), (ErrorCode::NONE, -1));
    let (r, _) = c.consumer_heartbeat(2, hb("m2", r2.member_epoch, Some(vec![])), &t);
    assert_eq!(count(&r.assignment), 2);
    assert_eq!(r.member_epoch, 3);
    // m2 stops heartbeating: gone after the session timeout.
    c.tick(2 + 44_999);
    assert_eq!(c.describe_consumer_group(G, &t).members.len(), 1);
    let fx = c.tick(2 + 45_000);
    assert!(!records(&fx).is_empty());
    // Empty without offsets: listed as Empty until the periodic cleanup, then deleted.
    let d = c.describe_consumer_group(G, &t);
    assert_eq!((d.error, d.members.len()), (ErrorCode::NONE, 0));
    c.tick(2 + 44_999 + cfg().offsets_retention_check_interval_ms);
    assert_eq!(
        c.describe_consumer_group(G, &t).error,
        ErrorCode::GROUP_ID_NOT_FOUND
    );
}

#[test]
fn revocation_timeout_fences_member() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 2)]);
    let (r1, _) = c.consumer_heartbeat(0, join("m1", &["a"]), &t);
    c.consumer_heartbeat(0, join("m2", &["a"]), &t);
    let (r, _) = c.consumer_heartbeat(1, hb("m1", 1, r1.assignment.clone()), &t);
    assert_eq!(count(&r.assignment), 1);
    // m1 never confirms; m2 keeps heartbeating.
    for now in [1000, 2000, 3000, 4000] {
        c.consumer_heartbeat(now, hb("m2", 2, Some(vec![])), &t);
    }
    c.tick(5001);
    let d = c.describe_consumer_group(G, &t);
    assert_eq!(d.members.len(), 1);
    let (r, _) = c.consumer_heartbeat(5002, hb("m2", 2, Some(vec![])), &t);
    assert_eq!(count(&r.assignment), 2);
    assert_eq!(
        c.consumer_heartbeat(5003, hb("m1", 1, None), &t).0.error,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn static_member_leaves_and_comes_back() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 4)]);
    let mut j = join("s1", &["a"]);
    j.instance_id = Some("i".into());
    let (r1, _) = c.consumer_heartbeat(0, j.clone(), &t);
    c.consumer_heartbeat(0, join("d", &["a"]), &t);
    let (r, _) = c.consumer_heartbeat(
        1,
        ConsumerHeartbeat {
            instance_id: Some("i".into()),
            ..hb("s1", 1, r1.assignment.clone())
        },
        &t,
    );
    let (r, _) = c.consumer_heartbeat(
        2,
        ConsumerHeartbeat {
            instance_id: Some("i".into()),
            ..hb("s1", 1, r.assignment.clone())
        },
        &t,
    );
    assert_eq!(r.member_epoch, 2);
    let kept = r.assignment.clone().unwrap();
    // The same instance id with another member id while s1 is active.
    let mut j2 = join("s2", &["a"]);
    j2.instance_id = Some("i".into());
    assert_eq!(
        c.consumer_heartbeat(3, j2.clone(), &t).0.error,
        ErrorCode::UNRELEASED_INSTANCE_ID
    );
    // s1 leaves temporarily; the group epoch does not move.
    let (r, _) = c.consumer_heartbeat(
        4,
        ConsumerHeartbeat {
            instance_id: Some("i".into()),
            ..hb("s1", -2, None)
        },
        &t,
    );
    assert_eq!(r.member_epoch, -2);
    let epoch = c.describe_consumer_group(G, &t).group_epoch;
    let (r, _) = c.consumer_heartbeat(5, j2, &t);
    assert_eq!(r.error, ErrorCode::NONE);
    assert_eq!(r.member_epoch, 2);
    assert_eq!(r.assignment, Some(kept));
    assert_eq!(c.describe_consumer_group(G, &t).group_epoch, epoch);
    assert_eq!(
        c.consumer_heartbeat(
            6,
            ConsumerHeartbeat {
                instance_id: Some("i".into()),
                ..hb("s1", 2, None)
            },
            &t
        )
        .0
        .error,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn regex_and_metadata_changes() {
    let mut c = coordinator();
    let t1 = topics(&[
        ("orders-1", 1, 2),
        ("payments", 2, 2),
        ("__consumer_offsets", 3, 50),
    ]);
    let mut j = join("m", &[]);
    j.subscribed_topic_names = None;
    j.subscribed_topic_regex = Some("orders-.*|__.*".into());
    let (r, _) = c.consumer_heartbeat(0, j, &t1);
    assert_eq!(count(&r.assignment), 2);
    // A new matching topic and a partition increase bump the group epoch.
    let t2 = topics(&[("orders-1", 1, 3), ("orders-2", 4, 1), ("payments", 2, 2)]);
    let (r, _) = c.consumer_heartbeat(1, hb("m", 1, r.assignment.clone()), &t2);
    assert_eq!(r.member_epoch, 2);
    assert_eq!(count(&r.assignment), 4);
    // Offsets of subscribed topics cannot be deleted.
    c.commit_offsets(
        2,
        CommitRequest {
            group_id: G.into(),
            generation_id: 2,
            member_id: "m".into(),
            group_instance_id: None,
            offsets: vec![
                CommitOffset {
                    topic: "orders-2".into(),
                    partition: 0,
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                },
                CommitOffset {
                    topic: "payments".into(),
                    partition: 0,
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                },
            ],
        },
    );
    let (top, res, _) = c.delete_offsets(3, G, &[("orders-2".into(), 0), ("payments".into(), 0)]);
    assert_eq!(top, ErrorCode::NONE);
    assert_eq!(res[0].1, ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC);
    assert_eq!(res[1].1, ErrorCode::NONE);
}

#[test]
fn range_assignor_on_request() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 3)]);
    let mut j = join("m1", &["a"]);
    j.server_assignor = Some("range".into());
    c.consumer_heartbeat(0, j, &t);
    assert_eq!(c.describe_consumer_group(G, &t).assignor_name, "range");
}

#[test]
fn offsets_from_consumer_members() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 1)]);
    let (r, _) = c.consumer_heartbeat(0, join("m", &["a"]), &t);
    let req = |epoch: i32, member: &str| CommitRequest {
        group_id: G.into(),
        generation_id: epoch,
        member_id: member.into(),
        group_instance_id: None,
        offsets: vec![CommitOffset {
            topic: "a".into(),
            partition: 0,
            offset: 5,
            leader_epoch: -1,
            metadata: Some("m".into()),
        }],
    };
    assert_eq!(
        c.commit_offsets(1, req(r.member_epoch, "m")).0[0].1,
        ErrorCode::NONE
    );
    assert_eq!(
        c.commit_offsets(1, req(r.member_epoch + 1, "m")).0[0].1,
        ErrorCode::STALE_MEMBER_EPOCH
    );
    assert_eq!(
        c.commit_offsets(1, req(1, "x")).0[0].1,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.commit_offsets(1, req(-1, "")).0[0].1,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        c.validate_offset_fetch(G, "m", r.member_epoch),
        ErrorCode::NONE
    );
    assert_eq!(
        c.validate_offset_fetch(G, "m", 9),
        ErrorCode::STALE_MEMBER_EPOCH
    );
    assert_eq!(
        c.validate_offset_fetch(G, "q", 1),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    assert_eq!(c.validate_offset_fetch(G, "", -1), ErrorCode::NONE);
    let (res, _) = c.delete_groups(2, &[G.into()]);
    assert_eq!(res[0].1, ErrorCode::NON_EMPTY_GROUP);
    c.consumer_heartbeat(3, hb("m", -1, None), &t);
    assert_eq!(c.commit_offsets(4, req(-1, "")).0[0].1, ErrorCode::NONE);
    assert_eq!(c.fetch_offsets(G, None, false).unwrap()[0].2.offset, 5);
}

#[test]
fn group_type_conversions() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 1)]);
    // A classic group with members refuses consumer heartbeats.
    stable_single(&mut c, "k", 0);
    let mut j = join("m", &["a"]);
    j.group_id = "k".into();
    assert_eq!(
        c.consumer_heartbeat(1, j.clone(), &t).0.error,
        ErrorCode::GROUP_ID_NOT_FOUND
    );
    // An offsets-only classic group converts, keeping its offsets.
    c.commit_offsets(
        0,
        CommitRequest {
            group_id: G.into(),
            generation_id: -1,
            offsets: vec![CommitOffset {
                topic: "a".into(),
                partition: 0,
                offset: 3,
                leader_epoch: -1,
                metadata: None,
            }],
            ..Default::default()
        },
    );
    let (r, _) = c.consumer_heartbeat(1, join("m", &["a"]), &t);
    assert_eq!(r.error, ErrorCode::NONE);
    assert_eq!(c.fetch_offsets(G, None, false).unwrap()[0].2.offset, 3);
    // Once empty, a classic JoinGroup converts it back.
    c.consumer_heartbeat(2, hb("m", -1, None), &t);
    let j = join_of(&c.join_group(3, 1, join_req(G, "")), 1);
    assert_eq!(j.error, ErrorCode::NONE);
    assert_eq!(c.list_groups(&[], &["classic".into()]).len(), 2);
}

#[test]
fn replay_restores_consumer_groups() {
    let mut c = coordinator();
    let t = topics(&[("a", 1, 4), ("b", 2, 2)]);
    let mut log = Vec::new();
    let (r1, fx) = c.consumer_heartbeat(0, join("m1", &["a", "b"]), &t);
    log.extend(records(&fx));
    let (_, fx) = c.consumer_heartbeat(1, join("m2", &["a"]), &t);
    log.extend(records(&fx));
    let (_, fx) = c.consumer_heartbeat(2, hb("m1", 1, r1.assignment.clone()), &t);
    log.extend(records(&fx));
    let mut from_log = coordinator();
    for r in &log {
        from_log.replay(&GroupRecord::decode(&r.key(), r.value().as_deref()).unwrap());
    }
    let mut from_snap = coordinator();
    for r in c.snapshot() {
        from_snap.replay(&r);
    }
    let d = c.describe_consumer_group(G, &t);
    assert_eq!(from_log.describe_consumer_group(G, &t), d);
    assert_eq!(from_snap.describe_consumer_group(G, &t), d);
    // The restored group keeps reconciling: m1 confirms its revocation.
    let owned = d
        .members
        .iter()
        .find(|m| m.member_id == "m1")
        .unwrap()
        .assignment
        .clone();
    let (r, _) = from_log.consumer_heartbeat(3, hb("m1", 1, Some(owned)), &t);
    assert_eq!(r.member_epoch, 2);
}
