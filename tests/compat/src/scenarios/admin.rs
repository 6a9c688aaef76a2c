//! Admin scenarios: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs,
//! AlterConfigs, IncrementalAlterConfigs, DescribeCluster and Metadata.

use anyhow::Result;
use serde_json::{json, Value};
use skein_protocol::messages::alter_configs_request::{
    AlterConfigsRequest, AlterConfigsResource, AlterableConfig,
};
use skein_protocol::messages::create_partitions_request::{
    CreatePartitionsRequest, CreatePartitionsTopic,
};
use skein_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreateTopicsRequest,
};
use skein_protocol::messages::create_topics_response::CreatableTopicResult;
use skein_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use skein_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use skein_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use skein_protocol::messages::incremental_alter_configs_request as iac;
use skein_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use skein_protocol::Uuid;

use super::Scenario;
use crate::{creatable, create_request, err, present, v, Client, Ctx};

pub fn scenarios() -> Vec<Scenario> {
    macro_rules! s {
        ($($name:literal => $f:ident,)*) => { vec![$(Scenario { name: $name, run: $f },)*] };
    }
    s![
        "admin.create_topic_ok" => create_ok,
        "admin.create_topic_broker_defaults" => create_defaults,
        "admin.create_topic_bad_chars" => create_bad_chars,
        "admin.create_topic_name_too_long" => create_too_long,
        "admin.create_topic_name_dot" => create_dot,
        "admin.create_topic_zero_partitions" => create_zero_partitions,
        "admin.create_topic_rf_zero" => create_rf_zero,
        "admin.create_topic_rf_too_large" => create_rf_too_large,
        "admin.create_topic_unknown_config" => create_unknown_config,
        "admin.create_topic_bad_config_value" => create_bad_config_value,
        "admin.create_topic_already_exists" => create_exists,
        "admin.create_topic_duplicate_in_request" => create_duplicate,
        "admin.create_topic_validate_only" => create_validate_only,
        "admin.create_topic_returned_configs" => create_returned_configs,
        "admin.delete_topic_unknown" => delete_unknown,
        "admin.delete_topic_ok" => delete_ok,
        "admin.delete_topic_unknown_id" => delete_unknown_id,
        "admin.create_partitions_grow" => partitions_grow,
        "admin.create_partitions_shrink" => partitions_shrink,
        "admin.create_partitions_same_count" => partitions_same,
        "admin.create_partitions_unknown_topic" => partitions_unknown,
        "admin.create_partitions_validate_only" => partitions_validate_only,
        "admin.describe_configs_topic" => describe_topic_configs,
        "admin.describe_configs_unknown_topic" => describe_unknown_topic,
        "admin.describe_configs_unknown_key" => describe_unknown_key,
        "admin.describe_configs_broker" => describe_broker,
        "admin.alter_configs_legacy" => alter_legacy,
        "admin.incremental_alter_set_delete" => iac_set_delete,
        "admin.incremental_alter_bad_value" => iac_bad_value,
        "admin.incremental_alter_unknown_key" => iac_unknown_key,
        "admin.incremental_alter_append_non_list" => iac_append_non_list,
        "admin.incremental_alter_unknown_topic" => iac_unknown_topic,
        "admin.incremental_alter_validate_only" => iac_validate_only,
        "admin.describe_cluster" => describe_cluster,
        "admin.metadata_unknown_no_autocreate" => metadata_unknown,
        "admin.metadata_unknown_autocreate" => metadata_autocreate,
        "admin.metadata_bad_name_autocreate" => metadata_bad_name_autocreate,
        "admin.metadata_all_topics" => metadata_all,
        "admin.metadata_by_topic_id" => metadata_by_id,
        "admin.create_topic_with_assignment" => create_with_assignment,
    ]
}

fn topic_result(t: &CreatableTopicResult) -> Value {
    json!({"error": err(t.error_code), "message": present(&t.error_message)})
}

fn create_one(
    ctx: &Ctx,
    name: &str,
    partitions: i32,
    rf: i16,
    configs: &[(&str, &str)],
) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(
        v::CREATE_TOPICS,
        create_request(name, partitions, rf, configs),
    )?;
    Ok(topic_result(&r.topics[0]))
}

fn partition_count(ctx: &Ctx, c: &mut Client, topic: &str) -> Result<Value> {
    let m = ctx.metadata(c, Some(&[topic]), false)?;
    let t = &m.topics[0];
    Ok(json!({"error": err(t.error_code), "partitions": t.partitions.len()}))
}

fn create_ok(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    let r = c.send(v::CREATE_TOPICS, create_request(&name, 3, 1, &[]))?;
    let t = &r.topics[0];
    ctx.wait_ready(&mut c, &name, 3)?;
    Ok(json!({
        "create": topic_result(t),
        "num_partitions": t.num_partitions,
        "replication_factor": t.replication_factor,
        "topic_id_set": t.topic_id != Uuid::default(),
        "metadata": partition_count(ctx, &mut c, &name)?,
    }))
}

fn create_defaults(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    let r = c.send(v::CREATE_TOPICS, create_request(&name, -1, -1, &[]))?;
    let t = &r.topics[0];
    Ok(json!({
        "create": topic_result(t),
        "num_partitions": t.num_partitions,
        "replication_factor": t.replication_factor,
    }))
}

fn create_bad_chars(ctx: &Ctx) -> Result<Value> {
    create_one(ctx, &ctx.name("bad name!"), 1, 1, &[])
}

fn create_too_long(ctx: &Ctx) -> Result<Value> {
    create_one(ctx, &ctx.name(&"x".repeat(250)), 1, 1, &[])
}

fn create_dot(ctx: &Ctx) -> Result<Value> {
    Ok(
        json!({"dot": create_one(ctx, ".", 1, 1, &[])?, "dotdot": create_one(ctx, "..", 1, 1, &[])?}),
    )
}

fn create_zero_partitions(ctx: &Ctx) -> Result<Value> {
    create_one(ctx, &ctx.name("t"), 0, 1, &[])
}

fn create_rf_zero(ctx: &Ctx) -> Result<Value> {
    create_one(ctx, &ctx.name("t"), 1, 0, &[])
}

fn create_rf_too_large(ctx: &Ctx) -> Result<Value> {
    create_one(ctx, &ctx.name("t"), 1, 3, &[])
}

fn create_unknown_config(ctx: &Ctx) -> Result<Value> {
    create_one(ctx, &ctx.name("t"), 1, 1, &[("no.such.config", "1")])
}

fn create_bad_config_value(ctx: &Ctx) -> Result<Value> {
    Ok(json!({
        "retention.ms=abc": create_one(ctx, &ctx.name("a"), 1, 1, &[("retention.ms", "abc")])?,
        "cleanup.policy=bogus": create_one(ctx, &ctx.name("b"), 1, 1, &[("cleanup.policy", "bogus")])?,
        "min.insync.replicas=0": create_one(ctx, &ctx.name("c"), 1, 1, &[("min.insync.replicas", "0")])?,
    }))
}

fn create_exists(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    let r = c.send(v::CREATE_TOPICS, create_request(&name, 1, 1, &[]))?;
    Ok(topic_result(&r.topics[0]))
}

fn create_duplicate(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    let r = c.send(
        v::CREATE_TOPICS,
        CreateTopicsRequest {
            topics: vec![creatable(&name, 1, 1, &[]), creatable(&name, 2, 1, &[])],
            timeout_ms: 30_000,
            validate_only: false,
            ..Default::default()
        },
    )?;
    let results: Vec<Value> = r.topics.iter().map(topic_result).collect();
    Ok(json!({"results": results, "afterwards": partition_count(ctx, &mut c, &name)?}))
}

fn create_validate_only(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    let mut req = create_request(&name, 4, 1, &[("retention.ms", "1000")]);
    req.validate_only = true;
    let r = c.send(v::CREATE_TOPICS, req)?;
    let t = &r.topics[0];
    let mut bad = create_request(&ctx.name("u"), 1, 1, &[("retention.ms", "abc")]);
    bad.validate_only = true;
    let b = c.send(v::CREATE_TOPICS, bad)?;
    Ok(json!({
        "create": topic_result(t),
        "num_partitions": t.num_partitions,
        "afterwards": partition_count(ctx, &mut c, &name)?,
        "bad_config": topic_result(&b.topics[0]),
    }))
}

/// CreateTopics v5+ returns the new topic's configs; compare a few well-known ones.
fn create_returned_configs(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    let r = c.send(
        v::CREATE_TOPICS,
        create_request(&name, 1, 1, &[("retention.ms", "123456")]),
    )?;
    let t = &r.topics[0];
    let keys = [
        "retention.ms",
        "cleanup.policy",
        "max.message.bytes",
        "segment.bytes",
        "compression.type",
    ];
    let mut out = serde_json::Map::new();
    for c in t.configs.iter().flatten() {
        if keys.contains(&c.name.as_str()) {
            out.insert(
                c.name.clone(),
                json!({"value": c.value, "source": source(c.config_source), "read_only": c.read_only}),
            );
        }
    }
    Ok(
        json!({"create": topic_result(t), "configs": out, "config_count_nonzero": t.configs.as_ref().is_some_and(|c| !c.is_empty())}),
    )
}

fn delete_unknown(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(
        v::DELETE_TOPICS,
        DeleteTopicsRequest {
            topics: vec![DeleteTopicState {
                name: Some(ctx.name("nope")),
                topic_id: Uuid::default(),
                ..Default::default()
            }],
            timeout_ms: 30_000,
            ..Default::default()
        },
    )?;
    let t = &r.responses[0];
    Ok(json!({"error": err(t.error_code)}))
}

fn delete_ok(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 2, &[])?;
    let r = c.send(
        v::DELETE_TOPICS,
        DeleteTopicsRequest {
            topics: vec![DeleteTopicState {
                name: Some(name.clone()),
                topic_id: Uuid::default(),
                ..Default::default()
            }],
            timeout_ms: 30_000,
            ..Default::default()
        },
    )?;
    let t = &r.responses[0];
    let gone = crate::wait_for("topic gone", std::time::Duration::from_secs(30), || {
        let m = ctx.metadata(&mut c, Some(&[&name]), false)?;
        Ok((m.topics[0].error_code != 0).then(|| m.topics[0].error_code))
    })?;
    Ok(
        json!({"error": err(t.error_code), "topic_id_set": t.topic_id != Uuid::default(), "metadata_after": err(gone)}),
    )
}

fn delete_unknown_id(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(
        v::DELETE_TOPICS,
        DeleteTopicsRequest {
            topics: vec![DeleteTopicState {
                name: None,
                topic_id: Uuid([7; 16]),
                ..Default::default()
            }],
            timeout_ms: 30_000,
            ..Default::default()
        },
    )?;
    let t = &r.responses[0];
    Ok(json!({"error": err(t.error_code), "name": t.name}))
}

fn create_partitions(
    ctx: &Ctx,
    c: &mut Client,
    topic: &str,
    count: i32,
    validate_only: bool,
) -> Result<Value> {
    let r = c.send(
        v::CREATE_PARTITIONS,
        CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: topic.to_owned(),
                count,
                assignments: None,
                ..Default::default()
            }],
            timeout_ms: 30_000,
            validate_only,
            ..Default::default()
        },
    )?;
    let _ = ctx;
    let t = &r.results[0];
    Ok(json!({"error": err(t.error_code)}))
}

fn partitions_grow(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 2, &[])?;
    let r = create_partitions(ctx, &mut c, &name, 5, false)?;
    ctx.wait_ready(&mut c, &name, 5)?;
    Ok(json!({"result": r, "metadata": partition_count(ctx, &mut c, &name)?}))
}

fn partitions_shrink(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 3, &[])?;
    let r = create_partitions(ctx, &mut c, &name, 2, false)?;
    Ok(json!({"result": r, "metadata": partition_count(ctx, &mut c, &name)?}))
}

fn partitions_same(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 3, &[])?;
    create_partitions(ctx, &mut c, &name, 3, false)
}

fn partitions_unknown(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    create_partitions(ctx, &mut c, &ctx.name("nope"), 3, false)
}

fn partitions_validate_only(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    let r = create_partitions(ctx, &mut c, &name, 4, true)?;
    Ok(json!({"result": r, "metadata": partition_count(ctx, &mut c, &name)?}))
}

/// A config's source: a topic override, or anything set for the broker (server.properties,
/// dynamic broker defaults or built-in defaults: which of these holds a broker-wide value
/// depends on how each broker was deployed, and the reference spells Skein's defaults out
/// in its server.properties).
fn source(s: i8) -> &'static str {
    match s {
        1 => "topic",
        2..=5 => "broker_or_default",
        _ => "other",
    }
}

/// Describes until `done` holds (config changes reach a KRaft broker's view asynchronously)
/// or 15 s pass, and returns the last answer.
fn describe_until(
    c: &mut Client,
    name: &str,
    keys: &[&str],
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let d = describe(c, TOPIC, name, Some(keys.to_vec()))?;
        if done(&d) || std::time::Instant::now() > deadline {
            return Ok(d);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn value_is(d: &Value, key: &str, want: &str) -> bool {
    d["configs"][key]["value"].as_str() == Some(want)
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

fn describe(c: &mut Client, kind: i8, name: &str, keys: Option<Vec<&str>>) -> Result<Value> {
    let r = c.send(
        v::DESCRIBE_CONFIGS,
        DescribeConfigsRequest {
            resources: vec![DescribeConfigsResource {
                resource_type: kind,
                resource_name: name.to_owned(),
                configuration_keys: keys.map(|k| k.into_iter().map(str::to_owned).collect()),
                ..Default::default()
            }],
            include_synonyms: false,
            include_documentation: false,
            ..Default::default()
        },
    )?;
    let res = &r.results[0];
    let mut configs = serde_json::Map::new();
    for c in &res.configs {
        configs.insert(
            c.name.clone(),
            json!({"value": c.value, "source": source(c.config_source), "default": c.is_default, "read_only": c.read_only, "sensitive": c.is_sensitive}),
        );
    }
    Ok(json!({"error": err(res.error_code), "configs": configs}))
}

const TOPIC_KEYS: [&str; 8] = [
    "retention.ms",
    "cleanup.policy",
    "max.message.bytes",
    "segment.bytes",
    "min.insync.replicas",
    "message.timestamp.type",
    "compression.type",
    "retention.bytes",
];

fn describe_topic_configs(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[("retention.ms", "86400000")])?;
    describe(&mut c, TOPIC, &name, Some(TOPIC_KEYS.to_vec()))
}

fn describe_unknown_topic(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    describe(&mut c, TOPIC, &ctx.name("nope"), None)
}

fn describe_unknown_key(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    describe(&mut c, TOPIC, &name, Some(vec!["no.such.config"]))
}

fn describe_broker(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let m = ctx.metadata(&mut c, Some(&[]), false)?;
    let id = m.brokers[0].node_id.to_string();
    let mut d = describe(
        &mut c,
        BROKER,
        &id,
        Some(vec![
            "num.partitions",
            "auto.create.topics.enable",
            "default.replication.factor",
            "message.max.bytes",
            "log.retention.hours",
        ]),
    )?;
    // Values are set per deployment; the error and which keys answer are what matters.
    if let Some(cfgs) = d.get_mut("configs").and_then(Value::as_object_mut) {
        for (_, c) in cfgs.iter_mut() {
            if let Some(o) = c.as_object_mut() {
                o.remove("source");
                o.remove("default");
            }
        }
    }
    Ok(d)
}

fn alter_legacy(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[("retention.ms", "86400000")])?;
    let r = c.send(
        1,
        AlterConfigsRequest {
            resources: vec![AlterConfigsResource {
                resource_type: TOPIC,
                resource_name: name.clone(),
                configs: vec![AlterableConfig {
                    name: "max.message.bytes".into(),
                    value: Some("50000".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            validate_only: false,
            ..Default::default()
        },
    )?;
    let res = &r.responses[0];
    // Legacy AlterConfigs replaces the whole set: retention.ms goes back to its default.
    Ok(json!({
        "error": err(res.error_code),
        "after": describe_until(&mut c, &name, &["max.message.bytes", "retention.ms"], |d| value_is(d, "max.message.bytes", "50000"))?,
    }))
}

fn iac_request(
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> iac::IncrementalAlterConfigsRequest {
    iac::IncrementalAlterConfigsRequest {
        resources: vec![iac::AlterConfigsResource {
            resource_type: TOPIC,
            resource_name: name.to_owned(),
            configs: ops
                .iter()
                .map(|(k, op, v)| iac::AlterableConfig {
                    name: (*k).to_owned(),
                    config_operation: *op,
                    value: v.map(str::to_owned),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        validate_only,
        ..Default::default()
    }
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;

fn iac(
    c: &mut Client,
    name: &str,
    ops: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> Result<Value> {
    let r = c.send(
        v::INCREMENTAL_ALTER_CONFIGS,
        iac_request(name, ops, validate_only),
    )?;
    let res = &r.responses[0];
    Ok(json!({"error": err(res.error_code), "message": present(&res.error_message)}))
}

fn iac_set_delete(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    let set = iac(
        &mut c,
        &name,
        &[
            ("retention.ms", SET, Some("1234567")),
            ("cleanup.policy", SET, Some("compact")),
        ],
        false,
    )?;
    let after_set = describe_until(&mut c, &name, &["retention.ms", "cleanup.policy"], |d| {
        value_is(d, "retention.ms", "1234567")
    })?;
    let del = iac(&mut c, &name, &[("retention.ms", DELETE, None)], false)?;
    let after_delete = describe_until(&mut c, &name, &["retention.ms", "cleanup.policy"], |d| {
        !value_is(d, "retention.ms", "1234567")
    })?;
    Ok(json!({"set": set, "after_set": after_set, "delete": del, "after_delete": after_delete}))
}

fn iac_bad_value(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    Ok(json!({
        "retention.ms=abc": iac(&mut c, &name, &[("retention.ms", SET, Some("abc"))], false)?,
        "cleanup.policy=bogus": iac(&mut c, &name, &[("cleanup.policy", SET, Some("bogus"))], false)?,
        "after": describe(&mut c, TOPIC, &name, Some(vec!["retention.ms", "cleanup.policy"]))?,
    }))
}

fn iac_unknown_key(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    iac(&mut c, &name, &[("no.such.config", SET, Some("1"))], false)
}

fn iac_append_non_list(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    Ok(json!({
        "append retention.ms": iac(&mut c, &name, &[("retention.ms", APPEND, Some("5"))], false)?,
        "append cleanup.policy": iac(&mut c, &name, &[("cleanup.policy", APPEND, Some("compact"))], false)?,
        "after": describe_until(&mut c, &name, &["cleanup.policy"], |d| value_is(d, "cleanup.policy", "delete,compact"))?,
    }))
}

fn iac_unknown_topic(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    iac(
        &mut c,
        &ctx.name("nope"),
        &[("retention.ms", SET, Some("1000"))],
        false,
    )
}

fn iac_validate_only(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 1, &[])?;
    Ok(json!({
        "ok": iac(&mut c, &name, &[("retention.ms", SET, Some("1000"))], true)?,
        "bad": iac(&mut c, &name, &[("retention.ms", SET, Some("abc"))], true)?,
        "after": describe(&mut c, TOPIC, &name, Some(vec!["retention.ms"]))?,
    }))
}

fn describe_cluster(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(
        1,
        DescribeClusterRequest {
            include_cluster_authorized_operations: false,
            endpoint_type: 1,
            ..Default::default()
        },
    )?;
    let m = ctx.metadata(&mut c, Some(&[]), false)?;
    Ok(json!({
        "error": err(r.error_code),
        "cluster_id_set": !r.cluster_id.is_empty(),
        "brokers": r.brokers.len(),
        "controller_is_a_broker": r.brokers.iter().any(|b| b.broker_id == r.controller_id),
        "same_cluster_id_as_metadata": m.cluster_id.as_deref() == Some(r.cluster_id.as_str()),
        "metadata_brokers": m.brokers.len(),
    }))
}

fn metadata_unknown(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let m = ctx.metadata(&mut c, Some(&[&ctx.name("nope")]), false)?;
    let t = &m.topics[0];
    Ok(json!({"error": err(t.error_code), "partitions": t.partitions.len(), "name": t.name}))
}

fn metadata_autocreate(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("auto");
    let mut c = ctx.client()?;
    let m = ctx.metadata(&mut c, Some(&[&name]), true)?;
    let t = &m.topics[0];
    // Kafka's first answer is LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION depending
    // on how far its controller got; both are retriable and mean "not yet".
    let first = match t.error_code {
        0 => "NONE",
        3 | 5 => "retriable (UNKNOWN_TOPIC_OR_PARTITION or LEADER_NOT_AVAILABLE)",
        _ => "other",
    };
    let led = !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader_id >= 0);
    ctx.wait_ready(&mut c, &name, 3)?;
    Ok(json!({
        "first_answer": first,
        "first_answer_has_leaders": led,
        "later": partition_count(ctx, &mut c, &name)?,
    }))
}

fn metadata_bad_name_autocreate(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let m = ctx.metadata(&mut c, Some(&[&ctx.name("bad name!")]), true)?;
    Ok(json!({"error": err(m.topics[0].error_code)}))
}

/// Metadata for all topics lists a new topic with its partitions and leaders. (Whether an
/// internal topic is listed depends on whether groups were used before on that broker, on
/// both, so it is not observed.)
fn metadata_all(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 2, &[])?;
    let m = ctx.metadata(&mut c, None, false)?;
    let t = m
        .topics
        .iter()
        .find(|t| t.name.as_deref() == Some(name.as_str()));
    Ok(json!({
        "listed": t.is_some(),
        "partitions": t.map(|t| t.partitions.len()),
        "leaders_known": t.is_some_and(|t| t.partitions.iter().all(|p| p.leader_id >= 0)),
    }))
}

fn metadata_by_id(ctx: &Ctx) -> Result<Value> {
    let name = ctx.name("t");
    let mut c = ctx.client()?;
    ctx.create_topic(&mut c, &name, 2, &[])?;
    let id = ctx.metadata(&mut c, Some(&[&name]), false)?.topics[0].topic_id;
    let by_id = |c: &mut Client, id: Uuid| -> Result<Value> {
        let m = c.send(
            v::METADATA,
            MetadataRequest {
                topics: Some(vec![MetadataRequestTopic {
                    topic_id: id,
                    name: None,
                    ..Default::default()
                }]),
                allow_auto_topic_creation: false,
                ..Default::default()
            },
        )?;
        let t = m.topics.first();
        Ok(json!({
            "topics": m.topics.len(),
            "error": t.map(|t| err(t.error_code)),
            "name": t.and_then(|t| t.name.clone()),
            "partitions": t.map(|t| t.partitions.len()),
        }))
    };
    Ok(json!({"known_id": by_id(&mut c, id)?, "unknown_id": by_id(&mut c, Uuid([3; 16]))?}))
}

fn create_with_assignment(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let node = ctx.metadata(&mut c, Some(&[]), false)?.brokers[0].node_id;
    let assign = |n: i32, parts: &[Vec<i32>]| {
        let mut t = creatable(&ctx.name(&format!("t{n}")), -1, -1, &[]);
        t.assignments = parts
            .iter()
            .enumerate()
            .map(|(i, b)| CreatableReplicaAssignment {
                partition_index: i as i32,
                broker_ids: b.clone(),
                ..Default::default()
            })
            .collect();
        t
    };
    let mut out = serde_json::Map::new();
    for (label, t) in [
        (
            "two_partitions_on_the_broker",
            assign(1, &[vec![node], vec![node]]),
        ),
        ("unknown_broker", assign(2, &[vec![node + 100]])),
    ] {
        let r = c.send(
            v::CREATE_TOPICS,
            CreateTopicsRequest {
                topics: vec![t],
                timeout_ms: 30_000,
                validate_only: false,
                ..Default::default()
            },
        )?;
        out.insert(label.into(), json!({"error": err(r.topics[0].error_code), "num_partitions": r.topics[0].num_partitions}));
    }
    let mut both = assign(3, &[vec![node]]);
    both.num_partitions = 1;
    let r = c.send(
        v::CREATE_TOPICS,
        CreateTopicsRequest {
            topics: vec![both],
            timeout_ms: 30_000,
            validate_only: false,
            ..Default::default()
        },
    )?;
    out.insert(
        "count_and_assignment".into(),
        json!({"error": err(r.topics[0].error_code)}),
    );
    Ok(Value::Object(out))
}
