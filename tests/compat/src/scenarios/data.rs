//! Data-path scenarios: Produce (acks, limits, corrupt batches, timestamps, idempotence),
//! Fetch edge cases, ListOffsets and DeleteRecords.

use anyhow::Result;
use bytes::Bytes;
use serde_json::{json, Value};
use skein_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic,
};
use skein_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use skein_protocol::messages::fetch_response::PartitionData;
use skein_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use skein_protocol::messages::list_offsets_request::{
    ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use skein_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use skein_protocol::messages::produce_response::PartitionProduceResponse;
use skein_protocol::records::{compute_crc, RecordBatchBuilder};
use skein_protocol::Uuid;

use super::Scenario;
use crate::{
    batch, count_records, err, idempotent_batch, now_ms, produce_request, v, Client, Ctx, FetchOpts,
};

pub fn scenarios() -> Vec<Scenario> {
    macro_rules! s {
        ($($name:literal => $f:ident,)*) => { vec![$(Scenario { name: $name, run: $f },)*] };
    }
    s![
        "offset_for_leader_epoch.lookups" => ofle_lookups,
        "produce.acks_1" => acks_1,
        "produce.acks_all" => acks_all,
        "produce.acks_0" => acks_0,
        "produce.invalid_acks" => invalid_acks,
        "produce.unknown_topic" => produce_unknown_topic,
        "produce.unknown_partition" => produce_unknown_partition,
        "produce.message_too_large" => message_too_large,
        "produce.corrupt_crc" => corrupt_crc,
        "produce.timestamp_too_old" => timestamp_too_old,
        "produce.timestamp_too_new" => timestamp_too_new,
        "produce.log_append_time" => log_append_time,
        "produce.idempotent_in_order" => idem_in_order,
        "produce.idempotent_duplicate" => idem_duplicate,
        "produce.idempotent_out_of_order" => idem_out_of_order,
        "produce.idempotent_unknown_producer_id" => idem_unknown_pid,
        "produce.idempotent_fenced_epoch" => idem_fenced_epoch,
        "produce.idempotent_new_epoch_nonzero_sequence" => idem_new_epoch_seq,
        "fetch.records_and_watermarks" => fetch_ok,
        "fetch.offset_out_of_range" => fetch_out_of_range,
        "fetch.max_bytes_smaller_than_batch" => fetch_max_bytes_tiny,
        "fetch.partition_max_bytes_smaller_than_batch" => fetch_partition_max_tiny,
        "fetch.partition_max_bytes_stops_between_batches" => fetch_partition_max_between,
        "fetch.read_committed_vs_uncommitted" => fetch_isolation,
        "fetch.unknown_topic_id" => fetch_unknown_topic_id,
        "fetch.unknown_topic_name" => fetch_unknown_topic_name,
        "fetch.unknown_partition" => fetch_unknown_partition,
        "fetch.at_high_watermark" => fetch_at_hw,
        "list_offsets.empty_topic" => lo_empty,
        "list_offsets.earliest_latest" => lo_earliest_latest,
        "list_offsets.by_time" => lo_by_time,
        "list_offsets.max_timestamp" => lo_max_timestamp,
        "list_offsets.unknown_topic" => lo_unknown_topic,
        "list_offsets.earliest_local" => lo_earliest_local,
        "delete_records.valid_then_fetch_below_start" => dr_valid,
        "delete_records.beyond_high_watermark" => dr_beyond_hw,
        "delete_records.to_high_watermark" => dr_to_hw,
        "delete_records.unknown_topic" => dr_unknown_topic,
    ]
}

fn produced(p: &PartitionProduceResponse) -> Value {
    json!({
        "error": err(p.error_code),
        "base_offset": p.base_offset,
        "log_start_offset": p.log_start_offset,
        "record_errors": p.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(),
    })
}

fn topic(ctx: &Ctx, c: &mut Client, partitions: i32, configs: &[(&str, &str)]) -> Result<String> {
    let name = ctx.name("t");
    ctx.create_topic(c, &name, partitions, configs)?;
    Ok(name)
}

fn fetched(top: i16, p: &PartitionData) -> Value {
    let (n, bases) = count_records(&p.records);
    json!({
        "top_error": err(top),
        "error": err(p.error_code),
        "high_watermark": p.high_watermark,
        "last_stable_offset": p.last_stable_offset,
        "log_start_offset": p.log_start_offset,
        "records": n,
        "batch_base_offsets": bases,
        // Null and empty mean the same to clients; Kafka sends either, depending on the path.
        "aborted_transactions": p.aborted_transactions.as_ref().map_or(0, |a| a.len()),
    })
}

fn acks_n(ctx: &Ctx, acks: i16) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let a = ctx.produce(&mut c, &t, 0, batch(2, now_ms()), acks)?;
    let b = ctx.produce(&mut c, &t, 0, batch(3, now_ms()), acks)?;
    let (top, f) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
    Ok(
        json!({"first": produced(&a), "second": produced(&b), "fetch": fetched(top, &f), "log_append_time": a.log_append_time_ms}),
    )
}

fn acks_1(ctx: &Ctx) -> Result<Value> {
    acks_n(ctx, 1)
}

fn acks_all(ctx: &Ctx) -> Result<Value> {
    acks_n(ctx, -1)
}

fn acks_0(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    c.send_without_reply(v::PRODUCE, produce_request(&t, 0, batch(4, now_ms()), 0))?;
    // No reply comes; the records show up in the log.
    let f = crate::wait_for("acks=0 records", std::time::Duration::from_secs(30), || {
        let (top, f) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
        Ok((f.high_watermark >= 4).then(|| fetched(top, &f)))
    })?;
    Ok(json!({"fetch": f}))
}

fn invalid_acks(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let p = ctx.produce(&mut c, &t, 0, batch(1, now_ms()), 2)?;
    let (_, f) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
    Ok(json!({"produce": err(p.error_code), "high_watermark_after": f.high_watermark}))
}

fn produce_unknown_topic(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let p = ctx.produce(&mut c, &ctx.name("nope"), 0, batch(1, now_ms()), 1)?;
    let m = ctx.metadata(&mut c, Some(&[&ctx.name("nope")]), false)?;
    Ok(json!({"produce": err(p.error_code), "created_by_produce": m.topics[0].error_code == 0}))
}

fn produce_unknown_partition(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let p = ctx.produce(&mut c, &t, 7, batch(1, now_ms()), 1)?;
    Ok(json!({"produce": err(p.error_code)}))
}

fn message_too_large(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[("max.message.bytes", "1000")])?;
    let ts = now_ms();
    let big = RecordBatchBuilder::new(ts)
        .push(None, Some(&[b'x'; 2000]), ts)
        .build()
        .freeze();
    let small = RecordBatchBuilder::new(ts)
        .push(None, Some(&[b'x'; 500]), ts)
        .build()
        .freeze();
    let a = ctx.produce(&mut c, &t, 0, big, 1)?;
    let b = ctx.produce(&mut c, &t, 0, small, 1)?;
    Ok(json!({"too_large": produced(&a), "fits": produced(&b)}))
}

fn corrupt_crc(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let mut b = batch(2, now_ms()).to_vec();
    let last = b.len() - 1;
    b[last] ^= 0xff;
    let p = ctx.produce(&mut c, &t, 0, Bytes::from(b), 1)?;
    let (_, f) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
    Ok(json!({"produce": err(p.error_code), "high_watermark_after": f.high_watermark}))
}

/// A batch whose timestamps are `ts`, with a correct CRC.
fn batch_at(ts: i64) -> Bytes {
    let b = RecordBatchBuilder::new(ts)
        .push(None, Some(b"x"), ts)
        .build();
    debug_assert!(compute_crc(&b) != 0);
    b.freeze()
}

fn timestamp_too_old(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(
        ctx,
        &mut c,
        1,
        &[("message.timestamp.before.max.ms", "3600000")],
    )?;
    let old = ctx.produce(&mut c, &t, 0, batch_at(now_ms() - 2 * 86_400_000), 1)?;
    let ok = ctx.produce(&mut c, &t, 0, batch_at(now_ms() - 60_000), 1)?;
    Ok(json!({"two_days_old": produced(&old), "one_minute_old": produced(&ok)}))
}

fn timestamp_too_new(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(
        ctx,
        &mut c,
        1,
        &[("message.timestamp.after.max.ms", "3600000")],
    )?;
    let new = ctx.produce(&mut c, &t, 0, batch_at(now_ms() + 2 * 86_400_000), 1)?;
    let ok = ctx.produce(&mut c, &t, 0, batch_at(now_ms() + 60_000), 1)?;
    Ok(json!({"two_days_ahead": produced(&new), "one_minute_ahead": produced(&ok)}))
}

fn log_append_time(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(
        ctx,
        &mut c,
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    )?;
    let before = now_ms();
    let p = ctx.produce(&mut c, &t, 0, batch_at(1_000), 1)?;
    let lo = list_offsets(&mut c, &t, 0, -3)?;
    Ok(json!({
        "produce": produced(&p),
        "log_append_time_is_now": p.log_append_time_ms >= before - 60_000,
        "max_timestamp_is_append_time": lo["timestamp"].as_i64().is_some_and(|ts| ts >= before - 60_000),
    }))
}

fn init_pid_once(c: &mut Client) -> Result<(i64, i16)> {
    let r = c.send(
        v::INIT_PRODUCER_ID,
        InitProducerIdRequest {
            transactional_id: None,
            transaction_timeout_ms: 60_000,
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        },
    )?;
    anyhow::ensure!(r.error_code == 0, "InitProducerId: error {}", r.error_code);
    Ok((r.producer_id, r.producer_epoch))
}

/// InitProducerId, retried while the broker's producer id manager or coordinator is not
/// ready (Kafka answers COORDINATOR_LOAD_IN_PROGRESS/NOT_AVAILABLE right after start).
pub fn init_pid(c: &mut Client) -> Result<(i64, i16)> {
    crate::wait_for(
        "InitProducerId",
        std::time::Duration::from_secs(60),
        || match init_pid_once(c) {
            Ok(p) => Ok(Some(p)),
            Err(_) => Ok(None),
        },
    )
}

fn idem_in_order(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let (pid, epoch) = init_pid(&mut c)?;
    let a = ctx.produce(&mut c, &t, 0, idempotent_batch(3, pid, epoch, 0), -1)?;
    let b = ctx.produce(&mut c, &t, 0, idempotent_batch(2, pid, epoch, 3), -1)?;
    Ok(json!({"epoch": epoch, "first": produced(&a), "second": produced(&b)}))
}

fn idem_duplicate(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let (pid, epoch) = init_pid(&mut c)?;
    let a = ctx.produce(&mut c, &t, 0, idempotent_batch(3, pid, epoch, 0), -1)?;
    let b = ctx.produce(&mut c, &t, 0, idempotent_batch(2, pid, epoch, 3), -1)?;
    let dup = ctx.produce(&mut c, &t, 0, idempotent_batch(3, pid, epoch, 0), -1)?;
    let (_, f) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
    Ok(
        json!({"first": produced(&a), "second": produced(&b), "resend_first": produced(&dup), "high_watermark": f.high_watermark}),
    )
}

fn idem_out_of_order(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let (pid, epoch) = init_pid(&mut c)?;
    let a = ctx.produce(&mut c, &t, 0, idempotent_batch(3, pid, epoch, 0), -1)?;
    let gap = ctx.produce(&mut c, &t, 0, idempotent_batch(1, pid, epoch, 10), -1)?;
    let (_, f) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
    Ok(json!({"first": produced(&a), "gap": produced(&gap), "high_watermark": f.high_watermark}))
}

fn idem_unknown_pid(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    // A producer id the broker never issued, starting mid-stream and at zero.
    let mid = ctx.produce(&mut c, &t, 0, idempotent_batch(1, 987_654_321, 0, 5), -1)?;
    let zero = ctx.produce(&mut c, &t, 0, idempotent_batch(1, 987_654_322, 0, 0), -1)?;
    Ok(json!({"sequence_5": produced(&mid), "sequence_0": produced(&zero)}))
}

fn idem_fenced_epoch(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let (pid, epoch) = init_pid(&mut c)?;
    let a = ctx.produce(&mut c, &t, 0, idempotent_batch(1, pid, epoch + 1, 0), -1)?;
    let old = ctx.produce(&mut c, &t, 0, idempotent_batch(1, pid, epoch, 0), -1)?;
    Ok(json!({"newer_epoch": produced(&a), "older_epoch": produced(&old)}))
}

fn idem_new_epoch_seq(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let (pid, epoch) = init_pid(&mut c)?;
    let a = ctx.produce(&mut c, &t, 0, idempotent_batch(2, pid, epoch, 0), -1)?;
    let bumped = ctx.produce(&mut c, &t, 0, idempotent_batch(1, pid, epoch + 1, 7), -1)?;
    let bumped0 = ctx.produce(&mut c, &t, 0, idempotent_batch(1, pid, epoch + 1, 0), -1)?;
    Ok(
        json!({"first": produced(&a), "new_epoch_sequence_7": produced(&bumped), "new_epoch_sequence_0": produced(&bumped0)}),
    )
}

/// A topic with one partition holding three batches of 3, 2 and 4 records.
fn three_batches(ctx: &Ctx, c: &mut Client) -> Result<String> {
    let t = topic(ctx, c, 1, &[])?;
    for n in [3, 2, 4] {
        let p = ctx.produce(c, &t, 0, batch(n, now_ms()), -1)?;
        anyhow::ensure!(p.error_code == 0, "produce: {}", p.error_code);
    }
    Ok(t)
}

fn fetch_ok(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let (top, f) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
    let (top4, f4) = ctx.fetch(&mut c, &t, 0, 4, FetchOpts::default())?;
    Ok(json!({"from_0": fetched(top, &f), "from_4": fetched(top4, &f4)}))
}

fn fetch_out_of_range(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let (top, f) = ctx.fetch(&mut c, &t, 0, 100, FetchOpts::default())?;
    let (top2, f2) = ctx.fetch(&mut c, &t, 0, -5, FetchOpts::default())?;
    Ok(json!({"offset_100": fetched(top, &f), "offset_minus_5": fetched(top2, &f2)}))
}

fn fetch_max_bytes_tiny(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let (top, f) = ctx.fetch(
        &mut c,
        &t,
        0,
        0,
        FetchOpts {
            max_bytes: 1,
            ..Default::default()
        },
    )?;
    Ok(fetched(top, &f))
}

fn fetch_partition_max_tiny(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let (top, f) = ctx.fetch(
        &mut c,
        &t,
        0,
        0,
        FetchOpts {
            partition_max_bytes: 1,
            ..Default::default()
        },
    )?;
    Ok(fetched(top, &f))
}

fn fetch_partition_max_between(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let first = batch(3, now_ms()).len() as i32;
    let second = batch(2, now_ms()).len() as i32;
    // Room for the first two batches and part of the third.
    let (top, f) = ctx.fetch(
        &mut c,
        &t,
        0,
        0,
        FetchOpts {
            partition_max_bytes: first + second + 10,
            ..Default::default()
        },
    )?;
    Ok(fetched(top, &f))
}

fn fetch_isolation(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let (pid, epoch) = init_pid(&mut c)?;
    ctx.produce(&mut c, &t, 0, idempotent_batch(2, pid, epoch, 0), -1)?;
    let (top0, f0) = ctx.fetch(&mut c, &t, 0, 0, FetchOpts::default())?;
    let (top1, f1) = ctx.fetch(
        &mut c,
        &t,
        0,
        0,
        FetchOpts {
            isolation: 1,
            ..Default::default()
        },
    )?;
    Ok(json!({"read_uncommitted": fetched(top0, &f0), "read_committed": fetched(top1, &f1)}))
}

fn fetch_v13(c: &mut Client, topic_id: Uuid, partition: i32) -> Result<Value> {
    let r = c.send(
        13,
        FetchRequest {
            replica_id: -1,
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            session_epoch: -1,
            topics: vec![FetchTopic {
                topic_id,
                partitions: vec![FetchPartition {
                    partition,
                    current_leader_epoch: -1,
                    fetch_offset: 0,
                    last_fetched_epoch: -1,
                    log_start_offset: -1,
                    partition_max_bytes: 1 << 20,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let t = r.responses.first();
    let p = t
        .and_then(|t| t.partitions.first())
        .cloned()
        .unwrap_or_default();
    Ok(json!({
        "top_error": err(r.error_code),
        "topics": r.responses.len(),
        "echoes_topic_id": t.is_some_and(|t| t.topic_id == topic_id),
        "partition": fetched(r.error_code, &p),
    }))
}

fn fetch_unknown_topic_id(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    fetch_v13(&mut c, Uuid([9; 16]), 0)
}

fn fetch_unknown_topic_name(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let (top, f) = ctx.fetch(&mut c, &ctx.name("nope"), 0, 0, FetchOpts::default())?;
    Ok(fetched(top, &f))
}

fn fetch_unknown_partition(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let (top, f) = ctx.fetch(&mut c, &t, 3, 0, FetchOpts::default())?;
    let m = ctx.metadata(&mut c, Some(&[&t]), false)?;
    let id = m.topics[0].topic_id;
    Ok(json!({"by_name_v12": fetched(top, &f), "by_id_v13": fetch_v13(&mut c, id, 3)?}))
}

fn fetch_at_hw(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let (top, f) = ctx.fetch(&mut c, &t, 0, 9, FetchOpts::default())?;
    Ok(fetched(top, &f))
}

fn list_offsets(c: &mut Client, topic: &str, partition: i32, timestamp: i64) -> Result<Value> {
    list_offsets_v(c, v::LIST_OFFSETS, topic, partition, timestamp)
}

fn list_offsets_v(
    c: &mut Client,
    version: i16,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<Value> {
    let r = c.send(
        version,
        ListOffsetsRequest {
            replica_id: -1,
            isolation_level: 0,
            topics: vec![ListOffsetsTopic {
                name: topic.to_owned(),
                partitions: vec![ListOffsetsPartition {
                    partition_index: partition,
                    current_leader_epoch: -1,
                    timestamp,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .cloned()
        .unwrap_or_default();
    Ok(json!({"error": err(p.error_code), "offset": p.offset, "timestamp": p.timestamp}))
}

/// Keeps the error and offset, and whether a timestamp was given (its value is wall-clock).
fn offset_only(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        let ts = o.remove("timestamp").and_then(|t| t.as_i64()).unwrap_or(-1);
        o.insert("timestamp_given".into(), json!(ts >= 0));
    }
    v
}

fn lo_empty(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    Ok(json!({
        "earliest": list_offsets(&mut c, &t, 0, -2)?,
        "latest": list_offsets(&mut c, &t, 0, -1)?,
        "max_timestamp": list_offsets(&mut c, &t, 0, -3)?,
        "by_time": list_offsets(&mut c, &t, 0, 1_000)?,
    }))
}

fn lo_earliest_latest(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    Ok(json!({
        "earliest": list_offsets(&mut c, &t, 0, -2)?,
        "latest": list_offsets(&mut c, &t, 0, -1)?,
        "v0_latest": offset_only(list_offsets_v(&mut c, 1, &t, 0, -1)?),
    }))
}

fn lo_by_time(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let base = now_ms() - 600_000;
    for i in 0..4 {
        ctx.produce(&mut c, &t, 0, batch_at(base + 10_000 * i), -1)?;
    }
    Ok(json!({
        "before_first": offset_only(list_offsets(&mut c, &t, 0, base - 1)?),
        "exact_second": offset_only(list_offsets(&mut c, &t, 0, base + 10_000)?),
        "between_2_and_3": offset_only(list_offsets(&mut c, &t, 0, base + 25_000)?),
        "after_last": offset_only(list_offsets(&mut c, &t, 0, base + 100_000)?),
        "invalid_negative": offset_only(list_offsets(&mut c, &t, 0, -9)?),
        "timestamp_of_exact_match_is_record_time": list_offsets(&mut c, &t, 0, base + 10_000)?["timestamp"] == json!(base + 10_000),
    }))
}

fn lo_max_timestamp(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let base = now_ms() - 600_000;
    for d in [0, 30_000, 10_000] {
        ctx.produce(&mut c, &t, 0, batch_at(base + d), -1)?;
    }
    let r = list_offsets(&mut c, &t, 0, -3)?;
    Ok(
        json!({"error": r["error"], "offset": r["offset"], "timestamp_is_max": r["timestamp"] == json!(base + 30_000)}),
    )
}

fn lo_unknown_topic(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    Ok(json!({
        "unknown_topic": list_offsets(&mut c, &ctx.name("nope"), 0, -1)?,
        "unknown_partition": list_offsets(&mut c, &t, 5, -1)?,
    }))
}

fn lo_earliest_local(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    delete_records(&mut c, &t, 0, 3)?;
    Ok(json!({
        "earliest_local_v8": list_offsets_v(&mut c, 8, &t, 0, -4)?,
        "earliest_local_v7": list_offsets_v(&mut c, 7, &t, 0, -4)?,
        "max_timestamp_v6": list_offsets_v(&mut c, 6, &t, 0, -3)?,
        "latest_tiered_v9": list_offsets_v(&mut c, 9, &t, 0, -5)?,
        "earliest_v8": list_offsets_v(&mut c, 8, &t, 0, -2)?,
    }))
}

fn delete_records(c: &mut Client, topic: &str, partition: i32, offset: i64) -> Result<Value> {
    let r = c.send(
        v::DELETE_RECORDS,
        DeleteRecordsRequest {
            topics: vec![DeleteRecordsTopic {
                name: topic.to_owned(),
                partitions: vec![DeleteRecordsPartition {
                    partition_index: partition,
                    offset,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            timeout_ms: 30_000,
            ..Default::default()
        },
    )?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .cloned()
        .unwrap_or_default();
    Ok(json!({"error": err(p.error_code), "low_watermark": p.low_watermark}))
}

fn dr_valid(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let d = delete_records(&mut c, &t, 0, 4)?;
    let (top, below) = ctx.fetch(&mut c, &t, 0, 1, FetchOpts::default())?;
    let (top2, at) = ctx.fetch(&mut c, &t, 0, 4, FetchOpts::default())?;
    Ok(json!({
        "delete": d,
        "fetch_below_start": fetched(top, &below),
        "fetch_at_start": fetched(top2, &at),
        "earliest": list_offsets(&mut c, &t, 0, -2)?,
    }))
}

fn dr_beyond_hw(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let d = delete_records(&mut c, &t, 0, 50)?;
    Ok(json!({"delete": d, "earliest": list_offsets(&mut c, &t, 0, -2)?}))
}

fn dr_to_hw(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = three_batches(ctx, &mut c)?;
    let d = delete_records(&mut c, &t, 0, -1)?;
    let (top, f) = ctx.fetch(&mut c, &t, 0, 9, FetchOpts::default())?;
    Ok(json!({"delete": d, "fetch_at_hw": fetched(top, &f)}))
}

fn dr_unknown_topic(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    Ok(json!({
        "unknown_topic": delete_records(&mut c, &ctx.name("nope"), 0, 0)?,
        "unknown_partition": delete_records(&mut c, &t, 4, 0)?,
    }))
}

/// OffsetForLeaderEpoch (v4) for one partition: `(current_leader_epoch, leader_epoch)`.
fn epoch_end(
    c: &mut Client,
    topic: &str,
    partition: i32,
    current: i32,
    epoch: i32,
) -> Result<Value> {
    let r = c.send(
        4,
        OffsetForLeaderEpochRequest {
            replica_id: -1,
            topics: vec![OffsetForLeaderTopic {
                topic: topic.to_owned(),
                partitions: vec![OffsetForLeaderPartition {
                    partition,
                    current_leader_epoch: current,
                    leader_epoch: epoch,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let p = r
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .cloned()
        .unwrap_or_default();
    Ok(
        json!({"error": err(p.error_code), "leader_epoch": p.leader_epoch, "end_offset": p.end_offset}),
    )
}

/// Where the current leader epoch ends (the log end) on an empty and a written partition,
/// undefined epochs, a client ahead of the broker's epoch, and an unknown partition.
fn ofle_lookups(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let t = topic(ctx, &mut c, 1, &[])?;
    let md = ctx.metadata(&mut c, Some(&[t.as_str()]), false)?;
    let epoch = md
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .map_or(-1, |p| p.leader_epoch);
    let empty = epoch_end(&mut c, &t, 0, epoch, epoch)?;
    for _ in 0..3 {
        ctx.produce(&mut c, &t, 0, batch(2, now_ms()), -1)?;
    }
    Ok(json!({
        "metadata_epoch": epoch,
        "empty": empty,
        "current": epoch_end(&mut c, &t, 0, epoch, epoch)?,
        "no_current_given": epoch_end(&mut c, &t, 0, -1, epoch)?,
        "newer_epoch": epoch_end(&mut c, &t, 0, -1, epoch + 5)?,
        "undefined_epoch": epoch_end(&mut c, &t, 0, -1, -1)?,
        "client_ahead": epoch_end(&mut c, &t, 0, epoch + 1, epoch)?,
        "unknown_partition": epoch_end(&mut c, &t, 7, -1, epoch)?,
        "unknown_topic": epoch_end(&mut c, &ctx.name("missing"), 0, -1, 0)?,
    }))
}
