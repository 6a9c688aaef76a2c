//! CreateAcls, DescribeAcls and DeleteAcls: ACLs kept in the cluster metadata
//! (`AccessControlEntryRecord`), validated as Kafka validates them. Without an authorizer
//! (`authorizer.class.name` empty) they answer SECURITY_DISABLED, as Kafka does. Creating and
//! deleting need ALTER on the cluster, describing DESCRIBE on the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use skein_metadata::image::AclEntry;
use skein_protocol::messages::create_acls_request::CreateAclsRequest;
use skein_protocol::messages::create_acls_response::{AclCreationResult, CreateAclsResponse};
use skein_protocol::messages::delete_acls_request::DeleteAclsRequest;
use skein_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl, DeleteAclsResponse,
};
use skein_protocol::messages::describe_acls_request::DescribeAclsRequest;
use skein_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource, DescribeAclsResponse,
};
use skein_protocol::ResponseBody;

use super::{Reply, RequestContext};
use crate::authz::{self, op, AclFilter};
use crate::broker::Broker;
use crate::controller_link::{Answer, ControllerCall, WireAcl};
use crate::error::ErrorCode;

const SECURITY_DISABLED: ErrorCode = ErrorCode::SECURITY_DISABLED;
const DISABLED_MESSAGE: &str = "No Authorizer is configured on the broker";

/// The most ACL bindings one CreateAcls or DeleteAcls may name (the request size bounds it
/// too); more is INVALID_REQUEST for the extra ones.
const MAX_BINDINGS: usize = 10_000;

fn wire(a: &AclEntry) -> WireAcl {
    WireAcl {
        resource_type: a.resource_type,
        resource_name: a.resource_name.clone(),
        pattern_type: a.pattern_type,
        principal: a.principal.clone(),
        host: a.host.clone(),
        operation: a.operation,
        permission_type: a.permission_type,
    }
}

pub fn create(broker: &Arc<Broker>, ctx: &RequestContext, req: CreateAclsRequest) -> Reply {
    let n = req.creations.len();
    let all = |code: ErrorCode, msg: &str| {
        Reply::Now(ResponseBody::CreateAcls(CreateAclsResponse {
            results: (0..n)
                .map(|_| AclCreationResult {
                    error_code: code.0,
                    error_message: Some(msg.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }))
    };
    if !broker.authz.enabled() {
        return all(SECURITY_DISABLED, DISABLED_MESSAGE);
    }
    if !broker.authz_session(ctx).cluster(op::ALTER) {
        return all(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        );
    }
    let mut results: Vec<Option<(ErrorCode, String)>> = Vec::with_capacity(n);
    let mut valid = Vec::new();
    for (i, c) in req.creations.iter().enumerate() {
        let entry = AclEntry {
            resource_type: c.resource_type,
            resource_name: c.resource_name.clone(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.clone(),
            host: c.host.clone(),
            operation: c.operation,
            permission_type: c.permission_type,
        };
        let check = if i >= MAX_BINDINGS {
            Err(format!("At most {MAX_BINDINGS} ACLs per request"))
        } else {
            authz::validate_new_acl(&entry)
        };
        match check {
            Ok(()) => {
                valid.push(wire(&entry));
                results.push(None);
            }
            Err(m) => results.push(Some((ErrorCode::INVALID_REQUEST, m))),
        }
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let outcome = if valid.is_empty() {
            Ok(())
        } else {
            broker
                .controller_call(ControllerCall::CreateAcls { acls: valid })
                .await
                .map(|_| ())
        };
        let resp = CreateAclsResponse {
            results: results
                .into_iter()
                .map(|r| {
                    let (code, msg) = match (r, &outcome) {
                        (Some((c, m)), _) => (c.0, Some(m)),
                        (None, Ok(())) => (0, None),
                        (None, Err(e)) => (e.code.0, Some(e.message.clone())),
                    };
                    AclCreationResult {
                        error_code: code,
                        error_message: msg,
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        };
        ResponseBody::CreateAcls(resp)
    }))
}

/// A filter from a request's fields, validated.
#[allow(clippy::too_many_arguments)]
fn filter(
    version: i16,
    resource_type: i8,
    name: Option<String>,
    pattern_type: i8,
    principal: Option<String>,
    host: Option<String>,
    operation: i8,
    permission_type: i8,
) -> Result<AclFilter, String> {
    let f = AclFilter {
        resource_type,
        name,
        pattern_type,
        principal,
        host,
        operation,
        permission_type,
    };
    authz::validate_filter(&f)?;
    if version == 0 && f.pattern_type != authz::pattern::LITERAL {
        return Err("Version 0 only supports literal resource pattern types".into());
    }
    Ok(f)
}

pub fn describe(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    version: i16,
    req: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let err = |code: ErrorCode, msg: String| DescribeAclsResponse {
        error_code: code.0,
        error_message: Some(msg),
        ..Default::default()
    };
    if !broker.authz.enabled() {
        return err(SECURITY_DISABLED, DISABLED_MESSAGE.into());
    }
    if !broker.authz_session(ctx).cluster(op::DESCRIBE) {
        return err(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.".into(),
        );
    }
    let f = match filter(
        version,
        req.resource_type_filter,
        req.resource_name_filter,
        req.pattern_type_filter,
        req.principal_filter,
        req.host_filter,
        req.operation,
        req.permission_type,
    ) {
        Ok(f) => f,
        Err(m) => return err(ErrorCode::INVALID_REQUEST, m),
    };
    let acls = broker.quorum.read(|image| image.acls().clone());
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for a in acls.values().filter(|a| f.matches(a)) {
        by_resource
            .entry((a.resource_type, a.resource_name.clone(), a.pattern_type))
            .or_default()
            .push(AclDescription {
                principal: a.principal.clone(),
                host: a.host.clone(),
                operation: a.operation,
                permission_type: a.permission_type,
                ..Default::default()
            });
    }
    DescribeAclsResponse {
        resources: by_resource
            .into_iter()
            .map(
                |((resource_type, resource_name, pattern_type), acls)| DescribeAclsResource {
                    resource_type,
                    resource_name,
                    pattern_type,
                    acls,
                    ..Default::default()
                },
            )
            .collect(),
        ..Default::default()
    }
}

pub fn delete(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    version: i16,
    req: DeleteAclsRequest,
) -> Reply {
    let n = req.filters.len();
    let all = |code: ErrorCode, msg: &str| {
        Reply::Now(ResponseBody::DeleteAcls(DeleteAclsResponse {
            filter_results: (0..n)
                .map(|_| DeleteAclsFilterResult {
                    error_code: code.0,
                    error_message: Some(msg.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }))
    };
    if !broker.authz.enabled() {
        return all(SECURITY_DISABLED, DISABLED_MESSAGE);
    }
    if !broker.authz_session(ctx).cluster(op::ALTER) {
        return all(
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        );
    }
    let acls = broker.quorum.read(|image| image.acls().clone());
    // Per filter: an error, or the bindings it matched (their ids go to `ids`).
    let mut per_filter: Vec<Result<Vec<AclEntry>, String>> = Vec::with_capacity(n);
    let mut ids = Vec::new();
    for (i, fl) in req.filters.into_iter().enumerate() {
        let f = if i >= MAX_BINDINGS {
            Err(format!("At most {MAX_BINDINGS} filters per request"))
        } else {
            filter(
                version,
                fl.resource_type_filter,
                fl.resource_name_filter,
                fl.pattern_type_filter,
                fl.principal_filter,
                fl.host_filter,
                fl.operation,
                fl.permission_type,
            )
        };
        per_filter.push(f.map(|f| {
            acls.iter()
                .filter(|(_, a)| f.matches(a))
                .map(|(id, a)| {
                    ids.push(id.0);
                    a.clone()
                })
                .collect()
        }));
    }
    let broker = broker.clone();
    Reply::Later(Box::pin(async move {
        let outcome = if ids.is_empty() {
            Ok(Answer::Done)
        } else {
            broker
                .controller_call(ControllerCall::DeleteAcls { ids })
                .await
        };
        let resp = DeleteAclsResponse {
            filter_results: per_filter
                .into_iter()
                .map(|r| match (r, &outcome) {
                    (Err(m), _) => DeleteAclsFilterResult {
                        error_code: ErrorCode::INVALID_REQUEST.0,
                        error_message: Some(m),
                        ..Default::default()
                    },
                    (Ok(_), Err(e)) => DeleteAclsFilterResult {
                        error_code: e.code.0,
                        error_message: Some(e.message.clone()),
                        ..Default::default()
                    },
                    (Ok(matched), Ok(_)) => DeleteAclsFilterResult {
                        matching_acls: matched
                            .into_iter()
                            .map(|a| DeleteAclsMatchingAcl {
                                resource_type: a.resource_type,
                                resource_name: a.resource_name,
                                pattern_type: a.pattern_type,
                                principal: a.principal,
                                host: a.host,
                                operation: a.operation,
                                permission_type: a.permission_type,
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        };
        ResponseBody::DeleteAcls(resp)
    }))
}
