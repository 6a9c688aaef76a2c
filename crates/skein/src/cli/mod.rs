//! The operator's tool: `skein topic`, `produce`, `consume`, `group`, `cluster`, `dlt`, `user`, `acl` and `quota`. Each
//! command speaks the Kafka protocol (through Skein's own codec) to any Kafka-compatible
//! broker, prints text or JSON on stdout, and reports a failure as one line on stderr
//! (`skein: topic create orders: TOPIC_ALREADY_EXISTS: …`) with a non-zero exit code.

use std::process::ExitCode;

mod acl;
mod assignor;
mod batch;
mod client;
mod cluster;
mod consume;
mod dlt;
mod dlt_purge;
mod dlt_replay;
mod errors;
mod fetch;
mod group;
mod membership;
mod offsets;
mod output;
mod partitioner;
mod produce;
mod quota;
mod reassign;
mod reset_plan;
mod security;
mod signal;
mod time;
mod topic;
mod user;

pub use output::Output;

/// The options every command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Broker(s) to bootstrap from, comma-separated.
    #[arg(
        long,
        short = 'b',
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// How to print results.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// A Java-properties file with the client's security settings, as Kafka's admin tools
    /// take it: security.protocol, ssl.truststore.location, ssl.keystore.location,
    /// ssl.key.password, ssl.endpoint.identification.algorithm, sasl.mechanism,
    /// sasl.jaas.config (PEM stores only).
    #[arg(long, value_name = "FILE", env = "SKEIN_COMMAND_CONFIG")]
    pub command_config: Option<std::path::PathBuf>,
}

impl Common {
    /// Connects to the bootstrap servers with the `--command-config` settings; every
    /// connection the command opens uses them.
    pub fn connect(&self) -> anyhow::Result<client::Cluster> {
        client::Cluster::connect(&self.bootstrap, self.security()?)
    }

    /// The `--command-config` settings (read once per process; unused keys are warned about
    /// once on stderr, as Kafka's tools do).
    fn security(&self) -> anyhow::Result<std::sync::Arc<security::Security>> {
        static LOADED: std::sync::Mutex<Option<std::sync::Arc<security::Security>>> =
            std::sync::Mutex::new(None);
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = loaded.as_ref() {
            return Ok(s.clone());
        }
        let s = match &self.command_config {
            None => security::Security::default(),
            Some(path) => {
                let (s, unused) = security::Security::from_file(path)?;
                if !unused.is_empty() {
                    eprintln!(
                        "skein: warning: --command-config {}: these settings are not used: {}",
                        path.display(),
                        unused.join(", ")
                    );
                }
                s
            }
        };
        let s = std::sync::Arc::new(s);
        *loaded = Some(s.clone());
        Ok(s)
    }
}

/// The operator commands, flattened into `skein`'s own subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create, list, describe, grow, reconfigure and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Write records to a topic, one per line of stdin (or per --value).
    Produce(produce::ProduceArgs),
    /// Read records from a topic, alone or as a member of a consumer group.
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups, and reset their offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Show the cluster (brokers, controller quorum, offline partitions), check its health, and
    /// add or remove controller quorum voters.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Dead-letter topics: list them with counts by cause and by original topic, and show
    /// their records with the headers decoded.
    #[command(subcommand)]
    Dlt(dlt::DltCommand),
    /// Create, delete and list users' SCRAM credentials (kept in the cluster metadata).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Add, list and remove ACLs (kept in the cluster metadata; needs an authorizer).
    #[command(subcommand)]
    Acl(acl::AclCommand),
    /// Set, remove and describe client quotas (produce/fetch byte rates, request time) per
    /// user and client id, kept in the cluster metadata.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
}

/// Runs one operator command; errors are printed as one line on stderr.
pub fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Topic(c) => topic::run(c),
        Command::Produce(a) => produce::run(a),
        Command::Consume(a) => consume::run(a),
        Command::Group(c) => group::run(c),
        Command::Dlt(c) => dlt::run(c),
        Command::User(c) => user::run(c),
        Command::Acl(c) => acl::run(c),
        Command::Quota(c) => quota::run(c),
        Command::Cluster(c) => return report(cluster::run(c)),
    };
    report(result.map(|()| ExitCode::SUCCESS))
}

/// The exit code of a command's result; an error is printed as one line on stderr.
fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skein: {e:#}");
            ExitCode::FAILURE
        }
    }
}
