//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4),
//! earliest pending upload (-5), or the first offset at/after a timestamp.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::broker::Broker;

/// Latest offset.
pub const LATEST: i64 = -1;
/// Earliest offset.
pub const EARLIEST: i64 = -2;
/// Record with the largest timestamp (KIP-734).
pub const MAX_TIMESTAMP: i64 = -3;
/// Earliest local offset (tiered storage; the log start here).
pub const EARLIEST_LOCAL: i64 = -4;
/// Earliest pending upload (tiered storage; the log start here).
pub const EARLIEST_PENDING_UPLOAD: i64 = -5;

/// Answers ListOffsets.
pub fn handle(broker: &Broker, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let read_committed = req.isolation_level == 1;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = broker.topic(t.name.0.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let Some(partition) = topic.as_ref().and_then(|tp| {
                        usize::try_from(p.partition_index)
                            .ok()
                            .and_then(|i| tp.partitions.get(i))
                    }) else {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let log = partition.log();
                    // read_committed sees up to the last stable offset.
                    let bound = if read_committed {
                        log.last_stable_offset()
                    } else {
                        log.log_end_offset()
                    };
                    let found = match p.timestamp {
                        LATEST => Ok(Some((bound, -1))),
                        EARLIEST | EARLIEST_LOCAL | EARLIEST_PENDING_UPLOAD => {
                            Ok(Some((log.log_start_offset(), -1)))
                        }
                        MAX_TIMESTAMP => log.max_timestamp_record(),
                        ts if ts >= 0 => log
                            .offset_for_timestamp(ts)
                            .map(|f| f.filter(|(o, _)| *o < bound)),
                        other => {
                            return base
                                .with_error_code(ResponseError::InvalidRequest.code())
                                .with_timestamp(other);
                        }
                    };
                    match found {
                        // leader_epoch exists from v4 on; the crate refuses it below.
                        Ok(Some((offset, ts))) => base
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                        Ok(None) => base.with_offset(-1).with_timestamp(-1),
                        Err(e) => {
                            tracing::error!(topic = %partition.topic, "list offsets failed: {e}");
                            base.with_error_code(ResponseError::KafkaStorageError.code())
                        }
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
