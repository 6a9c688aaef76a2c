//! OffsetFetch: a group's committed positions (one group before v8, several from v8).

use std::collections::BTreeMap;
use std::sync::Arc;

use skein_group::{CommittedOffset, Coordinator};
use skein_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use skein_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};

use crate::broker::Broker;

const FIRST_MULTI_GROUP_VERSION: i16 = 8;

/// Per topic: (partition, committed offset, error: UNSTABLE_OFFSET_COMMIT while a
/// transaction holds an offset of it and the request requires stable offsets).
type Fetched = Result<BTreeMap<String, Vec<(i32, CommittedOffset, i16)>>, i16>;

fn fetch(
    c: &Coordinator,
    group: &str,
    wanted: Option<Vec<(String, i32)>>,
    require_stable: bool,
) -> Fetched {
    let rows = c
        .fetch_offsets_stable(group, wanted.as_deref(), require_stable)
        .map_err(|e| e.0)?;
    let mut by_topic: BTreeMap<String, Vec<(i32, CommittedOffset, i16)>> = BTreeMap::new();
    for (topic, partition, committed, error) in rows {
        by_topic
            .entry(topic)
            .or_default()
            .push((partition, committed, error.0));
    }
    Ok(by_topic)
}

pub fn handle(broker: &Arc<Broker>, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let require_stable = req.require_stable;
    if version < FIRST_MULTI_GROUP_VERSION {
        let wanted = req.topics.map(|ts| {
            ts.into_iter()
                .flat_map(|t| {
                    t.partition_indexes
                        .into_iter()
                        .map(move |p| (t.name.clone(), p))
                })
                .collect()
        });
        let fetched = match broker.coordinator_error(&req.group_id) {
            Some(code) => Err(code.0),
            None => broker
                .groups()
                .read(|c| fetch(c, &req.group_id, wanted, require_stable)),
        };
        return match fetched {
            Err(code) => OffsetFetchResponse {
                error_code: code,
                ..Default::default()
            },
            Ok(by_topic) => OffsetFetchResponse {
                topics: by_topic
                    .into_iter()
                    .map(|(name, parts)| OffsetFetchResponseTopic {
                        name,
                        partitions: parts
                            .into_iter()
                            .map(|(p, c, error)| OffsetFetchResponsePartition {
                                partition_index: p,
                                committed_offset: c.offset,
                                committed_leader_epoch: c.leader_epoch,
                                metadata: Some(c.metadata),
                                error_code: error,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        };
    }
    let groups = req
        .groups
        .into_iter()
        .map(|g| {
            let wanted = g.topics.map(|ts| {
                ts.into_iter()
                    .flat_map(|t| {
                        t.partition_indexes
                            .into_iter()
                            .map(move |p| (t.name.clone(), p))
                    })
                    .collect()
            });
            let member_id = g.member_id.unwrap_or_default();
            let coordinator = broker.coordinator_error(&g.group_id);
            let fetched = broker.groups().read(|c| {
                if let Some(code) = coordinator {
                    return Err(code.0);
                }
                let check = c.validate_offset_fetch(&g.group_id, &member_id, g.member_epoch);
                if check.0 != 0 {
                    return Err(check.0);
                }
                fetch(c, &g.group_id, wanted, require_stable)
            });
            match fetched {
                Err(code) => OffsetFetchResponseGroup {
                    group_id: g.group_id,
                    error_code: code,
                    ..Default::default()
                },
                Ok(by_topic) => OffsetFetchResponseGroup {
                    group_id: g.group_id,
                    topics: by_topic
                        .into_iter()
                        .map(|(name, parts)| OffsetFetchResponseTopics {
                            name,
                            partitions: parts
                                .into_iter()
                                .map(|(p, c, error)| OffsetFetchResponsePartitions {
                                    partition_index: p,
                                    committed_offset: c.offset,
                                    committed_leader_epoch: c.leader_epoch,
                                    metadata: Some(c.metadata),
                                    error_code: error,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    error_code: 0,
                    ..Default::default()
                },
            }
        })
        .collect();
    OffsetFetchResponse {
        groups,
        ..Default::default()
    }
}
