//! Broker and topic configuration: the table of every key Skein knows, with Kafka's names,
//! types, defaults and validation, and the resolved values the broker runs with.
//!
//! Settings arrive as strings (from a TOML file, `SKEIN_…` variables, `--set` flags or
//! AlterConfigs) and are validated here, so a bad value is refused with a message naming the
//! key instead of surfacing later as odd behaviour.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;

use skein_log::LogConfig;

/// The type Kafka reports for a config in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
    /// A secret (Kafka's PASSWORD): DescribeConfigs flags it sensitive and shows no value.
    Password = 9,
}

/// One topic-level setting and the broker key that supplies its default.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub broker_key: &'static str,
    pub ty: ConfigType,
    pub default: &'static str,
    pub validate: fn(&str) -> Result<(), String>,
    pub doc: &'static str,
}

/// One broker-only setting.
pub struct BrokerConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    pub default: &'static str,
    pub validate: fn(&str) -> Result<(), String>,
    pub doc: &'static str,
}

fn any(_: &str) -> Result<(), String> {
    Ok(())
}

fn parse_i64(v: &str) -> Result<i64, String> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| format!("'{v}' is not a whole number"))
}

fn long_min(v: &str, min: i64) -> Result<(), String> {
    let n = parse_i64(v)?;
    if n < min {
        return Err(format!("{n} is below the minimum {min}"));
    }
    Ok(())
}

fn int_min(v: &str, min: i64) -> Result<(), String> {
    let n = parse_i64(v)?;
    if n > i32::MAX as i64 {
        return Err(format!("{n} does not fit in a 32-bit integer"));
    }
    if n < min {
        return Err(format!("{n} is below the minimum {min}"));
    }
    Ok(())
}

fn long_ge_minus1(v: &str) -> Result<(), String> {
    long_min(v, -1)
}
fn long_ge0(v: &str) -> Result<(), String> {
    long_min(v, 0)
}
fn long_ge1(v: &str) -> Result<(), String> {
    long_min(v, 1)
}
fn int_ge0(v: &str) -> Result<(), String> {
    int_min(v, 0)
}
fn int_ge1(v: &str) -> Result<(), String> {
    int_min(v, 1)
}
/// `queued.max.request.bytes`: -1 (no bound, Kafka's default) or a positive size.
fn queued_request_bytes(v: &str) -> Result<(), String> {
    match parse_i64(v)? {
        -1 => Ok(()),
        n if n >= 1 => Ok(()),
        n => Err(format!(
            "{n} is neither -1 (no bound) nor a positive number of bytes"
        )),
    }
}
fn segment_bytes(v: &str) -> Result<(), String> {
    int_min(v, 14)
}
fn segment_index_bytes(v: &str) -> Result<(), String> {
    int_min(v, 8)
}
fn percentage(v: &str) -> Result<(), String> {
    int_min(v, 0)?;
    if parse_i64(v)? > 100 {
        return Err(format!("{v} is above 100"));
    }
    Ok(())
}
fn boolean(v: &str) -> Result<(), String> {
    match v.trim() {
        "true" | "false" => Ok(()),
        _ => Err(format!("'{v}' is not true or false")),
    }
}
fn ratio(v: &str) -> Result<(), String> {
    let r: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("'{v}' is not a number"))?;
    if !(0.0..=1.0).contains(&r) {
        return Err(format!("{r} is not between 0 and 1"));
    }
    Ok(())
}
fn positive_double(v: &str) -> Result<(), String> {
    let r: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("'{v}' is not a number"))?;
    if r.is_nan() || r <= 0.0 {
        return Err(format!("{v} is not a positive number"));
    }
    Ok(())
}
fn load_factor(v: &str) -> Result<(), String> {
    positive_double(v)?;
    ratio(v)
}
/// Kafka refuses a dedupe buffer under 1 MiB per cleaner thread; Skein checks the total.
fn dedupe_buffer(v: &str) -> Result<(), String> {
    long_min(v, 1024 * 1024)
}
fn cleanup_policy(v: &str) -> Result<(), String> {
    for p in v.split(',') {
        match p.trim() {
            "delete" | "compact" => {}
            other => return Err(format!("'{other}' is not delete or compact")),
        }
    }
    Ok(())
}
fn compression_type(v: &str) -> Result<(), String> {
    match v.trim() {
        "uncompressed" | "zstd" | "lz4" | "snappy" | "gzip" | "producer" => Ok(()),
        other => Err(format!(
            "'{other}' is not one of uncompressed, zstd, lz4, snappy, gzip, producer"
        )),
    }
}
fn timestamp_type(v: &str) -> Result<(), String> {
    match v.trim() {
        "CreateTime" | "LogAppendTime" => Ok(()),
        other => Err(format!("'{other}' is not CreateTime or LogAppendTime")),
    }
}
fn replication_factor(v: &str) -> Result<(), String> {
    match parse_i64(v)? {
        n if (1..=i64::from(i16::MAX)).contains(&n) => Ok(()),
        n => Err(format!("{n} is not a replication factor (1 to 32767)")),
    }
}
fn socket_addr(v: &str) -> Result<(), String> {
    parse_listener(v).map(|_| ())
}
fn listeners(v: &str) -> Result<(), String> {
    crate::node::parse_listeners(v).map(|_| ())
}
fn pem_only(v: &str) -> Result<(), String> {
    if v.trim().eq_ignore_ascii_case("PEM") {
        Ok(())
    } else {
        Err(format!("'{}' is not served: only PEM", v.trim()))
    }
}
fn client_auth(v: &str) -> Result<(), String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "required" | "requested" | "none" => Ok(()),
        other => Err(format!("'{other}' is not required, requested or none")),
    }
}
fn tls_protocols(v: &str) -> Result<(), String> {
    let mut any = false;
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if p != "TLSv1.2" && p != "TLSv1.3" {
            return Err(format!("'{p}' is not offered (TLSv1.2 and TLSv1.3 only)"));
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err("no protocol enabled".into())
    }
}

/// Whether a setting holds a secret: DescribeConfigs flags it and shows no value, and it is
/// never logged.
pub fn is_sensitive(key: &str) -> bool {
    let key = listener_override(key).map_or(key, |(_, k)| k);
    matches!(
        key,
        "ssl.key.password"
            | "ssl.keystore.key"
            | "ssl.keystore.password"
            | "ssl.truststore.password"
            | "sasl.jaas.config"
    ) || key.ends_with(".password")
        || key.ends_with(".sasl.jaas.config")
}

/// Splits `listener.name.<name>.<key>` into the listener name and the key.
pub fn listener_override(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("listener.name.")?;
    let (name, key) = rest.split_once('.')?;
    (!name.is_empty() && !key.is_empty()).then_some((name, key))
}

/// Connection limits that may also be given per listener (`listener.name.<name>.…`).
pub const LISTENER_LIMITS: [&str; 2] = ["max.connections", "max.connection.creation.rate"];

/// `max.connections.per.ip.overrides`: `HOST:COUNT,…` (the count after the last `:`).
fn per_ip_overrides(v: &str) -> Result<(), String> {
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((host, count)) = entry.rsplit_once(':') else {
            return Err(format!("'{entry}' is not of the form HOST:COUNT"));
        };
        if host
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .is_empty()
        {
            return Err(format!("'{entry}' has an empty host"));
        }
        int_min(count, 0).map_err(|e| format!("'{entry}': {e}"))?;
    }
    Ok(())
}

fn advertised_listeners(v: &str) -> Result<(), String> {
    crate::listener::parse_advertised(v).map(|_| ())
}
fn protocol_map(v: &str) -> Result<(), String> {
    crate::listener::parse_protocol_map(v).map(|_| ())
}
fn roles(v: &str) -> Result<(), String> {
    crate::node::Roles::parse(v).map(|_| ())
}
fn voters(v: &str) -> Result<(), String> {
    crate::node::parse_voters(v).map(|_| ())
}
fn listener_name(v: &str) -> Result<(), String> {
    let v = v.trim();
    if v.is_empty() || v.contains(',') || v.eq_ignore_ascii_case("PLAINTEXT") {
        return Err("one listener name other than PLAINTEXT is needed".into());
    }
    Ok(())
}
fn rack(v: &str) -> Result<(), String> {
    if v.len() > 255 || v.chars().any(|c| c.is_control()) {
        return Err("a rack id is at most 255 printable characters".into());
    }
    Ok(())
}
fn cluster_id(v: &str) -> Result<(), String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("a cluster id is at most 64 characters of A-Z, a-z, 0-9, '-' and '_'".into());
    }
    Ok(())
}
fn assignors(v: &str) -> Result<(), String> {
    let names: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Err("at least one assignor is needed".into());
    }
    for n in names {
        if skein_group::Assignor::from_name(assignor_short_name(n)).is_none() {
            return Err(format!("unknown assignor '{n}' (uniform or range)"));
        }
    }
    Ok(())
}

/// Accepts Kafka's class names for the assignors as well as their short names.
fn assignor_short_name(n: &str) -> &str {
    match n {
        "org.apache.kafka.coordinator.group.assignor.UniformAssignor" => "uniform",
        "org.apache.kafka.coordinator.group.assignor.RangeAssignor" => "range",
        other => other,
    }
}

fn node_id(v: &str) -> Result<(), String> {
    int_min(v, 0)
}

/// Accepts `host:port` or Kafka's `PLAINTEXT://host:port`.
pub fn parse_listener(v: &str) -> Result<SocketAddr, String> {
    let v = v.trim();
    let v = v.strip_prefix("PLAINTEXT://").unwrap_or(v);
    let v = if let Some(rest) = v.strip_prefix("localhost:") {
        format!("127.0.0.1:{rest}")
    } else {
        v.to_string()
    };
    v.parse::<SocketAddr>()
        .map_err(|_| format!("'{v}' is not an address of the form HOST:PORT"))
}

/// Every topic config Skein knows, with the broker key that sets its default.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        broker_key: "log.cleanup.policy",
        ty: ConfigType::List,
        default: "delete",
        validate: cleanup_policy,
        doc: "Retention policy for old log segments: delete or compact.",
    },
    TopicConfigDef {
        name: "compression.type",
        broker_key: "compression.type",
        ty: ConfigType::String,
        default: "producer",
        validate: compression_type,
        doc: "Final compression of stored batches; 'producer' keeps what the producer sent.",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        broker_key: "log.cleaner.delete.retention.ms",
        ty: ConfigType::Long,
        default: "86400000",
        validate: long_ge0,
        doc: "How long delete tombstones are kept in compacted topics.",
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        broker_key: "log.segment.delete.delay.ms",
        ty: ConfigType::Long,
        default: "60000",
        validate: long_ge0,
        doc: "Time to wait before deleting a file from the filesystem.",
    },
    TopicConfigDef {
        name: "flush.messages",
        broker_key: "log.flush.interval.messages",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validate: long_ge1,
        doc: "Force an fsync after this many messages.",
    },
    TopicConfigDef {
        name: "flush.ms",
        broker_key: "log.flush.interval.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validate: long_ge0,
        doc: "Force an fsync after this much time.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        broker_key: "log.index.interval.bytes",
        ty: ConfigType::Int,
        default: "4096",
        validate: int_ge0,
        doc: "Bytes of log between offset index entries.",
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        broker_key: "log.cleaner.max.compaction.lag.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validate: long_ge1,
        doc: "Longest a message stays ineligible for compaction.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        broker_key: "message.max.bytes",
        ty: ConfigType::Int,
        default: "1048588",
        validate: int_ge0,
        doc: "Largest record batch size allowed.",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_key: "log.message.timestamp.after.max.ms",
        ty: ConfigType::Long,
        default: "3600000",
        validate: long_ge0,
        doc: "How far in the future a CreateTime timestamp may be.",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_key: "log.message.timestamp.before.max.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        validate: long_ge0,
        doc: "How far in the past a CreateTime timestamp may be.",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        broker_key: "log.message.timestamp.type",
        ty: ConfigType::String,
        default: "CreateTime",
        validate: timestamp_type,
        doc: "CreateTime or LogAppendTime.",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_key: "log.cleaner.min.cleanable.ratio",
        ty: ConfigType::Double,
        default: "0.5",
        validate: ratio,
        doc: "Dirty ratio at which the log cleaner compacts.",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        broker_key: "log.cleaner.min.compaction.lag.ms",
        ty: ConfigType::Long,
        default: "0",
        validate: long_ge0,
        doc: "Shortest time a message stays uncompacted.",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        broker_key: "min.insync.replicas",
        ty: ConfigType::Int,
        default: "1",
        validate: int_ge1,
        doc: "The fewest in-sync replicas an acks=all write needs (NOT_ENOUGH_REPLICAS below it); the high watermark does not advance while the ISR is smaller.",
    },
    TopicConfigDef {
        name: "preallocate",
        broker_key: "log.preallocate",
        ty: ConfigType::Boolean,
        default: "false",
        validate: boolean,
        doc: "Preallocate segment files.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        broker_key: "log.retention.bytes",
        ty: ConfigType::Long,
        default: "-1",
        validate: long_ge_minus1,
        doc: "Largest size of a partition before old segments are deleted; -1 for no limit.",
    },
    TopicConfigDef {
        name: "retention.ms",
        broker_key: "log.retention.ms",
        ty: ConfigType::Long,
        default: "604800000",
        validate: long_ge_minus1,
        doc: "Longest time a segment is kept; -1 for no limit.",
    },
    TopicConfigDef {
        name: "segment.bytes",
        broker_key: "log.segment.bytes",
        ty: ConfigType::Int,
        default: "1073741824",
        validate: segment_bytes,
        doc: "Size at which a segment file is rolled.",
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        broker_key: "log.index.size.max.bytes",
        ty: ConfigType::Int,
        default: "10485760",
        validate: segment_index_bytes,
        doc: "Largest size of an offset index file.",
    },
    TopicConfigDef {
        name: "segment.jitter.ms",
        broker_key: "log.roll.jitter.ms",
        ty: ConfigType::Long,
        default: "0",
        validate: long_ge0,
        doc: "Random jitter subtracted from segment.ms.",
    },
    TopicConfigDef {
        name: "segment.ms",
        broker_key: "log.roll.ms",
        ty: ConfigType::Long,
        default: "604800000",
        validate: long_ge1,
        doc: "Age at which a segment file is rolled.",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        broker_key: "unclean.leader.election.enable",
        ty: ConfigType::Boolean,
        default: "false",
        validate: boolean,
        doc: "Allow out-of-sync replicas to become leader.",
    },
];

/// Broker settings that are not topic defaults.
pub static BROKER_CONFIGS: &[BrokerConfigDef] = &[
    BrokerConfigDef { name: "node.id", ty: ConfigType::Int, default: "1", validate: node_id, doc: "This broker's id." },
    BrokerConfigDef { name: "listeners", ty: ConfigType::String, default: "127.0.0.1:9092", validate: listeners, doc: "Addresses the node binds: HOST:PORT for the Kafka (client) listener, or Kafka's named form PLAINTEXT://HOST:PORT,CONTROLLER://HOST:PORT; port 0 picks a free port." },
    BrokerConfigDef { name: "process.roles", ty: ConfigType::List, default: "broker,controller", validate: roles, doc: "What this node does: broker, controller, or both. A broker-only node joins the quorum named by controller.quorum.voters without voting." },
    BrokerConfigDef { name: "controller.quorum.voters", ty: ConfigType::List, default: "", validate: voters, doc: "The controller quorum, ID@HOST:PORT of each voter's controller listener, the same on every node. Empty: this node is a cluster of one." },
    BrokerConfigDef { name: "controller.listener.names", ty: ConfigType::String, default: "CONTROLLER", validate: listener_name, doc: "The name in listeners of the controller listener; without one, a voter binds its own entry in controller.quorum.voters." },
    BrokerConfigDef { name: "broker.rack", ty: ConfigType::String, default: "", validate: rack, doc: "The rack (or zone) of this broker; replicas of a partition are spread over racks." },
    BrokerConfigDef { name: "skein.cluster.id", ty: ConfigType::String, default: "", validate: cluster_id, doc: "The id a new cluster takes, and that an existing data directory must carry. Empty: random for a cluster of one, derived from controller.quorum.voters for a quorum." },
    BrokerConfigDef { name: "broker.session.timeout.ms", ty: ConfigType::Int, default: "9000", validate: int_ge1, doc: "A broker that has not heartbeated to the controller for this long is fenced." },
    BrokerConfigDef { name: "broker.heartbeat.interval.ms", ty: ConfigType::Int, default: "2000", validate: int_ge1, doc: "How often a broker heartbeats to the controller." },
    BrokerConfigDef { name: "skein.metadata.snapshot.entries", ty: ConfigType::Int, default: "10000", validate: int_ge1, doc: "Snapshot the metadata image every this many entries of the metadata log, and drop the log below it; a node that falls further behind catches up from the snapshot." },
    BrokerConfigDef { name: "advertised.listeners", ty: ConfigType::String, default: "", validate: advertised_listeners, doc: "Addresses given to clients in Metadata, NAME://HOST:PORT per listener (a bare HOST:PORT is the inter-broker listener's); a listener not named here advertises its bound address." },
    BrokerConfigDef { name: "listener.security.protocol.map", ty: ConfigType::String, default: crate::listener::DEFAULT_PROTOCOL_MAP, validate: protocol_map, doc: "The security protocol of each listener name, NAME:PROTOCOL,... (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL); a name that is a protocol maps to it unless given here." },
    BrokerConfigDef { name: "ssl.keystore.type", ty: ConfigType::String, default: "PEM", validate: pem_only, doc: "The key store's format: PEM (JKS and PKCS12 are not read)." },
    BrokerConfigDef { name: "ssl.keystore.location", ty: ConfigType::String, default: "", validate: any, doc: "A PEM file with the listener's certificate chain and its private key (PKCS#8, or PKCS#1/SEC1), re-read when it changes." },
    BrokerConfigDef { name: "ssl.keystore.certificate.chain", ty: ConfigType::String, default: "", validate: any, doc: "The certificate chain in PEM, inline (instead of ssl.keystore.location)." },
    BrokerConfigDef { name: "ssl.keystore.key", ty: ConfigType::String, default: "", validate: any, doc: "The private key in PEM, inline (instead of ssl.keystore.location). Sensitive." },
    BrokerConfigDef { name: "ssl.key.password", ty: ConfigType::Password, default: "", validate: any, doc: "The password of an encrypted PKCS#8 private key (PBES2: PBKDF2 or scrypt with AES-CBC, as openssl pkcs8 -topk8 -v2 aes-256-cbc writes it). Sensitive." },
    BrokerConfigDef { name: "ssl.truststore.type", ty: ConfigType::String, default: "PEM", validate: pem_only, doc: "The trust store's format: PEM." },
    BrokerConfigDef { name: "ssl.truststore.location", ty: ConfigType::String, default: "", validate: any, doc: "A PEM file of the CA certificates client certificates are checked against, re-read when it changes." },
    BrokerConfigDef { name: "ssl.truststore.certificates", ty: ConfigType::String, default: "", validate: any, doc: "The trusted CA certificates in PEM, inline (instead of ssl.truststore.location)." },
    BrokerConfigDef { name: "ssl.client.auth", ty: ConfigType::String, default: "none", validate: client_auth, doc: "Client certificates: required, requested (checked when given) or none." },
    BrokerConfigDef { name: "ssl.enabled.protocols", ty: ConfigType::List, default: "TLSv1.2,TLSv1.3", validate: tls_protocols, doc: "The TLS versions offered: TLSv1.2, TLSv1.3." },
    BrokerConfigDef { name: "ssl.principal.mapping.rules", ty: ConfigType::String, default: "DEFAULT", validate: any, doc: "How a client certificate's subject DN becomes the principal's name: DEFAULT (the DN) and RULE:pattern/replacement/[LU], comma-separated, first match wins." },
    BrokerConfigDef { name: "skein.ssl.handshake.timeout.ms", ty: ConfigType::Long, default: "10000", validate: long_ge1, doc: "A TLS handshake not finished in this time closes the connection." },
    BrokerConfigDef { name: "skein.ssl.reload.interval.ms", ty: ConfigType::Long, default: "10000", validate: long_ge1, doc: "How often the key and trust store files are checked for changes (SIGHUP re-reads them at once)." },
    BrokerConfigDef { name: "inter.broker.listener.name", ty: ConfigType::String, default: "", validate: any, doc: "The listener brokers use to reach one another, and the broker's default endpoint. Empty: PLAINTEXT if listeners has it, else the only client listener." },
    BrokerConfigDef { name: "log.dirs", ty: ConfigType::String, default: "./skein-data", validate: any, doc: "Directory holding the partitions and the broker's metadata." },
    BrokerConfigDef { name: "skein.http.listener", ty: ConfigType::String, default: "127.0.0.1:9644", validate: socket_addr, doc: "Address of the admin HTTP endpoint (/health, /ready)." },
    BrokerConfigDef { name: "num.partitions", ty: ConfigType::Int, default: "3", validate: int_ge1, doc: "Partitions of an auto-created topic or of CreateTopics with -1." },
    BrokerConfigDef { name: "default.replication.factor", ty: ConfigType::Int, default: "1", validate: replication_factor, doc: "Replication factor of auto-created topics." },
    BrokerConfigDef { name: "offsets.topic.replication.factor", ty: ConfigType::Int, default: "3", validate: replication_factor, doc: "Replication factor of __consumer_offsets; until that many brokers are registered, FindCoordinator answers COORDINATOR_NOT_AVAILABLE. A node running alone (no controller.quorum.voters) uses 1 unless this is set." },
    BrokerConfigDef { name: "replica.lag.time.max.ms", ty: ConfigType::Long, default: "30000", validate: long_ge1, doc: "A follower that has not caught up with the leader's log end for this long leaves the ISR." },
    BrokerConfigDef { name: "auto.leader.rebalance.enable", ty: ConfigType::Boolean, default: "true", validate: boolean, doc: "The active controller periodically moves leadership back to preferred replicas (the first of each assignment) when a broker's share of partitions led by others exceeds leader.imbalance.per.broker.percentage." },
    BrokerConfigDef { name: "leader.imbalance.check.interval.seconds", ty: ConfigType::Long, default: "300", validate: long_ge1, doc: "How often the active controller checks for leader imbalance (checked at most once per broker heartbeat interval)." },
    BrokerConfigDef { name: "leader.imbalance.per.broker.percentage", ty: ConfigType::Int, default: "10", validate: percentage, doc: "The share of a broker's preferred partitions that others may lead before automatic balancing moves them back." },
    BrokerConfigDef { name: "replica.fetch.wait.max.ms", ty: ConfigType::Int, default: "500", validate: int_ge1, doc: "How long a follower's fetch waits at the leader for new data." },
    BrokerConfigDef { name: "replica.fetch.max.bytes", ty: ConfigType::Int, default: "1048576", validate: int_ge1, doc: "Bytes a follower asks for per partition and fetch (a larger first batch still comes whole)." },
    BrokerConfigDef { name: "replica.fetch.response.max.bytes", ty: ConfigType::Int, default: "10485760", validate: int_ge1, doc: "Bytes a follower asks for per fetch, all partitions together." },
    BrokerConfigDef { name: "replica.fetch.backoff.ms", ty: ConfigType::Int, default: "1000", validate: int_ge1, doc: "How long a follower waits after a failed fetch before the next." },
    BrokerConfigDef { name: "auto.create.topics.enable", ty: ConfigType::Boolean, default: "true", validate: boolean, doc: "Create a topic when Metadata or Produce names an unknown one." },
    BrokerConfigDef { name: "delete.topic.enable", ty: ConfigType::Boolean, default: "true", validate: boolean, doc: "Allow DeleteTopics." },
    BrokerConfigDef { name: "socket.request.max.bytes", ty: ConfigType::Int, default: "104857600", validate: int_ge1, doc: "Largest request frame accepted." },
    BrokerConfigDef { name: "quota.window.num", ty: ConfigType::Int, default: "11", validate: int_ge1, doc: "Samples kept in memory for client quotas." },
    BrokerConfigDef { name: "quota.window.size.seconds", ty: ConfigType::Int, default: "1", validate: int_ge1, doc: "Time span of each sample for client quotas." },
    BrokerConfigDef { name: "max.connections", ty: ConfigType::Int, default: "10000", validate: int_ge1, doc: "Most client connections open at once; past it a new connection is closed at once. Also per listener: listener.name.<name>.max.connections." },
    BrokerConfigDef { name: "max.connections.per.ip", ty: ConfigType::Int, default: "2147483647", validate: int_ge0, doc: "Most connections open at once from one IP address (every listener together); past it a new connection is closed at once. 0 only with max.connections.per.ip.overrides." },
    BrokerConfigDef { name: "max.connections.per.ip.overrides", ty: ConfigType::String, default: "", validate: per_ip_overrides, doc: "Per-address exceptions to max.connections.per.ip: HOST:COUNT,... with host names (resolved at start) or addresses." },
    BrokerConfigDef { name: "max.connection.creation.rate", ty: ConfigType::Int, default: "2147483647", validate: int_ge0, doc: "Most new connections per second the broker accepts (bursts of one second's worth); connections past it wait to be accepted. Not applied to the inter-broker listener. Also per listener: listener.name.<name>.max.connection.creation.rate." },
    BrokerConfigDef { name: "connections.max.idle.ms", ty: ConfigType::Long, default: "600000", validate: long_ge1, doc: "Close connections that send nothing for this long." },
    BrokerConfigDef { name: "queued.max.request.bytes", ty: ConfigType::Long, default: "104857600", validate: queued_request_bytes, doc: "Most bytes of requests held in memory, partly received or not yet handled, across all connections; past it connections stop reading. One frame at a time may go past it, so the most held is this plus socket.request.max.bytes. -1 for no bound (Kafka's default)." },
    BrokerConfigDef { name: "max.inflight.requests.per.connection", ty: ConfigType::Int, default: "64", validate: int_ge1, doc: "Requests read ahead on one connection before reading pauses." },
    BrokerConfigDef { name: "fetch.max.bytes", ty: ConfigType::Int, default: "57671680", validate: int_ge1, doc: "Most bytes one Fetch response returns." },
    BrokerConfigDef { name: "skein.fetch.max.open.files", ty: ConfigType::Int, default: "1024", validate: int_ge0, doc: "Most segment files that fetch responses waiting to be sent may hold open (zero-copy); past it, records are read into memory. 0 turns zero-copy fetch off." },
    BrokerConfigDef { name: "log.cleaner.enable", ty: ConfigType::Boolean, default: "true", validate: boolean, doc: "Run the log cleaner, which compacts topics whose cleanup.policy includes compact." },
    BrokerConfigDef { name: "log.cleaner.threads", ty: ConfigType::Int, default: "1", validate: int_ge0, doc: "Background tasks cleaning compacted logs, each taking the dirtiest log in turn." },
    BrokerConfigDef { name: "log.cleaner.io.max.bytes.per.second", ty: ConfigType::Double, default: "1.7976931348623157E308", validate: positive_double, doc: "Bytes per second all cleaner tasks together may read and write." },
    BrokerConfigDef { name: "log.cleaner.backoff.ms", ty: ConfigType::Long, default: "15000", validate: long_ge0, doc: "How long a cleaner task sleeps when no log needs cleaning." },
    BrokerConfigDef { name: "log.cleaner.dedupe.buffer.size", ty: ConfigType::Long, default: "134217728", validate: dedupe_buffer, doc: "Memory for the key maps of all cleaner tasks together (24 bytes per key); a pass whose keys do not fit cleans up to where its map filled." },
    BrokerConfigDef { name: "log.cleaner.io.buffer.load.factor", ty: ConfigType::Double, default: "0.9", validate: load_factor, doc: "How full a cleaner's key map may get." },
    BrokerConfigDef { name: "log.cleaner.io.buffer.size", ty: ConfigType::Int, default: "524288", validate: int_ge0, doc: "Accepted for compatibility; the cleaner reads and writes through 1 MiB buffers." },
    BrokerConfigDef { name: "log.retention.check.interval.ms", ty: ConfigType::Long, default: "300000", validate: long_ge1, doc: "How often retention runs." },
    BrokerConfigDef { name: "skein.acks.all.fsync", ty: ConfigType::Boolean, default: "true", validate: boolean, doc: "Fsync before acknowledging acks=all writes; false acknowledges from the page cache like Kafka's default." },
    BrokerConfigDef { name: "skein.eligible.leader.replicas.enable", ty: ConfigType::Boolean, default: "true", validate: boolean, doc: "KIP-966 eligible leader replicas (Kafka's eligible.leader.replicas.version feature, on in new Kafka 4.1 clusters): replicas that leave the ISR while it is below min.insync.replicas stay electable, so the ISR may empty and a partition waits for one of them. Read by the active controller; false clears the ELRs as partitions change." },
    BrokerConfigDef { name: "offsets.topic.num.partitions", ty: ConfigType::Int, default: "50", validate: int_ge1, doc: "Partitions of __consumer_offsets (fixed once the topic exists)." },
    BrokerConfigDef { name: "transaction.state.log.num.partitions", ty: ConfigType::Int, default: "50", validate: int_ge1, doc: "Partitions of __transaction_state (fixed once the topic exists); a transactional id lives in partition abs(hash(id)) % this." },
    BrokerConfigDef { name: "transaction.state.log.replication.factor", ty: ConfigType::Int, default: "3", validate: replication_factor, doc: "Replication factor of __transaction_state; until that many brokers are registered, FindCoordinator for a transactional id answers COORDINATOR_NOT_AVAILABLE. A node running alone (no controller.quorum.voters) uses 1 unless this is set." },
    BrokerConfigDef { name: "transaction.state.log.min.isr", ty: ConfigType::Int, default: "2", validate: int_ge1, doc: "min.insync.replicas of __transaction_state. A node running alone uses 1 unless this is set." },
    BrokerConfigDef { name: "transaction.state.log.segment.bytes", ty: ConfigType::Int, default: "104857600", validate: int_ge1, doc: "Segment size of __transaction_state." },
    BrokerConfigDef { name: "transaction.max.timeout.ms", ty: ConfigType::Int, default: "900000", validate: int_ge1, doc: "Longest transaction.timeout.ms a producer may ask for; InitProducerId with more is refused with INVALID_TRANSACTION_TIMEOUT." },
    BrokerConfigDef { name: "transactional.id.expiration.ms", ty: ConfigType::Int, default: "604800000", validate: int_ge1, doc: "A transactional id with no transaction and no request for this long is forgotten." },
    BrokerConfigDef { name: "transaction.abort.timed.out.transaction.cleanup.interval.ms", ty: ConfigType::Int, default: "10000", validate: int_ge1, doc: "How often the coordinator looks for transactions open past their timeout (and aborts them), expired transactional ids and writes to retry; at least every second." },
    BrokerConfigDef { name: "offsets.retention.minutes", ty: ConfigType::Int, default: "10080", validate: int_ge1, doc: "How long the offsets of a group without members are kept." },
    BrokerConfigDef { name: "offsets.retention.check.interval.ms", ty: ConfigType::Long, default: "600000", validate: int_ge1, doc: "How often the group coordinator removes expired offsets and deletes empty groups without offsets (an emptied group is listed as Empty until then)." },
    BrokerConfigDef { name: "offset.metadata.max.bytes", ty: ConfigType::Int, default: "4096", validate: int_ge0, doc: "Longest metadata string of a committed offset." },
    BrokerConfigDef { name: "group.min.session.timeout.ms", ty: ConfigType::Int, default: "6000", validate: int_ge1, doc: "Shortest session timeout a classic group member may ask for." },
    BrokerConfigDef { name: "group.max.session.timeout.ms", ty: ConfigType::Int, default: "1800000", validate: int_ge1, doc: "Longest session timeout a classic group member may ask for." },
    BrokerConfigDef { name: "group.initial.rebalance.delay.ms", ty: ConfigType::Int, default: "3000", validate: int_ge0, doc: "How long the first rebalance of an empty group waits for more members." },
    BrokerConfigDef { name: "group.max.size", ty: ConfigType::Int, default: "2147483647", validate: int_ge1, doc: "Most members of one group." },
    BrokerConfigDef { name: "group.consumer.session.timeout.ms", ty: ConfigType::Int, default: "45000", validate: int_ge1, doc: "Session timeout of KIP-848 consumer group members." },
    BrokerConfigDef { name: "group.consumer.heartbeat.interval.ms", ty: ConfigType::Int, default: "5000", validate: int_ge1, doc: "Heartbeat interval given to KIP-848 consumer group members." },
    BrokerConfigDef { name: "group.consumer.assignors", ty: ConfigType::List, default: "uniform,range", validate: assignors, doc: "Server-side assignors of KIP-848 groups; the first is the default." },
    BrokerConfigDef { name: "producer.id.expiration.ms", ty: ConfigType::Int, default: "86400000", validate: int_ge1, doc: "How long an idempotent producer's state is kept after its last write; its next batch is then accepted whatever its sequence." },
    BrokerConfigDef { name: "producer.id.expiration.check.interval.ms", ty: ConfigType::Int, default: "600000", validate: int_ge1, doc: "How often idle producers are looked for and forgotten." },
    BrokerConfigDef { name: "skein.producer.ids.max", ty: ConfigType::Int, default: "500000", validate: int_ge1, doc: "Most idempotent producer states (one per producer and partition written) all partitions together keep; past it, the least recently active are forgotten first." },
    BrokerConfigDef { name: "skein.max.partitions", ty: ConfigType::Int, default: "100000", validate: int_ge1, doc: "Most partitions this broker will host." },
    BrokerConfigDef { name: "skein.dlt.suffixes", ty: ConfigType::List, default: "-dlt,.DLT", validate: any, doc: "Topic-name suffixes that mark a dead-letter topic, for the skein_dlt_* metrics (Spring Kafka's -dlt, and the .DLT of DeadLetterPublishingRecoverer before 3.3). Empty: no DLT metrics." },
    BrokerConfigDef { name: "skein.dlt.metrics.interval.ms", ty: ConfigType::Long, default: "30000", validate: long_ge1, doc: "How often the skein_dlt_* metrics are recomputed (off the request path)." },
];

/// Where a config's value came from, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    DynamicTopic = 1,
    StaticBroker = 4,
    Default = 5,
}

pub fn topic_def(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Validates one setting given to the broker (file, environment or flag).
pub fn validate_broker_setting(key: &str, value: &str) -> Result<(), String> {
    if let Some(d) = BROKER_CONFIGS.iter().find(|d| d.name == key) {
        return (d.validate)(value).map_err(|e| format!("invalid value for {key}: {e}"));
    }
    if let Some(d) = TOPIC_CONFIGS.iter().find(|d| d.broker_key == key) {
        return (d.validate)(value).map_err(|e| format!("invalid value for {key}: {e}"));
    }
    // Per-listener TLS settings: listener.name.<name>.ssl.*.
    if let Some((_, inner)) = listener_override(key) {
        if let Some(d) = BROKER_CONFIGS.iter().find(|d| {
            d.name == inner && (d.name.starts_with("ssl.") || LISTENER_LIMITS.contains(&d.name))
        }) {
            return (d.validate)(value).map_err(|e| format!("invalid value for {key}: {e}"));
        }
    }
    if crate::sasl::is_setting(key) {
        return crate::sasl::validate_setting(key, value);
    }
    if crate::authz::is_setting(key) {
        return crate::authz::validate_setting(key, value);
    }
    Err(format!("unknown setting {key}"))
}

/// Validates one topic config override (CreateTopics, AlterConfigs).
pub fn validate_topic_setting(key: &str, value: &str) -> Result<(), String> {
    match topic_def(key) {
        None => Err(format!("Unknown topic config name: {key}")),
        Some(d) => (d.validate)(value)
            .map_err(|e| format!("Invalid value {value} for configuration {key}: {e}")),
    }
}

/// The log cleaner's broker settings (`log.cleaner.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct CleanerSettings {
    pub enable: bool,
    pub threads: usize,
    pub io_max_bytes_per_second: f64,
    pub backoff_ms: u64,
    pub dedupe_buffer_bytes: usize,
    pub load_factor: f64,
}

/// The broker's resolved settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Only the settings given explicitly (file, env, flags), by key.
    pub explicit: BTreeMap<String, String>,
    pub node_id: i32,
    /// The bind address of the inter-broker listener (the first of `listeners`).
    pub listener: SocketAddr,
    /// The Kafka (client) listeners, the inter-broker one first.
    pub listeners: Vec<crate::listener::ListenerSettings>,
    /// `inter.broker.listener.name`, resolved.
    pub inter_broker_listener: String,
    /// How this broker logs in to the others when the inter-broker listener uses SASL (in a
    /// cluster): `sasl.mechanism.inter.broker.protocol` and the listener's JAAS credentials.
    pub inter_broker_sasl: Option<crate::sasl::client::SaslCredentials>,
    /// How this node logs in to the controller listener when it uses SASL (in a cluster):
    /// `sasl.mechanism.controller.protocol` and the listener's JAAS credentials.
    pub controller_sasl: Option<crate::sasl::client::SaslCredentials>,
    /// The controller listener's SASL server settings (a controller, SASL listener).
    pub controller_sasl_server: Option<std::sync::Arc<crate::sasl::SaslSettings>>,
    /// The security protocol of the controller listener (`controller.listener.names`):
    /// PLAINTEXT unless mapped in `listener.security.protocol.map`.
    pub controller_protocol: crate::listener::SecurityProtocol,
    /// `controller.listener.names` (upper case).
    pub controller_listener_name: String,
    /// Roles, quorum, controller listener and rack.
    pub cluster: crate::node::ClusterSettings,
    pub data_dir: PathBuf,
    pub http_listener: SocketAddr,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub delete_topic_enable: bool,
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`; `None` for no bound.
    pub queued_max_request_bytes: Option<usize>,
    pub max_connections: usize,
    pub max_inflight_per_connection: usize,
    pub connections_max_idle_ms: u64,
    pub fetch_max_bytes: usize,
    pub fetch_max_open_files: usize,
    pub retention_check_interval_ms: u64,
    pub acks_all_fsync: bool,
    pub max_partitions: usize,
    pub offsets_topic_partitions: i32,
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_interval_ms: u64,
    /// `log.cleaner.*`.
    pub cleaner: CleanerSettings,
    pub producer_ids_max: usize,
    pub default_replication_factor: i16,
    /// Resolved: 1 for a node running alone unless set explicitly.
    pub offsets_topic_replication_factor: i16,
    /// Resolved like `offsets_topic_replication_factor`.
    pub transaction_state_replication_factor: i16,
    /// Resolved: 1 for a node running alone unless set explicitly.
    pub transaction_state_min_isr: i32,
    pub replica_lag_time_max_ms: i64,
    pub replica_fetch_wait_max_ms: i32,
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_response_max_bytes: i32,
    pub replica_fetch_backoff_ms: u64,
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_ms: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    /// `unclean.leader.election.enable` as set for the broker (the topics' default).
    pub unclean_leader_election: bool,
    /// `skein.eligible.leader.replicas.enable` (KIP-966).
    pub eligible_leader_replicas: bool,
    /// `skein.dlt.suffixes`: the suffixes of dead-letter topics, for the DLT metrics.
    pub dlt_suffixes: Vec<String>,
    /// `skein.dlt.metrics.interval.ms`.
    pub dlt_metrics_interval_ms: u64,
}

impl BrokerConfig {
    /// Builds the config from explicit settings, refusing unknown keys and bad values.
    pub fn from_settings(settings: BTreeMap<String, String>) -> Result<BrokerConfig, String> {
        for (k, v) in &settings {
            validate_broker_setting(k, v)?;
        }
        let get = |k: &str| -> String {
            settings.get(k).cloned().unwrap_or_else(|| {
                BROKER_CONFIGS
                    .iter()
                    .find(|d| d.name == k)
                    .map(|d| d.default.to_string())
                    .expect("known broker key")
            })
        };
        let int = |k: &str| get(k).trim().parse::<i64>().expect("validated");
        let boolean = |k: &str| get(k).trim() == "true";
        let node_id = int("node.id") as i32;
        let listeners = crate::node::parse_listeners(&get("listeners")).expect("validated");
        let roles = crate::node::Roles::parse(&get("process.roles")).expect("validated");
        if !roles.broker {
            return Err("process.roles=controller (a controller-only node) is not supported yet: use broker,controller".into());
        }
        let controller_name = get("controller.listener.names").trim().to_ascii_uppercase();
        let protocol_map =
            crate::listener::parse_protocol_map(&get("listener.security.protocol.map"))
                .expect("validated");
        let (client_listeners, inter_broker_listener) = crate::listener::resolve_listeners(
            &listeners,
            &controller_name,
            &protocol_map,
            &crate::listener::parse_advertised(&get("advertised.listeners")).expect("validated"),
            &get("inter.broker.listener.name"),
        )?;
        let listener = client_listeners[0].bind;
        let cluster = crate::node::ClusterSettings {
            roles,
            voters: crate::node::parse_voters(&get("controller.quorum.voters")).expect("validated"),
            controller_listener: None,
            rack: Some(get("broker.rack").trim().to_string()),
            cluster_id: Some(get("skein.cluster.id").trim().to_string()),
            broker_session_timeout_ms: int("broker.session.timeout.ms") as u64,
            broker_heartbeat_interval_ms: int("broker.heartbeat.interval.ms") as u64,
            metadata_snapshot_entries: int("skein.metadata.snapshot.entries") as u64,
        }
        .resolve(node_id, &listeners, &controller_name)?;
        // Kafka maps a controller listener name that is no protocol to PLAINTEXT unless
        // listener.security.protocol.map says otherwise.
        let controller_protocol = protocol_map
            .get(&controller_name)
            .copied()
            .or_else(|| crate::listener::SecurityProtocol::parse(&controller_name))
            .unwrap_or(crate::listener::SecurityProtocol::Plaintext);
        // SASL on the controller listener (Kafka's sasl.mechanism.controller.protocol): the
        // credentials every node logs in with, and the server side on a controller.
        let (controller_sasl, controller_sasl_server) = if controller_protocol.uses_sasl()
            && !cluster.voters.is_empty()
        {
            let client =
                crate::sasl::client::SaslCredentials::for_controller(&settings, &controller_name)?;
            let server = if cluster.roles.controller {
                Some(std::sync::Arc::new(
                    crate::sasl::SaslSettings::for_listener(&settings, &controller_name)
                        .map_err(|e| format!("controller listener {controller_name}: {e}"))?,
                ))
            } else {
                None
            };
            (Some(client), server)
        } else {
            (None, None)
        };
        let inter_broker_sasl =
            if !cluster.voters.is_empty() && client_listeners[0].protocol.uses_sasl() {
                Some(crate::sasl::client::SaslCredentials::for_inter_broker(
                    &settings,
                    &inter_broker_listener,
                )?)
            } else {
                None
            };
        let offsets_topic_replication_factor = if settings
            .contains_key("offsets.topic.replication.factor")
            || !cluster.voters.is_empty()
        {
            int("offsets.topic.replication.factor") as i16
        } else {
            1
        };
        let alone_unless_set = |k: &str| -> i64 {
            if settings.contains_key(k) || !cluster.voters.is_empty() {
                int(k)
            } else {
                1
            }
        };
        let transaction_state_replication_factor =
            alone_unless_set("transaction.state.log.replication.factor") as i16;
        let transaction_state_min_isr = alone_unless_set("transaction.state.log.min.isr") as i32;
        let config = BrokerConfig {
            node_id,
            listener,
            listeners: client_listeners,
            inter_broker_listener,
            inter_broker_sasl,
            controller_sasl,
            controller_sasl_server,
            controller_protocol,
            controller_listener_name: controller_name,
            cluster,
            data_dir: PathBuf::from(get("log.dirs")),
            http_listener: parse_listener(&get("skein.http.listener")).expect("validated"),
            num_partitions: int("num.partitions") as i32,
            auto_create_topics: boolean("auto.create.topics.enable"),
            delete_topic_enable: boolean("delete.topic.enable"),
            socket_request_max_bytes: int("socket.request.max.bytes") as usize,
            queued_max_request_bytes: match int("queued.max.request.bytes") {
                -1 => None,
                n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
            max_connections: int("max.connections") as usize,
            max_inflight_per_connection: int("max.inflight.requests.per.connection") as usize,
            connections_max_idle_ms: int("connections.max.idle.ms") as u64,
            fetch_max_bytes: int("fetch.max.bytes") as usize,
            fetch_max_open_files: int("skein.fetch.max.open.files") as usize,
            retention_check_interval_ms: int("log.retention.check.interval.ms") as u64,
            cleaner: CleanerSettings {
                enable: boolean("log.cleaner.enable"),
                threads: int("log.cleaner.threads") as usize,
                io_max_bytes_per_second: get("log.cleaner.io.max.bytes.per.second")
                    .trim()
                    .parse()
                    .unwrap_or(f64::MAX),
                backoff_ms: int("log.cleaner.backoff.ms") as u64,
                dedupe_buffer_bytes: int("log.cleaner.dedupe.buffer.size") as usize,
                load_factor: get("log.cleaner.io.buffer.load.factor")
                    .trim()
                    .parse()
                    .unwrap_or(0.9),
            },
            acks_all_fsync: boolean("skein.acks.all.fsync"),
            max_partitions: int("skein.max.partitions") as usize,
            offsets_topic_partitions: int("offsets.topic.num.partitions") as i32,
            producer_id_expiration_ms: int("producer.id.expiration.ms"),
            producer_id_expiration_check_interval_ms: int(
                "producer.id.expiration.check.interval.ms",
            ) as u64,
            producer_ids_max: int("skein.producer.ids.max") as usize,
            default_replication_factor: int("default.replication.factor") as i16,
            offsets_topic_replication_factor,
            transaction_state_replication_factor,
            transaction_state_min_isr,
            replica_lag_time_max_ms: int("replica.lag.time.max.ms"),
            replica_fetch_wait_max_ms: int("replica.fetch.wait.max.ms") as i32,
            replica_fetch_max_bytes: int("replica.fetch.max.bytes") as i32,
            replica_fetch_response_max_bytes: int("replica.fetch.response.max.bytes") as i32,
            replica_fetch_backoff_ms: int("replica.fetch.backoff.ms") as u64,
            auto_leader_rebalance: boolean("auto.leader.rebalance.enable"),
            leader_imbalance_check_interval_ms: (int("leader.imbalance.check.interval.seconds")
                as u64)
                .saturating_mul(1000),
            leader_imbalance_per_broker_percentage: int("leader.imbalance.per.broker.percentage")
                as u32,
            unclean_leader_election: settings
                .get("unclean.leader.election.enable")
                .is_some_and(|v| v.trim() == "true"),
            eligible_leader_replicas: boolean("skein.eligible.leader.replicas.enable"),
            dlt_suffixes: get("skein.dlt.suffixes")
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            dlt_metrics_interval_ms: int("skein.dlt.metrics.interval.ms") as u64,
            explicit: settings,
        };
        if config.data_dir.as_os_str().is_empty() {
            return Err("invalid value for log.dirs: empty path".into());
        }
        Ok(config)
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> skein_group::GroupConfig {
        let get = |k: &str| -> i64 {
            let default = BROKER_CONFIGS
                .iter()
                .find(|d| d.name == k)
                .map(|d| d.default)
                .expect("known key");
            self.explicit
                .get(k)
                .map(String::as_str)
                .unwrap_or(default)
                .trim()
                .parse()
                .unwrap_or(0)
        };
        let first_assignor = self
            .explicit
            .get("group.consumer.assignors")
            .and_then(|v| v.split(',').map(str::trim).find(|s| !s.is_empty()))
            .and_then(|n| skein_group::Assignor::from_name(assignor_short_name(n)))
            .unwrap_or(skein_group::Assignor::Uniform);
        skein_group::GroupConfig {
            min_session_timeout_ms: get("group.min.session.timeout.ms") as i32,
            max_session_timeout_ms: get("group.max.session.timeout.ms") as i32,
            initial_rebalance_delay_ms: get("group.initial.rebalance.delay.ms"),
            max_group_size: get("group.max.size") as usize,
            offsets_retention_ms: get("offsets.retention.minutes") * 60_000,
            offsets_retention_check_interval_ms: get("offsets.retention.check.interval.ms"),
            offset_metadata_max_bytes: get("offset.metadata.max.bytes") as usize,
            consumer_session_timeout_ms: get("group.consumer.session.timeout.ms") as i32,
            consumer_heartbeat_interval_ms: get("group.consumer.heartbeat.interval.ms") as i32,
            consumer_assignor: first_assignor,
            ..skein_group::GroupConfig::default()
        }
    }

    /// The transaction coordinator's settings.
    pub fn txn_config(&self) -> skein_txn::TxnConfig {
        skein_txn::TxnConfig {
            state_partitions: self.setting_i64("transaction.state.log.num.partitions") as i32,
            max_timeout_ms: self.setting_i64("transaction.max.timeout.ms") as i32,
            id_expiration_ms: self.setting_i64("transactional.id.expiration.ms"),
            ..skein_txn::TxnConfig::default()
        }
    }

    /// A numeric broker setting: its explicit value, else its default.
    pub fn setting_i64(&self, key: &str) -> i64 {
        let default = BROKER_CONFIGS
            .iter()
            .find(|d| d.name == key)
            .map(|d| d.default)
            .expect("known key");
        self.explicit
            .get(key)
            .map(String::as_str)
            .unwrap_or(default)
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// The broker-level value of a topic config's default, and whether it was set explicitly.
    pub fn topic_default(&self, def: &TopicConfigDef) -> (String, ConfigSource) {
        match self.explicit.get(def.broker_key) {
            Some(v) => (v.clone(), ConfigSource::StaticBroker),
            None => (def.default.to_string(), ConfigSource::Default),
        }
    }

    /// Every broker config with its value and source, for DescribeConfigs on the broker.
    pub fn describe(&self) -> Vec<(String, String, ConfigSource, ConfigType, &'static str)> {
        let mut out = Vec::new();
        for d in BROKER_CONFIGS {
            let (v, s) = match self.explicit.get(d.name) {
                Some(v) => (v.clone(), ConfigSource::StaticBroker),
                None => (d.default.to_string(), ConfigSource::Default),
            };
            out.push((d.name.to_string(), v, s, d.ty, d.doc));
        }
        for d in TOPIC_CONFIGS {
            let (v, s) = self.topic_default(d);
            out.push((d.broker_key.to_string(), v, s, d.ty, d.doc));
        }
        // Per-listener overrides (listener.name.<name>.ssl.*) as they were given.
        for (k, v) in &self.explicit {
            if let Some((_, inner)) = listener_override(k) {
                if let Some(d) = BROKER_CONFIGS.iter().find(|d| d.name == inner) {
                    out.push((
                        k.clone(),
                        v.clone(),
                        ConfigSource::StaticBroker,
                        d.ty,
                        d.doc,
                    ));
                }
            }
        }
        // The SASL settings, and the per-listener ones (JAAS configurations, enabled
        // mechanisms) as they were given. The JAAS ones are secrets: flagged, no value.
        for &(name, default, ty, doc) in crate::sasl::DESCRIBED {
            let (v, s) = match self.explicit.get(name) {
                Some(v) => (v.clone(), ConfigSource::StaticBroker),
                None => (default.to_string(), ConfigSource::Default),
            };
            out.push((name.to_string(), v, s, ty, doc));
        }
        for (k, v) in &self.explicit {
            if let Some((ty, doc)) = crate::sasl::describe_listener_setting(k) {
                out.push((k.clone(), v.clone(), ConfigSource::StaticBroker, ty, doc));
            }
        }
        out
    }
}

/// A topic's effective configuration: its overrides on top of the broker's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicConfig {
    pub overrides: HashMap<String, String>,
}

/// The values of a topic's configs that the broker acts on.
#[derive(Debug, Clone)]
pub struct EffectiveTopicConfig {
    pub log: LogConfig,
    pub max_message_bytes: usize,
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`: every record needs a key.
    pub compacted: bool,
    pub timestamp_after_max_ms: i64,
    pub timestamp_before_max_ms: i64,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
    /// `min.cleanable.dirty.ratio`, `min.compaction.lag.ms`, `max.compaction.lag.ms` and
    /// `delete.retention.ms`, for the cleaner (`now_ms` is set per pass).
    pub compaction: skein_log::CleanParams,
}

impl TopicConfig {
    pub fn value(&self, broker: &BrokerConfig, def: &TopicConfigDef) -> (String, ConfigSource) {
        match self.overrides.get(def.name) {
            Some(v) => (v.clone(), ConfigSource::DynamicTopic),
            None => broker.topic_default(def),
        }
    }

    fn long(&self, broker: &BrokerConfig, name: &str) -> i64 {
        let def = topic_def(name).expect("known topic config");
        self.value(broker, def)
            .0
            .trim()
            .parse()
            .unwrap_or_else(|_| def.default.parse().expect("default parses"))
    }

    pub fn effective(&self, broker: &BrokerConfig) -> EffectiveTopicConfig {
        let policy = self
            .value(broker, topic_def("cleanup.policy").expect("known"))
            .0;
        let has_policy = |name: &str| policy.split(',').any(|p| p.trim() == name);
        let log = LogConfig {
            segment_bytes: self.long(broker, "segment.bytes") as u64,
            segment_ms: self.long(broker, "segment.ms"),
            retention_ms: self.long(broker, "retention.ms"),
            retention_bytes: self.long(broker, "retention.bytes"),
            delete_retention: has_policy("delete"),
            index_interval_bytes: self.long(broker, "index.interval.bytes") as u32,
            segment_index_bytes: self.long(broker, "segment.index.bytes") as u32,
            file_delete_delay_ms: self.long(broker, "file.delete.delay.ms"),
        };
        let ts_type = self
            .value(broker, topic_def("message.timestamp.type").expect("known"))
            .0;
        EffectiveTopicConfig {
            log,
            max_message_bytes: self.long(broker, "max.message.bytes").max(0) as usize,
            log_append_time: ts_type == "LogAppendTime",
            compacted: has_policy("compact"),
            timestamp_after_max_ms: self.long(broker, "message.timestamp.after.max.ms"),
            timestamp_before_max_ms: self.long(broker, "message.timestamp.before.max.ms"),
            min_insync_replicas: self.long(broker, "min.insync.replicas").max(1) as usize,
            compaction: skein_log::CleanParams {
                min_cleanable_dirty_ratio: self
                    .value(
                        broker,
                        topic_def("min.cleanable.dirty.ratio").expect("known"),
                    )
                    .0
                    .trim()
                    .parse()
                    .unwrap_or(0.5),
                min_compaction_lag_ms: self.long(broker, "min.compaction.lag.ms"),
                max_compaction_lag_ms: self.long(broker, "max.compaction.lag.ms"),
                delete_retention_ms: self.long(broker, "delete.retention.ms"),
                now_ms: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = BrokerConfig::from_settings(BTreeMap::new()).unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.listener.to_string(), "127.0.0.1:9092");
        assert_eq!(c.socket_request_max_bytes, 104_857_600);
        // Not Kafka's: Kafka's -1 (no bound) lets idle connections exhaust memory.
        assert_eq!(c.queued_max_request_bytes, Some(104_857_600));
        let t = TopicConfig::default().effective(&c);
        assert_eq!(t.log.retention_ms, 604_800_000);
        assert_eq!(t.max_message_bytes, 1_048_588);
    }

    #[test]
    fn unknown_and_invalid_settings_name_the_key() {
        let e = BrokerConfig::from_settings(settings(&[("no.such.key", "1")])).unwrap_err();
        assert!(e.contains("no.such.key"), "{e}");
        let e = BrokerConfig::from_settings(settings(&[("num.partitions", "abc")])).unwrap_err();
        assert!(e.contains("num.partitions"), "{e}");
        let e = BrokerConfig::from_settings(settings(&[("log.retention.ms", "-5")])).unwrap_err();
        assert!(e.contains("log.retention.ms"), "{e}");
    }

    #[test]
    fn queued_max_request_bytes_is_minus_one_or_positive() {
        let c =
            BrokerConfig::from_settings(settings(&[("queued.max.request.bytes", "-1")])).unwrap();
        assert_eq!(c.queued_max_request_bytes, None);
        let c = BrokerConfig::from_settings(settings(&[("queued.max.request.bytes", "1048576")]))
            .unwrap();
        assert_eq!(c.queued_max_request_bytes, Some(1_048_576));
        for bad in ["0", "-2", "lots"] {
            let e = BrokerConfig::from_settings(settings(&[("queued.max.request.bytes", bad)]))
                .unwrap_err();
            assert!(e.contains("queued.max.request.bytes"), "{e}");
        }
    }

    #[test]
    fn topic_overrides_win_over_broker_defaults() {
        let c = BrokerConfig::from_settings(settings(&[("log.retention.ms", "1000")])).unwrap();
        let mut t = TopicConfig::default();
        let def = topic_def("retention.ms").unwrap();
        assert_eq!(
            t.value(&c, def),
            ("1000".into(), ConfigSource::StaticBroker)
        );
        t.overrides.insert("retention.ms".into(), "5".into());
        assert_eq!(t.value(&c, def), ("5".into(), ConfigSource::DynamicTopic));
        assert_eq!(t.effective(&c).log.retention_ms, 5);
    }
}
