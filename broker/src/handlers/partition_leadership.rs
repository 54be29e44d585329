//! ElectLeaders, AlterPartitionReassignments and ListPartitionReassignments on a single
//! node: the broker leads every partition it hosts and is each one's only replica, so a
//! leader election is never needed and the only assignment a partition can have is
//! `[node.id]`. The answers are Apache Kafka's for a partition already in that state,
//! so `kafka-leader-election` and `kafka-reassign-partitions` work as against Kafka.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};

use super::sb;
use crate::broker::Broker;

/// Whether `broker` hosts `topic`'s partition `p`; otherwise the error to give.
fn hosted(broker: &Broker, topic: &str, p: i32) -> Result<(), (i16, String)> {
    let Some(t) = broker.topic(topic) else {
        return Err((
            ResponseError::UnknownTopicOrPartition.code(),
            format!("No such topic as {topic}"),
        ));
    };
    if p < 0 || p as usize >= t.partitions.len() {
        return Err((
            ResponseError::UnknownTopicOrPartition.code(),
            format!("No such partition {topic}-{p}"),
        ));
    }
    Ok(())
}

/// Answers ElectLeaders (preferred or unclean): ELECTION_NOT_NEEDED for every partition
/// named, as the leader already is the preferred replica; nothing for "all partitions"
/// (null), as Kafka lists only the partitions an election was tried for.
pub fn elect_leaders(broker: &Broker, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let valid_type = matches!(req.election_type, 0 | 1);
    let results = req
        .topic_partitions
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let partition_result = t
                .partitions
                .iter()
                .map(|p| {
                    let (code, msg) = match hosted(broker, t.topic.0.as_str(), *p) {
                        Err(e) => e,
                        Ok(()) if !valid_type => (
                            ResponseError::InvalidRequest.code(),
                            format!("Unknown election type {}", req.election_type),
                        ),
                        Ok(()) => (
                            ResponseError::ElectionNotNeeded.code(),
                            "Leader election not needed for topic partition.".to_string(),
                        ),
                    };
                    PartitionResult::default()
                        .with_partition_id(*p)
                        .with_error_code(code)
                        .with_error_message(Some(sb(&msg)))
                })
                .collect();
            ReplicaElectionResult::default()
                .with_topic(t.topic)
                .with_partition_result(partition_result)
        })
        .collect();
    ElectLeadersResponse::default().with_replica_election_results(results)
}

/// Answers AlterPartitionReassignments: a target of `[node.id]` is the assignment the
/// partition has (done at once); a cancel finds no reassignment in progress; any other
/// target names a broker that does not exist.
pub fn alter_reassignments(
    broker: &Broker,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let node = broker.config.node_id;
    let responses = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index);
                    let err = |code: i16, msg: String| {
                        r.clone()
                            .with_error_code(code)
                            .with_error_message(Some(sb(&msg)))
                    };
                    if let Err((code, msg)) = hosted(broker, t.name.0.as_str(), p.partition_index)
                    {
                        return err(code, msg);
                    }
                    match p.replicas.as_deref() {
                        None => err(
                            ResponseError::NoReassignmentInProgress.code(),
                            "No partition reassignment is in progress.".into(),
                        ),
                        Some([]) => err(
                            ResponseError::InvalidReplicaAssignment.code(),
                            "The manual partition assignment includes an empty replica list."
                                .into(),
                        ),
                        Some([one]) if one.0 == node => r.with_error_message(None),
                        Some(rs) if rs.len() != 1 && !req.allow_replication_factor_change => err(
                            ResponseError::InvalidReplicationFactor.code(),
                            format!(
                                "The replication factor is changed from 1 to {}",
                                rs.len()
                            ),
                        ),
                        Some(rs) => err(
                            ResponseError::InvalidReplicaAssignment.code(),
                            match rs.iter().find(|b| b.0 != node) {
                                Some(b) => format!(
                                    "The manual partition assignment includes broker {}, but no such broker is registered.",
                                    b.0
                                ),
                                None => "The manual partition assignment includes duplicate replicas."
                                    .into(),
                            },
                        ),
                    }
                })
                .collect();
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(req.allow_replication_factor_change)
        .with_responses(responses)
}

/// Answers ListPartitionReassignments: none is ever in progress.
pub fn list_reassignments(
    _req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    ListPartitionReassignmentsResponse::default()
}
