//! SyncGroup: the leader's assignment is handed to every member.

use std::sync::Arc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::sb;
use crate::broker::Broker;
use crate::group::errors;

/// Answers SyncGroup.
pub async fn handle(
    broker: &Arc<Broker>,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    if group.is_empty() {
        return SyncGroupResponse::default().with_error_code(errors::INVALID_GROUP_ID);
    }
    let assignments = req
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment.to_vec()))
        .collect();
    let (code, assignment) = broker
        .groups
        .sync(
            broker,
            &group,
            req.member_id.as_str(),
            req.generation_id,
            assignments,
        )
        .await;
    let mut resp = SyncGroupResponse::default()
        .with_error_code(code)
        .with_assignment(assignment.into());
    if version >= 5 {
        let g = broker.groups.describe(&group);
        let (pt, p) = g.as_ref().map(|g| g.protocol()).unwrap_or((None, None));
        resp = resp
            .with_protocol_type(pt.map(sb))
            .with_protocol_name(p.map(sb));
    }
    resp
}
