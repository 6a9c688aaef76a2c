//! Walking the records inside an uncompressed v2 batch, for timestamp lookups.
//!
//! Only the fields a timestamp search needs are decoded: each record's length, timestamp delta
//! and offset delta. Keys, values and headers are skipped by length.

use std::ops::ControlFlow;

use crate::batch::{BatchHeader, BATCH_HEADER_LEN};

/// Attribute bits 0..=2: compression codec (0 = none).
const COMPRESSION_MASK: i16 = 0x07;
/// Attribute bit 3: timestamp type (1 = LogAppendTime).
const LOG_APPEND_TIME_FLAG: i16 = 0x08;

pub(crate) fn is_compressed(h: &BatchHeader) -> bool {
    h.attributes & COMPRESSION_MASK != 0
}

fn is_log_append_time(h: &BatchHeader) -> bool {
    h.attributes & LOG_APPEND_TIME_FLAG != 0
}

/// Reads an unsigned LEB128 value of at most `max_bytes` bytes, then zigzag-decodes it.
fn read_zigzag(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<i64, String> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let Some(&b) = buf.get(*pos) else {
            return Err(format!("varint runs past the batch end at byte {}", *pos));
        };
        *pos += 1;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(format!("varint longer than {max_bytes} bytes"))
}

/// Largest records section a timestamp search decompresses; a batch that expands further is
/// reported as corrupt rather than allowed to take unbounded memory.
pub(crate) const DECOMPRESS_LIMIT: usize = 256 * 1024 * 1024;

/// Calls `f(offset, timestamp)` for every record of a batch, in order, until it breaks.
/// `batch` is the whole batch including the log overhead; a compressed batch is decompressed
/// first (Kafka answers timestamp lookups with the exact record, compressed or not).
///
/// With LogAppendTime every record carries the batch's `max_timestamp` (Kafka's rule).
pub(crate) fn for_each_record(
    batch: &[u8],
    header: &BatchHeader,
    mut f: impl FnMut(i64, i64) -> ControlFlow<()>,
) -> Result<(), String> {
    let end = header.total_len().min(batch.len());
    let section = if is_compressed(header) {
        skein_protocol::records::records_section(&batch[..end], DECOMPRESS_LIMIT)
            .map_err(|e| e.to_string())?
    } else {
        std::borrow::Cow::Borrowed(batch.get(BATCH_HEADER_LEN..end).unwrap_or(&[]))
    };
    let body: &[u8] = &section;
    let end = body.len();
    let mut pos = 0;
    let append_time = is_log_append_time(header);
    for _ in 0..header.records_count.max(0) {
        if pos >= end {
            return Err("batch has fewer records than its count says".to_string());
        }
        let len = read_zigzag(body, &mut pos, 5)?;
        let record_start = pos;
        let record_end = usize::try_from(len)
            .ok()
            .and_then(|l| record_start.checked_add(l))
            .filter(|&e| e <= end)
            .ok_or_else(|| format!("record length {len} runs past the batch end"))?;
        let record = &body[..record_end];
        pos += 1; // attributes
        let ts_delta = read_zigzag(record, &mut pos, 10)?;
        let offset_delta = read_zigzag(record, &mut pos, 5)?;
        let timestamp = if append_time {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(ts_delta)
        };
        if f(header.base_offset + offset_delta, timestamp).is_break() {
            return Ok(());
        }
        pos = record_end;
    }
    Ok(())
}

/// The first record with `timestamp >= target` and `offset >= min_offset`, as
/// `(offset, timestamp)`.
pub(crate) fn first_record_at_or_after(
    batch: &[u8],
    header: &BatchHeader,
    target: i64,
    min_offset: i64,
) -> Result<Option<(i64, i64)>, String> {
    let mut found = None;
    for_each_record(batch, header, |offset, ts| {
        if ts >= target && offset >= min_offset {
            found = Some((offset, ts));
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(found)
}

/// The first record carrying the batch's largest timestamp, as `(offset, timestamp)`.
pub(crate) fn first_record_with_max_timestamp(
    batch: &[u8],
    header: &BatchHeader,
) -> Result<Option<(i64, i64)>, String> {
    let mut best: Option<(i64, i64)> = None;
    for_each_record(batch, header, |offset, ts| {
        if best.is_none_or(|(_, b)| ts > b) {
            best = Some((offset, ts));
        }
        ControlFlow::Continue(())
    })?;
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_protocol::records::{set_log_append_time, RecordBatchBuilder};

    fn build(timestamps: &[i64]) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new(timestamps[0]);
        for (i, ts) in timestamps.iter().enumerate() {
            let key = vec![b'k'; i * 50]; // long enough for multi-byte varints
            b = b.push_with_headers(Some(&key), None, *ts, &[("h", Some(b"x"))]);
        }
        let mut v = b.build().to_vec();
        v[0..8].copy_from_slice(&100i64.to_be_bytes());
        v
    }

    #[test]
    fn finds_records_by_timestamp() {
        let batch = build(&[1000, 900, 1500, 1200]);
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(
            first_record_at_or_after(&batch, &h, 0, 0),
            Ok(Some((100, 1000)))
        );
        assert_eq!(
            first_record_at_or_after(&batch, &h, 1001, 0),
            Ok(Some((102, 1500)))
        );
        assert_eq!(
            first_record_at_or_after(&batch, &h, 1000, 101),
            Ok(Some((102, 1500)))
        );
        assert_eq!(first_record_at_or_after(&batch, &h, 1501, 0), Ok(None));
        assert_eq!(
            first_record_with_max_timestamp(&batch, &h),
            Ok(Some((102, 1500)))
        );
    }

    #[test]
    fn log_append_time_applies_to_every_record() {
        let mut batch = build(&[1000, 2000]);
        set_log_append_time(&mut batch, 5000);
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(
            first_record_at_or_after(&batch, &h, 4000, 0),
            Ok(Some((100, 5000)))
        );
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let batch = build(&[1000, 2000, 3000]);
        let h = BatchHeader::parse(&batch).unwrap();
        for cut in BATCH_HEADER_LEN..batch.len() {
            let _ = for_each_record(&batch[..cut], &h, |_, _| ControlFlow::Continue(()));
        }
        let mut bad = batch.clone();
        bad[BATCH_HEADER_LEN] = 0xff; // a length varint that never ends
        bad[BATCH_HEADER_LEN + 1] = 0xff;
        bad[BATCH_HEADER_LEN + 2] = 0xff;
        bad[BATCH_HEADER_LEN + 3] = 0xff;
        bad[BATCH_HEADER_LEN + 4] = 0xff;
        assert!(first_record_at_or_after(&bad, &h, 0, 0).is_err());
    }
}
