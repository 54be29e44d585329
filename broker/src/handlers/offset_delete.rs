//! OffsetDelete: removes committed offsets of partitions the group no longer consumes.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::broker::Broker;

/// Answers OffsetDelete.
pub async fn handle(broker: &Arc<Broker>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str().to_string(), p.partition_index))
        })
        .collect();
    match broker
        .groups
        .delete_offsets(broker, req.group_id.0.as_str(), &parts)
        .await
    {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code),
        Ok(codes) => {
            let mut codes = codes.into_iter();
            let topics = req
                .topics
                .into_iter()
                .map(|t| {
                    let ps = t
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(codes.next().unwrap_or(0))
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(ps)
                })
                .collect();
            OffsetDeleteResponse::default().with_topics(topics)
        }
    }
}
