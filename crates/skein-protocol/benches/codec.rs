//! Hot paths of the codec: a Produce request carrying a 16 KiB batch, a Fetch response
//! carrying 1 MiB of batches, and the header parse + CRC32C check of a 1 MiB batch.
//!
//! `cargo bench -p skein-protocol --bench codec` (see BENCHMARKS.md).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use skein_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use skein_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use skein_protocol::records::{verify_crc, BatchHeader, RecordBatchBuilder};
use skein_protocol::{
    decode_request, decode_response, encode_request, encode_response, ApiKey, RequestBody,
    RequestHeader, ResponseBody,
};

/// Produce v9 is the newest version librdkafka 2.x sends with topic names.
const PRODUCE_VERSION: i16 = 9;
/// Fetch v12 is flexible and names topics; v13+ only swaps the name for a topic id.
const FETCH_VERSION: i16 = 12;

/// An uncompressed v2 batch of `count` records with `value_len`-byte values.
fn batch(count: usize, value_len: usize) -> BytesMut {
    let value = vec![b'x'; value_len];
    let mut b = RecordBatchBuilder::new(1_700_000_000_000);
    for i in 0..count {
        b = b.push(None, Some(&value), 1_700_000_000_000 + i as i64);
    }
    b.build()
}

/// About 16 KiB: 15 records of 1 KiB, as librdkafka batches them with linger.ms=1.
fn batch_16k() -> Bytes {
    batch(15, 1024).freeze()
}

/// About 1 MiB: 1,000 records of 1 KiB, the largest batch a default producer sends.
fn batch_1m() -> Bytes {
    batch(1000, 1024).freeze()
}

fn produce_request(records: Bytes) -> (RequestHeader, RequestBody) {
    let header = RequestHeader {
        api_key: ApiKey::Produce as i16,
        api_version: PRODUCE_VERSION,
        correlation_id: 42,
        client_id: Some("rdkafka".to_string()),
    };
    let body = RequestBody::Produce(ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "bench-topic".to_string(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(records),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    (header, body)
}

fn fetch_response(records: Bytes) -> ResponseBody {
    ResponseBody::Fetch(FetchResponse {
        responses: vec![FetchableTopicResponse {
            topic: "bench-topic".to_string(),
            partitions: vec![PartitionData {
                partition_index: 0,
                high_watermark: 1_000_000,
                last_stable_offset: 1_000_000,
                log_start_offset: 0,
                records: Some(records),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn bench_produce(c: &mut Criterion) {
    let (header, body) = produce_request(batch_16k());
    let frame = encode_request(&header, &body).expect("encodes");
    // The server hands `decode_request` the frame without its 4-byte size prefix.
    let frame = frame.freeze().slice(4..);
    let mut g = c.benchmark_group("produce_request_16k");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode", |b| {
        b.iter(|| decode_request(black_box(frame.clone())).expect("decodes"))
    });
    g.bench_function("encode", |b| {
        b.iter(|| encode_request(black_box(&header), black_box(&body)).expect("encodes"))
    });
    g.finish();
}

fn bench_fetch(c: &mut Criterion) {
    // 64 batches of about 16 KiB laid back to back: about 1 MiB, a default max.partition.fetch.bytes.
    let one = batch_16k();
    let mut records = BytesMut::new();
    for _ in 0..64 {
        records.extend_from_slice(&one);
    }
    let body = fetch_response(records.freeze());
    let frame = encode_response(7, ApiKey::Fetch, FETCH_VERSION, &body).expect("encodes");
    let frame = frame.freeze().slice(4..);
    let mut g = c.benchmark_group("fetch_response_1m");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            encode_response(7, ApiKey::Fetch, FETCH_VERSION, black_box(&body)).expect("encodes")
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            decode_response(ApiKey::Fetch, FETCH_VERSION, black_box(frame.clone()))
                .expect("decodes")
        })
    });
    g.finish();
}

fn bench_batch(c: &mut Criterion) {
    let batch = batch_1m();
    let mut g = c.benchmark_group("record_batch_1m");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("parse_header_and_verify_crc", |b| {
        b.iter(|| {
            let h = BatchHeader::parse(black_box(&batch)).expect("parses");
            verify_crc(black_box(&batch[..h.total_len()])).expect("valid crc");
            h
        })
    });
    g.finish();
}

criterion_group!(benches, bench_produce, bench_fetch, bench_batch);
criterion_main!(benches);
