//! Authorization: Kafka's ACL model and its `StandardAuthorizer` semantics.
//!
//! ACLs live in the cluster metadata (`AccessControlEntryRecord`, see
//! [`skein_metadata::image::AclEntry`]). The authorizer is on when `authorizer.class.name`
//! names Kafka's `org.apache.kafka.metadata.authorizer.StandardAuthorizer` (empty: off, every
//! request is allowed, as before). Then:
//!
//! - a principal in `super.users` (`User:a;User:b`) may do anything;
//! - otherwise the ACLs that match the resource are read: a literal ACL on the resource's
//!   name, a literal ACL on `*` (wildcard) and every prefixed ACL whose prefix starts the name;
//!   of those, an ACL applies to the request when its principal is the caller's or `User:*`,
//!   its host is the caller's address or `*`, and its operation is the one asked, `ALL`, or
//!   (ALLOW only) one that implies it (READ, WRITE, DELETE, ALTER imply DESCRIBE;
//!   ALTER_CONFIGS implies DESCRIBE_CONFIGS);
//! - a DENY that applies wins; else an ALLOW that applies allows; else, when no ACL at all
//!   matches the resource, `allow.everyone.if.no.acl.found` decides (false by default); else
//!   the request is denied.
//!
//! The ACLs are indexed by resource type and name ([`AclIndex`]), rebuilt only when the
//! image's ACL map changes (a new `Arc`), so one check costs a few map lookups.
//!
//! Denials are logged at most [`DENIAL_LOGS_PER_SECOND`] times a second (then one line with
//! the number left out) and counted in `skein_authorization_denials_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use skein_metadata::image::{AclEntry, AclMap};

use crate::broker::Broker;
use crate::RequestContext;

/// Kafka's authorizer class names accepted for `authorizer.class.name`.
pub const STANDARD_AUTHORIZER: &str = "org.apache.kafka.metadata.authorizer.StandardAuthorizer";
/// The ZooKeeper-era name, accepted as the same authorizer.
const ACL_AUTHORIZER: &str = "kafka.security.authorizer.AclAuthorizer";

/// At most this many denial lines a second.
pub const DENIAL_LOGS_PER_SECOND: u32 = 10;

/// The name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// Kafka's `ResourceType` codes.
pub mod resource {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
    pub const DELEGATION_TOKEN: i8 = 6;
    pub const USER: i8 = 7;

    pub fn name(code: i8) -> &'static str {
        match code {
            ANY => "ANY",
            TOPIC => "TOPIC",
            GROUP => "GROUP",
            CLUSTER => "CLUSTER",
            TRANSACTIONAL_ID => "TRANSACTIONAL_ID",
            DELEGATION_TOKEN => "DELEGATION_TOKEN",
            USER => "USER",
            _ => "UNKNOWN",
        }
    }

    pub fn parse(s: &str) -> Option<i8> {
        (1..=7).find(|c| name(*c).eq_ignore_ascii_case(s.trim()))
    }
}

/// Kafka's `PatternType` codes.
pub mod pattern {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;

    pub fn name(code: i8) -> &'static str {
        match code {
            ANY => "ANY",
            MATCH => "MATCH",
            LITERAL => "LITERAL",
            PREFIXED => "PREFIXED",
            _ => "UNKNOWN",
        }
    }

    pub fn parse(s: &str) -> Option<i8> {
        (1..=4).find(|c| name(*c).eq_ignore_ascii_case(s.trim()))
    }
}

/// Kafka's `AclOperation` codes.
pub mod op {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const ALL: i8 = 2;
    pub const READ: i8 = 3;
    pub const WRITE: i8 = 4;
    pub const CREATE: i8 = 5;
    pub const DELETE: i8 = 6;
    pub const ALTER: i8 = 7;
    pub const DESCRIBE: i8 = 8;
    pub const CLUSTER_ACTION: i8 = 9;
    pub const DESCRIBE_CONFIGS: i8 = 10;
    pub const ALTER_CONFIGS: i8 = 11;
    pub const IDEMPOTENT_WRITE: i8 = 12;
    pub const CREATE_TOKENS: i8 = 13;
    pub const DESCRIBE_TOKENS: i8 = 14;
    pub const TWO_PHASE_COMMIT: i8 = 15;

    pub fn name(code: i8) -> &'static str {
        match code {
            ANY => "ANY",
            ALL => "ALL",
            READ => "READ",
            WRITE => "WRITE",
            CREATE => "CREATE",
            DELETE => "DELETE",
            ALTER => "ALTER",
            DESCRIBE => "DESCRIBE",
            CLUSTER_ACTION => "CLUSTER_ACTION",
            DESCRIBE_CONFIGS => "DESCRIBE_CONFIGS",
            ALTER_CONFIGS => "ALTER_CONFIGS",
            IDEMPOTENT_WRITE => "IDEMPOTENT_WRITE",
            CREATE_TOKENS => "CREATE_TOKENS",
            DESCRIBE_TOKENS => "DESCRIBE_TOKENS",
            TWO_PHASE_COMMIT => "TWO_PHASE_COMMIT",
            _ => "UNKNOWN",
        }
    }

    /// Parses Kafka's name (`Read`, `READ`, `IdempotentWrite`, `IDEMPOTENT_WRITE`).
    pub fn parse(s: &str) -> Option<i8> {
        let want: String = s
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect();
        (1..=15).find(|c| name(*c).replace('_', "").eq_ignore_ascii_case(&want))
    }

    /// Whether an ALLOW of `granted` allows `asked`.
    pub fn allow_implies(granted: i8, asked: i8) -> bool {
        granted == asked
            || granted == ALL
            || (asked == DESCRIBE && matches!(granted, READ | WRITE | DELETE | ALTER))
            || (asked == DESCRIBE_CONFIGS && granted == ALTER_CONFIGS)
    }
}

/// Kafka's `AclEntry.supportedOperations`: the operations a resource type has, the ones an
/// authorized-operations bit set is made of (`ALL` is never one of them).
pub fn supported_operations(resource_type: i8) -> &'static [i8] {
    use op::*;
    match resource_type {
        resource::TOPIC => &[
            READ,
            WRITE,
            CREATE,
            DESCRIBE,
            DELETE,
            ALTER,
            DESCRIBE_CONFIGS,
            ALTER_CONFIGS,
        ],
        resource::GROUP => &[READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS],
        resource::CLUSTER => &[
            CREATE,
            CLUSTER_ACTION,
            DESCRIBE_CONFIGS,
            ALTER_CONFIGS,
            IDEMPOTENT_WRITE,
            ALTER,
            DESCRIBE,
        ],
        resource::TRANSACTIONAL_ID => &[DESCRIBE, WRITE],
        resource::DELEGATION_TOKEN => &[DESCRIBE],
        resource::USER => &[CREATE_TOKENS, DESCRIBE_TOKENS],
        _ => &[],
    }
}

/// The bit set (`1 << code`) of `ops`, as Kafka's `Utils.to32BitField`.
pub fn bit_field(ops: impl IntoIterator<Item = i8>) -> i32 {
    ops.into_iter()
        .filter(|o| (0..32).contains(o))
        .fold(0i32, |acc, o| acc | (1i32 << o))
}

/// Kafka's `AclPermissionType` codes.
pub mod permission {
    pub const UNKNOWN: i8 = 0;
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;

    pub fn name(code: i8) -> &'static str {
        match code {
            ANY => "ANY",
            DENY => "DENY",
            ALLOW => "ALLOW",
            _ => "UNKNOWN",
        }
    }
}

/// Settings this module reads.
const SETTINGS: &[&str] = &[
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
];

/// Whether `key` is an authorizer setting.
pub fn is_setting(key: &str) -> bool {
    SETTINGS.contains(&key)
}

/// Validates an authorizer setting's value.
pub fn validate_setting(key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    match key {
        "authorizer.class.name" => {
            if v.is_empty() || v == STANDARD_AUTHORIZER || v == ACL_AUTHORIZER {
                Ok(())
            } else {
                Err(format!(
                    "invalid value for {key}: only {STANDARD_AUTHORIZER} (or empty, no authorizer) is supported"
                ))
            }
        }
        "super.users" => parse_super_users(v).map(|_| ()),
        "allow.everyone.if.no.acl.found" => match v {
            "true" | "false" => Ok(()),
            _ => Err(format!("invalid value for {key}: expected true or false")),
        },
        _ => Err(format!("unknown setting {key}")),
    }
}

/// `super.users`: principals separated by `;`, each `Type:Name`.
pub fn parse_super_users(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        match p.split_once(':') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => out.push(p.to_string()),
            _ => {
                return Err(format!(
                    "invalid value for super.users: {p:?} is not a principal of the form Type:Name"
                ))
            }
        }
    }
    Ok(out)
}

/// Whether a principal text is `Type:Name`.
pub fn valid_principal(p: &str) -> bool {
    matches!(p.split_once(':'), Some((t, n)) if !t.is_empty() && !n.is_empty())
}

/// The authorizer's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthzSettings {
    pub enabled: bool,
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

impl AuthzSettings {
    /// From the broker's explicit (validated) settings.
    pub fn from_explicit(explicit: &BTreeMap<String, String>) -> AuthzSettings {
        let get = |k: &str| explicit.get(k).map(|v| v.trim().to_string());
        AuthzSettings {
            enabled: get("authorizer.class.name").is_some_and(|v| !v.is_empty()),
            super_users: get("super.users")
                .map(|v| parse_super_users(&v).unwrap_or_default())
                .unwrap_or_default(),
            allow_if_no_acl: get("allow.everyone.if.no.acl.found").as_deref() == Some("true"),
        }
    }
}

/// One ACL that applies to a resource, as the index keeps it.
#[derive(Debug, Clone)]
struct Rule {
    principal: String,
    host: String,
    operation: i8,
    deny: bool,
}

impl Rule {
    fn from_entry(a: &AclEntry) -> Rule {
        Rule {
            principal: a.principal.clone(),
            host: a.host.clone(),
            operation: a.operation,
            deny: a.permission_type == permission::DENY,
        }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == host || self.host == "*")
    }
}

/// The ACLs of one resource type.
#[derive(Debug, Default)]
struct TypeIndex {
    /// Literal ACLs by name (the wildcard `*` included).
    literal: HashMap<String, Vec<Rule>>,
    /// Prefixed ACLs by prefix.
    prefixed: HashMap<String, Vec<Rule>>,
    /// The prefix lengths present, so a lookup tries only those.
    prefix_lens: Vec<usize>,
}

impl TypeIndex {
    /// Every rule that matches the resource `name`.
    fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        let literal = self.literal.get(name).into_iter().flatten();
        let wildcard = (name != "*")
            .then(|| self.literal.get("*"))
            .flatten()
            .into_iter()
            .flatten();
        let prefixed = self
            .prefix_lens
            .iter()
            .filter(move |n| **n <= name.len() && name.is_char_boundary(**n))
            .filter_map(move |n| self.prefixed.get(&name[..*n]))
            .flatten();
        literal.chain(wildcard).chain(prefixed)
    }
}

/// The ACLs by resource type, for fast checks.
#[derive(Debug, Default)]
pub struct AclIndex {
    by_type: HashMap<i8, TypeIndex>,
    /// The ACLs as given (for checks by resource type).
    entries: Vec<AclEntry>,
}

impl AclIndex {
    pub fn build<'a>(acls: impl IntoIterator<Item = &'a AclEntry>) -> AclIndex {
        let mut idx = AclIndex::default();
        for a in acls {
            idx.entries.push(a.clone());
            let t = idx.by_type.entry(a.resource_type).or_default();
            match a.pattern_type {
                pattern::LITERAL => t
                    .literal
                    .entry(a.resource_name.clone())
                    .or_default()
                    .push(Rule::from_entry(a)),
                pattern::PREFIXED => {
                    t.prefixed
                        .entry(a.resource_name.clone())
                        .or_default()
                        .push(Rule::from_entry(a));
                    if !t.prefix_lens.contains(&a.resource_name.len()) {
                        t.prefix_lens.push(a.resource_name.len());
                    }
                }
                _ => {}
            }
        }
        idx
    }

    /// Kafka's decision for `principal` at `host` doing `operation` on the resource.
    pub fn authorize(
        &self,
        settings: &AuthzSettings,
        principal: &str,
        host: &str,
        operation: i8,
        resource_type: i8,
        name: &str,
    ) -> bool {
        if settings.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let Some(t) = self.by_type.get(&resource_type) else {
            return settings.allow_if_no_acl;
        };
        let mut any = false;
        let mut allowed = false;
        for r in t.matching(name) {
            any = true;
            if !r.applies_to(principal, host) {
                continue;
            }
            if r.deny {
                if r.operation == operation || r.operation == op::ALL {
                    return false;
                }
            } else if op::allow_implies(r.operation, operation) {
                allowed = true;
            }
        }
        allowed || (!any && settings.allow_if_no_acl)
    }

    /// KIP-679's check by resource type: whether the principal may do `operation` on at
    /// least one resource of the type (an ALLOW not covered by a DENY on the same or a wider
    /// pattern). Kafka uses it for idempotent producers (WRITE on any topic).
    pub fn authorize_any(
        &self,
        settings: &AuthzSettings,
        principal: &str,
        host: &str,
        operation: i8,
        resource_type: i8,
    ) -> bool {
        if settings.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let applies = |a: &AclEntry| {
            a.resource_type == resource_type
                && (a.principal == principal || a.principal == "User:*")
                && (a.host == host || a.host == "*")
                && (a.operation == operation || a.operation == op::ALL)
        };
        let denies: Vec<&AclEntry> = self
            .entries
            .iter()
            .filter(|a| a.permission_type == permission::DENY && applies(a))
            .collect();
        let covered = |a: &AclEntry| {
            denies.iter().any(|d| match d.pattern_type {
                pattern::LITERAL => {
                    d.resource_name == "*"
                        || (a.pattern_type == pattern::LITERAL
                            && d.resource_name == a.resource_name)
                }
                pattern::PREFIXED => a.resource_name.starts_with(&d.resource_name),
                _ => false,
            })
        };
        let any_acl = self
            .entries
            .iter()
            .any(|a| a.resource_type == resource_type);
        self.entries
            .iter()
            .any(|a| a.permission_type == permission::ALLOW && applies(a) && !covered(a))
            || (!any_acl && settings.allow_if_no_acl)
    }
}

/// A DescribeAcls / DeleteAcls filter, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: i8,
    pub name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission_type: i8,
}

impl AclFilter {
    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, a: &AclEntry) -> bool {
        if self.resource_type != resource::ANY && self.resource_type != a.resource_type {
            return false;
        }
        let name_ok = match (&self.name, self.pattern_type) {
            (None, pattern::ANY | pattern::MATCH) => true,
            (None, p) => p == a.pattern_type,
            (Some(n), pattern::ANY) => *n == a.resource_name,
            (Some(n), pattern::MATCH) => match a.pattern_type {
                pattern::LITERAL => a.resource_name == *n || a.resource_name == "*",
                pattern::PREFIXED => n.starts_with(&a.resource_name),
                _ => false,
            },
            (Some(n), p) => p == a.pattern_type && *n == a.resource_name,
        };
        name_ok
            && self.principal.as_ref().is_none_or(|p| *p == a.principal)
            && self.host.as_ref().is_none_or(|h| *h == a.host)
            && (self.operation == op::ANY || self.operation == a.operation)
            && (self.permission_type == permission::ANY
                || self.permission_type == a.permission_type)
    }
}

/// Checks a filter the way Kafka's request validation does: no UNKNOWN element.
pub fn validate_filter(f: &AclFilter) -> Result<(), String> {
    if f.resource_type == resource::UNKNOWN || resource::name(f.resource_type) == "UNKNOWN" {
        return Err("The filter's resource type is UNKNOWN".into());
    }
    if pattern::name(f.pattern_type) == "UNKNOWN" {
        return Err("The filter's pattern type is UNKNOWN".into());
    }
    if op::name(f.operation) == "UNKNOWN" {
        return Err("The filter's operation is UNKNOWN".into());
    }
    if permission::name(f.permission_type) == "UNKNOWN" {
        return Err("The filter's permission type is UNKNOWN".into());
    }
    Ok(())
}

/// Checks a new ACL the way Kafka's controller does; the message for INVALID_REQUEST.
pub fn validate_new_acl(a: &AclEntry) -> Result<(), String> {
    if !matches!(
        a.resource_type,
        resource::TOPIC
            | resource::GROUP
            | resource::CLUSTER
            | resource::TRANSACTIONAL_ID
            | resource::DELEGATION_TOKEN
            | resource::USER
    ) {
        return Err("Invalid resourceType".into());
    }
    if !matches!(a.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        return Err("Invalid patternType".into());
    }
    if matches!(op::name(a.operation), "UNKNOWN" | "ANY") {
        return Err("Invalid operation".into());
    }
    if !matches!(a.permission_type, permission::ALLOW | permission::DENY) {
        return Err("Invalid permissionType".into());
    }
    if a.resource_name.is_empty() {
        return Err("Resource name should not be empty".into());
    }
    if !valid_principal(&a.principal) {
        return Err(format!("Could not parse principal from `{}`", a.principal));
    }
    if a.host.is_empty() {
        return Err("Host should not be empty".into());
    }
    if a.resource_type == resource::CLUSTER && a.resource_name != CLUSTER_NAME {
        return Err(format!(
            "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        ));
    }
    Ok(())
}

/// Rate-limited denial logging.
#[derive(Debug)]
struct LogWindow {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// The broker's authorizer.
pub struct Authorizer {
    pub settings: AuthzSettings,
    /// The index and the ACL map it was built from.
    index: Mutex<(Option<AclMap>, Arc<AclIndex>)>,
    log: Mutex<LogWindow>,
}

impl Authorizer {
    pub fn new(settings: AuthzSettings) -> Authorizer {
        Authorizer {
            settings,
            index: Mutex::new((None, Arc::new(AclIndex::default()))),
            log: Mutex::new(LogWindow {
                start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The index for `acls`, rebuilt when they changed.
    fn index_for(&self, acls: &AclMap) -> Arc<AclIndex> {
        let mut g = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(src) = &g.0 {
            if Arc::ptr_eq(src, acls) {
                return g.1.clone();
            }
        }
        let idx = Arc::new(AclIndex::build(acls.values()));
        *g = (Some(acls.clone()), idx.clone());
        idx
    }

    /// Logs one denial unless this second's quota is spent.
    fn log_denial(&self, principal: &str, host: &str, operation: i8, rtype: i8, name: &str) {
        let mut w = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if w.start.elapsed().as_secs() >= 1 {
            if w.suppressed > 0 {
                tracing::info!(
                    suppressed = w.suppressed,
                    "authorization denials not logged (more than {DENIAL_LOGS_PER_SECOND} a second)"
                );
            }
            *w = LogWindow {
                start: Instant::now(),
                logged: 0,
                suppressed: 0,
            };
        }
        if w.logged < DENIAL_LOGS_PER_SECOND {
            w.logged += 1;
            tracing::info!(
                principal,
                host,
                operation = op::name(operation),
                resource = %format_args!("{}:{}", resource::name(rtype), name),
                "authorization denied"
            );
        } else {
            w.suppressed += 1;
        }
    }
}

/// The checks of one request: the caller, and the ACLs as of the request.
pub struct Session {
    broker: Arc<Broker>,
    principal: String,
    host: String,
    /// `None`: no authorizer, everything is allowed.
    index: Option<Arc<AclIndex>>,
}

impl Session {
    /// Whether `operation` on the resource is allowed; a denial is logged and counted.
    pub fn allowed(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        let ok = self.check(operation, resource_type, name);
        if !ok {
            self.denied(operation, resource_type, name);
        }
        ok
    }

    /// [`Session::allowed`] without logging a denial (Metadata leaving topics out).
    pub fn check(&self, operation: i8, resource_type: i8, name: &str) -> bool {
        match &self.index {
            None => true,
            Some(idx) => idx.authorize(
                &self.broker.authz.settings,
                &self.principal,
                &self.host,
                operation,
                resource_type,
                name,
            ),
        }
    }

    /// Kafka's authorized operations of the caller on a resource: the bit set of the
    /// resource type's supported operations it is allowed (every one without an authorizer).
    /// Nothing is logged, as Kafka asks these without logging.
    pub fn authorized_operations(&self, resource_type: i8, name: &str) -> i32 {
        bit_field(
            supported_operations(resource_type)
                .iter()
                .copied()
                .filter(|o| self.check(*o, resource_type, name)),
        )
    }

    /// On the cluster resource.
    pub fn cluster(&self, operation: i8) -> bool {
        self.allowed(operation, resource::CLUSTER, CLUSTER_NAME)
    }

    /// Whether `operation` is allowed on some resource of the type (KIP-679).
    pub fn any_of_type(&self, operation: i8, resource_type: i8) -> bool {
        match &self.index {
            None => true,
            Some(idx) => idx.authorize_any(
                &self.broker.authz.settings,
                &self.principal,
                &self.host,
                operation,
                resource_type,
            ),
        }
    }

    /// Logs and counts a denial decided elsewhere.
    pub fn denied(&self, operation: i8, resource_type: i8, name: &str) {
        self.broker.metrics().authorization_denials.inc();
        self.broker
            .authz
            .log_denial(&self.principal, &self.host, operation, resource_type, name);
    }

    /// Whether the authorizer is on.
    pub fn enabled(&self) -> bool {
        self.index.is_some()
    }
}

impl Broker {
    /// The authorization session of one request.
    pub fn authz_session(self: &Arc<Self>, ctx: &RequestContext) -> Session {
        let index = self.authz.enabled().then(|| {
            let acls = self.quorum.read(|image| image.acls().clone());
            self.authz.index_for(&acls)
        });
        Session {
            broker: self.clone(),
            principal: ctx.connection.principal.to_string(),
            host: ctx.connection.peer.ip().to_string(),
            index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: i8, name: &str, pt: i8, principal: &str, host: &str, o: i8, perm: i8) -> AclEntry {
        AclEntry {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: principal.into(),
            host: host.into(),
            operation: o,
            permission_type: perm,
        }
    }

    fn allow(rt: i8, name: &str, pt: i8, principal: &str, o: i8) -> AclEntry {
        acl(rt, name, pt, principal, "*", o, permission::ALLOW)
    }

    fn deny(rt: i8, name: &str, pt: i8, principal: &str, o: i8) -> AclEntry {
        acl(rt, name, pt, principal, "*", o, permission::DENY)
    }

    const ALICE: &str = "User:alice";
    const HOST: &str = "127.0.0.1";

    fn on() -> AuthzSettings {
        AuthzSettings {
            enabled: true,
            super_users: vec!["User:admin".into()],
            allow_if_no_acl: false,
        }
    }

    fn check(acls: &[AclEntry], o: i8, rt: i8, name: &str) -> bool {
        AclIndex::build(acls).authorize(&on(), ALICE, HOST, o, rt, name)
    }

    use resource::{CLUSTER, GROUP, TOPIC};

    #[test]
    fn literal_prefixed_and_wildcard_match() {
        let lit = [allow(TOPIC, "orders", pattern::LITERAL, ALICE, op::WRITE)];
        assert!(check(&lit, op::WRITE, TOPIC, "orders"));
        assert!(!check(&lit, op::WRITE, TOPIC, "orders2"));
        assert!(!check(&lit, op::WRITE, GROUP, "orders"));
        let pre = [allow(TOPIC, "ord", pattern::PREFIXED, ALICE, op::WRITE)];
        assert!(check(&pre, op::WRITE, TOPIC, "orders"));
        assert!(check(&pre, op::WRITE, TOPIC, "ord"));
        assert!(!check(&pre, op::WRITE, TOPIC, "or"));
        assert!(!check(&pre, op::WRITE, TOPIC, "xorders"));
        let wild = [allow(TOPIC, "*", pattern::LITERAL, ALICE, op::WRITE)];
        assert!(check(&wild, op::WRITE, TOPIC, "anything"));
        assert!(!check(&wild, op::READ, TOPIC, "anything"));
        // A prefixed ACL on "*" is a prefix, not a wildcard.
        let star_prefix = [allow(TOPIC, "*", pattern::PREFIXED, ALICE, op::WRITE)];
        assert!(!check(&star_prefix, op::WRITE, TOPIC, "orders"));
    }

    #[test]
    fn principals_and_hosts() {
        let any_user = [allow(TOPIC, "t", pattern::LITERAL, "User:*", op::READ)];
        assert!(check(&any_user, op::READ, TOPIC, "t"));
        let bob = [allow(TOPIC, "t", pattern::LITERAL, "User:bob", op::READ)];
        assert!(!check(&bob, op::READ, TOPIC, "t"));
        let other_host = [acl(
            TOPIC,
            "t",
            pattern::LITERAL,
            ALICE,
            "10.0.0.1",
            op::READ,
            permission::ALLOW,
        )];
        assert!(!check(&other_host, op::READ, TOPIC, "t"));
        let this_host = [acl(
            TOPIC,
            "t",
            pattern::LITERAL,
            ALICE,
            HOST,
            op::READ,
            permission::ALLOW,
        )];
        assert!(check(&this_host, op::READ, TOPIC, "t"));
    }

    #[test]
    fn deny_wins_and_all_covers() {
        let acls = [
            allow(TOPIC, "*", pattern::LITERAL, ALICE, op::ALL),
            deny(TOPIC, "secret", pattern::PREFIXED, "User:*", op::READ),
        ];
        assert!(check(&acls, op::READ, TOPIC, "orders"));
        assert!(check(&acls, op::DELETE, TOPIC, "orders"));
        assert!(!check(&acls, op::READ, TOPIC, "secret-pay"));
        assert!(check(&acls, op::WRITE, TOPIC, "secret-pay"));
        let deny_all = [
            allow(TOPIC, "t", pattern::LITERAL, ALICE, op::WRITE),
            deny(TOPIC, "t", pattern::LITERAL, ALICE, op::ALL),
        ];
        assert!(!check(&deny_all, op::WRITE, TOPIC, "t"));
    }

    #[test]
    fn implied_operations() {
        for granted in [op::READ, op::WRITE, op::DELETE, op::ALTER] {
            let acls = [allow(TOPIC, "t", pattern::LITERAL, ALICE, granted)];
            assert!(check(&acls, op::DESCRIBE, TOPIC, "t"));
        }
        let acls = [allow(
            TOPIC,
            "t",
            pattern::LITERAL,
            ALICE,
            op::ALTER_CONFIGS,
        )];
        assert!(check(&acls, op::DESCRIBE_CONFIGS, TOPIC, "t"));
        assert!(!check(&acls, op::DESCRIBE, TOPIC, "t"));
        // A DENY of READ does not deny DESCRIBE.
        let acls = [
            allow(TOPIC, "t", pattern::LITERAL, ALICE, op::DESCRIBE),
            deny(TOPIC, "t", pattern::LITERAL, ALICE, op::READ),
        ];
        assert!(check(&acls, op::DESCRIBE, TOPIC, "t"));
        let acls = [allow(TOPIC, "t", pattern::LITERAL, ALICE, op::DESCRIBE)];
        assert!(!check(&acls, op::READ, TOPIC, "t"));
    }

    #[test]
    fn super_users_and_no_acl_found() {
        let idx = AclIndex::build(&[deny(TOPIC, "t", pattern::LITERAL, "User:*", op::ALL)]);
        assert!(idx.authorize(&on(), "User:admin", HOST, op::READ, TOPIC, "t"));
        assert!(!idx.authorize(&on(), ALICE, HOST, op::READ, TOPIC, "u"));
        let open = AuthzSettings {
            allow_if_no_acl: true,
            ..on()
        };
        // No ACL on "u": allowed. An ACL on "t" for someone else: denied.
        assert!(idx.authorize(&open, ALICE, HOST, op::READ, TOPIC, "u"));
        assert!(idx.authorize(&open, ALICE, HOST, op::ALTER, CLUSTER, CLUSTER_NAME));
        let bob = AclIndex::build(&[allow(TOPIC, "t", pattern::LITERAL, "User:bob", op::READ)]);
        assert!(!bob.authorize(&open, ALICE, HOST, op::READ, TOPIC, "t"));
    }

    #[test]
    fn any_of_type_for_idempotent_producers() {
        let s = on();
        let idx = AclIndex::build(&[allow(TOPIC, "orders", pattern::LITERAL, ALICE, op::WRITE)]);
        assert!(idx.authorize_any(&s, ALICE, HOST, op::WRITE, TOPIC));
        assert!(!idx.authorize_any(&s, "User:bob", HOST, op::WRITE, TOPIC));
        let idx = AclIndex::build(&[
            allow(TOPIC, "orders", pattern::LITERAL, ALICE, op::WRITE),
            deny(TOPIC, "ord", pattern::PREFIXED, ALICE, op::WRITE),
        ]);
        assert!(!idx.authorize_any(&s, ALICE, HOST, op::WRITE, TOPIC));
    }

    #[test]
    fn filters_match_as_kafka_does() {
        let a = allow(TOPIC, "ord", pattern::PREFIXED, ALICE, op::WRITE);
        let f = |name: Option<&str>, pt: i8| AclFilter {
            resource_type: resource::ANY,
            name: name.map(String::from),
            pattern_type: pt,
            principal: None,
            host: None,
            operation: op::ANY,
            permission_type: permission::ANY,
        };
        assert!(f(None, pattern::ANY).matches(&a));
        assert!(f(Some("ord"), pattern::PREFIXED).matches(&a));
        assert!(!f(Some("ord"), pattern::LITERAL).matches(&a));
        assert!(f(Some("orders"), pattern::MATCH).matches(&a));
        assert!(!f(Some("orders"), pattern::ANY).matches(&a));
        assert!(f(None, pattern::PREFIXED).matches(&a));
        assert!(!f(None, pattern::LITERAL).matches(&a));
    }

    #[test]
    fn new_acls_are_validated() {
        let good = allow(TOPIC, "t", pattern::LITERAL, ALICE, op::READ);
        assert!(validate_new_acl(&good).is_ok());
        let mut bad = good.clone();
        bad.pattern_type = pattern::MATCH;
        assert!(validate_new_acl(&bad).is_err());
        let mut bad = good.clone();
        bad.operation = op::ANY;
        assert!(validate_new_acl(&bad).is_err());
        let mut bad = good.clone();
        bad.resource_type = resource::ANY;
        assert!(validate_new_acl(&bad).is_err());
        let mut bad = good.clone();
        bad.principal = "alice".into();
        assert!(validate_new_acl(&bad).is_err());
        let cluster = allow(CLUSTER, "other", pattern::LITERAL, ALICE, op::ALTER);
        assert!(validate_new_acl(&cluster).is_err());
        assert_eq!(op::parse("IdempotentWrite"), Some(op::IDEMPOTENT_WRITE));
        assert_eq!(op::parse("describe_configs"), Some(op::DESCRIBE_CONFIGS));
        assert_eq!(
            resource::parse("transactional_id"),
            Some(resource::TRANSACTIONAL_ID)
        );
    }

    #[test]
    fn authorized_operation_sets() {
        // Kafka's supported sets, as bit fields.
        assert_eq!(bit_field(supported_operations(TOPIC).iter().copied()), 3576);
        assert_eq!(bit_field(supported_operations(GROUP).iter().copied()), 3400);
        assert_eq!(
            bit_field(supported_operations(CLUSTER).iter().copied()),
            8096
        );
        let acls = [
            allow(TOPIC, "t", pattern::LITERAL, ALICE, op::READ),
            allow(TOPIC, "t", pattern::LITERAL, ALICE, op::ALTER_CONFIGS),
        ];
        let idx = AclIndex::build(&acls);
        let allowed: Vec<i8> = supported_operations(TOPIC)
            .iter()
            .copied()
            .filter(|o| idx.authorize(&on(), ALICE, HOST, *o, TOPIC, "t"))
            .collect();
        // READ implies DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS.
        assert_eq!(
            bit_field(allowed),
            bit_field([
                op::READ,
                op::DESCRIBE,
                op::ALTER_CONFIGS,
                op::DESCRIBE_CONFIGS
            ])
        );
    }

    #[test]
    fn super_users_setting() {
        assert_eq!(
            parse_super_users("User:a; User:b").unwrap(),
            vec!["User:a".to_string(), "User:b".to_string()]
        );
        assert!(parse_super_users("a").is_err());
        assert!(validate_setting("authorizer.class.name", STANDARD_AUTHORIZER).is_ok());
        assert!(validate_setting("authorizer.class.name", "x.Y").is_err());
    }
}
