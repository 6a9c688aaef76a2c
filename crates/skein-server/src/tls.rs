//! TLS for the SSL and SASL_SSL listeners, with rustls (the `ring` provider).
//!
//! Settings are Kafka's, read per listener: `listener.name.<name>.ssl.*` first, then
//! `ssl.*`. The key store is PEM (`ssl.keystore.type=PEM`): `ssl.keystore.location`, one
//! file with the certificate chain and the private key, or the two inline in
//! `ssl.keystore.certificate.chain` and `ssl.keystore.key`; an encrypted PKCS#8 key
//! (PBES2) is decrypted with `ssl.key.password`. Client certificates are checked
//! against the PEM CA certificates of `ssl.truststore.location` (or inline
//! `ssl.truststore.certificates`) as `ssl.client.auth` asks (`required`, `requested`,
//! `none`); a verified client's principal is `User:<subject DN>` mapped by
//! `ssl.principal.mapping.rules` (see [`crate::principal`]).
//!
//! The files are polled (`skein.ssl.reload.interval.ms`) and re-read when their modification
//! time or size changes, and on SIGHUP: new connections get the new certificates, open ones
//! keep theirs. A reload that fails (a half-written file, a key that does not match) keeps
//! the previous configuration and says why in the log.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use skein_broker::listener::KafkaPrincipal;
use skein_broker::BrokerConfig;
use skein_raft::{BoxFuture, BoxStream, Transport};
use tokio::net::TcpStream;

use crate::principal::{subject_dn, PrincipalMapper};

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Requested,
    None,
}

#[derive(Debug, Clone)]
enum KeySource {
    File(PathBuf),
    Inline {
        chain: String,
        key: String,
    },
    /// No key store: only for a TLS client (which then sends no certificate).
    None,
}

#[derive(Debug, Clone)]
enum TrustSource {
    File(PathBuf),
    Inline(String),
}

/// A secret setting's value: never printed (`Debug` shows `[hidden]`).
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[hidden]")
    }
}

/// One listener's TLS settings, resolved.
#[derive(Debug, Clone)]
struct TlsSettings {
    listener: String,
    /// What error messages start with: `listener NAME`, or the client's settings file.
    context: String,
    keystore: KeySource,
    truststore: Option<TrustSource>,
    /// `ssl.key.password`, for an encrypted PKCS#8 key.
    key_password: Option<Secret>,
    client_auth: ClientAuth,
    protocols: Vec<&'static SupportedProtocolVersion>,
}

/// A TLS listener's current configuration, its principal rules and what to watch.
pub struct TlsListener {
    settings: TlsSettings,
    mapper: PrincipalMapper,
    current: RwLock<Arc<ServerConfig>>,
    /// The watched files' modification times and sizes at the last load.
    stamps: Mutex<Vec<Option<(SystemTime, u64)>>>,
    pub handshake_timeout: Duration,
    pub reload_interval: Duration,
}

/// A listener's value of an `ssl.*` setting: its `listener.name.<name>.` override, else
/// the broker-wide one, else the default.
pub fn listener_setting(config: &BrokerConfig, listener: &str, key: &str) -> Option<String> {
    let prefixed = format!("listener.name.{}.{key}", listener.to_ascii_lowercase());
    config
        .explicit
        .get(&prefixed)
        .or_else(|| config.explicit.get(key))
        .cloned()
        .or_else(|| {
            skein_broker::config::BROKER_CONFIGS
                .iter()
                .find(|d| d.name == key)
                .map(|d| d.default.to_string())
        })
        .filter(|v| !v.trim().is_empty())
}

impl TlsListener {
    /// Reads `listener`'s TLS settings and loads its certificates; an error names what is
    /// wrong (refused at start).
    pub fn new(config: &BrokerConfig, listener: &str) -> Result<TlsListener, String> {
        let get = |k: &str| listener_setting(config, listener, k);
        let settings = read_settings(config, listener, false)?;
        let mapper = PrincipalMapper::parse(
            &get("ssl.principal.mapping.rules").unwrap_or_else(|| "DEFAULT".into()),
        )
        .map_err(|e| format!("listener {listener}: ssl.principal.mapping.rules: {e}"))?;
        let ms = |k: &str, default: u64| {
            get(k)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(default)
        };
        let stamps = file_stamps(&settings);
        let server = build(&settings)?;
        Ok(TlsListener {
            settings,
            mapper,
            current: RwLock::new(Arc::new(server)),
            stamps: Mutex::new(stamps),
            handshake_timeout: Duration::from_millis(ms("skein.ssl.handshake.timeout.ms", 10_000)),
            reload_interval: Duration::from_millis(ms("skein.ssl.reload.interval.ms", 10_000)),
        })
    }

    /// `ssl.client.auth` of this listener.
    pub fn client_auth(&self) -> ClientAuth {
        self.settings.client_auth
    }

    /// The acceptor for a new connection, with the current certificates.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Re-reads the certificate files if they changed since the last load (or always, with
    /// `force`: SIGHUP). Returns whether a new configuration is in use.
    pub fn reload(&self, force: bool) -> bool {
        let now = file_stamps(&self.settings);
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *stamps == now {
            return false;
        }
        *stamps = now;
        match build(&self.settings) {
            Ok(server) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(server);
                tracing::info!(
                    listener = %self.settings.listener,
                    "reloaded the TLS certificates"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    listener = %self.settings.listener,
                    "TLS certificates not reloaded, the previous ones stay in use: {e}"
                );
                false
            }
        }
    }

    /// The principal of a connection whose handshake finished: `User:<mapped subject DN>`
    /// of a verified client certificate, else `User:ANONYMOUS`. An error when no mapping
    /// rule matches the DN (the connection is then closed, as Kafka does).
    pub fn principal(
        &self,
        peer_certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<KafkaPrincipal, String> {
        if self.settings.client_auth == ClientAuth::None {
            return Ok(KafkaPrincipal::anonymous());
        }
        let Some(cert) = peer_certs.and_then(|c| c.first()) else {
            return Ok(KafkaPrincipal::anonymous());
        };
        let dn = subject_dn(cert.as_ref())
            .ok_or_else(|| "the client certificate's subject could not be read".to_string())?;
        let name = self.mapper.map(&dn).ok_or_else(|| {
            format!(
                "no ssl.principal.mapping.rules rule matches the client certificate's subject {dn}"
            )
        })?;
        Ok(KafkaPrincipal::user(name))
    }
}

/// Reads `listener`'s TLS settings; `client`: for this node's own connections to it (a key
/// store is then optional).
fn read_settings(
    config: &BrokerConfig,
    listener: &str,
    client: bool,
) -> Result<TlsSettings, String> {
    let protocol = config
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .map_or("TLS".into(), |l| l.protocol.to_string());
    read_settings_with(
        &|k: &str| listener_setting(config, listener, k),
        listener,
        &format!("listener {listener}"),
        &protocol,
        client,
    )
}

/// Reads TLS settings through `get` (a setting's value, `None` when unset or empty);
/// `context` starts every error message (`listener NAME`, or the client's settings file).
fn read_settings_with(
    get: &dyn Fn(&str) -> Option<String>,
    listener: &str,
    context: &str,
    protocol: &str,
    client: bool,
) -> Result<TlsSettings, String> {
    let ctx = context;

    let keystore_type = get("ssl.keystore.type").unwrap_or_else(|| "PEM".into());
    if !keystore_type.trim().eq_ignore_ascii_case("PEM") {
        return Err(format!(
                "{ctx}: ssl.keystore.type={keystore_type} is not served: only PEM (JKS and PKCS12 key stores are not read)"
            ));
    }
    let keystore = match (
            get("ssl.keystore.location"),
            get("ssl.keystore.certificate.chain"),
            get("ssl.keystore.key"),
        ) {
            (Some(path), None, None) => KeySource::File(PathBuf::from(path.trim())),
            (None, Some(chain), Some(key)) => KeySource::Inline { chain, key },
            (None, None, None) if client => KeySource::None,
            (None, None, None) => {
                return Err(format!(
                    "{ctx} is {protocol}: set ssl.keystore.location (a PEM file with the certificate chain and the private key) or ssl.keystore.certificate.chain and ssl.keystore.key"
                ))
            }
            _ => {
                return Err(format!(
                    "{ctx}: give either ssl.keystore.location or both ssl.keystore.certificate.chain and ssl.keystore.key"
                ))
            }
        };
    let truststore_type = get("ssl.truststore.type").unwrap_or_else(|| "PEM".into());
    if !truststore_type.trim().eq_ignore_ascii_case("PEM") {
        return Err(format!(
            "{ctx}: ssl.truststore.type={truststore_type} is not served: only PEM"
        ));
    }
    let truststore = match (
        get("ssl.truststore.location"),
        get("ssl.truststore.certificates"),
    ) {
        (Some(path), None) => Some(TrustSource::File(PathBuf::from(path.trim()))),
        (None, Some(pem)) => Some(TrustSource::Inline(pem)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(format!(
                "{ctx}: give ssl.truststore.location or ssl.truststore.certificates, not both"
            ))
        }
    };
    let client_auth = match get("ssl.client.auth")
        .unwrap_or_else(|| "none".into())
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "required" => ClientAuth::Required,
        "requested" => ClientAuth::Requested,
        "none" => ClientAuth::None,
        other => {
            return Err(format!(
                "{ctx}: ssl.client.auth={other} is not required, requested or none"
            ))
        }
    };
    if !client && client_auth != ClientAuth::None && truststore.is_none() {
        return Err(format!(
                "{ctx}: ssl.client.auth={client_auth:?} needs ssl.truststore.location (the CA certificates client certificates are checked against)"
            ));
    }
    let protocols =
        parse_protocols(&get("ssl.enabled.protocols").unwrap_or_else(|| "TLSv1.2,TLSv1.3".into()))
            .map_err(|e| format!("{ctx}: ssl.enabled.protocols: {e}"))?;
    let settings = TlsSettings {
        listener: listener.to_string(),
        context: context.to_string(),
        keystore,
        truststore,
        key_password: get("ssl.key.password").map(Secret),
        client_auth,
        protocols,
    };
    Ok(settings)
}

const ENCRYPTED_BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
const ENCRYPTED_END: &str = "-----END ENCRYPTED PRIVATE KEY-----";

/// The `ENCRYPTED PRIVATE KEY` PEM block of a key store, if it has one.
fn encrypted_pkcs8_block(text: &str) -> Option<&str> {
    let start = text.find(ENCRYPTED_BEGIN)?;
    let end = text[start..].find(ENCRYPTED_END)? + start + ENCRYPTED_END.len();
    Some(&text[start..end])
}

/// Decrypts an encrypted PKCS#8 key (PBES2: PBKDF2 with HMAC-SHA-224/256/384/512 or scrypt,
/// and AES-128/192/256-CBC) with `ssl.key.password`. The error never contains the password.
fn decrypt_pkcs8(block: &str, password: Option<&Secret>) -> Result<PrivateKeyDer<'static>, String> {
    use pkcs8::der::{Decode, Document};
    let Some(password) = password else {
        return Err(
            "the private key is encrypted (ENCRYPTED PRIVATE KEY) and ssl.key.password is not set"
                .into(),
        );
    };
    let (label, doc) = Document::from_pem(block)
        .map_err(|e| format!("the ENCRYPTED PRIVATE KEY block is not valid PEM/DER: {e}"))?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(format!("unexpected PEM label {label}"));
    }
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes())
        .map_err(|e| format!("the ENCRYPTED PRIVATE KEY is not PKCS#8: {e}"))?;
    if !matches!(
        info.encryption_algorithm,
        pkcs8::pkcs5::EncryptionScheme::Pbes2(_)
    ) {
        return Err("the private key is encrypted with a PBES1 scheme (DES, RC2, SHA-1); re-encrypt it with PBES2 (openssl pkcs8 -topk8 -v2 aes-256-cbc)".into());
    }
    let plain = info.decrypt(password.0.as_bytes()).map_err(|e| match e {
        // pkcs5 0.7 reports a bad padding after decryption as `EncryptFailed`.
        pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        )
        | pkcs8::Error::Asn1(_) => {
            "the private key could not be decrypted with ssl.key.password (wrong password?)"
                .to_string()
        }
        pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::AlgorithmParametersInvalid {
            ..
        })
        | pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::UnsupportedAlgorithm { .. }) => {
            format!("the private key's encryption is not supported ({e}); PBES2 with PBKDF2 (HMAC-SHA-2) or scrypt and AES-CBC is: openssl pkcs8 -topk8 -v2 aes-256-cbc")
        }
        other => format!("the private key could not be decrypted: {other}"),
    })?;
    // A wrong password can pass the padding check by chance (1 in 256): what comes out
    // must then still be a PKCS#8 key.
    pkcs8::PrivateKeyInfo::from_der(plain.as_bytes()).map_err(|_| {
        "the private key could not be decrypted with ssl.key.password (wrong password?)".to_string()
    })?;
    Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()))
}

fn parse_protocols(v: &str) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let mut out: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let version = match p {
            "TLSv1.2" => &rustls::version::TLS12,
            "TLSv1.3" => &rustls::version::TLS13,
            "TLSv1" | "TLSv1.1" | "SSLv3" => {
                return Err(format!("{p} is not offered (TLSv1.2 and TLSv1.3 only)"))
            }
            other => return Err(format!("'{other}' is not TLSv1.2 or TLSv1.3")),
        };
        if !out.iter().any(|v| std::ptr::eq(*v, version)) {
            out.push(version);
        }
    }
    if out.is_empty() {
        return Err("no protocol enabled".into());
    }
    Ok(out)
}

/// The modification time and size of each watched file (`None` where unreadable).
fn file_stamps(s: &TlsSettings) -> Vec<Option<(SystemTime, u64)>> {
    let mut paths: Vec<&PathBuf> = Vec::new();
    if let KeySource::File(p) = &s.keystore {
        paths.push(p);
    }
    if let Some(TrustSource::File(p)) = &s.truststore {
        paths.push(p);
    }
    paths
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The key store's certificate chain and private key.
fn load_keystore(
    s: &TlsSettings,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String), String> {
    let l = &s.context;
    let (chain_pem, key_pem, source) = match &s.keystore {
        KeySource::File(p) => {
            let bytes = read(p, "ssl.keystore.location")?;
            (
                bytes.clone(),
                bytes,
                format!("ssl.keystore.location {}", p.display()),
            )
        }
        KeySource::Inline { chain, key } => (
            chain.clone().into_bytes(),
            key.clone().into_bytes(),
            "ssl.keystore.certificate.chain / ssl.keystore.key".to_string(),
        ),
        KeySource::None => return Err(format!("{l}: no key store (ssl.keystore.location)")),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{l}: {source}: bad PEM certificate: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{l}: {source}: no CERTIFICATE in it"));
    }
    let key_text = String::from_utf8_lossy(&key_pem);
    if key_text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "{l}: {source}: the private key is encrypted in OpenSSL's legacy format (Proc-Type: 4,ENCRYPTED), which Skein does not read; convert it to encrypted PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc) or store it unencrypted"
        ));
    }
    let key = match encrypted_pkcs8_block(&key_text) {
        Some(block) => decrypt_pkcs8(block, s.key_password.as_ref())
            .map_err(|e| format!("{l}: {source}: {e}"))?,
        None => PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("{l}: {source}: no usable PRIVATE KEY in it ({e})"))?,
    };
    Ok((chain, key, source))
}

/// The trust store's CA certificates.
fn load_roots(l: &str, trust: &TrustSource) -> Result<(RootCertStore, String), String> {
    let (pem, source) = match trust {
        TrustSource::File(p) => (
            read(p, "ssl.truststore.location")?,
            format!("ssl.truststore.location {}", p.display()),
        ),
        TrustSource::Inline(pem) => (
            pem.clone().into_bytes(),
            "ssl.truststore.certificates".to_string(),
        ),
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{l}: {source}: bad PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("{l}: {source}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{l}: {source}: no CERTIFICATE in it"));
    }
    Ok((roots, source))
}

/// Builds the rustls server configuration from the settings' certificates and key.
fn build(s: &TlsSettings) -> Result<ServerConfig, String> {
    let l = &s.context;
    let (chain, key, source) = load_keystore(s)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&s.protocols)
        .map_err(|e| format!("{l}: ssl.enabled.protocols: {e}"))?;
    let builder = match (&s.truststore, s.client_auth) {
        (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
        (Some(trust), auth) => {
            let (roots, source) = load_roots(l, trust)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("{l}: {source}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{l}: {source}: the certificate and key do not go together: {e}"))
}

/// Builds the rustls client configuration of a listener's settings: the trust store checks
/// the server's certificate; the key store, if given, is the client certificate (sent when
/// the server asks for one).
fn build_client(s: &TlsSettings) -> Result<ClientConfig, String> {
    build_client_with(s, true)
}

/// [`build_client`], with or without the check that the server's certificate names the host
/// dialled (`verify_host`; the chain is always checked).
fn build_client_with(s: &TlsSettings, verify_host: bool) -> Result<ClientConfig, String> {
    let l = &s.context;
    let trust = s.truststore.as_ref().ok_or_else(|| {
        format!(
            "{l}: this node connects to it over TLS and needs ssl.truststore.location (the CA certificates the other nodes' certificates are checked against)"
        )
    })?;
    let (roots, source) = load_roots(l, trust)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&s.protocols)
        .map_err(|e| format!("{l}: ssl.enabled.protocols: {e}"))?;
    let builder = if verify_host {
        builder.with_root_certificates(roots)
    } else {
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("{l}: {source}: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyHostName(chain)))
    };
    match &s.keystore {
        KeySource::None => Ok(builder.with_no_client_auth()),
        _ => {
            let (chain, key, source) = load_keystore(s)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!("{l}: {source}: the certificate and key do not go together: {e}")
            })
        }
    }
}

/// A TLS client configuration from a client's own Kafka settings (the `skein` CLI's
/// `--command-config` file), read through `get`: the trust store (`ssl.truststore.location`
/// or `ssl.truststore.certificates`, PEM), the optional key store for mutual TLS
/// (`ssl.keystore.location` or `ssl.keystore.certificate.chain` and `ssl.keystore.key`, PEM;
/// an encrypted PKCS#8 key with `ssl.key.password`) and `ssl.enabled.protocols`.
/// `verify_host`: `ssl.endpoint.identification.algorithm=https`, the server's certificate
/// must name the host dialled. `context` starts every error message; no message holds a
/// secret.
pub fn client_config(
    get: &dyn Fn(&str) -> Option<String>,
    context: &str,
    verify_host: bool,
) -> Result<Arc<ClientConfig>, String> {
    let s = read_settings_with(get, "client", context, "SSL", true)?;
    if s.truststore.is_none() {
        return Err(format!(
            "{context}: set ssl.truststore.location (a PEM file with the CA certificates the broker's certificate is checked against) or ssl.truststore.certificates"
        ));
    }
    Ok(Arc::new(build_client_with(&s, verify_host)?))
}

/// Checks the server's certificate chain as [`WebPkiServerVerifier`] does, but not that it
/// names the host (`ssl.endpoint.identification.algorithm` empty). The verifier checks the
/// chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The host part of `host:port` (`[v6]:port` too), as the certificate must name it.
fn server_name(addr: &str) -> std::io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host} is not a name TLS can check a certificate against: {e}"),
        )
    })
}

/// The TLS client of a listener other nodes serve: this node's outbound connections to the
/// inter-broker listener (peer calls, replica fetchers) and to the controller listener. The
/// server's certificate must chain to the listener's `ssl.truststore.*` and name the host
/// dialled (the advertised host, or the voter's host; IP addresses match IP SANs). The
/// listener's key store is the client certificate. The files are re-read when they change.
pub struct TlsClient {
    settings: TlsSettings,
    /// The watched files' stamps at the last build, and what was built.
    current: Mutex<(Stamps, Arc<ClientConfig>)>,
}

/// The modification time and size of each watched file.
type Stamps = Vec<Option<(SystemTime, u64)>>;

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("listener", &self.settings.listener)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Reads `listener`'s TLS settings as a client; an error names what is wrong.
    pub fn new(config: &BrokerConfig, listener: &str) -> Result<TlsClient, String> {
        let settings = read_settings(config, listener, true)?;
        let client = build_client(&settings)?;
        Ok(TlsClient {
            current: Mutex::new((file_stamps(&settings), Arc::new(client))),
            settings,
        })
    }

    /// The configuration to connect with: rebuilt first if the files changed (a failed
    /// rebuild keeps the previous one, and says why).
    fn config(&self) -> Arc<ClientConfig> {
        let now = file_stamps(&self.settings);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != now {
            current.0 = now;
            match build_client(&self.settings) {
                Ok(c) => {
                    current.1 = Arc::new(c);
                    tracing::info!(listener = %self.settings.listener, "reloaded the TLS client certificates");
                }
                Err(e) => tracing::warn!(
                    listener = %self.settings.listener,
                    "TLS client certificates not reloaded, the previous ones stay in use: {e}"
                ),
            }
        }
        current.1.clone()
    }
}

impl Transport for TlsClient {
    fn connect(
        &self,
        tcp: TcpStream,
        addr: String,
    ) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        let connector = tokio_rustls::TlsConnector::from(self.config());
        let listener = self.settings.listener.clone();
        Box::pin(async move {
            let name = server_name(&addr)?;
            let stream = connector.connect(name, tcp).await?;
            tracing::debug!(%listener, %addr, "outbound TLS handshake done");
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn accept(&self, _tcp: TcpStream) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        Box::pin(async {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a TLS client does not accept connections",
            ))
        })
    }
}

/// TLS on the controller listener, both ways: its server side (the listener's certificates,
/// reloaded like any TLS listener's; `ssl.client.auth=required` makes it mutual TLS, the way
/// Skein's controller listener authenticates nodes) and its client side ([`TlsClient`]).
pub struct ControllerTls {
    /// `None` on a node without a key store for the listener (it then only dials out).
    pub server: Option<Arc<TlsListener>>,
    pub client: TlsClient,
}

impl std::fmt::Debug for ControllerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerTls")
            .field("server", &self.server.is_some())
            .field("client", &self.client)
            .finish()
    }
}

impl Transport for ControllerTls {
    fn connect(
        &self,
        tcp: TcpStream,
        addr: String,
    ) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        Transport::connect(&self.client, tcp, addr)
    }

    fn accept(&self, tcp: TcpStream) -> BoxFuture<'static, std::io::Result<BoxStream>> {
        let Some(server) = self.server.clone() else {
            return Box::pin(async {
                Err(std::io::Error::other(
                    "this node has no key store for the controller listener",
                ))
            });
        };
        Box::pin(async move {
            let peer = tcp.peer_addr().ok();
            let stream = server.acceptor().accept(tcp).await?;
            let (_, session) = stream.get_ref();
            let principal = server
                .principal(session.peer_certificates())
                .map_err(std::io::Error::other)?;
            tracing::debug!(?peer, %principal, "controller listener: TLS handshake done");
            Ok(Box::new(stream) as BoxStream)
        })
    }
}
