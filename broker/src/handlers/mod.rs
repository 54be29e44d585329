//! One file per Kafka API. Each handler is a function from the broker and a typed
//! request to a typed response; `server` does the framing.

pub mod acls;
pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod partition_leadership;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;

/// The APIs Runnel implements and the versions it advertises: Apache Kafka 4.x's ranges
/// (see docs/reference/kafka-4-api-versions.txt). Produce v0-2 are advertised, as Kafka 4
/// does for old librdkafka feature detection, and refused when used.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
];

/// Who sent a request.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The header's client id.
    pub client_id: String,
    /// The peer, as Kafka prints it (`/127.0.0.1`).
    pub client_host: String,
}

/// The advertised range for `key`, if implemented.
pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// Whether a request at `version` can be decoded and served (Produce v0-2 cannot).
pub fn servable(key: ApiKey, version: i16) -> bool {
    match supported_range(key) {
        Some((lo, hi)) => {
            version >= lo && version <= hi && !(key == ApiKey::Produce && version < 3)
        }
        None => false,
    }
}

/// What a handler answers.
pub enum Reply {
    /// No response at all (Produce with acks=0).
    Nothing,
    /// A response encoded by the protocol crate.
    Response(ResponseKind),
    /// A Fetch response whose record data stays in the segment files.
    Fetch(fetch::FetchReply),
    /// Work done, answer pending (a Produce waiting for its fsync). The connection reads
    /// and handles its next requests meanwhile and answers in request order.
    /// The future yields the response (`None`: no answer, acks=0).
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Option<ResponseKind>> + Send>>),
}

/// Routes a decoded request to its handler.
pub async fn dispatch(
    broker: &Arc<Broker>,
    request: RequestKind,
    version: i16,
    ctx: &RequestContext,
) -> Reply {
    Reply::Response(match request {
        RequestKind::ApiVersions(r) => {
            ResponseKind::ApiVersions(api_versions::handle(broker, &r, version))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(broker, r, version).await)
        }
        RequestKind::Produce(r) => {
            let appended = produce::handle(broker, r, version);
            if appended.needs_flush() {
                return Reply::Later(Box::pin(async move {
                    appended.flush().await.map(ResponseKind::Produce)
                }));
            }
            match appended.into_response() {
                Some(resp) => ResponseKind::Produce(resp),
                None => return Reply::Nothing,
            }
        }
        RequestKind::Fetch(r) => return Reply::Fetch(fetch::handle(broker, r, version).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(broker, r, version))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(broker, r, version).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(broker, r, version).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(broker, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(broker, r, version))
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            incremental_alter_configs::handle(broker, r).await,
        ),
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(broker, r))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(broker, r))
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(broker, r, version))
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(
            join_group::handle(broker, r, version, &ctx.client_id, &ctx.client_host).await,
        ),
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(sync_group::handle(broker, r, version).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(broker, r)),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(leave_group::handle(broker, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(broker, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(broker, r, version))
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(list_groups::handle(broker, r, version))
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(broker, r, version))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(broker, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(broker, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(broker, r, version).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(add_partitions_to_txn::handle(broker, r, version))
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(broker, r, version).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(end_txn::handle(broker, r, version)),
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(broker, r, version).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(describe_transactions::handle(broker, r))
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(list_transactions::handle(broker, r))
        }
        RequestKind::DescribeAcls(r) => ResponseKind::DescribeAcls(acls::describe(r)),
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(acls::create(r)),
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(acls::delete(r)),
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(partition_leadership::elect_leaders(broker, r))
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            partition_leadership::alter_reassignments(broker, r),
        ),
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(partition_leadership::list_reassignments(r))
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(broker, r))
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(describe_producers::handle(broker, r))
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(write_txn_markers::handle(broker, r))
        }
        other => {
            // `servable` keeps unimplemented APIs from reaching here.
            tracing::warn!("no handler for {:?}", std::mem::discriminant(&other));
            return Reply::Nothing;
        }
    })
}

/// `&str` → protocol string.
pub fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// `&str` → topic name.
pub fn tn(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// Kafka's ACL operation codes, as bit positions in `*_authorized_operations`.
pub mod acl_ops {
    /// READ.
    pub const READ: i32 = 3;
    /// WRITE.
    pub const WRITE: i32 = 4;
    /// CREATE.
    pub const CREATE: i32 = 5;
    /// DELETE.
    pub const DELETE: i32 = 6;
    /// ALTER.
    pub const ALTER: i32 = 7;
    /// DESCRIBE.
    pub const DESCRIBE: i32 = 8;
    /// CLUSTER_ACTION.
    pub const CLUSTER_ACTION: i32 = 9;
    /// DESCRIBE_CONFIGS.
    pub const DESCRIBE_CONFIGS: i32 = 10;
    /// ALTER_CONFIGS.
    pub const ALTER_CONFIGS: i32 = 11;
    /// IDEMPOTENT_WRITE.
    pub const IDEMPOTENT_WRITE: i32 = 12;

    /// Bit mask of the given operations.
    pub fn mask(ops: &[i32]) -> i32 {
        ops.iter().fold(0, |m, op| m | (1 << op))
    }

    /// Everything an unauthenticated user may do to a topic (no ACLs yet).
    pub fn topic_all() -> i32 {
        mask(&[
            READ,
            WRITE,
            CREATE,
            DELETE,
            ALTER,
            DESCRIBE,
            DESCRIBE_CONFIGS,
            ALTER_CONFIGS,
        ])
    }

    /// Everything on the cluster resource.
    pub fn cluster_all() -> i32 {
        mask(&[
            CREATE,
            ALTER,
            DESCRIBE,
            CLUSTER_ACTION,
            DESCRIBE_CONFIGS,
            ALTER_CONFIGS,
            IDEMPOTENT_WRITE,
        ])
    }

    /// Sentinel for "not requested".
    pub const NOT_REQUESTED: i32 = i32::MIN;
}
