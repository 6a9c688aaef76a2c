//! ApiVersions and framing scenarios: what each broker advertises, KIP-511 negotiation, and
//! requests in versions or for APIs a broker does not serve.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Value};
use skein_protocol::messages::api_versions_request::ApiVersionsRequest;
use skein_protocol::messages::metadata_request::MetadataRequest;
use skein_protocol::ApiKey;

use super::Scenario;
use crate::client::decode_api_versions_v0;
use crate::{err, Ctx};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "api_versions.v3",
            run: v3,
        },
        Scenario {
            name: "api_versions.v0",
            run: v0,
        },
        Scenario {
            name: "api_versions.unknown_version",
            run: unknown_version,
        },
        Scenario {
            name: "api_versions.bad_client_software_name",
            run: bad_software_name,
        },
        Scenario {
            name: "api_versions.advertised",
            run: advertised,
        },
        Scenario {
            name: "protocol.unsupported_metadata_version",
            run: unsupported_metadata_version,
        },
        Scenario {
            name: "protocol.unknown_api_key",
            run: unknown_api_key,
        },
    ]
}

fn request(name: &str) -> ApiVersionsRequest {
    ApiVersionsRequest {
        client_software_name: name.into(),
        client_software_version: "1.0".into(),
        ..Default::default()
    }
}

fn v3(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(3, request("skein-compat"))?;
    let own = r
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16);
    Ok(json!({
        "error": err(r.error_code),
        "api_versions_range": own.map(|k| format!("{}-{}", k.min_version, k.max_version)),
        "sorted_by_key": r.api_keys.windows(2).all(|w| w[0].api_key < w[1].api_key),
    }))
}

fn v0(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(0, ApiVersionsRequest::default())?;
    Ok(json!({"error": err(r.error_code), "lists_apis": !r.api_keys.is_empty()}))
}

fn unknown_version(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    // Encode as v3, then claim version 99 in the header (bytes 2..4 of the frame body).
    let reply = c.send_edited(3, request("skein-compat"), |b| {
        b[2..4].copy_from_slice(&99i16.to_be_bytes())
    })?;
    let Some(body) = reply else {
        return Ok(json!({"closed": true}));
    };
    let r = decode_api_versions_v0(&body)?;
    let own = r
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ApiVersions as i16);
    Ok(json!({
        "error": err(r.error_code),
        "lists_apis": !r.api_keys.is_empty(),
        "api_versions_range": own.map(|k| format!("{}-{}", k.min_version, k.max_version)),
    }))
}

fn bad_software_name(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(3, request("bad name!"))?;
    Ok(json!({"error": err(r.error_code)}))
}

/// Every API either broker may serve, with the advertised range ("-" when not served).
fn advertised(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let r = c.send(3, request("skein-compat"))?;
    let mut map = BTreeMap::new();
    for k in &r.api_keys {
        let name = ApiKey::from_i16(k.api_key)
            .map(|a| a.name().to_owned())
            .unwrap_or_else(|| format!("ApiKey{}", k.api_key));
        map.insert(
            format!("{:02} {name}", k.api_key),
            json!(format!("{}-{}", k.min_version, k.max_version)),
        );
    }
    Ok(json!(map))
}

fn unsupported_metadata_version(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let reply = c.send_edited(
        12,
        MetadataRequest {
            topics: Some(vec![]),
            ..Default::default()
        },
        |b| b[2..4].copy_from_slice(&77i16.to_be_bytes()),
    )?;
    Ok(json!({"answered": reply.is_some()}))
}

fn unknown_api_key(ctx: &Ctx) -> Result<Value> {
    let mut c = ctx.client()?;
    let reply = c.send_edited(0, ApiVersionsRequest::default(), |b| {
        b[0..2].copy_from_slice(&999i16.to_be_bytes())
    })?;
    // A broker that answers must still be usable afterwards.
    Ok(json!({"answered": reply.is_some()}))
}
