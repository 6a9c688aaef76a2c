//! DescribeGroups, ListGroups and DeleteGroups.

use std::sync::Arc;

use skein_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use skein_protocol::messages::delete_groups_response::{
    DeletableGroupResult, DeleteGroupsResponse,
};
use skein_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use skein_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use skein_protocol::messages::list_groups_request::ListGroupsRequest;
use skein_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use skein_protocol::ResponseBody;

use super::Reply;
use crate::broker::Broker;

pub fn describe(broker: &Arc<Broker>, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            if let Some(code) = broker.coordinator_error(&id) {
                return DescribedGroup {
                    error_code: code.0,
                    group_id: id,
                    authorized_operations: i32::MIN,
                    ..Default::default()
                };
            }
            let d = broker.groups().read(|c| c.describe_group(&id));
            DescribedGroup {
                error_code: d.error.0,
                group_id: d.group_id,
                group_state: d.state,
                protocol_type: d.protocol_type,
                protocol_data: d.protocol_name,
                members: d
                    .members
                    .into_iter()
                    .map(|m| DescribedGroupMember {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        member_metadata: m.metadata,
                        member_assignment: m.assignment,
                        ..Default::default()
                    })
                    .collect(),
                authorized_operations: i32::MIN,
                ..Default::default()
            }
        })
        .collect();
    DescribeGroupsResponse {
        groups,
        ..Default::default()
    }
}

pub fn list(broker: &Arc<Broker>, req: ListGroupsRequest) -> ListGroupsResponse {
    let listings = broker
        .groups()
        .read(|c| c.list_groups(&req.states_filter, &req.types_filter));
    ListGroupsResponse {
        groups: listings
            .into_iter()
            .map(|g| ListedGroup {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                group_state: g.state,
                group_type: g.group_type,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

pub fn delete(broker: &Arc<Broker>, req: DeleteGroupsRequest) -> Reply {
    // Groups another broker coordinates are answered NOT_COORDINATOR (the client asks that
    // broker); the rest are deleted here.
    let (ids, elsewhere): (Vec<String>, Vec<String>) = req
        .groups_names
        .into_iter()
        .partition(|g| broker.coordinator_error(g).is_none());
    let elsewhere: Vec<(String, skein_group::ErrorCode)> = elsewhere
        .into_iter()
        .map(|g| {
            let code = broker
                .coordinator_error(&g)
                .unwrap_or(crate::error::ErrorCode::NOT_COORDINATOR);
            (g, skein_group::ErrorCode(code.0))
        })
        .collect();
    let (results, persisted) = broker.group_op(|c, now, _| {
        if ids.is_empty() {
            return (Vec::new(), Vec::new());
        }
        c.delete_groups(now, &ids)
    });
    Reply::Later(Box::pin(async move {
        persisted.await;
        ResponseBody::DeleteGroups(DeleteGroupsResponse {
            results: results
                .into_iter()
                .chain(elsewhere)
                .map(|(group_id, e)| DeletableGroupResult {
                    group_id,
                    error_code: e.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }))
}
