//! The broker side of transactions: runs the pure [`TxnCoordinator`] of `skein-txn`, stores
//! the records it emits in `__transaction_state`, writes the COMMIT/ABORT markers it asks
//! for (locally, or with WriteTxnMarkers to the partition's leader), loads a partition's
//! transactional ids when this node becomes its leader, and answers the delayed requests.
//!
//! Every coordinator call and the appends of the records it emits happen under one lock, so
//! the log holds the records in the order the coordinator decided them; waiting for the
//! fsync and the ISR, writing markers and answering happen outside it, and report back with
//! [`TxnCoordinator::persisted`] and [`TxnCoordinator::markers_written`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use skein_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic, WriteTxnMarkersRequest,
};
use skein_protocol::{ApiKey, RequestBody, ResponseBody};
use skein_txn::{Effect, Markers, Response, Token, TxnCoordinator, TxnRecord};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::internal::{InternalItem, Waiters};

/// Kafka's internal topic for the transaction coordinator's state.
pub const TXN_TOPIC: &str = skein_txn::TRANSACTION_STATE_TOPIC;
/// The longest a `__transaction_state` write waits for the fsync and the ISR before the
/// coordinator is told it failed (REQUEST_TIMED_OUT, which clients retry).
const TXN_WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// The WriteTxnMarkers version sent to other brokers.
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
/// How long one WriteTxnMarkers exchange with a peer may take.
const MARKER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Backoff between rounds of marker writes that could not all be written.
const MARKER_RETRY_MIN: Duration = Duration::from_millis(50);
const MARKER_RETRY_MAX: Duration = Duration::from_secs(1);

/// The coordinator, the requests waiting on it, and spare producer ids.
pub struct Transactions {
    coordinator: Mutex<TxnCoordinator>,
    waiters: Waiters<Response>,
    /// Producer ids taken from the broker's block for an InitProducerId that then did not
    /// need one; the next one uses them first.
    spare_ids: Mutex<Vec<i64>>,
    partitions: i32,
    /// Set once the start-up load began: from then on, leadership changes of
    /// `__transaction_state` partitions load and unload their ids.
    follow_leadership: AtomicBool,
}

impl Transactions {
    pub fn new(config: skein_txn::TxnConfig) -> Transactions {
        let partitions = config.state_partitions;
        Transactions {
            coordinator: Mutex::new(TxnCoordinator::new(config)),
            waiters: Waiters::new(),
            spare_ids: Mutex::new(Vec::new()),
            partitions,
            follow_leadership: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TxnCoordinator> {
        self.coordinator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiting request; its answer arrives on the receiver.
    pub fn wait(&self) -> (Token, oneshot::Receiver<Response>) {
        self.waiters.wait()
    }

    /// Reads the coordinator without changing it.
    pub fn read<T>(&self, f: impl FnOnce(&TxnCoordinator) -> T) -> T {
        f(&self.lock())
    }

    fn answer(&self, token: Token, response: Response) {
        self.waiters.answer(token, response);
    }

    fn spare_id(&self) -> Option<i64> {
        self.spare_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
    }

    fn return_id(&self, id: i64) {
        self.spare_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
    }
}

impl Broker {
    /// Runs `f` on the transaction coordinator and carries out the effects it returns:
    /// records are appended before the lock is released; waiting, markers and answers
    /// continue in the background.
    pub fn txn_op<T>(&self, f: impl FnOnce(&mut TxnCoordinator, i64) -> (T, Vec<Effect>)) -> T {
        let txns = self.transactions();
        let mut coordinator = txns.lock();
        let (value, effects) = f(&mut coordinator, self.now_ms());
        self.carry_out_txn_effects(&mut coordinator, effects);
        value
    }

    /// InitProducerId with a transactional id. The producer id a new id needs comes from
    /// the broker's block, taken before the coordinator's lock (it may ask the controller).
    pub fn txn_init_producer_id(&self, token: Token, version: i16, req: skein_txn::InitProducerId) {
        let txns = self.transactions();
        let mut candidate = txns.spare_id().map(Ok);
        if candidate.is_none() {
            candidate = Some(
                self.allocate_producer_id()
                    .map_err(|e| skein_txn::ErrorCode(e.code.code())),
            );
        }
        let mut used = false;
        let candidate_id = candidate.as_ref().and_then(|c| c.as_ref().ok().copied());
        self.txn_op(|c, now| {
            let mut allocate = || {
                used = true;
                match candidate.take() {
                    Some(r) => r,
                    // A second id in one call (never in practice): refuse, the client retries.
                    None => Err(skein_txn::ErrorCode(
                        ErrorCode::COORDINATOR_LOAD_IN_PROGRESS.code(),
                    )),
                }
            };
            (
                (),
                c.init_producer_id(now, token, version, req, &mut allocate),
            )
        });
        if let (false, Some(id)) = (used, candidate_id) {
            txns.return_id(id);
        }
    }

    fn carry_out_txn_effects(&self, coordinator: &mut TxnCoordinator, effects: Vec<Effect>) {
        let txns = self.transactions();
        for effect in effects {
            match effect {
                Effect::Persist(p) => {
                    let key = p.record.key();
                    let value = p.record.value();
                    let id = p.record.transactional_id.clone();
                    match self.append_internal(TXN_TOPIC, p.partition, &key, value.as_deref()) {
                        Ok(appended) => {
                            let Some(broker) = self.arc() else { continue };
                            tokio::spawn(async move {
                                let result = if broker
                                    .wait_internal_durable(
                                        std::slice::from_ref(&appended),
                                        TXN_WRITE_TIMEOUT,
                                    )
                                    .await
                                {
                                    Ok(())
                                } else {
                                    Err(skein_txn::ErrorCode(ErrorCode::REQUEST_TIMED_OUT.code()))
                                };
                                broker.txn_op(|c, now| {
                                    ((), c.persisted(now, &id, p.write_id, result))
                                });
                            });
                        }
                        Err(e) => {
                            // Reported at once, under the same lock: the coordinator reverts.
                            let more = coordinator.persisted(
                                self.now_ms(),
                                &id,
                                p.write_id,
                                Err(skein_txn::ErrorCode(e.code())),
                            );
                            self.carry_out_txn_effects(coordinator, more);
                        }
                    }
                }
                Effect::WriteMarkers(m) => {
                    if let Some(broker) = self.arc() {
                        tokio::spawn(async move { broker.write_markers(m).await });
                    }
                }
                Effect::Respond(token, response) => txns.answer(token, response),
            }
        }
    }

    fn arc(&self) -> Option<Arc<Broker>> {
        self.me.get().and_then(|w| w.upgrade())
    }

    /// Writes `m`'s markers to every partition, retrying until each is written (a partition
    /// whose topic is gone counts as written, as in Kafka) or this node no longer coordinates
    /// the id at that coordinator epoch; then tells the coordinator.
    async fn write_markers(self: Arc<Self>, m: Markers) {
        let state_partition =
            skein_txn::partition_for(&m.transactional_id, self.transactions().partitions);
        let mut remaining: Vec<(String, i32)> = m.partitions.clone();
        let mut backoff = MARKER_RETRY_MIN;
        loop {
            let mut local: Vec<(String, i32)> = Vec::new();
            let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            let mut retry: Vec<(String, i32)> = Vec::new();
            for (topic, index) in remaining.drain(..) {
                let Some(t) = self.topic(&topic) else {
                    continue; // deleted: nothing to mark
                };
                let Some(p) = t.partition(index) else {
                    continue;
                };
                match p.leader() {
                    l if l < 0 => retry.push((topic, index)),
                    l if l == self.node_id() => local.push((topic, index)),
                    l => remote.entry(l).or_default().push((topic, index)),
                }
            }
            for (topic, index) in local {
                let r = self
                    .write_txn_marker(
                        &topic,
                        index,
                        m.producer_id,
                        m.producer_epoch,
                        m.coordinator_epoch,
                        m.committed,
                    )
                    .await;
                if let Err(e) = r {
                    match marker_outcome(e) {
                        MarkerOutcome::Done => {}
                        MarkerOutcome::Retry => retry.push((topic, index)),
                        MarkerOutcome::Stop => return,
                    }
                }
            }
            for (leader, parts) in remote {
                match self.send_markers(leader, &m, &parts).await {
                    Ok(errors) => {
                        for ((topic, index), e) in parts.into_iter().zip(errors) {
                            match marker_outcome(e) {
                                MarkerOutcome::Done => {}
                                MarkerOutcome::Retry => retry.push((topic, index)),
                                MarkerOutcome::Stop => return,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(leader, "WriteTxnMarkers failed: {e}");
                        retry.extend(parts);
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            // Still the coordinator of this id at that epoch? Else a newer one finishes it.
            let owned = self.transactions().read(|c| {
                c.owned_partitions()
                    .contains(&(state_partition, m.coordinator_epoch))
            });
            if !owned {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MARKER_RETRY_MAX);
            remaining = retry;
        }
        self.txn_op(|c, now| {
            (
                (),
                c.markers_written(now, &m.transactional_id, m.producer_id, m.producer_epoch),
            )
        });
    }

    /// One WriteTxnMarkers request to `leader` for `parts`; the error of each, in order.
    async fn send_markers(
        &self,
        leader: i32,
        m: &Markers,
        parts: &[(String, i32)],
    ) -> std::io::Result<Vec<ErrorCode>> {
        let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
        for (topic, index) in parts {
            match topics.iter_mut().find(|t| &t.name == topic) {
                Some(t) => t.partition_indexes.push(*index),
                None => topics.push(WritableTxnMarkerTopic {
                    name: topic.clone(),
                    partition_indexes: vec![*index],
                    ..Default::default()
                }),
            }
        }
        let req = WriteTxnMarkersRequest {
            markers: vec![WritableTxnMarker {
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                transaction_result: m.committed,
                topics,
                coordinator_epoch: m.coordinator_epoch,
                ..Default::default()
            }],
            ..Default::default()
        };
        let resp = self
            .call_peer(
                leader,
                ApiKey::WriteTxnMarkers,
                WRITE_TXN_MARKERS_VERSION,
                RequestBody::WriteTxnMarkers(req),
                MARKER_REQUEST_TIMEOUT,
            )
            .await?;
        let ResponseBody::WriteTxnMarkers(resp) = resp else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a WriteTxnMarkers response",
            ));
        };
        let mut found: HashMap<(String, i32), ErrorCode> = HashMap::new();
        for marker in resp.markers {
            for t in marker.topics {
                for p in t.partitions {
                    found.insert((t.name.clone(), p.partition_index), ErrorCode(p.error_code));
                }
            }
        }
        Ok(parts
            .iter()
            .map(|k| {
                found
                    .get(k)
                    .copied()
                    .unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR)
            })
            .collect())
    }

    /// KIP-890 part 1: before the first transactional batch of a transaction is appended to
    /// a partition, its leader asks the coordinator whether the producer added that
    /// partition to its ongoing transaction (AddPartitionsToTxn, `verify_only`), so a
    /// hanging or late write cannot start a transaction the coordinator does not know.
    /// The coordinator is asked in place when it is this node.
    pub async fn verify_txn_partition(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ErrorCode> {
        // As Kafka does, a coordinator that cannot answer now becomes an error producers
        // retry (NOT_ENOUGH_REPLICAS) rather than one that fails the transaction.
        self.ask_txn_verification(
            transactional_id,
            producer_id,
            producer_epoch,
            topic,
            partition,
        )
        .await
        .map_err(|e| match e {
            ErrorCode::NOT_COORDINATOR
            | ErrorCode::COORDINATOR_NOT_AVAILABLE
            | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
            | ErrorCode::REQUEST_TIMED_OUT
            | ErrorCode::CONCURRENT_TRANSACTIONS => ErrorCode::NOT_ENOUGH_REPLICAS,
            // Produce answers a fenced producer with the code every client version
            // knows (as Kafka's broker does).
            ErrorCode::PRODUCER_FENCED => ErrorCode::INVALID_PRODUCER_EPOCH,
            other => other,
        })
    }

    async fn ask_txn_verification(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ErrorCode> {
        // Version 4 answers INVALID_TXN_STATE where version 5 answers TRANSACTION_ABORTABLE,
        // which the Produce versions Skein serves do not know.
        const VERIFY_VERSION: i16 = 4;
        let parts = [(topic.to_string(), partition)];
        let coordinator = self.txn_coordinator(transactional_id)?;
        if coordinator.id == self.node_id() {
            let results = self.transactions().read(|c| {
                c.verify_partitions(
                    VERIFY_VERSION,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    &parts,
                )
            });
            return match results.first() {
                Some((_, e)) if e.is_none() => Ok(()),
                Some((_, e)) => Err(ErrorCode(e.0)),
                None => Err(ErrorCode::UNKNOWN_SERVER_ERROR),
            };
        }
        use skein_protocol::messages::add_partitions_to_txn_request::{
            AddPartitionsToTxnRequest, AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
        };
        let req = AddPartitionsToTxnRequest {
            transactions: vec![AddPartitionsToTxnTransaction {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch,
                verify_only: true,
                topics: vec![AddPartitionsToTxnTopic {
                    name: topic.to_string(),
                    partitions: vec![partition],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let resp = self
            .call_peer(
                coordinator.id,
                ApiKey::AddPartitionsToTxn,
                VERIFY_VERSION,
                RequestBody::AddPartitionsToTxn(req),
                MARKER_REQUEST_TIMEOUT,
            )
            .await
            .map_err(|_| ErrorCode::NOT_ENOUGH_REPLICAS)?;
        let ResponseBody::AddPartitionsToTxn(resp) = resp else {
            return Err(ErrorCode::UNKNOWN_SERVER_ERROR);
        };
        if resp.error_code != 0 {
            return Err(ErrorCode(resp.error_code));
        }
        let code = resp
            .results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .next()
            .unwrap_or(ErrorCode::UNKNOWN_SERVER_ERROR.code());
        if code == 0 {
            Ok(())
        } else {
            Err(ErrorCode(code))
        }
    }

    /// The broker that coordinates `transactional_id`: the leader of its partition of
    /// `__transaction_state` (created here on first use, as Kafka's FindCoordinator does).
    pub fn txn_coordinator(
        &self,
        transactional_id: &str,
    ) -> Result<crate::broker::BrokerEndpoint, ErrorCode> {
        let topic = self
            .txn_topic()
            .map_err(|_| ErrorCode::COORDINATOR_NOT_AVAILABLE)?;
        let index = skein_txn::partition_for(transactional_id, topic.partition_count());
        let leader = topic
            .partition(index)
            .ok_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)?
            .leader();
        if leader < 0 {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        }
        self.broker_endpoint(leader)
            .ok_or(ErrorCode::COORDINATOR_NOT_AVAILABLE)
    }

    fn txn_topic(&self) -> Result<Arc<crate::broker::Topic>, String> {
        if let Some(t) = self.topic(TXN_TOPIC) {
            return Ok(t);
        }
        let mut overrides = BTreeMap::new();
        overrides.insert("cleanup.policy".to_string(), "compact".to_string());
        overrides.insert(
            "segment.bytes".to_string(),
            self.config
                .setting_i64("transaction.state.log.segment.bytes")
                .to_string(),
        );
        overrides.insert(
            "min.insync.replicas".to_string(),
            self.config.transaction_state_min_isr.to_string(),
        );
        let rf = self.config.transaction_state_replication_factor;
        match self.create_topic(TXN_TOPIC, self.transactions().partitions, rf, overrides) {
            Ok(t) => Ok(t),
            Err(_) if self.topic(TXN_TOPIC).is_some() => Ok(self.topic(TXN_TOPIC).expect("exists")),
            Err(e) => Err(e.message),
        }
    }

    /// Loads the transactional ids of every `__transaction_state` partition this node leads
    /// (at start).
    pub(crate) fn replay_transactions(&self) {
        self.transactions()
            .follow_leadership
            .store(true, Ordering::SeqCst);
        let Some(topic) = self.topic(TXN_TOPIC) else {
            return;
        };
        let indexes: Vec<i32> = topic.partitions().iter().map(|p| p.index).collect();
        self.reload_txn_partitions(&indexes);
    }

    /// Makes the coordinator match this node's leaderships of the given
    /// `__transaction_state` partitions: a partition it now leads is loaded from its log at
    /// the partition's leader epoch (the coordinator epoch); one it no longer leads is
    /// unloaded. Never call it holding a partition lock.
    pub(crate) fn reload_txn_partitions(&self, indexes: &[i32]) {
        if indexes.is_empty() || !self.transactions().follow_leadership.load(Ordering::SeqCst) {
            return;
        }
        let Some(topic) = self.topic(TXN_TOPIC) else {
            return;
        };
        let node = self.node_id();
        let txns = self.transactions();
        let mut coordinator = txns.lock();
        for &index in indexes {
            let Some(partition) = topic.partition(index) else {
                continue;
            };
            let leads = partition.leader() == node && partition.is_local();
            let epoch = partition.leader_epoch();
            if !leads {
                let fx = coordinator.unload_partition(index, None);
                self.carry_out_txn_effects(&mut coordinator, fx);
                continue;
            }
            if coordinator.owned_partitions().contains(&(index, epoch)) {
                continue; // already loaded at this epoch
            }
            let fx = coordinator.start_loading(index);
            self.carry_out_txn_effects(&mut coordinator, fx);
            let mut records: Vec<TxnRecord> = Vec::new();
            let mut bad = 0u64;
            bad += self.for_each_internal_record(&partition, TXN_TOPIC, |item| {
                if let InternalItem::Record { key, value, .. } = item {
                    match TxnRecord::decode(key, value) {
                        Ok(r) => records.push(r),
                        Err(_) => bad += 1,
                    }
                }
            });
            let count = records.len();
            let fx = coordinator.load_partition(index, epoch, records);
            self.carry_out_txn_effects(&mut coordinator, fx);
            if count > 0 || bad > 0 {
                tracing::info!(
                    partition = index,
                    coordinator_epoch = epoch,
                    records = count,
                    skipped = bad,
                    "loaded transactional ids from {TXN_TOPIC}"
                );
            }
        }
    }

    /// Time-driven work: aborts transactions past their timeout, expires idle ids, retries
    /// failed writes.
    pub fn txn_tick(&self) {
        if self.topic(TXN_TOPIC).is_none() {
            return;
        }
        self.txn_op(|c, now| ((), c.tick(now)));
    }
}

enum MarkerOutcome {
    Done,
    Retry,
    /// The marker was refused for good (a newer coordinator or producer epoch): this
    /// coordinator stops; the newer one completes the transaction.
    Stop,
}

/// What to do about a partition's answer to a marker, as Kafka's coordinator does.
fn marker_outcome(e: ErrorCode) -> MarkerOutcome {
    match e {
        ErrorCode::NONE
        | ErrorCode::UNKNOWN_TOPIC_ID
        | ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT => MarkerOutcome::Done,
        ErrorCode::TRANSACTION_COORDINATOR_FENCED | ErrorCode::INVALID_PRODUCER_EPOCH => {
            MarkerOutcome::Stop
        }
        // NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION (metadata still arriving),
        // NOT_ENOUGH_REPLICAS(_AFTER_APPEND), REQUEST_TIMED_OUT, KAFKA_STORAGE_ERROR, ...
        _ => MarkerOutcome::Retry,
    }
}
