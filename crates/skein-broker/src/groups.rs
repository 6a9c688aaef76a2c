//! The broker side of consumer groups: runs the pure [`Coordinator`] of `skein-group`,
//! stores the records it emits in `__consumer_offsets`, replays them at start, delivers
//! delayed JoinGroup/SyncGroup answers, and cleans the offsets topic so it stays small.
//!
//! Every coordinator call and the appends of the records it emits happen under one lock, so
//! the log holds the records in the order the coordinator made its decisions; waiting for
//! the fsync and answering happen outside it.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use skein_group::{
    Coordinator, Effect, GroupConfig, GroupRecord, JoinResult, SyncResult, Token, TopicId,
    TopicView,
};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::internal::{Appended, InternalItem, Waiters};

/// Kafka's internal topic for committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The longest a group answer waits for its records to reach the ISR (Kafka's
/// `offsets.commit.timeout.ms` default).
const OFFSET_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Segment size of the offsets topic (Kafka's `offsets.topic.segment.bytes` default).
const OFFSETS_SEGMENT_BYTES: &str = "104857600";

/// A delayed answer.
#[derive(Debug)]
pub enum Waited {
    Join(JoinResult),
    Sync(SyncResult),
}

/// The coordinator and the requests waiting on it.
pub struct Groups {
    coordinator: Mutex<Coordinator>,
    waiters: Arc<Waiters<Waited>>,
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
            waiters: Arc::new(Waiters::new()),
            partitions,
            follow_leadership: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiting request; its answer arrives on the receiver.
    pub fn wait(&self) -> (Token, oneshot::Receiver<Waited>) {
        self.waiters.wait()
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
        let mut appends: Vec<Appended> = Vec::new();
        let mut answers: Vec<(Token, Waited)> = Vec::new();
        for effect in effects {
            match effect {
                Effect::Persist(record) => {
                    if let Some(a) = self.persist_group_record(&record) {
                        appends.push(a);
                    }
                }
                Effect::Join(token, r) => answers.push((token, Waited::Join(r))),
                Effect::Sync(token, r) => answers.push((token, Waited::Sync(r))),
            }
        }
        drop(coordinator);
        let waiters = groups.waiters.clone();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let broker = self.me.get().and_then(|w| w.upgrade());
        let deliver = async move {
            // Like Kafka's offset commits (acks=all), answers wait until the ISR has the
            // records, so a new coordinator replays them; at most OFFSET_COMMIT_TIMEOUT.
            if let Some(broker) = broker {
                if !broker
                    .wait_internal_durable(&appends, OFFSET_COMMIT_TIMEOUT)
                    .await
                {
                    tracing::warn!("group records not replicated within {OFFSET_COMMIT_TIMEOUT:?}; answering anyway");
                }
            }
            for (token, answer) in answers {
                waiters.answer(token, answer);
            }
            let _ = done_tx.send(());
        };
        tokio::spawn(deliver);
        (value, async move {
            let _ = done_rx.await;
        })
    }

    /// TxnOffsetCommit on this node's coordinator: the offsets become pending and are
    /// written to the group's offsets partition as one transactional batch of the producer;
    /// the answer waits until that batch is durable and in the ISR.
    pub async fn group_txn_commit(
        &self,
        req: skein_group::TxnCommitRequest,
    ) -> Vec<skein_group::PartitionResult> {
        let groups = self.groups();
        let group_id = req.group_id.clone();
        let producer_id = req.producer_id;
        let (mut results, appended) = {
            let mut coordinator = groups.lock();
            let (results, records) = coordinator.txn_commit_offsets(self.now_ms(), req);
            let appended = match records {
                None => Ok(None),
                Some(r) => {
                    let index = offsets_partition_for(&group_id, self.offsets_partition_count());
                    let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = r
                        .records
                        .iter()
                        .map(|rec| (rec.key(), rec.value()))
                        .collect();
                    let borrowed: Vec<(&[u8], Option<&[u8]>)> = encoded
                        .iter()
                        .map(|(k, v)| (k.as_slice(), v.as_deref()))
                        .collect();
                    let written = self.append_internal_records(
                        OFFSETS_TOPIC,
                        index,
                        &borrowed,
                        Some((r.producer_id, r.producer_epoch)),
                    );
                    if written.is_err() {
                        // Not written: the offsets must not become visible on a later commit.
                        coordinator.complete_txn(producer_id, false, |g| g == group_id);
                    }
                    written.map(Some)
                }
            };
            (results, appended)
        };
        let error = match appended {
            Ok(None) => None,
            Ok(Some(a)) => {
                if self
                    .wait_internal_durable(std::slice::from_ref(&a), OFFSET_COMMIT_TIMEOUT)
                    .await
                {
                    None
                } else {
                    Some(ErrorCode::REQUEST_TIMED_OUT)
                }
            }
            // As Kafka maps a failed offsets append for the client.
            Err(ErrorCode::NOT_LEADER_OR_FOLLOWER | ErrorCode::KAFKA_STORAGE_ERROR) => {
                Some(ErrorCode::NOT_COORDINATOR)
            }
            Err(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                | ErrorCode::NOT_ENOUGH_REPLICAS
                | ErrorCode::REQUEST_TIMED_OUT,
            ) => Some(ErrorCode::COORDINATOR_NOT_AVAILABLE),
            Err(e) => Some(e),
        };
        if let Some(e) = error {
            for (_, code) in results.iter_mut() {
                if code.is_none() {
                    *code = skein_group::ErrorCode(e.code());
                }
            }
        }
        results
    }

    /// Partitions of the offsets topic: the topic's, or the configured count before it
    /// exists.
    pub(crate) fn offsets_partition_count(&self) -> i32 {
        self.topic(OFFSETS_TOPIC)
            .map_or(self.config.offsets_topic_partitions, |t| {
                t.partition_count()
            })
    }

    /// A COMMIT or ABORT marker of `producer_id` reached partition `index` of the offsets
    /// topic: the groups of that partition commit or drop the producer's pending offsets.
    pub(crate) fn group_txn_completed(&self, index: i32, producer_id: i64, committed: bool) {
        let count = self.offsets_partition_count();
        self.groups()
            .lock()
            .complete_txn(producer_id, committed, |g| {
                offsets_partition_for(g, count) == index
            });
    }

    /// Appends one group record to its partition of the offsets topic. Returns what to wait
    /// for (fsync and ISR) before answering.
    fn persist_group_record(&self, record: &GroupRecord) -> Option<Appended> {
        let Some(topic) = self.topic(OFFSETS_TOPIC) else {
            tracing::error!("{OFFSETS_TOPIC} does not exist; a group record was not stored");
            return None;
        };
        let index = offsets_partition_for(record.partition_key(), topic.partition_count());
        let key = record.key();
        let value = record.value();
        match self.append_internal(OFFSETS_TOPIC, index, &key, value.as_deref()) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::error!(partition = index, "a group record was not stored: {e}");
                None
            }
        }
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
    pub(crate) fn group_leader(&self, group: &str) -> Result<i32, ErrorCode> {
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
        let (unloaded, unload_answers) =
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
            skipped +=
                self.for_each_internal_record(&partition, OFFSETS_TOPIC, |item| match item {
                    InternalItem::Record {
                        key,
                        value,
                        transactional,
                    } => match GroupRecord::decode(key, value) {
                        Ok(rec) => {
                            match transactional {
                                // Offsets committed in a transaction stay pending until its
                                // marker, replayed below, commits or aborts them.
                                Some(producer_id) => coordinator.replay_txn(producer_id, &rec),
                                None => coordinator.replay(&rec),
                            }
                            replayed += 1;
                        }
                        Err(_) => skipped += 1,
                    },
                    InternalItem::Marker {
                        producer_id,
                        committed,
                    } => coordinator.complete_txn(producer_id, committed, |g| {
                        offsets_partition_for(g, count) == index
                    }),
                });
        }
        drop(coordinator);
        // The unloaded groups' waiting JoinGroup/SyncGroup requests: NOT_COORDINATOR now
        // (nothing to persist), so their clients go to the new coordinator at once.
        let answered = unload_answers.len();
        for effect in unload_answers {
            match effect {
                Effect::Join(token, r) => groups.waiters.answer(token, Waited::Join(r)),
                Effect::Sync(token, r) => groups.waiters.answer(token, Waited::Sync(r)),
                Effect::Persist(_) => {}
            }
        }
        if replayed > 0 || skipped > 0 || unloaded > 0 {
            tracing::info!(
                replayed,
                skipped,
                unloaded,
                answered,
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
