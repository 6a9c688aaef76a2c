//! DescribeLogDirs: the size of each partition in this broker's one data directory.

use std::sync::Arc;

use skein_protocol::messages::describe_log_dirs_request::DescribeLogDirsRequest;
use skein_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult, DescribeLogDirsTopic,
};

use crate::broker::Broker;

pub fn handle(broker: &Arc<Broker>, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    // Null asks for every topic.
    let wanted: Vec<(String, Option<Vec<i32>>)> = match req.topics {
        None => broker
            .topics()
            .iter()
            .map(|t| (t.name.clone(), None))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic, Some(t.partitions)))
            .collect(),
    };
    let mut topics = Vec::new();
    for (name, partitions) in wanted {
        // Kafka leaves out topics and partitions this broker does not host.
        let Some(topic) = broker.topic(&name) else {
            continue;
        };
        let indexes = partitions.unwrap_or_else(|| (0..topic.partition_count()).collect());
        let mut out = Vec::new();
        for index in indexes {
            let Some(p) = topic.partition(index) else {
                continue;
            };
            let state = p.lock();
            let Some(log) = state.log.as_ref() else {
                continue;
            };
            out.push(DescribeLogDirsPartition {
                partition_index: index,
                partition_size: log.size_bytes() as i64,
                offset_lag: 0,
                is_future_key: false,
                ..Default::default()
            });
        }
        topics.push(DescribeLogDirsTopic {
            name,
            partitions: out,
            ..Default::default()
        });
    }
    let dir = broker
        .config
        .data_dir
        .canonicalize()
        .unwrap_or_else(|_| broker.config.data_dir.clone());
    DescribeLogDirsResponse {
        results: vec![DescribeLogDirsResult {
            error_code: 0,
            log_dir: dir.display().to_string(),
            topics,
            total_bytes: -1,
            usable_bytes: -1,
            ..Default::default()
        }],
        ..Default::default()
    }
}
