//! OffsetCommit: group members (generation checked) and simple consumers (generation -1).

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::protocol::StrBytes;

use crate::broker::{Broker, now_ms};
use crate::group::coordinator::Committer;
use crate::group::errors;
use crate::group::offsets_log::CommittedOffset;

/// An offset as committed now.
pub fn committed(offset: i64, leader_epoch: i32, metadata: Option<&StrBytes>) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch,
        metadata: metadata.map(|m| m.as_str().to_string()).unwrap_or_default(),
        commit_timestamp: now_ms(),
    }
}

/// Answers OffsetCommit.
pub async fn handle(broker: &Arc<Broker>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.0.as_str().to_string();
    let mut flat = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            flat.push((
                (t.name.0.as_str().to_string(), p.partition_index),
                committed(
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref(),
                ),
            ));
        }
    }
    let codes = if group.is_empty() {
        vec![errors::INVALID_GROUP_ID; flat.len()]
    } else {
        let who = Committer {
            member_id: req.member_id.as_str().to_string(),
            generation: req.generation_id_or_member_epoch,
        };
        broker.groups.commit(broker, &group, &who, flat).await
    };
    let mut codes = codes.into_iter();
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
