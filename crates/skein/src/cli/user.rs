//! `skein user create|delete|list`: SCRAM credentials in the cluster metadata, through
//! AlterUserScramCredentials and DescribeUserScramCredentials (what Kafka's
//! `kafka-configs --alter --add-config 'SCRAM-SHA-256=[password=…]' --entity-type users`
//! does). The password is salted and hashed here (PBKDF2, 4096 iterations by default): only
//! the salted password travels, and it is never printed.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use serde_json::json;
use skein_broker::sasl::scram::{random_bytes, Mechanism};
use skein_protocol::messages::alter_user_scram_credentials_request::{
    AlterUserScramCredentialsRequest, ScramCredentialDeletion, ScramCredentialUpsertion,
};
use skein_protocol::messages::describe_user_scram_credentials_request::{
    DescribeUserScramCredentialsRequest, UserName,
};

use super::errors::KafkaError;
use super::output::{print_json, table, Output};
use super::Common;

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Create a user's SCRAM credentials, or replace them (a new password).
    Create(CreateArgs),
    /// Delete a user's SCRAM credentials.
    Delete(DeleteArgs),
    /// List users with SCRAM credentials (mechanisms and iterations, never secrets).
    List(ListArgs),
}

#[derive(clap::Args)]
pub struct CreateArgs {
    pub name: String,
    /// The password; without it, the first line of stdin (keeps it out of `ps` and shell
    /// history).
    #[arg(long)]
    pub password: Option<String>,
    /// SCRAM-SHA-256 or SCRAM-SHA-512; repeat for both (the default).
    #[arg(long = "mechanism", value_name = "MECHANISM")]
    pub mechanisms: Vec<String>,
    /// PBKDF2 iterations (4096 to 16384, as Kafka allows).
    #[arg(long, default_value_t = 4096)]
    pub iterations: i32,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    pub name: String,
    /// SCRAM-SHA-256 or SCRAM-SHA-512; repeat for both. Default: every mechanism the user has.
    #[arg(long = "mechanism", value_name = "MECHANISM")]
    pub mechanisms: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Create(a) => {
            let context = format!("user create {}", a.name);
            create(a).context(context)
        }
        UserCommand::Delete(a) => {
            let context = format!("user delete {}", a.name);
            delete(a).context(context)
        }
        UserCommand::List(a) => list(a).context("user list"),
    }
}

fn mechanisms(names: &[String]) -> Result<Vec<Mechanism>> {
    if names.is_empty() {
        return Ok(vec![Mechanism::Sha256, Mechanism::Sha512]);
    }
    names
        .iter()
        .map(|n| {
            Mechanism::from_name(&n.to_ascii_uppercase())
                .with_context(|| format!("unknown mechanism {n}: SCRAM-SHA-256 or SCRAM-SHA-512"))
        })
        .collect()
}

fn check_results(results: impl IntoIterator<Item = (i16, Option<String>)>) -> Result<()> {
    for (code, message) in results {
        KafkaError::check(code, message.as_deref())?;
    }
    Ok(())
}

fn create(args: CreateArgs) -> Result<()> {
    let password = match args.password {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.is_empty() {
        bail!("empty password");
    }
    let mechs = mechanisms(&args.mechanisms)?;
    let upsertions = mechs
        .iter()
        .map(|m| {
            let salt = random_bytes(32);
            let salted =
                m.salted_password(password.as_bytes(), &salt, args.iterations.max(1) as u32);
            ScramCredentialUpsertion {
                name: args.name.clone(),
                mechanism: *m as i8,
                iterations: args.iterations,
                salt: salt.into(),
                salted_password: salted.into(),
                ..Default::default()
            }
        })
        .collect();
    let mut cluster = args.common.connect()?;
    let response = cluster.any()?.send(AlterUserScramCredentialsRequest {
        upsertions,
        ..Default::default()
    })?;
    check_results(
        response
            .results
            .into_iter()
            .map(|r| (r.error_code, r.error_message)),
    )?;
    let names: Vec<&str> = mechs.iter().map(|m| m.name()).collect();
    match args.common.output {
        Output::Text => println!("user {}: {}", args.name, names.join(", ")),
        Output::Json => print_json(&json!({ "user": args.name, "mechanisms": names })),
    }
    Ok(())
}

fn delete(args: DeleteArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let conn = cluster.any()?;
    let mechs: Vec<Mechanism> = if args.mechanisms.is_empty() {
        let response = conn.send(DescribeUserScramCredentialsRequest {
            users: Some(vec![UserName {
                name: args.name.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        })?;
        KafkaError::check(response.error_code, response.error_message.as_deref())?;
        let r = response
            .results
            .into_iter()
            .next()
            .context("the broker did not answer for the user")?;
        KafkaError::check(r.error_code, r.error_message.as_deref())?;
        r.credential_infos
            .iter()
            .filter_map(|c| Mechanism::from_i8(c.mechanism))
            .collect()
    } else {
        mechanisms(&args.mechanisms)?
    };
    let response = conn.send(AlterUserScramCredentialsRequest {
        deletions: mechs
            .iter()
            .map(|m| ScramCredentialDeletion {
                name: args.name.clone(),
                mechanism: *m as i8,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })?;
    check_results(
        response
            .results
            .into_iter()
            .map(|r| (r.error_code, r.error_message)),
    )?;
    match args.common.output {
        Output::Text => println!("deleted user {}", args.name),
        Output::Json => print_json(&json!({ "user": args.name, "deleted": true })),
    }
    Ok(())
}

fn list(args: ListArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let response = cluster.any()?.send(DescribeUserScramCredentialsRequest {
        users: None,
        ..Default::default()
    })?;
    KafkaError::check(response.error_code, response.error_message.as_deref())?;
    let name = |m: i8| {
        Mechanism::from_i8(m).map_or_else(|| format!("mechanism {m}"), |m| m.name().to_string())
    };
    match args.common.output {
        Output::Text => {
            let rows: Vec<Vec<String>> = response
                .results
                .iter()
                .flat_map(|r| {
                    r.credential_infos.iter().map(move |c| {
                        vec![r.user.clone(), name(c.mechanism), c.iterations.to_string()]
                    })
                })
                .collect();
            print!("{}", table(&["USER", "MECHANISM", "ITERATIONS"], &rows));
        }
        Output::Json => print_json(&json!(response
            .results
            .iter()
            .map(|r| json!({
                "user": r.user,
                "credentials": r.credential_infos.iter().map(|c| json!({
                    "mechanism": name(c.mechanism),
                    "iterations": c.iterations,
                })).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>())),
    }
    Ok(())
}
