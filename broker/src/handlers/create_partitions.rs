//! CreatePartitions.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::sb;
use crate::broker::Broker;

/// Answers CreatePartitions.
pub async fn handle(
    broker: &Arc<Broker>,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let node = broker.config.node_id;
        let res = match &t.assignments {
            Some(a)
                if a.iter()
                    .flat_map(|x| x.broker_ids.iter())
                    .any(|b| b.0 != node) =>
            {
                Err((
                    ResponseError::InvalidReplicaAssignment.code(),
                    "Unknown broker in the replica assignment".to_string(),
                ))
            }
            _ => broker
                .create_partitions(&name, t.count, req.validate_only)
                .await
                .map_err(|e| (e.code(), e.to_string())),
        };
        results.push(match res {
            Ok(()) => CreatePartitionsTopicResult::default().with_name(t.name),
            Err((code, msg)) => CreatePartitionsTopicResult::default()
                .with_name(t.name)
                .with_error_code(code)
                .with_error_message(Some(sb(&msg))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
