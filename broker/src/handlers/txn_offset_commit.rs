//! TxnOffsetCommit: offsets committed inside a transaction (visible when it commits).

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offset_commit::committed;
use crate::broker::Broker;
use crate::group::coordinator::{Committer, OFFSETS_PARTITIONS};
use crate::group::offsets_log;
use crate::txn::{Verify, errors};

/// Answers TxnOffsetCommit.
pub async fn handle(
    broker: &Broker,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
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
    let (pid, epoch) = (req.producer_id.0, req.producer_epoch);
    // The offsets partition must be part of the transaction (AddOffsetsToTxn first).
    let offsets_partition = offsets_log::partition_for(&group, OFFSETS_PARTITIONS);
    let mut verify = broker
        .txns
        .verify_write(pid, epoch, offsets_log::TOPIC, offsets_partition);
    // Transactions v2 (v5+): the commit adds the offsets partition itself; clients send
    // no AddOffsetsToTxn.
    if version >= 5
        && broker.txns.v2_enabled()
        && verify == Verify::Refuse(errors::TRANSACTION_ABORTABLE)
        && !group.is_empty()
        && broker.groups.ensure_offsets_topic(broker).await
    {
        verify = match broker.txns.add_for_producer(
            broker,
            pid,
            epoch,
            offsets_log::TOPIC,
            offsets_partition,
        ) {
            Ok(()) => Verify::Ok,
            Err(errors::PRODUCER_FENCED) => Verify::Refuse(errors::INVALID_PRODUCER_EPOCH),
            Err(c) => Verify::Refuse(c),
        };
    }
    let codes = if group.is_empty() {
        vec![24; flat.len()] // INVALID_GROUP_ID
    } else if let Verify::Refuse(code) = verify {
        let code = match code {
            errors::TRANSACTION_ABORTABLE if version < 4 => errors::INVALID_TXN_STATE,
            c => c,
        };
        vec![code; flat.len()]
    } else {
        let who = Committer {
            member_id: req.member_id.as_str().to_string(),
            generation: req.generation_id,
        };
        broker
            .groups
            .txn_commit(broker, &group, (pid, epoch), &who, flat)
            .await
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
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.next().unwrap_or(0))
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
