//! What each fuzz target does with one input, shared by the libFuzzer targets beside this file
//! and by `crates/skein-server/tests/fuzz_fixtures.rs`, which replays the checked-in inputs
//! of `fuzz/fixtures/<target>/` through these same functions under a plain `cargo test`
//! (no nightly, no cargo-fuzz). Nothing here may panic on any input: a panic is a finding.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use skein_broker::sasl::{Action, SaslConnection, SaslSettings};
use skein_broker::{Broker, BrokerConfig};
use skein_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use skein_protocol::{ApiKey, RequestBody, RequestHeader};
use skein_server::principal::{subject_dn, PrincipalMapper};

/// Request decoding: any frame body must decode or fail cleanly, and whatever decodes must
/// re-encode and decode to the same bytes.
pub fn decode_request(data: &[u8]) {
    let Ok((header, body)) = skein_protocol::decode_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    let version = header.api_version;
    let mut first = BytesMut::new();
    body.encode(&mut first, version)
        .expect("a decoded body re-encodes");
    let again =
        skein_protocol::RequestBody::decode(body.api_key(), version, &mut first.clone().freeze())
            .expect("a re-encoded body decodes");
    let mut second = BytesMut::new();
    again.encode(&mut second, version).expect("re-encodes");
    assert_eq!(first, second);
}

const KEYSTORE: &[u8] = include_bytes!("../fixtures/fuzz-only-server.pem");

/// The rustls server configuration an SSL listener gets (ring provider, TLS 1.2 and 1.3,
/// client certificates requested), with the fuzz-only key of `fixtures/`.
fn tls_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(KEYSTORE)
                .collect::<Result<_, _>>()
                .expect("fixture certificate");
            let key = PrivateKeyDer::from_pem_slice(KEYSTORE).expect("fixture key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            roots.add(chain[0].clone()).expect("fixture as its own CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .allow_unauthenticated()
            .build()
            .expect("verifier");
            Arc::new(
                rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
                    .expect("versions")
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .expect("server config"),
            )
        })
        .clone()
}

/// The TLS front path: what a client can send before and during the handshake, in the chunks
/// a socket might deliver it; then the DER subject reader and the principal mapping rules
/// (first line) applied to a subject (the rest) and to the DER's subject.
pub fn tls_front(data: &[u8]) {
    if let Ok(mut conn) = rustls::ServerConnection::new(tls_config()) {
        let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
        for piece in data.chunks(chunk) {
            let mut cursor = Cursor::new(piece);
            if conn.read_tls(&mut cursor).is_err() || conn.process_new_packets().is_err() {
                break;
            }
            let mut out = Vec::new();
            let _ = conn.write_tls(&mut out);
        }
    }
    let dn = subject_dn(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let (rules, subject) = text.split_once('\n').unwrap_or((text, "CN=x"));
        if let Ok(mapper) = PrincipalMapper::parse(rules) {
            let _ = mapper.map(subject);
            if let Some(dn) = &dn {
                let _ = mapper.map(dn);
            }
        }
    }
}

/// The PLAIN user the SASL driver's listener knows (so a login can succeed and the fuzzer can
/// reach the authenticated and re-authentication states).
pub const PLAIN_USER: &str = "alice";
pub const PLAIN_PASSWORD: &str = "alice-secret";

/// A broker on `dir` (opened, not started: the SASL state machine reads its metadata image
/// for SCRAM credentials and counts logins in its metrics; it needs nothing else).
pub fn open_broker(dir: &Path) -> Arc<Broker> {
    let mut settings = BTreeMap::new();
    settings.insert("log.dirs".to_string(), dir.display().to_string());
    settings.insert("listeners".to_string(), "127.0.0.1:0".to_string());
    Broker::open(BrokerConfig::from_settings(settings).expect("settings")).expect("broker")
}

/// The largest frame the edge reads on a plain connection (`socket.request.max.bytes`'s
/// default); during authentication `sasl.server.max.receive.size` lowers it.
const SOCKET_REQUEST_MAX_BYTES: usize = 100 * 1024 * 1024;

/// The SASL front path: the frames an unauthenticated (or re-authenticating) client sends on
/// a SASL_PLAINTEXT or SASL_SSL listener, fed to the connection state machine exactly as the
/// network edge feeds them (`SaslConnection::on_frame`, frames without their length prefix,
/// the edge's frame-size limit applied first).
///
/// Input: a header, then records until the input ends.
/// - header (19 bytes, missing bytes are zero): `flags` u8 (bit 0 PLAIN, bit 1 SCRAM-SHA-256,
///   bit 2 SCRAM-SHA-512 enabled; none set means PLAIN), `connections.max.reauth.ms` u64,
///   `skein.sasl.exchange.timeout.ms` u64 (both masked to the i64 range the setting
///   validator accepts), `sasl.server.max.receive.size` u16 (0 means the default);
/// - record: `kind` u8, `dt` u8 (the clock advances `dt` * 50 ms first), `len` u16, `len`
///   bytes of payload. `kind & 3`: 0 a raw frame (a Kafka request, or a token after a v0
///   handshake), 1 a SaslHandshake of version `kind >> 2` naming the payload as mechanism,
///   2 a SaslAuthenticate of version `kind >> 2` carrying the payload as token, 3 the
///   built-in PLAIN token of [`PLAIN_USER`] (a valid login). In tokens and raw frames,
///   `%NONCE%` is replaced by the last SCRAM nonce the server sent, so the fuzzer can reach
///   the proof checks past the nonce comparison.
///
/// Checked on every step, besides "no panic": before authentication nothing but ApiVersions
/// is passed on to the request handlers; a reply is one well-formed frame, no larger than
/// the request plus 1 KiB. A close ends the input, as it ends the connection.
pub fn sasl_front(broker: &Broker, data: &[u8]) {
    let mut input = Reader(data);
    let flags = input.u8();
    let reauth = input.u64() & i64::MAX as u64;
    let timeout = input.u64() & i64::MAX as u64;
    let max_receive = input.u16();
    let mut mechanisms = Vec::new();
    for (bit, name) in [(1, "PLAIN"), (2, "SCRAM-SHA-256"), (4, "SCRAM-SHA-512")] {
        if flags & bit != 0 {
            mechanisms.push(name);
        }
    }
    if mechanisms.is_empty() {
        mechanisms.push("PLAIN");
    }
    let mut explicit: BTreeMap<String, String> = BTreeMap::new();
    explicit.insert("sasl.enabled.mechanisms".into(), mechanisms.join(","));
    explicit.insert(
        "listener.name.sasl_plaintext.plain.sasl.jaas.config".into(),
        format!(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_{PLAIN_USER}="{PLAIN_PASSWORD}";"#
        ),
    );
    explicit.insert("connections.max.reauth.ms".into(), reauth.to_string());
    explicit.insert(
        "skein.sasl.exchange.timeout.ms".into(),
        timeout.max(1).to_string(),
    );
    explicit.insert(
        "connection.failed.authentication.delay.ms".into(),
        "0".into(),
    );
    if max_receive > 0 {
        explicit.insert(
            "sasl.server.max.receive.size".into(),
            max_receive.to_string(),
        );
    }
    for (key, value) in &explicit {
        skein_broker::sasl::validate_setting(key, value).expect("a setting Skein accepts");
    }
    let settings = SaslSettings::for_listener(&explicit, "SASL_PLAINTEXT").expect("settings");
    let mut conn = SaslConnection::new(Arc::new(settings));
    let mut now = Instant::now();
    let mut nonce: Vec<u8> = Vec::new();
    let mut correlation = 0;
    while !input.0.is_empty() {
        let kind = input.u8();
        let dt = input.u8();
        let len = usize::from(input.u16());
        let payload = input.take(len);
        now = now
            .checked_add(Duration::from_millis(50 * u64::from(dt)))
            .unwrap_or(now);
        correlation += 1;
        let version = i16::from(kind >> 2);
        let frame: Bytes = match kind & 3 {
            0 => with_nonce(payload, &nonce).into(),
            1 => match request(
                correlation,
                version,
                RequestBody::SaslHandshake(SaslHandshakeRequest {
                    mechanism: String::from_utf8_lossy(payload).into_owned(),
                    ..Default::default()
                }),
            ) {
                Some(f) => f,
                None => continue,
            },
            2 => match request(
                correlation,
                version,
                RequestBody::SaslAuthenticate(SaslAuthenticateRequest {
                    auth_bytes: with_nonce(payload, &nonce).into(),
                    ..Default::default()
                }),
            ) {
                Some(f) => f,
                None => continue,
            },
            _ => match request(
                correlation,
                version % 3,
                RequestBody::SaslAuthenticate(SaslAuthenticateRequest {
                    auth_bytes: format!("\0{PLAIN_USER}\0{PLAIN_PASSWORD}")
                        .into_bytes()
                        .into(),
                    ..Default::default()
                }),
            ) {
                Some(f) => f,
                None => continue,
            },
        };
        // The edge reads no frame above this limit: it closes the connection instead.
        if frame.len() > conn.max_frame(SOCKET_REQUEST_MAX_BYTES) {
            return;
        }
        let authenticated = conn.user().is_some();
        let api_key = (frame.len() >= 2).then(|| i16::from_be_bytes([frame[0], frame[1]]));
        match conn.on_frame(broker, &frame, now) {
            Action::Pass => assert!(
                authenticated || api_key == Some(ApiKey::ApiVersions as i16),
                "request {api_key:?} passed before authentication"
            ),
            Action::Reply(reply) => {
                check_reply(&reply, frame.len());
                if let Some(n) = server_nonce(&reply) {
                    nonce = n;
                }
            }
            Action::Close { reply, .. } => {
                if let Some(reply) = reply {
                    check_reply(&reply, frame.len());
                }
                return;
            }
        }
    }
}

/// A reply is one frame (its length prefix right) and does not amplify what the client sent.
fn check_reply(reply: &[u8], request_len: usize) {
    assert!(reply.len() >= 4, "a reply without a length prefix");
    let len = i32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
    assert_eq!(len as usize, reply.len() - 4, "reply length prefix");
    assert!(
        reply.len() <= request_len + 1024,
        "a reply of {} bytes to a request of {request_len}",
        reply.len()
    );
}

/// The `r=` value of a SCRAM server-first message in a reply, if there is one.
fn server_nonce(reply: &[u8]) -> Option<Vec<u8>> {
    let at = reply.windows(2).position(|w| w == b"r=")? + 2;
    let rest = &reply[at..];
    let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
    Some(rest[..end].to_vec())
}

fn with_nonce(payload: &[u8], nonce: &[u8]) -> Vec<u8> {
    const MARK: &[u8] = b"%NONCE%";
    let mut out = Vec::with_capacity(payload.len());
    let mut rest = payload;
    while let Some(i) = rest.windows(MARK.len()).position(|w| w == MARK) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(nonce);
        rest = &rest[i + MARK.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// A request frame without its length prefix, as the edge hands it over; `None` if the
/// version is not one the codec encodes.
fn request(correlation: i32, version: i16, body: RequestBody) -> Option<Bytes> {
    let header = RequestHeader {
        api_key: body.api_key() as i16,
        api_version: version,
        correlation_id: correlation,
        client_id: Some("fuzz".into()),
    };
    let frame = skein_protocol::encode_request(&header, &body).ok()?;
    Some(frame.freeze().slice(4..))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n.min(self.0.len()));
        self.0 = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let head = self.take(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.array())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
}
