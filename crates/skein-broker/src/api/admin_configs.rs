//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and describing the
//! broker's own settings).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use skein_protocol::messages::alter_configs_request::AlterConfigsRequest;
use skein_protocol::messages::alter_configs_response::{
    AlterConfigsResourceResponse, AlterConfigsResponse,
};
use skein_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use skein_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
    DescribeConfigsSynonym,
};
use skein_protocol::messages::incremental_alter_configs_request::IncrementalAlterConfigsRequest;
use skein_protocol::messages::incremental_alter_configs_response::{
    AlterConfigsResourceResponse as IncrementalResult, IncrementalAlterConfigsResponse,
};

use crate::broker::{Broker, Topic};
use crate::config::{topic_def, validate_topic_setting, ConfigSource, ConfigType, TOPIC_CONFIGS};
use crate::controller_link::ControllerCall;
use crate::error::{ApiError, ErrorCode};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Kafka's replication throttles (KIP-73), which `kafka-reassign-partitions --verify` clears
/// once a move is done. Skein does not throttle replication, so none is ever set, and
/// deleting one is a no-op, as deleting an unset config is in Kafka.
const THROTTLE_CONFIGS: &[&str] = &[
    "leader.replication.throttled.rate",
    "follower.replication.throttled.rate",
    "replica.alter.log.dirs.io.max.bytes.per.second",
    "leader.replication.throttled.replicas",
    "follower.replication.throttled.replicas",
];

/// True when every operation deletes a replication throttle (see [`THROTTLE_CONFIGS`]).
fn only_clears_throttles(
    configs: &[skein_protocol::messages::incremental_alter_configs_request::AlterableConfig],
) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|c| c.config_operation == OP_DELETE && THROTTLE_CONFIGS.contains(&c.name.as_str()))
}

struct Entry {
    name: String,
    value: String,
    source: ConfigSource,
    ty: ConfigType,
    doc: &'static str,
    read_only: bool,
    synonyms: Vec<(String, String, ConfigSource)>,
}

fn topic_entries(broker: &Broker, topic: &Topic) -> Vec<Entry> {
    let tc = topic.config();
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            let (value, source) = tc.value(&broker.config, d);
            let mut synonyms = Vec::new();
            if let Some(v) = tc.overrides.get(d.name) {
                synonyms.push((d.name.to_string(), v.clone(), ConfigSource::DynamicTopic));
            }
            if let Some(v) = broker.config.explicit.get(d.broker_key) {
                synonyms.push((
                    d.broker_key.to_string(),
                    v.clone(),
                    ConfigSource::StaticBroker,
                ));
            }
            synonyms.push((
                d.broker_key.to_string(),
                d.default.to_string(),
                ConfigSource::Default,
            ));
            Entry {
                name: d.name.to_string(),
                value,
                source,
                ty: d.ty,
                doc: d.doc,
                read_only: false,
                synonyms,
            }
        })
        .collect()
}

fn broker_entries(broker: &Broker) -> Vec<Entry> {
    broker
        .config
        .describe()
        .into_iter()
        .map(|(name, value, source, ty, doc)| Entry {
            synonyms: vec![(name.clone(), value.clone(), source)],
            name,
            value,
            source,
            ty,
            doc,
            read_only: true,
        })
        .collect()
}

pub fn describe(
    broker: &Arc<Broker>,
    version: i16,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for r in req.resources {
        let mut result = DescribeConfigsResult {
            resource_type: r.resource_type,
            resource_name: r.resource_name.clone(),
            error_message: None,
            ..Default::default()
        };
        let entries = match r.resource_type {
            RESOURCE_TOPIC => match broker.topic(&r.resource_name) {
                Some(topic) => Ok(topic_entries(broker, &topic)),
                None => Err(ApiError::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("Topic {} does not exist.", r.resource_name),
                )),
            },
            RESOURCE_BROKER => {
                if r.resource_name.is_empty() || r.resource_name == broker.node_id().to_string() {
                    Ok(broker_entries(broker))
                } else {
                    Err(ApiError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!(
                            "Unexpected broker id, expected {} but received {}",
                            broker.node_id(),
                            r.resource_name
                        ),
                    ))
                }
            }
            other => Err(ApiError::new(
                ErrorCode::INVALID_REQUEST,
                format!("Unsupported resource type {other}"),
            )),
        };
        match entries {
            Err(e) => {
                result.error_code = e.code.code();
                result.error_message = Some(e.message);
            }
            Ok(entries) => {
                let keys: Option<HashSet<String>> =
                    r.configuration_keys.map(|k| k.into_iter().collect());
                result.configs = entries
                    .into_iter()
                    .filter(|e| keys.as_ref().is_none_or(|k| k.contains(&e.name)))
                    .map(|e| DescribeConfigsResourceResult {
                        // Secrets are flagged and never shown, as Kafka does.
                        is_sensitive: crate::config::is_sensitive(&e.name),
                        value: (!crate::config::is_sensitive(&e.name)).then_some(e.value),
                        name: e.name,
                        read_only: e.read_only,
                        is_default: e.source == ConfigSource::Default,
                        config_source: e.source as i8,
                        synonyms: if version >= 1 && req.include_synonyms {
                            e.synonyms
                                .into_iter()
                                .map(|(name, value, source)| DescribeConfigsSynonym {
                                    value: (!crate::config::is_sensitive(&name)).then_some(value),
                                    name,
                                    source: source as i8,
                                    ..Default::default()
                                })
                                .collect()
                        } else {
                            Vec::new()
                        },
                        config_type: e.ty as i8,
                        documentation: if req.include_documentation {
                            Some(e.doc.to_string())
                        } else {
                            None
                        },
                        ..Default::default()
                    })
                    .collect();
            }
        }
        resp.results.push(result);
    }
    resp
}

fn not_topic(resource_type: i8) -> ApiError {
    if resource_type == RESOURCE_BROKER {
        ApiError::new(
            ErrorCode::INVALID_REQUEST,
            "Broker configs cannot be changed while Skein runs; set them in the config file or flags and restart.",
        )
    } else {
        ApiError::new(
            ErrorCode::INVALID_REQUEST,
            format!("Unsupported resource type {resource_type}"),
        )
    }
}

fn find_topic(broker: &Broker, name: &str) -> Result<Arc<Topic>, ApiError> {
    broker.topic(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("Topic {name} does not exist."),
        )
    })
}

fn apply(
    broker: &Broker,
    topic: &Arc<Topic>,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), ApiError> {
    if validate_only {
        return Ok(());
    }
    broker.set_topic_config(topic, overrides)
}

pub fn alter(broker: &Arc<Broker>, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for r in req.resources {
        let outcome = (|| -> Result<(), ApiError> {
            if r.resource_type != RESOURCE_TOPIC {
                return Err(not_topic(r.resource_type));
            }
            let topic = find_topic(broker, &r.resource_name)?;
            // The legacy API replaces the whole set of overrides.
            let mut overrides = BTreeMap::new();
            for c in &r.configs {
                let Some(value) = &c.value else {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!("Null value not supported for {}", c.name),
                    ));
                };
                validate_topic_setting(&c.name, value)
                    .map_err(|m| ApiError::new(ErrorCode::INVALID_CONFIG, m))?;
                overrides.insert(c.name.clone(), value.clone());
            }
            apply(broker, &topic, overrides, req.validate_only)
        })();
        let mut result = AlterConfigsResourceResponse {
            resource_type: r.resource_type,
            resource_name: r.resource_name,
            error_message: None,
            ..Default::default()
        };
        if let Err(e) = outcome {
            result.error_code = e.code.code();
            result.error_message = Some(e.message);
        }
        resp.responses.push(result);
    }
    resp
}

/// Broker configs that may change while Skein runs, as Kafka's cluster-wide dynamic defaults
/// (IncrementalAlterConfigs on the broker resource ""): kept in the metadata log.
const CLUSTER_DYNAMIC: &[&str] = &["unclean.leader.election.enable"];

fn is_cluster_dynamic(
    r: &skein_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
) -> bool {
    r.resource_name.is_empty()
        && !r.configs.is_empty()
        && r.configs
            .iter()
            .all(|c| CLUSTER_DYNAMIC.contains(&c.name.as_str()))
}

/// Sets or deletes cluster-wide dynamic broker defaults (SET and DELETE only).
fn alter_cluster_default(
    broker: &Arc<Broker>,
    r: &skein_protocol::messages::incremental_alter_configs_request::AlterConfigsResource,
    validate_only: bool,
) -> Result<(), ApiError> {
    let mut ops = Vec::new();
    let mut seen = HashSet::new();
    for c in &r.configs {
        if !seen.insert(c.name.clone()) {
            return Err(ApiError::new(
                ErrorCode::INVALID_REQUEST,
                format!("Error due to duplicate config keys: {}", c.name),
            ));
        }
        match c.config_operation {
            OP_SET => {
                let value = c.value.clone().ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!("Null value not supported for {}", c.name),
                    )
                })?;
                validate_topic_setting(&c.name, &value)
                    .map_err(|m| ApiError::new(ErrorCode::INVALID_CONFIG, m))?;
                ops.push((c.name.clone(), Some(value.trim().to_string())));
            }
            OP_DELETE => ops.push((c.name.clone(), None)),
            other => {
                return Err(ApiError::new(
                    ErrorCode::INVALID_CONFIG,
                    format!("Config operation {other} is not allowed for {}", c.name),
                ))
            }
        }
    }
    if validate_only {
        return Ok(());
    }
    broker.controller_call_blocking(ControllerCall::AlterBrokerConfig {
        name: String::new(),
        ops,
    })?;
    Ok(())
}

pub fn incremental_alter(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for r in req.resources {
        let outcome = (|| -> Result<(), ApiError> {
            if r.resource_type == RESOURCE_BROKER && is_cluster_dynamic(&r) {
                return alter_cluster_default(broker, &r, req.validate_only);
            }
            if only_clears_throttles(&r.configs) {
                if r.resource_type == RESOURCE_TOPIC {
                    find_topic(broker, &r.resource_name)?;
                    return Ok(());
                }
                if r.resource_type == RESOURCE_BROKER {
                    return Ok(());
                }
            }
            if r.resource_type != RESOURCE_TOPIC {
                return Err(not_topic(r.resource_type));
            }
            let topic = find_topic(broker, &r.resource_name)?;
            let current = topic.config();
            let mut overrides: BTreeMap<String, String> =
                current.overrides.clone().into_iter().collect();
            let mut seen = HashSet::new();
            for c in &r.configs {
                if !seen.insert(c.name.clone()) {
                    return Err(ApiError::new(
                        ErrorCode::INVALID_REQUEST,
                        format!("Error due to duplicate config keys: {}", c.name),
                    ));
                }
                let def = topic_def(&c.name).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::INVALID_CONFIG,
                        format!("Unknown topic config name: {}", c.name),
                    )
                })?;
                match c.config_operation {
                    OP_SET => {
                        let value = c.value.clone().ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::INVALID_REQUEST,
                                format!("Null value not supported for {}", c.name),
                            )
                        })?;
                        validate_topic_setting(&c.name, &value)
                            .map_err(|m| ApiError::new(ErrorCode::INVALID_CONFIG, m))?;
                        overrides.insert(c.name.clone(), value);
                    }
                    OP_DELETE => {
                        overrides.remove(&c.name);
                    }
                    OP_APPEND | OP_SUBTRACT => {
                        if def.ty != ConfigType::List {
                            return Err(ApiError::new(
                                ErrorCode::INVALID_CONFIG,
                                format!("Config value append/subtract is not allowed for config key {} of type {:?}", c.name, def.ty),
                            ));
                        }
                        let base = overrides
                            .get(&c.name)
                            .cloned()
                            .unwrap_or_else(|| current.value(&broker.config, def).0);
                        let mut items: Vec<String> = base
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect();
                        let given: Vec<String> = c
                            .value
                            .clone()
                            .unwrap_or_default()
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect();
                        if c.config_operation == OP_APPEND {
                            for g in given {
                                if !items.contains(&g) {
                                    items.push(g);
                                }
                            }
                        } else {
                            items.retain(|i| !given.contains(i));
                        }
                        let value = items.join(",");
                        validate_topic_setting(&c.name, &value)
                            .map_err(|m| ApiError::new(ErrorCode::INVALID_CONFIG, m))?;
                        overrides.insert(c.name.clone(), value);
                    }
                    other => {
                        return Err(ApiError::new(
                            ErrorCode::INVALID_REQUEST,
                            format!("Unknown config operation {other}"),
                        ))
                    }
                }
            }
            apply(broker, &topic, overrides, req.validate_only)
        })();
        let mut result = IncrementalResult {
            resource_type: r.resource_type,
            resource_name: r.resource_name,
            error_message: None,
            ..Default::default()
        };
        if let Err(e) = outcome {
            result.error_code = e.code.code();
            result.error_message = Some(e.message);
        }
        resp.responses.push(result);
    }
    resp
}
