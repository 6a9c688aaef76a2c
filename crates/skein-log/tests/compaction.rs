//! Log compaction (`skein_log::cleaner`): what a pass keeps, tombstones, bounded maps,
//! producer and transactional batches, offset gaps on read and reopen, and a crash before
//! every file operation of a swap.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use skein_log::cleaner::{self, CleanStats, OffsetMap};
use skein_log::{AbortedTxn, CleanParams, CleanerCheckpoint, Log, LogConfig};
use skein_protocol::records::{self, compute_crc, RecordBatchBuilder};

use common::read_all;

const NOW: i64 = 1_000_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 2_000,
        index_interval_bytes: 200,
        delete_retention: false,
        ..LogConfig::default()
    }
}

fn params(now_ms: i64) -> CleanParams {
    CleanParams {
        min_cleanable_dirty_ratio: 0.0,
        min_compaction_lag_ms: 0,
        max_compaction_lag_ms: i64::MAX,
        delete_retention_ms: 1_000,
        now_ms,
    }
}

fn keyed(pairs: &[(&str, Option<&str>)], ts: i64) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new(ts);
    for (k, v) in pairs {
        b = b.push(Some(k.as_bytes()), v.map(str::as_bytes), ts);
    }
    b.build().to_vec()
}

fn set_attributes(mut batch: Vec<u8>, bits: i16, producer: Option<(i64, i32)>) -> Vec<u8> {
    let a = i16::from_be_bytes([batch[21], batch[22]]) | bits;
    batch[21..23].copy_from_slice(&a.to_be_bytes());
    if let Some((pid, seq)) = producer {
        batch[43..51].copy_from_slice(&pid.to_be_bytes());
        batch[51..53].copy_from_slice(&0i16.to_be_bytes());
        batch[53..57].copy_from_slice(&seq.to_be_bytes());
    }
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Every record of the log from its start: offset → (key, value).
fn records_of(log: &Log) -> BTreeMap<i64, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    for (h, batch) in read_all(log) {
        let body = records::records_section(&batch, 1 << 30).expect("records");
        for r in records::decode_record_section(&body, h.records_count).expect("decode") {
            let key = String::from_utf8_lossy(r.key.unwrap_or_default()).to_string();
            let value = r.value.map(|v| String::from_utf8_lossy(v).to_string());
            out.insert(h.base_offset + i64::from(r.offset_delta), (key, value));
        }
    }
    out
}

/// The latest record of each key: key → (offset, value).
fn latest(
    records: &BTreeMap<i64, (String, Option<String>)>,
) -> BTreeMap<String, (i64, Option<String>)> {
    let mut out = BTreeMap::new();
    for (o, (k, v)) in records {
        out.insert(k.clone(), (*o, v.clone()));
    }
    out
}

/// 40 batches of 5 updates over 10 keys, across many segments, all below the high watermark
/// except the active segment.
fn fill(log: &mut Log) {
    for round in 0..40 {
        let pairs: Vec<(String, String)> = (0..5)
            .map(|i| {
                (
                    format!("k{}", (round * 5 + i) % 10),
                    format!("v{round}-{i}"),
                )
            })
            .collect();
        let refs: Vec<(&str, Option<&str>)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())))
            .collect();
        log.append(&mut keyed(&refs, NOW - 10_000 + round), NOW)
            .unwrap();
    }
    log.roll().unwrap();
    log.append(&mut keyed(&[("tail", Some("t"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
}

/// One pass with the cleaner checkpoint of `dir`, installing directly; writes the checkpoint.
fn pass(log: &mut Log, map_capacity: usize, now_ms: i64) -> CleanStats {
    let dir = log.dir().to_path_buf();
    let checkpoint = CleanerCheckpoint::read(&dir);
    let p = params(now_ms);
    let cleanable = log.cleanable(&checkpoint, &p);
    let job = log.clean_job(&cleanable);
    let mut map = OffsetMap::with_capacity(map_capacity);
    let stats = cleaner::clean(&job, &mut map, &p, &mut |_| {}, &mut |g| {
        log.install_cleaned(g, now_ms)
    })
    .unwrap();
    CleanerCheckpoint {
        cleaned_to: stats.cleaned_to,
        delete_horizon: stats.delete_horizon,
    }
    .write(&dir)
    .unwrap();
    stats
}

fn open(dir: &Path) -> Log {
    let (log, report) = Log::open(dir, config(), NOW).unwrap();
    assert_eq!(report.truncated_bytes, 0, "{report}");
    assert_eq!(report.deleted_segments, 0, "{report}");
    log
}

#[test]
fn keeps_the_latest_record_of_each_key_at_its_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    fill(&mut log);
    let before = records_of(&log);
    let leo = log.log_end_offset();
    let segments_before = log.segment_count();
    let stats = pass(&mut log, 1000, NOW);
    assert!(stats.groups_swapped >= 1, "{stats:?}");
    assert_eq!(stats.records_removed, 190, "{stats:?}");
    let after = records_of(&log);
    assert_eq!(after.len(), 11, "{after:?}");
    assert_eq!(latest(&after), latest(&before));
    assert_eq!(log.log_end_offset(), leo);
    // Every offset reads, gaps included: the read lands on the next kept batch.
    for offset in log.log_start_offset()..leo {
        let r = log.read(offset, 100_000, None).unwrap();
        assert!(!r.records.is_empty(), "nothing read at {offset}");
        let ranges = log.read_ranges(offset, 100_000, None).unwrap();
        assert!(ranges.bytes > 0, "no ranges at {offset}");
    }
    // A second pass has nothing new to remove, and groups the now small segments into one
    // (groups are formed from the sizes before cleaning, as in Kafka).
    let again = pass(&mut log, 1000, NOW);
    assert_eq!(again.records_removed, 0);
    assert_eq!(records_of(&log), after);
    assert_eq!(log.segment_count(), 2, "was {segments_before}");
    // An unfinished cleaned copy left by a crash is removed at open.
    std::fs::write(log.dir().join("00000000000000000000.log.cleaned"), b"junk").unwrap();
    // Reopened cleanly and after a crash: no truncation, same records.
    log.close().unwrap();
    let log = open(tmp.path());
    assert_eq!(records_of(&log), after);
    log.abandon();
    let log = open(tmp.path());
    assert_eq!(records_of(&log), after);
    // Without a recovery point every segment is scanned (CRC, offsets): the gaps are not
    // damage, nothing is truncated.
    log.abandon();
    std::fs::remove_file(tmp.path().join("recovery-point-offset-checkpoint")).unwrap();
    let (mut log, report) = Log::open(tmp.path(), config(), NOW).unwrap();
    assert!(report.recovered_segments >= 2, "{report}");
    assert_eq!(
        (report.truncated_bytes, report.deleted_segments),
        (0, 0),
        "{report}"
    );
    assert_eq!(records_of(&log), after);
    // Appends continue at the same log end.
    let info = log
        .append(&mut keyed(&[("k1", Some("new"))], NOW), NOW)
        .unwrap();
    assert_eq!(info.base_offset, leo);
}

#[test]
fn a_full_map_cleans_up_to_where_it_got_and_later_passes_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    fill(&mut log);
    let want = latest(&records_of(&log));
    let first_uncleanable = log.active_segment_base_offset();
    let mut passes = 0;
    loop {
        let stats = pass(&mut log, 3, NOW);
        passes += 1;
        assert!(stats.cleaned_to > 0);
        if stats.cleaned_to >= first_uncleanable {
            break;
        }
        assert!(passes < 200, "no progress: {stats:?}");
    }
    assert!(
        passes > 1,
        "a map of 3 keys cannot cover 10 keys in one pass"
    );
    // The last pass mapped only the last keys; one more full pass removes the rest.
    CleanerCheckpoint::default().write(log.dir()).unwrap();
    pass(&mut log, 1000, NOW);
    assert_eq!(latest(&records_of(&log)), want);
    assert_eq!(records_of(&log).len(), 11);
}

#[test]
fn tombstones_stay_for_delete_retention_then_go() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    log.append(&mut keyed(&[("a", Some("1")), ("b", Some("1"))], NOW), NOW)
        .unwrap();
    log.append(&mut keyed(&[("a", None)], NOW), NOW).unwrap();
    log.roll().unwrap();
    log.append(&mut keyed(&[("c", Some("1"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    let stats = pass(&mut log, 100, NOW);
    assert_eq!(stats.delete_horizon, Some(NOW + 1_000));
    let r = records_of(&log);
    assert_eq!(r.get(&2), Some(&("a".to_string(), None)), "{r:?}");
    assert!(!r.contains_key(&0));
    // Not yet past the horizon: kept, and the log is due for another pass only after it.
    let checkpoint = CleanerCheckpoint::read(log.dir());
    assert!(
        !log.cleanable(&checkpoint, &params(NOW + 999))
            .horizon_passed
    );
    pass(&mut log, 100, NOW + 999);
    assert!(records_of(&log).contains_key(&2));
    let checkpoint = CleanerCheckpoint::read(log.dir());
    let c = log.cleanable(&checkpoint, &params(NOW + 1_000));
    assert!(c.horizon_passed && c.should_clean(&params(NOW + 1_000)));
    let stats = pass(&mut log, 100, NOW + 1_000);
    assert_eq!(stats.delete_horizon, None);
    let r = records_of(&log);
    assert!(!r.contains_key(&2), "{r:?}");
    assert_eq!(r.get(&1), Some(&("b".to_string(), Some("1".to_string()))));
    // Record timestamps survive the re-based batch.
    let (h, batch) = read_all(&log).into_iter().next().unwrap();
    let recs = records::decode_records(&batch).unwrap();
    assert_eq!(h.base_timestamp + recs[0].timestamp_delta, NOW);
}

#[test]
fn transactional_and_control_batches_are_kept_whole_and_never_hide_older_values() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    log.append(&mut keyed(&[("a", Some("plain"))], NOW), NOW)
        .unwrap();
    let txn = set_attributes(keyed(&[("a", Some("txn"))], NOW), 0x10, Some((9, 0)));
    log.append(&mut txn.clone(), NOW).unwrap();
    let control = set_attributes(keyed(&[("x", Some("marker"))], NOW), 0x30, Some((9, -1)));
    log.append(&mut control.clone(), NOW).unwrap();
    log.roll().unwrap();
    log.append(&mut keyed(&[("z", Some("1"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    let before = records_of(&log);
    let stats = pass(&mut log, 100, NOW);
    assert_eq!(stats.records_removed, 0);
    assert_eq!(records_of(&log), before);
}

#[test]
fn the_last_batch_of_an_idempotent_producer_is_kept_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    for seq in 0..3 {
        let b = set_attributes(
            keyed(&[("a", Some("p")), ("b", Some("p"))], NOW),
            0,
            Some((7, seq * 2)),
        );
        log.append(&mut b.clone(), NOW).unwrap();
    }
    log.append(
        &mut keyed(&[("a", Some("new")), ("b", Some("new"))], NOW),
        NOW,
    )
    .unwrap();
    log.roll().unwrap();
    log.append(&mut keyed(&[("z", Some("1"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    pass(&mut log, 100, NOW);
    let batches = read_all(&log);
    let producer: Vec<_> = batches.iter().filter(|(h, _)| h.producer_id == 7).collect();
    assert_eq!(producer.len(), 1, "{batches:?}");
    let (h, _) = producer[0];
    assert_eq!(
        (h.base_offset, h.last_offset_delta, h.records_count),
        (4, 1, 0)
    );
    assert_eq!((h.base_sequence, h.last_sequence()), (4, 5));
    assert_eq!(records_of(&log).len(), 3);
}

#[test]
fn compressed_batches_keep_their_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    log.append(
        &mut common::gzip_batch(keyed(&[("a", Some("1")), ("b", Some("1"))], NOW)),
        NOW,
    )
    .unwrap();
    log.append(&mut keyed(&[("a", Some("2"))], NOW), NOW)
        .unwrap();
    log.roll().unwrap();
    log.append(&mut keyed(&[("z", Some("1"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    pass(&mut log, 100, NOW);
    let batches = read_all(&log);
    assert_eq!(batches[0].0.compression(), records::Compression::Gzip);
    assert_eq!(batches[0].0.records_count, 1);
    records::verify_crc(&batches[0].1).unwrap();
    assert_eq!(latest(&records_of(&log))["a"], (2, Some("2".to_string())));
    assert_eq!(latest(&records_of(&log))["b"], (1, Some("1".to_string())));
}

#[test]
fn a_crash_before_any_step_of_a_swap_loses_nothing_and_the_log_opens() {
    let mut crash_after = 0;
    loop {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = open(tmp.path());
        fill(&mut log);
        log.flush().unwrap();
        let before = records_of(&log);
        let want = latest(&before);
        let p = params(NOW);
        let cleanable = log.cleanable(&CleanerCheckpoint::default(), &p);
        let job = log.clean_job(&cleanable);
        let mut map = OffsetMap::with_capacity(1000);
        let mut crashed = false;
        let result = cleaner::clean(&job, &mut map, &p, &mut |_| {}, &mut |g| match log
            .install_cleaned_crashing(g, NOW, crash_after)
        {
            Err(e) => {
                crashed = true;
                Err(e)
            }
            ok => ok,
        });
        assert_eq!(result.is_err(), crashed);
        log.abandon();
        let log = open(tmp.path());
        let after = records_of(&log);
        assert_eq!(latest(&after), want, "crash after {crash_after} steps");
        // Whatever is left is original records at their offsets.
        for (o, r) in &after {
            assert_eq!(
                before.get(o),
                Some(r),
                "offset {o} after {crash_after} steps"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".swap") || n.ends_with(".cleaned"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        if !crashed {
            assert_eq!(after.len(), 11);
            assert!(crash_after > 3, "the swap has several steps");
            break;
        }
        crash_after += 1;
    }
}

/// Appends one transactional record of `pid` and its ABORT marker, and indexes the aborted
/// transaction as the broker does.
fn append_aborted(log: &mut Log, pid: i64) -> AbortedTxn {
    let first = log.log_end_offset();
    let data = set_attributes(keyed(&[("t", Some("aborted"))], NOW), 0x10, Some((pid, 0)));
    log.append(&mut data.clone(), NOW).unwrap();
    let marker = set_attributes(keyed(&[("x", Some("abort"))], NOW), 0x30, Some((pid, -1)));
    let info = log.append(&mut marker.clone(), NOW).unwrap();
    let txn = AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: info.base_offset,
        last_stable_offset: info.base_offset + 1,
    };
    log.append_aborted_txn(txn).unwrap();
    txn
}

#[test]
fn aborted_transaction_entries_follow_the_segments_the_cleaner_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    // Three small segments; the second and third each hold an aborted transaction's marker.
    log.append(&mut keyed(&[("a", Some("1"))], NOW), NOW)
        .unwrap();
    log.append(&mut keyed(&[("a", Some("2"))], NOW), NOW)
        .unwrap();
    log.roll().unwrap();
    let mut aborted = Vec::new();
    for pid in [9, 10] {
        aborted.push(append_aborted(&mut log, pid));
        log.append(&mut keyed(&[("a", Some("3"))], NOW), NOW)
            .unwrap();
        log.roll().unwrap();
    }
    log.append(&mut keyed(&[("tail", Some("t"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    let segments_before = log.segment_count();
    let stats = pass(&mut log, 100, NOW);
    assert!(stats.records_removed > 0, "{stats:?}");
    assert!(
        log.segment_count() < segments_before,
        "the pass merged segments"
    );
    assert_eq!(log.all_aborted_txns(), aborted);
    assert_eq!(log.aborted_txns(0, i64::MAX), aborted);
    drop(log);
    // Reopened: the merged index file holds both entries and no orphan file is left.
    let log = open(tmp.path());
    assert_eq!(log.all_aborted_txns(), aborted);
    let files: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txnindex"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn an_orphaned_index_file_left_by_a_crash_is_merged_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    log.append(&mut keyed(&[("a", Some("1"))], NOW), NOW)
        .unwrap();
    let txn = append_aborted(&mut log, 9);
    assert_eq!(txn.first_offset, 1);
    log.roll().unwrap();
    log.append(&mut keyed(&[("b", Some("1"))], NOW), NOW)
        .unwrap();
    drop(log);
    // As if a swap had merged everything into segment 0 and the crash came before the
    // index entries moved: the entry sits in a file named after offset 1 with no segment.
    let name = |base: i64, suffix: &str| tmp.path().join(format!("{base:020}.{suffix}"));
    std::fs::rename(name(0, "txnindex"), name(1, "txnindex")).unwrap();
    let log = open(tmp.path());
    assert_eq!(log.all_aborted_txns(), vec![txn]);
    assert!(!name(1, "txnindex").exists());
    assert!(name(0, "txnindex").exists());
}
