//! SASL authentication of a connection (Kafka's `SaslServerAuthenticator`, rebuilt): the
//! per-connection state machine that the network edge consults for every frame of a listener
//! whose security protocol is SASL_PLAINTEXT or SASL_SSL.
//!
//! The exchange, as Kafka's clients run it:
//! - before authentication only ApiVersions, SaslHandshake and SaslAuthenticate are served;
//!   any other request closes the connection (Kafka throws IllegalSaslStateException there);
//! - SaslHandshake (v0, v1) names a mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled
//!   list (then the connection closes) if it is not enabled;
//! - after a v1 handshake the tokens travel in SaslAuthenticate (v0-v2); after a v0 handshake
//!   they travel as raw frames without Kafka headers (the pre-KIP-152 framing);
//! - a failed login is answered SASL_AUTHENTICATION_FAILED with a message, after
//!   `connection.failed.authentication.delay.ms`, and the connection is closed;
//! - KIP-368: with `connections.max.reauth.ms` set, SaslAuthenticate v1+ answers carry
//!   `session_lifetime_ms`; a SaslHandshake on an authenticated connection starts a
//!   re-authentication (same mechanism and principal); a request after the session expired
//!   closes the connection.
//!
//! Bounds: before authentication a frame may have at most `sasl.server.max.receive.size`
//! bytes, and the exchange must complete within `skein.sasl.exchange.timeout.ms` (the edge
//! closes the connection otherwise). Secrets (passwords, proofs, tokens) are never logged and
//! never put in error messages.
//!
//! Mechanisms: PLAIN (users from the Kafka-style JAAS setting or a users file) and
//! SCRAM-SHA-256/512 (credentials in the cluster metadata, [`scram`]).

pub mod client;
pub mod controller;
pub mod scram;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use skein_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};
use skein_protocol::{ApiKey, ErrorCode, RequestBody, ResponseBody};

use crate::broker::Broker;
use crate::config::ConfigType;
use scram::{Mechanism, ScramServer, ScramStep};

pub const UNSUPPORTED_SASL_MECHANISM: ErrorCode = ErrorCode(33);
pub const ILLEGAL_SASL_STATE: ErrorCode = ErrorCode(34);
pub const SASL_AUTHENTICATION_FAILED: ErrorCode = ErrorCode(58);
pub const RESOURCE_NOT_FOUND: ErrorCode = ErrorCode(91);
pub const DUPLICATE_RESOURCE: ErrorCode = ErrorCode(92);
pub const UNACCEPTABLE_CREDENTIAL: ErrorCode = ErrorCode(93);

/// The mechanisms Skein implements.
pub const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// The settings this module reads (validated by [`validate_setting`]), as DescribeConfigs
/// lists them: name, default, type and documentation.
pub const DESCRIBED: &[(&str, &str, ConfigType, &str)] = &[
    ("sasl.enabled.mechanisms", "", ConfigType::List, "The SASL mechanisms a SASL listener offers: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (Kafka's default GSSAPI is not built, so a SASL listener needs this set)."),
    ("connections.max.reauth.ms", "0", ConfigType::Long, "KIP-368: a SASL session's lifetime; a client must re-authenticate before it ends or its connection is closed. 0: sessions do not expire."),
    ("sasl.server.max.receive.size", "524288", ConfigType::Int, "The largest frame accepted before a connection is authenticated."),
    ("connection.failed.authentication.delay.ms", "100", ConfigType::Int, "How long a failed login waits before it is answered and its connection closed."),
    ("skein.sasl.plain.users.file", "", ConfigType::String, "A file of user=password lines: PLAIN users, added to the JAAS configuration's."),
    ("skein.sasl.exchange.timeout.ms", "10000", ConfigType::Long, "The longest a SASL exchange (or re-authentication) may take before its connection is closed."),
    ("sasl.mechanism.inter.broker.protocol", "GSSAPI", ConfigType::String, "The mechanism brokers log in to one another with on a SASL inter-broker listener."),
    ("sasl.mechanism.controller.protocol", "GSSAPI", ConfigType::String, "The mechanism every node logs in to the controllers with on a SASL controller listener."),
];

/// The type and documentation of a per-listener SASL setting
/// (`listener.name.<l>.sasl.enabled.mechanisms`, `listener.name.<l>.<mechanism>.sasl.jaas.config`).
pub fn describe_listener_setting(key: &str) -> Option<(ConfigType, &'static str)> {
    if !key.starts_with("listener.name.") {
        None
    } else if key.ends_with(".sasl.jaas.config") {
        Some((ConfigType::Password, "A listener's JAAS configuration for one mechanism: the PLAIN users it accepts (user_NAME=\"PASSWORD\") and the username and password this node logs in with. Sensitive."))
    } else if key.ends_with(".sasl.enabled.mechanisms") {
        Some((
            ConfigType::List,
            "The SASL mechanisms this listener offers (overrides sasl.enabled.mechanisms).",
        ))
    } else {
        None
    }
}

/// Whether `key` is a SASL setting ([`validate_setting`] checks its value).
pub fn is_setting(key: &str) -> bool {
    DESCRIBED.iter().any(|(name, ..)| *name == key)
        || (key.starts_with("listener.name.")
            && (key.ends_with(".sasl.jaas.config") || key.ends_with(".sasl.enabled.mechanisms")))
}

/// Validates a SASL setting's value.
pub fn validate_setting(key: &str, value: &str) -> Result<(), String> {
    let v = value.trim();
    let number = |min: i64| -> Result<(), String> {
        match v.parse::<i64>() {
            Ok(n) if n >= min => Ok(()),
            _ => Err(format!(
                "invalid value for {key}: expected an integer >= {min}"
            )),
        }
    };
    match key {
        "connections.max.reauth.ms" | "connection.failed.authentication.delay.ms" => number(0),
        "sasl.server.max.receive.size" | "skein.sasl.exchange.timeout.ms" => number(1),
        "skein.sasl.plain.users.file" => Ok(()),
        "sasl.mechanism.inter.broker.protocol" | "sasl.mechanism.controller.protocol" => {
            let m = v.to_ascii_uppercase();
            if m == "GSSAPI" || MECHANISMS.contains(&m.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "invalid value for {key}: {v} is not one of {}",
                    MECHANISMS.join(", ")
                ))
            }
        }
        k if k.ends_with("sasl.enabled.mechanisms") => parse_mechanisms(v).map(|_| ()),
        k if k.ends_with(".sasl.jaas.config") => {
            if k.ends_with(".plain.sasl.jaas.config")
                || k.ends_with(".scram-sha-256.sasl.jaas.config")
                || k.ends_with(".scram-sha-512.sasl.jaas.config")
            {
                parse_jaas_users(v).map(|_| ())
            } else {
                Err(format!(
                    "invalid setting {key}: expected listener.name.LISTENER.MECHANISM.sasl.jaas.config with MECHANISM plain, scram-sha-256 or scram-sha-512"
                ))
            }
        }
        _ => Err(format!("unknown setting {key}")),
    }
}

fn parse_mechanisms(v: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = v
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect();
    for m in &list {
        if !MECHANISMS.contains(&m.as_str()) {
            return Err(format!(
                "invalid value for sasl.enabled.mechanisms: {m} is not one of {}",
                MECHANISMS.join(", ")
            ));
        }
    }
    Ok(list)
}

/// The `user_NAME="PASSWORD"` options of a Kafka JAAS line (PlainLoginModule). Other options
/// (the login module, `username`/`password` for inter-broker use) are skipped.
fn parse_jaas_users(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for (key, value) in parse_jaas_options(v)? {
        if let Some(user) = key.strip_prefix("user_") {
            if user.is_empty() {
                return Err("invalid sasl.jaas.config: user_ with no user name".into());
            }
            users.insert(user.to_string(), value);
        }
    }
    Ok(users)
}

/// Every `KEY="VALUE"` (or `KEY=VALUE`) option of a Kafka JAAS line, after the login module
/// and its flag, in order.
pub fn parse_jaas_options(v: &str) -> Result<Vec<(String, String)>, String> {
    let mut options = Vec::new();
    let mut rest = v.trim().trim_end_matches(';');
    // The module name and its flag.
    let mut words = 0;
    while words < 2 {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        if rest[..end].contains('=') {
            break;
        }
        rest = &rest[end..];
        words += 1;
    }
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let Some(eq) = rest.find('=') else {
            return Err("invalid sasl.jaas.config: expected KEY=\"VALUE\" options".into());
        };
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let Some(close) = quoted.find('"') else {
                return Err("invalid sasl.jaas.config: unterminated quoted value".into());
            };
            value = quoted[..close].to_string();
            rest = &quoted[close + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        options.push((key, value));
    }
    Ok(options)
}

/// `user=password` lines (`#` comments, blank lines skipped).
fn parse_users_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((u, p)) = line.split_once('=') else {
            return Err(format!("line {}: expected USER=PASSWORD", n + 1));
        };
        if u.trim().is_empty() {
            return Err(format!("line {}: empty user name", n + 1));
        }
        users.insert(u.trim().to_string(), p.to_string());
    }
    Ok(users)
}

/// The SASL settings of one listener.
#[derive(Clone)]
pub struct SaslSettings {
    /// The listener's name, for the authentication metrics.
    pub listener: String,
    /// Upper case, in the configured order.
    pub enabled: Vec<String>,
    /// PLAIN users and their passwords.
    plain_users: BTreeMap<String, String>,
    pub max_receive_size: usize,
    /// `connections.max.reauth.ms`; 0: sessions do not expire.
    pub reauth_ms: u64,
    pub failed_delay: Duration,
    pub exchange_timeout: Duration,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings")
            .field("enabled", &self.enabled)
            .field("plain_users", &self.plain_users.len())
            .field("max_receive_size", &self.max_receive_size)
            .field("reauth_ms", &self.reauth_ms)
            .finish()
    }
}

impl SaslSettings {
    /// The settings of listener `listener` (its name, any case) from the explicit settings.
    pub fn for_listener(
        explicit: &BTreeMap<String, String>,
        listener: &str,
    ) -> Result<SaslSettings, String> {
        let l = listener.to_ascii_lowercase();
        let get = |k: &str| explicit.get(k).map(|v| v.trim().to_string());
        let num = |k: &str, default: u64| -> u64 {
            get(k).and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let enabled = match get(&format!("listener.name.{l}.sasl.enabled.mechanisms"))
            .or_else(|| get("sasl.enabled.mechanisms"))
        {
            Some(v) => parse_mechanisms(&v)?,
            // Kafka's default is GSSAPI, which Skein does not have.
            None => Vec::new(),
        };
        let mut plain_users = BTreeMap::new();
        if let Some(jaas) = explicit.get(&format!("listener.name.{l}.plain.sasl.jaas.config")) {
            plain_users.extend(parse_jaas_users(jaas)?);
        }
        if let Some(path) = get("skein.sasl.plain.users.file").filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("skein.sasl.plain.users.file {path}: {e}"))?;
            plain_users.extend(parse_users_file(&text).map_err(|e| format!("{path}: {e}"))?);
        }
        if enabled.is_empty() {
            return Err(format!(
                "listener {listener} uses SASL but sasl.enabled.mechanisms names none of {}",
                MECHANISMS.join(", ")
            ));
        }
        if enabled.iter().any(|m| m == "PLAIN") && plain_users.is_empty() {
            tracing::warn!(
                listener,
                "PLAIN is enabled but no PLAIN users are configured (listener.name.{l}.plain.sasl.jaas.config or skein.sasl.plain.users.file)"
            );
        }
        Ok(SaslSettings {
            listener: listener.to_string(),
            enabled,
            plain_users,
            max_receive_size: num("sasl.server.max.receive.size", 524_288) as usize,
            reauth_ms: num("connections.max.reauth.ms", 0),
            failed_delay: Duration::from_millis(num(
                "connection.failed.authentication.delay.ms",
                100,
            )),
            exchange_timeout: Duration::from_millis(num("skein.sasl.exchange.timeout.ms", 10_000)),
        })
    }
}

/// What the edge does with a frame.
pub enum Action {
    /// Serve it as an ordinary Kafka request.
    Pass,
    /// Send these bytes (a whole frame, length included) and read on.
    Reply(BytesMut),
    /// Send `reply` (if any), after `delay`, then close the connection.
    Close {
        reply: Option<BytesMut>,
        delay: Duration,
        reason: String,
    },
}

fn close(reason: impl Into<String>) -> Action {
    Action::Close {
        reply: None,
        delay: Duration::ZERO,
        reason: reason.into(),
    }
}

enum Exchange {
    Plain,
    Scram(Box<ScramServer>),
}

enum State {
    /// Expecting ApiVersions or SaslHandshake.
    Handshake,
    Authenticating {
        mechanism: String,
        /// After a v0 handshake: tokens come as raw frames.
        raw: bool,
        exchange: Exchange,
        /// A re-authentication: the principal the session had.
        previous: Option<String>,
    },
    Authenticated {
        mechanism: String,
        principal: String,
        expires: Option<Instant>,
    },
}

/// One connection's SASL state.
pub struct SaslConnection {
    settings: Arc<SaslSettings>,
    state: State,
    /// When the current exchange must be done by.
    deadline: Instant,
}

impl SaslConnection {
    pub fn new(settings: Arc<SaslSettings>) -> SaslConnection {
        let deadline = Instant::now() + settings.exchange_timeout;
        SaslConnection {
            settings,
            state: State::Handshake,
            deadline,
        }
    }

    /// The authenticated user (the principal is `User:NAME`), if any.
    pub fn user(&self) -> Option<&str> {
        match &self.state {
            State::Authenticated { principal, .. } => principal.strip_prefix("User:"),
            _ => None,
        }
    }

    /// Whether an exchange is under way (or has not started): then the next frame must come
    /// before [`Self::deadline`] and be at most [`Self::max_frame`] bytes.
    pub fn authenticating(&self) -> bool {
        !matches!(self.state, State::Authenticated { .. })
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The largest frame accepted now.
    pub fn max_frame(&self, normal: usize) -> usize {
        if self.authenticating() {
            normal.min(self.settings.max_receive_size)
        } else {
            normal
        }
    }

    /// Decides what to do with one frame (without its length prefix).
    pub fn on_frame(&mut self, broker: &Broker, frame: &Bytes, now: Instant) -> Action {
        if let State::Authenticating { raw: true, .. } = self.state {
            return self.raw_token(broker, frame);
        }
        if frame.len() < 8 {
            return close("a frame without a request header");
        }
        let api_key = ApiKey::from_i16(i16::from_be_bytes([frame[0], frame[1]]));
        match api_key {
            Some(ApiKey::SaslHandshake) | Some(ApiKey::SaslAuthenticate) => {}
            Some(ApiKey::ApiVersions) if !matches!(self.state, State::Authenticating { .. }) => {
                return Action::Pass
            }
            _ => {
                return match &self.state {
                    State::Authenticated { expires, .. } => match expires {
                        Some(at) if now >= *at => close("the SASL session expired (connections.max.reauth.ms) and the client did not re-authenticate"),
                        _ => Action::Pass,
                    },
                    _ => close(format!(
                        "unexpected request {api_key:?} during SASL authentication"
                    )),
                }
            }
        }
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let Some((min, max)) = api_key.and_then(crate::supported_versions) else {
            return close("SASL API not served");
        };
        if version < min || version > max {
            return close(format!("unsupported {api_key:?} version {version}"));
        }
        let body = match skein_protocol::decode_request(frame.clone()) {
            Ok((_, body)) => body,
            Err(e) => return close(format!("undecodable SASL request: {e}")),
        };
        match body {
            RequestBody::SaslHandshake(r) => {
                self.handshake(correlation_id, version, r.mechanism, now)
            }
            RequestBody::SaslAuthenticate(r) => {
                self.authenticate(broker, correlation_id, version, &r.auth_bytes, now)
            }
            _ => close("unexpected request body"),
        }
    }

    fn handshake(&mut self, cid: i32, version: i16, mechanism: String, now: Instant) -> Action {
        let reply = |code: ErrorCode| {
            let body = ResponseBody::SaslHandshake(SaslHandshakeResponse {
                error_code: code.0,
                mechanisms: self.settings.enabled.clone(),
                ..Default::default()
            });
            skein_protocol::encode_response(cid, ApiKey::SaslHandshake, version, &body).ok()
        };
        let previous = match &self.state {
            State::Handshake => None,
            State::Authenticated {
                mechanism: was,
                principal,
                ..
            } => {
                if version == 0 {
                    // Re-authentication needs v1 (KIP-368); Kafka answers this one so.
                    return match reply(ILLEGAL_SASL_STATE) {
                        Some(b) => Action::Reply(b),
                        None => close("could not encode"),
                    };
                }
                if *was != mechanism {
                    return Action::Close {
                        reply: reply(ILLEGAL_SASL_STATE),
                        delay: Duration::ZERO,
                        reason: "re-authentication with another mechanism".into(),
                    };
                }
                Some(principal.clone())
            }
            State::Authenticating { .. } => {
                return Action::Close {
                    reply: reply(ILLEGAL_SASL_STATE),
                    delay: Duration::ZERO,
                    reason: "SaslHandshake during a SASL exchange".into(),
                }
            }
        };
        if !self.settings.enabled.contains(&mechanism) {
            return Action::Close {
                reply: reply(UNSUPPORTED_SASL_MECHANISM),
                delay: Duration::ZERO,
                reason: "unsupported SASL mechanism".into(),
            };
        }
        let exchange = match Mechanism::from_name(&mechanism) {
            Some(m) => Exchange::Scram(Box::new(ScramServer::new(m))),
            None => Exchange::Plain,
        };
        self.state = State::Authenticating {
            mechanism,
            raw: version == 0,
            exchange,
            previous,
        };
        self.deadline = now + self.settings.exchange_timeout;
        match reply(ErrorCode::NONE) {
            Some(b) => Action::Reply(b),
            None => close("could not encode"),
        }
    }

    /// Runs one token of the exchange.
    fn step(&mut self, broker: &Broker, token: &[u8], now: Instant) -> Step {
        let State::Authenticating {
            mechanism,
            exchange,
            previous,
            ..
        } = &mut self.state
        else {
            return Step::Failed("no SASL exchange under way".into());
        };
        let (user, reply) = match exchange {
            Exchange::Plain => match self.settings.check_plain(token) {
                Ok(user) => (user, Vec::new()),
                Err(e) => return Step::Failed(e),
            },
            Exchange::Scram(s) => {
                let m = Mechanism::from_name(mechanism).expect("a SCRAM mechanism");
                match s.step(token, |user| broker.scram_credential(user, m)) {
                    ScramStep::Continue(reply) => return Step::Continue(reply),
                    ScramStep::Done { user, reply } => (user, reply),
                    ScramStep::Failed(e) => return Step::Failed(e),
                }
            }
        };
        let principal = format!("User:{user}");
        if let Some(prev) = previous {
            if *prev != principal {
                return Step::Failed(
                    "Re-authentication failed: the principal changed during re-authentication"
                        .into(),
                );
            }
        }
        let mechanism = mechanism.clone();
        let expires = (self.settings.reauth_ms > 0)
            .then(|| now + Duration::from_millis(self.settings.reauth_ms));
        tracing::debug!(%principal, %mechanism, "SASL authentication succeeded");
        broker
            .metrics()
            .authentication(&self.settings.listener, &mechanism, true);
        self.state = State::Authenticated {
            mechanism,
            principal,
            expires,
        };
        Step::Done(reply)
    }

    fn authenticate(
        &mut self,
        broker: &Broker,
        cid: i32,
        version: i16,
        token: &[u8],
        now: Instant,
    ) -> Action {
        let encode = |code: ErrorCode, message: Option<String>, bytes: Vec<u8>, lifetime: i64| {
            let body = ResponseBody::SaslAuthenticate(SaslAuthenticateResponse {
                error_code: code.0,
                error_message: message,
                auth_bytes: Bytes::from(bytes),
                session_lifetime_ms: lifetime,
                ..Default::default()
            });
            skein_protocol::encode_response(cid, ApiKey::SaslAuthenticate, version, &body).ok()
        };
        match &self.state {
            State::Authenticating { raw: false, .. } => {}
            State::Authenticated { .. } => {
                return match encode(
                    ILLEGAL_SASL_STATE,
                    Some(
                        "SaslAuthenticate request received after successful authentication".into(),
                    ),
                    Vec::new(),
                    0,
                ) {
                    Some(b) => Action::Reply(b),
                    None => close("could not encode"),
                };
            }
            _ => {
                return Action::Close {
                    reply: encode(
                        ILLEGAL_SASL_STATE,
                        Some("Unexpected SaslAuthenticate request before SaslHandshake".into()),
                        Vec::new(),
                        0,
                    ),
                    delay: Duration::ZERO,
                    reason: "SaslAuthenticate before SaslHandshake".into(),
                }
            }
        }
        match self.step(broker, token, now) {
            Step::Continue(bytes) => match encode(ErrorCode::NONE, None, bytes, 0) {
                Some(b) => Action::Reply(b),
                None => close("could not encode"),
            },
            Step::Done(bytes) => {
                let lifetime = if version >= 1 {
                    self.settings.reauth_ms.min(i64::MAX as u64) as i64
                } else {
                    0
                };
                match encode(ErrorCode::NONE, None, bytes, lifetime) {
                    Some(b) => Action::Reply(b),
                    None => close("could not encode"),
                }
            }
            Step::Failed(message) => {
                self.count_failure(broker);
                Action::Close {
                    reply: encode(
                        SASL_AUTHENTICATION_FAILED,
                        Some(message.clone()),
                        Vec::new(),
                        0,
                    ),
                    delay: self.settings.failed_delay,
                    reason: message,
                }
            }
        }
    }

    /// Counts a failed login, by listener and mechanism.
    fn count_failure(&self, broker: &Broker) {
        broker.metrics().sasl_authentication_failures.inc();
        if let State::Authenticating { mechanism, .. } = &self.state {
            broker
                .metrics()
                .authentication(&self.settings.listener, mechanism, false);
        }
    }

    /// A token in the v0 handshake's raw framing: answered with a raw frame; a failure closes
    /// the connection (that framing has no way to say why).
    fn raw_token(&mut self, broker: &Broker, token: &[u8]) -> Action {
        let raw = |bytes: Vec<u8>| {
            let mut b = BytesMut::with_capacity(4 + bytes.len());
            b.put_i32(bytes.len() as i32);
            b.put_slice(&bytes);
            Action::Reply(b)
        };
        match self.step(broker, token, Instant::now()) {
            Step::Continue(bytes) | Step::Done(bytes) => raw(bytes),
            Step::Failed(message) => {
                self.count_failure(broker);
                Action::Close {
                    reply: None,
                    delay: self.settings.failed_delay,
                    reason: message,
                }
            }
        }
    }
}

impl Broker {
    /// The stored SCRAM credential of `user` for `m`, from the cluster metadata.
    pub fn scram_credential(&self, user: &str, m: Mechanism) -> Option<scram::Credential> {
        self.quorum.read(|image| {
            image
                .scram_credential(user, m as i8)
                .map(|c| scram::Credential {
                    salt: c.salt.to_vec(),
                    stored_key: c.stored_key.to_vec(),
                    server_key: c.server_key.to_vec(),
                    iterations: c.iterations,
                })
        })
    }
}

enum Step {
    Continue(Vec<u8>),
    Done(Vec<u8>),
    Failed(String),
}

impl SaslSettings {
    /// RFC 4616: `[authzid] NUL authcid NUL passwd`; the authzid, if given, must be the user.
    fn check_plain(&self, token: &[u8]) -> Result<String, String> {
        let invalid = || "Invalid SASL/PLAIN response: expected 3 tokens".to_string();
        let mut parts = token.split(|b| *b == 0);
        let (Some(authzid), Some(user), Some(password), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user))
        else {
            return Err(invalid());
        };
        if user.is_empty() {
            return Err("Authentication failed: username not specified".into());
        }
        if password.is_empty() {
            return Err("Authentication failed: password not specified".into());
        }
        if !authzid.is_empty() && authzid != user {
            return Err(
                "Authentication failed: Client requested an authorization id that is different from username".into(),
            );
        }
        let ok = match self.plain_users.get(user) {
            Some(expected) => scram::ct_eq(expected.as_bytes(), password),
            None => {
                // Spend the same comparison on a miss.
                let _ = scram::ct_eq(password, password);
                false
            }
        };
        if ok {
            Ok(user.to_string())
        } else {
            Err("Authentication failed: Invalid username or password".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_users_parse() {
        let users = parse_jaas_users(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="a b=c";"#,
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["alice"], "a b=c");
        assert!(parse_jaas_users(r#"x required user_a="open"#).is_err());
    }

    #[test]
    fn plain_checks() {
        let s = SaslSettings {
            listener: "SASL_PLAINTEXT".into(),
            enabled: vec!["PLAIN".into()],
            plain_users: [("alice".to_string(), "pw".to_string())].into(),
            max_receive_size: 1024,
            reauth_ms: 0,
            failed_delay: Duration::ZERO,
            exchange_timeout: Duration::from_secs(1),
        };
        assert_eq!(s.check_plain(b"\0alice\0pw").unwrap(), "alice");
        assert_eq!(s.check_plain(b"alice\0alice\0pw").unwrap(), "alice");
        assert!(s.check_plain(b"bob\0alice\0pw").is_err());
        assert!(s.check_plain(b"\0alice\0px").is_err());
        assert!(s.check_plain(b"\0bob\0pw").is_err());
        assert!(s.check_plain(b"\0alice\0pw\0").is_err());
        assert!(s.check_plain(b"").is_err());
    }

    /// The pure front-path parsers never panic on arbitrary bytes (a cheap stand-in for a
    /// fuzz target: PLAIN tokens, SCRAM messages at both steps, JAAS and users-file text).
    #[test]
    fn arbitrary_input_never_panics() {
        let s = SaslSettings {
            listener: "SASL_PLAINTEXT".into(),
            enabled: vec!["PLAIN".into()],
            plain_users: [("a".to_string(), "b".to_string())].into(),
            max_receive_size: 1024,
            reauth_ms: 0,
            failed_delay: Duration::ZERO,
            exchange_timeout: Duration::from_secs(1),
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"n,=ra\0y p=c=biws1xyz=2C=3D\xff";
        for round in 0..20_000 {
            let len = (round % 48) as usize;
            let msg: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x.is_multiple_of(3) {
                        (x >> 8) as u8
                    } else {
                        alphabet[(x >> 16) as usize % alphabet.len()]
                    }
                })
                .collect();
            let _ = s.check_plain(&msg);
            let text = String::from_utf8_lossy(&msg);
            let _ = parse_jaas_users(&text);
            let _ = parse_users_file(&text);
            let m = if round % 2 == 0 {
                Mechanism::Sha256
            } else {
                Mechanism::Sha512
            };
            let mut server = ScramServer::new(m);
            let mut first = b"n,,n=a,r=".to_vec();
            first.extend_from_slice(&msg);
            let _ = server.step(&msg, |_| None);
            let mut server = ScramServer::new(m);
            if let ScramStep::Continue(_) = server.step(&first, |_| None) {
                let _ = server.step(&msg, |_| None);
            }
        }
    }

    #[test]
    fn settings_validate() {
        assert!(validate_setting("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-512").is_ok());
        assert!(validate_setting("sasl.enabled.mechanisms", "GSSAPI").is_err());
        assert!(validate_setting("connections.max.reauth.ms", "-1").is_err());
        assert!(is_setting(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config"
        ));
        assert!(crate::config::is_sensitive(
            "listener.name.sasl_plaintext.plain.sasl.jaas.config"
        ));
        assert!(crate::config::is_sensitive(
            "listener.name.controller.scram-sha-512.sasl.jaas.config"
        ));
        assert!(!crate::config::is_sensitive("sasl.enabled.mechanisms"));
    }
}
