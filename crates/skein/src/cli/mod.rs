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
}

impl Common {
    pub fn connect(&self) -> anyhow::Result<client::Cluster> {
        client::Cluster::connect(&self.bootstrap)
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
