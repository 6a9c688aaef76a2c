//! Offsets: log offsets from partition leaders (ListOffsets), and a group's committed
//! offsets from its coordinator (OffsetFetch, OffsetCommit).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use skein_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use skein_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use skein_protocol::messages::offset_fetch_request::{
    OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use skein_protocol::ApiKey;

use super::client::{backoff, is_retriable, Cluster, Connection, RETRIES};
use super::errors::KafkaError;

/// ListOffsets' special timestamp for the log end offset (the high watermark).
pub const LATEST: i64 = -1;
/// ListOffsets' special timestamp for the log start offset.
pub const EARLIEST: i64 = -2;

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// The Kafka error code somewhere in an error's chain, if there is one.
pub fn kafka_code(e: &anyhow::Error) -> Option<i16> {
    e.chain()
        .find_map(|c| c.downcast_ref::<KafkaError>())
        .map(|k| k.code)
}

/// The offset of each partition of `topic` at `timestamp` ([`EARLIEST`], [`LATEST`] or
/// Unix milliseconds), asking each partition's leader. `None` for a timestamp after the last
/// record.
pub fn list_offsets(
    cluster: &mut Cluster,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<BTreeMap<i32, Option<i64>>> {
    let mut result = BTreeMap::new();
    let mut pending: Vec<i32> = partitions.to_vec();
    let mut attempt = 0;
    while !pending.is_empty() {
        let info = cluster.topic(topic)?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for p in &pending {
            let leader = info.leader(*p).ok_or_else(|| {
                anyhow!(
                    "partition {p} of topic {topic} {}",
                    if info.partitions.iter().any(|i| i.partition == *p) {
                        "has no leader"
                    } else {
                        "does not exist"
                    }
                )
            })?;
            by_leader.entry(leader).or_default().push(*p);
        }
        let mut retry = Vec::new();
        let mut last_error = None;
        for (leader, parts) in by_leader {
            let conn = cluster.broker(leader)?;
            let version = conn.version(ApiKey::ListOffsets)?;
            let response = conn.send(ListOffsetsRequest {
                replica_id: -1,
                isolation_level: 0,
                topics: vec![ListOffsetsTopic {
                    name: topic.to_owned(),
                    partitions: parts
                        .iter()
                        .map(|p| ListOffsetsPartition {
                            partition_index: *p,
                            current_leader_epoch: -1,
                            timestamp,
                            max_num_offsets: 1,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })?;
            for t in response.topics.into_iter().filter(|t| t.name == topic) {
                for p in t.partitions {
                    if p.error_code != 0 {
                        if is_retriable(p.error_code) && attempt < RETRIES {
                            retry.push(p.partition_index);
                            last_error = Some(p.error_code);
                            continue;
                        }
                        return Err(KafkaError::new(p.error_code, None)).with_context(|| {
                            format!("offsets of partition {}", p.partition_index)
                        });
                    }
                    let offset = if version == 0 {
                        p.old_style_offsets.first().copied().unwrap_or(-1)
                    } else {
                        p.offset
                    };
                    result.insert(p.partition_index, (offset >= 0).then_some(offset));
                }
            }
        }
        for p in &pending {
            if !result.contains_key(p) && !retry.contains(p) {
                bail!("the leader of partition {p} of {topic} did not answer for it");
            }
        }
        if !retry.is_empty() {
            attempt += 1;
            if attempt > RETRIES {
                return Err(KafkaError::new(last_error.unwrap_or(-1), None).into());
            }
            backoff(attempt);
        }
        pending = retry;
    }
    Ok(result)
}

/// Runs `f` against the coordinator of `group`, finding it again and retrying when the
/// answer is a retriable error (coordinator moved or loading).
pub fn with_coordinator<T>(
    cluster: &mut Cluster,
    group: &str,
    mut f: impl FnMut(&mut Connection) -> Result<T>,
) -> Result<T> {
    let mut attempt = 0;
    loop {
        let node = cluster.find_coordinator(group)?;
        let outcome = f(cluster.broker(node)?);
        match outcome {
            Err(e) if attempt < RETRIES && kafka_code(&e).is_some_and(is_retriable) => {
                attempt += 1;
                backoff(attempt);
            }
            other => return other,
        }
    }
}

/// The committed offsets of `group` (for the given topics and partitions, or for every
/// topic when `None`). Partitions without a committed offset are left out.
pub fn committed_offsets(
    conn: &mut Connection,
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
) -> Result<BTreeMap<TopicPartition, i64>> {
    let version = conn.version(ApiKey::OffsetFetch)?;
    if topics.is_none() && version < 2 {
        bail!("the broker's OffsetFetch (v{version}) cannot list every topic of a group");
    }
    let mut request = OffsetFetchRequest::default();
    if version >= 8 {
        request.groups = vec![OffsetFetchRequestGroup {
            group_id: group.to_owned(),
            member_id: None,
            member_epoch: -1,
            topics: topics.map(|ts| {
                ts.iter()
                    .map(|(name, parts)| OffsetFetchRequestTopics {
                        name: name.clone(),
                        partition_indexes: parts.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }];
    } else {
        request.group_id = group.to_owned();
        request.topics = topics.map(|ts| {
            ts.iter()
                .map(|(name, parts)| OffsetFetchRequestTopic {
                    name: name.clone(),
                    partition_indexes: parts.clone(),
                    ..Default::default()
                })
                .collect()
        });
    }
    let response = conn.send(request)?;
    let mut out = BTreeMap::new();
    let mut add = |topic: &str, partition: i32, offset: i64, code: i16| -> Result<()> {
        KafkaError::check(code, None)
            .with_context(|| format!("committed offset of {topic}:{partition}"))?;
        if offset >= 0 {
            out.insert((topic.to_owned(), partition), offset);
        }
        Ok(())
    };
    if version >= 8 {
        let g = response
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| anyhow!("OffsetFetch answered for another group"))?;
        KafkaError::check(g.error_code, None)?;
        for t in g.topics {
            for p in t.partitions {
                add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
            }
        }
    } else {
        KafkaError::check(response.error_code, None)?;
        for t in response.topics {
            for p in t.partitions {
                add(&t.name, p.partition_index, p.committed_offset, p.error_code)?;
            }
        }
    }
    Ok(out)
}

/// Commits `offsets` for `group`: as a member (its generation and member id) or, with
/// generation -1 and no member id, as an administrator of an empty group.
pub fn commit_offsets(
    conn: &mut Connection,
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((topic, partition), offset) in offsets {
        topics
            .entry(topic)
            .or_default()
            .push(OffsetCommitRequestPartition {
                partition_index: *partition,
                committed_offset: *offset,
                committed_leader_epoch: -1,
                committed_metadata: Some(String::new()),
                ..Default::default()
            });
    }
    let response = conn.send(OffsetCommitRequest {
        group_id: group.to_owned(),
        generation_id_or_member_epoch: generation,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        retention_time_ms: -1,
        topics: topics
            .into_iter()
            .map(|(name, partitions)| OffsetCommitRequestTopic {
                name: name.to_owned(),
                partitions,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })?;
    for t in response.topics {
        for p in t.partitions {
            KafkaError::check(p.error_code, None)
                .with_context(|| format!("commit of {}:{}", t.name, p.partition_index))?;
        }
    }
    Ok(())
}
