//! Random operation sequences against a simple model of the log: after every step the log's
//! offsets and contents must match the model, including across clean and unclean reopens.

mod common;

use common::*;
use proptest::prelude::*;
use skein_log::{Log, LogConfig};
use skein_protocol::records::BatchHeader;

#[derive(Debug, Clone)]
enum Op {
    Append { records: usize, value_len: usize },
    Reopen { clean: bool },
    Flush,
    TruncateToBatch { pick: f64 },
    DeleteRecords { pick: f64 },
    Roll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 0usize..400).prop_map(|(records, value_len)| Op::Append { records, value_len }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => Just(Op::Flush),
        1 => (0.0f64..1.0).prop_map(|pick| Op::TruncateToBatch { pick }),
        1 => (0.0f64..1.0).prop_map(|pick| Op::DeleteRecords { pick }),
        1 => Just(Op::Roll),
    ]
}

struct Model {
    batches: Vec<Vec<u8>>,
    log_start: i64,
    log_end: i64,
}

fn check(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_end_offset(), model.log_end);
    prop_assert_eq!(log.log_start_offset(), model.log_start);
    let want: Vec<Vec<u8>> = model
        .batches
        .iter()
        .filter(|b| BatchHeader::parse(b).unwrap().last_offset() >= model.log_start)
        .cloned()
        .collect();
    let got: Vec<Vec<u8>> = read_all(log).into_iter().map(|(_, b)| b).collect();
    prop_assert_eq!(got, want);
    prop_assert!(log.high_watermark() >= model.log_start && log.high_watermark() <= model.log_end);
    prop_assert!(log.recovery_point() <= model.log_end);
    check_ranges(log, model)
}

/// `read_ranges` names exactly the bytes `read` copies, for any start, size and limit.
fn check_ranges(log: &Log, model: &Model) -> Result<(), TestCaseError> {
    let span = (model.log_end - model.log_start).max(1);
    let starts = (0..6).map(|i| model.log_start + span * i / 5);
    for start in starts.chain([model.log_start - 1, model.log_end + 1]) {
        for max_bytes in [1usize, 300, 700, 5000] {
            for limit in [None, Some(log.high_watermark()), Some(start + 2)] {
                let read = log.read(start, max_bytes, limit);
                let ranges = log.read_ranges(start, max_bytes, limit);
                match (read, ranges) {
                    (Ok(read), Ok(ranges)) => {
                        let mut bytes = Vec::new();
                        for r in &ranges.ranges {
                            r.read_into(&mut bytes).unwrap();
                        }
                        prop_assert_eq!(
                            &bytes[..],
                            &read.records[..],
                            "start {} max {} limit {:?}",
                            start,
                            max_bytes,
                            limit
                        );
                        prop_assert_eq!(ranges.bytes, bytes.len());
                        prop_assert_eq!(ranges.next_offset, read.next_offset);
                        let records: i64 = skein_protocol::records::BatchIter::new(&read.records)
                            .map(|b| i64::from(b.unwrap().0.records_count))
                            .sum();
                        prop_assert_eq!(ranges.records, records);
                    }
                    (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                    (a, b) => prop_assert!(
                        false,
                        "read {:?} but read_ranges {:?}",
                        a.map(|r| r.next_offset),
                        b.map(|r| r.next_offset)
                    ),
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn log_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 1500, index_interval_bytes: 120, ..LogConfig::default() };
        let mut log = Log::open(dir.path(), config.clone(), NOW).unwrap().0;
        let mut model = Model { batches: Vec::new(), log_start: 0, log_end: 0 };
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { records, value_len } => {
                    let mut b = batch(records, NOW + step as i64, value_len);
                    let info = log.append(&mut b, NOW).unwrap();
                    prop_assert_eq!(info.base_offset, model.log_end);
                    model.log_end = info.last_offset + 1;
                    model.batches.push(b);
                    log.set_high_watermark(model.log_end);
                }
                Op::Reopen { clean } => {
                    if clean { log.close().unwrap() } else { log.abandon() }
                    let (reopened, report) = Log::open(dir.path(), config.clone(), NOW).unwrap();
                    prop_assert!(!report.repaired(), "{}", report);
                    prop_assert_eq!(report.clean_shutdown, clean);
                    log = reopened;
                }
                Op::Flush => {
                    prop_assert_eq!(log.flush().unwrap(), model.log_end);
                }
                Op::Roll => log.roll().unwrap(),
                Op::TruncateToBatch { pick } => {
                    let candidates: Vec<usize> = (0..model.batches.len())
                        .filter(|&i| BatchHeader::parse(&model.batches[i]).unwrap().base_offset >= model.log_start)
                        .collect();
                    if let Some(&i) = candidates.get((pick * candidates.len() as f64) as usize) {
                        let target = BatchHeader::parse(&model.batches[i]).unwrap().base_offset;
                        log.truncate_to(target).unwrap();
                        model.batches.truncate(i);
                        model.log_end = target;
                    }
                }
                Op::DeleteRecords { pick } => {
                    let span = model.log_end - model.log_start;
                    let target = model.log_start + (pick * (span + 1) as f64) as i64;
                    let target = target.min(model.log_end);
                    prop_assert_eq!(log.delete_records_before(target).unwrap(), target);
                    model.log_start = target;
                }
            }
            check(&log, &model)?;
        }
    }
}
