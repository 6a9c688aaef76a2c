//! The transaction coordinator's state machine: happy paths, fencing, timeouts, expiry,
//! replay, retries, failed writes, and Kafka's error codes per request version.

mod common;

use common::{config, tp, EPOCH, H, PARTITIONS};
use skein_txn::{
    Effect, ErrorCode, InitProducerId, Response, TxnConfig, TxnCoordinator, TxnLogValue, TxnRecord,
    TxnState, CONSUMER_OFFSETS_TOPIC,
};

const ID: &str = "txn-a";

#[test]
fn commit_happy_path() {
    let mut h = H::new();
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 0));
    let view = h.c.transaction(ID).unwrap();
    assert_eq!((view.state, view.producer_epoch), (TxnState::Empty, 0));

    h.now = 2_000;
    let parts = [tp("t", 0), tp("t", 1), tp("u", 0)];
    assert_eq!(h.add(ID, 1000, 0, &parts), ErrorCode::NONE);
    let view = h.c.transaction(ID).unwrap();
    assert_eq!(view.state, TxnState::Ongoing);
    assert_eq!(view.start_ms, 2_000);
    assert_eq!(view.partitions, parts.to_vec());

    h.now = 3_000;
    let t = h.end_v(4, ID, 1000, 0, true);
    assert_eq!(h.answer(t), None, "EndTxn waits for the markers");
    assert_eq!(h.state(ID), TxnState::PrepareCommit);
    assert_eq!(h.markers.len(), 1);
    let m = &h.markers[0];
    assert_eq!(m.transactional_id, ID);
    assert_eq!((m.producer_id, m.producer_epoch), (1000, 0));
    assert_eq!(m.coordinator_epoch, EPOCH);
    assert!(m.committed);
    assert_eq!(m.partitions, parts.to_vec());

    h.write_markers();
    assert_eq!(
        h.answer(t),
        Some(Response::EndTxn {
            error: ErrorCode::NONE
        })
    );
    let view = h.c.transaction(ID).unwrap();
    assert_eq!(view.state, TxnState::CompleteCommit);
    assert!(view.partitions.is_empty());
    assert!(!view.markers_pending && !view.pending_write);
    assert_eq!(
        h.logged_states(ID),
        vec![
            Some(TxnState::Empty),
            Some(TxnState::Ongoing),
            Some(TxnState::PrepareCommit),
            Some(TxnState::CompleteCommit)
        ]
    );

    // The next transaction starts from CompleteCommit with a new start time.
    h.now = 4_000;
    assert_eq!(h.add(ID, 1000, 0, &[tp("t", 0)]), ErrorCode::NONE);
    assert_eq!(h.c.transaction(ID).unwrap().start_ms, 4_000);
    assert_eq!(h.c.transaction(ID).unwrap().partitions, vec![tp("t", 0)]);
}

#[test]
fn abort_happy_path() {
    let mut h = H::new();
    let (_, pid, epoch) = h.init(ID);
    assert_eq!(
        h.run_txn(ID, pid, epoch, &[tp("t", 2)], false),
        ErrorCode::NONE
    );
    assert_eq!(h.state(ID), TxnState::CompleteAbort);
    let last = h.log[&h.c.partition_for(ID)].last().unwrap().clone();
    let v = last.value.unwrap();
    assert_eq!(v.state, TxnState::CompleteAbort);
    assert!(v.partitions.is_empty());
}

#[test]
fn end_txn_answers_at_prepare_when_configured_like_kafka() {
    let mut h = H::with(TxnConfig {
        end_txn_waits_for_markers: false,
        ..config()
    });
    let (_, pid, epoch) = h.init(ID);
    assert_eq!(h.add(ID, pid, epoch, &[tp("t", 0)]), ErrorCode::NONE);
    let t = h.end_v(3, ID, pid, epoch, true);
    assert_eq!(
        h.answer(t),
        Some(Response::EndTxn {
            error: ErrorCode::NONE
        })
    );
    assert_eq!(h.state(ID), TxnState::PrepareCommit);
    assert_eq!(h.markers.len(), 1);
    h.write_markers();
    assert_eq!(h.state(ID), TxnState::CompleteCommit);
}

#[test]
fn end_txn_retries_and_wrong_states() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    let ans = |h: &mut H, commit: bool| {
        let t = h.end_v(4, ID, pid, e, commit);
        h.answer(t).map(|r| r.error())
    };
    // Empty: nothing to end.
    assert_eq!(ans(&mut h, true), Some(ErrorCode::INVALID_TXN_STATE));
    assert_eq!(ans(&mut h, false), Some(ErrorCode::INVALID_TXN_STATE));

    assert_eq!(h.add(ID, pid, e, &[tp("t", 0)]), ErrorCode::NONE);
    let first = h.end_v(4, ID, pid, e, true);
    // PrepareCommit with markers outstanding: a retry is told to wait, the opposite
    // outcome is refused.
    assert_eq!(ans(&mut h, true), Some(ErrorCode::CONCURRENT_TRANSACTIONS));
    assert_eq!(ans(&mut h, false), Some(ErrorCode::INVALID_TXN_STATE));
    // So are InitProducerId and AddPartitions.
    assert_eq!(h.init(ID).0, ErrorCode::CONCURRENT_TRANSACTIONS);
    assert_eq!(
        h.add(ID, pid, e, &[tp("t", 1)]),
        ErrorCode::CONCURRENT_TRANSACTIONS
    );
    h.write_markers();
    assert_eq!(h.answer(first).unwrap().error(), ErrorCode::NONE);
    // CompleteCommit: a retried commit succeeds, an abort is refused.
    assert_eq!(ans(&mut h, true), Some(ErrorCode::NONE));
    assert_eq!(ans(&mut h, false), Some(ErrorCode::INVALID_TXN_STATE));

    // The same for aborts.
    assert_eq!(h.run_txn(ID, pid, e, &[tp("t", 0)], false), ErrorCode::NONE);
    assert_eq!(ans(&mut h, false), Some(ErrorCode::NONE));
    assert_eq!(ans(&mut h, true), Some(ErrorCode::INVALID_TXN_STATE));
    assert!(h.markers.is_empty(), "retries write no markers");
}

#[test]
fn end_txn_request_errors_per_version() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    assert_eq!(h.add(ID, pid, e, &[tp("t", 0)]), ErrorCode::NONE);
    let ans = |h: &mut H, v: i16, id: &str, pid: i64, e: i16| {
        let t = h.end_v(v, id, pid, e, true);
        h.answer(t).unwrap().error()
    };
    assert_eq!(ans(&mut h, 4, "", pid, e), ErrorCode::INVALID_REQUEST);
    assert_eq!(
        ans(&mut h, 4, "nobody", pid, e),
        ErrorCode::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        ans(&mut h, 4, ID, pid + 1, e),
        ErrorCode::INVALID_PRODUCER_ID_MAPPING
    );
    for v in 0..=1 {
        assert_eq!(
            ans(&mut h, v, ID, pid, e + 1),
            ErrorCode::INVALID_PRODUCER_EPOCH,
            "v{v}"
        );
    }
    for v in 2..=4 {
        assert_eq!(
            ans(&mut h, v, ID, pid, e + 1),
            ErrorCode::PRODUCER_FENCED,
            "v{v}"
        );
    }
    // Transaction version 2 is not offered.
    assert_eq!(ans(&mut h, 5, ID, pid, e), ErrorCode::UNSUPPORTED_VERSION);
    assert_eq!(h.state(ID), TxnState::Ongoing, "no error changed the state");
    // Every version commits.
    for v in 0..=4 {
        let t = h.end_v(v, ID, pid, e, true);
        h.write_markers();
        assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE, "v{v}");
        assert_eq!(h.add(ID, pid, e, &[tp("t", 0)]), ErrorCode::NONE);
    }
}

#[test]
fn init_producer_id_bumps_the_epoch() {
    let mut h = H::new();
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 0));
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 1));
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 2));
    let v = h.c.transaction(ID).unwrap();
    assert_eq!(v.last_producer_epoch, -1);
    assert_eq!(v.timeout_ms, 60_000);
    // Another id gets another producer id.
    assert_eq!(h.init("txn-b"), (ErrorCode::NONE, 1001, 0));
    // The new timeout is taken.
    let t = h.init_v(4, ID, 1_234, -1, -1);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
    assert_eq!(h.c.transaction(ID).unwrap().timeout_ms, 1_234);
}

#[test]
fn init_producer_id_request_errors() {
    let mut h = H::new();
    let max = config().max_timeout_ms;
    let err = |h: &mut H, id: &str, timeout: i32, pid: i64, e: i16| {
        let t = h.init_v(4, id, timeout, pid, e);
        h.answer(t).unwrap()
    };
    let invalid = |e| Response::InitProducerId {
        error: e,
        producer_id: -1,
        producer_epoch: -1,
    };
    assert_eq!(
        err(&mut h, "", 1000, -1, -1),
        invalid(ErrorCode::INVALID_REQUEST)
    );
    assert_eq!(
        err(&mut h, ID, 0, -1, -1),
        invalid(ErrorCode::INVALID_TRANSACTION_TIMEOUT)
    );
    assert_eq!(
        err(&mut h, ID, -5, -1, -1),
        invalid(ErrorCode::INVALID_TRANSACTION_TIMEOUT)
    );
    assert_eq!(
        err(&mut h, ID, max + 1, -1, -1),
        invalid(ErrorCode::INVALID_TRANSACTION_TIMEOUT)
    );
    assert_eq!(
        err(&mut h, ID, 1000, 5, -1),
        invalid(ErrorCode::INVALID_REQUEST)
    );
    assert_eq!(
        err(&mut h, ID, 1000, -1, 5),
        invalid(ErrorCode::INVALID_REQUEST)
    );
    assert!(
        h.c.transaction(ID).is_none(),
        "no id was created by a refused request"
    );
    assert_eq!(err(&mut h, ID, max, -1, -1).error(), ErrorCode::NONE);
}

#[test]
fn non_transactional_init_allocates_without_state() {
    let mut c = TxnCoordinator::new(config());
    let req = InitProducerId {
        transactional_id: None,
        transaction_timeout_ms: 0,
        producer_id: -1,
        producer_epoch: -1,
    };
    let fx = c.init_producer_id(0, 9, 4, req.clone(), &mut || Ok(77));
    assert_eq!(
        fx,
        vec![Effect::Respond(
            9,
            Response::InitProducerId {
                error: ErrorCode::NONE,
                producer_id: 77,
                producer_epoch: 0
            }
        )]
    );
    // An allocation failure (no producer id block yet) is answered as is.
    let fx = c.init_producer_id(0, 10, 4, req, &mut || {
        Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)
    });
    assert_eq!(
        fx,
        vec![Effect::Respond(
            10,
            Response::InitProducerId {
                error: ErrorCode::COORDINATOR_LOAD_IN_PROGRESS,
                producer_id: -1,
                producer_epoch: -1
            }
        )]
    );
    assert!(c.transactional_ids().is_empty());
}

#[test]
fn new_id_allocation_failure_creates_nothing() {
    let mut h = H::new();
    let fx = h.c.init_producer_id(
        0,
        5,
        4,
        InitProducerId {
            transactional_id: Some(ID.to_owned()),
            transaction_timeout_ms: 1000,
            producer_id: -1,
            producer_epoch: -1,
        },
        &mut || Err(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS),
    );
    assert_eq!(fx.len(), 1);
    assert!(
        matches!(&fx[0], Effect::Respond(5, r) if r.error() == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS)
    );
    assert!(h.c.transaction(ID).is_none());
}

#[test]
fn a_new_producer_fences_an_ongoing_transaction() {
    let mut h = H::new();
    let (_, pid, e0) = h.init(ID);
    assert_eq!(
        h.add(ID, pid, e0, &[tp("t", 0), tp("t", 1)]),
        ErrorCode::NONE
    );

    // The second producer: the old epoch's transaction is aborted with a bumped epoch that
    // is never handed out, and it is told to retry.
    h.now = 5_000;
    assert_eq!(h.init(ID), (ErrorCode::CONCURRENT_TRANSACTIONS, -1, -1));
    assert_eq!(h.state(ID), TxnState::PrepareAbort);
    assert_eq!(h.markers.len(), 1);
    let m = h.markers[0].clone();
    assert!(!m.committed);
    assert_eq!((m.producer_id, m.producer_epoch), (pid, e0 + 1));
    assert_eq!(m.partitions, vec![tp("t", 0), tp("t", 1)]);
    // Until the markers are written it keeps being told to retry.
    assert_eq!(h.init(ID).0, ErrorCode::CONCURRENT_TRANSACTIONS);
    // The zombie is fenced everywhere, with the error its request version knows.
    let t = h.end_v(1, ID, pid, e0, true);
    assert_eq!(
        h.answer(t).unwrap().error(),
        ErrorCode::INVALID_PRODUCER_EPOCH
    );
    let t = h.end_v(2, ID, pid, e0, true);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::PRODUCER_FENCED);

    h.write_markers();
    assert_eq!(h.state(ID), TxnState::CompleteAbort);
    assert_eq!(h.init(ID), (ErrorCode::NONE, pid, e0 + 2));
    assert_eq!(
        h.logged_states(ID),
        vec![
            Some(TxnState::Empty),
            Some(TxnState::Ongoing),
            Some(TxnState::PrepareAbort),
            Some(TxnState::CompleteAbort),
            Some(TxnState::Empty)
        ]
    );
    // The old producer, still on epoch 0.
    for (v, want) in [
        (0, ErrorCode::INVALID_PRODUCER_EPOCH),
        (1, ErrorCode::INVALID_PRODUCER_EPOCH),
        (2, ErrorCode::PRODUCER_FENCED),
        (3, ErrorCode::PRODUCER_FENCED),
    ] {
        let t = h.add_v(v, ID, pid, e0, &[tp("t", 0)]);
        assert_eq!(
            h.answer(t).unwrap().error(),
            want,
            "AddPartitionsToTxn v{v}"
        );
    }
    for (v, want) in [
        (0, ErrorCode::INVALID_PRODUCER_EPOCH),
        (1, ErrorCode::INVALID_PRODUCER_EPOCH),
        (2, ErrorCode::PRODUCER_FENCED),
        (4, ErrorCode::PRODUCER_FENCED),
    ] {
        let fx = h.c.add_offsets(h.now, 99, v, ID, pid, e0, 3);
        assert_eq!(
            fx,
            vec![Effect::Respond(99, Response::AddOffsets { error: want })],
            "AddOffsetsToTxn v{v}"
        );
    }
    // KIP-360: a recovering producer of another producer id is fenced.
    for (v, want) in [
        (3, ErrorCode::INVALID_PRODUCER_EPOCH),
        (4, ErrorCode::PRODUCER_FENCED),
        (5, ErrorCode::PRODUCER_FENCED),
    ] {
        let t = h.init_v(v, ID, 1000, pid + 50, 0);
        assert_eq!(h.answer(t).unwrap().error(), want, "InitProducerId v{v}");
    }
}

#[test]
fn a_failed_fence_write_leaves_the_old_transaction_alone() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    assert_eq!(h.add(ID, pid, e, &[tp("t", 0)]), ErrorCode::NONE);
    h.auto_persist = false;
    let t = h.init_v(4, ID, 1000, -1, -1);
    assert_eq!(h.held.len(), 1);
    h.complete_held(Err(ErrorCode::NOT_ENOUGH_REPLICAS));
    assert_eq!(
        h.answer(t).unwrap().error(),
        ErrorCode::COORDINATOR_NOT_AVAILABLE
    );
    let v = h.c.transaction(ID).unwrap();
    assert_eq!((v.state, v.producer_epoch), (TxnState::Ongoing, e));
    assert!(h.markers.is_empty());
    // The old producer can still commit.
    h.auto_persist = true;
    assert_eq!(h.run_txn(ID, pid, e, &[tp("t", 0)], true), ErrorCode::NONE);
}

#[test]
fn kip_360_recovery() {
    let mut h = H::new();
    let (_, pid, _) = h.init(ID);
    // A producer recovering at epoch 0 gets a bump and the last epoch is remembered.
    let t = h.init_v(4, ID, 1000, pid, 0);
    assert_eq!(
        h.answer(t).unwrap(),
        Response::InitProducerId {
            error: ErrorCode::NONE,
            producer_id: pid,
            producer_epoch: 1
        }
    );
    assert_eq!(h.c.transaction(ID).unwrap().last_producer_epoch, 0);
    // Its retry (the answer was lost) gets the same epoch again.
    let t = h.init_v(4, ID, 1000, pid, 0);
    assert_eq!(
        h.answer(t).unwrap(),
        Response::InitProducerId {
            error: ErrorCode::NONE,
            producer_id: pid,
            producer_epoch: 1
        }
    );
    // Recovering from the current epoch bumps again.
    let t = h.init_v(4, ID, 1000, pid, 1);
    assert_eq!(
        h.answer(t).unwrap(),
        Response::InitProducerId {
            error: ErrorCode::NONE,
            producer_id: pid,
            producer_epoch: 2
        }
    );
    // An epoch that is neither current nor last is fenced.
    let t = h.init_v(4, ID, 1000, pid, 0);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::PRODUCER_FENCED);
    // A plain InitProducerId (no expected epoch) forgets the last epoch.
    assert_eq!(h.init(ID), (ErrorCode::NONE, pid, 3));
    assert_eq!(h.c.transaction(ID).unwrap().last_producer_epoch, -1);
    // A brand-new id accepts any recovering producer (it migrates to the new id).
    let t = h.init_v(4, "fresh", 1000, 12345, 7);
    assert_eq!(
        h.answer(t).unwrap(),
        Response::InitProducerId {
            error: ErrorCode::NONE,
            producer_id: 1001,
            producer_epoch: 0
        }
    );
}

fn loaded_with(state: TxnState, epoch: i16, partitions: Vec<(&str, Vec<i32>)>) -> H {
    let mut h = H::new();
    let p = h.c.partition_for(ID);
    let rec = TxnRecord {
        transactional_id: ID.to_owned(),
        value: Some(TxnLogValue {
            producer_id: 500,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: epoch,
            timeout_ms: 60_000,
            state,
            partitions: partitions
                .into_iter()
                .map(|(t, ps)| (t.to_owned(), ps))
                .collect(),
            last_update_ms: 900,
            start_ms: 800,
            client_transaction_version: 0,
        }),
    };
    let fx = h.c.load_partition(p, EPOCH + 1, vec![rec]);
    h.run(fx);
    h
}

#[test]
fn an_exhausted_epoch_rotates_the_producer_id() {
    let mut h = loaded_with(TxnState::CompleteCommit, i16::MAX - 1, vec![]);
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 0));
    let v = h.c.transaction(ID).unwrap();
    assert_eq!((v.last_producer_id, v.last_producer_epoch), (500, -1));
    // The previous producer id survives a reload (PreviousProducerId, value version 1).
    let p = h.c.partition_for(ID);
    let log = h.log[&p].clone();
    let mut c = TxnCoordinator::new(config());
    c.load_partition(p, 9, log);
    assert_eq!(c.transaction(ID).unwrap().last_producer_id, 500);

    // KIP-360 through a rotation: the retry of the old producer id with its exhausted
    // epoch gets the new id's epoch.
    let mut h = loaded_with(TxnState::CompleteCommit, i16::MAX - 1, vec![]);
    let t = h.init_v(4, ID, 1000, 500, i16::MAX - 1);
    assert_eq!(
        h.answer(t).unwrap(),
        Response::InitProducerId {
            error: ErrorCode::NONE,
            producer_id: 1000,
            producer_epoch: 0
        }
    );
    assert_eq!(
        h.c.transaction(ID).unwrap().last_producer_epoch,
        i16::MAX - 1
    );
    let t = h.init_v(4, ID, 1000, 500, i16::MAX - 1);
    assert_eq!(
        h.answer(t).unwrap(),
        Response::InitProducerId {
            error: ErrorCode::NONE,
            producer_id: 1000,
            producer_epoch: 0
        },
        "retry of the rotation"
    );
    // The old producer id with a non-exhausted epoch is fenced.
    let t = h.init_v(4, ID, 1000, 500, 3);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::PRODUCER_FENCED);
    // Even one whose epoch equals the new id's current epoch.
    let t = h.init_v(4, ID, 1000, 500, 0);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::PRODUCER_FENCED);

    // At the very last epoch: a recovering producer with another epoch is fenced (no
    // overflow), with the current one it rotates.
    let mut h = loaded_with(TxnState::CompleteAbort, i16::MAX, vec![]);
    let t = h.init_v(4, ID, 1000, 500, 5);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::PRODUCER_FENCED);
    let t = h.init_v(4, ID, 1000, 500, i16::MAX);
    assert_eq!(
        h.answer(t).unwrap(),
        Response::InitProducerId {
            error: ErrorCode::NONE,
            producer_id: 1000,
            producer_epoch: 0
        }
    );

    // Fencing an ongoing transaction at the last epoch uses it up; the retry rotates.
    let mut h = loaded_with(TxnState::Ongoing, i16::MAX - 1, vec![("t", vec![0])]);
    assert_eq!(h.init(ID).0, ErrorCode::CONCURRENT_TRANSACTIONS);
    assert_eq!(h.markers[0].producer_epoch, i16::MAX);
    h.write_markers();
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 0));
}

#[test]
fn timed_out_transactions_are_aborted_with_a_bumped_epoch() {
    let mut h = H::new();
    let t = h.init_v(4, ID, 1_000, -1, -1);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
    h.now = 10_000;
    assert_eq!(h.add(ID, 1000, 0, &[tp("t", 0)]), ErrorCode::NONE);
    assert_eq!(h.c.next_deadline(), Some(11_001));
    h.now = 11_000;
    h.tick();
    assert_eq!(h.state(ID), TxnState::Ongoing, "not past the timeout yet");
    h.now = 11_001;
    h.tick();
    assert_eq!(h.state(ID), TxnState::PrepareAbort);
    assert_eq!(h.markers.len(), 1);
    assert_eq!(
        (h.markers[0].producer_epoch, h.markers[0].committed),
        (1, false)
    );
    // The producer learns it was fenced when it tries to commit.
    let t = h.end_v(3, ID, 1000, 0, true);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::PRODUCER_FENCED);
    h.write_markers();
    assert_eq!(h.state(ID), TxnState::CompleteAbort);
    assert_eq!(h.c.transaction(ID).unwrap().producer_epoch, 1);
    // Nothing more to abort.
    h.now = 100_000;
    h.tick();
    assert!(h.markers.is_empty());
    // A new InitProducerId continues from the bumped epoch.
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 2));
}

#[test]
fn idle_ids_expire_but_not_during_a_transaction() {
    let exp = 60_000;
    let mut h = H::with(TxnConfig {
        id_expiration_ms: exp,
        max_timeout_ms: 900_000,
        ..config()
    });
    let (_, pid, e) = h.init(ID);
    assert_eq!(h.run_txn(ID, pid, e, &[tp("t", 0)], true), ErrorCode::NONE);
    let updated = h.c.transaction(ID).unwrap().last_update_ms;
    assert_eq!(h.c.next_deadline(), Some(updated + exp));
    h.now = updated + exp - 1;
    h.tick();
    assert!(h.c.transaction(ID).is_some());
    h.now = updated + exp;
    h.tick();
    assert!(h.c.transaction(ID).is_none());
    assert_eq!(
        h.logged_states(ID).last(),
        Some(&None),
        "a tombstone was written"
    );
    let d = h.c.describe(&[ID.to_owned()]);
    assert_eq!(d[0].error, ErrorCode::TRANSACTIONAL_ID_NOT_FOUND);
    // The id starts over with a new producer id.
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1001, 0));

    // An ongoing transaction never expires: it is aborted by its timeout first.
    let t = h.init_v(4, "long", 900_000, -1, -1);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
    assert_eq!(h.add("long", 1002, 0, &[tp("t", 0)]), ErrorCode::NONE);
    h.now += exp * 2;
    h.tick();
    assert_eq!(h.state("long"), TxnState::Ongoing);
    assert!(h.logged_states("long").iter().all(Option::is_some));
}

#[test]
fn a_failed_tombstone_keeps_the_id() {
    let mut h = H::with(TxnConfig {
        id_expiration_ms: 10,
        ..config()
    });
    h.init(ID);
    h.now += 10;
    h.auto_persist = false;
    h.tick();
    assert_eq!(h.held.len(), 1);
    assert!(h.held[0].record.value.is_none());
    // While the tombstone is being written, requests wait.
    assert_eq!(h.init(ID).0, ErrorCode::CONCURRENT_TRANSACTIONS);
    h.complete_held(Err(ErrorCode::NOT_LEADER_OR_FOLLOWER));
    assert_eq!(h.state(ID), TxnState::Empty);
    h.auto_persist = true;
    assert_eq!(h.init(ID), (ErrorCode::NONE, 1000, 1));
}

#[test]
fn failed_writes_revert_and_answer_kafkas_errors() {
    let cases = [
        (
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            ErrorCode::NOT_COORDINATOR,
        ),
        (ErrorCode::KAFKA_STORAGE_ERROR, ErrorCode::NOT_COORDINATOR),
        (
            ErrorCode::NOT_ENOUGH_REPLICAS,
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
        ),
        (
            ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
        ),
        (
            ErrorCode::REQUEST_TIMED_OUT,
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
        ),
        (
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            ErrorCode::COORDINATOR_NOT_AVAILABLE,
        ),
        (
            ErrorCode::MESSAGE_TOO_LARGE,
            ErrorCode::UNKNOWN_SERVER_ERROR,
        ),
        (
            ErrorCode::RECORD_LIST_TOO_LARGE,
            ErrorCode::UNKNOWN_SERVER_ERROR,
        ),
        (ErrorCode::NOT_COORDINATOR, ErrorCode::NOT_COORDINATOR),
    ];
    for (append, want) in cases {
        let mut h = H::new();
        h.auto_persist = false;
        // InitProducerId.
        let t = h.init_v(4, ID, 1000, -1, -1);
        h.complete_held(Err(append));
        assert_eq!(h.answer(t).unwrap().error(), want, "{append:?}");
        assert_eq!(
            h.c.transaction(ID).unwrap().producer_epoch,
            -1,
            "not bumped"
        );
        let t = h.init_v(4, ID, 1000, -1, -1);
        h.complete_held(Ok(()));
        assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
        // AddPartitionsToTxn.
        let t = h.add_v(3, ID, 1000, 0, &[tp("t", 0)]);
        h.complete_held(Err(append));
        assert_eq!(h.answer(t).unwrap().error(), want);
        assert_eq!(h.state(ID), TxnState::Empty);
        let t = h.add_v(3, ID, 1000, 0, &[tp("t", 0)]);
        h.complete_held(Ok(()));
        assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
        // AddOffsetsToTxn.
        let fx = h.c.add_offsets(h.now, 500, 3, ID, 1000, 0, 7);
        h.run(fx);
        h.complete_held(Err(append));
        assert_eq!(h.answer(500).unwrap().error(), want);
        assert_eq!(h.c.transaction(ID).unwrap().partitions, vec![tp("t", 0)]);
        // EndTxn.
        let t = h.end_v(4, ID, 1000, 0, true);
        h.complete_held(Err(append));
        assert_eq!(h.answer(t).unwrap().error(), want);
        assert_eq!(h.state(ID), TxnState::Ongoing);
        assert!(h.markers.is_empty());
        let t = h.end_v(4, ID, 1000, 0, true);
        h.complete_held(Ok(()));
        assert_eq!(h.markers.len(), 1);
        h.write_markers();
        h.complete_held(Ok(()));
        assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
    }
}

#[test]
fn a_failed_complete_write_is_retried() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    assert_eq!(h.add(ID, pid, e, &[tp("t", 0)]), ErrorCode::NONE);
    let t = h.end_v(4, ID, pid, e, false);
    h.auto_persist = false;
    h.write_markers();
    h.complete_held(Err(ErrorCode::NOT_ENOUGH_REPLICAS));
    assert_eq!(h.answer(t), None, "still waiting");
    assert_eq!(h.state(ID), TxnState::PrepareAbort);
    let backoff = config().retry_backoff_ms;
    assert_eq!(h.c.next_deadline(), Some(h.now + backoff));
    h.tick();
    assert!(h.held.is_empty(), "not before the backoff");
    h.now += backoff;
    h.tick();
    assert_eq!(h.held.len(), 1);
    assert_eq!(
        h.held[0].record.value.as_ref().unwrap().state,
        TxnState::CompleteAbort
    );
    h.complete_held(Ok(()));
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
    assert_eq!(h.state(ID), TxnState::CompleteAbort);
}

#[test]
fn requests_wait_while_a_write_is_pending() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    h.auto_persist = false;
    let first = h.add_v(3, ID, pid, e, &[tp("t", 0)]);
    assert_eq!(h.answer(first), None);
    let t = h.add_v(3, ID, pid, e, &[tp("t", 1)]);
    assert_eq!(
        h.answer(t).unwrap().error(),
        ErrorCode::CONCURRENT_TRANSACTIONS
    );
    let t = h.end_v(4, ID, pid, e, true);
    assert_eq!(
        h.answer(t).unwrap().error(),
        ErrorCode::CONCURRENT_TRANSACTIONS
    );
    let t = h.init_v(4, ID, 1000, -1, -1);
    assert_eq!(
        h.answer(t).unwrap().error(),
        ErrorCode::CONCURRENT_TRANSACTIONS
    );
    // The pending partition is not in the transaction until persisted.
    let v = h.c.verify_partitions(5, ID, pid, e, &[tp("t", 0)]);
    assert_eq!(v, vec![(tp("t", 0), ErrorCode::TRANSACTION_ABORTABLE)]);
    h.complete_held(Ok(()));
    assert_eq!(h.answer(first).unwrap().error(), ErrorCode::NONE);
    let v = h.c.verify_partitions(5, ID, pid, e, &[tp("t", 0)]);
    assert_eq!(v, vec![(tp("t", 0), ErrorCode::NONE)]);
    // A stale or unknown completion is ignored.
    assert!(h.c.persisted(h.now, ID, 12345, Ok(())).is_empty());
    assert!(h.c.persisted(h.now, "nobody", 1, Ok(())).is_empty());
}

#[test]
fn adding_known_partitions_writes_nothing() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    assert_eq!(
        h.add(ID, pid, e, &[tp("t", 0), tp("t", 1)]),
        ErrorCode::NONE
    );
    let logged = h.logged_states(ID).len();
    assert_eq!(h.add(ID, pid, e, &[tp("t", 1)]), ErrorCode::NONE);
    assert_eq!(h.logged_states(ID).len(), logged);
    assert_eq!(
        h.add(ID, pid, e, &[tp("t", 1), tp("u", 0)]),
        ErrorCode::NONE
    );
    assert_eq!(h.logged_states(ID).len(), logged + 1);
    assert_eq!(
        h.c.transaction(ID).unwrap().partitions,
        vec![tp("t", 0), tp("t", 1), tp("u", 0)]
    );
}

#[test]
fn add_partitions_request_errors() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    let ans = |h: &mut H, id: &str, pid: i64, e: i16| {
        let t = h.add_v(3, id, pid, e, &[tp("t", 0)]);
        h.answer(t).unwrap().error()
    };
    assert_eq!(ans(&mut h, "", pid, e), ErrorCode::INVALID_REQUEST);
    assert_eq!(
        ans(&mut h, "nobody", pid, e),
        ErrorCode::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        ans(&mut h, ID, pid + 1, e),
        ErrorCode::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(ans(&mut h, ID, pid, e + 1), ErrorCode::PRODUCER_FENCED);
    assert_eq!(h.state(ID), TxnState::Empty);
}

#[test]
fn add_offsets_adds_the_groups_offsets_partition() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    let fx = h.c.add_offsets(h.now, 42, 4, ID, pid, e, 17);
    h.run(fx);
    assert_eq!(
        h.answer(42),
        Some(Response::AddOffsets {
            error: ErrorCode::NONE
        })
    );
    assert_eq!(h.state(ID), TxnState::Ongoing);
    assert_eq!(
        h.c.transaction(ID).unwrap().partitions,
        vec![(CONSUMER_OFFSETS_TOPIC.to_owned(), 17)]
    );
    // The commit writes a marker to it too.
    let t = h.end_v(4, ID, pid, e, true);
    assert_eq!(
        h.markers[0].partitions,
        vec![(CONSUMER_OFFSETS_TOPIC.to_owned(), 17)]
    );
    h.write_markers();
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
    let fx = h.c.add_offsets(h.now, 43, 4, "", pid, e, 17);
    assert_eq!(
        fx,
        vec![Effect::Respond(
            43,
            Response::AddOffsets {
                error: ErrorCode::INVALID_REQUEST
            }
        )]
    );
}

#[test]
fn verify_only_answers_per_partition() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    let parts = [tp("t", 0), tp("t", 1)];
    // Not in a transaction at all.
    assert_eq!(
        h.c.verify_partitions(5, ID, pid, e, &parts),
        vec![
            (tp("t", 0), ErrorCode::TRANSACTION_ABORTABLE),
            (tp("t", 1), ErrorCode::TRANSACTION_ABORTABLE)
        ]
    );
    assert_eq!(h.add(ID, pid, e, &[tp("t", 0)]), ErrorCode::NONE);
    assert_eq!(
        h.c.verify_partitions(5, ID, pid, e, &parts),
        vec![
            (tp("t", 0), ErrorCode::NONE),
            (tp("t", 1), ErrorCode::TRANSACTION_ABORTABLE)
        ]
    );
    assert_eq!(
        h.c.verify_partitions(4, ID, pid, e, &parts),
        vec![
            (tp("t", 0), ErrorCode::NONE),
            (tp("t", 1), ErrorCode::INVALID_TXN_STATE)
        ]
    );
    let all = |e| parts.iter().map(|p| (p.clone(), e)).collect::<Vec<_>>();
    assert_eq!(
        h.c.verify_partitions(5, ID, pid, e + 1, &parts),
        all(ErrorCode::PRODUCER_FENCED)
    );
    assert_eq!(
        h.c.verify_partitions(5, ID, pid + 1, e, &parts),
        all(ErrorCode::INVALID_PRODUCER_ID_MAPPING)
    );
    assert_eq!(
        h.c.verify_partitions(5, "nobody", pid, e, &parts),
        all(ErrorCode::INVALID_PRODUCER_ID_MAPPING)
    );
    assert_eq!(
        h.c.verify_partitions(5, "", pid, e, &parts),
        all(ErrorCode::INVALID_REQUEST)
    );
    let t = h.end_v(4, ID, pid, e, true);
    assert_eq!(
        h.c.verify_partitions(5, ID, pid, e, &parts),
        all(ErrorCode::CONCURRENT_TRANSACTIONS)
    );
    h.write_markers();
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NONE);
    // After the commit the partitions are no longer in a transaction.
    assert_eq!(
        h.c.verify_partitions(5, ID, pid, e, &parts),
        all(ErrorCode::TRANSACTION_ABORTABLE)
    );
}

#[test]
fn loading_and_ownership_errors() {
    let mut c = TxnCoordinator::new(config());
    let p = c.partition_for(ID);
    let other = (p + 1) % PARTITIONS;
    let other_id = (0..)
        .map(|i| format!("id-{i}"))
        .find(|id| c.partition_for(id) == other)
        .unwrap();
    assert!(c.start_loading(p).is_empty());
    let init = |c: &mut TxnCoordinator, id: &str| {
        let fx = c.init_producer_id(
            0,
            1,
            4,
            InitProducerId {
                transactional_id: Some(id.to_owned()),
                transaction_timeout_ms: 1000,
                producer_id: -1,
                producer_epoch: -1,
            },
            &mut || Ok(1),
        );
        match &fx[..] {
            [Effect::Respond(1, r)] => r.error(),
            other => panic!("{other:?}"),
        }
    };
    let loading = ErrorCode::COORDINATOR_LOAD_IN_PROGRESS;
    let nc = ErrorCode::NOT_COORDINATOR;
    for (id, want) in [(ID, loading), (other_id.as_str(), nc)] {
        assert_eq!(init(&mut c, id), want);
        let fx = c.add_partitions(0, 2, 3, id, 1, 0, &[tp("t", 0)]);
        assert_eq!(
            fx,
            vec![Effect::Respond(2, Response::AddPartitions { error: want })]
        );
        let fx = c.add_offsets(0, 3, 3, id, 1, 0, 0);
        assert_eq!(
            fx,
            vec![Effect::Respond(3, Response::AddOffsets { error: want })]
        );
        let fx = c.end_txn(0, 4, 3, id, 1, 0, true);
        assert_eq!(
            fx,
            vec![Effect::Respond(4, Response::EndTxn { error: want })]
        );
        assert_eq!(
            c.verify_partitions(5, id, 1, 0, &[tp("t", 0)]),
            vec![(tp("t", 0), want)]
        );
        assert_eq!(c.describe(&[id.to_owned()])[0].error, want);
    }
    assert_eq!(c.list(0, &[], &[], -1).error, loading);
    assert!(c.load_partition(p, 3, Vec::new()).is_empty());
    assert_eq!(c.list(0, &[], &[], -1).error, ErrorCode::NONE);
    assert_eq!(c.owned_partitions(), vec![(p, 3)]);
    let fx = c.init_producer_id(
        0,
        1,
        4,
        InitProducerId {
            transactional_id: Some(ID.to_owned()),
            transaction_timeout_ms: 1000,
            producer_id: -1,
            producer_epoch: -1,
        },
        &mut || Ok(1),
    );
    assert!(matches!(&fx[..], [Effect::Persist(p)] if p.partition == c.partition_for(ID)));
}

#[test]
fn replay_resumes_prepared_transactions() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    assert_eq!(
        h.add(ID, pid, e, &[tp("t", 0), tp("u", 3)]),
        ErrorCode::NONE
    );
    // Another id, committed, and a third one ongoing.
    let (_, pid_b, e_b) = h.init("b");
    assert_eq!(
        h.run_txn("b", pid_b, e_b, &[tp("t", 1)], true),
        ErrorCode::NONE
    );
    let t = h.end_v(4, ID, pid, e, true);
    let (_, pid_c, e_c) = h.init("c");
    assert_eq!(h.add("c", pid_c, e_c, &[tp("t", 2)]), ErrorCode::NONE);
    assert_eq!(h.markers.len(), 1, "ID's markers are outstanding");

    // The coordinator moves: a fresh one replays each partition's log.
    let mut c = TxnCoordinator::new(config());
    let mut fx = Vec::new();
    for p in 0..PARTITIONS {
        c.start_loading(p);
        fx.extend(c.load_partition(p, EPOCH + 1, h.log.get(&p).cloned().unwrap_or_default()));
    }
    let markers: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::WriteMarkers(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(markers.len(), 1);
    assert_eq!(markers[0].transactional_id, ID);
    assert_eq!(markers[0].coordinator_epoch, EPOCH + 1);
    assert_eq!(markers[0].partitions, vec![tp("t", 0), tp("u", 3)]);
    assert!(markers[0].committed);
    for id in [ID, "b", "c"] {
        let (a, b) = (h.c.transaction(id).unwrap(), c.transaction(id).unwrap());
        assert_eq!(
            (
                a.producer_id,
                a.producer_epoch,
                a.state,
                &a.partitions,
                a.start_ms,
                a.last_update_ms,
                a.timeout_ms
            ),
            (
                b.producer_id,
                b.producer_epoch,
                b.state,
                &b.partitions,
                b.start_ms,
                b.last_update_ms,
                b.timeout_ms
            ),
            "{id}"
        );
    }
    // The resumed markers complete the transaction on the new coordinator.
    let fx = c.markers_written(h.now, ID, pid, e);
    let Effect::Persist(p) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(
        p.record.value.as_ref().unwrap().state,
        TxnState::CompleteCommit
    );
    let fx = c.persisted(h.now, ID, p.write_id, Ok(()));
    assert!(fx.is_empty(), "nobody waits on the new coordinator");
    assert_eq!(c.transaction(ID).unwrap().state, TxnState::CompleteCommit);
    // The old coordinator's report is stale there: nothing happens.
    let _ = t;
    assert!(c.markers_written(h.now, ID, pid, e).is_empty());

    // Tombstones remove ids; Dead and PrepareEpochFence records are ignored.
    let p = h.c.partition_for(ID);
    let mut log = h.log[&p].clone();
    log.push(TxnRecord {
        transactional_id: ID.to_owned(),
        value: None,
    });
    let mut odd = log[0].clone();
    odd.transactional_id = "odd".to_owned();
    odd.value.as_mut().unwrap().state = TxnState::PrepareEpochFence;
    log.push(odd);
    let mut c = TxnCoordinator::new(config());
    c.load_partition(p, 1, log);
    assert!(c.transaction(ID).is_none());
    assert!(c.transaction("odd").is_none());
}

#[test]
fn unloading_answers_waiting_requests() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    assert_eq!(h.add(ID, pid, e, &[tp("t", 0)]), ErrorCode::NONE);
    let end = h.end_v(4, ID, pid, e, true);
    let (_, pid_b, e_b) = h.init("b2");
    h.auto_persist = false;
    let add = h.add_v(3, "b2", pid_b, e_b, &[tp("t", 0)]);
    let p = h.c.partition_for(ID);
    let pb = h.c.partition_for("b2");
    // A stale unload (an older epoch) changes nothing.
    assert!(h.c.unload_partition(p, Some(EPOCH - 1)).is_empty());
    let fx = h.c.unload_partition(p, Some(EPOCH));
    h.run(fx);
    if pb != p {
        let fx = h.c.unload_partition(pb, None);
        h.run(fx);
    }
    assert_eq!(
        h.answer(end),
        Some(Response::EndTxn {
            error: ErrorCode::NOT_COORDINATOR
        })
    );
    assert_eq!(
        h.answer(add),
        Some(Response::AddPartitions {
            error: ErrorCode::NOT_COORDINATOR
        })
    );
    assert!(h.c.transaction(ID).is_none());
    // Late reports are ignored.
    assert!(h.c.markers_written(h.now, ID, pid, e).is_empty());
    h.complete_held(Ok(()));
    assert_eq!(
        h.answers.len(),
        h.answers.iter().filter(|(t, _)| *t != add).count() + 1
    );
    let t = h.end_v(4, ID, pid, e, true);
    assert_eq!(h.answer(t).unwrap().error(), ErrorCode::NOT_COORDINATOR);
}

#[test]
fn describe_and_list() {
    let mut h = H::new();
    let (_, pid, e) = h.init(ID);
    h.now = 5_000;
    assert_eq!(
        h.add(ID, pid, e, &[tp("u", 1), tp("t", 2), tp("t", 0)]),
        ErrorCode::NONE
    );
    let (_, pid_b, _) = h.init("b");
    let d = h.c.describe(&[
        ID.to_owned(),
        "b".to_owned(),
        "zzz".to_owned(),
        String::new(),
    ]);
    assert_eq!(d[0].error, ErrorCode::NONE);
    assert_eq!(d[0].state, "Ongoing");
    assert_eq!(
        (
            d[0].producer_id,
            d[0].producer_epoch,
            d[0].timeout_ms,
            d[0].start_ms
        ),
        (pid, e, 60_000, 5_000)
    );
    assert_eq!(
        d[0].topics,
        vec![("t".to_owned(), vec![0, 2]), ("u".to_owned(), vec![1])]
    );
    assert_eq!((d[1].state.as_str(), d[1].start_ms), ("Empty", -1));
    assert_eq!(d[2].error, ErrorCode::TRANSACTIONAL_ID_NOT_FOUND);
    assert_eq!(d[3].error, ErrorCode::INVALID_REQUEST);

    let ids = |l: &skein_txn::TxnList| {
        l.transactions
            .iter()
            .map(|t| t.transactional_id.clone())
            .collect::<Vec<_>>()
    };
    let all = h.c.list(h.now, &[], &[], -1);
    assert_eq!(all.error, ErrorCode::NONE);
    assert_eq!(ids(&all), vec!["b".to_owned(), ID.to_owned()]);
    assert_eq!(all.transactions[1].state, "Ongoing");
    assert_eq!(all.transactions[1].producer_id, pid);
    let l =
        h.c.list(h.now, &["Ongoing".to_owned(), "Bogus".to_owned()], &[], -1);
    assert_eq!(ids(&l), vec![ID.to_owned()]);
    assert_eq!(l.unknown_state_filters, vec!["Bogus".to_owned()]);
    let l = h.c.list(h.now, &[], &[pid_b], -1);
    assert_eq!(ids(&l), vec!["b".to_owned()]);
    let l = h.c.list(h.now, &["CompleteCommit".to_owned()], &[], -1);
    assert!(l.transactions.is_empty());
    // Duration filter (v1): running strictly longer than the duration. An Empty id has no
    // start time (-1) and always passes, as in Kafka.
    h.now = 8_000;
    let l = h.c.list(h.now, &[], &[], 3_000);
    assert_eq!(ids(&l), vec!["b".to_owned()]);
    let l = h.c.list(h.now, &[], &[], 2_999);
    assert_eq!(ids(&l), vec!["b".to_owned(), ID.to_owned()]);
}
