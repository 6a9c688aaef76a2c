//! Who this node is and what it does in a cluster: its roles (`process.roles`), the controller
//! quorum it belongs to (`controller.quorum.voters`), its named listeners (`listeners`), and
//! the identity of its data directory (`meta.properties`: cluster id, node id, directory id).
//!
//! With no quorum configured a node is a cluster of one: it is the only voter and needs no
//! controller listener. A quorum names each voter's controller listener (`1@host:9093,…`), the
//! same list on every node. A broker-only node (`process.roles=broker`) is not in that list.
//!
//! The directory id (KIP-853) is drawn once, when a data directory is first used, and never
//! changes: the quorum records each voter as (node id, directory id), so a node whose disk was
//! wiped comes back under a new directory id and is told apart from the node it replaces.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::parse_listener;

/// The file holding a data directory's identity (Kafka's name and `key=value` format).
pub const META_PROPERTIES: &str = "meta.properties";

/// The roles a node plays (`process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

impl Roles {
    pub fn parse(v: &str) -> Result<Roles, String> {
        let mut roles = Roles {
            broker: false,
            controller: false,
        };
        for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match r {
                "broker" => roles.broker = true,
                "controller" => roles.controller = true,
                other => {
                    return Err(format!(
                        "unknown role '{other}' (broker, controller or both)"
                    ))
                }
            }
        }
        if !roles.broker && !roles.controller {
            return Err("at least one role is needed (broker, controller or both)".into());
        }
        Ok(roles)
    }
}

/// One voter of the controller quorum: its node id and the address of its controller listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    /// `host:port` as configured; resolved when connecting, so host names work.
    pub address: String,
}

/// Parses `controller.quorum.voters`: `id@host:port` entries separated by commas.
pub fn parse_voters(v: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry
            .split_once('@')
            .ok_or_else(|| format!("'{entry}' is not of the form ID@HOST:PORT"))?;
        let id: i32 = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("'{entry}': '{id}' is not a node id"))?;
        let address = address.trim();
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| format!("'{entry}': '{address}' is not of the form HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "'{entry}': '{address}' needs a host and a non-zero port"
            ));
        }
        if voters.iter().any(|o| o.id == id) {
            return Err(format!("node id {id} is listed twice"));
        }
        voters.push(Voter {
            id,
            address: address.to_string(),
        });
    }
    Ok(voters)
}

/// Parses `listeners`: `host:port` (the client listener) or Kafka's named form,
/// `PLAINTEXT://host:port,CONTROLLER://host:port`. Returns the addresses by listener name;
/// a bare address is named `PLAINTEXT`.
pub fn parse_listeners(v: &str) -> Result<BTreeMap<String, SocketAddr>, String> {
    let mut out = BTreeMap::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = match entry.split_once("://") {
            Some((name, address)) => (name.trim().to_ascii_uppercase(), address),
            None => ("PLAINTEXT".to_string(), entry),
        };
        if name.is_empty() {
            return Err(format!("'{entry}' has an empty listener name"));
        }
        let addr = parse_listener(address)?;
        if out.insert(name.clone(), addr).is_some() {
            return Err(format!("listener {name} is given twice"));
        }
    }
    if out.is_empty() {
        return Err("no listener given".into());
    }
    Ok(out)
}

/// Writes listeners back in Kafka's named form, the client listener first.
pub fn format_listeners(listeners: &BTreeMap<String, SocketAddr>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(a) = listeners.get("PLAINTEXT") {
        parts.push(format!("PLAINTEXT://{a}"));
    }
    for (name, a) in listeners {
        if name != "PLAINTEXT" {
            parts.push(format!("{name}://{a}"));
        }
    }
    parts.join(",")
}

/// The node's place in the cluster, resolved and checked from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub roles: Roles,
    /// Empty for a cluster of one (this node the only voter).
    pub voters: Vec<Voter>,
    /// Where this node's controller listens for the quorum and for brokers; `None` for a
    /// cluster of one, which needs no network between controllers.
    pub controller_listener: Option<SocketAddr>,
    pub rack: Option<String>,
    /// `skein.cluster.id`: the id a new cluster takes (and a data directory must carry).
    pub cluster_id: Option<String>,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    /// `skein.metadata.snapshot.entries`.
    pub metadata_snapshot_entries: u64,
}

impl ClusterSettings {
    /// Checks the settings that must agree with one another (each already valid alone) and
    /// finds the controller listener: the one named `controller_listener_name` in
    /// `listeners`, else (for a voter) its own entry in the voter list.
    pub fn resolve(
        mut self,
        node_id: i32,
        listeners: &BTreeMap<String, SocketAddr>,
        controller_listener_name: &str,
    ) -> Result<ClusterSettings, String> {
        let named_controller = listeners.get(controller_listener_name).copied();
        let me = self.voters.iter().find(|v| v.id == node_id);
        self.controller_listener = if self.voters.is_empty() {
            if !self.roles.controller {
                return Err(
                    "process.roles=broker needs controller.quorum.voters: a broker-only node joins an existing quorum".into(),
                );
            }
            named_controller
        } else if self.roles.controller {
            let Some(me) = me else {
                return Err(format!(
                    "node.id={node_id} has the controller role but is not in controller.quorum.voters"
                ));
            };
            match named_controller {
                Some(a) => Some(a),
                // Bind the address the other voters know us by.
                None => Some(parse_listener(&me.address).map_err(|e| {
                    format!(
                        "controller.quorum.voters: this node's entry {}@{}: {e}; give the controller listener with listeners={controller_listener_name}://HOST:PORT",
                        me.id, me.address
                    )
                })?),
            }
        } else {
            if me.is_some() {
                return Err(format!(
                    "node.id={node_id} is in controller.quorum.voters but process.roles has no controller role"
                ));
            }
            // A broker-only node follows the log as an observer: the leader replicates to
            // its controller listener (the named one, else any free port on loopback).
            named_controller
        };
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms {
            return Err(format!(
                "broker.heartbeat.interval.ms ({}) must be below broker.session.timeout.ms ({})",
                self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
            ));
        }
        self.rack = self.rack.filter(|r| !r.is_empty());
        self.cluster_id = self.cluster_id.filter(|c| !c.is_empty());
        Ok(self)
    }

    /// True when this node is the whole quorum (no voters configured).
    pub fn is_single_node(&self) -> bool {
        self.voters.is_empty()
    }

    /// The cluster id a new data directory takes when none is configured: random for a
    /// cluster of one (as before clusters existed); for a quorum, derived from the voter list
    /// so that every node of a new cluster agrees on it without a formatting step.
    pub fn default_cluster_id(&self) -> String {
        if self.voters.is_empty() {
            return crate::broker::random_cluster_id();
        }
        let mut voters: Vec<String> = self
            .voters
            .iter()
            .map(|v| format!("{}@{}", v.id, v.address))
            .collect();
        voters.sort();
        crate::broker::derived_cluster_id(&voters.join(","))
    }
}

/// A data directory's identity, kept in `meta.properties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub cluster_id: String,
    pub node_id: i32,
    /// Drawn once when the directory is first used (KIP-853).
    pub directory_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("data directory {dir} belongs to node {stored}, but this node is node.id={configured}; start it with node.id={stored} or give it another data directory")]
    WrongNode {
        dir: PathBuf,
        stored: i32,
        configured: i32,
    },
    #[error("data directory {dir} belongs to cluster {stored}, but skein.cluster.id is {configured}; it is never overwritten")]
    WrongCluster {
        dir: PathBuf,
        stored: String,
        configured: String,
    },
}

impl NodeIdentity {
    /// Reads `meta.properties`, or writes it for a directory used for the first time. A
    /// directory written before `meta.properties` existed (it has only the single node's
    /// `skein-meta.json`) keeps its cluster id and gets a directory id. Refuses a directory
    /// that belongs to another node or (when `configured_cluster` is given) another cluster.
    pub fn load_or_create(
        dir: &Path,
        node_id: i32,
        configured_cluster: Option<&str>,
        legacy_cluster: Option<&str>,
        new_cluster_id: impl FnOnce() -> String,
    ) -> Result<NodeIdentity, IdentityError> {
        let path = dir.join(META_PROPERTIES);
        let identity = match fs::read_to_string(&path) {
            Ok(text) => {
                let identity = parse_properties(&text).map_err(|why| IdentityError::Corrupt {
                    path: path.clone(),
                    why,
                })?;
                if identity.node_id != node_id {
                    return Err(IdentityError::WrongNode {
                        dir: dir.to_path_buf(),
                        stored: identity.node_id,
                        configured: node_id,
                    });
                }
                identity
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let cluster_id = match (legacy_cluster, configured_cluster) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(c)) => c.to_string(),
                    (None, None) => new_cluster_id(),
                };
                let identity = NodeIdentity {
                    cluster_id,
                    node_id,
                    directory_id: crate::broker::random_cluster_id(),
                };
                write_properties(dir, &identity).map_err(|source| IdentityError::Io {
                    path: path.clone(),
                    source,
                })?;
                tracing::info!(
                    cluster_id = %identity.cluster_id,
                    node_id,
                    directory_id = %identity.directory_id,
                    "wrote {}",
                    path.display()
                );
                identity
            }
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        if let Some(c) = configured_cluster {
            if c != identity.cluster_id {
                return Err(IdentityError::WrongCluster {
                    dir: dir.to_path_buf(),
                    stored: identity.cluster_id,
                    configured: c.to_string(),
                });
            }
        }
        Ok(identity)
    }
}

fn parse_properties(text: &str) -> Result<NodeIdentity, String> {
    let mut map = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line '{line}' is not KEY=VALUE"))?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    if map.get("version").map(String::as_str) != Some("1") {
        return Err("unknown or missing version (expected version=1)".into());
    }
    let field = |k: &str| {
        map.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| format!("{k} is missing"))
    };
    Ok(NodeIdentity {
        cluster_id: field("cluster.id")?,
        node_id: field("node.id")?
            .parse()
            .map_err(|_| "node.id is not a number".to_string())?,
        directory_id: field("directory.id")?,
    })
}

/// Replaces `meta.properties` durably (temp file, fsync, rename, directory fsync).
fn write_properties(dir: &Path, identity: &NodeIdentity) -> io::Result<()> {
    let tmp = dir.join(format!("{META_PROPERTIES}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        write!(
            f,
            "# This data directory's identity, written by skein when it was first used. Do not edit.\nversion=1\ncluster.id={}\nnode.id={}\ndirectory.id={}\n",
            identity.cluster_id, identity.node_id, identity.directory_id
        )?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(META_PROPERTIES))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listeners(v: &str) -> BTreeMap<String, SocketAddr> {
        parse_listeners(v).unwrap()
    }

    #[test]
    fn parses_voters_and_refuses_bad_ones() {
        let v = parse_voters("1@127.0.0.1:9093, 2@host-b:9093,3@[::1]:9093").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].id, 2);
        assert_eq!(v[1].address, "host-b:9093");
        assert_eq!(v[2].address, "[::1]:9093");
        assert!(parse_voters("").unwrap().is_empty());
        for bad in [
            "1",
            "x@h:1",
            "1@h",
            "1@:9",
            "1@h:0",
            "1@h:1,1@g:2",
            "-1@h:1",
        ] {
            assert!(parse_voters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_named_listeners() {
        let l = listeners("127.0.0.1:9092");
        assert_eq!(l["PLAINTEXT"].port(), 9092);
        let l = listeners("PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093");
        assert_eq!(l["CONTROLLER"].port(), 9093);
        assert_eq!(
            format_listeners(&l),
            "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
        );
        assert!(parse_listeners("a:1").is_err());
        assert!(parse_listeners("PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2").is_err());
    }

    fn resolve(node: i32, roles: &str, voters: &str, l: &str) -> Result<ClusterSettings, String> {
        ClusterSettings {
            roles: Roles::parse(roles).unwrap(),
            voters: parse_voters(voters).unwrap(),
            controller_listener: None,
            rack: None,
            cluster_id: None,
            broker_session_timeout_ms: 9000,
            metadata_snapshot_entries: 10_000,
            broker_heartbeat_interval_ms: 2000,
        }
        .resolve(node, &listeners(l), "CONTROLLER")
    }

    #[test]
    fn checks_roles_against_the_quorum() {
        let one = resolve(1, "broker,controller", "", "127.0.0.1:9092").unwrap();
        assert!(one.is_single_node());
        assert_eq!(one.controller_listener, None);
        // A voter binds its own voter entry unless told otherwise.
        let v = resolve(
            2,
            "broker,controller",
            "1@127.0.0.1:9093,2@127.0.0.1:9095",
            "127.0.0.1:9094",
        )
        .unwrap();
        assert_eq!(v.controller_listener.unwrap().port(), 9095);
        let v = resolve(
            2,
            "broker,controller",
            "1@127.0.0.1:9093,2@127.0.0.1:9095",
            "PLAINTEXT://127.0.0.1:9094,CONTROLLER://0.0.0.0:7000",
        )
        .unwrap();
        assert_eq!(v.controller_listener.unwrap().port(), 7000);
        let e = resolve(3, "broker,controller", "1@127.0.0.1:9093", "127.0.0.1:9092").unwrap_err();
        assert!(e.contains("not in controller.quorum.voters"), "{e}");
        let e = resolve(1, "broker", "1@127.0.0.1:9093", "127.0.0.1:9092").unwrap_err();
        assert!(e.contains("no controller role"), "{e}");
        let e = resolve(1, "broker", "", "127.0.0.1:9092").unwrap_err();
        assert!(e.contains("needs controller.quorum.voters"), "{e}");
        let b = resolve(4, "broker", "1@127.0.0.1:9093", "127.0.0.1:9092").unwrap();
        assert_eq!(b.controller_listener, None);
        assert!(Roles::parse("broker,nope").is_err());
        assert!(Roles::parse("").is_err());
    }

    #[test]
    fn a_quorum_derives_one_cluster_id_for_all_its_nodes() {
        let (x, y) = ("1@127.0.0.1:1", "2@127.0.0.1:2");
        let a = resolve(1, "broker,controller", &format!("{x},{y}"), "127.0.0.1:0").unwrap();
        let b = resolve(2, "broker,controller", &format!("{y}, {x}"), "127.0.0.1:0").unwrap();
        let c = resolve(3, "broker", &format!("{x},{y}"), "127.0.0.1:0").unwrap();
        assert_eq!(a.default_cluster_id(), b.default_cluster_id());
        assert_eq!(a.default_cluster_id(), c.default_cluster_id());
        let other = resolve(
            1,
            "broker,controller",
            &format!("{x},2@127.0.0.1:3"),
            "127.0.0.1:0",
        )
        .unwrap();
        assert_ne!(a.default_cluster_id(), other.default_cluster_id());
        assert_eq!(a.default_cluster_id().len(), 22);
    }

    #[test]
    fn identity_is_written_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first =
            NodeIdentity::load_or_create(dir.path(), 1, None, None, || "c1".into()).unwrap();
        assert_eq!(first.cluster_id, "c1");
        let again =
            NodeIdentity::load_or_create(dir.path(), 1, None, None, || unreachable!()).unwrap();
        assert_eq!(first, again);
        let e = NodeIdentity::load_or_create(dir.path(), 2, None, None, || "x".into()).unwrap_err();
        assert!(e.to_string().contains("belongs to node 1"), "{e}");
        let e = NodeIdentity::load_or_create(dir.path(), 1, Some("c2"), None, || "x".into())
            .unwrap_err();
        assert!(e.to_string().contains("belongs to cluster c1"), "{e}");
        // A directory from before meta.properties keeps its cluster id.
        let legacy = tempfile::tempdir().unwrap();
        let id = NodeIdentity::load_or_create(legacy.path(), 1, None, Some("old"), || "new".into())
            .unwrap();
        assert_eq!(id.cluster_id, "old");
        assert_ne!(id.directory_id, first.directory_id);
        fs::write(dir.path().join(META_PROPERTIES), "version=7\n").unwrap();
        let e = NodeIdentity::load_or_create(dir.path(), 1, None, None, || "x".into()).unwrap_err();
        assert!(e.to_string().contains("version"), "{e}");
    }
}
