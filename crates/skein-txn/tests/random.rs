//! Randomised sequences of requests, failed and delayed writes, marker reports, timeouts
//! and coordinator moves, checking after every step that the coordinator's state matches
//! what replaying `__transaction_state` gives, and that no producer id and epoch is ever
//! handed out twice.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{config, tp, EPOCH, H, PARTITIONS};
use skein_txn::{ErrorCode, Response, TxnConfig, TxnCoordinator, TxnState};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const IDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

fn check_log_matches_memory(h: &H) {
    for p in 0..PARTITIONS {
        let mut replayed = TxnCoordinator::new(config());
        replayed.load_partition(p, 1, h.log.get(&p).cloned().unwrap_or_default());
        for id in IDS {
            if h.c.partition_for(id) != p {
                continue;
            }
            let live = h.c.transaction(id);
            let back = replayed.transaction(id);
            match (&live, &back) {
                (Some(l), _) if l.pending_write => {}
                // Created in memory but its first write failed: nothing in the log.
                (Some(l), None) if l.producer_epoch == -1 => {}
                (Some(l), Some(b)) => assert_eq!(
                    (
                        l.producer_id,
                        l.producer_epoch,
                        l.state,
                        &l.partitions,
                        l.start_ms,
                        l.last_update_ms,
                        l.timeout_ms,
                        l.last_producer_id
                    ),
                    (
                        b.producer_id,
                        b.producer_epoch,
                        b.state,
                        &b.partitions,
                        b.start_ms,
                        b.last_update_ms,
                        b.timeout_ms,
                        b.last_producer_id
                    ),
                    "{id}: memory and log disagree"
                ),
                (None, None) => {}
                _ => panic!("{id}: memory {live:?} log {back:?}"),
            }
        }
    }
}

/// Runs one sequence; returns the states written to the log (None = tombstone).
fn run(seed: u64, steps: usize) -> BTreeSet<Option<TxnState>> {
    let mut rng = Rng(seed | 1);
    let mut h = H::with(TxnConfig {
        id_expiration_ms: 50_000,
        ..config()
    });
    h.auto_persist = false;
    // What each id's producer believes: (producer id, epoch).
    let mut producers: BTreeMap<&str, (i64, i16)> = BTreeMap::new();
    let mut handed_out: BTreeSet<(i64, i16)> = BTreeSet::new();
    let mut init_tokens: BTreeMap<u64, &str> = BTreeMap::new();
    let mut seen_answers = 0;
    let mut epoch = EPOCH;
    for _ in 0..steps {
        let id = IDS[rng.below(IDS.len() as u64) as usize];
        let (pid, e) = producers.get(id).copied().unwrap_or((-1, -1));
        match rng.below(12) {
            0 | 1 => {
                let (ep, ee) = if rng.below(3) == 0 {
                    (pid, e)
                } else {
                    (-1, -1)
                };
                let (ep, ee) = if ep == -1 || ee == -1 {
                    (-1, -1)
                } else {
                    (ep, ee)
                };
                let t = h.init_v(4, id, 5_000, ep, ee);
                init_tokens.insert(t, id);
            }
            2 | 3 => {
                let parts = [tp("t", rng.below(3) as i32), tp("u", 0)];
                let n = 1 + rng.below(2) as usize;
                h.add_v(3, id, pid, e, &parts[..n]);
            }
            4 => {
                let fx =
                    h.c.add_offsets(h.now, 1_000_000 + h.next_token, 3, id, pid, e, 4);
                h.next_token += 1;
                h.run(fx);
            }
            5 => {
                h.end_v(3, id, pid, e, rng.below(2) == 0);
            }
            6..=8 => {
                if !h.held.is_empty() {
                    let i = rng.below(h.held.len() as u64) as usize;
                    let p = h.held.remove(i);
                    h.held.insert(0, p);
                    let result = match rng.below(5) {
                        0 => Err(ErrorCode::NOT_ENOUGH_REPLICAS),
                        1 => Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
                        _ => Ok(()),
                    };
                    h.complete_held(result);
                }
            }
            9 => {
                if !h.markers.is_empty() {
                    let i = rng.below(h.markers.len() as u64) as usize;
                    let m = h.markers.remove(i);
                    let fx = h.c.markers_written(
                        h.now,
                        &m.transactional_id,
                        m.producer_id,
                        m.producer_epoch,
                    );
                    h.run(fx);
                }
            }
            10 => {
                h.now += rng.below(4_000) as i64;
                h.tick();
            }
            _ => {
                // The coordinator of one partition moves away and back: in-flight writes
                // and marker requests are lost; the log is replayed.
                let p = rng.below(PARTITIONS as u64) as i32;
                let fx = h.c.unload_partition(p, None);
                h.run(fx);
                h.held.retain(|w| w.partition != p);
                h.markers
                    .retain(|m| h.c.partition_for(&m.transactional_id) != p);
                epoch += 1;
                h.c.start_loading(p);
                let fx =
                    h.c.load_partition(p, epoch, h.log.get(&p).cloned().unwrap_or_default());
                h.run(fx);
            }
        }
        // New answers: track the producer ids and epochs handed out.
        for (t, r) in &h.answers[seen_answers..] {
            if let (
                Some(id),
                Response::InitProducerId {
                    error,
                    producer_id,
                    producer_epoch,
                },
            ) = (init_tokens.get(t), r)
            {
                if error.is_none() {
                    let pair = (*producer_id, *producer_epoch);
                    let prev = producers.get(id).copied();
                    // A KIP-360 retry of a lost answer legitimately gets the same pair.
                    assert!(
                        handed_out.insert(pair) || prev == Some(pair),
                        "{pair:?} handed out twice"
                    );
                    producers.insert(id, pair);
                }
            }
        }
        seen_answers = h.answers.len();
        for m in &h.markers {
            let v =
                h.c.transaction(&m.transactional_id)
                    .expect("markers for a known id");
            assert!(matches!(
                v.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            ));
            assert_eq!(
                (v.producer_id, v.producer_epoch),
                (m.producer_id, m.producer_epoch)
            );
        }
        check_log_matches_memory(&h);
    }
    h.log
        .values()
        .flatten()
        .map(|r| r.value.as_ref().map(|v| v.state))
        .collect()
}

#[test]
fn random_sequences_keep_memory_equal_to_the_log() {
    let mut seen = BTreeSet::new();
    for seed in 1..=200u64 {
        seen.extend(run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 300));
    }
    // The sequences reach every persisted state and expiry.
    let want: BTreeSet<Option<TxnState>> = [
        Some(TxnState::Empty),
        Some(TxnState::Ongoing),
        Some(TxnState::PrepareCommit),
        Some(TxnState::PrepareAbort),
        Some(TxnState::CompleteCommit),
        Some(TxnState::CompleteAbort),
        None,
    ]
    .into_iter()
    .collect();
    assert_eq!(seen, want);
}
