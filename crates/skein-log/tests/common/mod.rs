//! Helpers shared by the integration tests: batch builders and whole-log readers.

#![allow(dead_code)]

use skein_log::{Log, LogConfig};
use skein_protocol::records::{compute_crc, BatchHeader, RecordBatchBuilder};

/// A batch of `records` records, timestamps `ts, ts+1, ...`, each value `value_len` bytes.
pub fn batch(records: usize, ts: i64, value_len: usize) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    let mut b = RecordBatchBuilder::new(ts);
    for i in 0..records {
        b = b.push(
            Some(format!("k{i}").as_bytes()),
            Some(&value),
            ts + i as i64,
        );
    }
    b.build().to_vec()
}

/// A batch whose records have exactly the given timestamps.
pub fn batch_with_timestamps(timestamps: &[i64]) -> Vec<u8> {
    let base = timestamps.iter().copied().min().unwrap_or(0);
    let mut b = RecordBatchBuilder::new(base);
    for (i, ts) in timestamps.iter().enumerate() {
        b = b.push(None, Some(format!("value-{i}").as_bytes()), *ts);
    }
    b.build().to_vec()
}

/// Really gzips a batch's records section, fixing the length, attributes and CRC.
pub fn gzip_batch(batch: Vec<u8>) -> Vec<u8> {
    use skein_protocol::records::{Compression, BATCH_HEADER_LEN};
    let body = skein_protocol::compression::compress(Compression::Gzip, &batch[BATCH_HEADER_LEN..]);
    let mut out = batch[..BATCH_HEADER_LEN].to_vec();
    out.extend_from_slice(&body);
    let batch_length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) | 1;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Sets the partition leader epoch (not covered by the CRC).
pub fn with_leader_epoch(mut batch: Vec<u8>, epoch: i32) -> Vec<u8> {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
    batch
}

/// Splits concatenated batches into `(header, bytes)`.
pub fn split(mut buf: &[u8]) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let h = BatchHeader::parse(buf).expect("valid batch");
        out.push((h, buf[..h.total_len()].to_vec()));
        buf = &buf[h.total_len()..];
    }
    out
}

/// Every batch from the log start, read in small fetches.
pub fn read_all(log: &Log) -> Vec<(BatchHeader, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 3000, None).expect("read");
        assert!(!r.records.is_empty(), "empty read at {offset}");
        let batches = split(&r.records);
        offset = batches.last().map(|(h, _)| h.last_offset() + 1).unwrap();
        assert_eq!(offset, r.next_offset);
        out.extend(batches);
    }
    out
}

/// Small segments and dense indexes, so a few hundred batches exercise rolls and lookups.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

pub const NOW: i64 = 1_700_000_000_000;

/// Appends `count` batches of 1..=4 records; returns each stored batch (with its offset).
pub fn fill(log: &mut Log, count: usize, ts: i64) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for i in 0..count {
        let mut b = batch(1 + i % 4, ts + i as i64 * 10, 20 + (i * 7) % 90);
        log.append(&mut b, NOW).expect("append");
        stored.push(b);
    }
    stored
}
