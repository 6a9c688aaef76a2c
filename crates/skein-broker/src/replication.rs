//! The leader's side of replication, as pure decisions (no I/O, no clock, no locks): what
//! each follower has, where the high watermark is, and when the ISR should change. A
//! [`Partition`](crate::partition::Partition) that leads keeps one [`LeaderState`] under its
//! lock and feeds it follower fetches, its own durable log end and the time.
//!
//! Kafka's rules, reproduced:
//! - A follower's log end is the offset it fetches from (it has everything below it, and,
//!   with `skein.acks.all.fsync`, has fsynced it: followers fsync before fetching further).
//! - A follower is caught up at a fetch that reaches the leader's log end, or the log end the
//!   leader had at the follower's previous fetch (so a steady stream of appends does not
//!   keep a keeping-up follower "behind" forever). One that has not been caught up for
//!   `replica.lag.time.max.ms` leaves the ISR.
//! - A follower outside the ISR joins it once its log end reaches the high watermark and the
//!   start of the leader's epoch.
//! - The high watermark is the lowest log end across the ISR (the leader's own counted only
//!   as far as it is durable) and never moves back. It does not move while the ISR is
//!   smaller than `min.insync.replicas`, nor before every ISR member has fetched in this
//!   leader epoch (a new leader does not expose an unconfirmed high watermark).
//! - A new leader keeps the high watermark it had as a follower until the ISR confirms in
//!   its epoch; while it is below the log end the leader had when the epoch began, clients
//!   asking for the latest offset get OFFSET_NOT_AVAILABLE (KIP-207), and consumer fetches
//!   are served below it (so a fetch past it answers no records, no error).
//! - The low watermark (what a DeleteRecords waits for) is the lowest log start across the
//!   leader and every live follower, each follower's as its last fetch stated it.
//! - An ISR change is asked of the controller with the partition epoch it is based on, one
//!   at a time; while an addition is pending, the high watermark already counts the new
//!   member (KIP-497's "maximal ISR"), while a removal is pending it still counts the
//!   leaving one (so it never advances on a smaller ISR than the committed one).

use std::collections::BTreeMap;

use crate::partition::Assignment;

/// What the leader knows of one follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's log end (its last fetch offset); -1 before its first fetch this epoch.
    pub log_end_offset: i64,
    /// When it was last caught up (ms).
    pub last_caught_up_ms: i64,
    /// When it last fetched (ms), and the leader's log end then.
    pub last_fetch_ms: i64,
    pub last_fetch_leader_leo: i64,
    /// The follower's broker epoch as its fetches state it (KIP-903); -1 until known. Sent
    /// with an ISR expansion so that the controller refuses one based on fetches by an
    /// earlier incarnation of the broker.
    pub broker_epoch: i64,
    /// The follower's log start offset as its last fetch stated it; -1 until known in this
    /// leader epoch. DeleteRecords waits for it (the partition's low watermark).
    pub log_start_offset: i64,
}

/// The leader's replication state of one partition in one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderState {
    pub leader: i32,
    pub leader_epoch: i32,
    /// The leader's log end when it took this epoch: a joining follower must reach it.
    pub epoch_start_offset: i64,
    pub followers: BTreeMap<i32, FollowerProgress>,
    /// An ISR change sent to the controller and not yet seen committed: the new ISR, the
    /// partition epoch it was based on, and when it was sent.
    pub pending: Option<PendingIsr>,
    /// Whether the leader's own log counts only as far as it is fsynced
    /// (`skein.acks.all.fsync` with other replicas), rather than to its end.
    pub durable_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    pub isr: Vec<i32>,
    pub based_on_partition_epoch: i32,
    pub sent_ms: i64,
}

/// How long an unanswered ISR change stays pending before it may be asked again.
pub const PENDING_ISR_RETRY_MS: i64 = 5_000;

impl LeaderState {
    /// The state of a leader that takes `assignment` with its log ending at `log_end_offset`.
    /// ISR members start as caught up now (they get a full lag window to fetch, as in Kafka).
    pub fn new(assignment: &Assignment, log_end_offset: i64, now_ms: i64) -> LeaderState {
        let followers = assignment
            .replicas
            .iter()
            .filter(|r| **r != assignment.leader)
            .map(|r| {
                let caught_up = if assignment.isr.contains(r) {
                    now_ms
                } else {
                    -1
                };
                (
                    *r,
                    FollowerProgress {
                        log_end_offset: -1,
                        last_caught_up_ms: caught_up,
                        last_fetch_ms: -1,
                        last_fetch_leader_leo: -1,
                        broker_epoch: -1,
                        log_start_offset: -1,
                    },
                )
            })
            .collect();
        LeaderState {
            leader: assignment.leader,
            leader_epoch: assignment.leader_epoch,
            epoch_start_offset: log_end_offset,
            followers,
            pending: None,
            durable_only: false,
        }
    }

    /// Keeps the progress of replicas still assigned after a change that kept the leader
    /// and epoch (an ISR change, a reassignment); drops a pending change that was decided.
    pub fn reassigned(&mut self, assignment: &Assignment, now_ms: i64) {
        self.followers
            .retain(|id, _| assignment.replicas.contains(id) && *id != self.leader);
        for r in &assignment.replicas {
            if *r != self.leader {
                self.followers.entry(*r).or_insert(FollowerProgress {
                    log_end_offset: -1,
                    last_caught_up_ms: if assignment.isr.contains(r) {
                        now_ms
                    } else {
                        -1
                    },
                    last_fetch_ms: -1,
                    last_fetch_leader_leo: -1,
                    broker_epoch: -1,
                    log_start_offset: -1,
                });
            }
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.based_on_partition_epoch != assignment.partition_epoch)
        {
            self.pending = None;
        }
    }

    /// Records a follower's fetch from `fetch_offset` while the leader's log ends at
    /// `leader_leo`. Returns false for a replica that is not a follower of this partition.
    pub fn on_fetch(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        leader_leo: i64,
        now_ms: i64,
    ) -> bool {
        let Some(f) = self.followers.get_mut(&follower) else {
            return false;
        };
        if fetch_offset >= leader_leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
        } else if f.last_fetch_ms >= 0 && fetch_offset >= f.last_fetch_leader_leo {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end_offset = fetch_offset;
        f.last_fetch_ms = now_ms;
        f.last_fetch_leader_leo = leader_leo;
        true
    }

    /// Records the broker epoch a follower's fetch stated. A new epoch is a new incarnation
    /// of the broker (it restarted, maybe with less on disk): what the leader knew of it is
    /// forgotten until its fetches say otherwise.
    pub fn note_broker_epoch(&mut self, follower: i32, broker_epoch: i64) {
        if let Some(f) = self.followers.get_mut(&follower) {
            if broker_epoch >= 0 && f.broker_epoch != broker_epoch {
                if f.broker_epoch >= 0 {
                    f.log_end_offset = -1;
                    f.log_start_offset = -1;
                    f.last_fetch_ms = -1;
                    f.last_fetch_leader_leo = -1;
                }
                f.broker_epoch = broker_epoch;
            }
        }
    }

    /// Records the log start offset a follower's fetch stated (-1: the request had none).
    /// Returns whether it changed, which may complete a waiting DeleteRecords.
    pub fn note_log_start(&mut self, follower: i32, log_start_offset: i64) -> bool {
        match self.followers.get_mut(&follower) {
            Some(f) if log_start_offset >= 0 && f.log_start_offset != log_start_offset => {
                f.log_start_offset = log_start_offset;
                true
            }
            _ => false,
        }
    }

    /// The partition's low watermark (Kafka's `lowWatermarkIfLeader`): the lowest log start
    /// across the leader (`leader_log_start`) and every follower whose broker is alive
    /// (registered and not fenced, as `alive` says), in or out of the ISR. A follower not yet
    /// heard from in this epoch counts as -1. A DeleteRecords answers once it reaches the
    /// requested offset.
    pub fn low_watermark(&self, leader_log_start: i64, alive: impl Fn(i32) -> bool) -> i64 {
        self.followers
            .iter()
            .filter(|(id, _)| alive(**id))
            .map(|(_, f)| f.log_start_offset)
            .fold(leader_log_start, i64::min)
    }

    /// Whether the high watermark `hw` still lags the log end this leader had when its epoch
    /// began: until the ISR confirms that far, the latest offset (and a timestamp found at or
    /// past `hw`) is not available to clients (ListOffsets answers OFFSET_NOT_AVAILABLE,
    /// KIP-207), since a consumer could otherwise see it go backwards across the election.
    pub fn lags_epoch_start(&self, hw: i64) -> bool {
        hw < self.epoch_start_offset
    }

    /// `isr` with each member's broker epoch as known from its fetches (-1: the leader
    /// itself or not known), for AlterPartition (KIP-903).
    pub fn isr_with_epochs(&self, isr: &[i32]) -> Vec<(i32, i64)> {
        isr.iter()
            .map(|r| (*r, self.followers.get(r).map_or(-1, |f| f.broker_epoch)))
            .collect()
    }

    /// The ISR the high watermark is computed over: the committed one plus a pending
    /// addition (never minus a pending removal).
    fn maximal_isr(&self, assignment: &Assignment) -> Vec<i32> {
        let mut isr = assignment.isr.clone();
        if let Some(p) = &self.pending {
            for r in &p.isr {
                if !isr.contains(r) {
                    isr.push(*r);
                }
            }
        }
        isr
    }

    /// The high watermark given the leader's durable log end and the current one; never
    /// lower than `current`.
    pub fn high_watermark(
        &self,
        assignment: &Assignment,
        leader_durable_end: i64,
        current: i64,
        min_insync: usize,
    ) -> i64 {
        let isr = self.maximal_isr(assignment);
        if assignment.isr.len() < min_insync {
            return current;
        }
        let mut hw = leader_durable_end;
        for r in &isr {
            if *r == self.leader {
                continue;
            }
            match self.followers.get(r) {
                // Not yet heard from in this epoch: nothing is confirmed.
                Some(f) if f.log_end_offset >= 0 => hw = hw.min(f.log_end_offset),
                _ => return current,
            }
        }
        hw.max(current)
    }

    /// The ISR change this leader should ask for now, if any: while one is pending, that same
    /// change again once `PENDING_ISR_RETRY_MS` passed without its outcome showing in the
    /// metadata (it may have been committed: a different one would forget its additions);
    /// else members that have not caught up for `lag_max_ms` leave and replicas that reached
    /// the high watermark and the epoch's start join. The leader always stays.
    pub fn wanted_isr(
        &self,
        assignment: &Assignment,
        high_watermark: i64,
        now_ms: i64,
        lag_max_ms: i64,
    ) -> Option<Vec<i32>> {
        if let Some(p) = &self.pending {
            return (now_ms - p.sent_ms >= PENDING_ISR_RETRY_MS).then(|| p.isr.clone());
        }
        let mut isr: Vec<i32> = assignment
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.leader
                    || self
                        .followers
                        .get(r)
                        .is_some_and(|f| now_ms - f.last_caught_up_ms <= lag_max_ms)
            })
            .collect();
        if !isr.contains(&self.leader) {
            isr.insert(0, self.leader);
        }
        for (id, f) in &self.followers {
            if !isr.contains(id)
                && f.log_end_offset >= 0
                && f.log_end_offset >= high_watermark
                && f.log_end_offset >= self.epoch_start_offset
                && now_ms - f.last_caught_up_ms <= lag_max_ms
            {
                isr.push(*id);
            }
        }
        let mut a = isr.clone();
        let mut b = assignment.isr.clone();
        a.sort_unstable();
        b.sort_unstable();
        (a != b).then_some(isr)
    }

    /// Notes that `isr` was asked of the controller.
    pub fn mark_pending(&mut self, isr: Vec<i32>, partition_epoch: i32, now_ms: i64) {
        self.pending = Some(PendingIsr {
            isr,
            based_on_partition_epoch: partition_epoch,
            sent_ms: now_ms,
        });
    }

    /// Forgets the pending change `isr` sent at `sent_ms` after the controller definitely
    /// refused it (INELIGIBLE_REPLICA, INVALID_REQUEST), so the next check may ask another.
    /// Any other failure (a timeout, a lost answer, a stale epoch) keeps it: it may have been
    /// committed, and the metadata will tell (Kafka's `handleAlterPartitionError`).
    pub fn refused(&mut self, isr: &[i32], sent_ms: i64) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.isr == isr && p.sent_ms == sent_ms)
        {
            self.pending = None;
        }
    }
}

/// The leader's answer to a follower fetching from `fetch_offset` whose last fetched batch
/// was of `last_fetched_epoch`, given the leader's `(epoch, end offset)` for that epoch
/// (its `OffsetForLeaderEpoch` answer): `Some((epoch, end_offset))` when the follower's log
/// diverged and must be cut there first (Fetch v12+'s diverging epoch, KIP-595/KIP-320).
pub fn diverging_epoch(
    last_fetched_epoch: i32,
    fetch_offset: i64,
    leader_end_for_epoch: Option<(i32, i64)>,
) -> Option<(i32, i64)> {
    if last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end_offset) = leader_end_for_epoch?;
    (epoch != last_fetched_epoch || end_offset < fetch_offset).then_some((epoch, end_offset))
}

/// Where a follower cuts its log when the leader says it diverged at `leader_end_offset` of
/// `epoch`: there, or earlier where the follower's own `epoch` ended (`own_end_for_epoch`,
/// its log end when it has no such epoch).
pub fn truncation_offset(leader_end_offset: i64, own_end_for_epoch: i64) -> i64 {
    leader_end_offset.min(own_end_for_epoch).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(isr: &[i32]) -> Assignment {
        Assignment {
            leader: 1,
            leader_epoch: 3,
            partition_epoch: 7,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        }
    }

    #[test]
    fn high_watermark_waits_for_every_isr_member_and_never_goes_back() {
        let a = assignment(&[1, 2, 3]);
        let mut s = LeaderState::new(&a, 10, 0);
        // Nothing confirmed before each follower fetched in this epoch.
        assert_eq!(s.high_watermark(&a, 10, 4, 1), 4);
        s.on_fetch(2, 10, 10, 1);
        assert_eq!(s.high_watermark(&a, 10, 4, 1), 4);
        s.on_fetch(3, 8, 10, 1);
        assert_eq!(s.high_watermark(&a, 10, 4, 1), 8);
        // The leader's own durable end bounds it too.
        s.on_fetch(3, 10, 12, 2);
        assert_eq!(s.high_watermark(&a, 9, 8, 1), 9);
        // Never backwards.
        assert_eq!(s.high_watermark(&a, 9, 9, 1), 9);
        s.on_fetch(3, 5, 12, 3);
        assert_eq!(s.high_watermark(&a, 12, 9, 1), 9);
    }

    #[test]
    fn high_watermark_is_frozen_below_min_insync() {
        let a = assignment(&[1]);
        let s = LeaderState::new(&a, 10, 0);
        assert_eq!(s.high_watermark(&a, 10, 3, 2), 3);
        assert_eq!(s.high_watermark(&a, 10, 3, 1), 10);
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_ones_join() {
        let a = assignment(&[1, 2, 3]);
        let mut s = LeaderState::new(&a, 100, 0);
        // Follower 2 keeps up with a moving log end; 3 never fetches.
        s.on_fetch(2, 100, 100, 1_000);
        s.on_fetch(2, 100, 150, 20_000);
        s.on_fetch(2, 150, 200, 40_000);
        assert_eq!(s.followers[&2].last_caught_up_ms, 20_000);
        assert_eq!(s.wanted_isr(&a, 100, 40_000, 30_000), Some(vec![1, 2]));
        s.mark_pending(vec![1, 2], 7, 40_000);
        assert_eq!(s.wanted_isr(&a, 100, 41_000, 30_000), None);
        // Committed: the pending change is dropped once the partition epoch moves.
        let a = Assignment {
            partition_epoch: 8,
            isr: vec![1, 2],
            ..a
        };
        s.reassigned(&a, 41_000);
        assert!(s.pending.is_none());
        // 3 fetches, but below the high watermark: not yet.
        s.on_fetch(3, 90, 200, 42_000);
        assert_eq!(s.wanted_isr(&a, 150, 42_000, 30_000), None);
        s.on_fetch(3, 200, 200, 43_000);
        assert_eq!(s.wanted_isr(&a, 150, 43_000, 30_000), Some(vec![1, 2, 3]));
        s.mark_pending(vec![1, 2, 3], 8, 43_000);
        // The pending addition already counts for the high watermark.
        s.on_fetch(2, 200, 200, 43_000);
        assert_eq!(s.high_watermark(&a, 200, 150, 1), 200);
    }

    #[test]
    fn a_new_broker_epoch_forgets_what_the_old_incarnation_fetched() {
        let a = assignment(&[1, 2]);
        let mut s = LeaderState::new(&a, 10, 0);
        s.note_broker_epoch(3, 40);
        s.on_fetch(3, 10, 10, 1);
        assert_eq!(
            s.isr_with_epochs(&[1, 2, 3]),
            vec![(1, -1), (2, -1), (3, 40)]
        );
        // Restarted (epoch 41): its old log end no longer counts.
        s.note_broker_epoch(3, 41);
        assert_eq!(s.followers[&3].log_end_offset, -1);
        assert_eq!(s.wanted_isr(&a, 10, 2, 30_000), None);
        s.on_fetch(3, 10, 10, 3);
        assert_eq!(s.wanted_isr(&a, 10, 3, 30_000), Some(vec![1, 2, 3]));
        assert_eq!(s.isr_with_epochs(&[1, 2, 3])[2], (3, 41));
    }

    #[test]
    fn the_low_watermark_waits_for_every_live_follower() {
        // Replicas 1 (leader), 2 and 3; 3 is out of the ISR but alive: it counts too.
        let a = assignment(&[1, 2]);
        let mut s = LeaderState::new(&a, 100, 0);
        let all = |_: i32| true;
        // Nobody heard from in this epoch: -1, whatever the leader deleted.
        assert_eq!(s.low_watermark(40, all), -1);
        assert!(s.note_log_start(2, 0));
        assert!(s.note_log_start(3, 0));
        assert_eq!(s.low_watermark(40, all), 0);
        // The same log start again is no news; a fetch without one (old versions) neither.
        assert!(!s.note_log_start(2, 0));
        assert!(!s.note_log_start(2, -1));
        assert!(!s.note_log_start(9, 40));
        assert!(s.note_log_start(2, 40));
        assert_eq!(s.low_watermark(40, all), 0);
        assert!(s.note_log_start(3, 40));
        assert_eq!(s.low_watermark(40, all), 40);
        // Never above the leader's own log start.
        assert!(s.note_log_start(2, 50));
        assert_eq!(s.low_watermark(40, all), 40);
        // A fenced (not alive) follower does not hold it back.
        assert!(s.note_log_start(3, 10));
        assert_eq!(s.low_watermark(40, all), 10);
        assert_eq!(s.low_watermark(40, |id| id != 3), 40);
        // A restarted follower (new broker epoch) is unknown until it states its log start.
        s.note_broker_epoch(2, 7);
        s.note_broker_epoch(2, 8);
        assert_eq!(s.low_watermark(40, |id| id != 3), -1);
        assert!(s.note_log_start(2, 40));
        assert_eq!(s.low_watermark(40, |id| id != 3), 40);
        // A leader alone: its own log start.
        let alone = Assignment {
            replicas: vec![1],
            isr: vec![1],
            ..assignment(&[1])
        };
        assert_eq!(LeaderState::new(&alone, 5, 0).low_watermark(3, all), 3);
    }

    #[test]
    fn a_new_leader_lags_its_epoch_start_until_the_isr_confirms() {
        // It took epoch 3 with its log ending at 15 and a high watermark of 10 from its time
        // as a follower.
        let a = assignment(&[1, 2, 3]);
        let mut s = LeaderState::new(&a, 15, 0);
        assert!(s.lags_epoch_start(10));
        // One member confirms: the high watermark stays.
        s.on_fetch(2, 15, 15, 1);
        let hw = s.high_watermark(&a, 15, 10, 1);
        assert_eq!(hw, 10);
        assert!(s.lags_epoch_start(hw));
        // The last member confirms only part: still lagging, though it moved.
        s.on_fetch(3, 12, 15, 2);
        let hw = s.high_watermark(&a, 15, hw, 1);
        assert_eq!(hw, 12);
        assert!(s.lags_epoch_start(hw));
        s.on_fetch(3, 15, 15, 3);
        let hw = s.high_watermark(&a, 15, hw, 1);
        assert_eq!(hw, 15);
        assert!(!s.lags_epoch_start(hw));
        // A leader that took its epoch with everything committed never lags.
        assert!(!LeaderState::new(&a, 15, 0).lags_epoch_start(15));
    }

    #[test]
    fn divergence_is_found_from_the_last_fetched_epoch() {
        // Same epoch, the leader has at least as much: no divergence.
        assert_eq!(diverging_epoch(3, 50, Some((3, 80))), None);
        // The follower has more of epoch 3 than the leader ever wrote.
        assert_eq!(diverging_epoch(3, 90, Some((3, 80))), Some((3, 80)));
        // The leader never had epoch 4: it ended epoch 2 at 60.
        assert_eq!(diverging_epoch(4, 70, Some((2, 60))), Some((2, 60)));
        // Unknown epochs are not checked.
        assert_eq!(diverging_epoch(-1, 70, Some((2, 60))), None);
        assert_eq!(diverging_epoch(5, 70, None), None);
        assert_eq!(truncation_offset(60, 65), 60);
        assert_eq!(truncation_offset(60, 40), 40);
    }

    #[test]
    fn an_unanswered_change_is_asked_again_as_it_was() {
        let a = assignment(&[1, 2, 3]);
        let mut s = LeaderState::new(&a, 0, 0);
        s.mark_pending(vec![1, 3, 2, 4], 7, 50_000);
        assert_eq!(s.wanted_isr(&a, 0, 50_001, 30_000), None);
        // Later, even though the followers now warrant another ISR, the same change again.
        assert_eq!(
            s.wanted_isr(&a, 0, 50_000 + PENDING_ISR_RETRY_MS, 1),
            Some(vec![1, 3, 2, 4])
        );
        // Only a definite refusal of that very call forgets it.
        s.refused(&[1, 3, 2, 4], 49_000);
        assert!(s.pending.is_some());
        s.refused(&[1, 3, 2, 4], 50_000);
        assert!(s.pending.is_none());
    }
}
