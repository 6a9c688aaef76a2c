//! Prometheus metrics: what the broker counts as it works (requests, errors, latencies,
//! bytes and records per topic, connections, fsync latency) and what it reads from its
//! state when scraped (partition sizes and offsets, consumer group lag, members and
//! generations).
//!
//! Consumer lag is the first thing an operator watches: for every committed offset,
//! `skein_group_lag_records` is the partition's log end offset minus the committed offset, and
//! `skein_group_lag_seconds` the age of the oldest record the group has not consumed yet.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use skein_protocol::records::BatchIter;
use skein_protocol::ResponseBody;

use crate::broker::Broker;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    pub api: String,
    pub error_code: i16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientQuotaLabels {
    pub quota: String,
    pub user: String,
    pub client_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub topic: String,
    pub partition: i32,
    pub replica: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: String,
    /// The setting that refused the connection.
    pub limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    pub listener: String,
    /// The SASL mechanism, or `SSL` for a TLS handshake on an SSL listener.
    pub mechanism: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 27 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    /// Serialises scrapes: the state gauges are cleared and refilled for each one.
    scrape: Mutex<()>,
    pub requests: Family<ApiLabels, Counter>,
    pub request_errors: Family<ApiErrorLabels, Counter>,
    pub request_latency: Family<ApiLabels, Histogram, fn() -> Histogram>,
    pub connections: Gauge,
    pub connections_refused: Counter,
    /// Failed SASL logins (wrong credentials, bad exchanges).
    pub sasl_authentication_failures: Counter,
    /// Connection limits and the security front, per listener (see `skein-server`).
    pub listener_connections: Family<ListenerLabels, Gauge>,
    pub listener_connections_refused: Family<RefusedLabels, Counter>,
    pub connection_creation_throttled: Family<ListenerLabels, Counter>,
    pub tls_handshake_failures: Family<ListenerLabels, Counter>,
    pub authentication_failures: Family<AuthLabels, Counter>,
    pub authentication_successes: Family<AuthLabels, Counter>,
    /// Requests (or parts of them) the authorizer denied (`authz.rs`).
    pub authorization_denials: Counter,
    /// Client quotas: time throttled and throttled responses per (quota, user, client id),
    /// the label sets bounded by `quota.rs`.
    client_throttle_time: Family<ClientQuotaLabels, Counter>,
    client_throttled: Family<ClientQuotaLabels, Counter>,
    pub bytes_in: Family<TopicLabels, Counter>,
    pub records_in: Family<TopicLabels, Counter>,
    pub bytes_out: Family<TopicLabels, Counter>,
    pub records_out: Family<TopicLabels, Counter>,
    pub fsync_latency: Histogram,
    fetch_open_files: Gauge,
    producer_ids: Gauge,
    active_controller: Gauge,
    is_active_controller: Gauge,
    metadata_offset: Gauge,
    fenced_brokers: Gauge,
    live_brokers: Gauge,
    offline_partitions: Gauge,
    /// Bytes of request frames held in memory (the server keeps it up to date).
    pub request_bytes_queued: Gauge,
    /// Log cleaner: bytes read and written, records removed, passes, and when the last
    /// pass ended (ms since the epoch, 0 = none yet).
    pub cleaner_bytes: Counter,
    pub cleaner_records_removed: Counter,
    pub cleaner_passes: Counter,
    pub cleaner_last_pass_ms: std::sync::atomic::AtomicI64,
    cleaner_since_last_pass: Gauge,
    log_size: Family<PartitionLabels, Gauge>,
    log_start: Family<PartitionLabels, Gauge>,
    log_end: Family<PartitionLabels, Gauge>,
    high_watermark: Family<PartitionLabels, Gauge>,
    under_replicated: Gauge,
    under_min_isr: Gauge,
    follower_lag: Family<ReplicaLabels, Gauge>,
    lag_records: Family<GroupPartitionLabels, Gauge>,
    lag_seconds: Family<GroupPartitionLabels, FloatGauge>,
    committed: Family<GroupPartitionLabels, Gauge>,
    group_members: Family<GroupLabels, Gauge>,
    group_generation: Family<GroupLabels, Gauge>,
    /// Dead-letter topics, set by the periodic pass of `dlt_metrics.rs` (not at scrape).
    dlt_records: Family<TopicLabels, Gauge>,
    dlt_unhandled: Family<TopicLabels, Gauge>,
    dlt_oldest_unhandled_age: Family<TopicLabels, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one authentication on `listener` with `mechanism`.
    pub fn authentication(&self, listener: &str, mechanism: &str, ok: bool) {
        let labels = AuthLabels {
            listener: listener.to_string(),
            mechanism: mechanism.to_string(),
        };
        if ok {
            self.authentication_successes.get_or_create(&labels).inc();
        } else {
            self.authentication_failures.get_or_create(&labels).inc();
        }
    }

    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("skein");
        let m = Metrics {
            scrape: Mutex::new(()),
            requests: Family::default(),
            request_errors: Family::default(),
            request_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            connections: Gauge::default(),
            connections_refused: Counter::default(),
            sasl_authentication_failures: Counter::default(),
            listener_connections: Family::default(),
            listener_connections_refused: Family::default(),
            connection_creation_throttled: Family::default(),
            tls_handshake_failures: Family::default(),
            authentication_failures: Family::default(),
            authentication_successes: Family::default(),
            authorization_denials: Counter::default(),
            client_throttle_time: Family::default(),
            client_throttled: Family::default(),
            bytes_in: Family::default(),
            records_in: Family::default(),
            bytes_out: Family::default(),
            records_out: Family::default(),
            fsync_latency: latency_histogram(),
            fetch_open_files: Gauge::default(),
            producer_ids: Gauge::default(),
            active_controller: Gauge::default(),
            is_active_controller: Gauge::default(),
            metadata_offset: Gauge::default(),
            fenced_brokers: Gauge::default(),
            live_brokers: Gauge::default(),
            offline_partitions: Gauge::default(),
            request_bytes_queued: Gauge::default(),
            cleaner_bytes: Counter::default(),
            cleaner_records_removed: Counter::default(),
            cleaner_passes: Counter::default(),
            cleaner_last_pass_ms: std::sync::atomic::AtomicI64::new(0),
            cleaner_since_last_pass: Gauge::default(),
            log_size: Family::default(),
            log_start: Family::default(),
            log_end: Family::default(),
            high_watermark: Family::default(),
            under_replicated: Gauge::default(),
            under_min_isr: Gauge::default(),
            follower_lag: Family::default(),
            lag_records: Family::default(),
            lag_seconds: Family::default(),
            committed: Family::default(),
            group_members: Family::default(),
            group_generation: Family::default(),
            dlt_records: Family::default(),
            dlt_unhandled: Family::default(),
            dlt_oldest_unhandled_age: Family::default(),
            registry: Registry::default(),
        };
        r.register("requests", "Requests handled, by API", m.requests.clone());
        r.register(
            "cluster_active_controller",
            "Node id of the active controller (the metadata quorum's leader), -1 when none is known",
            m.active_controller.clone(),
        );
        r.register(
            "cluster_is_active_controller",
            "1 on the node that is the active controller, else 0",
            m.is_active_controller.clone(),
        );
        r.register(
            "cluster_metadata_offset",
            "Offset of the last metadata log entry this node applied",
            m.metadata_offset.clone(),
        );
        r.register(
            "cluster_fenced_brokers",
            "Registered brokers that are fenced (silent past broker.session.timeout.ms, or shut down)",
            m.fenced_brokers.clone(),
        );
        r.register(
            "cluster_live_brokers",
            "Registered brokers that are not fenced",
            m.live_brokers.clone(),
        );
        r.register(
            "cluster_offline_partitions",
            "Partitions without a leader",
            m.offline_partitions.clone(),
        );
        r.register(
            "request_errors",
            "Error codes answered, by API and Kafka error code",
            m.request_errors.clone(),
        );
        r.register(
            "request_latency_seconds",
            "Time from a request's arrival to its response, by API",
            m.request_latency.clone(),
        );
        r.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused at max.connections",
            m.connections_refused.clone(),
        );
        r.register(
            "sasl_authentication_failures",
            "Failed SASL authentications",
            m.sasl_authentication_failures.clone(),
        );
        r.register(
            "listener_connections",
            "Open connections, by listener and security protocol",
            m.listener_connections.clone(),
        );
        r.register(
            "listener_connections_refused",
            "Connections closed at once by a limit (max.connections.per.ip, max.connections, listener.max.connections), by listener",
            m.listener_connections_refused.clone(),
        );
        r.register(
            "connection_creation_throttled",
            "Connections whose acceptance was delayed by max.connection.creation.rate (broker or listener), by listener",
            m.connection_creation_throttled.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "authentication_failures",
            "Failed authentications, by listener and mechanism (a SASL mechanism, or SSL for the TLS handshake of an SSL listener)",
            m.authentication_failures.clone(),
        );
        r.register(
            "authentication_successes",
            "Successful authentications (re-authentications included), by listener and mechanism (a SASL mechanism, or SSL for an SSL listener)",
            m.authentication_successes.clone(),
        );
        r.register(
            "authorization_denials",
            "Operations on resources the authorizer denied",
            m.authorization_denials.clone(),
        );
        r.register(
            "client_throttle_time_ms",
            "Milliseconds clients were throttled by their quotas (quota: produce, fetch, request), per user and client id as the quota is shared; past 200 label sets, under user and client_id \"other\"",
            m.client_throttle_time.clone(),
        );
        r.register(
            "client_throttled_responses",
            "Responses sent with a non-zero throttle_time_ms because of a client quota",
            m.client_throttled.clone(),
        );
        r.register(
            "bytes_in",
            "Record batch bytes appended, by topic",
            m.bytes_in.clone(),
        );
        r.register(
            "records_in",
            "Records appended, by topic",
            m.records_in.clone(),
        );
        r.register(
            "bytes_out",
            "Record batch bytes fetched, by topic",
            m.bytes_out.clone(),
        );
        r.register(
            "records_out",
            "Records fetched, by topic",
            m.records_out.clone(),
        );
        r.register(
            "fsync_latency_seconds",
            "Time of one group-commit fsync",
            m.fsync_latency.clone(),
        );
        r.register(
            "fetch_open_files",
            "Segment files held open by zero-copy fetch responses not yet sent",
            m.fetch_open_files.clone(),
        );
        r.register(
            "producer_ids",
            "Idempotent producer states held (one per producer and partition written)",
            m.producer_ids.clone(),
        );
        r.register(
            "request_bytes_queued",
            "Bytes of request frames held in memory, partly received or not yet handled (bounded by queued.max.request.bytes)",
            m.request_bytes_queued.clone(),
        );
        r.register(
            "partition_size_bytes",
            "Bytes on disk of a partition's log",
            m.log_size.clone(),
        );
        r.register(
            "partition_log_start_offset",
            "First offset still in a partition",
            m.log_start.clone(),
        );
        r.register(
            "partition_log_end_offset",
            "Offset the next record of a partition gets",
            m.log_end.clone(),
        );
        r.register(
            "partition_high_watermark",
            "Offset up to which consumers may read",
            m.high_watermark.clone(),
        );
        r.register(
            "under_replicated_partitions",
            "Partitions this node leads whose ISR is smaller than their replica set",
            m.under_replicated.clone(),
        );
        r.register(
            "under_min_isr_partitions",
            "Partitions this node leads whose ISR is smaller than min.insync.replicas (acks=all is refused)",
            m.under_min_isr.clone(),
        );
        r.register(
            "replica_lag_records",
            "Records a follower is behind this leader's log end, as of its last fetch; -1 before its first fetch in this leader epoch",
            m.follower_lag.clone(),
        );
        r.register(
            "group_lag_records",
            "Log end offset minus the group's committed offset",
            m.lag_records.clone(),
        );
        r.register(
            "group_lag_seconds",
            "Age of the oldest record the group has not consumed (0 when caught up)",
            m.lag_seconds.clone(),
        );
        r.register(
            "group_committed_offset",
            "The group's committed offset",
            m.committed.clone(),
        );
        r.register(
            "group_members",
            "Members of a consumer group",
            m.group_members.clone(),
        );
        r.register(
            "group_generation",
            "Classic generation or KIP-848 group epoch; it goes up with every rebalance",
            m.group_generation.clone(),
        );
        r.register(
            "log_cleaner_bytes",
            "Bytes the log cleaner read and wrote",
            m.cleaner_bytes.clone(),
        );
        r.register(
            "log_cleaner_records_removed",
            "Records the log cleaner removed from compacted logs",
            m.cleaner_records_removed.clone(),
        );
        r.register(
            "log_cleaner_passes",
            "Cleaning passes over compacted logs",
            m.cleaner_passes.clone(),
        );
        r.register(
            "log_cleaner_time_since_last_run_ms",
            "Milliseconds since the last cleaning pass ended (-1: none yet)",
            m.cleaner_since_last_pass.clone(),
        );
        r.register(
            "dlt_records",
            "Offsets in a dead-letter topic (high watermark minus log start), summed over the partitions this node leads",
            m.dlt_records.clone(),
        );
        r.register(
            "dlt_unhandled_records",
            "Offsets of a dead-letter topic past its replay group's (skein-dlt-replay.<topic>) committed offset, from the log start when it has none",
            m.dlt_unhandled.clone(),
        );
        r.register(
            "dlt_oldest_unhandled_age_seconds",
            "Age of a dead-letter topic's oldest unhandled record (0 when none)",
            m.dlt_oldest_unhandled_age.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Registers the counters of forgotten producer states, which live with the broker-wide
    /// account in `producer_state.rs`.
    pub fn register_producer_limits(&mut self, limits: &crate::producer_state::ProducerLimits) {
        self.registry.register(
            "producer_ids_expired",
            "Idempotent producer states forgotten after producer.id.expiration.ms without a write",
            limits.expired.clone(),
        );
        self.registry.register(
            "producer_ids_evicted",
            "Idempotent producer states forgotten, least recently active first, at skein.producer.ids.max",
            limits.evicted.clone(),
        );
    }

    /// Counts one answered request and the error codes in its response.
    pub fn observe_response(&self, api: &str, seconds: f64, body: Option<&ResponseBody>) {
        let labels = ApiLabels {
            api: api.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_latency.get_or_create(&labels).observe(seconds);
        if let Some(body) = body {
            for code in error_codes(body) {
                self.request_errors
                    .get_or_create(&ApiErrorLabels {
                        api: api.to_string(),
                        error_code: code,
                    })
                    .inc();
            }
        }
    }

    /// Counts one throttled response of a client (`quota`: produce, fetch, request).
    pub fn observe_throttle(&self, quota: &str, user: &str, client_id: &str, ms: u64) {
        let labels = ClientQuotaLabels {
            quota: quota.to_string(),
            user: user.to_string(),
            client_id: client_id.to_string(),
        };
        self.client_throttle_time.get_or_create(&labels).inc_by(ms);
        self.client_throttled.get_or_create(&labels).inc();
    }

    /// Counts what a fetch response carries, by topic.
    pub fn observe_fetched(&self, topic: &str, bytes: usize, records: i64) {
        if bytes == 0 {
            return;
        }
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        self.bytes_out.get_or_create(&labels).inc_by(bytes as u64);
        self.records_out
            .get_or_create(&labels)
            .inc_by(records.max(0) as u64);
    }

    pub fn observe_produced(&self, topic: &str, bytes: usize, records: i32) {
        let labels = TopicLabels {
            topic: topic.to_string(),
        };
        self.bytes_in.get_or_create(&labels).inc_by(bytes as u64);
        self.records_in
            .get_or_create(&labels)
            .inc_by(records.max(0) as u64);
    }

    /// Replaces the dead-letter topic gauges (a topic not in `gauges` loses its series), between
    /// scrapes so that none sees them half set.
    pub fn set_dlt(&self, gauges: &[crate::dlt_metrics::DltGauges]) {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.dlt_records.clear();
        self.dlt_unhandled.clear();
        self.dlt_oldest_unhandled_age.clear();
        for g in gauges {
            let l = TopicLabels {
                topic: g.topic.clone(),
            };
            self.dlt_records.get_or_create(&l).set(g.records);
            self.dlt_unhandled.get_or_create(&l).set(g.unhandled);
            self.dlt_oldest_unhandled_age
                .get_or_create(&l)
                .set(g.oldest_unhandled_age_ms as f64 / 1000.0);
        }
    }

    /// The exposition text, after refreshing the gauges read from the broker's state.
    pub fn render(&self, broker: &Broker) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(broker);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::error!("could not encode metrics: {e}");
        }
        out
    }

    fn refresh(&self, broker: &Broker) {
        self.fetch_open_files.set(
            broker
                .fetch_files_held
                .load(std::sync::atomic::Ordering::SeqCst) as i64,
        );
        self.producer_ids.set(broker.producer_limits.held() as i64);
        let last = self
            .cleaner_last_pass_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        self.cleaner_since_last_pass.set(if last > 0 {
            (broker.now_ms() - last).max(0)
        } else {
            -1
        });
        let c = broker.cluster_view();
        self.active_controller.set(c.active_controller);
        self.is_active_controller.set(i64::from(
            c.active_controller == i64::from(broker.node_id()),
        ));
        self.metadata_offset.set(c.metadata_offset);
        self.fenced_brokers.set(c.fenced_brokers);
        self.live_brokers.set(c.live_brokers);
        self.offline_partitions.set(c.offline_partitions);
        for family in [
            &self.log_size,
            &self.log_start,
            &self.log_end,
            &self.high_watermark,
        ] {
            family.clear();
        }
        self.follower_lag.clear();
        self.lag_records.clear();
        self.lag_seconds.clear();
        self.committed.clear();
        self.group_members.clear();
        self.group_generation.clear();
        let mut ends = std::collections::HashMap::new();
        let (mut under_replicated, mut under_min_isr) = (0, 0);
        let node = broker.node_id();
        for topic in broker.topics() {
            let min_isr = topic.effective().min_insync_replicas;
            for p in topic.partitions() {
                let a = p.assignment();
                let state = p.lock();
                let Some(log) = state.log.as_ref() else {
                    continue;
                };
                if a.leader == node {
                    under_replicated += i64::from(a.isr.len() < a.replicas.len());
                    under_min_isr += i64::from(a.isr.len() < min_isr);
                    if let Some(leader) = &state.leader {
                        for (replica, f) in &leader.followers {
                            let lag = if f.log_end_offset < 0 {
                                -1
                            } else {
                                (log.log_end_offset() - f.log_end_offset).max(0)
                            };
                            self.follower_lag
                                .get_or_create(&ReplicaLabels {
                                    topic: topic.name.clone(),
                                    partition: p.index,
                                    replica: *replica,
                                })
                                .set(lag);
                        }
                    }
                }
                let l = PartitionLabels {
                    topic: topic.name.clone(),
                    partition: p.index,
                };
                self.log_size.get_or_create(&l).set(log.size_bytes() as i64);
                self.log_start.get_or_create(&l).set(log.log_start_offset());
                self.log_end.get_or_create(&l).set(log.log_end_offset());
                self.high_watermark
                    .get_or_create(&l)
                    .set(log.high_watermark());
                ends.insert((topic.name.clone(), p.index), log.high_watermark());
            }
        }
        self.under_replicated.set(under_replicated);
        self.under_min_isr.set(under_min_isr);
        let (lags, groups) = broker.groups().read(|c| {
            let groups: Vec<(String, usize, i32)> = c
                .list_groups(&[], &[])
                .into_iter()
                .map(|g| {
                    let (members, generation) = if g.group_type == "classic" {
                        let d = c.describe_group(&g.group_id);
                        (
                            d.members.len(),
                            c.classic_generation(&g.group_id)
                                .map(|(gen, _)| gen)
                                .unwrap_or(0),
                        )
                    } else {
                        let d = c.describe_consumer_group(&g.group_id, &Vec::new());
                        (d.members.len(), d.group_epoch)
                    };
                    (g.group_id, members, generation)
                })
                .collect();
            (c.lag_inputs(), groups)
        });
        for (group, members, generation) in groups {
            let l = GroupLabels { group };
            self.group_members.get_or_create(&l).set(members as i64);
            self.group_generation
                .get_or_create(&l)
                .set(generation as i64);
        }
        let now = broker.now_ms();
        for (group, topic, partition, committed) in lags {
            let Some(&end) = ends.get(&(topic.clone(), partition)) else {
                continue;
            };
            let l = GroupPartitionLabels {
                group,
                topic: topic.clone(),
                partition,
            };
            let lag = (end - committed.max(0)).max(0);
            self.committed.get_or_create(&l).set(committed);
            self.lag_records.get_or_create(&l).set(lag);
            let age_ms = if lag > 0 {
                oldest_unconsumed_age_ms(broker, &topic, partition, committed, now)
            } else {
                0
            };
            self.lag_seconds
                .get_or_create(&l)
                .set(age_ms as f64 / 1000.0);
        }
    }
}

/// How old the record at `offset` is (by the timestamp of the batch holding it).
fn oldest_unconsumed_age_ms(
    broker: &Broker,
    topic: &str,
    partition: i32,
    offset: i64,
    now: i64,
) -> i64 {
    let Some(p) = broker.topic(topic).and_then(|t| t.partition(partition)) else {
        return 0;
    };
    let state = p.lock();
    let Some(log) = state.log.as_ref() else {
        return 0;
    };
    let from = offset.max(log.log_start_offset());
    match log.read(from, 1, Some(log.high_watermark())) {
        Ok(read) => match BatchIter::new(&read.records).next() {
            Some(Ok((h, _))) if h.base_timestamp >= 0 => (now - h.base_timestamp).max(0),
            _ => 0,
        },
        Err(_) => 0,
    }
}

/// The Kafka error codes a response carries (top level and per partition), without NONE.
pub fn error_codes(body: &ResponseBody) -> Vec<i16> {
    let mut codes: Vec<i16> = match body {
        ResponseBody::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect(),
        ResponseBody::Fetch(r) => std::iter::once(r.error_code)
            .chain(
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            )
            .collect(),
        ResponseBody::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseBody::Metadata(r) => r.topics.iter().map(|t| t.error_code).collect(),
        ResponseBody::CreateTopics(r) => r.topics.iter().map(|t| t.error_code).collect(),
        ResponseBody::DeleteTopics(r) => r.responses.iter().map(|t| t.error_code).collect(),
        ResponseBody::CreatePartitions(r) => r.results.iter().map(|t| t.error_code).collect(),
        ResponseBody::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseBody::InitProducerId(r) => vec![r.error_code],
        ResponseBody::FindCoordinator(r) => std::iter::once(r.error_code)
            .chain(r.coordinators.iter().map(|c| c.error_code))
            .collect(),
        ResponseBody::JoinGroup(r) => vec![r.error_code],
        ResponseBody::SyncGroup(r) => vec![r.error_code],
        ResponseBody::Heartbeat(r) => vec![r.error_code],
        ResponseBody::LeaveGroup(r) => std::iter::once(r.error_code)
            .chain(r.members.iter().map(|m| m.error_code))
            .collect(),
        ResponseBody::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
        ResponseBody::OffsetFetch(r) => std::iter::once(r.error_code)
            .chain(r.groups.iter().map(|g| g.error_code))
            .collect(),
        ResponseBody::ConsumerGroupHeartbeat(r) => vec![r.error_code],
        ResponseBody::DescribeConfigs(r) => r.results.iter().map(|x| x.error_code).collect(),
        ResponseBody::AlterConfigs(r) => r.responses.iter().map(|x| x.error_code).collect(),
        ResponseBody::IncrementalAlterConfigs(r) => {
            r.responses.iter().map(|x| x.error_code).collect()
        }
        ResponseBody::ApiVersions(r) => vec![r.error_code],
        ResponseBody::DescribeCluster(r) => vec![r.error_code],
        ResponseBody::DeleteGroups(r) => r.results.iter().map(|x| x.error_code).collect(),
        ResponseBody::DescribeGroups(r) => r.groups.iter().map(|x| x.error_code).collect(),
        ResponseBody::ListGroups(r) => vec![r.error_code],
        ResponseBody::OffsetDelete(r) => vec![r.error_code],
        _ => Vec::new(),
    };
    codes.retain(|c| *c != 0);
    codes
}
