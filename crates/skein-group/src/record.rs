//! Records the coordinator writes to `__consumer_offsets`, and their byte encoding.
//!
//! Every key starts with a big-endian `i16` key type, like Kafka's, so the log compacts
//! records about the same thing together:
//!
//! | key type | key fields                                   | value (None = tombstone)        |
//! |----------|----------------------------------------------|---------------------------------|
//! | 1        | group: str, topic: str, partition: i32        | offset commit, version 0        |
//! | 2        | group: str                                    | group state, version 0: a classic group (kind 0) or a KIP-848 consumer group (kind 1) |
//!
//! Values start with a big-endian `i16` version. Strings are an `i32` byte length (-1 =
//! null) then UTF-8; byte arrays are an `i32` length then the bytes; integers are big-endian.
//! A group converting between classic and consumer protocols overwrites the same key.
//!
//! Decoding never panics and never reserves memory a count in the input asks for without
//! checking that the remaining bytes could hold that many elements.

use bytes::Bytes;

use crate::error::RecordError;

/// Key type of offset commit records.
pub const KEY_TYPE_OFFSET: i16 = 1;
/// Key type of group state records (classic and consumer).
pub const KEY_TYPE_GROUP: i16 = 2;

const VALUE_VERSION: i16 = 0;
const GROUP_KIND_CLASSIC: i8 = 0;
const GROUP_KIND_CONSUMER: i8 = 1;

/// A KIP-848 topic id (Kafka `Uuid`, 16 bytes).
pub type TopicId = [u8; 16];

/// Partitions per topic id, sorted by topic id then partition.
pub type TopicPartitions = Vec<(TopicId, Vec<i32>)>;

/// One record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    /// A committed offset. `metadata` is never null: Kafka stores a null metadata as "".
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        /// -1 when the client did not send one.
        leader_epoch: i32,
        metadata: String,
        commit_timestamp_ms: i64,
    },
    /// Tombstone of an offset commit (expiry, OffsetDelete, topic deletion, group deletion).
    OffsetDelete {
        group: String,
        topic: String,
        partition: i32,
    },
    /// The state of a classic group, written when it becomes Stable or Empty.
    GroupMetadata(ClassicGroupRecord),
    /// The state of a KIP-848 consumer group.
    ConsumerGroup(ConsumerGroupRecord),
    /// Tombstone of a group's state record (the group is gone).
    GroupDelete { group: String },
}

/// A classic group as persisted (Kafka's `GroupMetadataValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicGroupRecord {
    pub group: String,
    /// "" when the group only stores offsets.
    pub protocol_type: String,
    pub generation: i32,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<ClassicMemberRecord>,
}

/// A classic member as persisted: only the selected protocol's metadata is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicMemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A KIP-848 consumer group as persisted: epochs, subscription metadata and every member
/// with its current and target assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupRecord {
    pub group: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub state_timestamp_ms: i64,
    /// The topics the group subscribes to as last seen: (name, id, partition count).
    pub subscription_metadata: Vec<(String, TopicId, i32)>,
    pub members: Vec<ConsumerMemberRecord>,
}

/// A KIP-848 member as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    /// The topics the regex matched when last resolved.
    pub resolved_regex_topics: Vec<String>,
    pub server_assignor: Option<String>,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// 0 stable, 1 unrevoked partitions, 2 unreleased partitions.
    pub state: i8,
    pub assigned: TopicPartitions,
    pub pending_revocation: TopicPartitions,
    pub target: TopicPartitions,
}

impl GroupRecord {
    /// The group this record belongs to; the lead maps it to a `__consumer_offsets` partition.
    pub fn partition_key(&self) -> &str {
        match self {
            GroupRecord::OffsetCommit { group, .. }
            | GroupRecord::OffsetDelete { group, .. }
            | GroupRecord::GroupDelete { group } => group,
            GroupRecord::GroupMetadata(g) => &g.group,
            GroupRecord::ConsumerGroup(g) => &g.group,
        }
    }

    /// The record key.
    pub fn key(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(64);
        match self {
            GroupRecord::OffsetCommit {
                group,
                topic,
                partition,
                ..
            }
            | GroupRecord::OffsetDelete {
                group,
                topic,
                partition,
            } => {
                put_i16(&mut w, KEY_TYPE_OFFSET);
                put_str(&mut w, group);
                put_str(&mut w, topic);
                put_i32(&mut w, *partition);
            }
            GroupRecord::GroupMetadata(_)
            | GroupRecord::ConsumerGroup(_)
            | GroupRecord::GroupDelete { .. } => {
                put_i16(&mut w, KEY_TYPE_GROUP);
                put_str(&mut w, self.partition_key());
            }
        }
        w
    }

    /// The record value; `None` is a tombstone.
    pub fn value(&self) -> Option<Vec<u8>> {
        let mut w = Vec::with_capacity(64);
        match self {
            GroupRecord::OffsetDelete { .. } | GroupRecord::GroupDelete { .. } => return None,
            GroupRecord::OffsetCommit {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
                ..
            } => {
                put_i16(&mut w, VALUE_VERSION);
                put_i64(&mut w, *offset);
                put_i32(&mut w, *leader_epoch);
                put_str(&mut w, metadata);
                put_i64(&mut w, *commit_timestamp_ms);
            }
            GroupRecord::GroupMetadata(g) => {
                put_i16(&mut w, VALUE_VERSION);
                w.push(GROUP_KIND_CLASSIC as u8);
                put_str(&mut w, &g.protocol_type);
                put_i32(&mut w, g.generation);
                put_opt_str(&mut w, g.protocol_name.as_deref());
                put_opt_str(&mut w, g.leader.as_deref());
                put_i64(&mut w, g.state_timestamp_ms);
                put_len(&mut w, g.members.len());
                for m in &g.members {
                    put_str(&mut w, &m.member_id);
                    put_opt_str(&mut w, m.group_instance_id.as_deref());
                    put_str(&mut w, &m.client_id);
                    put_str(&mut w, &m.client_host);
                    put_i32(&mut w, m.session_timeout_ms);
                    put_i32(&mut w, m.rebalance_timeout_ms);
                    put_bytes(&mut w, &m.subscription);
                    put_bytes(&mut w, &m.assignment);
                }
            }
            GroupRecord::ConsumerGroup(g) => {
                put_i16(&mut w, VALUE_VERSION);
                w.push(GROUP_KIND_CONSUMER as u8);
                put_i32(&mut w, g.group_epoch);
                put_i32(&mut w, g.assignment_epoch);
                put_i64(&mut w, g.state_timestamp_ms);
                put_len(&mut w, g.subscription_metadata.len());
                for (name, id, partitions) in &g.subscription_metadata {
                    put_str(&mut w, name);
                    w.extend_from_slice(id);
                    put_i32(&mut w, *partitions);
                }
                put_len(&mut w, g.members.len());
                for m in &g.members {
                    put_str(&mut w, &m.member_id);
                    put_opt_str(&mut w, m.instance_id.as_deref());
                    put_opt_str(&mut w, m.rack_id.as_deref());
                    put_str(&mut w, &m.client_id);
                    put_str(&mut w, &m.client_host);
                    put_i32(&mut w, m.rebalance_timeout_ms);
                    put_len(&mut w, m.subscribed_topic_names.len());
                    for t in &m.subscribed_topic_names {
                        put_str(&mut w, t);
                    }
                    put_opt_str(&mut w, m.subscribed_topic_regex.as_deref());
                    put_len(&mut w, m.resolved_regex_topics.len());
                    for t in &m.resolved_regex_topics {
                        put_str(&mut w, t);
                    }
                    put_opt_str(&mut w, m.server_assignor.as_deref());
                    put_i32(&mut w, m.member_epoch);
                    put_i32(&mut w, m.previous_member_epoch);
                    w.push(m.state as u8);
                    put_topic_partitions(&mut w, &m.assigned);
                    put_topic_partitions(&mut w, &m.pending_revocation);
                    put_topic_partitions(&mut w, &m.target);
                }
            }
        }
        Some(w)
    }

    /// Decodes a record from its key and value (`None` = tombstone).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, RecordError> {
        let mut k = Reader::new(key);
        let key_type = k.i16()?;
        match key_type {
            KEY_TYPE_OFFSET => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                k.finish()?;
                let Some(value) = value else {
                    return Ok(GroupRecord::OffsetDelete {
                        group,
                        topic,
                        partition,
                    });
                };
                let mut v = Reader::new(value);
                let version = v.i16()?;
                if version != VALUE_VERSION {
                    return Err(RecordError::UnsupportedVersion { key_type, version });
                }
                let offset = v.i64()?;
                let leader_epoch = v.i32()?;
                let metadata = v.string()?;
                let commit_timestamp_ms = v.i64()?;
                v.finish()?;
                Ok(GroupRecord::OffsetCommit {
                    group,
                    topic,
                    partition,
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms,
                })
            }
            KEY_TYPE_GROUP => {
                let group = k.string()?;
                k.finish()?;
                let Some(value) = value else {
                    return Ok(GroupRecord::GroupDelete { group });
                };
                let mut v = Reader::new(value);
                let version = v.i16()?;
                if version != VALUE_VERSION {
                    return Err(RecordError::UnsupportedVersion { key_type, version });
                }
                let kind_offset = v.pos;
                let record = match v.i8()? {
                    GROUP_KIND_CLASSIC => {
                        GroupRecord::GroupMetadata(decode_classic(group, &mut v)?)
                    }
                    GROUP_KIND_CONSUMER => {
                        GroupRecord::ConsumerGroup(decode_consumer(group, &mut v)?)
                    }
                    _ => {
                        return Err(RecordError::Invalid {
                            field: "group kind",
                            offset: kind_offset,
                        })
                    }
                };
                v.finish()?;
                Ok(record)
            }
            other => Err(RecordError::UnknownKeyType(other)),
        }
    }
}

fn decode_classic(group: String, v: &mut Reader<'_>) -> Result<ClassicGroupRecord, RecordError> {
    let protocol_type = v.string()?;
    let generation = v.i32()?;
    let protocol_name = v.opt_string()?;
    let leader = v.opt_string()?;
    let state_timestamp_ms = v.i64()?;
    // A member needs at least 4 strings, 2 i32 and 2 byte arrays: 32 bytes.
    let count = v.count(32)?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(ClassicMemberRecord {
            member_id: v.string()?,
            group_instance_id: v.opt_string()?,
            client_id: v.string()?,
            client_host: v.string()?,
            session_timeout_ms: v.i32()?,
            rebalance_timeout_ms: v.i32()?,
            subscription: v.bytes()?,
            assignment: v.bytes()?,
        });
    }
    Ok(ClassicGroupRecord {
        group,
        protocol_type,
        generation,
        protocol_name,
        leader,
        state_timestamp_ms,
        members,
    })
}

fn decode_consumer(group: String, v: &mut Reader<'_>) -> Result<ConsumerGroupRecord, RecordError> {
    let group_epoch = v.i32()?;
    let assignment_epoch = v.i32()?;
    let state_timestamp_ms = v.i64()?;
    let count = v.count(4 + 16 + 4)?;
    let mut subscription_metadata = Vec::with_capacity(count);
    for _ in 0..count {
        let name = v.string()?;
        let id = v.topic_id()?;
        let partitions = v.i32()?;
        subscription_metadata.push((name, id, partitions));
    }
    // A member needs at least 9 strings/arrays (4 bytes each), 3 i32, 1 byte and 3
    // partition lists.
    let count = v.count(9 * 4 + 3 * 4 + 1 + 3 * 4)?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = v.string()?;
        let instance_id = v.opt_string()?;
        let rack_id = v.opt_string()?;
        let client_id = v.string()?;
        let client_host = v.string()?;
        let rebalance_timeout_ms = v.i32()?;
        let n = v.count(4)?;
        let mut subscribed_topic_names = Vec::with_capacity(n);
        for _ in 0..n {
            subscribed_topic_names.push(v.string()?);
        }
        let subscribed_topic_regex = v.opt_string()?;
        let n = v.count(4)?;
        let mut resolved_regex_topics = Vec::with_capacity(n);
        for _ in 0..n {
            resolved_regex_topics.push(v.string()?);
        }
        members.push(ConsumerMemberRecord {
            member_id,
            instance_id,
            rack_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            subscribed_topic_names,
            subscribed_topic_regex,
            resolved_regex_topics,
            server_assignor: v.opt_string()?,
            member_epoch: v.i32()?,
            previous_member_epoch: v.i32()?,
            state: v.i8()?,
            assigned: v.topic_partitions()?,
            pending_revocation: v.topic_partitions()?,
            target: v.topic_partitions()?,
        });
    }
    Ok(ConsumerGroupRecord {
        group,
        group_epoch,
        assignment_epoch,
        state_timestamp_ms,
        subscription_metadata,
        members,
    })
}

fn put_i16(w: &mut Vec<u8>, v: i16) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(w: &mut Vec<u8>, v: i32) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(w: &mut Vec<u8>, v: i64) {
    w.extend_from_slice(&v.to_be_bytes());
}

fn put_len(w: &mut Vec<u8>, len: usize) {
    // Lengths beyond i32 cannot come from a Kafka request; saturate rather than wrap.
    put_i32(w, i32::try_from(len).unwrap_or(i32::MAX));
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_len(w, s.len());
    w.extend_from_slice(s.as_bytes());
}

fn put_opt_str(w: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(w, s),
        None => put_i32(w, -1),
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    put_len(w, b.len());
    w.extend_from_slice(b);
}

fn put_topic_partitions(w: &mut Vec<u8>, tps: &[(TopicId, Vec<i32>)]) {
    put_len(w, tps.len());
    for (id, partitions) in tps {
        w.extend_from_slice(id);
        put_len(w, partitions.len());
        for p in partitions {
            put_i32(w, *p);
        }
    }
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.remaining() < n {
            return Err(RecordError::UnexpectedEof {
                offset: self.pos,
                need: n,
                have: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Result<i16, RecordError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn topic_id(&mut self) -> Result<TopicId, RecordError> {
        self.array()
    }

    /// A length that must be non-negative; `None` for -1 (null).
    fn nullable_len(&mut self, field: &'static str) -> Result<Option<usize>, RecordError> {
        let offset = self.pos;
        let n = self.i32()?;
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::Invalid { field, offset }),
            n => Ok(Some(n as usize)),
        }
    }

    /// An element count, checked against the bytes left given each element's minimum size.
    fn count(&mut self, min_element_bytes: usize) -> Result<usize, RecordError> {
        let offset = self.pos;
        let n = self.nullable_len("count")?.ok_or(RecordError::Invalid {
            field: "count",
            offset,
        })?;
        let need = n.saturating_mul(min_element_bytes.max(1));
        if need > self.remaining() {
            return Err(RecordError::UnexpectedEof {
                offset: self.pos,
                need,
                have: self.remaining(),
            });
        }
        Ok(n)
    }

    fn opt_string(&mut self) -> Result<Option<String>, RecordError> {
        let Some(n) = self.nullable_len("string length")? else {
            return Ok(None);
        };
        let offset = self.pos;
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| RecordError::Invalid {
                field: "utf-8 string",
                offset,
            })
    }

    fn string(&mut self) -> Result<String, RecordError> {
        let offset = self.pos;
        self.opt_string()?.ok_or(RecordError::Invalid {
            field: "non-null string",
            offset,
        })
    }

    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let offset = self.pos;
        let n = self
            .nullable_len("bytes length")?
            .ok_or(RecordError::Invalid {
                field: "non-null bytes",
                offset,
            })?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }

    fn topic_partitions(&mut self) -> Result<TopicPartitions, RecordError> {
        let count = self.count(16 + 4)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.topic_id()?;
            let n = self.count(4)?;
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                partitions.push(self.i32()?);
            }
            out.push((id, partitions));
        }
        Ok(out)
    }

    fn finish(&self) -> Result<(), RecordError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(RecordError::TrailingBytes(n)),
        }
    }
}
