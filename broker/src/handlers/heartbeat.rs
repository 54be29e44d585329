//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::broker::Broker;
use crate::group::errors;

/// Answers Heartbeat.
pub fn handle(broker: &Broker, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.as_str();
    let code = if group.is_empty() {
        errors::INVALID_GROUP_ID
    } else {
        broker
            .groups
            .heartbeat(group, req.member_id.as_str(), req.generation_id)
    };
    HeartbeatResponse::default().with_error_code(code)
}
