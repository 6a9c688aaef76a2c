//! Idempotent producer state of one partition: the epoch and recent sequence ranges of each
//! producer id, so that retried batches are recognised and gaps are refused.
//!
//! The state is bounded three ways, as a client can otherwise make it grow forever (every
//! short-lived idempotent producer leaves an id behind):
//! - a producer that has written nothing for `producer.id.expiration.ms` (a day, as Kafka) is
//!   forgotten by the periodic [`ProducerStates::expire`]; its next batch is then accepted
//!   whatever its sequence, as Kafka does;
//! - the producers held by all partitions together are capped by
//!   `skein.producer.ids.max`: past it, a partition that records a new producer first forgets
//!   its own least recently active ones;
//! - a producer with an open transaction is never forgotten (its transaction holds the last
//!   stable offset back until a marker ends it);
//! - the state is snapshotted into the partition directory (at segment roll and at shutdown,
//!   [`ProducerStates::encode`]), so a restart reads the snapshot and scans only the batches
//!   written after it, not every batch header in the log.
//!
//! Transactions: each producer's open transaction (the offset of its first batch, set by its
//! first transactional batch and cleared by the COMMIT or ABORT marker) and the newest
//! transaction coordinator epoch its markers carried. The partition's last stable offset is
//! the first offset of the oldest open transaction ([`ProducerStates::first_unstable_offset`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::error::ErrorCode;

/// How many recent batches per producer are remembered for duplicate detection. Kafka keeps
/// five, matching the client's `max.in.flight.requests.per.connection` limit for idempotence.
pub const RECENT_BATCHES: usize = 5;

/// The broker-wide account of producer state, shared by every partition's [`ProducerStates`].
#[derive(Debug)]
pub struct ProducerLimits {
    /// The most producer entries all partitions together hold (`skein.producer.ids.max`).
    max_held: usize,
    /// Entries held now, over every partition.
    held: AtomicUsize,
    /// Entries forgotten because they were idle too long.
    pub expired: Counter,
    /// Entries forgotten to stay under `max_held`.
    pub evicted: Counter,
}

impl ProducerLimits {
    pub fn new(max_held: usize) -> Arc<ProducerLimits> {
        Arc::new(ProducerLimits {
            max_held,
            held: AtomicUsize::new(0),
            expired: Counter::default(),
            evicted: Counter::default(),
        })
    }

    /// Producer entries held by all partitions.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn forget(&self, count: usize) {
        self.held.fetch_sub(count, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRange {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    /// When this producer last wrote (the broker's clock), for expiry and eviction.
    last_write_ms: i64,
    recent: VecDeque<BatchRange>,
    /// The newest transaction coordinator epoch seen in this producer's markers (-1: none).
    coordinator_epoch: i32,
    /// The first offset of this producer's open transaction.
    txn_first_offset: Option<i64>,
}

impl Default for ProducerEntry {
    fn default() -> Self {
        ProducerEntry {
            epoch: 0,
            last_write_ms: 0,
            recent: VecDeque::new(),
            coordinator_epoch: -1,
            txn_first_offset: None,
        }
    }
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.recent.back().map(|b| b.last_seq)
    }
}

/// What DescribeProducers shows of one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// When it last wrote, by the broker's clock.
    pub last_write_ms: i64,
    /// The newest coordinator epoch of its markers, -1 if none.
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction, -1 if none.
    pub current_txn_start_offset: i64,
}

/// A transaction ended by a marker (see [`ProducerStates::complete_txn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    /// The first offset of the oldest transaction still open after this one ended, or the
    /// offset after the marker.
    pub last_stable_offset: i64,
}

/// The verdict on an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Write it.
    Append,
    /// Already written at this offset: answer success with the original base offset.
    Duplicate { base_offset: i64 },
    /// Refuse it with this error.
    Reject(ErrorCode),
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Producer states of one partition, by producer id.
#[derive(Debug)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// The open transactions: `(first offset, producer id)`, oldest first.
    ongoing: BTreeSet<(i64, i64)>,
    limits: Arc<ProducerLimits>,
}

impl Default for ProducerStates {
    /// A partition's state under its own, unlimited account (for tests).
    fn default() -> Self {
        ProducerStates::new(ProducerLimits::new(usize::MAX))
    }
}

impl Drop for ProducerStates {
    fn drop(&mut self) {
        self.limits.forget(self.producers.len());
    }
}

/// The snapshot format's version byte. Version 1 had no transaction fields; it still loads.
const SNAPSHOT_VERSION: u8 = 2;
const SNAPSHOT_VERSION_1: u8 = 1;
/// Bytes a version-2 snapshot adds to each producer: coordinator epoch (i32) and the open
/// transaction's first offset (i64, -1 for none).
const SNAPSHOT_TXN_LEN: usize = 4 + 8;
/// Bytes of one producer in a snapshot before its batch ranges: id, epoch, last write, count.
const SNAPSHOT_ENTRY_LEN: usize = 8 + 2 + 8 + 1;
/// Bytes of one batch range in a snapshot: first and last sequence, base offset.
const SNAPSHOT_RANGE_LEN: usize = 4 + 4 + 8;

impl ProducerStates {
    pub fn new(limits: Arc<ProducerLimits>) -> ProducerStates {
        ProducerStates {
            producers: HashMap::new(),
            ongoing: BTreeSet::new(),
            limits,
        }
    }

    /// Checks a batch of `producer_id`/`epoch` spanning sequences `first_seq..=last_seq`.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> SequenceCheck {
        let Some(entry) = self.producers.get(&producer_id) else {
            // An unknown producer may start at any sequence: its state may have expired or
            // been removed with old segments, and refusing it would wedge the producer.
            return SequenceCheck::Append;
        };
        if epoch < entry.epoch {
            return SequenceCheck::Reject(ErrorCode::INVALID_PRODUCER_EPOCH);
        }
        if epoch > entry.epoch {
            return if first_seq == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(b) = entry
            .recent
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate {
                base_offset: b.base_offset,
            };
        }
        let Some(last) = entry.last_seq() else {
            return SequenceCheck::Append;
        };
        if first_seq == next_seq(last) {
            return SequenceCheck::Append;
        }
        // A batch wholly before the oldest remembered one was written long ago (the client
        // only retries batches it has not seen acknowledged, and acknowledges in order).
        let oldest = entry.recent.front().map(|b| b.first_seq).unwrap_or(last);
        if last_seq < oldest && first_seq <= last {
            return SequenceCheck::Reject(ErrorCode::DUPLICATE_SEQUENCE_NUMBER);
        }
        SequenceCheck::Reject(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
    }

    /// Records a batch written at `now_ms`.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
        base_offset: i64,
        now_ms: i64,
    ) {
        let is_new = !self.producers.contains_key(&producer_id);
        if is_new {
            let held = self.limits.held.fetch_add(1, Ordering::Relaxed) + 1;
            if held > self.limits.max_held {
                self.evict_least_recent();
            }
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.recent.clear();
            entry.epoch = epoch;
        }
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
        if entry.recent.len() == RECENT_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(BatchRange {
            first_seq,
            last_seq,
            base_offset,
        });
    }

    /// Forgets this partition's least recently active eighth (at least one), so the broker
    /// stays near `skein.producer.ids.max` without a full scan for every new producer.
    fn evict_least_recent(&mut self) {
        if self.producers.is_empty() {
            return;
        }
        let mut ages: Vec<(i64, i64)> = self
            .producers
            .iter()
            .filter(|(_, e)| e.txn_first_offset.is_none())
            .map(|(&id, e)| (e.last_write_ms, id))
            .collect();
        if ages.is_empty() {
            return;
        }
        let count = (ages.len() / 8).max(1);
        ages.select_nth_unstable(count - 1);
        for &(_, id) in &ages[..count] {
            self.producers.remove(&id);
        }
        self.limits.forget(count);
        self.limits.evicted.inc_by(count as u64);
        tracing::debug!(
            count,
            "forgot idle producers: skein.producer.ids.max reached"
        );
    }

    /// Forgets the producers that have not written for `expiration_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_write_ms) < expiration_ms
        });
        let gone = before - self.producers.len();
        if gone > 0 {
            self.limits.forget(gone);
            self.limits.expired.inc_by(gone as u64);
        }
        gone
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Kafka's transactional rules for a data batch that passed [`check`](Self::check) as
    /// new: a producer with an open transaction may write only transactional batches, and
    /// only in the epoch that opened it (a newer epoch must first have the old transaction
    /// ended by its coordinator's markers): INVALID_TXN_STATE otherwise.
    pub fn check_txn(
        &self,
        producer_id: i64,
        epoch: i16,
        transactional: bool,
    ) -> Option<ErrorCode> {
        let entry = self.producers.get(&producer_id)?;
        entry.txn_first_offset?;
        (!transactional || epoch != entry.epoch).then_some(ErrorCode::INVALID_TXN_STATE)
    }

    /// Whether a transactional batch of `producer_id`/`epoch` would open a new transaction
    /// here (the case KIP-890 part 1 verifies with the coordinator before writing).
    pub fn opens_txn(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers
            .get(&producer_id)
            .is_none_or(|e| e.txn_first_offset.is_none() || e.epoch != epoch)
    }

    /// Records that a transactional batch of `producer_id` was written at `offset`: it opens
    /// the producer's transaction unless one is open. Call after [`record`](Self::record).
    pub fn begin_txn(&mut self, producer_id: i64, offset: i64) {
        let Some(entry) = self.producers.get_mut(&producer_id) else {
            return;
        };
        if entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(offset);
            self.ongoing.insert((offset, producer_id));
        }
    }

    /// Checks a marker the coordinator asks to write, as Kafka's leader does: one from an
    /// older producer epoch is INVALID_PRODUCER_EPOCH, one from an older coordinator epoch
    /// than the producer's last marker is TRANSACTION_COORDINATOR_FENCED.
    pub fn check_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
    ) -> Option<ErrorCode> {
        let entry = self.producers.get(&producer_id)?;
        if epoch < entry.epoch {
            return Some(ErrorCode::INVALID_PRODUCER_EPOCH);
        }
        (coordinator_epoch < entry.coordinator_epoch)
            .then_some(ErrorCode::TRANSACTION_COORDINATOR_FENCED)
    }

    /// Records a COMMIT or ABORT marker of `producer_id` written at `offset` (at `now_ms`):
    /// ends its open transaction and takes the marker's epochs (a newer producer epoch, as a
    /// coordinator fencing a producer writes, clears the remembered sequences). Returns the
    /// transaction it ended, if one was open (a marker for a partition with no data of the
    /// transaction ends nothing).
    pub fn complete_txn(
        &mut self,
        producer_id: i64,
        epoch: i16,
        coordinator_epoch: i32,
        offset: i64,
        now_ms: i64,
    ) -> Option<CompletedTxn> {
        if !self.producers.contains_key(&producer_id) {
            let held = self.limits.held.fetch_add(1, Ordering::Relaxed) + 1;
            if held > self.limits.max_held {
                self.evict_least_recent();
            }
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.recent.clear();
            entry.epoch = epoch;
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
        let first_offset = entry.txn_first_offset.take()?;
        self.ongoing.remove(&(first_offset, producer_id));
        let last_stable_offset = self.first_unstable_offset().unwrap_or(offset + 1);
        Some(CompletedTxn {
            producer_id,
            first_offset,
            last_offset: offset,
            last_stable_offset,
        })
    }

    /// The first offset of the oldest open transaction: the last stable offset, unless the
    /// high watermark is lower.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.first().map(|&(offset, _)| offset)
    }

    /// The open transactions, `(producer id, first offset)`, oldest first.
    pub fn open_txns(&self) -> Vec<(i64, i64)> {
        self.ongoing.iter().map(|&(o, id)| (id, o)).collect()
    }

    /// Every remembered producer, by id (DescribeProducers).
    pub fn describe(&self) -> Vec<ProducerSummary> {
        let mut out: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ProducerSummary {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.last_seq().unwrap_or(-1),
                last_write_ms: e.last_write_ms,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_by_key(|p| p.producer_id);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The state as snapshot bytes: a version byte, the producer count (u32), then per
    /// producer its id (i64), epoch (i16), last write (i64), coordinator epoch (i32), open
    /// transaction's first offset (i64, -1 for none), batch count (u8) and each batch's first
    /// and last sequence (i32) and base offset (i64), big-endian. (Version 1 had no
    /// coordinator epoch or transaction.)
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            5 + self.producers.len() * (SNAPSHOT_ENTRY_LEN + 2 * SNAPSHOT_RANGE_LEN),
        );
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, e) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_write_ms.to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.push(e.recent.len() as u8);
            for b in &e.recent {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
            }
        }
        out
    }

    /// Rebuilds the state from [`encode`](Self::encode)'s bytes under `limits`. Nothing is
    /// reserved from counts in the bytes before the bytes for it are seen to be there.
    pub fn decode(bytes: &[u8], limits: Arc<ProducerLimits>) -> Result<ProducerStates, String> {
        let mut states = ProducerStates::new(limits);
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], String> {
            if r.len() < n {
                return Err(format!("truncated: {} bytes left, {n} needed", r.len()));
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Ok(head)
        };
        let version = take(1)?[0];
        if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_1 {
            return Err(format!("unknown producer snapshot version {version}"));
        }
        let entry_len = if version == SNAPSHOT_VERSION_1 {
            SNAPSHOT_ENTRY_LEN
        } else {
            SNAPSHOT_ENTRY_LEN + SNAPSHOT_TXN_LEN
        };
        let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
        for _ in 0..count {
            let head = take(entry_len)?;
            let id = i64::from_be_bytes(head[0..8].try_into().expect("8 bytes"));
            let epoch = i16::from_be_bytes(head[8..10].try_into().expect("2 bytes"));
            let last_write_ms = i64::from_be_bytes(head[10..18].try_into().expect("8 bytes"));
            let (coordinator_epoch, txn_first_offset) = if version == SNAPSHOT_VERSION_1 {
                (-1, None)
            } else {
                let coordinator_epoch =
                    i32::from_be_bytes(head[18..22].try_into().expect("4 bytes"));
                let first = i64::from_be_bytes(head[22..30].try_into().expect("8 bytes"));
                if first < -1 {
                    return Err(format!("producer {id} has a transaction at offset {first}"));
                }
                (coordinator_epoch, (first >= 0).then_some(first))
            };
            let ranges = head[entry_len - 1] as usize;
            if ranges > RECENT_BATCHES {
                return Err(format!(
                    "producer {id} has {ranges} batches, over {RECENT_BATCHES}"
                ));
            }
            let mut recent = VecDeque::with_capacity(ranges);
            for _ in 0..ranges {
                let b = take(SNAPSHOT_RANGE_LEN)?;
                recent.push_back(BatchRange {
                    first_seq: i32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
                    last_seq: i32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
                    base_offset: i64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
                });
            }
            let entry = ProducerEntry {
                epoch,
                last_write_ms,
                recent,
                coordinator_epoch,
                txn_first_offset,
            };
            if states.producers.insert(id, entry).is_some() {
                return Err(format!("producer {id} appears twice"));
            }
            states.limits.held.fetch_add(1, Ordering::Relaxed);
            if let Some(first) = txn_first_offset {
                states.ongoing.insert((first, id));
            }
        }
        if !r.is_empty() {
            return Err(format!("{} bytes after the last producer", r.len()));
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 9), SequenceCheck::Append);
        s.record(7, 0, 0, 9, 100, 0);
        assert_eq!(s.check(7, 0, 10, 19), SequenceCheck::Append);
        s.record(7, 0, 10, 19, 110, 0);
        assert_eq!(
            s.check(7, 0, 0, 9),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            s.check(7, 0, 10, 19),
            SequenceCheck::Duplicate { base_offset: 110 }
        );
    }

    #[test]
    fn gaps_and_old_epochs_are_refused() {
        let mut s = ProducerStates::default();
        s.record(7, 3, 0, 4, 0, 0);
        assert_eq!(
            s.check(7, 3, 6, 8),
            SequenceCheck::Reject(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            s.check(7, 2, 5, 8),
            SequenceCheck::Reject(ErrorCode::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            s.check(7, 4, 5, 8),
            SequenceCheck::Reject(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(s.check(7, 4, 0, 8), SequenceCheck::Append);
    }

    #[test]
    fn batches_older_than_the_window_are_duplicates() {
        let mut s = ProducerStates::default();
        for i in 0..10 {
            s.record(1, 0, i * 10, i * 10 + 9, i as i64 * 10, 0);
        }
        assert_eq!(
            s.check(1, 0, 0, 9),
            SequenceCheck::Reject(ErrorCode::DUPLICATE_SEQUENCE_NUMBER)
        );
        assert_eq!(s.check(1, 0, 100, 109), SequenceCheck::Append);
    }

    #[test]
    fn sequence_wraps_at_i32_max() {
        let mut s = ProducerStates::default();
        s.record(1, 0, i32::MAX - 1, i32::MAX, 0, 0);
        assert_eq!(s.check(1, 0, 0, 5), SequenceCheck::Append);
    }

    #[test]
    fn idle_producers_expire_and_then_start_anywhere() {
        let limits = ProducerLimits::new(usize::MAX);
        let mut s = ProducerStates::new(limits.clone());
        s.record(1, 0, 0, 9, 0, 1_000);
        s.record(2, 0, 0, 9, 10, 5_000);
        assert_eq!(
            s.check(1, 0, 50, 59),
            SequenceCheck::Reject(ErrorCode::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(s.expire(60_999, 60_000), 0);
        assert_eq!(s.expire(61_000, 60_000), 1);
        assert_eq!((s.len(), limits.held()), (1, 1));
        assert_eq!(limits.expired.get(), 1);
        // Forgotten: its next batch is accepted whatever its sequence, as in Kafka.
        assert_eq!(s.check(1, 0, 50, 59), SequenceCheck::Append);
        drop(s);
        assert_eq!(limits.held(), 0);
    }

    #[test]
    fn the_broker_wide_cap_forgets_the_least_recent_producers() {
        let limits = ProducerLimits::new(100);
        let mut a = ProducerStates::new(limits.clone());
        let mut b = ProducerStates::new(limits.clone());
        for id in 0..1000 {
            let s = if id % 2 == 0 { &mut a } else { &mut b };
            s.record(id, 0, 0, 0, id, id);
        }
        assert!(limits.held() <= 100, "{}", limits.held());
        assert_eq!(limits.held(), a.len() + b.len());
        assert!(limits.evicted.get() >= 900);
        // The newest producers are the ones kept, and still recognise their retries.
        assert_eq!(
            a.check(998, 0, 0, 0),
            SequenceCheck::Duplicate { base_offset: 998 }
        );
        assert_eq!(
            b.check(999, 0, 0, 0),
            SequenceCheck::Duplicate { base_offset: 999 }
        );
        assert_eq!(a.check(0, 0, 5, 5), SequenceCheck::Append);
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let limits = ProducerLimits::new(usize::MAX);
        let mut s = ProducerStates::new(limits.clone());
        for i in 0..8 {
            s.record(7, 2, i * 10, i * 10 + 9, i as i64 * 10, 1_000 + i as i64);
        }
        s.record(9, 0, 0, 0, 80, 2_000);
        let bytes = s.encode();
        let back = ProducerStates::decode(&bytes, limits.clone()).unwrap();
        assert_eq!(limits.held(), 4);
        assert_eq!(back.len(), 2);
        assert_eq!(
            back.check(7, 2, 70, 79),
            SequenceCheck::Duplicate { base_offset: 70 }
        );
        assert_eq!(back.check(7, 2, 80, 89), SequenceCheck::Append);
        assert_eq!(
            back.check(7, 1, 80, 89),
            SequenceCheck::Reject(ErrorCode::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(
            back.check(9, 0, 0, 0),
            SequenceCheck::Duplicate { base_offset: 80 }
        );
        for cut in 0..bytes.len() {
            assert!(
                ProducerStates::decode(&bytes[..cut], limits.clone()).is_err(),
                "{cut}"
            );
        }
        // Every failed decode gave back what it counted.
        assert_eq!(limits.held(), 4);
        let mut huge = vec![SNAPSHOT_VERSION];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(ProducerStates::decode(&huge, limits).is_err());
    }

    #[test]
    fn transactions_open_at_their_first_batch_and_set_the_lso_with_interleaved_producers() {
        let mut s = ProducerStates::default();
        assert_eq!(s.first_unstable_offset(), None);
        // Producer 1 opens at 0, producer 2 at 3, producer 1 writes more at 5.
        s.record(1, 0, 0, 2, 0, 0);
        assert!(s.opens_txn(1, 0));
        s.begin_txn(1, 0);
        assert!(!s.opens_txn(1, 0));
        s.record(2, 0, 0, 1, 3, 0);
        s.begin_txn(2, 3);
        s.record(1, 0, 3, 3, 5, 0);
        s.begin_txn(1, 5);
        assert_eq!(s.first_unstable_offset(), Some(0));
        assert_eq!(s.open_txns(), vec![(1, 0), (2, 3)]);
        // Producer 1 aborts at 6: producer 2's transaction now holds the LSO at 3.
        let done = s.complete_txn(1, 0, 4, 6, 0).unwrap();
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 6,
                last_stable_offset: 3
            }
        );
        assert_eq!(s.first_unstable_offset(), Some(3));
        // Producer 2 commits at 7: nothing open, the LSO follows the marker.
        let done = s.complete_txn(2, 0, 4, 7, 0).unwrap();
        assert_eq!((done.first_offset, done.last_stable_offset), (3, 8));
        assert_eq!(s.first_unstable_offset(), None);
        // A marker with nothing open ends nothing but is remembered.
        assert_eq!(s.complete_txn(2, 0, 5, 8, 0), None);
        let d = s.describe();
        assert_eq!(
            (d[1].coordinator_epoch, d[1].current_txn_start_offset),
            (5, -1)
        );
    }

    #[test]
    fn transactional_rules_and_marker_checks() {
        let mut s = ProducerStates::default();
        s.record(1, 2, 0, 0, 10, 0);
        s.begin_txn(1, 10);
        // Inside the transaction only transactional batches of its epoch.
        assert_eq!(s.check_txn(1, 2, true), None);
        assert_eq!(s.check_txn(1, 2, false), Some(ErrorCode::INVALID_TXN_STATE));
        assert_eq!(s.check_txn(1, 3, true), Some(ErrorCode::INVALID_TXN_STATE));
        assert_eq!(s.check_txn(9, 0, false), None);
        // Markers: older producer epoch, then older coordinator epoch.
        assert_eq!(
            s.check_marker(1, 1, 0),
            Some(ErrorCode::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(s.check_marker(1, 2, 0), None);
        // The coordinator fences with a bumped epoch: the marker ends the old transaction.
        let done = s.complete_txn(1, 3, 5, 11, 0).unwrap();
        assert_eq!(done.first_offset, 10);
        assert_eq!(
            s.check_marker(1, 3, 4),
            Some(ErrorCode::TRANSACTION_COORDINATOR_FENCED)
        );
        assert_eq!(s.check_marker(1, 3, 5), None);
        // The old epoch is fenced, the new one starts at sequence 0.
        assert_eq!(
            s.check(1, 2, 1, 1),
            SequenceCheck::Reject(ErrorCode::INVALID_PRODUCER_EPOCH)
        );
        assert_eq!(s.check(1, 3, 0, 0), SequenceCheck::Append);
        assert_eq!(s.check_txn(1, 3, false), None);
    }

    #[test]
    fn open_transactions_survive_expiry_eviction_and_snapshots() {
        let limits = ProducerLimits::new(usize::MAX);
        let mut s = ProducerStates::new(limits.clone());
        s.record(1, 0, 0, 4, 100, 1_000);
        s.begin_txn(1, 100);
        s.record(2, 1, 0, 0, 105, 1_000);
        s.complete_txn(2, 1, 3, 106, 1_000);
        s.record(3, 0, 0, 0, 107, 1_000);
        s.begin_txn(3, 107);
        let bytes = s.encode();
        assert_eq!(bytes[0], SNAPSHOT_VERSION);
        let back = ProducerStates::decode(&bytes, limits.clone()).unwrap();
        assert_eq!(back.open_txns(), vec![(1, 100), (3, 107)]);
        assert_eq!(back.describe(), s.describe());
        for cut in 0..bytes.len() {
            assert!(
                ProducerStates::decode(&bytes[..cut], limits.clone()).is_err(),
                "{cut}"
            );
        }
        // Idle for long: only the producer without an open transaction is forgotten.
        let mut back = back;
        assert_eq!(back.expire(10_000_000, 60_000), 1);
        assert_eq!(back.open_txns(), vec![(1, 100), (3, 107)]);
        assert_eq!(back.first_unstable_offset(), Some(100));
    }

    #[test]
    fn a_version_1_snapshot_still_loads() {
        // Version 1: no coordinator epoch, no transaction.
        let mut v1 = vec![SNAPSHOT_VERSION_1];
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(&7i64.to_be_bytes());
        v1.extend_from_slice(&2i16.to_be_bytes());
        v1.extend_from_slice(&5_000i64.to_be_bytes());
        v1.push(1);
        v1.extend_from_slice(&0i32.to_be_bytes());
        v1.extend_from_slice(&9i32.to_be_bytes());
        v1.extend_from_slice(&40i64.to_be_bytes());
        let s = ProducerStates::decode(&v1, ProducerLimits::new(usize::MAX)).unwrap();
        assert_eq!(
            s.check(7, 2, 0, 9),
            SequenceCheck::Duplicate { base_offset: 40 }
        );
        assert_eq!(s.first_unstable_offset(), None);
        let d = s.describe();
        assert_eq!(
            (d[0].coordinator_epoch, d[0].current_txn_start_offset),
            (-1, -1)
        );
        // An unknown version is refused.
        let mut v9 = v1.clone();
        v9[0] = 9;
        assert!(ProducerStates::decode(&v9, ProducerLimits::new(usize::MAX)).is_err());
    }
}
