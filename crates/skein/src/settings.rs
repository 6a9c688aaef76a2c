//! Where `skein serve` gets its settings: defaults, a TOML file, `SKEIN_…` environment
//! variables and flags, in that order, the later winning. Keys are Kafka's names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use skein_broker::config::validate_broker_setting;
use skein_broker::BrokerConfig;

/// Environment variables with the prefix that are not settings.
const NOT_SETTINGS: &[&str] = &["SKEIN_LOG", "SKEIN_BIN"];

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file of settings (Kafka's key names, e.g. `num.partitions = 3`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id (`node.id`).
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Address of the Kafka listener (the `PLAINTEXT` entry of `listeners`); port 0 picks a
    /// free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address of the controller listener (the `CONTROLLER` entry of `listeners`); a voter
    /// without one binds its own entry in the quorum.
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listen: Option<String>,
    /// The controller quorum, `ID@HOST:PORT,…` of each voter's controller listener
    /// (`controller.quorum.voters`); without it the node is a cluster of one.
    #[arg(long, value_name = "VOTERS")]
    pub quorum: Option<String>,
    /// What this node does (`process.roles`): `broker,controller` (the default) or `broker`.
    #[arg(long, value_name = "ROLES")]
    pub roles: Option<String>,
    /// This broker's rack or zone (`broker.rack`).
    #[arg(long, value_name = "RACK")]
    pub rack: Option<String>,
    /// Address given to clients (`advertised.listeners`).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Data directory (`log.dirs`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the admin HTTP endpoint (`skein.http.listener`).
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Any setting, as key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

fn toml_value(key: &str, v: &toml::Value) -> Result<String, String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| toml_value(key, i))
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        _ => return Err(format!("setting {key} has a value of an unsupported type")),
    })
}

/// Flattens `[log] retention.ms = 1` and `"log.retention.ms" = 1` alike into dotted keys.
fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out)?,
            other => {
                out.insert(key.clone(), toml_value(&key, other)?);
            }
        }
    }
    Ok(())
}

/// Maps `SKEIN_NUM_PARTITIONS` to `num.partitions`.
fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix("SKEIN_")?;
    Some(rest.to_ascii_lowercase().replace('_', "."))
}

/// `listeners` from the file or environment, with the entries `--listen` and
/// `--controller-listen` name replaced.
fn listeners_with_flags(
    settings: &BTreeMap<String, String>,
    args: &ServeArgs,
) -> Result<String, String> {
    use skein_broker::node::{format_listeners, parse_listeners};
    let mut listeners = match settings.get("listeners") {
        Some(v) => parse_listeners(v).map_err(|e| format!("invalid value for listeners: {e}"))?,
        None => BTreeMap::new(),
    };
    let controller_name = settings
        .get("controller.listener.names")
        .map(|n| n.trim().to_ascii_uppercase())
        .unwrap_or_else(|| "CONTROLLER".to_string());
    for (name, flag, value) in [
        ("PLAINTEXT".to_string(), "--listen", &args.listen),
        (
            controller_name.clone(),
            "--controller-listen",
            &args.controller_listen,
        ),
    ] {
        if let Some(v) = value {
            let addr =
                skein_broker::config::parse_listener(v).map_err(|e| format!("{flag}: {e}"))?;
            listeners.insert(name, addr);
        }
    }
    if listeners.keys().all(|name| *name == controller_name) {
        // Only the controller listener was given: keep the default client listener.
        let default = skein_broker::config::BROKER_CONFIGS
            .iter()
            .find(|d| d.name == "listeners")
            .map(|d| d.default)
            .unwrap_or("127.0.0.1:9092");
        listeners.insert(
            "PLAINTEXT".to_string(),
            skein_broker::config::parse_listener(default)?,
        );
    }
    Ok(format_listeners(&listeners))
}

pub fn resolve(args: &ServeArgs) -> Result<BrokerConfig, String> {
    resolve_with_env(args, std::env::vars())
}

pub fn resolve_with_env(
    args: &ServeArgs,
    env: impl Iterator<Item = (String, String)>,
) -> Result<BrokerConfig, String> {
    let mut settings = BTreeMap::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("config file {}: {e}", path.display()))?;
        flatten("", &table, &mut settings)?;
        for (k, v) in &settings {
            validate_broker_setting(k, v)
                .map_err(|e| format!("config file {}: {e}", path.display()))?;
        }
    }
    for (var, value) in env {
        if NOT_SETTINGS.contains(&var.as_str()) {
            continue;
        }
        if let Some(key) = env_key(&var) {
            // The environment is shared with other tools, so a variable that names no
            // setting is reported but does not stop the broker; a bad value does.
            match validate_broker_setting(&key, &value) {
                Ok(()) => {
                    settings.insert(key, value);
                }
                Err(e) if e.starts_with("unknown setting") => {
                    eprintln!(
                        "skein: ignoring environment variable {var}: it names no setting ({key})"
                    );
                }
                Err(e) => return Err(format!("environment variable {var}: {e}")),
            }
        }
    }
    if args.listen.is_some() || args.controller_listen.is_some() {
        settings.insert(
            "listeners".to_string(),
            listeners_with_flags(&settings, args)?,
        );
    }
    let flags = [
        ("node.id", args.node_id.map(|n| n.to_string())),
        ("controller.quorum.voters", args.quorum.clone()),
        ("process.roles", args.roles.clone()),
        ("broker.rack", args.rack.clone()),
        ("advertised.listeners", args.advertise.clone()),
        (
            "log.dirs",
            args.data_dir.as_ref().map(|d| d.display().to_string()),
        ),
        ("skein.http.listener", args.http.clone()),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            settings.insert(key.to_string(), v);
        }
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set {kv}: expected KEY=VALUE"))?;
        settings.insert(k.trim().to_string(), v.trim().to_string());
    }
    BrokerConfig::from_settings(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_env_beat_file() {
        let dir = std::env::temp_dir().join(format!("skein-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("skein.toml");
        std::fs::write(&file, "num.partitions = 5\n[log]\nretention.ms = 1000\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let c = resolve_with_env(&args, std::iter::empty()).unwrap();
        assert_eq!(c.num_partitions, 5);
        assert_eq!(
            c.explicit.get("log.retention.ms").map(String::as_str),
            Some("1000")
        );
        let env = vec![("SKEIN_NUM_PARTITIONS".to_string(), "4".to_string())];
        let c = resolve_with_env(&args, env.clone().into_iter()).unwrap();
        assert_eq!(c.num_partitions, 4);
        let args = ServeArgs {
            config: Some(file),
            set: vec!["num.partitions=2".into()],
            ..Default::default()
        };
        let c = resolve_with_env(&args, env.into_iter()).unwrap();
        assert_eq!(c.num_partitions, 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cluster_flags_map_to_kafka_settings() {
        let args = ServeArgs {
            node_id: Some(2),
            listen: Some("127.0.0.1:0".into()),
            controller_listen: Some("127.0.0.1:7002".into()),
            quorum: Some("1@127.0.0.1:7001,2@127.0.0.1:7002,3@127.0.0.1:7003".into()),
            rack: Some("az-b".into()),
            ..Default::default()
        };
        let env = vec![(
            "SKEIN_LISTENERS".to_string(),
            "PLAINTEXT://127.0.0.1:9000,CONTROLLER://127.0.0.1:9001".to_string(),
        )];
        let c = resolve_with_env(&args, env.into_iter()).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.listener.port(), 0);
        assert_eq!(c.cluster.controller_listener.unwrap().port(), 7002);
        assert_eq!(c.cluster.voters.len(), 3);
        assert_eq!(c.cluster.rack.as_deref(), Some("az-b"));
        assert!(c.cluster.roles.controller && c.cluster.roles.broker);
        let args = ServeArgs {
            node_id: Some(4),
            roles: Some("broker".into()),
            quorum: Some("1@127.0.0.1:7001".into()),
            ..Default::default()
        };
        let c = resolve_with_env(&args, std::iter::empty()).unwrap();
        assert_eq!(c.cluster.controller_listener, None);
        let args = ServeArgs {
            node_id: Some(4),
            quorum: Some("1@127.0.0.1:7001".into()),
            ..Default::default()
        };
        let e = resolve_with_env(&args, std::iter::empty()).unwrap_err();
        assert!(e.contains("not in controller.quorum.voters"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_key() {
        let args = ServeArgs {
            set: vec!["no.such.key=1".into()],
            ..Default::default()
        };
        assert!(resolve_with_env(&args, std::iter::empty())
            .unwrap_err()
            .contains("no.such.key"));
        let env = vec![("SKEIN_NUM_PARTITIONS".to_string(), "x".to_string())];
        let e = resolve_with_env(&ServeArgs::default(), env.into_iter()).unwrap_err();
        assert!(e.contains("num.partitions"), "{e}");
    }
}
