//! `skein cluster info`: cluster id, controller, brokers, and the APIs the bootstrap broker
//! serves with the version this client picks for each.

use anyhow::{Context, Result};
use serde_json::json;
use skein_protocol::messages::describe_cluster_request::DescribeClusterRequest;
use skein_protocol::ApiKey;

use super::client::{negotiate, BrokerInfo};
use super::output::{or_dash, print_json, table, Output};
use super::Common;

#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster id, controller, brokers and supported APIs.
    Info(InfoArgs),
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Info(a) => info(a).context("cluster info"),
    }
}

fn info(args: InfoArgs) -> Result<()> {
    let mut cluster = args.common.connect()?;
    let mut cluster_id = cluster.cluster_id.clone();
    let mut controller = cluster.controller_id;
    let mut brokers: Vec<BrokerInfo> = cluster.brokers().values().cloned().collect();
    let conn = cluster.any()?;
    if conn.supports(ApiKey::DescribeCluster) {
        // DescribeCluster is the admin client's source; Metadata is the fallback.
        let response = conn.send(DescribeClusterRequest {
            include_cluster_authorized_operations: false,
            endpoint_type: 1,
            ..Default::default()
        })?;
        if response.error_code == 0 {
            cluster_id = Some(response.cluster_id);
            controller = response.controller_id;
            brokers = response
                .brokers
                .into_iter()
                .map(|b| BrokerInfo {
                    node_id: b.broker_id,
                    host: b.host,
                    port: b.port,
                    rack: b.rack,
                })
                .collect();
            brokers.sort_by_key(|b| b.node_id);
        }
    }
    let apis: Vec<(i16, String, i16, i16, Option<i16>)> = conn
        .broker_versions()
        .iter()
        .map(|(key, range)| {
            let api = ApiKey::from_i16(*key);
            (
                *key,
                api.map_or_else(|| format!("unknown({key})"), |a| a.name().to_owned()),
                range.min,
                range.max,
                api.and_then(|a| negotiate(a, Some(*range))),
            )
        })
        .collect();
    let bootstrap = conn.addr().to_owned();
    match args.common.output {
        Output::Text => {
            println!("cluster id  {}", cluster_id.as_deref().unwrap_or("-"));
            println!(
                "controller  {}",
                if controller >= 0 {
                    controller.to_string()
                } else {
                    "-".to_owned()
                }
            );
            println!("bootstrap   {bootstrap}");
            println!();
            let rows: Vec<Vec<String>> = brokers
                .iter()
                .map(|b| {
                    vec![
                        b.node_id.to_string(),
                        b.host.clone(),
                        b.port.to_string(),
                        or_dash(b.rack.clone()),
                    ]
                })
                .collect();
            print!("{}", table(&["BROKER", "HOST", "PORT", "RACK"], &rows));
            println!();
            let rows: Vec<Vec<String>> = apis
                .iter()
                .map(|(key, name, min, max, used)| {
                    vec![
                        name.clone(),
                        key.to_string(),
                        min.to_string(),
                        max.to_string(),
                        or_dash(*used),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["API", "KEY", "MIN", "MAX", "SKEIN-CLI-USES"], &rows)
            );
        }
        Output::Json => print_json(&json!({
            "cluster_id": cluster_id,
            "controller": (controller >= 0).then_some(controller),
            "bootstrap": bootstrap,
            "brokers": brokers.iter().map(|b| json!({
                "id": b.node_id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
            })).collect::<Vec<_>>(),
            "apis": apis.iter().map(|(key, name, min, max, used)| json!({
                "key": key,
                "name": name,
                "min_version": min,
                "max_version": max,
                "client_version": used,
            })).collect::<Vec<_>>(),
        })),
    }
    Ok(())
}
