//! Classic protocol: every JoinGroup/SyncGroup/Heartbeat/LeaveGroup path and error.

mod common;

use bytes::Bytes;
use common::*;
use skein_group::*;

const G: &str = "g";

#[test]
fn single_member_reaches_stable_and_persists() {
    let mut c = coordinator();
    let fx = c.join_group(0, 1, join_req(G, ""));
    let j = join_of(&fx, 1);
    assert_eq!(j.error, ErrorCode::NONE);
    assert_eq!(j.generation_id, 1);
    assert_eq!(j.leader, j.member_id);
    assert!(j.member_id.starts_with("client-"));
    assert_eq!(j.members.len(), 1);
    assert_eq!(j.protocol_name.as_deref(), Some("range"));
    assert_eq!(c.describe_group(G).state, "CompletingRebalance");

    let mut s = sync_req(G, 1, &j.member_id);
    s.assignments = vec![(j.member_id.clone(), Bytes::from_static(b"asg"))];
    let fx = c.sync_group(0, 2, s);
    let r = sync_of(&fx, 2);
    assert_eq!(r.error, ErrorCode::NONE);
    assert_eq!(&r.assignment[..], b"asg");
    let recs = records(&fx);
    assert!(
        matches!(&recs[..], [GroupRecord::GroupMetadata(g)] if g.generation == 1 && &g.members[0].assignment[..] == b"asg")
    );
    let d = c.describe_group(G);
    assert_eq!(d.state, "Stable");
    assert_eq!(d.protocol_name, "range");
    assert_eq!(&d.members[0].assignment[..], b"asg");
    assert_eq!(c.heartbeat(1, G, 1, &j.member_id, None), ErrorCode::NONE);
}

#[test]
fn request_validation_errors() {
    let mut c = coordinator();
    let fx = c.join_group(0, 1, join_req("", ""));
    assert_eq!(join_of(&fx, 1).error, ErrorCode::INVALID_GROUP_ID);
    let mut r = join_req(G, "");
    r.session_timeout_ms = 1000;
    assert_eq!(
        join_of(&c.join_group(0, 2, r), 2).error,
        ErrorCode::INVALID_SESSION_TIMEOUT
    );
    let mut r = join_req(G, "");
    r.session_timeout_ms = 1_800_001;
    assert_eq!(
        join_of(&c.join_group(0, 3, r), 3).error,
        ErrorCode::INVALID_SESSION_TIMEOUT
    );
    // A known member id for a group that does not exist.
    assert_eq!(
        join_of(&c.join_group(0, 4, join_req(G, "ghost")), 4).error,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    // Empty protocol type or no protocols.
    let mut r = join_req(G, "");
    r.protocols.clear();
    assert_eq!(
        join_of(&c.join_group(0, 5, r), 5).error,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL
    );
    assert!(
        c.group_ids().is_empty(),
        "failed joins leave no group behind"
    );
    assert_eq!(
        c.heartbeat(0, "", 1, "m", None),
        ErrorCode::INVALID_GROUP_ID
    );
    assert_eq!(
        c.heartbeat(0, G, 1, "m", None),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        sync_of(&c.sync_group(0, 6, sync_req(G, 1, "m")), 6).error,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn inconsistent_protocols() {
    let mut c = coordinator();
    let (_m, _) = stable_single(&mut c, G, 0);
    let mut r = join_req(G, "");
    r.protocol_type = "connect".into();
    assert_eq!(
        join_of(&c.join_group(1, 10, r), 10).error,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL
    );
    let mut r = join_req(G, "");
    r.protocols = vec![("roundrobin".into(), sub(&["t"]))];
    assert_eq!(
        join_of(&c.join_group(1, 11, r), 11).error,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn member_id_required_then_rejoin() {
    let mut c = coordinator();
    let mut r = join_req(G, "");
    r.require_known_member_id = true;
    let j = join_of(&c.join_group(0, 1, r.clone()), 1);
    assert_eq!(j.error, ErrorCode::MEMBER_ID_REQUIRED);
    assert!(!j.member_id.is_empty());
    assert_eq!(c.pending_member_ids(G), vec![j.member_id.clone()]);
    r.member_id = j.member_id.clone();
    let j2 = join_of(&c.join_group(1, 2, r), 2);
    assert_eq!(j2.error, ErrorCode::NONE);
    assert_eq!(j2.member_id, j.member_id);
    assert!(c.pending_member_ids(G).is_empty());
}

#[test]
fn pending_member_expires() {
    let mut c = coordinator();
    let mut r = join_req(G, "");
    r.require_known_member_id = true;
    let j = join_of(&c.join_group(0, 1, r.clone()), 1);
    c.tick(SESSION_MS as i64 - 1);
    assert_eq!(c.pending_member_ids(G).len(), 1);
    c.tick(SESSION_MS as i64);
    assert!(c.pending_member_ids(G).is_empty());
    // Kafka keeps the emptied group listed until its periodic cleanup, which the first
    // tick scheduled one `offsets.retention.check.interval.ms` later.
    assert_eq!(c.group_ids(), vec![G.to_string()]);
    let cleanup = SESSION_MS as i64 - 1 + cfg().offsets_retention_check_interval_ms;
    assert_eq!(c.next_deadline(), Some(cleanup));
    c.tick(cleanup - 1);
    assert_eq!(c.group_ids(), vec![G.to_string()]);
    c.tick(cleanup);
    assert!(c.group_ids().is_empty());
    // Rejoining with the expired id is now unknown.
    r.member_id = j.member_id;
    assert_eq!(
        join_of(&c.join_group(SESSION_MS as i64 + 1, 2, r), 2).error,
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn second_member_triggers_rebalance_and_leader_assigns() {
    let mut c = coordinator();
    let (a, gen1) = stable_single(&mut c, G, 0);
    // B joins: PreparingRebalance, B waits.
    let fx = c.join_group(10, 3, join_req(G, ""));
    assert!(joins(&fx).is_empty());
    assert_eq!(c.describe_group(G).state, "PreparingRebalance");
    assert_eq!(
        c.heartbeat(11, G, gen1, &a, None),
        ErrorCode::REBALANCE_IN_PROGRESS
    );
    // Sync during PreparingRebalance.
    assert_eq!(
        sync_of(&c.sync_group(11, 4, sync_req(G, gen1, &a)), 4).error,
        ErrorCode::REBALANCE_IN_PROGRESS
    );
    // A rejoins: the join completes for both.
    let fx = c.join_group(12, 5, join_req(G, &a));
    let ja = join_of(&fx, 5);
    let jb = join_of(&fx, 3);
    assert_eq!(ja.generation_id, gen1 + 1);
    assert_eq!(jb.generation_id, gen1 + 1);
    assert_eq!(ja.leader, a, "the old leader stays leader");
    assert_eq!(ja.members.len(), 2);
    assert!(jb.members.is_empty());
    let b = jb.member_id.clone();
    // CompletingRebalance: heartbeat is fine, commits are not.
    assert_eq!(
        c.heartbeat(13, G, ja.generation_id, &b, None),
        ErrorCode::NONE
    );
    // Old generation is illegal.
    assert_eq!(
        c.heartbeat(13, G, gen1, &b, None),
        ErrorCode::ILLEGAL_GENERATION
    );
    assert_eq!(
        sync_of(&c.sync_group(13, 6, sync_req(G, gen1, &b)), 6).error,
        ErrorCode::ILLEGAL_GENERATION
    );
    // Follower's sync waits for the leader.
    let fx = c.sync_group(14, 7, sync_req(G, ja.generation_id, &b));
    assert!(syncs(&fx).is_empty());
    let mut s = sync_req(G, ja.generation_id, &a);
    s.assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (b.clone(), Bytes::from_static(b"B")),
        ("stranger".into(), Bytes::from_static(b"X")),
    ];
    let fx = c.sync_group(15, 8, s);
    assert_eq!(&sync_of(&fx, 8).assignment[..], b"A");
    assert_eq!(&sync_of(&fx, 7).assignment[..], b"B");
    assert_eq!(c.describe_group(G).state, "Stable");
    // A late sync in Stable returns the stored assignment.
    assert_eq!(
        &sync_of(&c.sync_group(16, 9, sync_req(G, ja.generation_id, &b)), 9).assignment[..],
        b"B"
    );
    // Wrong protocol name on sync.
    let mut s = sync_req(G, ja.generation_id, &b);
    s.protocol_name = Some("other".into());
    assert_eq!(
        sync_of(&c.sync_group(16, 10, s), 10).error,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL
    );
}

#[test]
fn follower_rejoining_stable_with_same_metadata_gets_current_generation() {
    let mut c = coordinator();
    let (a, _) = stable_single(&mut c, G, 0);
    let fx = c.join_group(1, 3, join_req(G, ""));
    let fx2 = c.join_group(2, 4, join_req(G, &a));
    let jb = join_of(&fx2, 3);
    drop(fx);
    let mut s = sync_req(G, jb.generation_id, &a);
    s.assignments = vec![];
    c.sync_group(3, 5, s);
    // B rejoins with identical protocols: no rebalance.
    let fx = c.join_group(4, 6, join_req(G, &jb.member_id));
    let j = join_of(&fx, 6);
    assert_eq!(j.generation_id, jb.generation_id);
    assert!(j.members.is_empty());
    assert_eq!(c.describe_group(G).state, "Stable");
    // B rejoins with new metadata: rebalance.
    let mut r = join_req(G, &jb.member_id);
    r.protocols = vec![("range".into(), sub(&["t", "u"]))];
    assert!(joins(&c.join_group(5, 7, r)).is_empty());
    assert_eq!(c.describe_group(G).state, "PreparingRebalance");
}

#[test]
fn rebalance_timeout_removes_members_that_do_not_rejoin() {
    let mut c = coordinator();
    let (a, gen1) = stable_single(&mut c, G, 0);
    let fx = c.join_group(100, 3, join_req(G, ""));
    assert!(joins(&fx).is_empty());
    // A never rejoins (max.poll.interval.ms exceeded); it keeps heartbeating though.
    for t in [5_000, 14_000, 23_000] {
        assert_eq!(
            c.heartbeat(t, G, gen1, &a, None),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
    }
    let fx = c.tick(100 + REBALANCE_MS as i64 - 1);
    assert!(joins(&fx).is_empty());
    let fx = c.tick(100 + REBALANCE_MS as i64);
    let jb = join_of(&fx, 3);
    assert_eq!(jb.error, ErrorCode::NONE);
    assert_eq!(jb.leader, jb.member_id, "B becomes leader");
    assert_eq!(jb.members.len(), 1);
    assert_eq!(
        c.heartbeat(100 + REBALANCE_MS as i64, G, jb.generation_id, &a, None),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn initial_rebalance_delay_waits_and_extends() {
    let mut c = Coordinator::new_with_seed(
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            ..GroupConfig::default()
        },
        1,
    );
    assert!(joins(&c.join_group(0, 1, join_req(G, ""))).is_empty());
    assert_eq!(c.next_deadline(), Some(3000));
    assert!(joins(&c.join_group(2000, 2, join_req(G, ""))).is_empty());
    // First delay ends, a member was added: wait another delay.
    assert!(joins(&c.tick(3000)).is_empty());
    assert!(joins(&c.tick(5999)).is_empty());
    let fx = c.tick(6000);
    let j1 = join_of(&fx, 1);
    let j2 = join_of(&fx, 2);
    assert_eq!(j1.generation_id, 1);
    assert_eq!(j1.leader, j1.member_id, "first member leads");
    assert_eq!(j1.members.len(), 2);
    assert_eq!(j2.leader, j1.member_id);
}

#[test]
fn session_expiry_removes_member_and_last_one_empties_group() {
    let mut c = coordinator();
    let (a, gen1) = stable_single(&mut c, G, 0);
    assert_eq!(c.heartbeat(5_000, G, gen1, &a, None), ErrorCode::NONE);
    assert!(records(&c.tick(14_999)).is_empty());
    let fx = c.tick(15_000);
    let recs = records(&fx);
    // The group becomes Empty (new generation persisted) and stays listed as Empty ...
    assert!(
        matches!(&recs[..], [GroupRecord::GroupMetadata(g)] if g.members.is_empty() && g.generation == gen1 + 1),
        "{recs:?}"
    );
    assert_eq!(c.describe_group(G).state, "Empty");
    assert_eq!(c.list_groups(&[], &[]).len(), 1);
    // ... until the periodic cleanup (first scheduled by the tick at 14_999) deletes it,
    // having no offsets.
    let cleanup = 14_999 + cfg().offsets_retention_check_interval_ms;
    assert!(records(&c.tick(cleanup - 1)).is_empty());
    let recs = records(&c.tick(cleanup));
    assert!(
        matches!(&recs[..], [GroupRecord::GroupDelete { .. }]),
        "{recs:?}"
    );
    assert_eq!(c.describe_group(G).state, "Dead");
}

#[test]
fn leave_group_paths() {
    let mut c = coordinator();
    let (a, _) = stable_single(&mut c, G, 0);
    let (top, results, _) = c.leave_group(1, "nope", vec![("x".into(), None)]);
    assert_eq!(top, ErrorCode::NONE);
    assert_eq!(results[0].2, ErrorCode::UNKNOWN_MEMBER_ID);
    let (_, results, _) = c.leave_group(
        1,
        G,
        vec![("x".into(), None), ("y".into(), Some("i".into()))],
    );
    assert_eq!(results[0].2, ErrorCode::UNKNOWN_MEMBER_ID);
    assert_eq!(results[1].2, ErrorCode::UNKNOWN_MEMBER_ID);
    let (_, results, fx) = c.leave_group(2, G, vec![(a.clone(), None)]);
    assert_eq!(results[0].2, ErrorCode::NONE);
    assert_eq!(c.describe_group(G).state, "Empty");
    assert!(!records(&fx).is_empty());
    assert_eq!(c.leave_group(2, "", vec![]).0, ErrorCode::INVALID_GROUP_ID);
}

#[test]
fn leave_answers_waiting_join_and_completes_rebalance() {
    let mut c = coordinator();
    let (a, _) = stable_single(&mut c, G, 0);
    let jb_fx = c.join_group(1, 3, join_req(G, ""));
    assert!(joins(&jb_fx).is_empty());
    // A leaves instead of rejoining: B's join completes immediately.
    let (_, _, fx) = c.leave_group(2, G, vec![(a, None)]);
    let jb = join_of(&fx, 3);
    assert_eq!(jb.error, ErrorCode::NONE);
    assert_eq!(jb.leader, jb.member_id);
}

#[test]
fn static_member_rejoin_without_rebalance_and_fencing() {
    let mut c = coordinator();
    let j1 = join_of(&c.join_group(0, 1, static_join_req(G, "", "inst-a")), 1);
    assert!(j1.member_id.starts_with("inst-a-"));
    let fx = c.join_group(1, 2, static_join_req(G, "", "inst-b"));
    assert!(joins(&fx).is_empty());
    let fx = c.join_group(2, 3, static_join_req(G, &j1.member_id, "inst-a"));
    let ja = join_of(&fx, 3);
    let jb = join_of(&fx, 2);
    let mut s = sync_req(G, ja.generation_id, &ja.member_id);
    s.group_instance_id = Some("inst-a".into());
    s.assignments = vec![
        (ja.member_id.clone(), Bytes::from_static(b"A")),
        (jb.member_id.clone(), Bytes::from_static(b"B")),
    ];
    c.sync_group(3, 4, s);
    assert_eq!(c.describe_group(G).state, "Stable");
    let generation = ja.generation_id;

    // inst-b restarts: new member id, same generation, no rebalance, old id fenced.
    let fx = c.join_group(4, 5, static_join_req(G, "", "inst-b"));
    let jb2 = join_of(&fx, 5);
    assert_eq!(jb2.error, ErrorCode::NONE);
    assert_ne!(jb2.member_id, jb.member_id);
    assert_eq!(jb2.generation_id, generation);
    assert!(!jb2.skip_assignment);
    assert!(matches!(&records(&fx)[..], [GroupRecord::GroupMetadata(_)]));
    assert_eq!(c.describe_group(G).state, "Stable");
    assert_eq!(
        c.heartbeat(5, G, generation, &jb.member_id, Some("inst-b")),
        ErrorCode::FENCED_INSTANCE_ID
    );
    let mut s = sync_req(G, generation, &jb2.member_id);
    s.group_instance_id = Some("inst-b".into());
    assert_eq!(&sync_of(&c.sync_group(5, 6, s), 6).assignment[..], b"B");
    // The old id cannot commit either.
    let (res, _) = c.commit_offsets(
        6,
        CommitRequest {
            group_id: G.into(),
            generation_id: generation,
            member_id: jb.member_id.clone(),
            group_instance_id: Some("inst-b".into()),
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: 1,
                leader_epoch: -1,
                metadata: None,
            }],
        },
    );
    assert_eq!(res[0].1, ErrorCode::FENCED_INSTANCE_ID);

    // The static leader restarts: told to skip assignment, still no rebalance.
    let fx = c.join_group(7, 7, static_join_req(G, "", "inst-a"));
    let ja2 = join_of(&fx, 7);
    assert!(ja2.skip_assignment);
    assert_eq!(ja2.leader, ja2.member_id);
    assert_eq!(ja2.members.len(), 2);
    assert_eq!(c.describe_group(G).state, "Stable");

    // An old client (no skip assignment) restarting as leader does not rebalance either:
    // as Kafka does, it is named a follower (the old leader id) so it assigns nothing, and
    // gets its partitions back from SyncGroup.
    let mut r = static_join_req(G, "", "inst-a");
    r.supports_skip_assignment = false;
    let fx = c.join_group(8, 8, r);
    let ja3 = join_of(&fx, 8);
    assert_eq!(ja3.error, ErrorCode::NONE);
    assert!(!ja3.skip_assignment);
    assert_eq!(ja3.leader, ja2.member_id);
    assert_ne!(ja3.leader, ja3.member_id);
    assert!(ja3.members.is_empty());
    assert_eq!(ja3.generation_id, ja2.generation_id);
    assert_eq!(c.describe_group(G).state, "Stable");

    // Static leave by instance id with a wrong member id is fenced; by instance alone works.
    let (_, res, _) = c.leave_group(9, G, vec![("wrong".into(), Some("inst-b".into()))]);
    assert_eq!(res[0].2, ErrorCode::FENCED_INSTANCE_ID);
    let (_, res, _) = c.leave_group(9, G, vec![(String::new(), Some("inst-b".into()))]);
    assert_eq!(res[0].2, ErrorCode::NONE);
}

#[test]
fn static_member_not_rejoining_is_kept_until_session_expires() {
    let mut c = coordinator();
    let ja = join_of(&c.join_group(0, 1, static_join_req(G, "", "sa")), 1);
    let mut s = sync_req(G, ja.generation_id, &ja.member_id);
    s.group_instance_id = Some("sa".into());
    c.sync_group(0, 2, s);
    // A dynamic member joins; the static member does not rejoin in time but heartbeats.
    c.join_group(1000, 3, join_req(G, ""));
    for t in [5_000, 14_000, 23_000] {
        assert_eq!(
            c.heartbeat(t, G, ja.generation_id, &ja.member_id, Some("sa")),
            ErrorCode::REBALANCE_IN_PROGRESS
        );
    }
    let fx = c.tick(1000 + REBALANCE_MS as i64);
    let jb = join_of(&fx, 3);
    // The leader did not rejoin: the member that did leads, and sees both members.
    assert_eq!(jb.leader, jb.member_id);
    assert_eq!(jb.members.len(), 2);
    let d = c.describe_group(G);
    assert_eq!(d.members.len(), 2, "static member kept: {d:?}");
}

#[test]
fn protocol_selection_by_votes() {
    let mut c = coordinator();
    let mut r1 = join_req(G, "");
    r1.protocols = vec![("a".into(), sub(&["t"])), ("b".into(), sub(&["t"]))];
    let mut r2 = join_req(G, "");
    r2.protocols = vec![("b".into(), sub(&["t"])), ("a".into(), sub(&["t"]))];
    let mut r3 = join_req(G, "");
    r3.protocols = vec![
        ("b".into(), sub(&["t"])),
        ("c".into(), sub(&["t"])),
        ("a".into(), sub(&["t"])),
    ];
    let mut c2 = Coordinator::new_with_seed(
        GroupConfig {
            initial_rebalance_delay_ms: 100,
            ..cfg()
        },
        3,
    );
    c2.join_group(0, 1, r1.clone());
    c2.join_group(0, 2, r2.clone());
    c2.join_group(0, 3, r3.clone());
    // The delay is extended once because members were added during it.
    assert!(joins(&c2.tick(100)).is_empty());
    let fx = c2.tick(200);
    assert_eq!(join_of(&fx, 1).protocol_name.as_deref(), Some("b"));
    // A protocol not supported by everyone is never chosen.
    let _ = &mut c;
}

#[test]
fn group_max_size() {
    let mut c = Coordinator::new_with_seed(
        GroupConfig {
            max_group_size: 1,
            ..cfg()
        },
        5,
    );
    let (_a, _) = stable_single(&mut c, G, 0);
    let j = join_of(&c.join_group(1, 3, join_req(G, "")), 3);
    assert_eq!(j.error, ErrorCode::GROUP_MAX_SIZE_REACHED);
}

#[test]
fn members_that_never_sync_are_removed() {
    let mut c = coordinator();
    let (a, _) = stable_single(&mut c, G, 0);
    c.join_group(1, 3, join_req(G, ""));
    let fx = c.join_group(2, 4, join_req(G, &a));
    let jb = join_of(&fx, 3);
    let ja = join_of(&fx, 4);
    let mut s = sync_req(G, ja.generation_id, &a);
    s.assignments = vec![
        (a.clone(), Bytes::from_static(b"A")),
        (jb.member_id.clone(), Bytes::from_static(b"B")),
    ];
    c.sync_group(3, 5, s);
    // B never sends SyncGroup but heartbeats: removed at the rebalance timeout.
    for t in [4, 9_000, 18_000, 27_000] {
        assert_eq!(
            c.heartbeat(t, G, ja.generation_id, &jb.member_id, None),
            ErrorCode::NONE
        );
        assert_eq!(
            c.heartbeat(t, G, ja.generation_id, &a, None),
            ErrorCode::NONE
        );
    }
    c.tick(2 + REBALANCE_MS as i64);
    assert_eq!(c.describe_group(G).state, "PreparingRebalance");
    assert_eq!(
        c.heartbeat(
            2 + REBALANCE_MS as i64,
            G,
            ja.generation_id,
            &jb.member_id,
            None
        ),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn duplicate_join_answers_the_first_token() {
    let mut c = coordinator();
    let (a, _) = stable_single(&mut c, G, 0);
    c.join_group(1, 3, join_req(G, ""));
    let fx = c.join_group(2, 4, join_req(G, &a));
    let jb = join_of(&fx, 3);
    // B joins again with its id while the group is CompletingRebalance (same protocols):
    // current generation resent.
    let j = join_of(&c.join_group(3, 5, join_req(G, &jb.member_id)), 5);
    assert_eq!(j.generation_id, jb.generation_id);
    // Now a rebalance: A rejoins twice; the first token is answered.
    let mut r = join_req(G, &a);
    r.protocols = vec![("range".into(), sub(&["x"]))];
    c.join_group(4, 6, r.clone());
    let fx = c.join_group(5, 7, r);
    assert_eq!(join_of(&fx, 6).error, ErrorCode::REBALANCE_IN_PROGRESS);
}

#[test]
fn classic_join_to_consumer_group_is_inconsistent() {
    let mut c = coordinator();
    let topics: Vec<(String, TopicId, i32)> = vec![("t".into(), topic_id(1), 2)];
    let (r, _) = c.consumer_heartbeat(
        0,
        ConsumerHeartbeat {
            group_id: G.into(),
            member_id: "m1".into(),
            member_epoch: 0,
            rebalance_timeout_ms: 1000,
            subscribed_topic_names: Some(vec!["t".into()]),
            ..Default::default()
        },
        &topics,
    );
    assert_eq!(r.error, ErrorCode::NONE);
    assert_eq!(
        join_of(&c.join_group(1, 1, join_req(G, "")), 1).error,
        ErrorCode::INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(c.describe_group(G).state, "Dead");
    assert_eq!(
        c.heartbeat(1, G, 1, "m1", None),
        ErrorCode::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn list_groups_filters() {
    let mut c = coordinator();
    stable_single(&mut c, "a", 0);
    c.commit_offsets(
        0,
        CommitRequest {
            group_id: "b".into(),
            generation_id: -1,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: 5,
                leader_epoch: -1,
                metadata: None,
            }],
            ..Default::default()
        },
    );
    let all = c.list_groups(&[], &[]);
    assert_eq!(all.len(), 2);
    let stable = c.list_groups(&["stable".into()], &[]);
    assert_eq!(stable.len(), 1);
    assert_eq!(stable[0].group_id, "a");
    assert_eq!(stable[0].group_type, "classic");
    assert_eq!(c.list_groups(&[], &["Consumer".into()]).len(), 0);
    let b = c.list_groups(&["Empty".into()], &["classic".into()]);
    assert_eq!(b[0].protocol_type, "");
}

#[test]
fn unloading_answers_waiting_joins_and_syncs_not_coordinator() {
    let mut c = coordinator();
    // A waiting JoinGroup: B joins a stable-ish group, A has not rejoined yet.
    let a = join_of(&c.join_group(0, 1, join_req(G, "")), 1);
    assert_eq!(a.error, ErrorCode::NONE);
    let fx = c.join_group(0, 2, join_req(G, ""));
    assert!(joins(&fx).is_empty(), "B waits for A to rejoin: {fx:#?}");
    // A waiting SyncGroup in another group: the follower syncs before the leader.
    let h = "h";
    let first = join_of(&c.join_group(0, 3, join_req(h, "")), 3);
    assert!(joins(&c.join_group(0, 4, join_req(h, ""))).is_empty());
    let fx = c.join_group(0, 5, join_req(h, &first.member_id));
    let (x, y) = (join_of(&fx, 4), join_of(&fx, 5));
    assert_eq!((x.error, y.error), (ErrorCode::NONE, ErrorCode::NONE));
    let follower = if x.leader == x.member_id { &y } else { &x };
    let fx = c.sync_group(
        0,
        6,
        sync_req(h, follower.generation_id, &follower.member_id),
    );
    assert!(
        syncs(&fx).is_empty(),
        "the follower waits for the leader: {fx:#?}"
    );

    // A third group, with nothing waiting, stays.
    let other = join_of(&c.join_group(0, 7, join_req("keep", "")), 7);
    assert_eq!(other.error, ErrorCode::NONE);

    let (unloaded, fx) = c.unload_groups(|g| g == G || g == h);
    assert_eq!(unloaded, 2);
    assert_eq!(joins(&fx).len(), 1, "{fx:#?}");
    assert_eq!(join_of(&fx, 2).error, ErrorCode::NOT_COORDINATOR);
    assert_eq!(syncs(&fx).len(), 1, "{fx:#?}");
    assert_eq!(sync_of(&fx, 6).error, ErrorCode::NOT_COORDINATOR);
    assert!(records(&fx).is_empty(), "unloading writes nothing");
    assert_eq!(c.group_ids(), vec!["keep".to_string()]);
    // Nothing is left to answer later: unloading again answers nothing.
    let (again, fx) = c.unload_groups(|_| true);
    assert_eq!(again, 1);
    assert!(fx.is_empty(), "{fx:#?}");
}
