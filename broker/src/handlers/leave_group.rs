//! LeaveGroup: one member (v0-2) or a batch of members (v3+).

use std::sync::Arc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use crate::broker::Broker;
use crate::group::errors;

/// Answers LeaveGroup.
pub async fn handle(
    broker: &Arc<Broker>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    if group.is_empty() {
        return LeaveGroupResponse::default().with_error_code(errors::INVALID_GROUP_ID);
    }
    if version < 3 {
        let codes = broker
            .groups
            .leave(broker, &group, &[req.member_id.as_str().to_string()])
            .await;
        return LeaveGroupResponse::default().with_error_code(codes[0]);
    }
    let ids: Vec<String> = req
        .members
        .iter()
        .map(|m| m.member_id.as_str().to_string())
        .collect();
    let codes = broker.groups.leave(broker, &group, &ids).await;
    let members = req
        .members
        .into_iter()
        .zip(codes)
        .map(|(m, c)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(c)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
