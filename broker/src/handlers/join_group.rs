//! JoinGroup: held until the group's rebalance lets the member through.

use std::sync::Arc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::sb;
use crate::broker::Broker;
use crate::group::{Join, errors};

/// Answers JoinGroup.
pub async fn handle(
    broker: &Arc<Broker>,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    host: &str,
) -> JoinGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let fail = |code: i16| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone())
    };
    if group.is_empty() {
        return fail(errors::INVALID_GROUP_ID);
    }
    let join = Join {
        request_id: 0,
        member_id: req.member_id.as_str().to_string(),
        instance_id: req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_string()),
        client_id: client_id.to_string(),
        client_host: host.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.to_vec()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let r = broker.groups.join(broker, &group, join).await;
    let mut resp = JoinGroupResponse::default()
        .with_error_code(r.error)
        .with_generation_id(r.generation)
        .with_protocol_name(r.protocol.map(|p| sb(&p)))
        .with_leader(sb(&r.leader))
        .with_member_id(sb(&r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, inst, md)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(sb(&id))
                        .with_group_instance_id(if version >= 5 {
                            inst.map(|i| sb(&i))
                        } else {
                            None
                        })
                        .with_metadata(md.into())
                })
                .collect(),
        );
    if version < 7 && resp.protocol_name.is_none() {
        // Before v7 the protocol name is not nullable.
        resp.protocol_name = Some(StrBytes::default());
    }
    if version >= 7 {
        resp = resp.with_protocol_type(r.protocol_type.map(|p| sb(&p)));
    }
    resp
}
