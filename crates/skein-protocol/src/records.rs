//! Record batches (message format v2): header parsing, validation, CRC32C, and a small
//! builder for the batches Skein writes itself.
//!
//! The broker never re-encodes a client's records: it validates the 61-byte batch header and
//! the CRC, writes the base offset (and, where configured, LogAppendTime) in place, and
//! stores the bytes. Only Skein's own internal records are built here.

use bytes::{BufMut, BytesMut};

/// Bytes before `batch_length` counts: base offset (i64) and the length field (i32).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 record batch header, up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only message format Skein stores.
pub const MAGIC_V2: i8 = 2;
/// The CRC covers everything from the attributes field to the end of the batch.
const CRC_START: usize = 21;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a record batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error("record batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("unsupported record batch magic {magic} (only v2 is supported)")]
    UnsupportedMagic { magic: i8 },
    #[error("invalid record batch length {length}")]
    InvalidLength { length: i32 },
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid record batch: {reason}")]
    Invalid { reason: &'static str },
    #[error("malformed record: {reason}")]
    MalformedRecord { reason: &'static str },
}

/// Compression codec from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The fixed-size header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks that the header is complete, the magic
    /// is 2 and the length is at least a header's; it does not check the CRC or that the whole
    /// batch is present (see [`verify_crc`] and [`BatchHeader::total_len`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, RecordsError> {
        if buf.len() < LOG_OVERHEAD + 5 {
            return Err(RecordsError::Truncated {
                need: LOG_OVERHEAD + 5,
                have: buf.len(),
            });
        }
        let magic = buf[16] as i8;
        if magic != MAGIC_V2 {
            return Err(RecordsError::UnsupportedMagic { magic });
        }
        if buf.len() < BATCH_HEADER_LEN {
            return Err(RecordsError::Truncated {
                need: BATCH_HEADER_LEN,
                have: buf.len(),
            });
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(RecordsError::InvalidLength {
                length: batch_length,
            });
        }
        let last_offset_delta = be_i32(buf, 23);
        if last_offset_delta < 0 {
            return Err(RecordsError::Invalid {
                reason: "negative last offset delta",
            });
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(buf, 21),
            last_offset_delta,
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Size of the whole batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn compression(&self) -> Compression {
        match self.attributes & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            _ => Compression::Zstd,
        }
    }

    /// The raw compression bits; values above 4 are invalid.
    pub fn compression_code(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_TYPE != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// The sequence number of the last record, wrapping at `i32::MAX` as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }
}

/// Computes the CRC32C that a batch should carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Checks the stored CRC32C of one complete batch (`batch` is exactly the batch's bytes).
pub fn verify_crc(batch: &[u8]) -> Result<(), RecordsError> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(RecordsError::Truncated {
            need: BATCH_HEADER_LEN,
            have: batch.len(),
        });
    }
    let stored = u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"));
    let computed = compute_crc(batch);
    if stored != computed {
        return Err(RecordsError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// Writes the base offset; the base offset is outside the CRC, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch (also outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch as LogAppendTime with `timestamp_ms` as its max timestamp, and rewrites the
/// CRC (attributes and timestamps are covered by it).
pub fn set_log_append_time(batch: &mut [u8], timestamp_ms: i64) {
    let attributes = be_i16(batch, 21) | ATTR_TIMESTAMP_TYPE;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Splits a buffer of back-to-back batches, checking that each is complete. Does not verify
/// CRCs. Yields `(header, byte range)`.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter {
            buf,
            pos: 0,
            failed: false,
        }
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, std::ops::Range<usize>), RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let result = BatchHeader::parse(rest).and_then(|h| {
            if h.total_len() > rest.len() {
                Err(RecordsError::Truncated {
                    need: h.total_len(),
                    have: rest.len(),
                })
            } else {
                Ok(h)
            }
        });
        match result {
            Ok(h) => {
                let range = self.pos..self.pos + h.total_len();
                self.pos = range.end;
                Some(Ok((h, range)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// One record inside an uncompressed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(RecordsError::MalformedRecord {
                    reason: "truncated varint",
                })?;
            self.pos += 1;
            value |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(RecordsError::MalformedRecord {
            reason: "varint too long",
        })
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        let v = self.varlong()?;
        i32::try_from(v).map_err(|_| RecordsError::MalformedRecord {
            reason: "varint out of range",
        })
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], RecordsError> {
        if self.buf.len() - self.pos < len {
            return Err(RecordsError::MalformedRecord {
                reason: "field longer than record",
            });
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        self.bytes(len as usize).map(Some)
    }
}

/// The records section of a batch, decompressed when the batch is compressed (refusing to
/// expand past `limit` bytes).
pub fn records_section(
    batch: &[u8],
    limit: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() > batch.len() {
        return Err(RecordsError::Truncated {
            need: header.total_len(),
            have: batch.len(),
        });
    }
    let body = &batch[BATCH_HEADER_LEN..header.total_len()];
    match header.compression() {
        Compression::None => Ok(std::borrow::Cow::Borrowed(body)),
        codec => crate::compression::decompress(codec, body, limit).map(std::borrow::Cow::Owned),
    }
}

/// Decodes the records of an uncompressed batch (`batch` is the whole batch). For a
/// compressed batch, decode [`records_section`] with [`decode_record_section`].
pub fn decode_records(batch: &[u8]) -> Result<Vec<Record<'_>>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() != Compression::None {
        return Err(RecordsError::Invalid {
            reason: "batch is compressed",
        });
    }
    if header.total_len() > batch.len() {
        return Err(RecordsError::Truncated {
            need: header.total_len(),
            have: batch.len(),
        });
    }
    decode_record_section(
        &batch[BATCH_HEADER_LEN..header.total_len()],
        header.records_count,
    )
}

/// Decodes `count` records from a (decompressed) records section.
pub fn decode_record_section(body: &[u8], count: i32) -> Result<Vec<Record<'_>>, RecordsError> {
    let count = count.max(0) as usize;
    // Each record takes at least 7 bytes, so the count cannot reserve more than the body.
    let mut records = Vec::with_capacity(count.min(body.len() / 7));
    let mut cur = Cursor { buf: body, pos: 0 };
    for _ in 0..count {
        let len = cur.varint()?;
        if len < 0 {
            return Err(RecordsError::MalformedRecord {
                reason: "negative record length",
            });
        }
        let rec_bytes = cur.bytes(len as usize)?;
        let mut r = Cursor {
            buf: rec_bytes,
            pos: 0,
        };
        let _attributes = r.bytes(1)?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.nullable_bytes()?;
        let value = r.nullable_bytes()?;
        let header_count = r.varint()?;
        if header_count < 0 {
            return Err(RecordsError::MalformedRecord {
                reason: "negative header count",
            });
        }
        let mut headers = Vec::with_capacity((header_count as usize).min(rec_bytes.len()));
        for _ in 0..header_count {
            let klen = r.varint()?;
            if klen < 0 {
                return Err(RecordsError::MalformedRecord {
                    reason: "null header key",
                });
            }
            let k = std::str::from_utf8(r.bytes(klen as usize)?).map_err(|_| {
                RecordsError::MalformedRecord {
                    reason: "header key not UTF-8",
                }
            })?;
            let v = r.nullable_bytes()?;
            headers.push((k, v));
        }
        if r.pos != rec_bytes.len() {
            return Err(RecordsError::MalformedRecord {
                reason: "record length mismatch",
            });
        }
        records.push(Record {
            offset_delta,
            timestamp_delta,
            key,
            value,
            headers,
        });
    }
    if cur.pos != body.len() {
        return Err(RecordsError::MalformedRecord {
            reason: "bytes after the last record",
        });
    }
    Ok(records)
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn put_nullable(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        None => put_varlong(buf, -1),
        Some(b) => {
            put_varlong(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

/// An end-transaction marker: the one control record of a COMMIT or ABORT control batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub committed: bool,
    pub coordinator_epoch: i32,
}

/// Control record types (the key's second field).
const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;

/// Builds the control batch that ends `producer_id`'s transaction, as the transaction
/// coordinator asks: transactional and control attributes, no sequence, one record whose key
/// is `(version 0, type)` and whose value is `(version 0, coordinator epoch)`.
pub fn end_txn_marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: EndTxnMarker,
    timestamp_ms: i64,
) -> BytesMut {
    let kind = if marker.committed {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut builder = RecordBatchBuilder::new(timestamp_ms)
        .producer(producer_id, producer_epoch, -1)
        .push(Some(&key), Some(&value), timestamp_ms);
    builder.attributes |= ATTR_TRANSACTIONAL | ATTR_CONTROL;
    builder.build()
}

/// Reads the end-transaction marker of a control batch: `None` for a batch that is not a
/// control batch, has no record, or whose first record is not a COMMIT or ABORT marker of a
/// known shape (never panics on damage).
pub fn parse_end_txn_marker(batch: &[u8]) -> Option<EndTxnMarker> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.compression() != Compression::None {
        return None;
    }
    let records = decode_records(batch.get(..header.total_len())?).ok()?;
    let record = records.first()?;
    let key = record.key?;
    if key.len() < 4 {
        return None;
    }
    let committed = match i16::from_be_bytes([key[2], key[3]]) {
        CONTROL_TYPE_ABORT => false,
        CONTROL_TYPE_COMMIT => true,
        _ => return None,
    };
    let value = record.value?;
    if value.len() < 6 {
        return None;
    }
    let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
    Some(EndTxnMarker {
        committed,
        coordinator_epoch,
    })
}

/// Builds an uncompressed v2 batch with base offset 0, for Skein's own records and for tests.
pub struct RecordBatchBuilder {
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    count: i32,
    records: BytesMut,
}

impl RecordBatchBuilder {
    pub fn new(base_timestamp_ms: i64) -> Self {
        RecordBatchBuilder {
            base_timestamp: base_timestamp_ms,
            max_timestamp: base_timestamp_ms,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            count: 0,
            records: BytesMut::new(),
        }
    }

    /// Sets the idempotent producer fields.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch transactional (its records belong to the producer's open transaction).
    pub fn transactional(mut self) -> Self {
        self.attributes |= ATTR_TRANSACTIONAL;
        self
    }

    pub fn push(self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp_ms: i64) -> Self {
        self.push_with_headers(key, value, timestamp_ms, &[])
    }

    pub fn push_with_headers(
        mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp_ms: i64,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Self {
        let mut rec = BytesMut::new();
        rec.put_u8(0);
        put_varlong(&mut rec, timestamp_ms - self.base_timestamp);
        put_varlong(&mut rec, self.count as i64);
        put_nullable(&mut rec, key);
        put_nullable(&mut rec, value);
        put_varlong(&mut rec, headers.len() as i64);
        for (k, v) in headers {
            put_nullable(&mut rec, Some(k.as_bytes()));
            put_nullable(&mut rec, *v);
        }
        put_varlong(&mut self.records, rec.len() as i64);
        self.records.put_slice(&rec);
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        self.count += 1;
        self
    }

    pub fn len(&self) -> i32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn build(self) -> BytesMut {
        let total = BATCH_HEADER_LEN + self.records.len();
        let mut buf = BytesMut::with_capacity(total);
        buf.put_i64(0);
        buf.put_i32((total - LOG_OVERHEAD) as i32);
        buf.put_i32(-1);
        buf.put_i8(MAGIC_V2);
        buf.put_u32(0);
        buf.put_i16(self.attributes);
        buf.put_i32((self.count - 1).max(0));
        buf.put_i64(self.base_timestamp);
        buf.put_i64(self.max_timestamp);
        buf.put_i64(self.producer_id);
        buf.put_i16(self.producer_epoch);
        buf.put_i32(self.base_sequence);
        buf.put_i32(self.count);
        buf.put_slice(&self.records);
        let crc = compute_crc(&buf);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_txn_markers_round_trip() {
        for committed in [false, true] {
            let marker = EndTxnMarker {
                committed,
                coordinator_epoch: 7,
            };
            let batch = end_txn_marker_batch(42, 3, marker, 1_000);
            let h = BatchHeader::parse(&batch).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (42, 3, 1)
            );
            verify_crc(&batch).unwrap();
            assert_eq!(parse_end_txn_marker(&batch), Some(marker));
            for cut in 0..batch.len() {
                assert_eq!(parse_end_txn_marker(&batch[..cut]), None, "{cut}");
            }
        }
        let data = RecordBatchBuilder::new(0).push(None, Some(b"v"), 0).build();
        assert_eq!(parse_end_txn_marker(&data), None);
    }

    #[test]
    fn built_batch_parses_and_verifies() {
        let batch = RecordBatchBuilder::new(1_000)
            .push(Some(b"k1"), Some(b"v1"), 1_000)
            .push_with_headers(None, Some(b"v2"), 1_005, &[("h", Some(b"x")), ("h", None)])
            .build();
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(h.total_len(), batch.len());
        assert_eq!(h.records_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.max_timestamp, 1_005);
        verify_crc(&batch).unwrap();
        let recs = decode_records(&batch).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].key, Some(&b"k1"[..]));
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp_delta, 5);
        assert_eq!(recs[1].headers, vec![("h", Some(&b"x"[..])), ("h", None)]);
    }

    #[test]
    fn crc_mismatch_is_detected_and_base_offset_is_outside_crc() {
        let mut batch = RecordBatchBuilder::new(0).push(None, Some(b"v"), 0).build();
        set_base_offset(&mut batch, 42);
        set_partition_leader_epoch(&mut batch, 7);
        verify_crc(&batch).unwrap();
        let n = batch.len();
        batch[n - 1] ^= 0xff;
        assert!(matches!(
            verify_crc(&batch),
            Err(RecordsError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let mut batch = RecordBatchBuilder::new(0).push(None, Some(b"v"), 0).build();
        set_log_append_time(&mut batch, 99);
        verify_crc(&batch).unwrap();
        let h = BatchHeader::parse(&batch).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn iterator_stops_at_truncated_batch() {
        let a = RecordBatchBuilder::new(0).push(None, Some(b"a"), 0).build();
        let b = RecordBatchBuilder::new(0)
            .push(None, Some(b"bb"), 0)
            .build();
        let mut buf = a.to_vec();
        buf.extend_from_slice(&b[..b.len() - 1]);
        let items: Vec<_> = BatchIter::new(&buf).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(RecordsError::Truncated { .. })));
    }

    #[test]
    fn last_sequence_wraps() {
        let mut batch = RecordBatchBuilder::new(0)
            .producer(1, 0, i32::MAX)
            .push(None, None, 0)
            .push(None, None, 0)
            .build();
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(h.last_sequence(), 0);
        batch.clear();
    }
}
