//! Idempotent producer state of one partition: the epoch and recent sequence ranges of each
//! producer id, so that retried batches are recognised and gaps are refused.
//!
//! The state is rebuilt after a restart by scanning the batch headers in the log, so a
//! producer that retries a batch written just before a crash gets its original offset back
//! instead of a second copy.

use std::collections::{HashMap, VecDeque};

use crate::error::ErrorCode;

/// How many recent batches per producer are remembered for duplicate detection. Kafka keeps
/// five, matching the client's `max.in.flight.requests.per.connection` limit for idempotence.
pub const RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRange {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<BatchRange>,
}

impl ProducerEntry {
    fn last_seq(&self) -> Option<i32> {
        self.recent.back().map(|b| b.last_seq)
    }
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
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Checks a batch of `producer_id`/`epoch` spanning sequences `first_seq..=last_seq`.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> SequenceCheck {
        let Some(entry) = self.producers.get(&producer_id) else {
            // An unknown producer may start at any sequence: its state may have been removed
            // by retention, and refusing it would wedge the producer.
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

    /// Records a written batch.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
        base_offset: i64,
    ) {
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.recent.clear();
            entry.epoch = epoch;
        }
        if entry.recent.len() == RECENT_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(BatchRange {
            first_seq,
            last_seq,
            base_offset,
        });
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 9), SequenceCheck::Append);
        s.record(7, 0, 0, 9, 100);
        assert_eq!(s.check(7, 0, 10, 19), SequenceCheck::Append);
        s.record(7, 0, 10, 19, 110);
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
        s.record(7, 3, 0, 4, 0);
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
            s.record(1, 0, i * 10, i * 10 + 9, i as i64 * 10);
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
        s.record(1, 0, i32::MAX - 1, i32::MAX, 0);
        assert_eq!(s.check(1, 0, 0, 5), SequenceCheck::Append);
    }
}
