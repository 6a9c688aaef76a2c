//! Property: cutting the log at any byte and reopening recovers exactly the longest prefix of
//! whole, valid batches.

mod common;

use std::fs;

use common::*;
use proptest::prelude::*;
use skein_log::{Log, LogConfig};
use skein_protocol::records::BatchHeader;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncation_at_any_byte_recovers_the_longest_valid_prefix(
        sizes in prop::collection::vec((1usize..5, 0usize..300), 1..40),
        cut_fraction in 0.0f64..1.0,
        segment_bytes in prop::sample::select(vec![700u64, 2000, 1 << 30]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes, index_interval_bytes: 150, ..LogConfig::default() };
        let (mut log, _) = Log::open(dir.path(), config.clone(), NOW).unwrap();
        let mut stored = Vec::new();
        for (i, (records, value_len)) in sizes.iter().enumerate() {
            let mut b = batch(*records, NOW + i as i64, *value_len);
            log.append(&mut b, NOW).unwrap();
            stored.push(b);
        }
        let bases = log.segment_base_offsets();
        log.abandon();

        // The segments' files back to back form the log's byte stream; cut it at `cut`.
        let total: usize = stored.iter().map(Vec::len).sum();
        let cut = ((total as f64) * cut_fraction) as usize;
        let mut offset_in_stream = 0usize;
        for base in &bases {
            let path = dir.path().join(format!("{base:020}.log"));
            let len = fs::metadata(&path).unwrap().len() as usize;
            if offset_in_stream + len <= cut {
                offset_in_stream += len;
                continue;
            }
            if offset_in_stream >= cut && *base != bases[0] {
                for suffix in ["log", "index", "timeindex"] {
                    fs::remove_file(dir.path().join(format!("{base:020}.{suffix}"))).unwrap();
                }
            } else {
                let keep = cut.saturating_sub(offset_in_stream);
                fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(keep as u64).unwrap();
                offset_in_stream += len;
            }
        }

        let (log, report) = Log::open(dir.path(), config, NOW).unwrap();
        let mut acc = 0;
        let mut prefix = Vec::new();
        for b in &stored {
            if acc + b.len() > cut { break; }
            acc += b.len();
            prefix.push(b.clone());
        }
        let expected_leo = prefix
            .last()
            .map_or(0, |b| BatchHeader::parse(b).unwrap().last_offset() + 1);
        prop_assert_eq!(log.log_end_offset(), expected_leo, "{}", report);
        let got: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, b)| b).collect();
        prop_assert_eq!(got, prefix);
        prop_assert_eq!(log.size_bytes() as usize, acc);
    }
}
