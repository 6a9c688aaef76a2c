//! DescribeClientQuotas and AlterClientQuotas (KIP-546): client quotas kept in the cluster
//! metadata (`ClientQuotaRecord`), checked as Kafka's controller checks them. Enforcement is
//! in `quota.rs`.
//!
//! Entity types `user`, `client-id` (alone or together) and `ip` (alone). Keys:
//! `producer_byte_rate`, `consumer_byte_rate` (whole numbers), `request_percentage` for users
//! and client ids; `connection_creation_rate` (a whole number) for an ip, enforced when a
//! connection is accepted (`Broker::ip_connection_throttle`). `controller_mutation_rate` (KIP-599) is refused: Skein does
//! not throttle topic creations and deletions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use skein_metadata::image::{quota_entity, QuotaEntity};
use skein_protocol::messages::alter_client_quotas_request::AlterClientQuotasRequest;
use skein_protocol::messages::alter_client_quotas_response::{
    AlterClientQuotasResponse, EntityData as AlterEntity, EntryData as AlterEntry,
};
use skein_protocol::messages::describe_client_quotas_request::DescribeClientQuotasRequest;
use skein_protocol::messages::describe_client_quotas_response::{
    DescribeClientQuotasResponse, EntityData, EntryData, ValueData,
};
use skein_protocol::{ErrorCode, ResponseBody};

use crate::broker::Broker;
use crate::controller_link::{Answer, ClientQuotaAlteration, ControllerCall};
use crate::quota::{
    CLIENT_ID, CONNECTION_CREATION_RATE, CONSUMER_BYTE_RATE, CONTROLLER_MUTATION_RATE, IP,
    PRODUCER_BYTE_RATE, REQUEST_PERCENTAGE, USER,
};
use crate::Reply;

/// An error for one entry or filter: Kafka's code and message.
type Failure = (ErrorCode, String);

const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// Kafka's checks of a filter: (exact matches with `None` for the default, types that must
/// be present), or the error.
#[allow(clippy::type_complexity)]
fn filter(
    req: &DescribeClientQuotasRequest,
) -> Result<(BTreeMap<String, Option<String>>, BTreeSet<String>), Failure> {
    let mut exact: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut present: BTreeSet<String> = BTreeSet::new();
    let invalid = |m: String| Err((ErrorCode::INVALID_REQUEST, m));
    for c in &req.components {
        let ty = c.entity_type.as_str();
        if ty.is_empty() {
            return invalid("Invalid empty entity type.".into());
        }
        if exact.contains_key(ty) || present.contains(ty) {
            return invalid(format!(
                "Entity type {ty} cannot appear more than once in the filter."
            ));
        }
        if ![USER, CLIENT_ID, IP].contains(&ty) {
            return Err((
                ErrorCode::UNSUPPORTED_VERSION,
                format!("Unsupported entity type {ty}"),
            ));
        }
        match c.match_type {
            MATCH_EXACT => match &c.r#match {
                None => {
                    return invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    )
                }
                Some(m) => {
                    exact.insert(ty.to_string(), Some(m.clone()));
                }
            },
            MATCH_DEFAULT => {
                if c.r#match.is_some() {
                    return invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                            .into(),
                    );
                }
                exact.insert(ty.to_string(), None);
            }
            MATCH_SPECIFIED => {
                if c.r#match.is_some() {
                    return invalid(
                        "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                            .into(),
                    );
                }
                present.insert(ty.to_string());
            }
            other => {
                return Err((
                    ErrorCode::UNSUPPORTED_VERSION,
                    format!("Unknown match type {other}"),
                ))
            }
        }
    }
    let has = |t: &str| exact.contains_key(t) || present.contains(t);
    if has(IP) && (has(USER) || has(CLIENT_ID)) {
        return invalid(
            "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component."
                .into(),
        );
    }
    Ok((exact, present))
}

pub fn describe(broker: &Arc<Broker>, req: DescribeClientQuotasRequest) -> ResponseBody {
    let (exact, present) = match filter(&req) {
        Ok(f) => f,
        Err((code, message)) => {
            return ResponseBody::DescribeClientQuotas(DescribeClientQuotasResponse {
                error_code: code.0,
                error_message: Some(message),
                entries: None,
                ..Default::default()
            })
        }
    };
    let entries = broker.quorum.read(|image| {
        image
            .client_quotas()
            .iter()
            .filter(|(entity, _)| {
                let get = |t: &str| entity.iter().find(|(ty, _)| ty == t).map(|(_, n)| n);
                (!req.strict || entity.len() == exact.len() + present.len())
                    && exact.iter().all(|(t, want)| get(t) == Some(want))
                    && present.iter().all(|t| get(t).is_some())
            })
            .map(|(entity, values)| EntryData {
                entity: entity
                    .iter()
                    .map(|(t, n)| EntityData {
                        entity_type: t.clone(),
                        entity_name: n.clone(),
                        ..Default::default()
                    })
                    .collect(),
                values: values
                    .iter()
                    .map(|(k, v)| ValueData {
                        key: k.clone(),
                        value: v.0,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect()
    });
    ResponseBody::DescribeClientQuotas(DescribeClientQuotasResponse {
        entries: Some(entries),
        ..Default::default()
    })
}

/// Kafka's type of each quota key an entity may set: `true` for a whole number.
fn keys_for(entity: &[(String, Option<String>)]) -> &'static [(&'static str, bool)] {
    if entity.iter().any(|(t, _)| t == IP) {
        &[(CONNECTION_CREATION_RATE, true)]
    } else {
        &[
            (PRODUCER_BYTE_RATE, true),
            (CONSUMER_BYTE_RATE, true),
            (REQUEST_PERCENTAGE, false),
            (CONTROLLER_MUTATION_RATE, false),
        ]
    }
}

/// Kafka's checks of one entry: its entity, then each op. Returns the entity sorted by type.
fn check_entry(
    entity: &[(String, Option<String>)],
    ops: &[(String, f64, bool)],
) -> Result<QuotaEntity, Failure> {
    let invalid = |m: String| Err((ErrorCode::INVALID_REQUEST, m));
    if entity.is_empty() {
        return invalid("Invalid empty client quota entity".into());
    }
    let mut seen = BTreeSet::new();
    for (ty, name) in entity {
        if !seen.insert(ty.as_str()) {
            return invalid(format!(
                "Invalid empty client quota entity, duplicate entity entry {ty}"
            ));
        }
        if ![USER, CLIENT_ID, IP].contains(&ty.as_str()) {
            return Err((
                ErrorCode::UNSUPPORTED_VERSION,
                format!("Unhandled client quota entity type: {ty}"),
            ));
        }
        if ty == IP {
            if let Some(n) = name {
                if n.parse::<std::net::IpAddr>().is_err() {
                    return invalid(format!("{n} is not a valid IP or resolvable host."));
                }
            }
        }
        if name.as_deref() == Some("") {
            return invalid(format!("Empty {ty} not supported"));
        }
    }
    if seen.contains(IP) && seen.len() > 1 {
        return invalid(
            "Invalid quota entity combination, IP entity should not be combined with User or ClientId"
                .into(),
        );
    }
    let allowed = keys_for(entity);
    let mut keys = BTreeSet::new();
    for (key, value, remove) in ops {
        if !keys.insert(key.as_str()) {
            return invalid(format!(
                "Duplicate quota key {key} not updating quota for this entity"
            ));
        }
        if *remove {
            continue;
        }
        let Some((_, whole)) = allowed.iter().find(|(k, _)| k == key) else {
            return invalid(format!("Invalid configuration key {key}"));
        };
        if value.is_nan() || *value <= 0.0 {
            return invalid(format!("Quota {key} must be greater than 0"));
        }
        if value.is_infinite() {
            return invalid(format!("Quota {key} must be a finite number"));
        }
        if *whole && *value > i64::MAX as f64 {
            return invalid(format!("Proposed value for {key} is too large for a LONG."));
        }
        if *whole && (value % 1.0).abs() > 1e-6 {
            return invalid(format!("{key} cannot be a fractional value."));
        }
        if key == CONTROLLER_MUTATION_RATE {
            return invalid(format!(
                "{key} is not supported by Skein: topic creations and deletions are not throttled"
            ));
        }
    }
    quota_entity(entity.iter().cloned()).ok_or((
        ErrorCode::INVALID_REQUEST,
        "Invalid client quota entity".into(),
    ))
}

pub fn alter(broker: &Arc<Broker>, req: AlterClientQuotasRequest) -> Reply {
    // Per entry: its entity as sent, and its error or whether a change was sent.
    let mut results: Vec<(Vec<AlterEntity>, Result<bool, Failure>)> = Vec::new();
    let mut changes: Vec<ClientQuotaAlteration> = Vec::new();
    for e in &req.entries {
        let sent: Vec<AlterEntity> = e
            .entity
            .iter()
            .map(|x| AlterEntity {
                entity_type: x.entity_type.clone(),
                entity_name: x.entity_name.clone(),
                ..Default::default()
            })
            .collect();
        let entity: Vec<(String, Option<String>)> = e
            .entity
            .iter()
            .map(|x| (x.entity_type.clone(), x.entity_name.clone()))
            .collect();
        let ops: Vec<(String, f64, bool)> = e
            .ops
            .iter()
            .map(|o| (o.key.clone(), o.value, o.remove))
            .collect();
        let checked = check_entry(&entity, &ops);
        let outcome = match checked {
            Err(err) => Err(err),
            Ok(_) if req.validate_only || ops.is_empty() => Ok(false),
            Ok(entity) => {
                changes.push(ClientQuotaAlteration { entity, ops });
                Ok(true)
            }
        };
        results.push((sent, outcome));
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let call_result: Result<(), (i16, Option<String>)> = if changes.is_empty() {
            Ok(())
        } else {
            match broker
                .controller_call(ControllerCall::AlterClientQuotas { entries: changes })
                .await
            {
                Ok(Answer::Results { .. }) => Ok(()),
                Ok(_) => Err((ErrorCode::UNKNOWN_SERVER_ERROR.0, None)),
                Err(e) => Err((e.code.0, Some(e.message))),
            }
        };
        let entries = results
            .into_iter()
            .map(|(entity, outcome)| {
                let (error_code, error_message) = match outcome {
                    Err((code, message)) => (code.0, Some(message)),
                    Ok(false) => (0, None),
                    Ok(true) => match &call_result {
                        Ok(()) => (0, None),
                        Err((code, message)) => (*code, message.clone()),
                    },
                };
                AlterEntry {
                    error_code,
                    error_message,
                    entity,
                    ..Default::default()
                }
            })
            .collect();
        ResponseBody::AlterClientQuotas(AlterClientQuotasResponse {
            entries,
            ..Default::default()
        })
    }))
}
