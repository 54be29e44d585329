//! AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use crate::broker::Broker;
use crate::group::coordinator::OFFSETS_PARTITIONS;
use crate::group::offsets_log;
use crate::txn::errors;

/// Answers AddOffsetsToTxn.
pub async fn handle(
    broker: &Broker,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let group = req.group_id.0.as_str();
    if group.is_empty() {
        return AddOffsetsToTxnResponse::default().with_error_code(24); // INVALID_GROUP_ID
    }
    if !broker.groups.ensure_offsets_topic(broker).await {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(errors::COORDINATOR_NOT_AVAILABLE);
    }
    let partition = offsets_log::partition_for(group, OFFSETS_PARTITIONS);
    let code = match broker.txns.add_partitions(
        broker,
        req.transactional_id.0.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        &[(offsets_log::TOPIC.to_string(), partition)],
        false,
    ) {
        Ok(()) => 0,
        Err(errors::PRODUCER_FENCED) if version < 2 => errors::INVALID_PRODUCER_EPOCH,
        Err(c) => c,
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}
