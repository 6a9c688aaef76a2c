//! `skein acl add|list|remove`: ACLs in the cluster metadata, through CreateAcls,
//! DescribeAcls and DeleteAcls, with the options of Kafka's `kafka-acls`
//! (`--allow-principal`, `--deny-principal`, `--operation`, `--topic`, `--group`,
//! `--cluster`, `--transactional-id`, `--resource-pattern-type`, `--allow-host`,
//! `--deny-host`). The broker must run an authorizer (`authorizer.class.name`), and the
//! caller needs ALTER (add, remove) or DESCRIBE (list) on the cluster.

use anyhow::{bail, Context, Result};
use serde_json::json;
use skein_broker::authz::{op, pattern, permission, resource, CLUSTER_NAME};
use skein_protocol::messages::create_acls_request::{AclCreation, CreateAclsRequest};
use skein_protocol::messages::delete_acls_request::{DeleteAclsFilter, DeleteAclsRequest};
use skein_protocol::messages::describe_acls_request::DescribeAclsRequest;

use super::errors::KafkaError;
use super::output::{print_json, table, Output};
use super::Common;

#[derive(clap::Subcommand)]
pub enum AclCommand {
    /// Add ALLOW and DENY ACLs: every principal × host × operation × resource given.
    Add(ChangeArgs),
    /// List ACLs (all, or those matching the resources and principal given).
    List(ListArgs),
    /// Remove the ACLs matching the options (an option left out matches anything).
    Remove(ChangeArgs),
}

/// The resources an ACL command names.
#[derive(clap::Args, Clone)]
pub struct Resources {
    /// A topic (or a topic name prefix with --resource-pattern-type prefixed; `*` for all).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// A consumer group.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// The cluster.
    #[arg(long)]
    pub cluster: bool,
    /// A transactional id.
    #[arg(long = "transactional-id", value_name = "ID")]
    pub transactional_ids: Vec<String>,
    /// literal or prefixed (add); any, match, literal or prefixed (list, remove).
    #[arg(long = "resource-pattern-type", value_name = "TYPE")]
    pub pattern_type: Option<String>,
}

impl Resources {
    fn list(&self) -> Vec<(i8, String)> {
        let mut out = Vec::new();
        out.extend(self.topics.iter().map(|t| (resource::TOPIC, t.clone())));
        out.extend(self.groups.iter().map(|g| (resource::GROUP, g.clone())));
        if self.cluster {
            out.push((resource::CLUSTER, CLUSTER_NAME.to_string()));
        }
        out.extend(
            self.transactional_ids
                .iter()
                .map(|t| (resource::TRANSACTIONAL_ID, t.clone())),
        );
        out
    }

    fn pattern(&self, default: i8) -> Result<i8> {
        match &self.pattern_type {
            None => Ok(default),
            Some(p) => pattern::parse(p).with_context(|| {
                format!("unknown resource pattern type {p}: literal, prefixed, match or any")
            }),
        }
    }
}

#[derive(clap::Args)]
pub struct ChangeArgs {
    /// Principals allowed (`User:alice`, `User:*`); repeatable.
    #[arg(long = "allow-principal", value_name = "PRINCIPAL")]
    pub allow_principals: Vec<String>,
    /// Principals denied; repeatable.
    #[arg(long = "deny-principal", value_name = "PRINCIPAL")]
    pub deny_principals: Vec<String>,
    /// Hosts (IP addresses) the ALLOW ACLs apply to; default `*` on add.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Hosts the DENY ACLs apply to; default `*` on add.
    #[arg(long = "deny-host", value_name = "HOST")]
    pub deny_hosts: Vec<String>,
    /// Hosts for both ALLOW and DENY ACLs.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Operations: Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    /// DescribeConfigs, AlterConfigs, IdempotentWrite, All; repeatable.
    #[arg(long = "operation", value_name = "OPERATION")]
    pub operations: Vec<String>,
    #[command(flatten)]
    pub resources: Resources,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only the ACLs of this principal.
    #[arg(long, value_name = "PRINCIPAL")]
    pub principal: Option<String>,
    #[command(flatten)]
    pub resources: Resources,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: AclCommand) -> Result<()> {
    match command {
        AclCommand::Add(a) => add(a).context("acl add"),
        AclCommand::List(a) => list(a).context("acl list"),
        AclCommand::Remove(a) => remove(a).context("acl remove"),
    }
}

fn operations(names: &[String]) -> Result<Vec<i8>> {
    names
        .iter()
        .map(|n| op::parse(n).with_context(|| format!("unknown operation {n}")))
        .collect()
}

/// (permission, principal, host) triples of an add or remove.
fn grants(a: &ChangeArgs, default_host: Option<&str>) -> Vec<(i8, String, Option<String>)> {
    let hosts = |specific: &[String]| -> Vec<Option<String>> {
        let mut h: Vec<Option<String>> = specific
            .iter()
            .chain(a.hosts.iter())
            .map(|h| Some(h.clone()))
            .collect();
        if h.is_empty() {
            h.push(default_host.map(String::from));
        }
        h
    };
    let mut out = Vec::new();
    for p in &a.allow_principals {
        for h in hosts(&a.allow_hosts) {
            out.push((permission::ALLOW, p.clone(), h));
        }
    }
    for p in &a.deny_principals {
        for h in hosts(&a.deny_hosts) {
            out.push((permission::DENY, p.clone(), h));
        }
    }
    out
}

fn add(a: ChangeArgs) -> Result<()> {
    let resources = a.resources.list();
    if resources.is_empty() {
        bail!("name a resource: --topic, --group, --cluster or --transactional-id");
    }
    let pattern_type = a.resources.pattern(pattern::LITERAL)?;
    if !matches!(pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        bail!("ACLs are added with --resource-pattern-type literal or prefixed");
    }
    let ops = operations(&a.operations)?;
    if ops.is_empty() {
        bail!("name at least one --operation");
    }
    let grants = grants(&a, Some("*"));
    if grants.is_empty() {
        bail!("name at least one --allow-principal or --deny-principal");
    }
    let mut creations = Vec::new();
    for (rt, name) in &resources {
        for (perm, principal, host) in &grants {
            for o in &ops {
                creations.push(AclCreation {
                    resource_type: *rt,
                    resource_name: name.clone(),
                    resource_pattern_type: pattern_type,
                    principal: principal.clone(),
                    host: host.clone().unwrap_or_else(|| "*".into()),
                    operation: *o,
                    permission_type: *perm,
                    ..Default::default()
                });
            }
        }
    }
    let mut cluster = a.common.connect()?;
    let response = cluster.any()?.send(CreateAclsRequest {
        creations: creations.clone(),
        ..Default::default()
    })?;
    for r in &response.results {
        KafkaError::check(r.error_code, r.error_message.as_deref())?;
    }
    let rows: Vec<serde_json::Value> = creations
        .iter()
        .map(|c| {
            describe(
                c.resource_type,
                &c.resource_name,
                c.resource_pattern_type,
                &c.principal,
                &c.host,
                c.operation,
                c.permission_type,
            )
        })
        .collect();
    print_acls(a.common.output, &rows, "added");
    Ok(())
}

fn remove(a: ChangeArgs) -> Result<()> {
    let resources = a.resources.list();
    if resources.is_empty() {
        bail!("name a resource: --topic, --group, --cluster or --transactional-id");
    }
    let pattern_type = a.resources.pattern(pattern::LITERAL)?;
    let mut ops = operations(&a.operations)?;
    if ops.is_empty() {
        ops.push(op::ANY);
    }
    let mut grants = grants(&a, None);
    if grants.is_empty() {
        grants.push((permission::ANY, String::new(), None));
    }
    let mut filters = Vec::new();
    for (rt, name) in &resources {
        for (perm, principal, host) in &grants {
            for o in &ops {
                filters.push(DeleteAclsFilter {
                    resource_type_filter: *rt,
                    resource_name_filter: Some(name.clone()),
                    pattern_type_filter: pattern_type,
                    principal_filter: (!principal.is_empty()).then(|| principal.clone()),
                    host_filter: host.clone(),
                    operation: *o,
                    permission_type: *perm,
                    ..Default::default()
                });
            }
        }
    }
    let mut cluster = a.common.connect()?;
    let response = cluster.any()?.send(DeleteAclsRequest {
        filters,
        ..Default::default()
    })?;
    let mut rows = Vec::new();
    for r in &response.filter_results {
        KafkaError::check(r.error_code, r.error_message.as_deref())?;
        for m in &r.matching_acls {
            KafkaError::check(m.error_code, m.error_message.as_deref())?;
            rows.push(describe(
                m.resource_type,
                &m.resource_name,
                m.pattern_type,
                &m.principal,
                &m.host,
                m.operation,
                m.permission_type,
            ));
        }
    }
    print_acls(a.common.output, &rows, "removed");
    Ok(())
}

fn list(a: ListArgs) -> Result<()> {
    let resources = a.resources.list();
    let pattern_type = a.resources.pattern(pattern::ANY)?;
    let filters: Vec<(i8, Option<String>)> = if resources.is_empty() {
        vec![(resource::ANY, None)]
    } else {
        resources.into_iter().map(|(t, n)| (t, Some(n))).collect()
    };
    let mut cluster = a.common.connect()?;
    let conn = cluster.any()?;
    let mut rows = Vec::new();
    for (rt, name) in filters {
        let response = conn.send(DescribeAclsRequest {
            resource_type_filter: rt,
            resource_name_filter: name,
            pattern_type_filter: pattern_type,
            principal_filter: a.principal.clone(),
            host_filter: None,
            operation: op::ANY,
            permission_type: permission::ANY,
            ..Default::default()
        })?;
        KafkaError::check(response.error_code, response.error_message.as_deref())?;
        for r in &response.resources {
            for acl in &r.acls {
                rows.push(describe(
                    r.resource_type,
                    &r.resource_name,
                    r.pattern_type,
                    &acl.principal,
                    &acl.host,
                    acl.operation,
                    acl.permission_type,
                ));
            }
        }
    }
    print_acls(a.common.output, &rows, "");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn describe(
    rt: i8,
    name: &str,
    pt: i8,
    principal: &str,
    host: &str,
    operation: i8,
    perm: i8,
) -> serde_json::Value {
    json!({
        "resource_type": resource::name(rt),
        "resource_name": name,
        "pattern_type": pattern::name(pt),
        "principal": principal,
        "host": host,
        "operation": op::name(operation),
        "permission": permission::name(perm),
    })
}

fn print_acls(output: Output, rows: &[serde_json::Value], verb: &str) {
    match output {
        Output::Json => print_json(&json!(rows)),
        Output::Text => {
            if !verb.is_empty() {
                println!("{verb} {} ACL(s)", rows.len());
            }
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    [
                        "resource_type",
                        "resource_name",
                        "pattern_type",
                        "principal",
                        "host",
                        "operation",
                        "permission",
                    ]
                    .iter()
                    .map(|k| r[*k].as_str().unwrap_or_default().to_string())
                    .collect()
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "RESOURCE_TYPE",
                        "NAME",
                        "PATTERN",
                        "PRINCIPAL",
                        "HOST",
                        "OPERATION",
                        "PERMISSION"
                    ],
                    &cells
                )
            );
        }
    }
}
