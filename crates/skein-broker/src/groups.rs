//! The broker side of consumer groups: runs the pure [`Coordinator`] of `skein-group`,
//! stores the records it emits in `__consumer_offsets`, replays them at start, delivers
//! delayed JoinGroup/SyncGroup answers, and cleans the offsets topic so it stays small.
//!
//! Every coordinator call and the appends of the records it emits happen under one lock, so
//! the log holds the records in the order the coordinator made its decisions; waiting for
//! the fsync and answering happen outside it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use skein_group::{
    Coordinator, Effect, GroupConfig, GroupRecord, JoinResult, SyncResult, Token, TopicId,
    TopicView,
};
use skein_log::SyncHandle;
use skein_protocol::records::{self, BatchIter, RecordBatchBuilder};
use tokio::sync::oneshot;

use crate::broker::{Broker, Partition};
use crate::error::ErrorCode;

/// Kafka's internal topic for committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The longest a group answer waits for its records to reach the ISR (Kafka's
/// `offsets.commit.timeout.ms` default).
const OFFSET_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Segment size of the offsets topic (Kafka's `offsets.topic.segment.bytes` default).
const OFFSETS_SEGMENT_BYTES: &str = "104857600";
/// Most bytes read at a time while replaying the offsets topic.
const REPLAY_CHUNK_BYTES: usize = 1024 * 1024;

/// A delayed answer.
#[derive(Debug)]
pub enum Waited {
    Join(JoinResult),
    Sync(SyncResult),
}

/// The coordinator and the requests waiting on it.
pub struct Groups {
    coordinator: Mutex<Coordinator>,
    waiters: Arc<Mutex<HashMap<Token, oneshot::Sender<Waited>>>>,
    next_token: AtomicU64,
    partitions: i32,
    /// Set once the start-up load began: from then on, leadership changes of offsets
    /// partitions load and unload their groups.
    follow_leadership: std::sync::atomic::AtomicBool,
}

/// Kafka maps a group to `abs(groupId.hashCode()) % partitions`, with Java's string hash.
pub fn offsets_partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(unit as i32);
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

impl Groups {
    pub fn new(config: GroupConfig, partitions: i32) -> Groups {
        Groups {
            coordinator: Mutex::new(Coordinator::new(config)),
            waiters: Arc::new(Mutex::new(HashMap::new())),
            next_token: AtomicU64::new(1),
            partitions,
            follow_leadership: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiting request; its answer arrives on the receiver.
    pub fn wait(&self) -> (Token, oneshot::Receiver<Waited>) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, tx);
        (token, rx)
    }

    /// Reads the coordinator without changing it.
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.lock())
    }
}

/// The broker's topics as the KIP-848 assignors see them (internal topics excluded).
struct BrokerTopics<'a>(&'a Broker);

impl TopicView for BrokerTopics<'_> {
    fn topics(&self) -> Vec<(String, TopicId, i32)> {
        self.0
            .topics()
            .into_iter()
            .filter(|t| !t.is_internal())
            .map(|t| (t.name.clone(), t.id.0, t.partition_count()))
            .collect()
    }
}

impl Broker {
    /// Runs `f` on the coordinator and carries out the effects it returns. The returned
    /// future completes once the records are durable and the delayed answers were sent.
    pub fn group_op<T>(
        &self,
        f: impl FnOnce(&mut Coordinator, i64, &dyn TopicView) -> (T, Vec<Effect>),
    ) -> (T, impl Future<Output = ()> + Send + 'static) {
        // The offsets topic is not created here: group_op also runs where no metadata commit
        // may be waited for (applying a topic deletion, under the coordinator's lock). Every
        // group request first finds its coordinator (`coordinator_error`), which creates it.
        let groups = self.groups();
        let mut coordinator = groups.lock();
        let (value, effects) = f(&mut coordinator, self.now_ms(), &BrokerTopics(self));
        let mut syncs: Vec<(Arc<Partition>, i64, Option<SyncHandle>)> = Vec::new();
        let mut answers: Vec<(Token, Waited)> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Persist(record) => {
                    if let Some(s) = self.persist_group_record(&record) {
                        syncs.push(s);
                    }
                }
                Effect::Join(token, r) => answers.push((token, Waited::Join(r))),
                Effect::Sync(token, r) => answers.push((token, Waited::Sync(r))),
            }
        }
        drop(coordinator);
        let waiters = groups.waiters.clone();
        let syncer = self.syncer().clone();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let broker = self.me.get().and_then(|w| w.upgrade());
        let min_insync = self
            .topic(OFFSETS_TOPIC)
            .map_or(1, |t| t.effective().min_insync_replicas);
        let deliver = async move {
            for (partition, _, handle) in &syncs {
                let Some(handle) = handle.clone() else {
                    continue;
                };
                let end = handle.end_offset();
                if syncer.sync(partition.key(), handle).await.is_ok() {
                    partition.mark_durable(end, min_insync);
                }
            }
            // Like Kafka's offset commits (acks=all), answers wait until the ISR has the
            // records, so a new coordinator replays them; at most OFFSET_COMMIT_TIMEOUT.
            if let Some(broker) = broker {
                let deadline = tokio::time::Instant::now() + OFFSET_COMMIT_TIMEOUT;
                loop {
                    let notified = broker.data_arrived.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if syncs.iter().all(|(p, last, _)| p.high_watermark() > *last) {
                        break;
                    }
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(deadline) => {
                            tracing::warn!("group records not replicated within {OFFSET_COMMIT_TIMEOUT:?}; answering anyway");
                            break;
                        }
                    }
                }
            }
            let mut waiters = waiters.lock().unwrap_or_else(|e| e.into_inner());
            for (token, answer) in answers {
                if let Some(tx) = waiters.remove(&token) {
                    let _ = tx.send(answer);
                }
            }
            let _ = done_tx.send(());
        };
        tokio::spawn(deliver);
        (value, async move {
            let _ = done_rx.await;
        })
    }

    /// Appends one group record to its partition of the offsets topic, creating the topic on
    /// first use. Returns what to fsync when acks=all writes are fsynced.
    fn persist_group_record(
        &self,
        record: &GroupRecord,
    ) -> Option<(Arc<Partition>, i64, Option<SyncHandle>)> {
        let Some(topic) = self.topic(OFFSETS_TOPIC) else {
            tracing::error!("{OFFSETS_TOPIC} does not exist; a group record was not stored");
            return None;
        };
        let index = offsets_partition_for(record.partition_key(), topic.partition_count());
        let partition = topic.partition(index)?;
        let now = self.now_ms();
        let key = record.key();
        let value = record.value();
        let mut batch = RecordBatchBuilder::new(now)
            .push(Some(&key), value.as_deref(), now)
            .build();
        // Stamped with the leader epoch like any leader's write, so followers of the
        // offsets partition keep the same epoch history.
        skein_protocol::records::set_partition_leader_epoch(&mut batch, partition.leader_epoch());
        let mut state = partition.lock();
        let log = state.log.as_mut()?;
        if let Err(e) = log.append(&mut batch, now) {
            tracing::error!(partition = index, "could not write to {OFFSETS_TOPIC}: {e}");
            return None;
        }
        let handle = log.sync_handle();
        let last = log.log_end_offset() - 1;
        partition.advance_high_watermark(&mut state, topic.effective().min_insync_replicas);
        drop(state);
        Some((
            partition,
            last,
            self.config.acks_all_fsync.then_some(handle),
        ))
    }

    /// The broker that coordinates `group`: the leader of the group's partition of the
    /// offsets topic (created here on first use, as Kafka's FindCoordinator does).
    pub fn group_coordinator(
        &self,
        group: &str,
    ) -> Result<crate::broker::BrokerEndpoint, ErrorCode> {
        let leader = self.group_leader(group)?;
        self.broker_endpoint(leader)
            .ok_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)
    }

    /// The node id leading `group`'s partition of the offsets topic.
    fn group_leader(&self, group: &str) -> Result<i32, ErrorCode> {
        let topic = self
            .offsets_topic()
            .map_err(|_| ErrorCode::COORDINATOR_NOT_AVAILABLE)?;
        let index = offsets_partition_for(group, topic.partition_count());
        let leader = topic
            .partition(index)
            .ok_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)?
            .leader();
        if leader < 0 {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        Ok(leader)
    }

    /// `None` when this broker coordinates `group`; else the error a group request gets
    /// (NOT_COORDINATOR sends the client back to FindCoordinator). Runs before every group
    /// request, so it compares node ids only (no endpoint lookup, no assignment copy).
    pub fn coordinator_error(&self, group: &str) -> Option<ErrorCode> {
        match self.group_leader(group) {
            Ok(leader) if leader == self.node_id() => None,
            Ok(_) => Some(ErrorCode::NOT_COORDINATOR),
            Err(e) => Some(e),
        }
    }

    fn offsets_topic(&self) -> Result<Arc<crate::broker::Topic>, String> {
        if let Some(t) = self.topic(OFFSETS_TOPIC) {
            return Ok(t);
        }
        let mut overrides = std::collections::BTreeMap::new();
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
        overrides.insert(
            "segment.bytes".to_string(),
            OFFSETS_SEGMENT_BYTES.to_string(),
        );
        let rf = self.config.offsets_topic_replication_factor;
        match self.create_topic(OFFSETS_TOPIC, self.groups().partitions, rf, overrides) {
            Ok(t) => Ok(t),
            Err(_) if self.topic(OFFSETS_TOPIC).is_some() => {
                Ok(self.topic(OFFSETS_TOPIC).expect("exists"))
            }
            Err(e) => Err(e.message),
        }
    }

    /// Loads the groups of every offsets partition this node leads (at start).
    pub(crate) fn replay_groups(&self) {
        self.groups()
            .follow_leadership
            .store(true, Ordering::SeqCst);
        let Some(topic) = self.topic(OFFSETS_TOPIC) else {
            return;
        };
        let node = self.node_id();
        let led: Vec<i32> = topic
            .partitions()
            .iter()
            .filter(|p| p.leader() == node && p.is_local())
            .map(|p| p.index)
            .collect();
        self.reload_group_partitions(&led);
    }

    /// Makes the coordinator match this node's leaderships of the given offsets partitions
    /// (KIP-848 and Kafka's coordinator both move with that leadership): each partition's
    /// groups are forgotten, then, where this node leads it, replayed from its log, which
    /// holds everything the previous coordinator wrote. Never call it holding a partition
    /// lock (it takes the coordinator's, then each partition's).
    pub(crate) fn reload_group_partitions(&self, indexes: &[i32]) {
        if indexes.is_empty() || !self.groups().follow_leadership.load(Ordering::SeqCst) {
            return;
        }
        let Some(topic) = self.topic(OFFSETS_TOPIC) else {
            return;
        };
        let node = self.node_id();
        let count = topic.partition_count();
        let groups = self.groups();
        let mut coordinator = groups.lock();
        let mut replayed = 0u64;
        let mut skipped = 0u64;
        let unloaded =
            coordinator.unload_groups(|g| indexes.contains(&offsets_partition_for(g, count)));
        let mut loaded = Vec::new();
        for &index in indexes {
            let Some(partition) = topic.partition(index) else {
                continue;
            };
            if partition.leader() != node {
                continue;
            }
            loaded.push(index);
            let state = partition.lock();
            let Some(log) = state.log.as_ref() else {
                continue;
            };
            let mut offset = log.log_start_offset();
            let end = log.log_end_offset();
            while offset < end {
                let read = match log.read(offset, REPLAY_CHUNK_BYTES, None) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(
                            partition = partition.index,
                            "cannot replay {OFFSETS_TOPIC}: {e}"
                        );
                        break;
                    }
                };
                if read.records.is_empty() {
                    break;
                }
                for item in BatchIter::new(&read.records) {
                    let Ok((header, range)) = item else { break };
                    offset = header.last_offset() + 1;
                    let batch = &read.records[range];
                    match records::decode_records(batch) {
                        Ok(recs) => {
                            for r in recs {
                                let Some(key) = r.key else { continue };
                                match GroupRecord::decode(key, r.value) {
                                    Ok(rec) => {
                                        coordinator.replay(&rec);
                                        replayed += 1;
                                    }
                                    Err(_) => skipped += 1,
                                }
                            }
                        }
                        Err(_) => skipped += 1,
                    }
                }
            }
        }
        drop(coordinator);
        if replayed > 0 || skipped > 0 || unloaded > 0 {
            tracing::info!(
                replayed,
                skipped,
                unloaded,
                partitions = ?loaded,
                "loaded consumer groups from {OFFSETS_TOPIC}"
            );
        }
    }

    /// Time-driven work: session and rebalance timeouts, delayed joins, offset expiry.
    pub fn group_tick(&self) {
        // No offsets topic, no groups: creating it here would place its partitions on
        // whichever brokers happen to be up at start (FindCoordinator creates it).
        if self.topic(OFFSETS_TOPIC).is_none() {
            return;
        }
        let ((), _done) = self.group_op(|c, now, _| ((), c.tick(now)));
    }

    /// Drops the committed offsets of a deleted topic.
    pub(crate) fn forget_topic_offsets(&self, topic: &str) {
        if topic == OFFSETS_TOPIC {
            return;
        }
        let owned = topic.to_string();
        let ((), _done) = self.group_op(move |c, _, _| ((), c.topic_deleted(&owned)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafkas_java_hash() {
        // Java: "my-group".hashCode() == -1906497762; Kafka masks the sign bit: 36.
        assert_eq!(offsets_partition_for("my-group", 50), 36);
        // A string whose Java hash is negative still maps into range.
        for g in ["", "a", "group-with-a-long-name-1234567890", "ünïcödé"] {
            let p = offsets_partition_for(g, 50);
            assert!((0..50).contains(&p), "{g}: {p}");
        }
    }
}
