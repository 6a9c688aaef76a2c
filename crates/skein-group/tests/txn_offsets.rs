//! Transactional offset commits: pending per producer id, invisible until the marker,
//! UNSTABLE_OFFSET_COMMIT for stable fetches, member checks for v3+, and replay.

mod common;

use common::*;
use skein_group::*;

const G: &str = "g";
const PID: i64 = 77;

fn txn_commit(group: &str, pid: i64, parts: &[(&str, i32, i64)]) -> TxnCommitRequest {
    TxnCommitRequest {
        transactional_id: "tx".into(),
        group_id: group.into(),
        producer_id: pid,
        producer_epoch: 4,
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        offsets: parts
            .iter()
            .map(|(t, p, o)| CommitOffset {
                topic: (*t).into(),
                partition: *p,
                offset: *o,
                leader_epoch: 2,
                metadata: Some("m".into()),
            })
            .collect(),
    }
}

fn errors(r: &[((String, i32), ErrorCode)]) -> Vec<ErrorCode> {
    r.iter().map(|(_, e)| *e).collect()
}

fn offset(c: &Coordinator, group: &str, topic: &str, p: i32) -> i64 {
    let got = c
        .fetch_offsets(group, Some(&[(topic.to_owned(), p)]), false)
        .unwrap();
    got[0].2.offset
}

fn everyone(_: &str) -> bool {
    true
}

#[test]
fn pending_until_commit_marker() {
    let mut c = coordinator();
    let (res, recs) = c.txn_commit_offsets(100, txn_commit(G, PID, &[("t", 0, 10), ("t", 1, 20)]));
    assert_eq!(errors(&res), vec![ErrorCode::NONE; 2]);
    let recs = recs.expect("records to append");
    assert_eq!((recs.producer_id, recs.producer_epoch), (PID, 4));
    assert_eq!(recs.records.len(), 2);
    assert!(
        matches!(&recs.records[0], GroupRecord::OffsetCommit { group, topic, partition: 0, offset: 10, leader_epoch: 2, metadata, commit_timestamp_ms: 100 } if group == G && topic == "t" && metadata == "m")
    );

    // Invisible to OffsetFetch; a stable fetch is told to retry.
    assert_eq!(offset(&c, G, "t", 0), -1);
    assert!(c.fetch_offsets(G, None, false).unwrap().is_empty());
    let stable = c
        .fetch_offsets_stable(G, Some(&[("t".into(), 0), ("t".into(), 5)]), true)
        .unwrap();
    assert_eq!(stable[0].3, ErrorCode::UNSTABLE_OFFSET_COMMIT);
    assert_eq!(stable[0].2.offset, -1);
    assert_eq!(stable[1].3, ErrorCode::NONE, "no pending offset there");
    let relaxed = c
        .fetch_offsets_stable(G, Some(&[("t".into(), 0)]), false)
        .unwrap();
    assert_eq!((relaxed[0].2.offset, relaxed[0].3), (-1, ErrorCode::NONE));
    assert!(c.has_pending_txn_offsets(G, "t", 1));
    assert_eq!(c.pending_txn_producers(G), vec![PID]);

    // A marker of another producer changes nothing; this producer's commit marker does.
    c.complete_txn(PID + 1, true, everyone);
    assert_eq!(offset(&c, G, "t", 0), -1);
    c.complete_txn(PID, true, everyone);
    assert_eq!(offset(&c, G, "t", 0), 10);
    assert_eq!(offset(&c, G, "t", 1), 20);
    let got = c.fetch_offsets(G, Some(&[("t".into(), 1)]), true).unwrap();
    assert_eq!(
        got[0].2,
        CommittedOffset {
            offset: 20,
            leader_epoch: 2,
            metadata: "m".into()
        }
    );
    let stable = c.fetch_offsets_stable(G, None, true).unwrap();
    assert!(stable.iter().all(|(_, _, _, e)| *e == ErrorCode::NONE));
    assert!(c.pending_txn_producers(G).is_empty());
    // The group now holds committed offsets and survives a tick.
    c.tick(200);
    assert_eq!(offset(&c, G, "t", 0), 10);
}

#[test]
fn abort_marker_drops_them() {
    let mut c = coordinator();
    c.commit_offsets(
        50,
        CommitRequest {
            group_id: G.into(),
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
    let (_, recs) = c.txn_commit_offsets(100, txn_commit(G, PID, &[("t", 0, 10)]));
    assert!(recs.is_some());
    assert_eq!(
        offset(&c, G, "t", 0),
        5,
        "the committed offset is still served"
    );
    c.complete_txn(PID, false, everyone);
    assert_eq!(offset(&c, G, "t", 0), 5);
    assert!(!c.has_pending_txn_offsets(G, "t", 0));

    // A group that only had aborted pending offsets goes away.
    let (_, _) = c.txn_commit_offsets(100, txn_commit("only-txn", PID, &[("t", 0, 1)]));
    assert!(c.group_ids().contains(&"only-txn".to_owned()));
    c.tick(150);
    assert!(
        c.group_ids().contains(&"only-txn".to_owned()),
        "pending offsets keep the group"
    );
    c.complete_txn(PID, false, everyone);
    assert!(!c.group_ids().contains(&"only-txn".to_owned()));
}

#[test]
fn markers_apply_only_to_groups_of_their_partition() {
    let mut c = coordinator();
    c.txn_commit_offsets(100, txn_commit("a", PID, &[("t", 0, 1)]));
    c.txn_commit_offsets(100, txn_commit("b", PID, &[("t", 0, 2)]));
    c.complete_txn(PID, true, |g| g == "a");
    assert_eq!(offset(&c, "a", "t", 0), 1);
    assert_eq!(offset(&c, "b", "t", 0), -1);
    assert!(c.has_pending_txn_offsets("b", "t", 0));
    c.complete_txn(PID, true, |g| g == "b");
    assert_eq!(offset(&c, "b", "t", 0), 2);
}

#[test]
fn a_later_plain_commit_wins_over_an_earlier_transactional_one() {
    let mut c = coordinator();
    c.txn_commit_offsets(100, txn_commit(G, PID, &[("t", 0, 10), ("t", 1, 10)]));
    c.commit_offsets(
        110,
        CommitRequest {
            group_id: G.into(),
            generation_id: -1,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 0,
                offset: 99,
                leader_epoch: -1,
                metadata: None,
            }],
            ..Default::default()
        },
    );
    c.complete_txn(PID, true, everyone);
    assert_eq!(
        offset(&c, G, "t", 0),
        99,
        "written after the transactional offset"
    );
    assert_eq!(offset(&c, G, "t", 1), 10);
    // Two producers: the later write wins regardless of marker order.
    c.txn_commit_offsets(120, txn_commit(G, 1, &[("u", 0, 1)]));
    c.txn_commit_offsets(130, txn_commit(G, 2, &[("u", 0, 2)]));
    c.complete_txn(2, true, everyone);
    c.complete_txn(1, true, everyone);
    assert_eq!(offset(&c, G, "u", 0), 2);
}

#[test]
fn request_errors() {
    let mut c = coordinator();
    let (res, recs) = c.txn_commit_offsets(1, txn_commit("", PID, &[("t", 0, 1)]));
    assert_eq!(errors(&res), vec![ErrorCode::INVALID_GROUP_ID]);
    assert!(recs.is_none());
    // A generation for a group that does not exist.
    let mut req = txn_commit("nope", PID, &[("t", 0, 1)]);
    req.generation_id = 3;
    let (res, recs) = c.txn_commit_offsets(1, req);
    assert_eq!(errors(&res), vec![ErrorCode::ILLEGAL_GENERATION]);
    assert!(recs.is_none());
    assert!(!c.group_ids().contains(&"nope".to_owned()));
    // Metadata too large is per partition.
    let mut req = txn_commit(G, PID, &[("t", 0, 1), ("t", 1, 2)]);
    req.offsets[1].metadata = Some("x".repeat(cfg().offset_metadata_max_bytes + 1));
    let (res, recs) = c.txn_commit_offsets(1, req);
    assert_eq!(
        errors(&res),
        vec![ErrorCode::NONE, ErrorCode::OFFSET_METADATA_TOO_LARGE]
    );
    assert_eq!(recs.unwrap().records.len(), 1);
    // Nothing valid: nothing to write.
    let mut req = txn_commit("other", PID, &[("t", 1, 2)]);
    req.offsets[0].metadata = Some("x".repeat(cfg().offset_metadata_max_bytes + 1));
    let (_, recs) = c.txn_commit_offsets(1, req);
    assert!(recs.is_none());
    assert!(!c.group_ids().contains(&"other".to_owned()));
}

#[test]
fn classic_group_member_checks_v3() {
    let mut c = coordinator();
    let (member, generation) = stable_single(&mut c, G, 0);
    // Versions 0-2 (no member fields) are accepted even though the group has members.
    let (res, _) = c.txn_commit_offsets(1, txn_commit(G, PID, &[("t", 0, 1)]));
    assert_eq!(errors(&res), vec![ErrorCode::NONE]);
    let with = |member: &str, generation: i32, instance: Option<&str>| {
        let mut r = txn_commit(G, PID, &[("t", 0, 2)]);
        r.member_id = member.into();
        r.generation_id = generation;
        r.group_instance_id = instance.map(Into::into);
        r
    };
    let (res, _) = c.txn_commit_offsets(2, with(&member, generation, None));
    assert_eq!(errors(&res), vec![ErrorCode::NONE]);
    let (res, _) = c.txn_commit_offsets(2, with(&member, generation + 1, None));
    assert_eq!(errors(&res), vec![ErrorCode::ILLEGAL_GENERATION]);
    let (res, _) = c.txn_commit_offsets(2, with("stranger", generation, None));
    assert_eq!(errors(&res), vec![ErrorCode::UNKNOWN_MEMBER_ID]);
    let (res, _) = c.txn_commit_offsets(2, with("", generation, None));
    assert_eq!(errors(&res), vec![ErrorCode::UNKNOWN_MEMBER_ID]);

    // A static member: the wrong member id for its instance is fenced.
    let mut c = coordinator();
    let fx = c.join_group(0, 1, static_join_req(G, "", "inst"));
    let j = join_of(&fx, 1);
    let mut s = sync_req(G, j.generation_id, &j.member_id);
    s.group_instance_id = Some("inst".into());
    c.sync_group(0, 2, s);
    let (res, _) = c.txn_commit_offsets(2, with("someone-else", j.generation_id, Some("inst")));
    assert_eq!(errors(&res), vec![ErrorCode::FENCED_INSTANCE_ID]);
    let (res, _) = c.txn_commit_offsets(2, with(&j.member_id, j.generation_id, Some("inst")));
    assert_eq!(errors(&res), vec![ErrorCode::NONE]);
}

#[test]
fn consumer_group_member_checks_v3() {
    let mut c = coordinator();
    let t = vec![("t".to_owned(), topic_id(1), 2)];
    let (r, _) = c.consumer_heartbeat(
        0,
        ConsumerHeartbeat {
            group_id: G.into(),
            member_id: "m1".into(),
            member_epoch: 0,
            rebalance_timeout_ms: 5000,
            subscribed_topic_names: Some(vec!["t".into()]),
            topic_partitions: Some(vec![]),
            client_id: "cli".into(),
            client_host: "/1.2.3.4".into(),
            ..Default::default()
        },
        &t,
    );
    assert_eq!(r.error, ErrorCode::NONE);
    let epoch = r.member_epoch;
    let with = |member: &str, generation: i32| {
        let mut r = txn_commit(G, PID, &[("t", 0, 2)]);
        r.member_id = member.into();
        r.generation_id = generation;
        r
    };
    let (res, _) = c.txn_commit_offsets(1, with("", -1));
    assert_eq!(
        errors(&res),
        vec![ErrorCode::NONE],
        "no member fields: not checked"
    );
    let (res, _) = c.txn_commit_offsets(1, with("m1", epoch));
    assert_eq!(errors(&res), vec![ErrorCode::NONE]);
    let (res, _) = c.txn_commit_offsets(1, with("m1", epoch + 1));
    assert_eq!(
        errors(&res),
        vec![ErrorCode::ILLEGAL_GENERATION],
        "not STALE_MEMBER_EPOCH"
    );
    let (res, _) = c.txn_commit_offsets(1, with("m9", epoch));
    assert_eq!(errors(&res), vec![ErrorCode::UNKNOWN_MEMBER_ID]);
}

#[test]
fn replay_rebuilds_pending_and_committed() {
    // Live: two transactions, one committed and one still open, plus a plain commit.
    let mut live = coordinator();
    let (_, a) = live.txn_commit_offsets(100, txn_commit(G, 1, &[("t", 0, 10)]));
    let (_, b) = live.txn_commit_offsets(110, txn_commit(G, 2, &[("t", 1, 20)]));
    let (_, plain) = live.commit_offsets(
        120,
        CommitRequest {
            group_id: G.into(),
            generation_id: -1,
            offsets: vec![CommitOffset {
                topic: "t".into(),
                partition: 2,
                offset: 30,
                leader_epoch: -1,
                metadata: None,
            }],
            ..Default::default()
        },
    );
    live.complete_txn(1, true, everyone);

    // The log, in order: batch of pid 1, batch of pid 2, plain record, COMMIT marker of 1.
    let mut c = coordinator();
    for r in &a.unwrap().records {
        let back = GroupRecord::decode(&r.key(), r.value().as_deref()).unwrap();
        c.replay_txn(1, &back);
    }
    for r in &b.unwrap().records {
        c.replay_txn(2, r);
    }
    for r in records(&plain) {
        c.replay(&r);
    }
    c.complete_txn(1, true, everyone);
    for (t, p) in [("t", 0), ("t", 1), ("t", 2)] {
        assert_eq!(offset(&c, G, t, p), offset(&live, G, t, p), "{t}-{p}");
    }
    assert_eq!(offset(&c, G, "t", 1), -1);
    assert!(c.has_pending_txn_offsets(G, "t", 1));
    // The open transaction's ABORT marker (e.g. after a fence) drops it.
    c.complete_txn(2, false, everyone);
    assert!(!c.has_pending_txn_offsets(G, "t", 1));
    assert_eq!(offset(&c, G, "t", 1), -1);
}
