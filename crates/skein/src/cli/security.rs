//! How the CLI reaches a secured listener: `--command-config FILE`, a Java-properties file with
//! the settings a Kafka admin tool takes (`kafka-topics.sh --command-config`):
//! `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), the PEM trust and key
//! stores (`ssl.truststore.*`, `ssl.keystore.*`, `ssl.key.password`; the broker's own loading
//! code, [`skein_server::tls::client_config`]), `ssl.endpoint.identification.algorithm`
//! (`https`, the default, checks the broker's certificate names the host dialled; empty does
//! not), `sasl.mechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and `sasl.jaas.config`
//! (`username` and `password` of the PlainLoginModule or ScramLoginModule line).
//!
//! Every connection the CLI opens (bootstrap, partition leaders, coordinators) uses the same
//! settings. Unknown keys are warned about once on stderr and ignored, as Kafka's tools do; a
//! malformed file or an unsupported value is an error. Secrets are never printed.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use skein_broker::sasl::client::SaslCredentials;

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    fn parse(v: &str) -> Option<Protocol> {
        Some(match v.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Protocol::Plaintext,
            "SSL" => Protocol::Ssl,
            "SASL_PLAINTEXT" => Protocol::SaslPlaintext,
            "SASL_SSL" => Protocol::SaslSsl,
            _ => return None,
        })
    }

    fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// The settings this module reads; any other key is reported as unused.
const KNOWN: &[&str] = &[
    "security.protocol",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.truststore.certificates",
    "ssl.truststore.password",
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.keystore.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "ssl.enabled.protocols",
    "ssl.protocol",
    "sasl.mechanism",
    "sasl.jaas.config",
];

const PLAIN_MODULE: &str = "org.apache.kafka.common.security.plain.PlainLoginModule";
const SCRAM_MODULE: &str = "org.apache.kafka.common.security.scram.ScramLoginModule";

/// How to open and log in on a connection.
#[derive(Clone)]
pub struct Security {
    pub protocol: Protocol,
    tls: Option<Arc<ClientConfig>>,
    sasl: Option<SaslCredentials>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl Default for Security {
    fn default() -> Security {
        Security {
            protocol: Protocol::Plaintext,
            tls: None,
            sasl: None,
        }
    }
}

impl Security {
    /// Reads a `--command-config` file; unused keys are returned for the caller to warn about.
    pub fn from_file(path: &Path) -> Result<(Security, Vec<String>)> {
        let context = format!("--command-config {}", path.display());
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {context}"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("{context}: the file is not UTF-8 text"))?;
        let props = parse_properties(&text).map_err(|e| anyhow!("{context}: {e}"))?;
        Security::from_properties(&props, &context)
    }

    /// The settings of a parsed properties file (later keys override earlier ones).
    pub fn from_properties(
        props: &[(String, String)],
        context: &str,
    ) -> Result<(Security, Vec<String>)> {
        let get = |key: &str| -> Option<String> {
            props
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.trim().is_empty())
        };
        let mut unused: Vec<String> = props
            .iter()
            .map(|(k, _)| k.clone())
            .filter(|k| !KNOWN.contains(&k.as_str()))
            .collect();
        unused.sort();
        unused.dedup();

        let protocol = match get("security.protocol") {
            None => Protocol::Plaintext,
            Some(v) => Protocol::parse(&v).ok_or_else(|| {
                anyhow!(
                    "{context}: security.protocol={} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
                    v.trim()
                )
            })?,
        };
        let tls = if protocol.tls() {
            // Kafka's default is `https`: the broker's certificate must name the host.
            let verify_host = match props
                .iter()
                .rev()
                .find(|(k, _)| k == "ssl.endpoint.identification.algorithm")
                .map(|(_, v)| v.trim().to_ascii_lowercase())
                .as_deref()
            {
                None | Some("https") => true,
                Some("") => false,
                Some(other) => bail!(
                    "{context}: ssl.endpoint.identification.algorithm={other} is not https or empty"
                ),
            };
            Some(
                skein_server::tls::client_config(&get, context, verify_host)
                    .map_err(|e| anyhow!(e))?,
            )
        } else {
            None
        };
        let sasl = if protocol.sasl() {
            let mechanism = get("sasl.mechanism")
                .map(|m| m.trim().to_ascii_uppercase())
                // Kafka's default.
                .unwrap_or_else(|| "GSSAPI".into());
            if !skein_broker::sasl::MECHANISMS.contains(&mechanism.as_str()) {
                bail!(
                    "{context}: sasl.mechanism={mechanism} is not supported: use one of {}",
                    skein_broker::sasl::MECHANISMS.join(", ")
                );
            }
            let jaas = get("sasl.jaas.config").ok_or_else(|| {
                anyhow!(
                    "{context}: security.protocol={protocol:?} needs sasl.jaas.config, such as {} required username=\"...\" password=\"...\";",
                    if mechanism == "PLAIN" { PLAIN_MODULE } else { SCRAM_MODULE }
                )
            })?;
            Some(credentials(&jaas, &mechanism).map_err(|e| anyhow!("{context}: {e}"))?)
        } else {
            None
        };
        Ok((
            Security {
                protocol,
                tls,
                sasl,
            },
            unused,
        ))
    }

    /// The SASL credentials, when the protocol is SASL_PLAINTEXT or SASL_SSL.
    pub fn sasl(&self) -> Option<&SaslCredentials> {
        self.sasl.as_ref()
    }

    /// Wraps a new TCP connection to `addr` (`host:port`) as the protocol asks: TLS with the
    /// handshake done (within the socket's timeouts), or the socket itself.
    pub fn wrap(&self, tcp: TcpStream, addr: &str) -> Result<Stream> {
        let Some(config) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let host = match addr.rsplit_once(':') {
            Some((h, _)) => h,
            None => addr,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            anyhow!("{host} is not a name TLS can check a certificate against: {e}")
        })?;
        let conn = ClientConnection::new(config.clone(), name)
            .map_err(|e| anyhow!("cannot start TLS with {addr}: {e}"))?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            if let Err(e) = stream.conn.complete_io(&mut stream.sock) {
                return Err(anyhow!(tls_error(e)).context(format!("TLS handshake with {addr}")));
            }
        }
        Ok(Stream::Tls(Box::new(stream)))
    }
}

fn tls_error(e: io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "timed out (is it a TLS listener?)".into()
        }
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            "the broker closed the connection (is it a TLS listener? does it want a client certificate?)".into()
        }
        _ => e.to_string(),
    }
}

/// The `username` and `password` of a `sasl.jaas.config` line.
fn credentials(jaas: &str, mechanism: &str) -> Result<SaslCredentials, String> {
    let module = jaas.split_whitespace().next().unwrap_or("");
    if module != PLAIN_MODULE && module != SCRAM_MODULE {
        return Err(format!(
            "sasl.jaas.config: the login module {module} is not supported: use {PLAIN_MODULE} or {SCRAM_MODULE}"
        ));
    }
    match SaslCredentials::from_jaas(jaas, mechanism)? {
        Some(credentials) => Ok(credentials),
        None => Err(format!(
            "sasl.jaas.config needs username=\"...\" and password=\"...\" options, as in {module} required username=\"alice\" password=\"...\";"
        )),
    }
}

/// A connection's byte stream: the socket, or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Parses a Java properties file (`java.util.Properties.load`): `#`/`!` comments, `key=value`,
/// `key: value` or `key value`, a trailing backslash continuing the line, and the escapes
/// `\t \n \r \f \uXXXX` (any other escaped character is itself). A bad `\u` escape is an
/// error naming the line.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let first = i + 1;
        let mut logical = String::new();
        let mut line = lines[i].trim_start_matches([' ', '\t', '\x0c']);
        i += 1;
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        loop {
            let trailing = line.len() - line.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                logical.push_str(&line[..line.len() - 1]);
                if i >= lines.len() {
                    break;
                }
                line = lines[i].trim_start_matches([' ', '\t', '\x0c']);
                i += 1;
            } else {
                logical.push_str(line);
                break;
            }
        }
        let (key, value) = split_entry(&logical);
        let key = unescape(key).map_err(|e| format!("line {first}: {e}"))?;
        let value = unescape(value).map_err(|e| format!("line {first}: {e}"))?;
        out.push((key, value));
    }
    Ok(out)
}

/// The raw key and value of a logical line.
fn split_entry(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut end = bytes.len();
    let mut escaped = false;
    for (n, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' | '\x0c' => {
                end = n;
                break;
            }
            _ => {}
        }
    }
    let key = &line[..end];
    let mut rest = line[end..].trim_start_matches([' ', '\t', '\x0c']);
    if let Some(r) = rest.strip_prefix(['=', ':']) {
        rest = r.trim_start_matches([' ', '\t', '\x0c']);
    }
    (key, rest)
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            None => {}
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("malformed \\uxxxx escape \\u{hex}"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> Vec<(String, String)> {
        parse_properties(text).unwrap()
    }

    #[test]
    fn java_properties_syntax() {
        let p = props(
            "# comment\n! also\n\n  security.protocol = SASL_SSL\nsasl.mechanism:PLAIN\nkey value with spaces\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n    username=\"a\" \\\n    password=\"p=1\";\n\
             esc\\=aped=\\u0041\\tb\\\\\nempty\n",
        );
        assert_eq!(
            p,
            vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.mechanism".into(), "PLAIN".into()),
                ("key".into(), "value with spaces".into()),
                (
                    "sasl.jaas.config".into(),
                    "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\" password=\"p=1\";".into()
                ),
                ("esc=aped".into(), "A\tb\\".into()),
                ("empty".into(), String::new()),
            ]
        );
        let e = parse_properties("a=1\nb=\\u12G4\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("\\u"), "{e}");
    }

    fn security(text: &str) -> Result<(Security, Vec<String>)> {
        Security::from_properties(&props(text), "--command-config f")
    }

    #[test]
    fn sasl_settings_and_unknown_keys() {
        let (s, unused) = security(
            "security.protocol=sasl_plaintext\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"s3cret\";\n\
             client.id=x\nrequest.timeout.ms=5\n",
        )
        .unwrap();
        assert_eq!(s.protocol, Protocol::SaslPlaintext);
        let c = s.sasl().unwrap();
        assert_eq!(c, &SaslCredentials::new("SCRAM-SHA-512", "alice", "s3cret"));
        assert_eq!(unused, vec!["client.id", "request.timeout.ms"]);
        assert!(!format!("{s:?}").contains("s3cret"));
        // No settings at all: PLAINTEXT.
        let (s, unused) = security("").unwrap();
        assert_eq!(s.protocol, Protocol::Plaintext);
        assert!(unused.is_empty());
    }

    #[test]
    fn bad_values_are_errors_without_secrets() {
        let err = |t: &str| format!("{:#}", security(t).unwrap_err());
        assert!(err("security.protocol=TLS\n").contains("PLAINTEXT, SSL"));
        let e = err("security.protocol=SASL_PLAINTEXT\nsasl.jaas.config=x required username=\"u\" password=\"hush\";\n");
        assert!(e.contains("GSSAPI"), "{e}");
        let e = err("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n");
        assert!(e.contains("OAUTHBEARER"), "{e}");
        let e = err("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n");
        assert!(e.contains("needs sasl.jaas.config"), "{e}");
        let e = err("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required password=\"hush\";\n");
        assert!(e.contains("Krb5LoginModule") && !e.contains("hush"), "{e}");
        let e = err(&format!("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config={PLAIN_MODULE} required password=\"hush\";\n"));
        assert!(e.contains("username") && !e.contains("hush"), "{e}");
        let e = err("security.protocol=SSL\n");
        assert!(e.contains("ssl.truststore.location"), "{e}");
        let e = err("security.protocol=SSL\nssl.truststore.type=JKS\nssl.truststore.location=/x\n");
        assert!(e.contains("JKS"), "{e}");
        let e = err("security.protocol=SSL\nssl.endpoint.identification.algorithm=ldap\n");
        assert!(e.contains("ldap"), "{e}");
        let e = err("security.protocol=SSL\nssl.truststore.location=/nonexistent/ca.pem\n");
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
