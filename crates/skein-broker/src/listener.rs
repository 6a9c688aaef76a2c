//! Named listeners and who is on the other end of a connection.
//!
//! Kafka's listener model: `listeners=NAME://HOST:PORT,…` binds one socket per name, each name
//! maps to a [`SecurityProtocol`] through `listener.security.protocol.map` (by default a
//! name that is itself a protocol maps to that protocol), `advertised.listeners` gives the
//! address clients are told per name, `inter.broker.listener.name` is the one brokers use
//! between themselves, and `controller.listener.names` is the controller's (served by
//! `skein-raft`, not by the Kafka listener). A client is told the endpoints of the listener
//! its request came in on.
//!
//! Every connection carries a [`ConnectionContext`]: the listener's name and protocol, the
//! peer's address, and the authenticated [`KafkaPrincipal`] (`User:ANONYMOUS` until TLS
//! client authentication or SASL says otherwise).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// The security protocol of a listener, as Kafka names them (and numbers them in broker
/// registrations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// Parses Kafka's name (case-insensitive).
    pub fn parse(v: &str) -> Option<SecurityProtocol> {
        let v = v.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(v))
    }

    /// Kafka's name: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT`, `SASL_SSL`.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Kafka's id (`SecurityProtocol.id`), as broker registrations carry it.
    pub fn id(self) -> i16 {
        match self {
            SecurityProtocol::Plaintext => 0,
            SecurityProtocol::Ssl => 1,
            SecurityProtocol::SaslPlaintext => 2,
            SecurityProtocol::SaslSsl => 3,
        }
    }

    /// Whether connections on this protocol are TLS (SSL, SASL_SSL).
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL first (SASL_PLAINTEXT, SASL_SSL).
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An authenticated identity as Kafka writes it: `User:alice`, `User:CN=client,O=acme`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KafkaPrincipal {
    pub principal_type: String,
    pub name: String,
}

impl KafkaPrincipal {
    /// `User:<name>`.
    pub fn user(name: impl Into<String>) -> KafkaPrincipal {
        KafkaPrincipal {
            principal_type: "User".into(),
            name: name.into(),
        }
    }

    /// `User:ANONYMOUS`, the principal of a connection nothing authenticated.
    pub fn anonymous() -> KafkaPrincipal {
        KafkaPrincipal::user("ANONYMOUS")
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

/// Who is on the other end of one connection: kept by the server for the connection's
/// life and given to every request's handler in [`crate::RequestContext`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionContext {
    /// The listener's name (`PLAINTEXT`, `SSL`, `INTERNAL`, …).
    pub listener: String,
    pub protocol: SecurityProtocol,
    pub peer: SocketAddr,
    /// `User:ANONYMOUS` until TLS client authentication or SASL sets it.
    pub principal: KafkaPrincipal,
}

impl ConnectionContext {
    /// A new connection on `listener`, not authenticated yet.
    pub fn new(listener: &str, protocol: SecurityProtocol, peer: SocketAddr) -> ConnectionContext {
        ConnectionContext {
            listener: listener.to_string(),
            protocol,
            peer,
            principal: KafkaPrincipal::anonymous(),
        }
    }

    /// The peer's host as Kafka shows it in group descriptions (`/127.0.0.1`).
    pub fn client_host(&self) -> String {
        format!("/{}", self.peer.ip())
    }
}

/// A host and port given to clients (a name or an address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn from_addr(addr: SocketAddr) -> Endpoint {
        Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// Parses `HOST:PORT` (`[v6]:PORT` too); the host may be a name.
    pub fn parse(v: &str) -> Result<Endpoint, String> {
        let v = v.trim();
        if let Ok(a) = v.parse::<SocketAddr>() {
            return Ok(Endpoint::from_addr(a));
        }
        let bad = || format!("'{v}' is not an address of the form HOST:PORT");
        let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/,@[]".contains(c))
        {
            return Err(bad());
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One Kafka (client) listener, resolved from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub name: String,
    /// The address to bind (port 0 picks a free port).
    pub bind: SocketAddr,
    pub protocol: SecurityProtocol,
    /// `advertised.listeners`' entry for this name; `None`: the bound address.
    pub advertised: Option<Endpoint>,
}

/// `listener.security.protocol.map`'s default, as Kafka's.
pub const DEFAULT_PROTOCOL_MAP: &str =
    "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// Parses `listener.security.protocol.map`: `NAME:PROTOCOL,…`.
pub fn parse_protocol_map(v: &str) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let mut out = BTreeMap::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, protocol)) = entry.split_once(':') else {
            return Err(format!("'{entry}' is not of the form NAME:PROTOCOL"));
        };
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty() {
            return Err(format!("'{entry}' has an empty listener name"));
        }
        let protocol = SecurityProtocol::parse(protocol).ok_or_else(|| {
            format!(
                "'{}' is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)",
                protocol.trim()
            )
        })?;
        if out.insert(name.clone(), protocol).is_some() {
            return Err(format!("listener {name} is mapped twice"));
        }
    }
    Ok(out)
}

/// Parses `advertised.listeners`: `NAME://HOST:PORT,…`, or a bare `HOST:PORT` (returned
/// with no name: it stands for the inter-broker listener).
pub fn parse_advertised(v: &str) -> Result<Vec<(Option<String>, Endpoint)>, String> {
    let mut out: Vec<(Option<String>, Endpoint)> = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = match entry.split_once("://") {
            Some((name, address)) => (Some(name.trim().to_ascii_uppercase()), address),
            None => (None, entry),
        };
        if name.as_deref() == Some("") {
            return Err(format!("'{entry}' has an empty listener name"));
        }
        let endpoint = Endpoint::parse(address)?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "listener {} is given twice",
                name.as_deref().unwrap_or("(unnamed)")
            ));
        }
        out.push((name, endpoint));
    }
    Ok(out)
}

/// Resolves the Kafka listeners (every entry of `listeners` but the controller's) with their
/// protocols and advertised addresses, and the inter-broker listener's name.
pub fn resolve_listeners(
    listeners: &BTreeMap<String, SocketAddr>,
    controller_name: &str,
    protocol_map: &BTreeMap<String, SecurityProtocol>,
    advertised: &[(Option<String>, Endpoint)],
    inter_broker: &str,
) -> Result<(Vec<ListenerSettings>, String), String> {
    let client: Vec<(&String, &SocketAddr)> = listeners
        .iter()
        .filter(|(name, _)| *name != controller_name)
        .collect();
    if client.is_empty() {
        return Err(format!(
            "listeners names no client listener, only the controller's ({controller_name})"
        ));
    }
    let inter_broker = match inter_broker.trim() {
        "" if listeners.contains_key("PLAINTEXT") => "PLAINTEXT".to_string(),
        "" if client.len() == 1 => client[0].0.clone(),
        "" => {
            return Err(
                "inter.broker.listener.name is needed when listeners has several client listeners and none is named PLAINTEXT".into(),
            )
        }
        name => name.to_ascii_uppercase(),
    };
    if !client.iter().any(|(n, _)| **n == inter_broker) {
        return Err(format!(
            "inter.broker.listener.name {inter_broker} is not a client listener in listeners"
        ));
    }
    let mut out = Vec::new();
    for (name, bind) in client {
        let protocol = protocol_map
            .get(name)
            .copied()
            .or_else(|| SecurityProtocol::parse(name))
            .ok_or_else(|| {
                format!(
                    "listener {name} has no security protocol: map it in listener.security.protocol.map (NAME:PROTOCOL)"
                )
            })?;
        let advertised = advertised
            .iter()
            .find(|(n, _)| match n {
                Some(n) => n == name,
                None => *name == inter_broker,
            })
            .map(|(_, e)| e.clone());
        out.push(ListenerSettings {
            name: name.clone(),
            bind: *bind,
            protocol,
            advertised,
        });
    }
    for (n, _) in advertised {
        if let Some(n) = n {
            if !out.iter().any(|l| l.name == *n) {
                return Err(format!(
                    "advertised.listeners names {n}, which is not a client listener in listeners"
                ));
            }
        }
    }
    // The inter-broker listener first: it is the broker's default endpoint.
    out.sort_by_key(|l| l.name != inter_broker);
    Ok((out, inter_broker))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn protocols_by_name_and_id() {
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl"),
            Some(SecurityProtocol::SaslSsl)
        );
        assert_eq!(SecurityProtocol::parse("TLS"), None);
        assert_eq!(SecurityProtocol::Ssl.id(), 1);
        assert!(SecurityProtocol::SaslSsl.uses_tls() && SecurityProtocol::SaslSsl.uses_sasl());
        assert!(!SecurityProtocol::Plaintext.uses_tls());
        assert_eq!(KafkaPrincipal::anonymous().to_string(), "User:ANONYMOUS");
    }

    #[test]
    fn resolves_named_listeners() {
        let listeners = crate::node::parse_listeners(
            "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093,internal://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095",
        )
        .unwrap();
        let mut map = parse_protocol_map(DEFAULT_PROTOCOL_MAP).unwrap();
        map.extend(parse_protocol_map("INTERNAL:SASL_SSL").unwrap());
        let adv = parse_advertised("SSL://broker.example:19093,127.0.0.2:9092").unwrap();
        let (l, ib) = resolve_listeners(&listeners, "CONTROLLER", &map, &adv, "").unwrap();
        assert_eq!(ib, "PLAINTEXT");
        let names: Vec<_> = l.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["PLAINTEXT", "INTERNAL", "SSL"]);
        assert_eq!(l[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(l[2].protocol, SecurityProtocol::Ssl);
        assert_eq!(
            l[2].advertised,
            Some(Endpoint {
                host: "broker.example".into(),
                port: 19093
            })
        );
        assert_eq!(l[0].advertised.as_ref().unwrap().host, "127.0.0.2");
        assert_eq!(l[1].bind, addr("127.0.0.1:9094"));
    }

    #[test]
    fn refuses_what_does_not_add_up() {
        let map = parse_protocol_map(DEFAULT_PROTOCOL_MAP).unwrap();
        let two = crate::node::parse_listeners("SSL://127.0.0.1:1,SASL_SSL://127.0.0.1:2").unwrap();
        // Two client listeners, none PLAINTEXT: the inter-broker one must be named.
        assert!(resolve_listeners(&two, "CONTROLLER", &map, &[], "").is_err());
        let (l, ib) = resolve_listeners(&two, "CONTROLLER", &map, &[], "ssl").unwrap();
        assert_eq!((ib.as_str(), l[0].name.as_str()), ("SSL", "SSL"));
        let custom = crate::node::parse_listeners("EXTERNAL://127.0.0.1:1").unwrap();
        assert!(resolve_listeners(&custom, "CONTROLLER", &map, &[], "").is_err());
        let adv = parse_advertised("NOPE://h:1").unwrap();
        assert!(resolve_listeners(&two, "CONTROLLER", &map, &adv, "SSL").is_err());
        assert!(parse_protocol_map("A:TLS").is_err());
        assert!(parse_protocol_map("A").is_err());
        assert!(parse_advertised("h").is_err());
        assert!(parse_advertised("A://h:1,A://h:2").is_err());
        let only_controller = crate::node::parse_listeners("CONTROLLER://127.0.0.1:1").unwrap();
        assert!(resolve_listeners(&only_controller, "CONTROLLER", &map, &[], "").is_err());
    }
}
