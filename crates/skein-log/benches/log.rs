//! Hot paths of one partition's log: appending 16 KiB batches (page cache; the broker's
//! group-commit thread does the fsync elsewhere), reading 1 MiB from the page cache, and
//! finding the file range of 1 MiB of batches (the zero-copy fetch's read).
//!
//! `cargo bench -p skein-log --bench log` (see BENCHMARKS.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skein_log::{Log, LogConfig};
use skein_protocol::records::RecordBatchBuilder;

const NOW_MS: i64 = 1_700_000_000_000;

/// About 16 KiB: 15 records of 1 KiB, as librdkafka batches them with linger.ms=1.
fn batch_16k() -> BytesMut {
    let value = vec![b'x'; 1024];
    let mut b = RecordBatchBuilder::new(NOW_MS);
    for i in 0..15 {
        b = b.push(None, Some(&value), NOW_MS + i);
    }
    b.build()
}

fn bench_append(c: &mut Criterion) {
    let template = batch_16k();
    let mut g = c.benchmark_group("log_append");
    g.throughput(Throughput::Bytes(template.len() as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("16k_batch", |b| {
        // Each sample appends to a fresh log that is deleted right after, so the benchmark
        // never holds more than one sample's bytes on disk.
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("temp dir");
            let (mut log, _) = Log::open(dir.path(), LogConfig::default(), NOW_MS).expect("opens");
            let mut buf = template.clone();
            let start = Instant::now();
            for _ in 0..iters {
                // append writes the base offset in place; the copy back is part of the
                // broker's path too (the request buffer is the batch).
                buf.copy_from_slice(&template);
                black_box(log.append(&mut buf, NOW_MS).expect("appends"));
            }
            let elapsed = start.elapsed();
            log.abandon();
            elapsed
        })
    });
    g.finish();
}

fn bench_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, _) = Log::open(dir.path(), LogConfig::default(), NOW_MS).expect("opens");
    let template = batch_16k();
    // 32 MiB of 16 KiB batches (15 records each), in the page cache.
    let batches = 32 * 1024 / 16;
    for _ in 0..batches {
        let mut buf = template.clone();
        log.append(&mut buf, NOW_MS).expect("appends");
    }
    let leo = log.log_end_offset();
    let mut g = c.benchmark_group("log_read");
    g.throughput(Throughput::Bytes(1024 * 1024));
    g.bench_function("1m_from_page_cache", |b| {
        let mut offset = 0;
        b.iter(|| {
            let r = log
                .read(black_box(offset), 1024 * 1024, None)
                .expect("reads");
            offset = if r.next_offset + 15 * 70 >= leo {
                0
            } else {
                r.next_offset
            };
            r
        })
    });
    // What a zero-copy fetch does instead: walk the batch headers of 1 MiB (64 batches) and
    // name the file range; the bytes themselves go to the socket with sendfile.
    g.bench_function("1m_ranges_headers_only", |b| {
        let mut offset = 0;
        b.iter(|| {
            let r = log
                .read_ranges(black_box(offset), 1024 * 1024, None)
                .expect("reads");
            offset = if r.next_offset + 15 * 70 >= leo {
                0
            } else {
                r.next_offset
            };
            r
        })
    });
    g.finish();
    log.abandon();
}

criterion_group!(benches, bench_append, bench_read);
criterion_main!(benches);
