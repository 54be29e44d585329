//! WriteTxnMarkers: markers written on request, which is how `kafka-transactions.sh
//! abort` closes a hanging transaction on a partition.

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use crate::broker::{Broker, now_ms};
use crate::group::offsets_log;
use crate::log::LogError;

/// Answers WriteTxnMarkers.
pub fn handle(broker: &Broker, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let markers = req
        .markers
        .into_iter()
        .map(|m| {
            let topics = m
                .topics
                .into_iter()
                .map(|t| {
                    let results = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            let code = match broker.partition(t.name.0.as_str(), *p) {
                                None => 3,
                                Some(part) => {
                                    let res = part.log().append_marker(
                                        m.producer_id.0,
                                        m.producer_epoch,
                                        m.transaction_result,
                                        m.coordinator_epoch,
                                        now_ms(),
                                    );
                                    match res {
                                        Ok(_) => {
                                            part.wake_fetches();
                                            if t.name.0.as_str() == offsets_log::TOPIC {
                                                broker.groups.complete_txn(
                                                    m.producer_id.0,
                                                    m.transaction_result,
                                                );
                                            }
                                            0
                                        }
                                        Err(LogError::Producer(e)) => e.code(),
                                        Err(_) => 56, // KAFKA_STORAGE_ERROR
                                    }
                                }
                            };
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(*p)
                                .with_error_code(code)
                        })
                        .collect();
                    WritableTxnMarkerTopicResult::default()
                        .with_name(t.name)
                        .with_partitions(results)
                })
                .collect();
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}
