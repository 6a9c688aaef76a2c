//! A small blocking Kafka client for the scenarios: one TCP connection, requests sent in the
//! version the scenario names (so both brokers see the same bytes), replies decoded with the
//! project's codec. Also sends hand-made frames for requests the codec cannot express.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use skein_protocol::messages::*;
use skein_protocol::{decode_response, encode_request, ApiKey, RequestBody, RequestHeader};
use skein_protocol::{Decode, ResponseBody};

/// The client id every request carries.
pub const CLIENT_ID: &str = "skein-compat";
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// How long to wait for a reply; group joins may be held for a rebalance delay.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A request type and the response type it is answered with.
pub trait Exchange: Into<RequestBody> {
    type Response;
    const KEY: ApiKey;
    fn response(body: ResponseBody) -> Option<Self::Response>;
}

macro_rules! exchanges {
    ($($variant:ident: $request:ident => $response:ident;)*) => {
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
    };
}

exchanges! {
    ApiVersions: ApiVersionsRequest => ApiVersionsResponse;
    Metadata: MetadataRequest => MetadataResponse;
    Produce: ProduceRequest => ProduceResponse;
    Fetch: FetchRequest => FetchResponse;
    ListOffsets: ListOffsetsRequest => ListOffsetsResponse;
    CreateTopics: CreateTopicsRequest => CreateTopicsResponse;
    DeleteTopics: DeleteTopicsRequest => DeleteTopicsResponse;
    CreatePartitions: CreatePartitionsRequest => CreatePartitionsResponse;
    DescribeConfigs: DescribeConfigsRequest => DescribeConfigsResponse;
    AlterConfigs: AlterConfigsRequest => AlterConfigsResponse;
    IncrementalAlterConfigs: IncrementalAlterConfigsRequest => IncrementalAlterConfigsResponse;
    DescribeCluster: DescribeClusterRequest => DescribeClusterResponse;
    DeleteRecords: DeleteRecordsRequest => DeleteRecordsResponse;
    InitProducerId: InitProducerIdRequest => InitProducerIdResponse;
    FindCoordinator: FindCoordinatorRequest => FindCoordinatorResponse;
    JoinGroup: JoinGroupRequest => JoinGroupResponse;
    SyncGroup: SyncGroupRequest => SyncGroupResponse;
    Heartbeat: HeartbeatRequest => HeartbeatResponse;
    LeaveGroup: LeaveGroupRequest => LeaveGroupResponse;
    OffsetCommit: OffsetCommitRequest => OffsetCommitResponse;
    OffsetFetch: OffsetFetchRequest => OffsetFetchResponse;
    OffsetDelete: OffsetDeleteRequest => OffsetDeleteResponse;
    DescribeGroups: DescribeGroupsRequest => DescribeGroupsResponse;
    ListGroups: ListGroupsRequest => ListGroupsResponse;
    DeleteGroups: DeleteGroupsRequest => DeleteGroupsResponse;
    ConsumerGroupHeartbeat: ConsumerGroupHeartbeatRequest => ConsumerGroupHeartbeatResponse;
    OffsetForLeaderEpoch: OffsetForLeaderEpochRequest => OffsetForLeaderEpochResponse;
    ConsumerGroupDescribe: ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse;
}

/// One connection to one broker.
pub struct Client {
    stream: TcpStream,
    addr: String,
    next_correlation_id: i32,
}

impl Client {
    pub fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
        stream.set_write_timeout(Some(REQUEST_TIMEOUT)).ok();
        Ok(Client {
            stream,
            addr: addr.to_owned(),
            next_correlation_id: 1,
        })
    }

    /// Sends `request` as `version` and decodes the reply.
    pub fn send<R: Exchange>(&mut self, version: i16, request: R) -> Result<R::Response> {
        let correlation_id = self.write(R::KEY, version, request.into())?;
        let frame = self.read_reply(correlation_id)?;
        let (_, body) = decode_response(R::KEY, version, frame.into()).with_context(|| {
            format!("undecodable {} v{version} reply from {}", R::KEY, self.addr)
        })?;
        R::response(body).ok_or_else(|| anyhow!("{} answered with another API", self.addr))
    }

    /// Sends a request that gets no reply (Produce with acks=0).
    pub fn send_without_reply<R: Exchange>(&mut self, version: i16, request: R) -> Result<()> {
        self.write(R::KEY, version, request.into())?;
        Ok(())
    }

    /// Encodes `request` as `version` and lets `edit` change the frame's bytes (after the
    /// size prefix) before it is sent; returns the raw reply frame (after the correlation id),
    /// or `None` when the broker closed the connection instead of answering.
    pub fn send_edited<R: Exchange>(
        &mut self,
        version: i16,
        request: R,
        edit: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<Vec<u8>>> {
        let correlation_id = self.take_correlation_id();
        let header = header(R::KEY, version, correlation_id);
        let frame = encode_request(&header, &request.into())?;
        let mut body = frame[4..].to_vec();
        edit(&mut body);
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        self.stream.write_all(&out)?;
        match self.read_frame() {
            Ok(frame) => {
                check_correlation(&frame, correlation_id)?;
                Ok(Some(frame[4..].to_vec()))
            }
            Err(_) => Ok(None),
        }
    }

    fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        self.next_correlation_id += 1;
        id
    }

    fn write(&mut self, key: ApiKey, version: i16, body: RequestBody) -> Result<i32> {
        let correlation_id = self.take_correlation_id();
        let frame = encode_request(&header(key, version, correlation_id), &body)
            .with_context(|| format!("cannot encode {key} v{version}"))?;
        self.stream
            .write_all(&frame)
            .with_context(|| format!("send {key} to {}", self.addr))?;
        Ok(correlation_id)
    }

    fn read_reply(&mut self, correlation_id: i32) -> Result<Vec<u8>> {
        let frame = self
            .read_frame()
            .with_context(|| format!("no reply from {}", self.addr))?;
        check_correlation(&frame, correlation_id)?;
        Ok(frame)
    }

    fn read_frame(&mut self) -> Result<Vec<u8>> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = i32::from_be_bytes(size);
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| anyhow!("invalid response size {size}"))?;
        let mut frame = vec![0u8; size];
        self.stream.read_exact(&mut frame)?;
        Ok(frame)
    }
}

fn header(key: ApiKey, version: i16, correlation_id: i32) -> RequestHeader {
    RequestHeader {
        api_key: key as i16,
        api_version: version,
        correlation_id,
        client_id: Some(CLIENT_ID.to_owned()),
    }
}

fn check_correlation(frame: &[u8], expected: i32) -> Result<()> {
    let got = frame
        .get(..4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if got != Some(expected) {
        bail!("reply has correlation id {got:?}, expected {expected}");
    }
    Ok(())
}

/// Decodes a v0 ApiVersions body (what a broker answers to a version it does not know).
pub fn decode_api_versions_v0(body: &[u8]) -> Result<ApiVersionsResponse> {
    let mut buf = bytes::Bytes::copy_from_slice(body);
    Ok(ApiVersionsResponse::decode(&mut buf, 0)?)
}
