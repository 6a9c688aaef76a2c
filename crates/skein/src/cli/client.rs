//! A small blocking Kafka client for the operator commands: one TCP connection per broker,
//! versions negotiated with ApiVersions, requests answered in order on each connection.
//!
//! [`Connection`] speaks to one broker; [`Cluster`] knows the brokers from Metadata and opens
//! connections to partition leaders and group coordinators as they are needed.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use skein_broker::sasl::client::{plain_token, SaslCredentials, ScramClient};
use skein_broker::sasl::scram::Mechanism;
use skein_protocol::messages::api_versions_request::ApiVersionsRequest;
use skein_protocol::messages::api_versions_response::ApiVersionsResponse;
use skein_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use skein_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use skein_protocol::messages::metadata_response::{MetadataResponse, MetadataResponseTopic};
use skein_protocol::messages::*;
use skein_protocol::{decode_response, encode_request, ApiKey, RequestBody, RequestHeader};
use skein_protocol::{Decode, ResponseBody};

use super::errors::{self, KafkaError};
use super::security::{Security, Stream};

/// The client id every request carries.
pub const CLIENT_ID: &str = "skein-cli";
/// Replies larger than this are refused rather than buffered.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// How long to wait for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for an ordinary reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The start of the error for a TLS record read in plaintext.
const TLS_ANSWER: &str = "the broker answered with TLS";
/// How many times a request is retried after a retriable error (leader moved, coordinator
/// loading) before the error is reported.
pub const RETRIES: u32 = 8;

/// A request message the client can send: its API, the highest version this client has
/// been tested with, and how to take its response out of a [`ResponseBody`].
pub trait Exchange: Into<RequestBody> {
    type Response;
    const KEY: ApiKey;
    fn response(body: ResponseBody) -> Option<Self::Response>;
}

macro_rules! exchanges {
    ($($variant:ident: $request:ident => $response:ident, tested up to $max:expr;)*) => {
        $(
            impl Exchange for $request {
                type Response = $response;
                const KEY: ApiKey = ApiKey::$variant;
                fn response(body: ResponseBody) -> Option<$response> {
                    match body {
                        ResponseBody::$variant(r) => Some(r),
                        _ => None,
                    }
                }
            }
        )*

        /// The highest version of each API this client sends (the versions it was tested
        /// with; later versions change semantics it does not implement, such as topic ids in
        /// Fetch).
        pub fn max_tested_version(key: ApiKey) -> Option<i16> {
            match key {
                $(ApiKey::$variant => Some($max),)*
                _ => None,
            }
        }
    };
}

exchanges! {
    ApiVersions: ApiVersionsRequest => ApiVersionsResponse, tested up to 3;
    Metadata: MetadataRequest => MetadataResponse, tested up to 12;
    Produce: ProduceRequest => ProduceResponse, tested up to 11;
    Fetch: FetchRequest => FetchResponse, tested up to 12;
    ListOffsets: ListOffsetsRequest => ListOffsetsResponse, tested up to 7;
    CreateTopics: CreateTopicsRequest => CreateTopicsResponse, tested up to 7;
    DeleteTopics: DeleteTopicsRequest => DeleteTopicsResponse, tested up to 6;
    CreatePartitions: CreatePartitionsRequest => CreatePartitionsResponse, tested up to 3;
    DescribeConfigs: DescribeConfigsRequest => DescribeConfigsResponse, tested up to 4;
    IncrementalAlterConfigs: IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse, tested up to 1;
    DescribeCluster: DescribeClusterRequest => DescribeClusterResponse, tested up to 2;
    DescribeLogDirs: DescribeLogDirsRequest => DescribeLogDirsResponse, tested up to 4;
    FindCoordinator: FindCoordinatorRequest => FindCoordinatorResponse, tested up to 6;
    JoinGroup: JoinGroupRequest => JoinGroupResponse, tested up to 9;
    SyncGroup: SyncGroupRequest => SyncGroupResponse, tested up to 5;
    Heartbeat: HeartbeatRequest => HeartbeatResponse, tested up to 4;
    LeaveGroup: LeaveGroupRequest => LeaveGroupResponse, tested up to 5;
    OffsetCommit: OffsetCommitRequest => OffsetCommitResponse, tested up to 8;
    OffsetFetch: OffsetFetchRequest => OffsetFetchResponse, tested up to 8;
    DescribeGroups: DescribeGroupsRequest => DescribeGroupsResponse, tested up to 5;
    ListGroups: ListGroupsRequest => ListGroupsResponse, tested up to 5;
    DeleteGroups: DeleteGroupsRequest => DeleteGroupsResponse, tested up to 2;
    ConsumerGroupDescribe: ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse, tested up to 0;
    DescribeQuorum: DescribeQuorumRequest => DescribeQuorumResponse, tested up to 2;
    AddRaftVoter: AddRaftVoterRequest => AddRaftVoterResponse, tested up to 0;
    RemoveRaftVoter: RemoveRaftVoterRequest => RemoveRaftVoterResponse, tested up to 0;
    AlterPartitionReassignments: AlterPartitionReassignmentsRequest => AlterPartitionReassignmentsResponse, tested up to 0;
    ListPartitionReassignments: ListPartitionReassignmentsRequest => ListPartitionReassignmentsResponse, tested up to 0;
    DescribeTopicPartitions: DescribeTopicPartitionsRequest => DescribeTopicPartitionsResponse, tested up to 0;
    InitProducerId: InitProducerIdRequest => InitProducerIdResponse, tested up to 4;
    AddPartitionsToTxn: AddPartitionsToTxnRequest => AddPartitionsToTxnResponse, tested up to 3;
    AddOffsetsToTxn: AddOffsetsToTxnRequest => AddOffsetsToTxnResponse, tested up to 3;
    TxnOffsetCommit: TxnOffsetCommitRequest => TxnOffsetCommitResponse, tested up to 3;
    EndTxn: EndTxnRequest => EndTxnResponse, tested up to 3;
    DeleteRecords: DeleteRecordsRequest => DeleteRecordsResponse, tested up to 2;
    DescribeUserScramCredentials: DescribeUserScramCredentialsRequest => DescribeUserScramCredentialsResponse, tested up to 0;
    AlterUserScramCredentials: AlterUserScramCredentialsRequest => AlterUserScramCredentialsResponse, tested up to 0;
    CreateAcls: CreateAclsRequest => CreateAclsResponse, tested up to 3;
    DescribeAcls: DescribeAclsRequest => DescribeAclsResponse, tested up to 3;
    DeleteAcls: DeleteAclsRequest => DeleteAclsResponse, tested up to 3;
    DescribeClientQuotas: DescribeClientQuotasRequest => DescribeClientQuotasResponse, tested up to 1;
    AlterClientQuotas: AlterClientQuotasRequest => AlterClientQuotasResponse, tested up to 1;
    SaslHandshake: SaslHandshakeRequest => SaslHandshakeResponse, tested up to 1;
    SaslAuthenticate: SaslAuthenticateRequest => SaslAuthenticateResponse, tested up to 2;
}

/// One broker's advertised version range for one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    pub min: i16,
    pub max: i16,
}

/// The version to use: the highest both sides support, capped at what this client tested.
pub fn negotiate(key: ApiKey, broker: Option<VersionRange>) -> Option<i16> {
    let broker = broker?;
    let (codec_min, codec_max) = key.valid_versions();
    let ours = max_tested_version(key)?.min(codec_max);
    let high = ours.min(broker.max);
    (high >= broker.min.max(codec_min)).then_some(high)
}

/// A connection to one broker.
pub struct Connection {
    stream: Stream,
    addr: String,
    next_correlation_id: i32,
    versions: BTreeMap<i16, VersionRange>,
    /// Set when a reply was not read in full; the connection is then out of step.
    broken: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`) as `security` says (TLS handshake, then ApiVersions,
    /// then the SASL login) and negotiates versions.
    pub fn open(addr: &str, security: &Security) -> Result<Connection> {
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {addr}"))?
            .collect();
        let mut last_error = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let stream = match (stream, last_error) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(anyhow!(e).context(format!("cannot connect to {addr}"))),
            (None, None) => bail!("cannot resolve {addr}: no addresses"),
        };
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
        stream.set_write_timeout(Some(REQUEST_TIMEOUT)).ok();
        let stream = security.wrap(stream, addr)?;
        let mut conn = Connection {
            stream,
            addr: addr.to_owned(),
            next_correlation_id: 1,
            versions: BTreeMap::new(),
            broken: false,
        };
        let plaintext = matches!(conn.stream, Stream::Plain(_));
        conn.negotiate_versions().map_err(|e| {
            // A plaintext connection the broker closed may be a TLS listener's.
            let hint = plaintext && !format!("{e:#}").contains(TLS_ANSWER);
            e.context(if hint {
                format!("ApiVersions with {addr} (in plaintext; an SSL or SASL listener needs --command-config)")
            } else {
                format!("ApiVersions with {addr}")
            })
        })?;
        if let Some(creds) = security.sasl() {
            conn.login(creds)?;
        }
        Ok(conn)
    }

    /// SASL (KIP-152): SaslHandshake v1 names the mechanism, then SaslAuthenticate frames
    /// carry PLAIN's one token or SCRAM's two (the server's signature checked at the end).
    fn login(&mut self, creds: &SaslCredentials) -> Result<()> {
        let addr = self.addr.clone();
        let mechanism = creds.mechanism.clone();
        if self.version(ApiKey::SaslHandshake)? < 1 {
            bail!("the broker at {addr} only speaks SaslHandshake v0 (raw SASL tokens), which this client does not");
        }
        let handshake = self
            .send(SaslHandshakeRequest {
                mechanism: mechanism.clone(),
                ..Default::default()
            })
            .with_context(|| format!("SaslHandshake with {addr}"))?;
        if handshake.error_code != errors::NONE {
            let enabled = handshake.mechanisms.join(", ");
            return Err(KafkaError::new(
                handshake.error_code,
                Some(format!(
                    "the broker at {addr} does not accept SASL mechanism {mechanism} (it enables: {enabled})"
                )),
            )
            .into());
        }
        let mut scram = match mechanism.as_str() {
            "PLAIN" => None,
            m => Some(ScramClient::new(
                Mechanism::from_name(m).ok_or_else(|| anyhow!("unknown SASL mechanism {m}"))?,
                creds,
            )),
        };
        let mut token = match &scram {
            None => plain_token(creds),
            Some(s) => s.client_first(),
        };
        for _ in 0..4 {
            let answer = self
                .send(SaslAuthenticateRequest {
                    auth_bytes: bytes::Bytes::from(std::mem::take(&mut token)),
                    ..Default::default()
                })
                .with_context(|| format!("SaslAuthenticate with {addr}"))?;
            if answer.error_code != errors::NONE {
                let message = answer
                    .error_message
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| {
                        errors::name(answer.error_code)
                            .map_or_else(|| format!("error {}", answer.error_code), str::to_owned)
                    });
                bail!(
                    "authentication failed: {message} (SASL {mechanism} as {} at {addr})",
                    creds.username
                );
            }
            match scram.as_mut() {
                None => return Ok(()),
                Some(s) => match s.next(&answer.auth_bytes) {
                    Ok(Some(t)) => token = t,
                    Ok(None) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        bail!("authentication failed: {e} (SASL {mechanism} at {addr})")
                    }
                    Err(e) => bail!("SASL {mechanism} with {addr}: {e}"),
                },
            }
        }
        bail!("SASL {mechanism} with {addr}: the exchange did not end")
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The broker's advertised ranges, by api key.
    pub fn broker_versions(&self) -> &BTreeMap<i16, VersionRange> {
        &self.versions
    }

    /// The version this connection uses for `key`, or an error naming the API when the
    /// broker and this client have none in common.
    pub fn version(&self, key: ApiKey) -> Result<i16> {
        let broker = self.versions.get(&(key as i16)).copied();
        negotiate(key, broker).ok_or_else(|| match broker {
            None => anyhow!("the broker at {} does not support {key}", self.addr),
            Some(r) => anyhow!(
                "the broker at {} supports {key} versions {}-{}, none of which this client speaks",
                self.addr,
                r.min,
                r.max
            ),
        })
    }

    /// True when the broker serves `key` in a version this client speaks.
    pub fn supports(&self, key: ApiKey) -> bool {
        self.version(key).is_ok()
    }

    /// ApiVersions: first in our highest version; a broker that does not know it answers in
    /// the v0 format with its ranges (KIP-511), and we retry in the highest it has.
    fn negotiate_versions(&mut self) -> Result<()> {
        let request = ApiVersionsRequest {
            client_software_name: CLIENT_ID.to_owned(),
            client_software_version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        };
        let mut version = max_tested_version(ApiKey::ApiVersions).expect("in the table");
        for _ in 0..2 {
            let frame = self.round_trip(ApiKey::ApiVersions, version, request.clone().into())?;
            // Every ApiVersions response starts with the correlation id and the error code.
            let error = frame
                .get(4..6)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| anyhow!("truncated ApiVersions response"))?;
            let decode_version = if error == errors::UNSUPPORTED_VERSION {
                0
            } else {
                version
            };
            let (_, body) = decode_response(ApiKey::ApiVersions, decode_version, frame.into())
                .context("undecodable ApiVersions response")?;
            let ResponseBody::ApiVersions(response) = body else {
                bail!("unexpected response body");
            };
            self.versions = response
                .api_keys
                .iter()
                .map(|k| {
                    (
                        k.api_key,
                        VersionRange {
                            min: k.min_version,
                            max: k.max_version,
                        },
                    )
                })
                .collect();
            if error == errors::UNSUPPORTED_VERSION {
                let Some(v) = self
                    .version(ApiKey::ApiVersions)
                    .ok()
                    .filter(|v| *v < version)
                else {
                    return Err(KafkaError::new(error, None).into());
                };
                version = v;
                continue;
            }
            KafkaError::check(response.error_code, None)?;
            return Ok(());
        }
        bail!("the broker refused every ApiVersions version")
    }

    /// Sends `request` in the negotiated version and waits up to [`REQUEST_TIMEOUT`].
    pub fn send<R: Exchange>(&mut self, request: R) -> Result<R::Response> {
        self.send_with_timeout(request, REQUEST_TIMEOUT)
    }

    /// Sends `request` in the negotiated version and waits up to `timeout` for the reply.
    pub fn send_with_timeout<R: Exchange>(
        &mut self,
        request: R,
        timeout: Duration,
    ) -> Result<R::Response> {
        let version = self.version(R::KEY)?;
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .ok();
        let frame = self.round_trip(R::KEY, version, request.into())?;
        let (_, body) = decode_response(R::KEY, version, frame.into()).with_context(|| {
            format!(
                "undecodable {} v{version} response from {}",
                R::KEY,
                self.addr
            )
        })?;
        R::response(body).ok_or_else(|| anyhow!("{} answered with another API", self.addr))
    }

    /// Sends a request that gets no reply (Produce with acks=0).
    pub fn send_without_reply<R: Exchange>(&mut self, request: R) -> Result<()> {
        let version = self.version(R::KEY)?;
        self.write_request(R::KEY, version, request.into())?;
        Ok(())
    }

    fn write_request(&mut self, key: ApiKey, version: i16, body: RequestBody) -> Result<i32> {
        if self.broken {
            bail!(
                "the connection to {} is out of step after an error",
                self.addr
            );
        }
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let header = RequestHeader {
            api_key: key as i16,
            api_version: version,
            correlation_id,
            client_id: Some(CLIENT_ID.to_owned()),
        };
        let frame = encode_request(&header, &body)
            .with_context(|| format!("cannot encode {key} v{version}"))?;
        if let Err(e) = self.stream.write_all(&frame) {
            self.broken = true;
            return Err(anyhow!(e).context(format!("cannot send {key} to {}", self.addr)));
        }
        Ok(correlation_id)
    }

    /// Writes a request and reads the reply's frame (without its size prefix).
    fn round_trip(&mut self, key: ApiKey, version: i16, body: RequestBody) -> Result<Vec<u8>> {
        let correlation_id = self.write_request(key, version, body)?;
        let frame = self.read_frame().map_err(|e| {
            self.broken = true;
            e.context(format!("no {key} reply from {}", self.addr))
        })?;
        let got = frame
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if got != Some(correlation_id) {
            self.broken = true;
            bail!(
                "{} answered correlation id {got:?} to request {correlation_id}",
                self.addr
            );
        }
        Ok(frame)
    }

    fn read_frame(&mut self) -> Result<Vec<u8>> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io_error)?;
        // A TLS record (an alert or a handshake) where a size prefix should be: this is a
        // TLS listener spoken to in plaintext.
        if matches!(self.stream, Stream::Plain(_))
            && matches!(size, [0x15 | 0x16, 0x03, 0..=0x04, _])
        {
            bail!("{TLS_ANSWER}: it is an SSL or SASL_SSL listener; set security.protocol and ssl.truststore.location in a --command-config file");
        }
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| anyhow!("invalid response size {size}"))?;
        // Read as the bytes arrive rather than reserving what the size prefix claims.
        let mut frame = Vec::new();
        (&mut self.stream)
            .take(size as u64)
            .read_to_end(&mut frame)
            .map_err(io_error)?;
        if frame.len() != size {
            bail!("connection closed in the middle of a response");
        }
        Ok(frame)
    }
}

fn io_error(e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            anyhow!("timed out waiting for the reply")
        }
        std::io::ErrorKind::UnexpectedEof => anyhow!("the broker closed the connection"),
        _ => anyhow!(e),
    }
}

/// A broker as Metadata lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic, as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// A topic as Metadata describes it, partitions sorted by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: skein_protocol::Uuid,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    fn from_metadata(t: MetadataResponseTopic) -> TopicInfo {
        let mut partitions: Vec<PartitionInfo> = t
            .partitions
            .into_iter()
            .map(|p| PartitionInfo {
                partition: p.partition_index,
                leader: p.leader_id,
                replicas: p.replica_nodes,
                isr: p.isr_nodes,
                error_code: p.error_code,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        TopicInfo {
            name: t.name.unwrap_or_default(),
            topic_id: t.topic_id,
            internal: t.is_internal,
            partitions,
        }
    }

    /// The leader of `partition`, if the partition exists and has one.
    pub fn leader(&self, partition: i32) -> Option<i32> {
        self.partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }
}

/// The cluster as seen from the bootstrap servers: brokers by node id, with connections to
/// them opened on first use, all with the same security settings.
pub struct Cluster {
    security: Arc<Security>,
    bootstrap: Connection,
    brokers: BTreeMap<i32, BrokerInfo>,
    connections: HashMap<i32, Connection>,
    pub cluster_id: Option<String>,
    pub controller_id: i32,
}

impl Cluster {
    /// Connects to the first reachable server of a comma-separated list.
    pub fn connect(bootstrap: &str, security: Arc<Security>) -> Result<Cluster> {
        let mut failures = Vec::new();
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Connection::open(addr, &security) {
                Ok(conn) => {
                    let mut cluster = Cluster {
                        security,
                        bootstrap: conn,
                        brokers: BTreeMap::new(),
                        connections: HashMap::new(),
                        cluster_id: None,
                        controller_id: -1,
                    };
                    cluster.metadata(Some(&[]))?;
                    return Ok(cluster);
                }
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        if failures.is_empty() {
            bail!("no bootstrap server given");
        }
        bail!("{}", failures.join("; "))
    }

    /// The bootstrap connection, for requests any broker can answer.
    pub fn any(&mut self) -> Result<&mut Connection> {
        if self.bootstrap.broken {
            let addr = self.bootstrap.addr.clone();
            self.bootstrap = Connection::open(&addr, &self.security)?;
        }
        Ok(&mut self.bootstrap)
    }

    pub fn brokers(&self) -> &BTreeMap<i32, BrokerInfo> {
        &self.brokers
    }

    /// Metadata for the named topics (`None`: every topic; `Some(&[])`: brokers only). The
    /// broker list is refreshed from the reply.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> Result<MetadataResponse> {
        let version = self.any()?.version(ApiKey::Metadata)?;
        let topics = match topics {
            None if version == 0 => Some(Vec::new()),
            None => None,
            Some([]) if version == 0 => bail!("the broker only speaks Metadata v0"),
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| MetadataRequestTopic {
                        name: Some((*n).to_owned()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        };
        let response = self.any()?.send(MetadataRequest {
            topics,
            allow_auto_topic_creation: false,
            ..Default::default()
        })?;
        self.brokers = response
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id,
                    BrokerInfo {
                        node_id: b.node_id,
                        host: b.host.clone(),
                        port: b.port,
                        rack: b.rack.clone(),
                    },
                )
            })
            .collect();
        self.cluster_id = response.cluster_id.clone();
        self.controller_id = response.controller_id;
        Ok(response)
    }

    /// Every topic (sorted by name).
    pub fn topics(&mut self) -> Result<Vec<TopicInfo>> {
        let response = self.metadata(None)?;
        let mut topics: Vec<TopicInfo> = response
            .topics
            .into_iter()
            .filter(|t| t.error_code == errors::NONE)
            .map(TopicInfo::from_metadata)
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// One topic; its error (such as UNKNOWN_TOPIC_OR_PARTITION) when it has one. A topic
    /// whose leaders are still being elected is asked for again.
    pub fn topic(&mut self, name: &str) -> Result<TopicInfo> {
        let mut attempt = 0;
        loop {
            let response = self.metadata(Some(&[name]))?;
            let topic = response
                .topics
                .into_iter()
                .find(|t| t.name.as_deref() == Some(name))
                .ok_or_else(|| KafkaError::new(errors::UNKNOWN_TOPIC_OR_PARTITION, None))?;
            let retriable = topic.error_code == errors::LEADER_NOT_AVAILABLE
                || topic
                    .partitions
                    .iter()
                    .any(|p| p.error_code == errors::LEADER_NOT_AVAILABLE || p.leader_id < 0);
            if retriable && attempt < RETRIES {
                attempt += 1;
                backoff(attempt);
                continue;
            }
            if topic.error_code == errors::UNKNOWN_TOPIC_OR_PARTITION {
                return Err(KafkaError::new(
                    topic.error_code,
                    Some(format!("Topic '{name}' does not exist.")),
                )
                .into());
            }
            KafkaError::check(topic.error_code, None)?;
            return Ok(TopicInfo::from_metadata(topic));
        }
    }

    /// The connection to broker `node_id`, opened if need be.
    pub fn broker(&mut self, node_id: i32) -> Result<&mut Connection> {
        if self.connections.get(&node_id).is_some_and(|c| c.broken) {
            self.connections.remove(&node_id);
        }
        if !self.connections.contains_key(&node_id) {
            if !self.brokers.contains_key(&node_id) {
                self.metadata(Some(&[]))?;
            }
            let info = self
                .brokers
                .get(&node_id)
                .ok_or_else(|| anyhow!("broker {node_id} is not in the cluster metadata"))?;
            let conn = Connection::open(&info.addr(), &self.security)
                .with_context(|| format!("broker {node_id}"))?;
            self.connections.insert(node_id, conn);
        }
        Ok(self.connections.get_mut(&node_id).expect("inserted above"))
    }

    /// The node id of the coordinator of `group`, retrying while it is being loaded.
    pub fn find_coordinator(&mut self, group: &str) -> Result<i32> {
        let mut attempt = 0;
        loop {
            let version = self.any()?.version(ApiKey::FindCoordinator)?;
            let mut request = FindCoordinatorRequest {
                key_type: 0,
                ..Default::default()
            };
            if version >= 4 {
                request.coordinator_keys = vec![group.to_owned()];
            } else {
                request.key = group.to_owned();
            }
            let response = self.any()?.send(request)?;
            let (code, message, node_id, host, port) = if version >= 4 {
                let c = response
                    .coordinators
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow!("FindCoordinator answered no coordinator"))?;
                (c.error_code, c.error_message, c.node_id, c.host, c.port)
            } else {
                (
                    response.error_code,
                    response.error_message,
                    response.node_id,
                    response.host,
                    response.port,
                )
            };
            if is_retriable(code) && attempt < RETRIES {
                attempt += 1;
                backoff(attempt);
                continue;
            }
            KafkaError::check(code, message.as_deref())
                .with_context(|| format!("coordinator of group {group}"))?;
            self.brokers.entry(node_id).or_insert(BrokerInfo {
                node_id,
                host,
                port,
                rack: None,
            });
            return Ok(node_id);
        }
    }
}

/// Errors after which the same request may succeed once metadata is refreshed or the
/// coordinator has loaded.
pub fn is_retriable(code: i16) -> bool {
    matches!(
        code,
        errors::LEADER_NOT_AVAILABLE
            | errors::NOT_LEADER_OR_FOLLOWER
            | errors::REQUEST_TIMED_OUT
            | errors::COORDINATOR_LOAD_IN_PROGRESS
            | errors::COORDINATOR_NOT_AVAILABLE
            | errors::NOT_COORDINATOR
            | errors::FENCED_LEADER_EPOCH
            | errors::UNKNOWN_LEADER_EPOCH
    )
}

/// Waits a little longer after each failed attempt (50 ms doubling, at most 1 s).
pub fn backoff(attempt: u32) {
    let ms = (50u64 << attempt.min(5)).min(1000);
    std::thread::sleep(Duration::from_millis(ms));
}

/// Decodes one of the embedded consumer-protocol structures (a version, then the message),
/// reading a newer version as the newest we know, as Kafka's clients do.
pub fn decode_versioned<T: Decode>(bytes: &[u8], max_known: i16) -> Result<(i16, T)> {
    if bytes.len() < 2 {
        bail!("embedded message too short");
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version < 0 {
        bail!("embedded message has negative version {version}");
    }
    let mut buf = bytes::Bytes::copy_from_slice(&bytes[2..]);
    let value = T::decode(&mut buf, version.min(max_known))?;
    Ok((version, value))
}

/// Encodes one of the embedded consumer-protocol structures with its version prefix.
pub fn encode_versioned<T: skein_protocol::Encode>(value: &T, version: i16) -> Result<Vec<u8>> {
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    value.encode(&mut buf, version)?;
    Ok(buf.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version_capped() {
        let r = |min, max| Some(VersionRange { min, max });
        assert_eq!(negotiate(ApiKey::Fetch, r(4, 17)), Some(12));
        assert_eq!(negotiate(ApiKey::Fetch, r(4, 10)), Some(10));
        assert_eq!(negotiate(ApiKey::Fetch, r(13, 17)), None);
        assert_eq!(negotiate(ApiKey::Fetch, None), None);
        assert_eq!(negotiate(ApiKey::Metadata, r(0, 12)), Some(12));
        // An API this client does not use is never negotiated.
        assert_eq!(negotiate(ApiKey::Vote, r(0, 1)), None);
    }

    /// A broker that does not know ApiVersions v3 answers in the v0 format (KIP-511); the
    /// client retries in the broker's highest version and negotiates from its list.
    #[test]
    fn api_versions_falls_back_to_the_brokers_highest_version() {
        use skein_protocol::messages::api_versions_response::ApiVersion;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut versions_seen = Vec::new();
            for error_code in [errors::UNSUPPORTED_VERSION, errors::NONE] {
                let mut size = [0u8; 4];
                socket.read_exact(&mut size).unwrap();
                let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
                socket.read_exact(&mut frame).unwrap();
                let header = skein_protocol::decode_request_header(&mut frame.into()).unwrap();
                versions_seen.push(header.api_version);
                let range = |key: ApiKey, min, max| ApiVersion {
                    api_key: key as i16,
                    min_version: min,
                    max_version: max,
                    ..Default::default()
                };
                let body = ResponseBody::ApiVersions(ApiVersionsResponse {
                    error_code,
                    api_keys: vec![
                        range(ApiKey::ApiVersions, 0, 2),
                        range(ApiKey::Metadata, 0, 9),
                        range(ApiKey::Fetch, 4, 11),
                    ],
                    ..Default::default()
                });
                let version = if error_code == errors::NONE {
                    header.api_version
                } else {
                    0
                };
                let reply = skein_protocol::encode_response(
                    header.correlation_id,
                    ApiKey::ApiVersions,
                    version,
                    &body,
                )
                .unwrap();
                socket.write_all(&reply).unwrap();
            }
            versions_seen
        });
        let conn = Connection::open(&addr, &Security::default()).unwrap();
        assert_eq!(broker.join().unwrap(), vec![3, 2]);
        assert_eq!(conn.version(ApiKey::Metadata).unwrap(), 9);
        assert_eq!(conn.version(ApiKey::Fetch).unwrap(), 11);
        let e = conn.version(ApiKey::Produce).unwrap_err().to_string();
        assert!(e.contains("does not support Produce"), "{e}");
    }

    #[test]
    fn tested_versions_are_known_to_the_codec() {
        for key in ApiKey::all() {
            if let Some(v) = max_tested_version(*key) {
                assert!(key.supports(v), "{key} v{v}");
            }
        }
    }
}
