//! Membership of a classic consumer group: JoinGroup and SyncGroup (running the range
//! assignor when this member leads), heartbeats, commits as a member, and LeaveGroup.
//!
//! Any answer that means "the group moved on" (a rebalance, a new generation, an unknown
//! member, a moved coordinator) is reported as [`Status::Rejoin`]; the caller commits what it
//! can and joins again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skein_protocol::messages::heartbeat_request::HeartbeatRequest;
use skein_protocol::messages::join_group_request::{JoinGroupRequest, JoinGroupRequestProtocol};
use skein_protocol::messages::join_group_response::JoinGroupResponse;
use skein_protocol::messages::leave_group_request::{LeaveGroupRequest, MemberIdentity};
use skein_protocol::messages::sync_group_request::{SyncGroupRequest, SyncGroupRequestAssignment};
use skein_protocol::ApiKey;

use super::assignor::{self, Assignment, MemberSubscription, CONSUMER_PROTOCOL_TYPE, RANGE};
use super::client::{backoff, Cluster};
use super::errors::{self, KafkaError};
use super::offsets::{self, kafka_code, TopicPartition};

/// Kafka's defaults are 45 s and 3 s; a shorter session lets a crashed CLI's partitions move
/// on sooner, and the CLI heartbeats between every fetch.
const SESSION_TIMEOUT_MS: i32 = 10_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// How many rounds of JoinGroup/SyncGroup to try before giving up.
const JOIN_ATTEMPTS: u32 = 30;

/// What the group said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Rejoin,
}

/// This process's membership of one group.
pub struct Membership {
    group: String,
    topics: Vec<String>,
    member_id: String,
    generation: i32,
    coordinator: Option<i32>,
    last_heartbeat: Instant,
}

impl Membership {
    pub fn new(group: &str, topics: Vec<String>) -> Membership {
        Membership {
            group: group.to_owned(),
            topics,
            member_id: String::new(),
            generation: -1,
            coordinator: None,
            last_heartbeat: Instant::now(),
        }
    }

    fn coordinator(&mut self, cluster: &mut Cluster) -> Result<i32> {
        match self.coordinator {
            Some(c) => Ok(c),
            None => {
                let c = cluster.find_coordinator(&self.group)?;
                self.coordinator = Some(c);
                Ok(c)
            }
        }
    }

    /// Classifies a group error: `Ok(Rejoin)` for the ones that mean "join again",
    /// forgetting the member id or the coordinator as the error requires.
    fn on_group_error(&mut self, code: i16) -> Result<Status> {
        match code {
            errors::NONE => Ok(Status::Ok),
            errors::REBALANCE_IN_PROGRESS | errors::ILLEGAL_GENERATION => Ok(Status::Rejoin),
            errors::UNKNOWN_MEMBER_ID | errors::FENCED_INSTANCE_ID => {
                self.member_id.clear();
                self.generation = -1;
                Ok(Status::Rejoin)
            }
            errors::NOT_COORDINATOR
            | errors::COORDINATOR_NOT_AVAILABLE
            | errors::COORDINATOR_LOAD_IN_PROGRESS => {
                self.coordinator = None;
                Ok(Status::Rejoin)
            }
            other => Err(KafkaError::new(other, None).into()),
        }
    }

    /// Joins (or rejoins) the group and returns this member's assignment.
    pub fn join(&mut self, cluster: &mut Cluster) -> Result<Assignment> {
        let subscription = assignor::encode_subscription(&self.topics)?;
        for attempt in 0..JOIN_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt.min(3));
            }
            let node = self.coordinator(cluster)?;
            let conn = cluster.broker(node)?;
            let join = conn
                .send_with_timeout(
                    JoinGroupRequest {
                        group_id: self.group.clone(),
                        session_timeout_ms: SESSION_TIMEOUT_MS,
                        rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
                        member_id: self.member_id.clone(),
                        group_instance_id: None,
                        protocol_type: CONSUMER_PROTOCOL_TYPE.to_owned(),
                        protocols: vec![JoinGroupRequestProtocol {
                            name: RANGE.to_owned(),
                            metadata: subscription.clone().into(),
                            ..Default::default()
                        }],
                        reason: None,
                        ..Default::default()
                    },
                    Duration::from_millis(REBALANCE_TIMEOUT_MS as u64) + Duration::from_secs(5),
                )
                .context("JoinGroup")?;
            match join.error_code {
                errors::NONE => {}
                errors::MEMBER_ID_REQUIRED => {
                    // KIP-394: the first join only hands out the member id to join with.
                    self.member_id = join.member_id;
                    continue;
                }
                code => {
                    self.on_group_error(code).context("JoinGroup")?;
                    continue;
                }
            }
            self.member_id = join.member_id.clone();
            self.generation = join.generation_id;
            let assignments = if join.leader == self.member_id {
                self.lead(cluster, &join)?
            } else {
                Vec::new()
            };
            let node = self.coordinator(cluster)?;
            let sync = cluster
                .broker(node)?
                .send_with_timeout(
                    SyncGroupRequest {
                        group_id: self.group.clone(),
                        generation_id: self.generation,
                        member_id: self.member_id.clone(),
                        group_instance_id: None,
                        protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_owned()),
                        protocol_name: Some(RANGE.to_owned()),
                        assignments,
                        ..Default::default()
                    },
                    Duration::from_millis(REBALANCE_TIMEOUT_MS as u64) + Duration::from_secs(5),
                )
                .context("SyncGroup")?;
            if sync.error_code != errors::NONE {
                self.on_group_error(sync.error_code).context("SyncGroup")?;
                continue;
            }
            self.last_heartbeat = Instant::now();
            return assignor::decode_assignment(&sync.assignment)
                .context("undecodable assignment from the group leader");
        }
        bail!(
            "could not join group {} after {JOIN_ATTEMPTS} attempts",
            self.group
        )
    }

    /// As the group leader: every member's assignment under the range assignor.
    fn lead(
        &self,
        cluster: &mut Cluster,
        join: &JoinGroupResponse,
    ) -> Result<Vec<SyncGroupRequestAssignment>> {
        if join.protocol_name.as_deref().is_some_and(|p| p != RANGE) {
            bail!(
                "the group chose assignor {:?}, which this client does not run",
                join.protocol_name
            );
        }
        let mut members = Vec::with_capacity(join.members.len());
        for m in &join.members {
            let topics = assignor::decode_subscription(&m.metadata)
                .with_context(|| format!("subscription of member {}", m.member_id))?;
            members.push(MemberSubscription {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                topics,
            });
        }
        let mut all_topics: Vec<&str> = members
            .iter()
            .flat_map(|m| m.topics.iter().map(String::as_str))
            .collect();
        all_topics.sort_unstable();
        all_topics.dedup();
        let metadata = cluster.metadata(Some(&all_topics))?;
        let counts: BTreeMap<String, i32> = metadata
            .topics
            .into_iter()
            .filter(|t| t.error_code == errors::NONE)
            .filter_map(|t| Some((t.name?, t.partitions.len() as i32)))
            .collect();
        assignor::range_assign(&members, &counts)
            .into_iter()
            .map(|(member_id, assignment)| {
                Ok(SyncGroupRequestAssignment {
                    member_id,
                    assignment: assignor::encode_assignment(&assignment)?.into(),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// Sends a heartbeat when one is due.
    pub fn heartbeat_if_due(&mut self, cluster: &mut Cluster) -> Result<Status> {
        if self.last_heartbeat.elapsed() < HEARTBEAT_INTERVAL {
            return Ok(Status::Ok);
        }
        let node = self.coordinator(cluster)?;
        let response = cluster
            .broker(node)?
            .send(HeartbeatRequest {
                group_id: self.group.clone(),
                generation_id: self.generation,
                member_id: self.member_id.clone(),
                group_instance_id: None,
                ..Default::default()
            })
            .context("Heartbeat")?;
        self.last_heartbeat = Instant::now();
        self.on_group_error(response.error_code)
            .context("Heartbeat")
    }

    /// Commits offsets as this member.
    pub fn commit(
        &mut self,
        cluster: &mut Cluster,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<Status> {
        if offsets.is_empty() {
            return Ok(Status::Ok);
        }
        let node = self.coordinator(cluster)?;
        let conn = cluster.broker(node)?;
        match offsets::commit_offsets(conn, &self.group, self.generation, &self.member_id, offsets)
        {
            Ok(()) => Ok(Status::Ok),
            Err(e) => match kafka_code(&e) {
                Some(code) => self.on_group_error(code).context("OffsetCommit"),
                None => Err(e),
            },
        }
    }

    /// Leaves the group so that its partitions move on at once; errors are ignored, since
    /// the session timeout removes the member anyway.
    pub fn leave(&mut self, cluster: &mut Cluster) {
        if self.member_id.is_empty() {
            return;
        }
        let Ok(node) = self.coordinator(cluster) else {
            return;
        };
        let Ok(conn) = cluster.broker(node) else {
            return;
        };
        let Ok(version) = conn.version(ApiKey::LeaveGroup) else {
            return;
        };
        let mut request = LeaveGroupRequest {
            group_id: self.group.clone(),
            ..Default::default()
        };
        if version >= 3 {
            request.members = vec![MemberIdentity {
                member_id: self.member_id.clone(),
                group_instance_id: None,
                reason: Some("the skein consumer is closing".to_owned()),
                ..Default::default()
            }];
        } else {
            request.member_id = self.member_id.clone();
        }
        let _ = conn.send(request);
        self.member_id.clear();
    }
}
