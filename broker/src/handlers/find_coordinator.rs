//! FindCoordinator: on a single node this broker coordinates every group and
//! transactional id. (librdkafka also enables some features, LZ4 among them, only when
//! FindCoordinator is advertised.)

use kafka_protocol::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::sb;
use crate::broker::Broker;

const KEY_GROUP: i8 = 0;
const KEY_TRANSACTION: i8 = 1;

fn answer(broker: &Broker, key: &StrBytes, key_type: i8) -> Coordinator {
    let base = Coordinator::default()
        .with_key(key.clone())
        .with_node_id(BrokerId(-1))
        .with_port(-1);
    if key_type != KEY_GROUP && key_type != KEY_TRANSACTION {
        return base
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(Some(sb(&format!(
                "Unsupported coordinator key type {key_type}"
            ))));
    }
    if key.is_empty() {
        let code = if key_type == KEY_GROUP {
            ResponseError::InvalidGroupId
        } else {
            ResponseError::InvalidRequest
        };
        return base
            .with_error_code(code.code())
            .with_error_message(Some(sb("The coordinator key is empty")));
    }
    match broker.config.advertised_listeners.first() {
        Some(l) => base
            .with_node_id(BrokerId(broker.config.node_id))
            .with_host(sb(&l.host))
            .with_port(l.port as i32),
        None => base.with_error_code(ResponseError::CoordinatorNotAvailable.code()),
    }
}

/// Answers FindCoordinator (one key before v4, a batch of keys from v4).
pub fn handle(
    broker: &Broker,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| answer(broker, k, req.key_type))
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let c = answer(broker, &req.key, req.key_type);
    let mut resp = FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port);
    if version >= 1 {
        resp = resp.with_error_message(c.error_message);
    }
    resp
}
