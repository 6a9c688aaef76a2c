//! ListOffsets: earliest, latest, by timestamp and max timestamp.
//!
//! As Kafka answers: a client (replica id -1) is answered below the high watermark (the
//! last stable offset equals it here, with no transactions); a debugging request (replica
//! id -2) or a replica's may be asked of any replica of the partition and is answered up to
//! the log end. After an election, while the new leader's high watermark is still below the
//! log end it had when its epoch began (KIP-207), a client asking for the latest offset, or
//! for a timestamp not found below the high watermark, gets OFFSET_NOT_AVAILABLE
//! (LEADER_NOT_AVAILABLE before v5) rather than an offset lower than the old leader showed.

use std::sync::Arc;

use skein_protocol::messages::list_offsets_request::ListOffsetsRequest;
use skein_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};

use crate::broker::Broker;
use crate::error::ErrorCode;
use crate::partition::Partition;

const LATEST: i64 = -1;
/// `isolation_level` of a read_committed client: answered below the last stable offset.
const READ_COMMITTED: i8 = 1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

/// The replica id of a consumer's request.
const CONSUMER_REPLICA_ID: i32 = -1;
/// The replica id of a debugging request: served by any replica, up to the log end.
const DEBUGGING_REPLICA_ID: i32 = -2;
/// OFFSET_NOT_AVAILABLE came with ListOffsets v5; older versions get LEADER_NOT_AVAILABLE.
const FIRST_OFFSET_NOT_AVAILABLE_VERSION: i16 = 5;

/// The first ListOffsets version that may carry a special (negative) timestamp, as in Kafka:
/// -3 (max timestamp) came with v7, -4 (earliest local) with v8, -5 (latest tiered) with v9
/// and -6 (earliest pending upload) with v10. `None` for a negative value that means nothing.
fn first_version_for(timestamp: i64) -> Option<i16> {
    match timestamp {
        LATEST | EARLIEST => Some(0),
        MAX_TIMESTAMP => Some(7),
        EARLIEST_LOCAL => Some(8),
        -5 => Some(9),
        -6 => Some(10),
        _ => None,
    }
}

/// What the replica knows for one lookup.
#[derive(Debug, Clone, Copy)]
struct Lookup {
    /// The requested timestamp (or special value).
    timestamp: i64,
    log_start: i64,
    /// What a lookup by timestamp found in the whole log: `(offset, timestamp)`.
    found: Option<(i64, i64)>,
    /// The high watermark for a client, the log end otherwise.
    last_fetchable: i64,
    /// A client asks while the leader's high watermark lags the start of its epoch.
    not_available: bool,
}

/// The answer to one lookup: `(offset, timestamp)`, none (-1, -1, no error), or an error
/// (OFFSET_NOT_AVAILABLE, which the caller maps for old versions).
fn answer(l: Lookup) -> Result<Option<(i64, i64)>, ErrorCode> {
    let unavailable = || {
        if l.not_available {
            Err(ErrorCode::OFFSET_NOT_AVAILABLE)
        } else {
            Ok(None)
        }
    };
    match l.timestamp {
        EARLIEST | EARLIEST_LOCAL => Ok(Some((l.log_start, -1))),
        LATEST if l.not_available => Err(ErrorCode::OFFSET_NOT_AVAILABLE),
        LATEST => Ok(Some((l.last_fetchable, -1))),
        // By timestamp and max timestamp: only what lies below the last fetchable offset.
        MAX_TIMESTAMP => match l.found {
            Some((offset, ts)) if offset < l.last_fetchable => Ok(Some((offset, ts))),
            _ => unavailable(),
        },
        ts if ts >= 0 => match l.found {
            Some((offset, ts)) if offset < l.last_fetchable => Ok(Some((offset, ts))),
            _ => unavailable(),
        },
        // Other negative values (such as -5, latest tiered) have no answer here.
        _ => Ok(None),
    }
}

pub fn handle(broker: &Arc<Broker>, version: i16, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    let client = req.replica_id == CONSUMER_REPLICA_ID;
    let only_leader = req.replica_id != DEBUGGING_REPLICA_ID;
    for t in req.topics {
        let topic = broker.topic(&t.name);
        let mut tr = ListOffsetsTopicResponse {
            name: t.name,
            ..Default::default()
        };
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse {
                partition_index: p.partition_index,
                timestamp: -1,
                offset: -1,
                leader_epoch: -1,
                ..Default::default()
            };
            // A special timestamp the request's version does not have is refused as Kafka
            // does, before the partition is looked at.
            let unsupported = p.timestamp < 0
                && first_version_for(p.timestamp).is_none_or(|first| version < first);
            match topic.as_ref().and_then(|t| t.partition(p.partition_index)) {
                _ if unsupported => pr.error_code = ErrorCode::UNSUPPORTED_VERSION.code(),
                None => pr.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                Some(partition) => {
                    let check = if only_leader {
                        partition.check_leader(broker.node_id(), p.current_leader_epoch)
                    } else {
                        partition.check_epoch(p.current_leader_epoch)
                    };
                    if !check.is_ok() {
                        pr.error_code = check.code();
                    } else {
                        let read_committed = req.isolation_level == READ_COMMITTED;
                        let found = lookup(
                            &partition,
                            p.timestamp,
                            (client, read_committed),
                            !only_leader,
                        );
                        match found {
                            Ok(Some((offset, ts))) => {
                                pr.offset = offset;
                                pr.timestamp = ts;
                                pr.leader_epoch = partition.leader_epoch();
                                if version == 0 {
                                    pr.old_style_offsets = vec![offset];
                                }
                            }
                            Ok(None) => {}
                            Err(ErrorCode::OFFSET_NOT_AVAILABLE)
                                if version < FIRST_OFFSET_NOT_AVAILABLE_VERSION =>
                            {
                                pr.error_code = ErrorCode::LEADER_NOT_AVAILABLE.code()
                            }
                            Err(code) => pr.error_code = code.code(),
                        }
                    }
                }
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

/// One lookup in the replica's log. `client`: answered below the high watermark (the last
/// stable offset for a read_committed client; and
/// refused while a new leader's high watermark lags its epoch's start); otherwise up to the
/// log end. `any_replica`: a follower (or a node without a replica) may be asked.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    (client, read_committed): (bool, bool),
    any_replica: bool,
) -> Result<Option<(i64, i64)>, ErrorCode> {
    let state = partition.lock();
    let Some(log) = state.log.as_ref() else {
        // A node without a replica, asked by a debugging request: another node has it.
        return Err(if any_replica {
            ErrorCode::NOT_LEADER_OR_FOLLOWER
        } else {
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        });
    };
    let found = match timestamp {
        MAX_TIMESTAMP => log.max_timestamp(),
        ts if ts >= 0 => log.offset_for_timestamp(ts),
        _ => Ok(None),
    };
    let found = found.map_err(|e| {
        tracing::error!(topic = %partition.topic, partition = partition.index, "offset lookup failed: {e}");
        ErrorCode::KAFKA_STORAGE_ERROR
    })?;
    answer(Lookup {
        timestamp,
        log_start: log.log_start_offset(),
        found,
        last_fetchable: if client && read_committed {
            Partition::last_stable_offset(&state)
        } else if client {
            log.high_watermark()
        } else {
            log.log_end_offset()
        },
        not_available: client && Partition::high_watermark_lags_epoch_start(&state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(timestamp: i64, found: Option<(i64, i64)>, not_available: bool) -> Lookup {
        Lookup {
            timestamp,
            log_start: 3,
            found,
            last_fetchable: 10,
            not_available,
        }
    }

    #[test]
    fn a_lagging_new_leader_refuses_latest_and_lookups_past_its_high_watermark() {
        // Normal answers.
        assert_eq!(answer(lookup(LATEST, None, false)), Ok(Some((10, -1))));
        assert_eq!(answer(lookup(EARLIEST, None, false)), Ok(Some((3, -1))));
        assert_eq!(
            answer(lookup(500, Some((7, 600)), false)),
            Ok(Some((7, 600)))
        );
        assert_eq!(answer(lookup(500, Some((12, 600)), false)), Ok(None));
        assert_eq!(answer(lookup(500, None, false)), Ok(None));
        assert_eq!(
            answer(lookup(MAX_TIMESTAMP, Some((12, 900)), false)),
            Ok(None)
        );
        // In the window: latest and whatever lies at or past the high watermark are not
        // available; what lies below it, and the earliest offset, still are.
        let na = Err(ErrorCode::OFFSET_NOT_AVAILABLE);
        assert_eq!(answer(lookup(LATEST, None, true)), na);
        assert_eq!(answer(lookup(500, Some((12, 600)), true)), na);
        assert_eq!(answer(lookup(500, None, true)), na);
        assert_eq!(answer(lookup(MAX_TIMESTAMP, Some((12, 900)), true)), na);
        assert_eq!(
            answer(lookup(MAX_TIMESTAMP, Some((9, 900)), true)),
            Ok(Some((9, 900)))
        );
        assert_eq!(
            answer(lookup(500, Some((7, 600)), true)),
            Ok(Some((7, 600)))
        );
        assert_eq!(answer(lookup(EARLIEST, None, true)), Ok(Some((3, -1))));
        assert_eq!(
            answer(lookup(EARLIEST_LOCAL, None, true)),
            Ok(Some((3, -1)))
        );
        assert_eq!(answer(lookup(-5, None, true)), Ok(None));
    }
}
