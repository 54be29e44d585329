//! DeleteRecords: moves a partition's log start offset forward.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::broker::Broker;
use crate::log::LogError;

/// Answers DeleteRecords; offset -1 means the high watermark.
pub fn handle(broker: &Broker, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics =
        req.topics
            .into_iter()
            .map(|t| {
                let topic = broker.topic(t.name.0.as_str());
                let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let base = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let Some(partition) = topic.as_ref().and_then(|tp| {
                        usize::try_from(p.partition_index).ok().and_then(|i| tp.partitions.get(i))
                    }) else {
                        return base.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    let mut log = partition.log();
                    let target = if p.offset == -1 { log.log_end_offset() } else { p.offset };
                    let res = log.delete_records_before(target);
                    drop(log);
                    // What a waiting fetch reads may have changed (its offset may now be
                    // below the log start).
                    partition.wake_fetches();
                    match res {
                        Ok(low) => base.with_low_watermark(low),
                        Err(LogError::OffsetOutOfRange { .. }) => {
                            base.with_error_code(ResponseError::OffsetOutOfRange.code())
                        }
                        Err(e) => {
                            tracing::error!(topic = %partition.topic, "delete records failed: {e}");
                            base.with_error_code(ResponseError::KafkaStorageError.code())
                        }
                    }
                })
                .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
