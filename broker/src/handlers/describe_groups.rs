//! DescribeGroups: state, protocol and members with their metadata and assignments.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{acl_ops, sb};
use crate::broker::Broker;

/// Answers DescribeGroups.
pub fn handle(broker: &Broker, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|gid| {
            let ops = if req.include_authorized_operations {
                acl_ops::mask(&[acl_ops::READ, acl_ops::DELETE, acl_ops::DESCRIBE])
            } else {
                acl_ops::NOT_REQUESTED
            };
            let base = DescribedGroup::default()
                .with_group_id(gid.clone())
                .with_authorized_operations(ops);
            match broker.groups.describe(gid.0.as_str()) {
                None => {
                    let b = base.with_group_state(sb("Dead"));
                    // v6 reports a missing group as an error; older versions as Dead.
                    if version >= 6 {
                        b.with_error_code(69).with_error_message(Some(sb(&format!(
                            "Group {} not found.",
                            gid.0.as_str()
                        ))))
                    } else {
                        b
                    }
                }
                Some(g) => {
                    let (pt, p) = g.protocol();
                    base.with_group_state(sb(g.state().as_str()))
                        .with_protocol_type(sb(pt.unwrap_or("")))
                        .with_protocol_data(sb(p.unwrap_or("")))
                        .with_members(
                            g.describe_members()
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_id(sb(&m.member_id))
                                        .with_group_instance_id(if version >= 4 {
                                            m.instance_id.map(|i| sb(&i))
                                        } else {
                                            None
                                        })
                                        .with_client_id(sb(&m.client_id))
                                        .with_client_host(sb(&m.client_host))
                                        .with_member_metadata(m.metadata.into())
                                        .with_member_assignment(m.assignment.into())
                                })
                                .collect(),
                        )
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
