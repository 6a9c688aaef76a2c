//! Behaviour of `Log`: append and read, reopening, retention, timestamps, epochs, syncing.

mod common;

use std::fs;
use std::sync::{Arc, Mutex};

use common::*;
use skein_log::{Log, LogConfig, LogError};
use skein_protocol::records::BatchHeader;

fn open(dir: &std::path::Path, config: LogConfig) -> Log {
    Log::open(dir, config, NOW).expect("open").0
}

fn files_with_suffix(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

#[test]
fn new_log_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = Log::open(&dir.path().join("t-0"), LogConfig::default(), NOW).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.high_watermark(), 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(report.segments, 1);
    let r = log.read(0, 1000, None).unwrap();
    assert!(r.records.is_empty());
    assert!(matches!(
        log.read(1, 1000, None),
        Err(LogError::OffsetOutOfRange {
            requested: 1,
            log_start: 0,
            log_end: 0
        })
    ));
    assert!(dir.path().join("t-0/00000000000000000000.log").exists());
}

#[test]
fn append_assigns_offsets_and_reads_round_trip_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let mut expected_offset = 0;
    let mut stored = Vec::new();
    for i in 0..300 {
        let records = 1 + i % 4;
        let mut b = batch(records, NOW + i as i64, 10 + (i * 13) % 150);
        let info = log.append(&mut b, NOW).unwrap();
        assert_eq!(info.base_offset, expected_offset);
        assert_eq!(info.last_offset, expected_offset + records as i64 - 1);
        assert_eq!(info.bytes, b.len());
        assert_eq!(info.batch_count, 1);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset, expected_offset, "offset written in place");
        expected_offset += records as i64;
        stored.push(b);
    }
    assert_eq!(log.log_end_offset(), expected_offset);
    assert!(
        log.segment_count() > 10,
        "segments: {}",
        log.segment_count()
    );
    assert!(log.size_bytes() == stored.iter().map(|b| b.len() as u64).sum::<u64>());
    for seg_base in log.segment_base_offsets() {
        assert!(stored
            .iter()
            .any(|b| BatchHeader::parse(b).unwrap().base_offset == seg_base));
    }

    // Everything, in one read spanning all segments.
    let all = log.read(0, usize::MAX, None).unwrap();
    assert_eq!(&all.records[..], &stored.concat()[..]);
    assert_eq!(all.next_offset, expected_offset);

    // Every offset, including those inside batches, returns its containing batch first.
    for b in &stored {
        let h = BatchHeader::parse(b).unwrap();
        for offset in h.base_offset..=h.last_offset() {
            let r = log.read(offset, 1, None).unwrap();
            assert_eq!(&r.records[..], &b[..], "offset {offset}");
            assert_eq!(r.next_offset, h.last_offset() + 1);
        }
    }
    assert!(log
        .read(expected_offset, 100, None)
        .unwrap()
        .records
        .is_empty());
    assert!(log.read(expected_offset + 1, 100, None).is_err());
}

#[test]
fn max_bytes_takes_first_batch_whole_then_stops_before_exceeding() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 100, NOW);
    for start in [0usize, 7, 33, 60] {
        let start_offset = BatchHeader::parse(&stored[start]).unwrap().base_offset;
        for max_bytes in [0usize, 1, 100, 500, 1000, 5000] {
            let r = log.read(start_offset, max_bytes, None).unwrap();
            let batches = split(&r.records);
            assert!(!batches.is_empty());
            assert_eq!(batches[0].1, stored[start]);
            if batches.len() > 1 {
                assert!(r.records.len() <= max_bytes);
            }
            // Maximal: the next batch would not have fit, or the log ended.
            let taken = batches.len();
            if start + taken < stored.len() {
                assert!(r.records.len() + stored[start + taken].len() > max_bytes);
            }
            let expect: Vec<u8> = stored[start..start + taken].concat();
            assert_eq!(&r.records[..], &expect[..]);
        }
    }
}

#[test]
fn max_offset_exclusive_hides_batches_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 60, NOW);
    let headers: Vec<_> = stored
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap())
        .collect();
    for limit in [0, 1, 5, 40, 77, log.log_end_offset()] {
        let r = log.read(0, usize::MAX, Some(limit)).unwrap();
        let got = split(&r.records);
        let want: Vec<_> = headers.iter().filter(|h| h.last_offset() < limit).collect();
        assert_eq!(got.len(), want.len(), "limit {limit}");
        for ((h, _), w) in got.iter().zip(want) {
            assert_eq!(h.base_offset, w.base_offset);
        }
    }
    // Starting at or above the limit gives nothing, without an error.
    let r = log.read(50, 1000, Some(50)).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.next_offset, 50);
}

#[test]
fn multi_batch_append_is_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let mut buf = [batch(3, NOW, 10), batch(2, NOW, 10), batch(1, NOW, 10)].concat();
    let info = log.append(&mut buf, NOW).unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.batch_count),
        (0, 5, 3)
    );
    let offsets: Vec<_> = split(&buf).iter().map(|(h, _)| h.base_offset).collect();
    assert_eq!(offsets, vec![0, 3, 5]);
    assert_eq!(
        &log.read(4, 1, None).unwrap().records[..],
        &split(&buf)[1].1[..]
    );
}

#[test]
fn invalid_appends_are_refused_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let good = batch(2, NOW, 10);
    let mut cases = vec![
        Vec::new(),
        good[..30].to_vec(),
        good[..good.len() - 1].to_vec(),
        [good.clone(), vec![0; 10]].concat(),
    ];
    let mut bad_magic = good.clone();
    bad_magic[16] = 1;
    cases.push(bad_magic);
    for mut c in cases {
        assert!(matches!(
            log.append(&mut c, NOW),
            Err(LogError::InvalidBatch { .. })
        ));
    }
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn reopen_after_close_keeps_everything_and_reuses_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 150, NOW);
    log.set_high_watermark(100);
    let leo = log.log_end_offset();
    let segments = log.segment_count();
    log.close().unwrap();
    assert!(dir.path().join(".clean-shutdown").exists());

    let (log, report) = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert!(report.clean_shutdown, "{report}");
    assert_eq!(report.recovered_segments, 0);
    assert_eq!(report.rebuilt_indexes, 0);
    assert!(!report.repaired());
    assert_eq!(report.segments, segments);
    assert!(!dir.path().join(".clean-shutdown").exists());
    assert_eq!(log.log_end_offset(), leo);
    assert_eq!(log.high_watermark(), 100);
    assert_eq!(log.recovery_point(), leo);
    let got: Vec<_> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, stored);
}

#[test]
fn appends_continue_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let mut stored = fill(&mut log, 40, NOW);
    log.close().unwrap();
    let mut log = open(dir.path(), small_config());
    stored.extend(fill(&mut log, 40, NOW + 1000));
    log.abandon();
    let log = open(dir.path(), small_config());
    let got: Vec<_> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, stored);
}

#[test]
fn missing_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 120, NOW);
    let segments = log.segment_count();
    log.close().unwrap();
    let original_indexes: Vec<Vec<u8>> = files_with_suffix(dir.path(), ".index")
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert!(original_indexes.iter().any(|b| !b.is_empty()));
    for p in files_with_suffix(dir.path(), ".index")
        .into_iter()
        .chain(files_with_suffix(dir.path(), ".timeindex"))
    {
        fs::remove_file(p).unwrap();
    }
    let (log, report) = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(report.rebuilt_indexes, segments, "{report}");
    assert_eq!(report.truncated_bytes, 0);
    let got: Vec<_> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, stored);
    assert!(log.offset_for_timestamp(NOW + 500).unwrap().is_some());
    // The rebuilt offset indexes are the ones written at append time.
    let rebuilt: Vec<Vec<u8>> = files_with_suffix(dir.path(), ".index")
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    assert_eq!(rebuilt, original_indexes);
    // And the time indexes end with each segment's maximum again: a clean reopen (which
    // trusts them) gives the same timestamps.
    let max = log.max_timestamp().unwrap();
    let at = log.offset_for_timestamp(NOW + 777).unwrap();
    log.close().unwrap();
    let (log, report) = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(report.rebuilt_indexes, 0);
    assert_eq!(log.max_timestamp().unwrap(), max);
    assert_eq!(log.offset_for_timestamp(NOW + 777).unwrap(), at);
}

#[test]
fn stale_index_pointing_past_the_log_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 100,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone());
    let stored = fill(&mut log, 40, NOW);
    log.close().unwrap();
    let log_file = dir.path().join("00000000000000000000.log");
    // Cut the file at a batch boundary halfway: the index still claims entries beyond it.
    let keep: usize = stored[..20].iter().map(Vec::len).sum();
    fs::OpenOptions::new()
        .write(true)
        .open(&log_file)
        .unwrap()
        .set_len(keep as u64)
        .unwrap();
    let (log, report) = Log::open(dir.path(), config, NOW).unwrap();
    assert_eq!(report.rebuilt_indexes, 1, "{report}");
    let leo = BatchHeader::parse(&stored[20]).unwrap().base_offset;
    assert_eq!(log.log_end_offset(), leo);
    let got: Vec<_> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, stored[..20].to_vec());
}

/// Appends, crashes, damages the last batch with `damage`, reopens.
fn torn_tail_case(damage: impl FnOnce(&std::path::Path, u64, usize)) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let stored = fill(&mut log, 30, NOW);
    let last = stored.last().unwrap();
    let last_start: usize = stored[..stored.len() - 1].iter().map(Vec::len).sum();
    log.abandon();
    let file = dir.path().join("00000000000000000000.log");
    damage(&file, last_start as u64, last.len());
    let (log, report) = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.recovered_segments, 1);
    assert!(report.truncated_bytes > 0, "{report}");
    assert!(!report.problems.is_empty());
    let expected_leo = BatchHeader::parse(last).unwrap().base_offset;
    assert_eq!(log.log_end_offset(), expected_leo);
    assert_eq!(fs::metadata(&file).unwrap().len(), last_start as u64);
    let got: Vec<_> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, stored[..stored.len() - 1].to_vec());
}

#[test]
fn torn_tail_is_truncated_at_every_cut_inside_the_last_batch() {
    for cut in [1usize, 11, 12, 30, 60, 61, 62] {
        torn_tail_case(|file, start, len| {
            let cut = cut.min(len - 1);
            let f = fs::OpenOptions::new().write(true).open(file).unwrap();
            f.set_len(start + cut as u64).unwrap();
        });
    }
}

#[test]
fn crc_mismatch_in_last_batch_is_truncated() {
    torn_tail_case(|file, start, len| {
        let mut bytes = fs::read(file).unwrap();
        let at = start as usize + len - 3;
        bytes[at] ^= 0x40;
        fs::write(file, bytes).unwrap();
    });
}

#[test]
fn garbage_after_the_last_batch_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let stored = fill(&mut log, 5, NOW);
    log.abandon();
    let file = dir.path().join("00000000000000000000.log");
    let mut bytes = fs::read(&file).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&file, bytes).unwrap();
    let (log, report) = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, 4096);
    assert_eq!(read_all(&log).len(), stored.len());
}

#[test]
fn corruption_in_an_early_segment_drops_later_segments_when_unflushed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    fill(&mut log, 100, NOW);
    let bases = log.segment_base_offsets();
    assert!(bases.len() > 4);
    log.abandon();
    // Without a flushed recovery point past it, segment 1 is recovered like the tail.
    fs::write(
        dir.path().join("recovery-point-offset-checkpoint"),
        "0\n0\n",
    )
    .unwrap();
    let file = dir.path().join(format!("{:020}.log", bases[1]));
    let mut bytes = fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    fs::write(&file, bytes).unwrap();
    let (log, report) = Log::open(dir.path(), small_config(), NOW).unwrap();
    assert_eq!(report.deleted_segments, bases.len() - 2, "{report}");
    assert_eq!(log.segment_count(), 2);
    assert!(log.log_end_offset() < bases[2]);
    assert!(!dir.path().join(format!("{:020}.log", bases[3])).exists());
}

#[test]
fn flushed_segments_are_not_rescanned() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    fill(&mut log, 100, NOW);
    let rp = log.flush().unwrap();
    assert_eq!(rp, log.log_end_offset());
    assert_eq!(log.recovery_point(), rp);
    fill(&mut log, 3, NOW);
    log.abandon();
    let (log, report) = Log::open(dir.path(), small_config(), NOW).unwrap();
    // Only the segment the recovery point falls in (if the new batches rolled) and the last.
    assert!(report.recovered_segments <= 2, "{report}");
    assert!(report.recovered_segments < report.segments, "{report}");
    assert_eq!(read_all(&log).len(), 103);
}

#[test]
fn rolls_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    log.append(&mut batch(1, NOW, 10), NOW).unwrap();
    log.append(&mut batch(1, NOW, 10), NOW + 1000).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&mut batch(1, NOW, 10), NOW + 1001).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
}

#[test]
fn rolls_when_the_index_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 1,
        segment_index_bytes: 8 * 4,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config);
    for _ in 0..20 {
        log.append(&mut batch(1, NOW, 10), NOW).unwrap();
    }
    assert!(log.segment_count() >= 4, "{}", log.segment_count());
}

#[test]
fn retention_by_time_deletes_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 10_000,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    fill(&mut log, 50, NOW - 100_000);
    fill(&mut log, 50, NOW);
    let before = log.segment_count();
    let report = log.apply_retention(NOW + 1000).unwrap();
    assert!(report.deleted_segments > 0);
    assert_eq!(log.segment_count(), before - report.deleted_segments);
    assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
    assert_eq!(report.log_start_offset, log.log_start_offset());
    // Nothing left that is entirely older than retention, except possibly a mixed segment.
    assert!(log.offset_for_timestamp(NOW - 100_000).unwrap().unwrap().0 >= log.log_start_offset());
    assert!(matches!(
        log.read(0, 100, None),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Everything expired: the active segment stays.
    let report = log.apply_retention(NOW + 1_000_000).unwrap();
    assert!(report.deleted_segments > 0);
    assert_eq!(log.segment_count(), 1);
    assert!(log.log_end_offset() > log.log_start_offset());
    // Reopen: the log start survives.
    let start = log.log_start_offset();
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), start);
}

#[test]
fn retention_by_bytes_keeps_at_least_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: 5000,
        ..small_config()
    };
    let mut log = open(dir.path(), config);
    fill(&mut log, 200, NOW);
    let report = log.apply_retention(NOW).unwrap();
    assert!(report.deleted_segments > 0);
    assert!(log.size_bytes() >= 5000, "{}", log.size_bytes());
    // Dropping the oldest remaining segment would go below the limit.
    let report = log.apply_retention(NOW).unwrap();
    assert_eq!(report.deleted_segments, 0);
    assert!(report.deleted_bytes == 0);
}

#[test]
fn retention_leaves_a_compact_only_log_whole() {
    // A compacted log (such as __consumer_offsets) may hold the only copy of a live key in
    // its oldest segment: neither time nor size retention may delete it.
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_ms: 10_000,
        retention_bytes: 1000,
        delete_retention: false,
        ..small_config()
    };
    let mut log = open(dir.path(), config.clone());
    fill(&mut log, 50, NOW - 100_000);
    fill(&mut log, 50, NOW);
    let segments = log.segment_count();
    assert!(segments > 2, "{segments}");
    let report = log.apply_retention(NOW + 1_000_000).unwrap();
    assert_eq!(report.deleted_segments, 0);
    assert_eq!(report.log_start_offset, 0);
    assert_eq!((log.segment_count(), log.log_start_offset()), (segments, 0));
    // The same log under `compact,delete` is trimmed as any other.
    log.update_config(LogConfig {
        delete_retention: true,
        ..config
    });
    let report = log.apply_retention(NOW + 1_000_000).unwrap();
    assert!(report.deleted_segments > 0);
    assert!(log.log_start_offset() > 0);
}

#[test]
fn delete_records_raises_log_start_and_persists_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 100, NOW);
    let segments = log.segment_count();
    let target = 123;
    assert_eq!(log.delete_records_before(target).unwrap(), target);
    assert!(log.segment_count() < segments);
    assert!(log.segment_base_offsets()[0] <= target);
    assert_eq!(log.log_start_offset(), target);
    assert!(matches!(
        log.read(target - 1, 100, None),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    let r = log.read(target, 1, None).unwrap();
    let (h, _) = &split(&r.records)[0];
    assert!(h.base_offset <= target && target <= h.last_offset());
    // Lower or equal is a no-op; beyond the end is an error.
    assert_eq!(log.delete_records_before(5).unwrap(), target);
    assert!(log.delete_records_before(log.log_end_offset() + 1).is_err());
    let _ = stored;
    log.abandon();
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_start_offset(), target);
}

#[test]
fn offset_for_timestamp_finds_the_exact_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    // Timestamps rise by 10 per batch, records inside a batch by 1.
    let mut ts_of = Vec::new(); // (offset, timestamp)
    for i in 0..200i64 {
        let ts = [NOW + i * 10, NOW + i * 10 + 3, NOW + i * 10 + 1];
        let mut b = batch_with_timestamps(&ts);
        let info = log.append(&mut b, NOW).unwrap();
        for (j, t) in ts.iter().enumerate() {
            ts_of.push((info.base_offset + j as i64, *t));
        }
    }
    assert!(log.segment_count() > 5);
    for target in [
        NOW - 5,
        NOW,
        NOW + 2,
        NOW + 4,
        NOW + 555,
        NOW + 1993,
        NOW + 1994,
    ] {
        let want = ts_of.iter().find(|(_, t)| *t >= target).copied();
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            want,
            "target {target}"
        );
    }
    assert_eq!(log.offset_for_timestamp(NOW + 1_000_000).unwrap(), None);
    // After reopening (timestamps come from the time indexes), the same answers.
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    for target in [NOW + 2, NOW + 777, NOW + 1990] {
        let want = ts_of.iter().find(|(_, t)| *t >= target).copied();
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            want,
            "target {target}"
        );
    }
    assert_eq!(log.max_timestamp().unwrap(), Some((598, NOW + 1993)));
}

#[test]
fn offset_for_timestamp_looks_inside_compressed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    log.append(&mut batch_with_timestamps(&[100, 110]), NOW)
        .unwrap();
    let mut compressed = gzip_batch(batch_with_timestamps(&[200, 230, 220]));
    log.append(&mut compressed, NOW).unwrap();
    assert_eq!(log.offset_for_timestamp(105).unwrap(), Some((1, 110)));
    assert_eq!(log.offset_for_timestamp(205).unwrap(), Some((3, 230)));
    assert_eq!(log.offset_for_timestamp(221).unwrap(), Some((3, 230)));
    assert_eq!(log.max_timestamp().unwrap(), Some((3, 230)));
}

#[test]
fn max_timestamp_is_the_first_record_with_the_largest_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    assert_eq!(log.max_timestamp().unwrap(), None);
    log.append(&mut batch_with_timestamps(&[10, 50, 20]), NOW)
        .unwrap();
    log.append(&mut batch_with_timestamps(&[30, 70, 70, 10]), NOW)
        .unwrap();
    log.append(&mut batch_with_timestamps(&[60]), NOW).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((4, 70)));
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.max_timestamp().unwrap(), Some((4, 70)));
}

#[test]
fn leader_epochs_persist_and_follow_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.end_offset_for_epoch(0), None);
    log.assign_epoch(1, 0).unwrap();
    fill(&mut log, 30, NOW);
    let epoch3_start = log.log_end_offset();
    log.assign_epoch(3, epoch3_start).unwrap();
    log.assign_epoch(3, epoch3_start + 5).unwrap(); // unchanged epoch: no-op
    fill(&mut log, 30, NOW);
    // A batch stamped with a newer epoch starts it.
    let epoch5_start = log.log_end_offset();
    log.append(&mut with_leader_epoch(batch(2, NOW, 5), 5), NOW)
        .unwrap();
    assert_eq!(
        log.leader_epochs(),
        &[(1, 0), (3, epoch3_start), (5, epoch5_start)]
    );
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(log.end_offset_for_epoch(1), Some((1, epoch3_start)));
    assert_eq!(log.end_offset_for_epoch(2), Some((1, epoch3_start)));
    assert_eq!(log.end_offset_for_epoch(5), Some((5, log.log_end_offset())));
    assert_eq!(log.end_offset_for_epoch(6), None);

    log.abandon();
    let mut log = open(dir.path(), small_config());
    assert_eq!(
        log.leader_epochs(),
        &[(1, 0), (3, epoch3_start), (5, epoch5_start)]
    );

    log.truncate_to(epoch5_start).unwrap();
    assert_eq!(log.leader_epochs(), &[(1, 0), (3, epoch3_start)]);
    log.delete_records_before(10).unwrap();
    assert_eq!(log.leader_epochs(), &[(1, 10), (3, epoch3_start)]);
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.leader_epochs(), &[(1, 10), (3, epoch3_start)]);
}

#[test]
fn high_watermark_is_checkpointed_and_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let stored = fill(&mut log, 10, NOW);
    log.set_high_watermark(1_000_000);
    assert_eq!(log.high_watermark(), log.log_end_offset());
    log.set_high_watermark(7);
    log.flush().unwrap();
    log.abandon();
    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!(log.high_watermark(), 7);
    log.set_high_watermark(log.log_end_offset());
    log.close().unwrap();
    // Lose the last batch: the checkpointed high watermark is past the end and gets clamped.
    let file = dir.path().join("00000000000000000000.log");
    let len = fs::metadata(&file).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let log = open(dir.path(), LogConfig::default());
    let last_base = BatchHeader::parse(stored.last().unwrap())
        .unwrap()
        .base_offset;
    assert_eq!(log.log_end_offset(), last_base);
    assert_eq!(log.high_watermark(), last_base);
}

#[test]
fn truncate_to_removes_the_tail_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 100, NOW);
    log.set_high_watermark(log.log_end_offset());
    let cut = 8; // a batch boundary in the middle of the log
    let target = BatchHeader::parse(&stored[cut * 5]).unwrap().base_offset;
    log.truncate_to(target).unwrap();
    assert_eq!(log.log_end_offset(), target);
    assert_eq!(log.high_watermark(), target);
    assert!(log.recovery_point() <= target);
    let got: Vec<_> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(got, stored[..cut * 5].to_vec());
    // Appends continue from the new end and survive a crash.
    let info = log.append(&mut batch(2, NOW, 5), NOW).unwrap();
    assert_eq!(info.base_offset, target);
    log.abandon();
    let log = open(dir.path(), small_config());
    assert_eq!(log.log_end_offset(), target + 2);

    // Inside a batch: the whole batch goes.
    let mut log = log;
    log.append(&mut batch(4, NOW, 5), NOW).unwrap();
    log.truncate_to(target + 4).unwrap();
    assert_eq!(log.log_end_offset(), target + 2);

    // Below the log start: the log restarts there, empty.
    log.delete_records_before(50).unwrap();
    log.truncate_to(20).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn scan_batches_visits_headers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 80, NOW);
    let mut seen = Vec::new();
    log.scan_batches(100, |h| seen.push(h.base_offset)).unwrap();
    let want: Vec<_> = stored
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap())
        .filter(|h| h.last_offset() >= 100)
        .map(|h| h.base_offset)
        .collect();
    assert_eq!(seen, want);
}

#[test]
fn sync_handle_works_from_another_thread_while_appending() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(open(dir.path(), small_config())));
    let syncer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut last = 0;
            for _ in 0..200 {
                let handle = log.lock().unwrap().sync_handle();
                let durable = handle.sync().unwrap();
                assert!(durable >= last);
                last = durable;
                let mut guard = log.lock().unwrap();
                guard.mark_durable(durable);
                assert!(guard.recovery_point() >= durable);
                assert!(guard.recovery_point() <= guard.log_end_offset());
            }
            last
        })
    };
    for i in 0..300 {
        let mut b = batch(2, NOW + i, 50);
        log.lock().unwrap().append(&mut b, NOW).unwrap();
    }
    let last = syncer.join().unwrap();
    let mut log = Arc::try_unwrap(log).unwrap().into_inner().unwrap();
    assert!(last <= log.log_end_offset());
    let handle = log.sync_handle();
    assert_eq!(handle.sync().unwrap(), log.log_end_offset());
    log.mark_durable(handle.end_offset());
    assert_eq!(log.recovery_point(), log.log_end_offset());
    log.close().unwrap();
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-3");
    let mut log = open(&path, LogConfig::default());
    fill(&mut log, 5, NOW);
    log.delete().unwrap();
    assert!(!path.exists());
}

#[test]
fn leftover_and_orphan_files_are_cleaned_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    fill(&mut log, 5, NOW);
    log.close().unwrap();
    fs::write(dir.path().join("00000000000000000999.index"), b"12345678").unwrap();
    fs::write(dir.path().join("high-watermark.tmp"), b"junk").unwrap();
    let (log, report) = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(report.segments, 1);
    assert!(!dir.path().join("00000000000000000999.index").exists());
    assert!(!dir.path().join("high-watermark.tmp").exists());
    assert_eq!(log.log_end_offset(), 1 + 2 + 3 + 4 + 1);
}

#[test]
fn bad_checkpoint_is_ignored_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    fill(&mut log, 5, NOW);
    log.close().unwrap();
    fs::write(dir.path().join("high-watermark"), b"garbage").unwrap();
    let (log, report) = Log::open(dir.path(), LogConfig::default(), NOW).unwrap();
    assert_eq!(log.high_watermark(), 0);
    assert!(
        report.problems.iter().any(|p| p.contains("high-watermark")),
        "{report}"
    );
}

#[test]
fn invalid_batch_below_the_recovery_point_is_an_error_not_a_silent_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let stored = fill(&mut log, 60, NOW);
    let bases = log.segment_base_offsets();
    log.close().unwrap();
    // Segment 1 loses its index and the magic byte of its second batch.
    let first_in_seg1 = stored
        .iter()
        .position(|b| BatchHeader::parse(b).unwrap().base_offset == bases[1])
        .unwrap();
    let second_pos = stored[first_in_seg1].len();
    let path = dir.path().join(format!("{:020}.log", bases[1]));
    let mut bytes = fs::read(&path).unwrap();
    bytes[second_pos + 16] = 7;
    fs::write(&path, bytes).unwrap();
    fs::remove_file(dir.path().join(format!("{:020}.index", bases[1]))).unwrap();
    match Log::open(dir.path(), small_config(), NOW) {
        Err(LogError::Corrupt {
            path: p, position, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(position, second_pos as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn log_append_time_batches_are_found_by_their_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let mut b = batch_with_timestamps(&[10, 20, 30]);
    skein_protocol::records::set_log_append_time(&mut b, NOW);
    log.append(&mut b, NOW).unwrap();
    assert_eq!(log.offset_for_timestamp(25).unwrap(), Some((0, NOW)));
    assert_eq!(log.max_timestamp().unwrap(), Some((0, NOW)));
}

fn index_len(dir: &std::path::Path, base: i64, suffix: &str) -> u64 {
    fs::metadata(dir.join(format!("{base:020}.{suffix}")))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn index_shorter_than_the_log_after_a_crash_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 200,
        ..LogConfig::default()
    };
    let mut log = open(dir.path(), config.clone());
    let mut stored = fill(&mut log, 40, NOW);
    // Part of the index reaches the file, then more is appended and synced, then a crash.
    log.checkpoint().unwrap();
    let partial = index_len(dir.path(), 0, "index");
    stored.extend(fill(&mut log, 80, NOW + 10_000));
    // Synced through a handle (the group-commit path), which leaves the index files alone.
    let handle = log.sync_handle();
    log.mark_durable(handle.sync().unwrap());
    let active = *log.segment_base_offsets().last().unwrap();
    assert_eq!(active, 0);
    assert_eq!(index_len(dir.path(), 0, "index"), partial);
    log.abandon();

    let (log, report) = Log::open(dir.path(), config.clone(), NOW).unwrap();
    assert!(!report.clean_shutdown);
    let all: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(all, stored);
    for b in &stored {
        let h = BatchHeader::parse(b).unwrap();
        assert_eq!(
            log.offset_for_timestamp(h.base_timestamp).unwrap(),
            Some((h.base_offset, h.base_timestamp))
        );
    }
    // The index was rebuilt over the whole log.
    assert!(index_len(dir.path(), 0, "index") > partial);
    assert!(index_len(dir.path(), 0, "timeindex") > 0);
    log.close().unwrap();
    let (log, report) = Log::open(dir.path(), config, NOW).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(report.rebuilt_indexes, 0);
    let all: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(all, stored);
}

#[test]
fn crash_before_any_index_write_and_index_ahead_of_a_truncated_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    let mut stored = fill(&mut log, 100, NOW);
    log.flush().unwrap();
    log.close().unwrap();
    // Truncate (replication) then crash: the index file on disk may describe the cut tail.
    let mut log = open(dir.path(), small_config());
    let keep = 70;
    let cut = BatchHeader::parse(&stored[keep]).unwrap().base_offset;
    log.truncate_to(cut).unwrap();
    stored.truncate(keep);
    let more = fill(&mut log, 10, NOW + 50_000);
    stored.extend(more);
    log.abandon();
    let (mut log, _) = Log::open(dir.path(), small_config(), NOW).unwrap();
    let all: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(all, stored);
    for b in stored.iter().step_by(3) {
        let h = BatchHeader::parse(b).unwrap();
        assert_eq!(
            log.offset_for_timestamp(h.base_timestamp).unwrap(),
            Some((h.base_offset, h.base_timestamp))
        );
    }
    // A brand-new log abandoned before anything reached an index file.
    let fresh = dir.path().join("fresh");
    let mut f = open(&fresh, small_config());
    let s = fill(&mut f, 5, NOW);
    f.abandon();
    let f = open(&fresh, small_config());
    let all: Vec<Vec<u8>> = read_all(&f).into_iter().map(|(_, b)| b).collect();
    assert_eq!(all, s);
    log.append(&mut batch(1, NOW, 10), NOW).unwrap();
}

#[test]
fn index_ahead_of_a_cut_log_is_rebuilt_on_open() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 64 * 1024,
            index_interval_bytes: 200,
            ..LogConfig::default()
        };
        let mut log = open(dir.path(), config.clone());
        let mut stored = fill(&mut log, 60, NOW);
        log.close().unwrap();
        // The log file loses its last 20 batches; its index files still describe them.
        let keep = 40;
        let keep_bytes: usize = stored[..keep].iter().map(Vec::len).sum();
        stored.truncate(keep);
        fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("00000000000000000000.log"))
            .unwrap()
            .set_len(keep_bytes as u64)
            .unwrap();
        if !clean {
            fs::remove_file(dir.path().join(".clean-shutdown")).unwrap();
        }
        let (mut log, _) = Log::open(dir.path(), config.clone(), NOW).unwrap();
        let leo = BatchHeader::parse(stored.last().unwrap())
            .unwrap()
            .last_offset()
            + 1;
        assert_eq!(log.log_end_offset(), leo);
        let all: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
        assert_eq!(all, stored);
        for b in &stored {
            let h = BatchHeader::parse(b).unwrap();
            assert_eq!(
                log.offset_for_timestamp(h.base_timestamp).unwrap(),
                Some((h.base_offset, h.base_timestamp))
            );
        }
        assert_eq!(log.offset_for_timestamp(NOW + 1_000_000).unwrap(), None);
        stored.extend(fill(&mut log, 5, NOW + 100_000));
        log.close().unwrap();
        let log = open(dir.path(), config);
        let all: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
        assert_eq!(all, stored);
    }
}

#[test]
fn new_log_defers_checkpoints_until_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    let mut log = open(&path, small_config());
    log.checkpoint().unwrap();
    assert!(!path.join("recovery-point-offset-checkpoint").exists());
    log.set_high_watermark(0);
    log.abandon();
    // Reopened without checkpoints: still an empty log at offset 0.
    let (mut log, report) = Log::open(&path, small_config(), NOW).unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(log.log_end_offset(), 0);
    let stored = fill(&mut log, 50, NOW);
    log.set_high_watermark(20);
    log.flush().unwrap();
    assert!(path.join("recovery-point-offset-checkpoint").exists());
    log.abandon();
    let log = open(&path, small_config());
    assert_eq!(log.high_watermark(), 20);
    let all: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
    assert_eq!(all, stored);
}

#[test]
fn snapshots_keep_the_newest_two_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    assert_eq!((log.snapshot_offset(), log.read_snapshot()), (None, None));
    for i in 0..4u8 {
        fill(&mut log, 5, NOW);
        assert_eq!(log.write_snapshot(&[i; 3]).unwrap(), log.log_end_offset());
    }
    let end = log.log_end_offset();
    assert_eq!(files_with_suffix(dir.path(), ".snapshot").len(), 2);
    assert_eq!(log.read_snapshot(), Some((end, vec![3; 3])));
    log.close().unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.snapshot_offset(), Some(end));
    assert_eq!(log.read_snapshot(), Some((end, vec![3; 3])));
}

#[test]
fn a_damaged_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    fill(&mut log, 5, NOW);
    let older = log.write_snapshot(b"older").unwrap();
    fill(&mut log, 5, NOW);
    log.write_snapshot(b"newer").unwrap();
    let newest = files_with_suffix(dir.path(), ".snapshot").pop().unwrap();
    let mut content = fs::read(&newest).unwrap();
    let last = content.len() - 1;
    content[last] ^= 0xff;
    fs::write(&newest, content).unwrap();
    assert_eq!(log.read_snapshot(), Some((older, b"older".to_vec())));
}

#[test]
fn snapshots_beyond_the_log_end_are_deleted_by_truncation_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_config());
    fill(&mut log, 10, NOW);
    let first = log.write_snapshot(b"first").unwrap();
    fill(&mut log, 10, NOW);
    let second = log.write_snapshot(b"second").unwrap();
    // Truncation below a snapshot removes it: the records it describes are gone, and new ones
    // would otherwise reach its offset and make it look valid.
    log.truncate_to(second - 1).unwrap();
    assert_eq!(log.snapshot_offset(), Some(first));
    assert_eq!(files_with_suffix(dir.path(), ".snapshot").len(), 1);
    fill(&mut log, 10, NOW);
    assert!(log.log_end_offset() > second);
    assert_eq!(log.read_snapshot(), Some((first, b"first".to_vec())));
    // A snapshot file beyond the log end found at open (the tail was cut by recovery) is
    // deleted too.
    log.close().unwrap();
    fs::write(dir.path().join(format!("{:020}.snapshot", 999)), b"stale").unwrap();
    let log = open(dir.path(), small_config());
    assert_eq!(log.snapshot_offset(), Some(first));
    assert_eq!(files_with_suffix(dir.path(), ".snapshot").len(), 1);
}

#[test]
fn replicated_appends_keep_the_leaders_offsets_and_epochs() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = open(leader_dir.path(), small_config());
    let mut follower = open(follower_dir.path(), small_config());
    // The leader writes three epochs' worth of batches.
    for (epoch, n) in [(1, 3), (4, 2), (7, 4)] {
        for _ in 0..n {
            let mut b = with_leader_epoch(batch(3, 1_000, 20), epoch);
            leader.append(&mut b, 1_000).unwrap();
        }
    }
    // The follower copies them in two reads, offsets as the leader assigned them.
    let mut next = 0;
    while next < leader.log_end_offset() {
        let read = leader.read(next, 200, None).unwrap();
        let mut bytes = read.records.to_vec();
        let info = follower.append_replicated(&mut bytes, 1_000).unwrap();
        assert_eq!(info.base_offset, next);
        next = info.last_offset + 1;
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.leader_epochs(), leader.leader_epochs());
    // Overlapping or backwards batches are refused and change nothing.
    let mut again = leader.read(3, 1, None).unwrap().records.to_vec();
    let before = follower.log_end_offset();
    assert!(matches!(
        follower.append_replicated(&mut again, 1_000),
        Err(LogError::InvalidBatch { .. })
    ));
    assert_eq!(follower.log_end_offset(), before);
    // A gap (as compaction leaves) is accepted: the next batch starts later.
    let mut later = batch(2, 1_000, 5);
    skein_protocol::records::set_base_offset(&mut later, before + 10);
    let info = follower.append_replicated(&mut later, 1_000).unwrap();
    assert_eq!(info.base_offset, before + 10);
    assert_eq!(follower.log_end_offset(), before + 12);
}
