//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): SCRAM credentials
//! kept in the cluster metadata (`UserScramCredentialRecord`), as Kafka's controller checks
//! them. The request carries a salted password; only the derived stored and server keys are
//! kept. Nothing here logs a credential.

use std::collections::BTreeMap;
use std::sync::Arc;

use skein_protocol::messages::alter_user_scram_credentials_request::AlterUserScramCredentialsRequest;
use skein_protocol::messages::alter_user_scram_credentials_response::{
    AlterUserScramCredentialsResponse, AlterUserScramCredentialsResult,
};
use skein_protocol::messages::describe_user_scram_credentials_request::DescribeUserScramCredentialsRequest;
use skein_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResponse, DescribeUserScramCredentialsResult,
};
use skein_protocol::{ErrorCode, ResponseBody};

use crate::broker::Broker;
use crate::controller_link::{Answer, ControllerCall, ScramUpsertion};
use crate::sasl::scram::{Credential, Mechanism};
use crate::sasl::{
    DUPLICATE_RESOURCE, RESOURCE_NOT_FOUND, UNACCEPTABLE_CREDENTIAL, UNSUPPORTED_SASL_MECHANISM,
};
use crate::Reply;

pub fn describe(
    broker: &Arc<Broker>,
    req: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let all: BTreeMap<String, Vec<(i8, i32)>> = broker.quorum.read(|image| {
        let mut m: BTreeMap<String, Vec<(i8, i32)>> = BTreeMap::new();
        for ((user, mech), c) in image.scram_credentials() {
            m.entry(user.clone())
                .or_default()
                .push((*mech, c.iterations));
        }
        m
    });
    let info = |list: &Vec<(i8, i32)>| -> Vec<CredentialInfo> {
        list.iter()
            .map(|(mechanism, iterations)| CredentialInfo {
                mechanism: *mechanism,
                iterations: *iterations,
                ..Default::default()
            })
            .collect()
    };
    let mut resp = DescribeUserScramCredentialsResponse::default();
    match req.users {
        None => {
            for (user, list) in &all {
                resp.results.push(DescribeUserScramCredentialsResult {
                    user: user.clone(),
                    credential_infos: info(list),
                    ..Default::default()
                });
            }
        }
        Some(users) => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for u in &users {
                *counts.entry(u.name.as_str()).or_default() += 1;
            }
            let mut done = std::collections::BTreeSet::new();
            for u in &users {
                if !done.insert(u.name.clone()) {
                    continue;
                }
                let mut r = DescribeUserScramCredentialsResult {
                    user: u.name.clone(),
                    ..Default::default()
                };
                if counts[u.name.as_str()] > 1 {
                    r.error_code = DUPLICATE_RESOURCE.0;
                    r.error_message = Some(
                        "Cannot describe SCRAM credentials for the same user twice in a single request"
                            .into(),
                    );
                } else if let Some(list) = all.get(&u.name) {
                    r.credential_infos = info(list);
                } else {
                    r.error_code = RESOURCE_NOT_FOUND.0;
                    r.error_message =
                        Some("Attempt to describe a user credential that does not exist".into());
                }
                resp.results.push(r);
            }
        }
    }
    resp
}

pub fn alter(broker: &Arc<Broker>, req: AlterUserScramCredentialsRequest) -> Reply {
    // Per user: the first error of its changes, if any.
    let mut order: Vec<String> = Vec::new();
    let mut errors: BTreeMap<String, (ErrorCode, String)> = BTreeMap::new();
    let fail = |errors: &mut BTreeMap<String, (ErrorCode, String)>,
                user: &str,
                code: ErrorCode,
                msg: &str| {
        errors
            .entry(user.to_string())
            .or_insert((code, msg.to_string()));
    };
    let mut seen: BTreeMap<(String, i8), usize> = BTreeMap::new();
    for (user, mech) in req
        .deletions
        .iter()
        .map(|d| (&d.name, d.mechanism))
        .chain(req.upsertions.iter().map(|u| (&u.name, u.mechanism)))
    {
        if !order.contains(user) {
            order.push(user.clone());
        }
        *seen.entry((user.clone(), mech)).or_default() += 1;
    }
    for ((user, _), n) in &seen {
        if *n > 1 {
            fail(
                &mut errors,
                user,
                DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request",
            );
        }
    }
    let mut deletions = Vec::new();
    for d in &req.deletions {
        if d.name.is_empty() {
            fail(
                &mut errors,
                &d.name,
                UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty",
            );
        } else if Mechanism::from_i8(d.mechanism).is_none() {
            fail(
                &mut errors,
                &d.name,
                UNSUPPORTED_SASL_MECHANISM,
                "Unknown SCRAM mechanism",
            );
        }
        deletions.push((d.name.clone(), d.mechanism));
    }
    let mut upsertions = Vec::new();
    for u in &req.upsertions {
        let Some(m) = Mechanism::from_i8(u.mechanism) else {
            fail(
                &mut errors,
                &u.name,
                UNSUPPORTED_SASL_MECHANISM,
                "Unknown SCRAM mechanism",
            );
            continue;
        };
        if u.name.is_empty() {
            fail(
                &mut errors,
                &u.name,
                UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty",
            );
        } else if u.iterations < m.min_iterations() {
            fail(
                &mut errors,
                &u.name,
                UNACCEPTABLE_CREDENTIAL,
                "Too few iterations",
            );
        } else if u.iterations > m.max_iterations() {
            fail(
                &mut errors,
                &u.name,
                UNACCEPTABLE_CREDENTIAL,
                "Too many iterations",
            );
        } else if u.salt.is_empty() || u.salted_password.is_empty() {
            fail(
                &mut errors,
                &u.name,
                UNACCEPTABLE_CREDENTIAL,
                "Salt and salted password must not be empty",
            );
        }
        let c = Credential::from_salted(m, &u.salt, &u.salted_password, u.iterations);
        upsertions.push(ScramUpsertion {
            user: u.name.clone(),
            mechanism: u.mechanism,
            salt: c.salt,
            stored_key: c.stored_key,
            server_key: c.server_key,
            iterations: u.iterations,
        });
    }
    deletions.retain(|(u, _)| !errors.contains_key(u));
    upsertions.retain(|u| !errors.contains_key(&u.user));
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let mut outcome: BTreeMap<String, (i16, Option<String>)> = BTreeMap::new();
        if !deletions.is_empty() || !upsertions.is_empty() {
            let users: Vec<String> = {
                let mut v: Vec<String> = Vec::new();
                for u in deletions
                    .iter()
                    .map(|d| &d.0)
                    .chain(upsertions.iter().map(|u| &u.user))
                {
                    if !v.contains(u) {
                        v.push(u.clone());
                    }
                }
                v
            };
            match broker
                .controller_call(ControllerCall::AlterScram {
                    deletions,
                    upsertions,
                })
                .await
            {
                Ok(Answer::Results { results }) => {
                    for (u, r) in users.into_iter().zip(results) {
                        outcome.insert(u, r);
                    }
                }
                Ok(_) => {
                    for u in users {
                        outcome.insert(u, (ErrorCode::UNKNOWN_SERVER_ERROR.0, None));
                    }
                }
                Err(e) => {
                    for u in users {
                        outcome.insert(u, (e.code.0, Some(e.message.clone())));
                    }
                }
            }
        }
        let mut resp = AlterUserScramCredentialsResponse::default();
        for user in order {
            let (error_code, error_message) = match errors.get(&user) {
                Some((code, msg)) => (code.0, Some(msg.clone())),
                None => outcome.remove(&user).unwrap_or((0, None)),
            };
            resp.results.push(AlterUserScramCredentialsResult {
                user,
                error_code,
                error_message,
                ..Default::default()
            });
        }
        ResponseBody::AlterUserScramCredentials(resp)
    }))
}
