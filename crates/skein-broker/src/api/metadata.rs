//! Metadata: brokers, topics and partitions, creating unknown topics when allowed.

use std::sync::Arc;

use skein_protocol::messages::metadata_request::MetadataRequest;
use skein_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use skein_protocol::Uuid;

use crate::broker::{Broker, Topic};
use crate::error::ErrorCode;

/// The leader epoch a partition starts with (a single node's partitions keep it).
pub const LEADER_EPOCH: i32 = 0;

pub fn topic_entry(topic: &Topic) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: 0,
        name: Some(topic.name.clone()),
        topic_id: topic.id,
        is_internal: topic.is_internal(),
        partitions: topic
            .partitions()
            .iter()
            .map(|p| {
                let a = p.assignment();
                MetadataResponsePartition {
                    error_code: if a.leader < 0 {
                        ErrorCode::LEADER_NOT_AVAILABLE.code()
                    } else {
                        0
                    },
                    partition_index: p.index,
                    leader_id: a.leader,
                    leader_epoch: a.leader_epoch,
                    replica_nodes: a.replicas,
                    isr_nodes: a.isr,
                    offline_replicas: vec![],
                    ..Default::default()
                }
            })
            .collect(),
        topic_authorized_operations: i32::MIN,
        ..Default::default()
    }
}

fn error_entry(name: Option<String>, id: Uuid, code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: code.code(),
        name,
        topic_id: id,
        topic_authorized_operations: i32::MIN,
        ..Default::default()
    }
}

pub fn handle(
    broker: &Arc<Broker>,
    listener: &str,
    version: i16,
    req: MetadataRequest,
) -> MetadataResponse {
    let mut resp = MetadataResponse {
        brokers: broker
            .brokers_on(listener)
            .into_iter()
            .map(|b| MetadataResponseBroker {
                node_id: b.id,
                host: b.host,
                port: b.port,
                rack: b.rack,
                ..Default::default()
            })
            .collect(),
        cluster_id: Some(broker.cluster_id.clone()),
        controller_id: broker.controller_id(),
        cluster_authorized_operations: i32::MIN,
        ..Default::default()
    };
    // Version 0 has no null: an empty list means every topic.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create = if version >= 4 {
        req.allow_auto_topic_creation
    } else {
        true
    };
    match wanted {
        None => {
            resp.topics = broker.topics().iter().map(|t| topic_entry(t)).collect();
        }
        Some(requested) => {
            for t in requested {
                // Like Kafka, a set topic id wins over the name: clients asking by id may send
                // an empty name rather than a null one (the Java AdminClient does).
                let by_name = match &t.name {
                    Some(name) if t.topic_id == Uuid::ZERO => Some(name),
                    _ => None,
                };
                let entry = match by_name {
                    None => match broker.topic_by_id(&t.topic_id) {
                        Some(topic) => topic_entry(&topic),
                        None => {
                            // Response topic names are nullable only from v12.
                            let name = (version < 12).then(String::new);
                            error_entry(name, t.topic_id, ErrorCode::UNKNOWN_TOPIC_ID)
                        }
                    },
                    Some(name) => match broker.topic(name) {
                        Some(topic) => topic_entry(&topic),
                        // Kafka's way: the creation starts and the client, told the
                        // leader is not available yet, asks again (no worker waits for
                        // the controller's commit).
                        None if allow_auto_create && broker.config.auto_create_topics => {
                            match broker.start_auto_create(name) {
                                Ok(()) => error_entry(
                                    Some(name.clone()),
                                    Uuid::default(),
                                    ErrorCode::LEADER_NOT_AVAILABLE,
                                ),
                                // Lost a race with another creator: report what exists now.
                                Err(e) if e.code == ErrorCode::TOPIC_ALREADY_EXISTS => {
                                    match broker.topic(name) {
                                        Some(topic) => topic_entry(&topic),
                                        None => error_entry(
                                            Some(name.clone()),
                                            Uuid::default(),
                                            ErrorCode::LEADER_NOT_AVAILABLE,
                                        ),
                                    }
                                }
                                Err(e) => error_entry(Some(name.clone()), Uuid::default(), e.code),
                            }
                        }
                        None => error_entry(
                            Some(name.clone()),
                            Uuid::default(),
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        ),
                    },
                };
                resp.topics.push(entry);
            }
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use skein_protocol::messages::metadata_request::MetadataRequestTopic;

    use super::*;
    use crate::BrokerConfig;

    fn request(topic_id: Uuid, name: Option<&str>) -> MetadataRequest {
        MetadataRequest {
            topics: Some(vec![MetadataRequestTopic {
                topic_id,
                name: name.map(str::to_string),
                ..Default::default()
            }]),
            allow_auto_topic_creation: true,
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_topic_id_wins_over_an_empty_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = BTreeMap::new();
        settings.insert("log.dirs".to_string(), dir.path().display().to_string());
        settings.insert("listeners".to_string(), "127.0.0.1:0".to_string());
        let broker = Broker::open(BrokerConfig::from_settings(settings).unwrap()).unwrap();
        broker.start().await.unwrap();
        let topic = broker.auto_create_topic("t").unwrap();

        for name in [None, Some("")] {
            let resp = handle(&broker, "PLAINTEXT", 12, request(topic.id, name));
            assert_eq!(resp.topics.len(), 1);
            let t = &resp.topics[0];
            assert_eq!(t.error_code, 0, "name {name:?}");
            assert_eq!(t.name.as_deref(), Some("t"));
            assert_eq!(t.topic_id, topic.id);
            assert_eq!(t.partitions.len(), 3);

            let unknown = Uuid([7; 16]);
            let resp = handle(&broker, "PLAINTEXT", 12, request(unknown, name));
            let t = &resp.topics[0];
            assert_eq!(
                t.error_code,
                ErrorCode::UNKNOWN_TOPIC_ID.code(),
                "name {name:?}"
            );
            assert_eq!(t.name, None);
            assert_eq!(t.topic_id, unknown);
        }
        // An empty name never creates a topic, and nothing else was created.
        assert_eq!(broker.topics().len(), 1);

        // Without an id the name is used, as before.
        let resp = handle(&broker, "PLAINTEXT", 12, request(Uuid::ZERO, Some("t")));
        assert_eq!(resp.topics[0].topic_id, topic.id);
    }
}
