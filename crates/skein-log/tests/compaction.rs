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

/// Appends one record `key` = `value` at `NOW`.
fn put(log: &mut Log, key: &str, value: &str) {
    log.append(&mut keyed(&[(key, Some(value))], NOW), NOW)
        .unwrap();
}

/// One pass with the cleaner checkpoint of `dir`, installing directly; writes the checkpoint.
fn pass(log: &mut Log, map_capacity: usize, now_ms: i64) -> CleanStats {
    pass_below(log, map_capacity, now_ms, i64::MAX)
}

/// One pass from `checkpoint` whose swap stops (as a crash would) after `crash_after` file
/// steps; the log is then abandoned without closing. Returns whether the crash came, i.e.
/// whether the pass had that many steps.
fn pass_crashing(
    mut log: Log,
    checkpoint: &CleanerCheckpoint,
    now_ms: i64,
    crash_after: usize,
) -> bool {
    let p = params(now_ms);
    let cleanable = log.cleanable(checkpoint, &p);
    let job = log.clean_job(&cleanable);
    let mut map = OffsetMap::with_capacity(1000);
    let mut crashed = false;
    let result = cleaner::clean(&job, &mut map, &p, &mut |_| {}, &mut |g| match log
        .install_cleaned_crashing(g, now_ms, crash_after)
    {
        Err(e) => {
            crashed = true;
            Err(e)
        }
        ok => ok,
    });
    assert_eq!(result.is_err(), crashed);
    log.abandon();
    crashed
}

/// Like [`pass`], for a partition whose last stable offset is `lso`.
fn pass_below(log: &mut Log, map_capacity: usize, now_ms: i64, lso: i64) -> CleanStats {
    let dir = log.dir().to_path_buf();
    let checkpoint = CleanerCheckpoint::read(&dir);
    let p = params(now_ms);
    let cleanable = log.cleanable_below(&checkpoint, &p, lso);
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

/// The records of the data batches (markers left out): offset → (key, value).
fn data_records_of(log: &Log) -> BTreeMap<i64, (String, Option<String>)> {
    let markers: Vec<i64> = read_all(log)
        .iter()
        .filter(|(h, _)| h.is_control())
        .map(|(h, _)| h.base_offset)
        .collect();
    let mut r = records_of(log);
    r.retain(|o, _| !markers.contains(o));
    r
}

/// What a read_committed consumer of the whole log sees: the records of data batches, less
/// those of transactional batches inside an indexed aborted transaction of their producer.
fn committed_view(log: &Log) -> BTreeMap<i64, (String, Option<String>)> {
    let aborted = log.all_aborted_txns();
    let mut hidden = Vec::new();
    for (h, _) in read_all(log) {
        let in_abort = aborted.iter().any(|t| {
            t.producer_id == h.producer_id
                && t.first_offset <= h.base_offset
                && h.last_offset() <= t.last_offset
        });
        if h.is_control() || (h.is_transactional() && in_abort) {
            hidden.extend(h.base_offset..=h.last_offset());
        }
    }
    let mut r = records_of(log);
    r.retain(|o, _| !hidden.contains(o));
    r
}

/// The markers of the log: offset → (producer id, has a delete horizon).
fn markers_of(log: &Log) -> BTreeMap<i64, (i64, bool)> {
    read_all(log)
        .iter()
        .filter(|(h, _)| h.is_control())
        .map(|(h, _)| (h.base_offset, (h.producer_id, h.attributes & 0x40 != 0)))
        .collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
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
    put(&mut log, "c", "1");
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
    put(&mut log, "z", "1");
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
    put(&mut log, "a", "2");
    log.roll().unwrap();
    put(&mut log, "z", "1");
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
        let crashed = pass_crashing(log, &CleanerCheckpoint::default(), NOW, crash_after);
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
    append_txn(log, pid, &[("t", Some("aborted"))]);
    end_txn(log, pid, first, false).expect("an aborted transaction")
}

/// Appends a transactional batch of `pid` (epoch 0, no sequence) holding `pairs`.
fn append_txn(log: &mut Log, pid: i64, pairs: &[(&str, Option<&str>)]) -> i64 {
    let data = set_attributes(keyed(pairs, NOW), 0x10, Some((pid, -1)));
    log.append(&mut data.clone(), NOW).unwrap().base_offset
}

/// Appends `pid`'s COMMIT or ABORT marker for the transaction that began at `first`; an abort
/// is indexed as the broker does.
fn end_txn(log: &mut Log, pid: i64, first: i64, committed: bool) -> Option<AbortedTxn> {
    let mut marker = records::end_txn_marker_batch(
        pid,
        0,
        records::EndTxnMarker {
            committed,
            coordinator_epoch: 0,
        },
        NOW,
    );
    let info = log.append(&mut marker, NOW).unwrap();
    if committed {
        return None;
    }
    let txn = AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: info.base_offset,
        last_stable_offset: info.base_offset + 1,
    };
    log.append_aborted_txn(txn).unwrap();
    Some(txn)
}

#[test]
fn aborted_transaction_entries_follow_the_segments_the_cleaner_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    // Three small segments; the second and third each hold an aborted transaction's marker.
    put(&mut log, "a", "1");
    put(&mut log, "a", "2");
    log.roll().unwrap();
    let mut aborted = Vec::new();
    for pid in [9, 10] {
        aborted.push(append_aborted(&mut log, pid));
        put(&mut log, "a", "3");
        log.roll().unwrap();
    }
    log.append(&mut keyed(&[("tail", Some("t"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    let segments_before = log.segment_count();
    // Cleaning only the first segment merges nothing and keeps every entry.
    let first_end = log.segment_base_offsets()[1];
    assert_eq!(first_end, aborted[0].first_offset);
    pass_below(&mut log, 100, NOW, first_end);
    assert_eq!(log.all_aborted_txns(), aborted);
    // The aborted records go with the pass over everything: so do their entries, in the
    // merged segment's index, and the files of the merged segments.
    let stats = pass(&mut log, 100, NOW);
    assert!(stats.records_removed > 0, "{stats:?}");
    assert!(
        log.segment_count() < segments_before,
        "the pass merged segments"
    );
    assert_eq!(log.all_aborted_txns(), vec![]);
    assert_eq!(data_records_of(&log).len(), 2, "{:?}", records_of(&log));
    drop(log);
    let log = open(tmp.path());
    assert_eq!(log.all_aborted_txns(), vec![]);
    let files: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txnindex"))
        .collect();
    assert!(files.is_empty(), "{files:?}");
}

#[test]
fn an_orphaned_index_file_left_by_a_crash_is_merged_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    put(&mut log, "a", "1");
    let txn = append_aborted(&mut log, 9);
    assert_eq!(txn.first_offset, 1);
    log.roll().unwrap();
    put(&mut log, "b", "1");
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

/// A log with plain updates, two committed and one aborted transaction, all cleanable:
///
/// ```text
/// 0 a=1 | 1 P1 a=c1 b=c1 (1..=2) | 3 COMMIT P1 | 4 P2 a=x c=x (4..=5) | 6 ABORT P2 | 7 b=2
/// 8 P1 c=c2 | 9 COMMIT P1 | 10 P3 d=x | 11 ABORT P3 | 12 P3 d=y | 13 COMMIT P3 | 14 P2 e=1
/// 15 COMMIT P2 || 16 tail
/// ```
///
/// (Every producer's last batch is a COMMIT whose data stays, so that the ABORT markers are
/// not kept as their producer's last batch.)
fn txn_log(log: &mut Log) -> Vec<AbortedTxn> {
    put(log, "a", "1");
    let f = append_txn(log, 1, &[("a", Some("c1")), ("b", Some("c1"))]);
    end_txn(log, 1, f, true);
    let f = append_txn(log, 2, &[("a", Some("x")), ("c", Some("x"))]);
    let a2 = end_txn(log, 2, f, false).unwrap();
    put(log, "b", "2");
    let f = append_txn(log, 1, &[("c", Some("c2"))]);
    end_txn(log, 1, f, true);
    let f = append_txn(log, 3, &[("d", Some("x"))]);
    let a3 = end_txn(log, 3, f, false).unwrap();
    let f = append_txn(log, 3, &[("d", Some("y"))]);
    end_txn(log, 3, f, true);
    let f = append_txn(log, 2, &[("e", Some("1"))]);
    end_txn(log, 2, f, true);
    assert_eq!(log.log_end_offset(), 16);
    log.roll().unwrap();
    log.append(&mut keyed(&[("tail", Some("t"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    vec![a2, a3]
}

#[test]
fn committed_transactions_are_compacted_and_aborted_ones_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    let aborted = txn_log(&mut log);
    assert_eq!(log.all_aborted_txns(), aborted);
    let before = committed_view(&log);
    let stats = pass(&mut log, 100, NOW);
    // Removed: a=1 (0), b=c1 (2, superseded by b=2), the aborted a=x c=x (4, 5) and d=x
    // (10); the aborted a=x does not hide the committed a=c1.
    let want: BTreeMap<i64, (String, Option<String>)> = [
        (1, ("a".to_string(), s("c1"))),
        (7, ("b".to_string(), s("2"))),
        (8, ("c".to_string(), s("c2"))),
        (12, ("d".to_string(), s("y"))),
        (14, ("e".to_string(), s("1"))),
        (16, ("tail".to_string(), s("t"))),
    ]
    .into_iter()
    .collect();
    assert_eq!(data_records_of(&log), want, "{stats:?}");
    assert_eq!(stats.records_removed, 5, "{stats:?}");
    // What read_committed and read_uncommitted consumers see is the same, and agrees with
    // the latest committed value of every key before cleaning.
    assert_eq!(committed_view(&log), want);
    assert_eq!(latest(&committed_view(&log)), latest(&before));
    // Markers: P1's first COMMIT stays (its a=c1 is kept), P2's ABORT stays with a delete
    // horizon (its data went in this pass), P1's second COMMIT stays (its c=c2 is kept),
    // P3's ABORT waits out its horizon, the COMMITs of d=y and e=1 stay.
    let markers: BTreeMap<i64, (i64, bool)> = [
        (3, (1, false)),
        (6, (2, true)),
        (9, (1, false)),
        (11, (3, true)),
        (13, (3, false)),
        (15, (2, false)),
    ]
    .into_iter()
    .collect();
    assert_eq!(markers_of(&log), markers);
    // Their transactions have no data left: the index entries go.
    assert_eq!(log.all_aborted_txns(), vec![]);
    assert_eq!(stats.delete_horizon, Some(NOW + 1_000));
    let after_first = records_of(&log);

    // Before delete.retention.ms nothing changes.
    let checkpoint = CleanerCheckpoint::read(log.dir());
    assert!(
        !log.cleanable(&checkpoint, &params(NOW + 999))
            .horizon_passed
    );
    pass(&mut log, 100, NOW + 999);
    assert_eq!(records_of(&log), after_first);
    // After it, the log is due again and the two ABORT markers go.
    let checkpoint = CleanerCheckpoint::read(log.dir());
    let c = log.cleanable(&checkpoint, &params(NOW + 1_000));
    assert!(c.horizon_passed && c.should_clean(&params(NOW + 1_000)));
    let stats = pass(&mut log, 100, NOW + 1_000);
    assert_eq!(stats.delete_horizon, None);
    assert_eq!(stats.records_removed, 2, "{stats:?}");
    let left: Vec<i64> = markers_of(&log).into_keys().collect();
    assert_eq!(left, vec![3, 9, 13, 15]);
    assert_eq!(data_records_of(&log), want);
    // Reopened (cleanly and after a crash): the same log, the same (empty) index, and the
    // producer state can be rebuilt: every transaction left has its marker.
    log.close().unwrap();
    let log = open(tmp.path());
    assert_eq!(data_records_of(&log), want);
    assert_eq!(log.all_aborted_txns(), vec![]);
    log.abandon();
    let log = open(tmp.path());
    assert_eq!(committed_view(&log), want);
    let mut open_txns = std::collections::HashSet::new();
    for (h, _) in read_all(&log) {
        if h.is_control() {
            open_txns.remove(&h.producer_id);
        } else if h.is_transactional() {
            open_txns.insert(h.producer_id);
        }
    }
    assert!(open_txns.is_empty(), "{open_txns:?}");
}

#[test]
fn a_commit_marker_goes_only_after_its_data_and_delete_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    let f = append_txn(&mut log, 1, &[("a", Some("c1"))]);
    end_txn(&mut log, 1, f, true);
    put(&mut log, "a", "2");
    let f = append_txn(&mut log, 1, &[("b", Some("c2"))]);
    end_txn(&mut log, 1, f, true);
    log.roll().unwrap();
    log.append(&mut keyed(&[("tail", Some("t"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    // Pass 1 removes a=c1 (0); its COMMIT (1) gets a horizon, it is not removed yet.
    pass(&mut log, 100, NOW);
    let m: Vec<(i64, bool)> = markers_of(&log)
        .into_iter()
        .map(|(o, (_, h))| (o, h))
        .collect();
    assert_eq!(m, vec![(1, true), (4, false)]);
    assert!(!data_records_of(&log).contains_key(&0));
    // A pass before the horizon keeps it, one after removes it; the second COMMIT, whose
    // b=c2 is still there (and which is the producer's last batch), stays.
    pass(&mut log, 100, NOW + 500);
    assert!(markers_of(&log).contains_key(&1));
    pass(&mut log, 100, NOW + 1_000);
    let m: Vec<i64> = markers_of(&log).into_keys().collect();
    assert_eq!(m, vec![4]);
    let want: Vec<(i64, String)> = vec![(2, "a".into()), (3, "b".into()), (5, "tail".into())];
    let got: Vec<(i64, String)> = data_records_of(&log)
        .into_iter()
        .map(|(o, (k, _))| (o, k))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn nothing_at_or_past_the_last_stable_offset_is_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    put(&mut log, "a", "1");
    put(&mut log, "a", "2");
    log.roll().unwrap();
    // P5's transaction opens at 2 and is still open: the LSO is 2.
    let open_at = append_txn(&mut log, 5, &[("a", Some("open"))]);
    assert_eq!(open_at, 2);
    put(&mut log, "a", "3");
    log.roll().unwrap();
    put(&mut log, "a", "4");
    log.roll().unwrap();
    log.append(&mut keyed(&[("tail", Some("t"))], NOW), NOW)
        .unwrap();
    log.set_high_watermark(log.log_end_offset());
    let before = read_all(&log);
    // An LSO inside the first segment: nothing is cleanable.
    let c = log.cleanable_below(&CleanerCheckpoint::default(), &params(NOW), 1);
    assert_eq!(c.first_uncleanable, 0);
    assert!(!c.should_clean(&params(NOW)));
    // At 2: only the first segment; a=1 goes, a=2 stays (the map never saw 3, 4 or the open
    // transaction), and every batch from the LSO on is untouched, byte for byte.
    let c = log.cleanable_below(&CleanerCheckpoint::default(), &params(NOW), open_at);
    assert_eq!(c.first_uncleanable, 2);
    let stats = pass_below(&mut log, 100, NOW, open_at);
    assert_eq!(stats.records_removed, 1, "{stats:?}");
    assert_eq!(stats.cleaned_to, 2);
    let after = read_all(&log);
    assert_eq!(after[0].0.base_offset, 1);
    let tail = |v: &[(skein_log::BatchHeader, Vec<u8>)]| -> Vec<Vec<u8>> {
        v.iter()
            .filter(|(h, _)| h.base_offset >= 2)
            .map(|(_, b)| b.clone())
            .collect()
    };
    assert_eq!(tail(&after), tail(&before));
    // The same with the LSO at the high watermark would clean up to the active segment.
    let c = log.cleanable_below(&CleanerCheckpoint::read(log.dir()), &params(NOW), i64::MAX);
    assert_eq!(c.first_uncleanable, log.active_segment_base_offset());
}

#[test]
fn an_aborted_batch_kept_for_its_producer_keeps_its_index_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let mut log = open(tmp.path());
    put(&mut log, "a", "1");
    let first = append_txn(&mut log, 8, &[("a", Some("x")), ("b", Some("x"))]);
    log.roll().unwrap();
    // The ABORT marker is in the active segment: the data batch is P8's last batch in the
    // cleaned range, kept empty for its producer state, and the entry stays.
    let txn = end_txn(&mut log, 8, first, false).unwrap();
    log.set_high_watermark(log.log_end_offset());
    let stats = pass(&mut log, 100, NOW);
    assert_eq!(stats.records_removed, 2, "{stats:?}");
    let batches = read_all(&log);
    let kept: Vec<_> = batches.iter().filter(|(h, _)| h.producer_id == 8).collect();
    assert_eq!(kept.len(), 2);
    let (h, _) = kept[0];
    assert!(h.is_transactional() && !h.is_control());
    assert_eq!(
        (h.base_offset, h.last_offset_delta, h.records_count),
        (1, 1, 0)
    );
    assert_eq!(log.aborted_txns(0, i64::MAX), vec![txn]);
    assert_eq!(data_records_of(&log).len(), 1);
    // The old a=1 is not hidden by the aborted a=x.
    assert_eq!(committed_view(&log)[&0], ("a".to_string(), s("1")));
    drop(log);
    let log = open(tmp.path());
    assert_eq!(log.aborted_txns(0, i64::MAX), vec![txn]);
}

/// A crash before every file operation of the passes that remove aborted data and then
/// their markers: the log opens, read_committed sees exactly the committed latest values,
/// every index entry's marker is in the log, and every aborted record left is indexed.
#[test]
fn a_crash_at_any_step_of_a_transactional_pass_keeps_the_index_right() {
    for (setup_passes, now) in [(0, NOW), (1, NOW + 1_000)] {
        let mut crash_after = 0;
        loop {
            let tmp = tempfile::tempdir().unwrap();
            let mut log = open(tmp.path());
            let aborted = txn_log(&mut log);
            let want = latest(&committed_view(&log));
            for _ in 0..setup_passes {
                pass(&mut log, 100, NOW);
                // As after a crash between that pass's swap and its index rewrite: the
                // entries are back while their markers wait out their horizon. The next pass
                // must drop them before the swap that removes the markers.
                for t in &aborted {
                    log.append_aborted_txn(*t).unwrap();
                }
            }
            log.flush().unwrap();
            let checkpoint = CleanerCheckpoint::read(log.dir());
            let crashed = pass_crashing(log, &checkpoint, now, crash_after);
            let log = open(tmp.path());
            let at = format!("pass {setup_passes}, crash after {crash_after} steps");
            assert_eq!(latest(&committed_view(&log)), want, "{at}");
            let markers = markers_of(&log);
            for t in log.all_aborted_txns() {
                assert_eq!(
                    markers.get(&t.last_offset).map(|m| m.0),
                    Some(t.producer_id),
                    "{at}: entry {t:?} without its marker"
                );
            }
            for (h, _) in read_all(&log) {
                let was_aborted = aborted.iter().any(|t| {
                    t.producer_id == h.producer_id
                        && t.first_offset <= h.base_offset
                        && h.last_offset() <= t.last_offset
                });
                if was_aborted && !h.is_control() && h.records_count > 0 {
                    assert!(
                        log.all_aborted_txns()
                            .iter()
                            .any(|t| t.producer_id == h.producer_id
                                && t.first_offset <= h.base_offset
                                && h.last_offset() <= t.last_offset),
                        "{at}: aborted batch at {} not indexed",
                        h.base_offset
                    );
                }
            }
            if !crashed {
                let m: Vec<i64> = markers.into_keys().collect();
                if setup_passes == 0 {
                    assert_eq!(m, vec![3, 6, 9, 11, 13, 15], "{at}");
                } else {
                    assert_eq!(m, vec![3, 9, 13, 15], "{at}");
                }
                assert!(log.all_aborted_txns().is_empty(), "{at}");
                break;
            }
            crash_after += 1;
        }
    }
}
