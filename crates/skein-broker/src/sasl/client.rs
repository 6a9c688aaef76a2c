//! The client side of SASL, for this broker's own connections to other brokers (peer calls
//! and replica fetchers) when the inter-broker listener is SASL_PLAINTEXT or SASL_SSL.
//!
//! As Kafka's brokers do it: the mechanism is `sasl.mechanism.inter.broker.protocol`, the
//! credentials are the `username` and `password` options of the inter-broker listener's
//! `listener.name.<listener>.<mechanism>.sasl.jaas.config` (the same setting that holds the
//! listener's PLAIN `user_NAME` entries). The exchange is SaslHandshake v1 then
//! SaslAuthenticate v1 frames, encoded with the broker's own codec ([`crate::peer::exchange`]).
//! PLAIN sends one token; SCRAM-SHA-256/512 (RFC 5802, no channel binding) two, and the
//! server's signature is checked before the connection is used. Secrets are never logged or
//! put in errors.

use std::collections::BTreeMap;
use std::io;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use skein_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use skein_protocol::{ApiKey, RequestBody, ResponseBody};
use tokio::io::{AsyncRead, AsyncWrite};

use super::scram::{random_bytes, Mechanism};

/// The largest SASL answer accepted from a peer.
const MAX_SASL_RESPONSE: usize = 64 * 1024;
const HANDSHAKE_VERSION: i16 = 1;
const AUTHENTICATE_VERSION: i16 = 1;

/// How this broker logs in to the others.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslCredentials {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    password: String,
}

impl std::fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SaslCredentials {
    pub fn new(mechanism: &str, username: &str, password: &str) -> SaslCredentials {
        SaslCredentials {
            mechanism: mechanism.to_ascii_uppercase(),
            username: username.to_string(),
            password: password.to_string(),
        }
    }

    /// Credentials for `mechanism` from the `username` and `password` options of a
    /// `sasl.jaas.config` value: `Ok(None)` when either is missing or the name is empty, an
    /// error (never quoting a secret) when the value does not parse.
    pub fn from_jaas(jaas: &str, mechanism: &str) -> Result<Option<SaslCredentials>, String> {
        let options = super::parse_jaas_options(jaas)?;
        let get = |name: &str| {
            options
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        Ok(match (get("username"), get("password")) {
            (Some(u), Some(p)) if !u.is_empty() => Some(SaslCredentials::new(mechanism, u, p)),
            _ => None,
        })
    }

    /// The inter-broker credentials for `listener` (any case) from the explicit settings:
    /// `sasl.mechanism.inter.broker.protocol` and the `username`/`password` options of
    /// `listener.name.<listener>.<mechanism>.sasl.jaas.config`. An error says what is missing.
    pub fn for_inter_broker(
        explicit: &BTreeMap<String, String>,
        listener: &str,
    ) -> Result<SaslCredentials, String> {
        Self::for_link(
            explicit,
            listener,
            "sasl.mechanism.inter.broker.protocol",
            "inter-broker",
            "the other brokers",
        )
    }

    /// The credentials this node logs in to the controller listener `listener` with
    /// (Raft between controllers, brokers' calls to the controllers):
    /// `sasl.mechanism.controller.protocol` and the `username`/`password` options of
    /// `listener.name.<listener>.<mechanism>.sasl.jaas.config`, as Kafka takes them.
    pub fn for_controller(
        explicit: &BTreeMap<String, String>,
        listener: &str,
    ) -> Result<SaslCredentials, String> {
        Self::for_link(
            explicit,
            listener,
            "sasl.mechanism.controller.protocol",
            "controller",
            "the controllers",
        )
    }

    fn for_link(
        explicit: &BTreeMap<String, String>,
        listener: &str,
        setting: &str,
        what: &str,
        peers: &str,
    ) -> Result<SaslCredentials, String> {
        let l = listener.to_ascii_lowercase();
        let mechanism = explicit
            .get(setting)
            .map(|m| m.trim().to_ascii_uppercase())
            // Kafka's default.
            .unwrap_or_else(|| "GSSAPI".into());
        if !super::MECHANISMS.contains(&mechanism.as_str()) {
            return Err(format!(
                "{what} listener {listener} uses SASL with {setting}={mechanism}, which Skein does not have: set it to one of {}",
                super::MECHANISMS.join(", ")
            ));
        }
        let key = format!(
            "listener.name.{l}.{}.sasl.jaas.config",
            mechanism.to_ascii_lowercase()
        );
        let jaas = explicit.get(&key).ok_or_else(|| {
            format!(
                "{what} listener {listener} uses SASL {mechanism}: set {key} with the username and password this node logs in to {peers} with"
            )
        })?;
        match SaslCredentials::from_jaas(jaas, &mechanism).map_err(|e| format!("{key}: {e}"))? {
            Some(credentials) => Ok(credentials),
            None => Err(format!(
                "{key} needs username=\"…\" and password=\"…\" options: the credentials this node logs in to {peers} with"
            )),
        }
    }
}

fn auth_error(m: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, m)
}

fn invalid(m: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.to_string())
}

/// Logs in on a new connection. `Err` with `PermissionDenied` is an authentication failure
/// (the server's message, which never holds a secret).
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    creds: &SaslCredentials,
    client_id: &str,
) -> io::Result<()> {
    let handshake = crate::peer::exchange(
        stream,
        1,
        client_id,
        (ApiKey::SaslHandshake, HANDSHAKE_VERSION),
        RequestBody::SaslHandshake(SaslHandshakeRequest {
            mechanism: creds.mechanism.clone(),
            ..Default::default()
        }),
        MAX_SASL_RESPONSE,
    )
    .await?;
    let ResponseBody::SaslHandshake(h) = handshake else {
        return Err(invalid("unexpected answer to SaslHandshake"));
    };
    if h.error_code != 0 {
        return Err(auth_error(format!(
            "SaslHandshake {} refused with error {} (the peer enables {:?})",
            creds.mechanism, h.error_code, h.mechanisms
        )));
    }
    let mut scram = match creds.mechanism.as_str() {
        "PLAIN" => None,
        m => Some(ScramClient::new(
            Mechanism::from_name(m).ok_or_else(|| invalid("unknown SASL mechanism"))?,
            creds,
        )),
    };
    let mut token = match &scram {
        None => plain_token(creds),
        Some(s) => s.client_first(),
    };
    let mut correlation = 1;
    loop {
        correlation += 1;
        let answer = crate::peer::exchange(
            stream,
            correlation,
            client_id,
            (ApiKey::SaslAuthenticate, AUTHENTICATE_VERSION),
            RequestBody::SaslAuthenticate(SaslAuthenticateRequest {
                auth_bytes: Bytes::from(token),
                ..Default::default()
            }),
            MAX_SASL_RESPONSE,
        )
        .await?;
        let ResponseBody::SaslAuthenticate(a) = answer else {
            return Err(invalid("unexpected answer to SaslAuthenticate"));
        };
        if a.error_code != 0 {
            return Err(auth_error(format!(
                "SASL {} login as {} failed with error {}: {}",
                creds.mechanism,
                creds.username,
                a.error_code,
                a.error_message.unwrap_or_default()
            )));
        }
        match scram.as_mut() {
            None => return Ok(()),
            Some(s) => match s.next(&a.auth_bytes)? {
                Some(t) => token = t,
                None => return Ok(()),
            },
        }
    }
}

/// RFC 4616: `authzid NUL authcid NUL passwd`, with an empty authzid.
pub fn plain_token(creds: &SaslCredentials) -> Vec<u8> {
    let mut t = Vec::with_capacity(creds.username.len() + creds.password.len() + 2);
    t.push(0);
    t.extend_from_slice(creds.username.as_bytes());
    t.push(0);
    t.extend_from_slice(creds.password.as_bytes());
    t
}

/// RFC 5802 `saslname`: ',' as `=2C`, '=' as `=3D`.
fn encode_saslname(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

enum ScramStage {
    First,
    Final { server_signature: Vec<u8> },
    Done,
}

/// One client-side SCRAM exchange, without I/O (the `skein` CLI drives it over its blocking
/// connection, [`login`] over an async one).
pub struct ScramClient {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    stage: ScramStage,
}

impl ScramClient {
    pub fn new(mechanism: Mechanism, creds: &SaslCredentials) -> ScramClient {
        let nonce = B64.encode(random_bytes(24));
        ScramClient {
            mechanism,
            password: creds.password.clone(),
            client_first_bare: format!("n={},r={nonce}", encode_saslname(&creds.username)),
            nonce,
            stage: ScramStage::First,
        }
    }

    /// The client-first message (`n,,n=USER,r=NONCE`).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The server's next message: `Some(token)` to send, `None` when done. An error of kind
    /// `PermissionDenied` is an authentication failure (never holding a secret).
    pub fn next(&mut self, server: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let text = std::str::from_utf8(server).map_err(|_| invalid("SCRAM: not UTF-8"))?;
        match std::mem::replace(&mut self.stage, ScramStage::Done) {
            ScramStage::First => {
                let attr = |name: &str| {
                    text.split(',')
                        .find_map(|a| a.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                };
                if let Some(e) = attr("e") {
                    return Err(auth_error(format!("SCRAM: the server says {e}")));
                }
                let nonce = attr("r").ok_or_else(|| invalid("SCRAM: no nonce"))?;
                if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
                    return Err(invalid("SCRAM: the server's nonce does not extend ours"));
                }
                let salt = attr("s")
                    .and_then(|s| B64.decode(s).ok())
                    .ok_or_else(|| invalid("SCRAM: no salt"))?;
                let iterations: u32 = attr("i")
                    .and_then(|i| i.parse().ok())
                    .ok_or_else(|| invalid("SCRAM: no iteration count"))?;
                let m = self.mechanism;
                // Kafka's bounds; a larger count would only make us burn CPU.
                if iterations < m.min_iterations() as u32 || iterations > m.max_iterations() as u32
                {
                    return Err(invalid("SCRAM: iteration count out of bounds"));
                }
                let salted = m.salted_password(self.password.as_bytes(), &salt, iterations);
                let client_key = m.hmac(&salted, b"Client Key");
                let stored_key = m.hash(&client_key);
                let without_proof = format!("c=biws,r={nonce}");
                let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
                let signature = m.hmac(&stored_key, auth_message.as_bytes());
                let proof: Vec<u8> = client_key
                    .iter()
                    .zip(&signature)
                    .map(|(a, b)| a ^ b)
                    .collect();
                let server_key = m.hmac(&salted, b"Server Key");
                self.stage = ScramStage::Final {
                    server_signature: m.hmac(&server_key, auth_message.as_bytes()),
                };
                Ok(Some(
                    format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
                ))
            }
            ScramStage::Final { server_signature } => {
                if let Some(e) = text.strip_prefix("e=") {
                    return Err(auth_error(format!("SCRAM: the server says {e}")));
                }
                let v = text
                    .strip_prefix("v=")
                    .and_then(|v| B64.decode(v.split(',').next().unwrap_or("")).ok())
                    .ok_or_else(|| invalid("SCRAM: no server signature"))?;
                if !super::scram::ct_eq(&v, &server_signature) {
                    return Err(auth_error(
                        "SCRAM: the server's signature is wrong (it does not know our credentials)"
                            .into(),
                    ));
                }
                Ok(None)
            }
            ScramStage::Done => Err(invalid("SCRAM: message after the end of the exchange")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::scram::{Credential, ScramServer, ScramStep};

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credentials_from_jaas() {
        let s = settings(&[
            ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
            (
                "listener.name.internal.scram-sha-512.sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="s3cret";"#,
            ),
        ]);
        let c = SaslCredentials::for_inter_broker(&s, "INTERNAL").unwrap();
        assert_eq!(c, SaslCredentials::new("SCRAM-SHA-512", "broker", "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        // Kafka's default mechanism, GSSAPI, is refused with the list.
        let e = SaslCredentials::for_inter_broker(&settings(&[]), "INTERNAL").unwrap_err();
        assert!(e.contains("GSSAPI"), "{e}");
        // No password option.
        let s = settings(&[
            ("sasl.mechanism.inter.broker.protocol", "PLAIN"),
            (
                "listener.name.internal.plain.sasl.jaas.config",
                r#"x required user_broker="p";"#,
            ),
        ]);
        assert!(SaslCredentials::for_inter_broker(&s, "internal").is_err());
    }

    #[test]
    fn scram_client_against_the_server() {
        for m in [Mechanism::Sha256, Mechanism::Sha512] {
            for (password, ok) in [("right,=pw", true), ("wrong", false)] {
                let salt = b"0123456789abcdef";
                let salted = m.salted_password(b"right,=pw", salt, 4096);
                let cred = Credential::from_salted(m, salt, &salted, 4096);
                let creds = SaslCredentials::new(m.name(), "bro,ker=1", password);
                let mut client = ScramClient::new(m, &creds);
                let mut server = ScramServer::new(m);
                let lookup = |u: &str| (u == "bro,ker=1").then(|| cred.clone());
                let ScramStep::Continue(first) = server.step(&client.client_first(), lookup) else {
                    panic!("server refused client-first");
                };
                let fin = client.next(&first).unwrap().unwrap();
                match server.step(&fin, lookup) {
                    ScramStep::Done { user, reply } => {
                        assert!(ok);
                        assert_eq!(user, "bro,ker=1");
                        assert_eq!(client.next(&reply).unwrap(), None);
                    }
                    ScramStep::Failed(_) => assert!(!ok),
                    ScramStep::Continue(_) => panic!("no third round"),
                }
            }
        }
    }

    #[test]
    fn scram_client_refuses_a_bad_server() {
        let creds = SaslCredentials::new("SCRAM-SHA-256", "u", "p");
        let mut c = ScramClient::new(Mechanism::Sha256, &creds);
        assert!(c.next(b"r=other,s=AAAA,i=4096").is_err());
        let mut c = ScramClient::new(Mechanism::Sha256, &creds);
        let first = format!("r={}x,s=AAAA,i=100000000", c.nonce);
        assert!(c.next(first.as_bytes()).is_err());
        let mut c = ScramClient::new(Mechanism::Sha256, &creds);
        let first = format!("r={}x,s=AAAA,i=4096", c.nonce);
        assert!(c.next(first.as_bytes()).unwrap().is_some());
        assert!(c.next(b"v=AAAA").is_err());
    }
}
