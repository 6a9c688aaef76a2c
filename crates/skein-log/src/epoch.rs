//! The leader-epoch cache: which leader epoch started at which offset.
//!
//! Kafka's `LeaderEpochFileCache`: followers use it (through OffsetForLeaderEpoch) to find where
//! their log diverges from a new leader's. Entries are strictly increasing in both epoch and
//! start offset.

/// In-memory list of `(epoch, start_offset)`; persistence is done by the `Log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    /// Builds a cache from checkpointed entries, dropping any that break monotonicity (which a
    /// well-formed file never has).
    pub(crate) fn from_entries(raw: Vec<(i32, i64)>) -> Self {
        let mut cache = LeaderEpochCache::default();
        for (epoch, start) in raw {
            if cache
                .entries
                .last()
                .is_none_or(|&(e, s)| epoch > e && start >= s)
            {
                cache.entries.push((epoch, start));
            }
        }
        cache
    }

    pub(crate) fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether anything changed.
    ///
    /// As in Kafka, a new entry replaces every entry with an epoch at least as large or a start
    /// offset at least as large (those can only come from a log that is being rewritten).
    pub(crate) fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if self.latest_epoch() == Some(epoch) {
            return false;
        }
        self.entries.retain(|&(e, s)| e < epoch && s < start_offset);
        self.entries.push((epoch, start_offset));
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch `<= requested` and the start offset of the next
    /// larger epoch (or the log end offset for the latest epoch). `None` when undefined.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let &(latest, _) = self.entries.last()?;
        if requested < 0 {
            return None;
        }
        if requested == latest {
            return Some((latest, log_end_offset));
        }
        let higher = self.entries.iter().position(|&(e, _)| e > requested)?;
        let end = self.entries[higher].1;
        if higher == 0 {
            // The requested epoch precedes everything we know: it ended where our first began.
            Some((requested, end))
        } else {
            Some((self.entries[higher - 1].0, end))
        }
    }

    /// Removes entries starting at or after `end_offset` (the log was truncated there).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end_offset);
        before != self.entries.len()
    }

    /// Drops entries wholly before `start_offset`; the entry covering it now starts there.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self.entries.iter().rposition(|&(_, s)| s <= start_offset);
        match covering {
            Some(i) => {
                let changed = i > 0 || self.entries[i].1 != start_offset;
                self.entries.drain(..i);
                self.entries[0].1 = start_offset;
                changed
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka() {
        let mut c = LeaderEpochCache::default();
        assert_eq!(c.end_offset_for(0, 10), None);
        assert!(c.assign(1, 0));
        assert!(!c.assign(1, 5));
        assert!(c.assign(3, 10));
        assert!(c.assign(4, 20));
        assert_eq!(c.end_offset_for(4, 30), Some((4, 30)));
        assert_eq!(c.end_offset_for(3, 30), Some((3, 20)));
        assert_eq!(c.end_offset_for(2, 30), Some((1, 10)));
        assert_eq!(c.end_offset_for(0, 30), Some((0, 0)));
        assert_eq!(c.end_offset_for(5, 30), None);
    }

    #[test]
    fn truncation() {
        let mut c = LeaderEpochCache::from_entries(vec![(1, 0), (3, 10), (4, 20)]);
        assert!(c.truncate_from_end(20));
        assert_eq!(c.entries(), &[(1, 0), (3, 10)]);
        assert!(c.truncate_from_start(15));
        assert_eq!(c.entries(), &[(3, 15)]);
        assert!(!c.truncate_from_start(15));
        // A new epoch at an offset already used replaces the older entry.
        assert!(c.assign(5, 15));
        assert_eq!(c.entries(), &[(5, 15)]);
    }
}
