//! `skein quota set|remove|describe`: client quotas in the cluster metadata, through
//! AlterClientQuotas and DescribeClientQuotas (what Kafka's `kafka-configs --entity-type
//! users|clients|ips --alter --add-config producer_byte_rate=…` and `--describe` do).
//!
//! An entity is a user, a client id, or both (or an ip): `--user alice`, `--client-id app`,
//! `--user-default` / `--client-id-default` for the defaults (Kafka's `--entity-default`).

use anyhow::{bail, Context, Result};
use serde_json::json;
use skein_protocol::messages::alter_client_quotas_request::{
    AlterClientQuotasRequest, EntityData, EntryData, OpData,
};
use skein_protocol::messages::describe_client_quotas_request::{
    ComponentData, DescribeClientQuotasRequest,
};

use super::errors::KafkaError;
use super::output::{print_json, table, Output};
use super::Common;

#[derive(clap::Subcommand)]
pub enum QuotaCommand {
    /// Set quotas of an entity (the keys given; others stay).
    Set(SetArgs),
    /// Remove quotas of an entity: the keys named, or all it has.
    Remove(RemoveArgs),
    /// Show quotas: every entity, or those matching the entity options (`--strict`: only
    /// entities of exactly those types).
    Describe(DescribeArgs),
}

/// Which entity: a user and/or a client id (or an ip), by name or default.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Entity {
    /// The user principal's name (`alice` for `User:alice`).
    #[arg(long, conflicts_with = "user_default")]
    pub user: Option<String>,
    /// The default of all users.
    #[arg(long)]
    pub user_default: bool,
    /// The client id.
    #[arg(long, conflicts_with = "client_id_default")]
    pub client_id: Option<String>,
    /// The default of all client ids.
    #[arg(long)]
    pub client_id_default: bool,
    /// A client IP address (connection_creation_rate only).
    #[arg(long, conflicts_with_all = ["ip_default", "user", "user_default", "client_id", "client_id_default"])]
    pub ip: Option<String>,
    /// The default of all IPs.
    #[arg(long, conflicts_with_all = ["user", "user_default", "client_id", "client_id_default"])]
    pub ip_default: bool,
}

impl Entity {
    /// (type, name or `None` for the default) of each part given.
    fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        let mut add = |ty: &'static str, name: &Option<String>, default: bool| {
            if let Some(n) = name {
                out.push((ty, Some(n.clone())));
            } else if default {
                out.push((ty, None));
            }
        };
        add("user", &self.user, self.user_default);
        add("client-id", &self.client_id, self.client_id_default);
        add("ip", &self.ip, self.ip_default);
        out
    }
}

#[derive(clap::Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub entity: Entity,
    /// producer_byte_rate: bytes per second the entity may produce.
    #[arg(long)]
    pub producer_byte_rate: Option<f64>,
    /// consumer_byte_rate: bytes per second the entity may fetch.
    #[arg(long)]
    pub consumer_byte_rate: Option<f64>,
    /// request_percentage: percent of one request thread's time per quota window.
    #[arg(long)]
    pub request_percentage: Option<f64>,
    /// connection_creation_rate: connections per second (an ip entity).
    #[arg(long)]
    pub connection_creation_rate: Option<f64>,
    /// Check the change without making it.
    #[arg(long)]
    pub validate_only: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub entity: Entity,
    #[arg(long)]
    pub producer_byte_rate: bool,
    #[arg(long)]
    pub consumer_byte_rate: bool,
    #[arg(long)]
    pub request_percentage: bool,
    #[arg(long)]
    pub connection_creation_rate: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub entity: Entity,
    /// Only entities made of exactly the types given.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: QuotaCommand) -> Result<()> {
    match command {
        QuotaCommand::Set(a) => set(a).context("quota set"),
        QuotaCommand::Remove(a) => remove(a).context("quota remove"),
        QuotaCommand::Describe(a) => describe(a).context("quota describe"),
    }
}

/// `user=alice, client-id=<default>`.
fn entity_text(parts: &[(String, Option<String>)]) -> String {
    parts
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn entity_json(parts: &[(String, Option<String>)]) -> serde_json::Value {
    serde_json::Value::Object(parts.iter().map(|(t, n)| (t.clone(), json!(n))).collect())
}

fn alter(
    common: &Common,
    entity: &Entity,
    ops: Vec<(String, f64, bool)>,
    validate_only: bool,
) -> Result<Vec<(String, Option<String>)>> {
    let parts = entity.parts();
    if parts.is_empty() {
        bail!("name an entity: --user, --client-id (or their -default), or --ip");
    }
    let mut cluster = common.connect()?;
    let response = cluster.any()?.send(AlterClientQuotasRequest {
        entries: vec![EntryData {
            entity: parts
                .iter()
                .map(|(t, n)| EntityData {
                    entity_type: t.to_string(),
                    entity_name: n.clone(),
                    ..Default::default()
                })
                .collect(),
            ops: ops
                .iter()
                .map(|(key, value, remove)| OpData {
                    key: key.clone(),
                    value: *value,
                    remove: *remove,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        validate_only,
        ..Default::default()
    })?;
    for e in &response.entries {
        KafkaError::check(e.error_code, e.error_message.as_deref())?;
    }
    Ok(parts.into_iter().map(|(t, n)| (t.to_string(), n)).collect())
}

fn set(args: SetArgs) -> Result<()> {
    let ops: Vec<(String, f64, bool)> = [
        ("producer_byte_rate", args.producer_byte_rate),
        ("consumer_byte_rate", args.consumer_byte_rate),
        ("request_percentage", args.request_percentage),
        ("connection_creation_rate", args.connection_creation_rate),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k.to_string(), v, false)))
    .collect();
    if ops.is_empty() {
        bail!("give at least one quota: --producer-byte-rate, --consumer-byte-rate, --request-percentage or --connection-creation-rate");
    }
    let parts = alter(&args.common, &args.entity, ops.clone(), args.validate_only)?;
    let verb = if args.validate_only { "valid" } else { "set" };
    match args.common.output {
        Output::Text => {
            let values: Vec<String> = ops.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
            println!("{verb} {}: {}", entity_text(&parts), values.join(", "));
        }
        Output::Json => print_json(&json!({
            "entity": entity_json(&parts),
            "validate_only": args.validate_only,
            "set": ops.iter().map(|(k, v, _)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })),
    }
    Ok(())
}

/// The entities matching a filter, with their quotas.
#[allow(clippy::type_complexity)]
fn fetch(
    common: &Common,
    entity: &Entity,
    strict: bool,
) -> Result<Vec<(Vec<(String, Option<String>)>, Vec<(String, f64)>)>> {
    let mut cluster = common.connect()?;
    let response = cluster.any()?.send(DescribeClientQuotasRequest {
        components: entity
            .parts()
            .into_iter()
            .map(|(t, n)| ComponentData {
                entity_type: t.to_string(),
                match_type: if n.is_some() { 0 } else { 1 },
                r#match: n,
                ..Default::default()
            })
            .collect(),
        strict,
        ..Default::default()
    })?;
    KafkaError::check(response.error_code, response.error_message.as_deref())?;
    let mut out: Vec<_> = response
        .entries
        .unwrap_or_default()
        .into_iter()
        .map(|e| {
            let mut parts: Vec<(String, Option<String>)> = e
                .entity
                .into_iter()
                .map(|x| (x.entity_type, x.entity_name))
                .collect();
            // user before client-id, as Kafka prints them.
            parts.sort_by(|a, b| b.0.cmp(&a.0));
            let values = e.values.into_iter().map(|v| (v.key, v.value)).collect();
            (parts, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn remove(args: RemoveArgs) -> Result<()> {
    let mut keys: Vec<String> = [
        ("producer_byte_rate", args.producer_byte_rate),
        ("consumer_byte_rate", args.consumer_byte_rate),
        ("request_percentage", args.request_percentage),
        ("connection_creation_rate", args.connection_creation_rate),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| k.to_string())
    .collect();
    if keys.is_empty() {
        if args.entity.parts().is_empty() {
            bail!("name an entity: --user, --client-id (or their -default), or --ip");
        }
        let found = fetch(&args.common, &args.entity, true)?;
        keys = found
            .into_iter()
            .flat_map(|(_, values)| values.into_iter().map(|(k, _)| k))
            .collect();
        if keys.is_empty() {
            bail!("the entity has no quota");
        }
    }
    let ops = keys.iter().map(|k| (k.clone(), 0.0, true)).collect();
    let parts = alter(&args.common, &args.entity, ops, false)?;
    match args.common.output {
        Output::Text => println!("removed {}: {}", entity_text(&parts), keys.join(", ")),
        Output::Json => print_json(&json!({ "entity": entity_json(&parts), "removed": keys })),
    }
    Ok(())
}

fn describe(args: DescribeArgs) -> Result<()> {
    let found = fetch(&args.common, &args.entity, args.strict)?;
    match args.common.output {
        Output::Text => {
            let rows: Vec<Vec<String>> = found
                .iter()
                .flat_map(|(parts, values)| {
                    values
                        .iter()
                        .map(move |(k, v)| vec![entity_text(parts), k.clone(), v.to_string()])
                })
                .collect();
            print!("{}", table(&["ENTITY", "KEY", "VALUE"], &rows));
        }
        Output::Json => print_json(&json!(found
            .iter()
            .map(|(parts, values)| json!({
                "entity": entity_json(parts),
                "quotas": values.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            }))
            .collect::<Vec<_>>())),
    }
    Ok(())
}
