//! AddPartitionsToTxn: v0-3 from producers (one transaction), v4+ batched with
//! `verify_only` (what partition leaders send; answered the same way here).

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};

use crate::broker::Broker;
use crate::txn::errors;

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const INVALID_REQUEST: i16 = 42;

/// Error codes per topic partition for one transaction, in request order.
fn add_one(
    broker: &Broker,
    id: &str,
    pid: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let parts: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str().to_string(), *p))
        })
        .collect();
    let unknown: Vec<bool> = parts
        .iter()
        .map(|(t, p)| broker.partition(t, *p).is_none())
        .collect();
    let codes: Vec<i16> = if id.is_empty() {
        vec![INVALID_REQUEST; parts.len()]
    } else if unknown.iter().any(|u| *u) {
        unknown
            .iter()
            .map(|u| {
                if *u {
                    UNKNOWN_TOPIC_OR_PARTITION
                } else {
                    OPERATION_NOT_ATTEMPTED
                }
            })
            .collect()
    } else {
        let code = match broker
            .txns
            .add_partitions(broker, id, pid, epoch, &parts, verify_only)
        {
            Ok(()) => 0,
            Err(errors::PRODUCER_FENCED) if version < 2 => errors::INVALID_PRODUCER_EPOCH,
            Err(c) => c,
        };
        vec![code; parts.len()]
    };
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(codes.next().unwrap_or(0))
                        })
                        .collect(),
                )
        })
        .collect()
}

/// Answers AddPartitionsToTxn.
pub fn handle(
    broker: &Broker,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    if version <= 3 {
        let results = add_one(
            broker,
            req.v3_and_below_transactional_id.0.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
            false,
            version,
        );
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let results = req
        .transactions
        .iter()
        .map(|t| {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(add_one(
                    broker,
                    t.transactional_id.0.as_str(),
                    t.producer_id.0,
                    t.producer_epoch,
                    &t.topics,
                    t.verify_only,
                    version,
                ))
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}
