//! The records of `__transaction_state`: Kafka's `TransactionLogKey` and
//! `TransactionLogValue`, with a hand-written codec.
//!
//! Both key and value are "version-prefixed" like Kafka's: a big-endian `i16` version, then
//! the message at that version.
//!
//! - Key, version 0: `TransactionalId` as a non-flexible string (`i16` length + UTF-8).
//! - Value, version 0 (non-flexible): `ProducerId` i64, `ProducerEpoch` i16,
//!   `TransactionTimeoutMs` i32, `TransactionStatus` i8, `TransactionPartitions` (nullable
//!   array: `i32` count, -1 = null; each `Topic` string and `PartitionIds` i32 array),
//!   `TransactionLastUpdateTimestampMs` i64, `TransactionStartTimestampMs` i64.
//! - Value, version 1 (flexible): the same fields with compact strings and arrays (unsigned
//!   varint length + 1, 0 = null), an empty tagged-field section after each partition entry,
//!   and top-level tagged fields `PreviousProducerId` (tag 0, i64), `NextProducerId`
//!   (tag 1, i64) and `ClientTransactionVersion` (tag 2, i16).
//!
//! A tombstone (null value) removes the transactional id. Skein writes value version 1
//! (so the previous producer id survives a coordinator move, which KIP-360 retries need)
//! and reads both versions. Decoding never panics and never reserves memory a count in the
//! input asks for without checking that the remaining bytes could hold that many elements.

use crate::error::RecordError;

/// The transaction states, with the byte Kafka persists for each (`TransactionState.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    /// No transaction open (after InitProducerId).
    Empty,
    /// Partitions were added; data may be written.
    Ongoing,
    /// EndTxn(commit) persisted; COMMIT markers are being written.
    PrepareCommit,
    /// EndTxn(abort), a timeout or a fence persisted; ABORT markers are being written.
    PrepareAbort,
    /// Every COMMIT marker is written.
    CompleteCommit,
    /// Every ABORT marker is written.
    CompleteAbort,
    /// Being expired (never persisted: a tombstone is written instead).
    Dead,
    /// A new producer fences an ongoing transaction (never persisted).
    PrepareEpochFence,
}

impl TxnState {
    /// Every state, in id order.
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// The byte persisted in `TransactionStatus`.
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        TxnState::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        TxnState::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A `TransactionLogValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnLogValue {
    pub producer_id: i64,
    /// Version 1 tag 0; -1 when absent.
    pub previous_producer_id: i64,
    /// Version 1 tag 1 (transaction version 2 only); -1 when absent.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// (topic, partitions). Written as null in the Empty state, read back as empty.
    pub partitions: Vec<(String, Vec<i32>)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// Version 1 tag 2; 0 when absent.
    pub client_transaction_version: i16,
}

/// One record of `__transaction_state`: the transactional id and its state, or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    /// `None` = tombstone (the id expired).
    pub value: Option<TxnLogValue>,
}

/// The value version Skein writes.
pub const VALUE_VERSION: i16 = 1;

impl TxnRecord {
    /// The record key (`TransactionLogKey` version 0, version-prefixed).
    pub fn key(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(4 + self.transactional_id.len());
        put_i16(&mut w, 0);
        put_str16(&mut w, &self.transactional_id);
        w
    }

    /// The record value at [`VALUE_VERSION`]; `None` is a tombstone.
    pub fn value(&self) -> Option<Vec<u8>> {
        self.value_at(VALUE_VERSION)
    }

    /// The record value at `version` (0 or 1); `None` is a tombstone.
    pub fn value_at(&self, version: i16) -> Option<Vec<u8>> {
        let v = self.value.as_ref()?;
        let mut w = Vec::with_capacity(64);
        put_i16(&mut w, version);
        put_i64(&mut w, v.producer_id);
        put_i16(&mut w, v.producer_epoch);
        put_i32(&mut w, v.timeout_ms);
        w.push(v.state.id() as u8);
        let null_partitions = v.state == TxnState::Empty && v.partitions.is_empty();
        if version == 0 {
            if null_partitions {
                put_i32(&mut w, -1);
            } else {
                put_len32(&mut w, v.partitions.len());
                for (topic, ps) in &v.partitions {
                    put_str16(&mut w, topic);
                    put_len32(&mut w, ps.len());
                    for p in ps {
                        put_i32(&mut w, *p);
                    }
                }
            }
        } else if null_partitions {
            put_uvarint(&mut w, 0);
        } else {
            put_uvarint(&mut w, v.partitions.len() as u64 + 1);
            for (topic, ps) in &v.partitions {
                put_uvarint(&mut w, topic.len() as u64 + 1);
                w.extend_from_slice(topic.as_bytes());
                put_uvarint(&mut w, ps.len() as u64 + 1);
                for p in ps {
                    put_i32(&mut w, *p);
                }
                put_uvarint(&mut w, 0);
            }
        }
        put_i64(&mut w, v.last_update_ms);
        put_i64(&mut w, v.start_ms);
        if version >= 1 {
            let mut tags: Vec<(u64, Vec<u8>)> = Vec::new();
            if v.previous_producer_id != -1 {
                tags.push((0, v.previous_producer_id.to_be_bytes().to_vec()));
            }
            if v.next_producer_id != -1 {
                tags.push((1, v.next_producer_id.to_be_bytes().to_vec()));
            }
            if v.client_transaction_version != 0 {
                tags.push((2, v.client_transaction_version.to_be_bytes().to_vec()));
            }
            put_uvarint(&mut w, tags.len() as u64);
            for (tag, data) in tags {
                put_uvarint(&mut w, tag);
                put_uvarint(&mut w, data.len() as u64);
                w.extend_from_slice(&data);
            }
        }
        Some(w)
    }

    /// Decodes a record from its key and value (`None` = tombstone).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<TxnRecord, RecordError> {
        let mut k = Reader::new(key);
        let key_version = k.i16()?;
        if key_version != 0 {
            return Err(RecordError::UnsupportedVersion {
                what: "key",
                version: key_version,
            });
        }
        let transactional_id = k.str16()?;
        k.finish()?;
        let Some(value) = value else {
            return Ok(TxnRecord {
                transactional_id,
                value: None,
            });
        };
        let mut r = Reader::new(value);
        let version = r.i16()?;
        if !(0..=1).contains(&version) {
            return Err(RecordError::UnsupportedVersion {
                what: "value",
                version,
            });
        }
        let flexible = version >= 1;
        let producer_id = r.i64()?;
        let producer_epoch = r.i16()?;
        let timeout_ms = r.i32()?;
        let state_at = r.pos;
        let state = TxnState::from_id(r.i8()?).ok_or(RecordError::Invalid {
            field: "transaction status",
            offset: state_at,
        })?;
        let mut partitions = Vec::new();
        // Each entry needs at least a string length and an array length.
        let count = if flexible {
            r.compact_count(2)?
        } else {
            r.count32(2 + 4)?
        };
        if let Some(n) = count {
            partitions.reserve(n);
            for _ in 0..n {
                let topic = if flexible {
                    r.compact_str()?
                } else {
                    r.str16()?
                };
                let m = if flexible {
                    r.compact_count(4)?
                } else {
                    r.count32(4)?
                };
                let m = m.ok_or(RecordError::Invalid {
                    field: "null partition ids",
                    offset: r.pos,
                })?;
                let mut ids = Vec::with_capacity(m);
                for _ in 0..m {
                    ids.push(r.i32()?);
                }
                if flexible {
                    r.skip_tagged()?;
                }
                partitions.push((topic, ids));
            }
        }
        let last_update_ms = r.i64()?;
        let start_ms = r.i64()?;
        let mut v = TxnLogValue {
            producer_id,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
            client_transaction_version: 0,
        };
        if flexible {
            let n = r.uvarint()?;
            for _ in 0..n {
                let tag = r.uvarint()?;
                let size = usize::try_from(r.uvarint()?).map_err(|_| RecordError::Invalid {
                    field: "tagged field size",
                    offset: r.pos,
                })?;
                let at = r.pos;
                let data = r.take(size)?;
                let bad = RecordError::Invalid {
                    field: "tagged field",
                    offset: at,
                };
                match tag {
                    0 => {
                        v.previous_producer_id =
                            i64::from_be_bytes(data.try_into().map_err(|_| bad)?)
                    }
                    1 => v.next_producer_id = i64::from_be_bytes(data.try_into().map_err(|_| bad)?),
                    2 => {
                        v.client_transaction_version =
                            i16::from_be_bytes(data.try_into().map_err(|_| bad)?)
                    }
                    _ => {}
                }
            }
        }
        r.finish()?;
        Ok(TxnRecord {
            transactional_id,
            value: Some(v),
        })
    }
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

fn put_len32(w: &mut Vec<u8>, n: usize) {
    put_i32(w, i32::try_from(n).unwrap_or(i32::MAX));
}

fn put_str16(w: &mut Vec<u8>, s: &str) {
    // Kafka strings are at most i16::MAX bytes; a longer id cannot arrive in a request.
    let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    put_i16(w, bytes.len() as i16);
    w.extend_from_slice(bytes);
}

fn put_uvarint(w: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        w.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    w.push(v as u8);
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

    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RecordError::Invalid {
            field: "varint",
            offset: start,
        })
    }

    fn utf8(&mut self, n: usize) -> Result<String, RecordError> {
        let offset = self.pos;
        let raw = self.take(n)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| RecordError::Invalid {
                field: "utf-8 string",
                offset,
            })
    }

    fn str16(&mut self) -> Result<String, RecordError> {
        let offset = self.pos;
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| RecordError::Invalid {
            field: "string length",
            offset,
        })?;
        self.utf8(n)
    }

    fn compact_str(&mut self) -> Result<String, RecordError> {
        let offset = self.pos;
        let n = self.uvarint()?;
        if n == 0 {
            return Err(RecordError::Invalid {
                field: "non-null string",
                offset,
            });
        }
        let n = usize::try_from(n - 1).map_err(|_| RecordError::Invalid {
            field: "string length",
            offset,
        })?;
        self.utf8(n)
    }

    fn checked(&self, n: usize, min_element_bytes: usize) -> Result<usize, RecordError> {
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

    /// A non-flexible array count (`i32`, -1 = null).
    fn count32(&mut self, min_element_bytes: usize) -> Result<Option<usize>, RecordError> {
        let offset = self.pos;
        match self.i32()? {
            -1 => Ok(None),
            n if n < 0 => Err(RecordError::Invalid {
                field: "array length",
                offset,
            }),
            n => self.checked(n as usize, min_element_bytes).map(Some),
        }
    }

    /// A compact array count (unsigned varint + 1, 0 = null).
    fn compact_count(&mut self, min_element_bytes: usize) -> Result<Option<usize>, RecordError> {
        let offset = self.pos;
        match self.uvarint()? {
            0 => Ok(None),
            n => {
                let n = usize::try_from(n - 1).map_err(|_| RecordError::Invalid {
                    field: "array length",
                    offset,
                })?;
                self.checked(n, min_element_bytes).map(Some)
            }
        }
    }

    fn skip_tagged(&mut self) -> Result<(), RecordError> {
        let n = self.uvarint()?;
        for _ in 0..n {
            self.uvarint()?;
            let offset = self.pos;
            let size = usize::try_from(self.uvarint()?).map_err(|_| RecordError::Invalid {
                field: "tagged field size",
                offset,
            })?;
            self.take(size)?;
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), RecordError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(RecordError::TrailingBytes(n)),
        }
    }
}
