//! Offset commit, fetch, retention, deletion, and replay of the persisted state.

mod common;

use bytes::Bytes;
use common::*;
use skein_group::*;

const G: &str = "g";
const DAY: i64 = 24 * 60 * 60 * 1000;

fn commit(group: &str, generation: i32, member: &str, parts: &[(&str, i32, i64)]) -> CommitRequest {
    CommitRequest {
        group_id: group.into(),
        generation_id: generation,
        member_id: member.into(),
        group_instance_id: None,
        offsets: parts
            .iter()
            .map(|(t, p, o)| CommitOffset {
                topic: (*t).into(),
                partition: *p,
                offset: *o,
                leader_epoch: 3,
                metadata: None,
            })
            .collect(),
    }
}

fn errors(r: &[((String, i32), ErrorCode)]) -> Vec<ErrorCode> {
    r.iter().map(|(_, e)| *e).collect()
}

/// These tests check expiry at exact times: a cleanup every millisecond
/// (`offsets.retention.check.interval.ms=1`) runs at each of their ticks.
fn coordinator() -> Coordinator {
    Coordinator::new_with_seed(
        GroupConfig {
            offsets_retention_check_interval_ms: 1,
            ..cfg()
        },
        42,
    )
}

#[test]
fn standalone_commit_and_fetch() {
    let mut c = coordinator();
    let mut req = commit(G, -1, "", &[("t", 0, 10), ("t", 1, 20)]);
    req.offsets[1].metadata = Some("meta".into());
    let (res, fx) = c.commit_offsets(100, req);
    assert_eq!(errors(&res), vec![ErrorCode::NONE; 2]);
    let recs = records(&fx);
    assert_eq!(recs.len(), 2);
    assert!(
        matches!(&recs[0], GroupRecord::OffsetCommit { offset: 10, metadata, commit_timestamp_ms: 100, .. } if metadata.is_empty())
    );
    let got = c
        .fetch_offsets(
            G,
            Some(&[("t".into(), 0), ("t".into(), 1), ("t".into(), 2)]),
            false,
        )
        .unwrap();
    assert_eq!(
        got[0].2,
        CommittedOffset {
            offset: 10,
            leader_epoch: 3,
            metadata: String::new()
        }
    );
    assert_eq!(got[1].2.metadata, "meta");
    assert_eq!(
        got[2].2,
        CommittedOffset {
            offset: -1,
            leader_epoch: -1,
            metadata: String::new()
        }
    );
    assert_eq!(c.fetch_offsets(G, None, true).unwrap().len(), 2);
    assert_eq!(c.fetch_offsets("other", None, false).unwrap().len(), 0);
    assert_eq!(
        c.fetch_offsets("other", Some(&[("t".into(), 0)]), false)
            .unwrap()[0]
            .2
            .offset,
        -1
    );
    assert_eq!(
        c.lag_inputs(),
        vec![(G.into(), "t".into(), 0, 10), (G.into(), "t".into(), 1, 20)]
    );
    let d = c.describe_group(G);
    assert_eq!((d.state.as_str(), d.protocol_type.as_str()), ("Empty", ""));
}

#[test]
fn commit_validation() {
    let mut c = coordinator();
    // Unknown group with a generation.
    let (res, fx) = c.commit_offsets(0, commit(G, 1, "m", &[("t", 0, 1)]));
    assert_eq!(errors(&res), vec![ErrorCode::ILLEGAL_GENERATION]);
    assert!(fx.is_empty());
    let (m, generation) = stable_single(&mut c, G, 0);
    let (res, _) = c.commit_offsets(1, commit(G, generation, &m, &[("t", 0, 1)]));
    assert_eq!(errors(&res), vec![ErrorCode::NONE]);
    let (res, _) = c.commit_offsets(1, commit(G, generation + 1, &m, &[("t", 0, 1)]));
    assert_eq!(errors(&res), vec![ErrorCode::ILLEGAL_GENERATION]);
    let (res, _) = c.commit_offsets(1, commit(G, generation, "nobody", &[("t", 0, 1)]));
    assert_eq!(errors(&res), vec![ErrorCode::UNKNOWN_MEMBER_ID]);
    // A standalone commit to a group with members.
    let (res, _) = c.commit_offsets(1, commit(G, -1, "", &[("t", 0, 1)]));
    assert_eq!(errors(&res), vec![ErrorCode::UNKNOWN_MEMBER_ID]);
    // Oversized metadata.
    let mut req = commit(G, generation, &m, &[("t", 0, 1), ("t", 1, 1)]);
    req.offsets[0].metadata = Some("x".repeat(4097));
    let (res, fx) = c.commit_offsets(1, req);
    assert_eq!(
        errors(&res),
        vec![ErrorCode::OFFSET_METADATA_TOO_LARGE, ErrorCode::NONE]
    );
    assert_eq!(records(&fx).len(), 1);
    // During PreparingRebalance commits with the current generation are allowed...
    c.join_group(2, 10, join_req(G, ""));
    let (res, _) = c.commit_offsets(3, commit(G, generation, &m, &[("t", 0, 2)]));
    assert_eq!(errors(&res), vec![ErrorCode::NONE]);
    // ...but not in CompletingRebalance.
    let fx = c.join_group(4, 11, join_req(G, &m));
    let j = join_of(&fx, 11);
    let (res, _) = c.commit_offsets(5, commit(G, j.generation_id, &m, &[("t", 0, 3)]));
    assert_eq!(errors(&res), vec![ErrorCode::REBALANCE_IN_PROGRESS]);
}

#[test]
fn standalone_offsets_expire_from_commit_time() {
    let mut c = coordinator();
    c.commit_offsets(0, commit(G, -1, "", &[("t", 0, 1)]));
    c.commit_offsets(DAY, commit(G, -1, "", &[("t", 1, 1)]));
    assert_eq!(c.next_deadline(), Some(7 * DAY));
    let fx = c.tick(7 * DAY);
    assert_eq!(
        records(&fx),
        vec![GroupRecord::OffsetDelete {
            group: G.into(),
            topic: "t".into(),
            partition: 0
        }]
    );
    let fx = c.tick(8 * DAY);
    assert_eq!(
        records(&fx),
        vec![
            GroupRecord::OffsetDelete {
                group: G.into(),
                topic: "t".into(),
                partition: 1
            },
            GroupRecord::GroupDelete { group: G.into() }
        ]
    );
    assert!(c.group_ids().is_empty());
}

#[test]
fn group_offsets_expire_only_after_the_group_is_empty_for_retention() {
    let mut c = coordinator();
    let (m, generation) = stable_single(&mut c, G, 0);
    c.commit_offsets(1, commit(G, generation, &m, &[("t", 0, 1)]));
    // Stable and subscribed to "t": never expires while members keep heartbeating.
    for day in 1..10 {
        assert_eq!(
            c.heartbeat(day * DAY - 1, G, generation, &m, None),
            ErrorCode::NONE
        );
        c.tick(day * DAY - 1);
    }
    assert_eq!(c.fetch_offsets(G, None, false).unwrap().len(), 1);
    let t_empty = 10 * DAY;
    c.leave_group(t_empty, G, vec![(m, None)]);
    assert_eq!(c.describe_group(G).state, "Empty");
    assert!(records(&c.tick(t_empty + 7 * DAY - 1)).is_empty());
    let fx = c.tick(t_empty + 7 * DAY);
    let recs = records(&fx);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(c.group_ids().is_empty());
}

#[test]
fn stable_consumer_group_expires_unsubscribed_topics() {
    let mut c = coordinator();
    let (m, generation) = stable_single(&mut c, G, 0);
    c.commit_offsets(1, commit(G, generation, &m, &[("t", 0, 1), ("old", 0, 1)]));
    let t = 7 * DAY + 1;
    assert_eq!(c.heartbeat(t - 5, G, generation, &m, None), ErrorCode::NONE);
    let fx = c.tick(t);
    assert_eq!(
        records(&fx),
        vec![GroupRecord::OffsetDelete {
            group: G.into(),
            topic: "old".into(),
            partition: 0
        }]
    );
}

#[test]
fn delete_groups_and_offsets() {
    let mut c = coordinator();
    let (m, generation) = stable_single(&mut c, G, 0);
    c.commit_offsets(1, commit(G, generation, &m, &[("t", 0, 1), ("u", 0, 1)]));
    let (res, _) = c.delete_groups(2, &[G.into(), "nope".into()]);
    assert_eq!(
        res,
        vec![
            (G.into(), ErrorCode::NON_EMPTY_GROUP),
            ("nope".into(), ErrorCode::GROUP_ID_NOT_FOUND)
        ]
    );
    // The member subscribes to "t" only.
    let (top, res, fx) =
        c.delete_offsets(2, G, &[("t".into(), 0), ("u".into(), 0), ("u".into(), 9)]);
    assert_eq!(top, ErrorCode::NONE);
    assert_eq!(
        errors(&res),
        vec![
            ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC,
            ErrorCode::NONE,
            ErrorCode::NONE
        ]
    );
    assert_eq!(
        records(&fx),
        vec![GroupRecord::OffsetDelete {
            group: G.into(),
            topic: "u".into(),
            partition: 0
        }]
    );
    assert_eq!(
        c.delete_offsets(2, "nope", &[]).0,
        ErrorCode::GROUP_ID_NOT_FOUND
    );
    c.leave_group(3, G, vec![(m, None)]);
    let (top, res, _) = c.delete_offsets(3, G, &[("t".into(), 0)]);
    assert_eq!(
        (top, errors(&res)),
        (ErrorCode::NONE, vec![ErrorCode::NONE])
    );
    c.commit_offsets(4, commit(G, -1, "", &[("t", 0, 1)]));
    let (res, fx) = c.delete_groups(5, &[G.into()]);
    assert_eq!(res, vec![(G.into(), ErrorCode::NONE)]);
    assert_eq!(
        records(&fx),
        vec![
            GroupRecord::OffsetDelete {
                group: G.into(),
                topic: "t".into(),
                partition: 0
            },
            GroupRecord::GroupDelete { group: G.into() }
        ]
    );
    assert!(c.group_ids().is_empty());
}

#[test]
fn delete_offsets_of_non_consumer_protocol_group_is_non_empty_group() {
    let mut c = coordinator();
    let mut r = join_req(G, "");
    r.protocol_type = "connect".into();
    r.protocols = vec![("default".into(), Bytes::from_static(b"\x01\x02"))];
    let j = join_of(&c.join_group(0, 1, r), 1);
    c.sync_group(
        0,
        2,
        SyncRequest {
            protocol_type: None,
            protocol_name: None,
            ..sync_req(G, j.generation_id, &j.member_id)
        },
    );
    assert_eq!(
        c.delete_offsets(1, G, &[("t".into(), 0)]).0,
        ErrorCode::NON_EMPTY_GROUP
    );
}

#[test]
fn topic_deletion_drops_offsets() {
    let mut c = coordinator();
    c.commit_offsets(0, commit("a", -1, "", &[("t", 0, 1), ("u", 0, 1)]));
    c.commit_offsets(0, commit("b", -1, "", &[("t", 3, 1)]));
    let fx = c.topic_deleted("t");
    assert_eq!(records(&fx).len(), 2);
    assert_eq!(c.lag_inputs(), vec![("a".into(), "u".into(), 0, 1)]);
}

type GroupState = (GroupDescription, Vec<(String, i32, CommittedOffset)>);

fn full_state(c: &Coordinator) -> Vec<GroupState> {
    c.group_ids()
        .iter()
        .map(|g| {
            (
                c.describe_group(g),
                c.fetch_offsets(g, None, false).unwrap(),
            )
        })
        .collect()
}

#[test]
fn replay_of_log_and_of_snapshot_rebuild_the_same_state() {
    let mut c = coordinator();
    let mut log: Vec<GroupRecord> = Vec::new();
    let mut keep = |fx: Vec<Effect>| log.extend(records(&fx));
    // A stable group of two with offsets, an empty group, a standalone group, a deleted one.
    let fx = c.join_group(0, 1, static_join_req("s", "", "i1"));
    let j1 = join_of(&fx, 1);
    keep(fx);
    keep(c.join_group(0, 2, join_req("s", "")));
    let fx = c.join_group(1, 3, static_join_req("s", &j1.member_id, "i1"));
    let j2 = join_of(&fx, 2);
    keep(fx);
    let mut s = sync_req("s", j1.generation_id + 1, &j1.member_id);
    s.group_instance_id = Some("i1".into());
    s.assignments = vec![
        (j1.member_id.clone(), Bytes::from_static(b"one")),
        (j2.member_id.clone(), Bytes::from_static(b"two")),
    ];
    keep(c.sync_group(2, 4, s));
    keep(
        c.commit_offsets(
            3,
            commit("s", j2.generation_id, &j2.member_id, &[("t", 0, 7)]),
        )
        .1,
    );
    let (m, generation) = stable_single(&mut c, "e", 0);
    keep(
        c.commit_offsets(3, commit("e", generation, &m, &[("t", 1, 8)]))
            .1,
    );
    keep(c.leave_group(4, "e", vec![(m, None)]).2);
    keep(
        c.commit_offsets(5, commit("alone", -1, "", &[("x", 0, 9)]))
            .1,
    );
    keep(
        c.commit_offsets(5, commit("gone", -1, "", &[("x", 0, 9)]))
            .1,
    );
    keep(c.delete_groups(6, &["gone".into()]).1);
    // Records must survive encoding.
    let log: Vec<GroupRecord> = log
        .iter()
        .map(|r| GroupRecord::decode(&r.key(), r.value().as_deref()).unwrap())
        .collect();

    let mut from_log = coordinator();
    for r in &log {
        from_log.replay(r);
    }
    let mut from_snapshot = coordinator();
    for r in c.snapshot() {
        from_snapshot.replay(&r);
    }
    let expected = full_state(&c);
    assert_eq!(expected.len(), 3);
    assert_eq!(full_state(&from_log), expected);
    assert_eq!(full_state(&from_snapshot), expected);
    assert_eq!(from_log.snapshot(), c.snapshot());

    // After replay, sessions restart at the first tick and the restored members work.
    assert_eq!(from_log.next_deadline(), Some(i64::MIN));
    from_log.tick(100);
    assert_eq!(
        from_log.heartbeat(101, "s", j2.generation_id, &j2.member_id, None),
        ErrorCode::NONE
    );
    // A member that never comes back after the restart expires.
    from_log.tick(100 + SESSION_MS as i64);
    assert_eq!(from_log.describe_group("s").state, "PreparingRebalance");
}
