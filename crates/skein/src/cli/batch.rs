//! Record batches on the client side: building a (possibly compressed) v2 batch from records,
//! and reading the records out of the batches a Fetch returns.

use anyhow::{bail, Result};
use skein_protocol::compression;
use skein_protocol::records::{
    self, BatchHeader, BatchIter, Compression, RecordBatchBuilder, RecordsError, BATCH_HEADER_LEN,
    LOG_OVERHEAD,
};

/// Decompressed batches larger than this are refused.
const DECOMPRESSED_LIMIT: usize = 256 * 1024 * 1024;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: i64,
}

impl OutRecord {
    /// Roughly the bytes this record takes in a batch, for sizing batches.
    pub fn size_estimate(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 4)
            .sum();
        16 + self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + headers
    }

    /// Appends this record to a batch being built.
    pub fn push_to(&self, builder: RecordBatchBuilder) -> RecordBatchBuilder {
        let headers: Vec<(&str, Option<&[u8]>)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        builder.push_with_headers(
            self.key.as_deref(),
            self.value.as_deref(),
            self.timestamp_ms,
            &headers,
        )
    }
}

/// The attribute bits of a codec.
fn codec_bits(codec: Compression) -> i16 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    }
}

/// Builds one batch (base offset 0, CreateTime, no producer id) of `records`, compressing its
/// records section with `codec`.
pub fn build_batch(records: &[OutRecord], codec: Compression) -> Vec<u8> {
    let base_timestamp = records.first().map_or(0, |r| r.timestamp_ms);
    let mut builder = RecordBatchBuilder::new(base_timestamp);
    for r in records {
        builder = r.push_to(builder);
    }
    compress_batch(&builder.build(), codec)
}

/// Compresses the records section of an uncompressed batch: the header is kept, the codec
/// bits are set in the attributes, and the length and CRC are recomputed.
pub fn compress_batch(batch: &[u8], codec: Compression) -> Vec<u8> {
    if codec == Compression::None {
        return batch.to_vec();
    }
    let compressed = compression::compress(codec, &batch[BATCH_HEADER_LEN..]);
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + compressed.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&compressed);
    let attributes = i16::from_be_bytes([out[21], out[22]]) | codec_bits(codec);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = records::compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    /// True when the timestamp is the broker's LogAppendTime.
    pub log_append_time: bool,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What a fetched records buffer held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The data records of the complete batches, in offset order.
    pub records: Vec<InRecord>,
    /// The offset after the last complete batch (control batches included), when there was
    /// one: a consumer moves past it even when every record was filtered out.
    pub next_offset: Option<i64>,
}

/// Reads every complete batch of a fetch response's records. A partial batch at the end (a
/// fetch may cut the last batch short) is ignored; anything else malformed is an error.
#[cfg(test)]
pub fn decode_batches(buf: &[u8]) -> Result<Decoded> {
    decode_batches_filtered(buf, None)
}

/// [`decode_batches`] for a read_committed fetch: the transactional batches of the aborted
/// transactions the response lists (producer id, first offset) are left out, as Kafka's
/// consumer does it: a producer id is aborted from its first offset until its abort marker.
pub fn decode_batches_filtered(buf: &[u8], aborted: Option<&[(i64, i64)]>) -> Result<Decoded> {
    let mut pending: Vec<(i64, i64)> = aborted.map(<[_]>::to_vec).unwrap_or_default();
    pending.sort_by_key(|(_, first)| std::cmp::Reverse(*first));
    let mut aborting: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut out = Decoded::default();
    for item in BatchIter::new(buf) {
        let (header, range) = match item {
            Ok(v) => v,
            Err(RecordsError::Truncated { .. }) => break,
            Err(e) => bail!("malformed record batch: {e}"),
        };
        let batch = &buf[range];
        records::verify_crc(batch)
            .map_err(|e| anyhow::anyhow!("record batch at offset {}: {e}", header.base_offset))?;
        out.next_offset = Some(header.last_offset() + 1);
        while let Some((pid, _)) = pending
            .last()
            .copied()
            .filter(|(_, first)| *first <= header.last_offset())
        {
            aborting.insert(pid);
            pending.pop();
        }
        if header.is_control() {
            if records::parse_end_txn_marker(batch).is_some_and(|m| !m.committed) {
                aborting.remove(&header.producer_id);
            }
            continue;
        }
        if header.is_transactional() && aborting.contains(&header.producer_id) {
            continue;
        }
        out.records.extend(decode_batch(&header, batch)?);
    }
    Ok(out)
}

fn decode_batch(header: &BatchHeader, batch: &[u8]) -> Result<Vec<InRecord>> {
    let section = records::records_section(batch, DECOMPRESSED_LIMIT)
        .map_err(|e| anyhow::anyhow!("record batch at offset {}: {e}", header.base_offset))?;
    let records = records::decode_record_section(&section, header.records_count)
        .map_err(|e| anyhow::anyhow!("record batch at offset {}: {e}", header.base_offset))?;
    Ok(records
        .into_iter()
        .map(|r| InRecord {
            offset: header.base_offset + i64::from(r.offset_delta),
            timestamp_ms: if header.is_log_append_time() {
                header.max_timestamp
            } else {
                header.base_timestamp + r.timestamp_delta
            },
            log_append_time: header.is_log_append_time(),
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.map(<[u8]>::to_vec)))
                .collect(),
        })
        .collect())
}

/// Parses a codec name as the CLI takes it.
pub fn parse_compression(name: &str) -> Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("unknown compression {other:?} (none, gzip, snappy, lz4 or zstd)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<OutRecord> {
        (0..50)
            .map(|i| OutRecord {
                key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
                value: (i != 7).then(|| format!("value {i} ").repeat(20).into_bytes()),
                headers: vec![
                    ("h".to_owned(), Some(b"1".to_vec())),
                    ("h".to_owned(), None),
                ],
                timestamp_ms: 1_700_000_000_000 + i,
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips_through_a_batch() {
        let records = sample();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = build_batch(&records, codec);
            let header = BatchHeader::parse(&batch).unwrap();
            assert_eq!(header.total_len(), batch.len(), "{codec:?}");
            assert_eq!(header.compression(), codec);
            assert_eq!(header.records_count, 50);
            assert_eq!(header.last_offset_delta, 49);
            assert_eq!(header.base_timestamp, 1_700_000_000_000);
            assert_eq!(header.max_timestamp, 1_700_000_000_049);
            records::verify_crc(&batch).unwrap();
            if codec != Compression::None {
                assert!(batch.len() < build_batch(&records, Compression::None).len());
            }
            let decoded = decode_batches(&batch).unwrap();
            assert_eq!(decoded.next_offset, Some(50));
            assert_eq!(decoded.records.len(), 50);
            for (i, (got, want)) in decoded.records.iter().zip(&records).enumerate() {
                assert_eq!(got.offset, i as i64);
                assert_eq!(got.key, want.key);
                assert_eq!(got.value, want.value);
                assert_eq!(got.headers, want.headers);
                assert_eq!(got.timestamp_ms, want.timestamp_ms);
                assert!(!got.log_append_time);
            }
        }
    }

    #[test]
    fn offsets_follow_the_base_offset_and_a_cut_batch_is_skipped() {
        let mut a = build_batch(&sample()[..2], Compression::Lz4);
        records::set_base_offset(&mut a, 100);
        let mut b = build_batch(&sample()[..3], Compression::None);
        records::set_base_offset(&mut b, 102);
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        let all = decode_batches(&buf).unwrap();
        let offsets: Vec<i64> = all.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![100, 101, 102, 103, 104]);
        assert_eq!(all.next_offset, Some(105));
        buf.truncate(a.len() + b.len() - 5);
        let cut = decode_batches(&buf).unwrap();
        assert_eq!(cut.records.len(), 2);
        assert_eq!(cut.next_offset, Some(102));
    }

    #[test]
    fn read_committed_leaves_out_aborted_transactions() {
        let txn = |pid: i64, base: i64, n: usize| {
            let mut builder = RecordBatchBuilder::new(0)
                .producer(pid, 0, 0)
                .transactional();
            for r in &sample()[..n] {
                builder = builder.push(r.key.as_deref(), r.value.as_deref(), 0);
            }
            let mut b = builder.build().to_vec();
            records::set_base_offset(&mut b, base);
            b
        };
        let marker = |pid: i64, base: i64, committed: bool| {
            let m = records::EndTxnMarker {
                committed,
                coordinator_epoch: 0,
            };
            let mut b = records::end_txn_marker_batch(pid, 0, m, 0).to_vec();
            records::set_base_offset(&mut b, base);
            b
        };
        // Producer 7 aborts offsets 0-1 (marker 2), producer 8 commits 3-4 (marker 5), then
        // producer 7 writes again at 6 (a later transaction, not aborted).
        let mut buf = txn(7, 0, 2);
        buf.extend(marker(7, 2, false));
        buf.extend(txn(8, 3, 2));
        buf.extend(marker(8, 5, true));
        buf.extend(txn(7, 6, 1));
        let all = decode_batches(&buf).unwrap();
        assert_eq!(all.records.len(), 5);
        let committed = decode_batches_filtered(&buf, Some(&[(7, 0)])).unwrap();
        let offsets: Vec<i64> = committed.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![3, 4, 6]);
        assert_eq!(committed.next_offset, Some(7));
    }

    #[test]
    fn a_corrupt_batch_is_an_error() {
        let mut batch = build_batch(&sample()[..2], Compression::Gzip);
        let n = batch.len();
        batch[n - 3] ^= 0x55;
        assert!(decode_batches(&batch).is_err());
    }

    #[test]
    fn compression_names() {
        assert_eq!(parse_compression("zstd").unwrap(), Compression::Zstd);
        assert!(parse_compression("brotli").is_err());
    }
}
