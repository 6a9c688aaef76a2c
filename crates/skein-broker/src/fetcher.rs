//! Followers: one fetcher task per leader broker copies every partition this node follows
//! from that leader, with Kafka's Fetch API (v15: the follower's id and broker epoch in
//! `replica_state`, topic ids, `last_fetched_epoch` so the leader can point out where the
//! follower's log diverged). What it fetches is appended at the leader's offsets
//! ([`Partition::append_as_follower`]); with `skein.acks.all.fsync` it is fsynced (group
//! commit) before the next fetch reports the new log end, so a leader's high watermark only
//! ever counts fsynced follower data.
//!
//! [`Broker::run_replication`] supervises: after every metadata change it starts, re-aims or
//! stops fetchers, and every half second it lets each partition this node leads ask the
//! controller for the ISR change it needs (AlterPartition).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use skein_protocol::messages::fetch_request::{
    FetchPartition, FetchRequest, FetchTopic, ReplicaState,
};
use skein_protocol::records::{BatchHeader, BATCH_HEADER_LEN};
use skein_protocol::{ApiKey, RequestBody};
use skein_protocol::{ResponseBody, Uuid};
use skein_raft::BoxStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::controller_link::ControllerCall;
use crate::error::ErrorCode;
use crate::partition::{Partition, ProducerRebuild};

/// The Fetch version followers send.
const REPLICA_FETCH_VERSION: i16 = 15;
/// How often leaders look at their followers for ISR changes.
const ISR_CHECK: Duration = Duration::from_millis(500);
/// How much longer than its own wait a fetch may take before the connection is dropped.
const RESPONSE_SLACK: Duration = Duration::from_secs(30);

/// A partition this node follows.
#[derive(Clone)]
struct Followed {
    topic_id: Uuid,
    partition: Arc<Partition>,
}

/// One leader's fetcher: its partitions (replaced on every metadata change) and its task,
/// aborted when dropped.
struct Fetcher {
    parts: Arc<Mutex<Vec<Followed>>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Broker {
    /// Runs replication until aborted: fetchers for followed partitions, ISR checks for led
    /// ones. Dropping the future stops every fetcher.
    pub async fn run_replication(self: Arc<Self>) {
        let mut fetchers: BTreeMap<i32, Fetcher> = BTreeMap::new();
        let mut isr_tick = tokio::time::interval(ISR_CHECK);
        isr_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let changed = self.replicas_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            self.reconcile_fetchers(&mut fetchers);
            tokio::select! {
                _ = &mut changed => {}
                _ = isr_tick.tick() => self.check_isrs(),
            }
        }
    }

    /// The partitions this node follows, by leader.
    fn followed(&self) -> BTreeMap<i32, Vec<Followed>> {
        let node = self.node_id();
        let mut out: BTreeMap<i32, Vec<Followed>> = BTreeMap::new();
        for topic in self.topics() {
            for partition in topic.partitions() {
                let a = partition.assignment();
                if a.leader >= 0
                    && a.leader != node
                    && a.replicas.contains(&node)
                    && partition.is_local()
                {
                    out.entry(a.leader).or_default().push(Followed {
                        topic_id: topic.id,
                        partition,
                    });
                }
            }
        }
        out
    }

    fn reconcile_fetchers(self: &Arc<Self>, fetchers: &mut BTreeMap<i32, Fetcher>) {
        let mut wanted = self.followed();
        fetchers.retain(|leader, _| wanted.contains_key(leader));
        for (leader, parts) in std::mem::take(&mut wanted) {
            match fetchers.get(&leader) {
                Some(f) if !f.task.is_finished() => {
                    *f.parts.lock().unwrap_or_else(|e| e.into_inner()) = parts;
                    f.changed.notify_one();
                }
                _ => {
                    let shared = Arc::new(Mutex::new(parts));
                    let changed = Arc::new(Notify::new());
                    let task = tokio::spawn(self.clone().fetch_from(
                        leader,
                        shared.clone(),
                        changed.clone(),
                    ));
                    fetchers.insert(
                        leader,
                        Fetcher {
                            parts: shared,
                            changed,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// Lets every partition this node leads ask for the ISR change it needs.
    fn check_isrs(self: &Arc<Self>) {
        let node = self.node_id();
        let now = self.now_ms();
        let lag_max = self.config.replica_lag_time_max_ms;
        for topic in self.topics() {
            for partition in topic.partitions() {
                if partition.leader() != node {
                    continue;
                }
                let a = partition.assignment();
                if a.replicas.len() < 2 {
                    continue;
                }
                let recovering = self.quorum.read(|i| {
                    i.partition(topic.id, partition.index).is_some_and(|p| {
                        p.leader_recovering && p.leader == node && p.leader_epoch == a.leader_epoch
                    })
                });
                if recovering {
                    // KIP-704: elected uncleanly; no ISR growth until the controller knows
                    // this leader recovered.
                    self.report_recovered(topic.id, &topic.name, &partition, &a, now);
                    continue;
                }
                let wanted = {
                    let mut state = partition.lock();
                    let hw = state.log.as_ref().map_or(0, |l| l.high_watermark());
                    let Some(leader) = state.leader.as_mut() else {
                        continue;
                    };
                    let wanted = leader.wanted_isr(&a, hw, now, lag_max);
                    if let Some(isr) = &wanted {
                        let based_on = leader
                            .pending
                            .as_ref()
                            .map_or(a.partition_epoch, |p| p.based_on_partition_epoch);
                        leader.mark_pending(isr.clone(), based_on, now);
                    }
                    wanted.map(|isr| {
                        let with_epochs = leader.isr_with_epochs(&isr);
                        (isr, with_epochs)
                    })
                };
                let Some((isr, with_epochs)) = wanted else {
                    continue;
                };
                tracing::info!(
                    topic = %topic.name,
                    partition = partition.index,
                    from = ?a.isr,
                    to = ?isr,
                    "asking the controller to change the ISR"
                );
                let call = ControllerCall::AlterPartition {
                    broker_id: node,
                    broker_epoch: self.quorum.broker_epoch(),
                    topic_id: topic.id.0,
                    partition: partition.index,
                    leader_epoch: a.leader_epoch,
                    partition_epoch: a.partition_epoch,
                    new_isr: with_epochs,
                    leader_recovery_state: None,
                };
                let me = self.clone();
                let name = topic.name.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.controller_call(call).await {
                        tracing::info!(topic = %name, partition = partition.index, "ISR change not made: {}: {}", e.code, e.message);
                        let definite = e.code == ErrorCode::INELIGIBLE_REPLICA
                            || e.code == ErrorCode::INVALID_REQUEST;
                        if definite {
                            if let Some(l) = partition.lock().leader.as_mut() {
                                l.refused(&isr, now);
                            }
                        }
                    }
                });
            }
        }
    }

    /// As the leader of a partition elected uncleanly (RECOVERING, KIP-704): recovers (for
    /// Skein, rebuilds the producer state from this log, which the unclean election made the
    /// partition's history; there are no transactions to abort yet) and tells the controller
    /// with AlterPartition RECOVERED, the ISR unchanged. Asked again after
    /// `PENDING_ISR_RETRY_MS` while unanswered.
    fn report_recovered(
        self: &Arc<Self>,
        topic_id: skein_protocol::Uuid,
        name: &str,
        partition: &Arc<Partition>,
        a: &crate::partition::Assignment,
        now: i64,
    ) {
        let with_epochs = {
            let mut state = partition.lock();
            let state = &mut *state;
            let Some(leader) = state.leader.as_ref() else {
                return;
            };
            if leader.pending.as_ref().is_some_and(|p| {
                now - p.sent_ms < crate::replication::PENDING_ISR_RETRY_MS
                    && p.based_on_partition_epoch == a.partition_epoch
            }) {
                return;
            }
            let rebuild = ProducerRebuild {
                limits: self.producer_limits.clone(),
                now,
                expiration_ms: self.config.producer_id_expiration_ms,
            };
            if let Err(e) = partition.reload_producers(state, rebuild) {
                tracing::error!(topic = %name, partition = partition.index, "could not rebuild the producer state: {}", e.message);
                return;
            }
            let Some(leader) = state.leader.as_mut() else {
                return;
            };
            leader.mark_pending(a.isr.clone(), a.partition_epoch, now);
            leader.isr_with_epochs(&a.isr)
        };
        tracing::info!(
            topic = %name,
            partition = partition.index,
            leader_epoch = a.leader_epoch,
            "recovered as the leader elected uncleanly; telling the controller"
        );
        let call = ControllerCall::AlterPartition {
            broker_id: self.node_id(),
            broker_epoch: self.quorum.broker_epoch(),
            topic_id: topic_id.0,
            partition: partition.index,
            leader_epoch: a.leader_epoch,
            partition_epoch: a.partition_epoch,
            new_isr: with_epochs,
            leader_recovery_state: Some(skein_metadata::image::LEADER_RECOVERED),
        };
        let me = self.clone();
        let name = name.to_string();
        let partition = partition.clone();
        let isr = a.isr.clone();
        tokio::spawn(async move {
            if let Err(e) = me.controller_call(call).await {
                tracing::info!(topic = %name, partition = partition.index, "recovery not recorded: {}: {}", e.code, e.message);
                if e.code == ErrorCode::INELIGIBLE_REPLICA || e.code == ErrorCode::INVALID_REQUEST {
                    if let Some(l) = partition.lock().leader.as_mut() {
                        l.refused(&isr, now);
                    }
                }
            }
        });
    }

    /// One leader's fetcher: fetches its partitions until aborted.
    async fn fetch_from(
        self: Arc<Self>,
        leader: i32,
        parts: Arc<Mutex<Vec<Followed>>>,
        changed: Arc<Notify>,
    ) {
        let backoff = Duration::from_millis(self.config.replica_fetch_backoff_ms);
        let mut conn: Option<BoxStream> = None;
        let mut correlation = 0i32;
        // An authentication failure is logged at warn once until a connection succeeds.
        let mut auth_failed = false;
        loop {
            let list = parts.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if list.is_empty() {
                changed.notified().await;
                continue;
            }
            if conn.is_none() {
                match self.connect_to(leader).await {
                    Ok(c) => {
                        if auth_failed {
                            tracing::info!(leader, "the replica fetcher authenticated again");
                            auth_failed = false;
                        }
                        conn = Some(c)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        if !auth_failed {
                            tracing::warn!(
                                leader,
                                "replica fetcher: inter-broker authentication failed: {e}"
                            );
                            auth_failed = true;
                        }
                        wait_or_change(&changed, backoff).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(leader, "fetcher cannot connect: {e}");
                        wait_or_change(&changed, backoff).await;
                        continue;
                    }
                }
            }
            let Some(stream) = conn.as_mut() else {
                continue;
            };
            correlation = correlation.wrapping_add(1);
            let (request, sent) = self.build_fetch(&list);
            let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64);
            let response = tokio::time::timeout(
                wait + RESPONSE_SLACK,
                crate::peer::exchange(
                    stream,
                    correlation,
                    "skein-replica-fetcher",
                    (ApiKey::Fetch, REPLICA_FETCH_VERSION),
                    RequestBody::Fetch(request),
                    self.config.socket_request_max_bytes,
                ),
            )
            .await;
            let body = match response {
                Ok(Ok(body)) => body,
                Ok(Err(e)) => {
                    tracing::debug!(leader, "fetch from the leader failed: {e}");
                    conn = None;
                    wait_or_change(&changed, backoff).await;
                    continue;
                }
                Err(_) => {
                    tracing::debug!(leader, "fetch from the leader timed out");
                    conn = None;
                    continue;
                }
            };
            let progressed = self.handle_fetch_response(&list, &sent, body).await;
            if !progressed {
                // Errors only (a leader that has not applied the change yet, a partition
                // that moved): wait a little, or for the next metadata change.
                wait_or_change(&changed, backoff.min(Duration::from_millis(200))).await;
            }
        }
    }

    async fn connect_to(&self, leader: i32) -> std::io::Result<BoxStream> {
        self.connect_peer(leader).await
    }

    /// The fetch of every followed partition; also returns, per partition, the leader epoch
    /// the request was made in.
    fn build_fetch(&self, list: &[Followed]) -> (FetchRequest, Vec<i32>) {
        let mut topics: Vec<FetchTopic> = Vec::new();
        let mut epochs = Vec::with_capacity(list.len());
        for f in list {
            let a = f.partition.assignment();
            let (fetch_offset, last_epoch, log_start) = {
                let state = f.partition.lock();
                match state.log.as_ref() {
                    Some(log) => (
                        log.log_end_offset(),
                        log.latest_epoch().unwrap_or(-1),
                        log.log_start_offset(),
                    ),
                    None => (0, -1, 0),
                }
            };
            epochs.push(a.leader_epoch);
            let p = FetchPartition {
                partition: f.partition.index,
                current_leader_epoch: a.leader_epoch,
                fetch_offset,
                last_fetched_epoch: last_epoch,
                log_start_offset: log_start,
                partition_max_bytes: self.config.replica_fetch_max_bytes,
                ..Default::default()
            };
            match topics.iter_mut().find(|t| t.topic_id == f.topic_id) {
                Some(t) => t.partitions.push(p),
                None => topics.push(FetchTopic {
                    topic_id: f.topic_id,
                    partitions: vec![p],
                    ..Default::default()
                }),
            }
        }
        let request = FetchRequest {
            replica_id: -1,
            replica_state: ReplicaState {
                replica_id: self.node_id(),
                replica_epoch: self.quorum.broker_epoch(),
                ..Default::default()
            },
            max_wait_ms: self.config.replica_fetch_wait_max_ms,
            min_bytes: 1,
            max_bytes: self.config.replica_fetch_response_max_bytes,
            isolation_level: 0,
            session_id: 0,
            session_epoch: -1,
            topics,
            ..Default::default()
        };
        (request, epochs)
    }

    /// Applies a fetch response; returns whether any partition made progress or is simply
    /// caught up (as opposed to only errors).
    async fn handle_fetch_response(
        &self,
        list: &[Followed],
        epochs: &[i32],
        body: ResponseBody,
    ) -> bool {
        let ResponseBody::Fetch(resp) = body else {
            return false;
        };
        if resp.error_code != 0 {
            tracing::debug!(code = resp.error_code, "replica fetch refused");
            return false;
        }
        let node = self.node_id();
        let now = self.now_ms();
        let rebuild = || ProducerRebuild {
            limits: self.producer_limits.clone(),
            now,
            expiration_ms: self.config.producer_id_expiration_ms,
        };
        let mut progressed = false;
        let mut syncs = Vec::new();
        for t in resp.responses {
            for pd in t.partitions {
                let Some(i) = list.iter().position(|f| {
                    f.topic_id == t.topic_id && f.partition.index == pd.partition_index
                }) else {
                    continue;
                };
                let partition = &list[i].partition;
                let code = ErrorCode(pd.error_code);
                let result = if code == ErrorCode::NONE && pd.diverging_epoch.epoch >= 0 {
                    partition
                        .truncate_diverged(
                            pd.diverging_epoch.epoch,
                            pd.diverging_epoch.end_offset,
                            rebuild(),
                        )
                        .map(|_| ())
                } else if code == ErrorCode::NONE {
                    let records = pd.records.unwrap_or_default();
                    let mut batches = whole_batches(records);
                    partition
                        .append_as_follower(
                            node,
                            epochs[i],
                            &mut batches,
                            pd.high_watermark,
                            pd.log_start_offset,
                            now,
                        )
                        .map(|(_, sync)| {
                            if let Some(sync) = sync {
                                syncs.push((partition.clone(), sync));
                            }
                        })
                } else if code == ErrorCode::OFFSET_OUT_OF_RANGE {
                    partition
                        .reset_out_of_range(pd.log_start_offset, pd.high_watermark, rebuild())
                        .map(|_| ())
                } else {
                    tracing::debug!(
                        topic = %partition.topic,
                        partition = partition.index,
                        "replica fetch: {code}"
                    );
                    continue;
                };
                match result {
                    Ok(()) => progressed = true,
                    Err(e) => tracing::warn!(
                        topic = %partition.topic,
                        partition = partition.index,
                        "follower could not apply the fetch: {}: {}",
                        e.code,
                        e.message
                    ),
                }
            }
        }
        if self.config.acks_all_fsync {
            // The next fetch reports the new log end: it must be on disk by then.
            for (partition, handle) in syncs {
                let durable = handle.end_offset();
                match self.syncer().sync(partition.key(), handle).await {
                    Ok(_) => {
                        if let Some(log) = partition.lock().log.as_mut() {
                            log.mark_durable(durable);
                        }
                    }
                    Err(e) => tracing::error!(
                        topic = %partition.topic,
                        partition = partition.index,
                        "follower fsync failed: {e}"
                    ),
                }
            }
        }
        progressed
    }
}

async fn wait_or_change(changed: &Notify, period: Duration) {
    tokio::select! {
        _ = changed.notified() => {}
        _ = tokio::time::sleep(period) => {}
    }
}

/// The whole batches at the start of `records` (a leader may end a response with part of a
/// batch, which the next fetch gets whole).
fn whole_batches(records: Bytes) -> BytesMut {
    let mut end = 0;
    while records.len() - end >= BATCH_HEADER_LEN {
        let Ok(h) = BatchHeader::parse(&records[end..]) else {
            break;
        };
        if h.total_len() > records.len() - end {
            break;
        }
        end += h.total_len();
    }
    BytesMut::from(&records[..end])
}
