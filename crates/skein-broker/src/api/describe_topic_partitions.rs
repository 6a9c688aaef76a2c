//! DescribeTopicPartitions (api 75, KIP-966): topics and their partitions as the committed
//! metadata image has them, with the eligible leader replicas and the last known ELR that
//! Metadata does not carry, paged by a cursor.
//!
//! Kafka's rules: the named topics (or every topic when none is named) in name order, each
//! name once; a cursor starts the answer at its topic and partition (named topics before it
//! are skipped; a cursor naming a topic that is not asked for is INVALID_REQUEST for the
//! request). At most `response_partition_limit` partitions are answered (capped at Kafka's
//! `max.request.partition.size.limit`, 2000); when more remain, `next_cursor` names the first
//! partition left out. An unknown topic is answered UNKNOWN_TOPIC_OR_PARTITION (it counts no
//! partitions). A partition without a leader is LEADER_NOT_AVAILABLE; offline replicas are
//! those on fenced or unregistered brokers.

use std::collections::BTreeSet;
use std::sync::Arc;

use skein_metadata::image::{MetadataImage, TopicImage};
use skein_protocol::messages::describe_topic_partitions_request::DescribeTopicPartitionsRequest;
use skein_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponse, DescribeTopicPartitionsResponsePartition,
    DescribeTopicPartitionsResponseTopic,
};
use skein_protocol::Uuid;

use crate::broker::Broker;
use crate::error::ErrorCode;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one answer holds.
pub const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

pub fn handle(
    broker: &Arc<Broker>,
    _version: i16,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    broker.quorum.read(|image| describe(image, &req))
}

/// The answer to `req` from `image`.
pub fn describe(
    image: &MetadataImage,
    req: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let mut resp = DescribeTopicPartitionsResponse::default();
    let asked: BTreeSet<&str> = req.topics.iter().map(|t| t.name.as_str()).collect();
    let all = req.topics.is_empty();
    if let Some(c) = &req.cursor {
        if !all && !asked.contains(c.topic_name.as_str()) {
            resp.topics.push(DescribeTopicPartitionsResponseTopic {
                error_code: ErrorCode::INVALID_REQUEST.code(),
                name: Some(c.topic_name.clone()),
                topic_authorized_operations: i32::MIN,
                ..Default::default()
            });
            return resp;
        }
    }
    let names: Vec<&str> = if all {
        image.topic_ids().keys().map(String::as_str).collect()
    } else {
        asked.iter().copied().collect()
    };
    let (first_topic, first_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.as_str()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut left = if req.response_partition_limit < 1 {
        MAX_PARTITIONS_PER_RESPONSE
    } else {
        req.response_partition_limit
            .min(MAX_PARTITIONS_PER_RESPONSE)
    };
    let names = names
        .into_iter()
        .filter(|n| first_topic.is_none_or(|f| *n >= f));
    for name in names {
        let Some(topic) = image.topic_by_name(name) else {
            resp.topics.push(DescribeTopicPartitionsResponseTopic {
                error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                name: Some(name.to_string()),
                topic_id: Uuid::ZERO,
                topic_authorized_operations: i32::MIN,
                ..Default::default()
            });
            continue;
        };
        let start = if first_topic == Some(name) {
            first_partition as usize
        } else {
            0
        };
        let count = topic.partitions.len();
        if left == 0 {
            // Full: the next page starts here (unless the cursor's partition is past its end
            // and nothing of this topic is left).
            if start < count {
                resp.next_cursor = Some(cursor(name, start));
            }
            if resp.next_cursor.is_some() {
                break;
            }
            continue;
        }
        let end = count.min(start.saturating_add(left as usize));
        resp.topics.push(topic_entry(image, topic, start, end));
        left -= end.saturating_sub(start) as i32;
        if end < count {
            resp.next_cursor = Some(cursor(name, end));
            break;
        }
    }
    resp
}

fn cursor(topic: &str, partition: usize) -> Cursor {
    Cursor {
        topic_name: topic.to_string(),
        partition_index: partition as i32,
        ..Default::default()
    }
}

/// One topic with its partitions `start..end`.
fn topic_entry(
    image: &MetadataImage,
    topic: &TopicImage,
    start: usize,
    end: usize,
) -> DescribeTopicPartitionsResponseTopic {
    let live = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .take(end)
        .skip(start)
        .map(|(p, s)| DescribeTopicPartitionsResponsePartition {
            error_code: if s.leader < 0 {
                ErrorCode::LEADER_NOT_AVAILABLE.code()
            } else {
                0
            },
            partition_index: p as i32,
            leader_id: s.leader,
            leader_epoch: s.leader_epoch,
            replica_nodes: s.replicas.clone(),
            isr_nodes: s.isr.clone(),
            eligible_leader_replicas: Some(s.elr.clone()),
            last_known_elr: Some(s.last_known_elr.clone()),
            offline_replicas: s.replicas.iter().copied().filter(|r| !live(*r)).collect(),
            ..Default::default()
        })
        .collect();
    DescribeTopicPartitionsResponseTopic {
        error_code: 0,
        name: Some(topic.name.clone()),
        topic_id: topic.id,
        is_internal: topic.name.starts_with("__"),
        partitions,
        topic_authorized_operations: i32::MIN,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_metadata::image::{partition_record, PartitionState};
    use skein_protocol::messages::describe_topic_partitions_request::{
        Cursor as ReqCursor, TopicRequest,
    };
    use skein_protocol::metadata_records::TopicRecord;
    use skein_protocol::MetadataRecord;

    /// An image with topics `a` (3 partitions, ELR on partition 1) and `b` (2 partitions).
    fn image() -> MetadataImage {
        let mut records: Vec<MetadataRecord> = Vec::new();
        for (name, id, count) in [("a", 1u8, 3), ("b", 2u8, 2)] {
            records.push(
                TopicRecord {
                    name: name.into(),
                    topic_id: Uuid([id; 16]),
                    ..Default::default()
                }
                .into(),
            );
            for p in 0..count {
                let mut s = PartitionState {
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    leader: 1,
                    ..Default::default()
                };
                if name == "a" && p == 1 {
                    s.isr = vec![];
                    s.leader = -1;
                    s.elr = vec![2, 3];
                    s.last_known_elr = vec![1];
                }
                records.push(partition_record(Uuid([id; 16]), p, &s).into());
            }
        }
        let mut image = MetadataImage::new();
        image.apply_records(0, &records).unwrap();
        image
    }

    fn req(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest {
            topics: topics
                .iter()
                .map(|t| TopicRequest {
                    name: t.to_string(),
                    ..Default::default()
                })
                .collect(),
            response_partition_limit: limit,
            cursor: cursor.map(|(t, p)| ReqCursor {
                topic_name: t.into(),
                partition_index: p,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// (topic, partitions) of an answer.
    fn shape(r: &DescribeTopicPartitionsResponse) -> Vec<(String, Vec<i32>)> {
        r.topics
            .iter()
            .map(|t| {
                (
                    t.name.clone().unwrap_or_default(),
                    t.partitions.iter().map(|p| p.partition_index).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn all_topics_in_name_order_with_elr() {
        let r = describe(&image(), &req(&[], 2000, None));
        assert_eq!(
            shape(&r),
            vec![("a".into(), vec![0, 1, 2]), ("b".into(), vec![0, 1])]
        );
        assert!(r.next_cursor.is_none());
        let p1 = &r.topics[0].partitions[1];
        assert_eq!(p1.eligible_leader_replicas, Some(vec![2, 3]));
        assert_eq!(p1.last_known_elr, Some(vec![1]));
        assert_eq!(p1.leader_id, -1);
        assert_eq!(p1.error_code, ErrorCode::LEADER_NOT_AVAILABLE.code());
        // Unregistered brokers are offline.
        assert_eq!(p1.offline_replicas, vec![1, 2, 3]);
        assert_eq!(
            r.topics[0].partitions[0].eligible_leader_replicas,
            Some(vec![])
        );
    }

    #[test]
    fn paging_by_cursor() {
        let image = image();
        let r = describe(&image, &req(&[], 2, None));
        assert_eq!(shape(&r), vec![("a".into(), vec![0, 1])]);
        let c = r.next_cursor.clone().unwrap();
        assert_eq!((c.topic_name.as_str(), c.partition_index), ("a", 2));
        let r = describe(&image, &req(&[], 2, Some(("a", 2))));
        assert_eq!(
            shape(&r),
            vec![("a".into(), vec![2]), ("b".into(), vec![0])]
        );
        let c = r.next_cursor.clone().unwrap();
        assert_eq!((c.topic_name.as_str(), c.partition_index), ("b", 1));
        let r = describe(&image, &req(&[], 2, Some(("b", 1))));
        assert_eq!(shape(&r), vec![("b".into(), vec![1])]);
        assert!(r.next_cursor.is_none());
        // A page that ends exactly at a topic's end points at the next topic.
        let r = describe(&image, &req(&[], 3, None));
        assert_eq!(shape(&r), vec![("a".into(), vec![0, 1, 2])]);
        let c = r.next_cursor.unwrap();
        assert_eq!((c.topic_name.as_str(), c.partition_index), ("b", 0));
    }

    #[test]
    fn named_topics_unknown_and_bad_cursor() {
        let image = image();
        let r = describe(&image, &req(&["b", "zz", "b"], 2000, None));
        assert_eq!(
            shape(&r),
            vec![("b".into(), vec![0, 1]), ("zz".into(), vec![])]
        );
        assert_eq!(
            r.topics[1].error_code,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code()
        );
        let r = describe(&image, &req(&["a", "b"], 2000, Some(("b", 1))));
        assert_eq!(shape(&r), vec![("b".into(), vec![1])]);
        let r = describe(&image, &req(&["b"], 2000, Some(("a", 0))));
        assert_eq!(r.topics.len(), 1);
        assert_eq!(r.topics[0].error_code, ErrorCode::INVALID_REQUEST.code());
    }
}
