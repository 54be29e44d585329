//! The transactional producer's conversation with its transaction coordinator:
//! InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, and TxnOffsetCommit to
//! the group coordinator. Coordinator moves and CONCURRENT_TRANSACTIONS are retried until
//! the call's deadline; other errors are returned.
//!
//! Requests are capped at the versions of transactions v1 (the client adds partitions
//! itself and the epoch stays fixed through EndTxn), which every broker serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request, StrBytes};

use crate::cluster::Cluster;
use crate::consumer::{ConsumerGroupMetadata, TopicPartition};
use crate::error::ClientError;
use crate::membership::find_coordinator_of;
use crate::net::BrokerConnection;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Codes after which the coordinator is looked up again.
fn coordinator_moved(code: i16) -> bool {
    matches!(code, 14..=16)
}

/// CONCURRENT_TRANSACTIONS: the previous transaction is still completing.
const CONCURRENT_TRANSACTIONS: i16 = 51;

/// A connection to one coordinator (transaction or group), found on demand.
pub(crate) struct CoordinatorLink {
    cluster: Arc<Cluster>,
    key: String,
    key_type: i8,
    conn: Option<BrokerConnection>,
    backoff: Duration,
    timeout: Duration,
}

impl CoordinatorLink {
    pub(crate) fn new(cluster: Arc<Cluster>, key: &str, key_type: i8, timeout: Duration) -> Self {
        let backoff = cluster.config().retry_backoff;
        Self {
            cluster,
            key: key.to_string(),
            key_type,
            conn: None,
            backoff,
            timeout,
        }
    }

    /// `host:port` of the coordinator last talked to.
    pub(crate) fn addr(&self) -> Option<String> {
        self.conn.as_ref().map(|c| c.addr().to_string())
    }

    async fn conn(&mut self) -> Result<BrokerConnection, ClientError> {
        if let Some(c) = &self.conn
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let (host, port) = find_coordinator_of(&self.cluster, &self.key, self.key_type).await?;
        let c = self
            .cluster
            .connection_to(&format!("{host}:{port}"))
            .await?;
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Sends `req` (at most `max_version`) until it gets an answer whose `code_of` is not
    /// a coordinator move or CONCURRENT_TRANSACTIONS, or the deadline passes.
    pub(crate) async fn call<R>(
        &mut self,
        req: &R,
        max_version: i16,
        code_of: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response, ClientError>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let attempt = async {
                let conn = self.conn().await?;
                let version = conn
                    .version_for::<R>()
                    .map(|v| v.min(max_version))
                    .ok_or_else(|| ClientError::Unsupported(format!("API key {}", R::KEY)))?;
                conn.send_at(req, version).await
            }
            .await;
            let retry = match &attempt {
                Ok(resp) => {
                    let code = code_of(resp);
                    if coordinator_moved(code) {
                        self.conn = None;
                        true
                    } else {
                        code == CONCURRENT_TRANSACTIONS
                    }
                }
                Err(e) if e.is_retriable() => {
                    self.conn = None;
                    true
                }
                Err(_) => false,
            };
            if !retry || Instant::now() + self.backoff >= deadline {
                return attempt;
            }
            tokio::time::sleep(self.backoff).await;
        }
    }
}

fn check(code: i16, what: &str) -> Result<(), ClientError> {
    match ClientError::from_code(code, what) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// InitProducerId for a transactional id: (producer id, epoch).
pub(crate) async fn init_producer_id(
    link: &mut CoordinatorLink,
    transactional_id: &str,
    timeout_ms: i32,
) -> Result<(i64, i16), ClientError> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(sb(transactional_id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let resp = link.call(&req, 5, |r| r.error_code).await?;
    check(resp.error_code, "init_transactions")?;
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// AddPartitionsToTxn for a set of partitions.
pub(crate) async fn add_partitions(
    link: &mut CoordinatorLink,
    transactional_id: &str,
    ids: (i64, i16),
    parts: &[(String, i32)],
) -> Result<(), ClientError> {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in parts {
        match topics.iter_mut().find(|x| x.name.0.as_str() == t) {
            Some(x) => x.partitions.push(*p),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(sb(t)))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(sb(transactional_id)))
        .with_v3_and_below_producer_id(ProducerId(ids.0))
        .with_v3_and_below_producer_epoch(ids.1)
        .with_v3_and_below_topics(topics);
    let first_error = |r: &kafka_protocol::messages::AddPartitionsToTxnResponse| {
        r.results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter())
            .map(|p| p.partition_error_code)
            .find(|c| *c != 0)
            .unwrap_or(r.error_code)
    };
    let resp = link.call(&req, 3, first_error).await?;
    check(first_error(&resp), "add partitions to transaction")
}

/// AddOffsetsToTxn for a group.
pub(crate) async fn add_offsets(
    link: &mut CoordinatorLink,
    transactional_id: &str,
    ids: (i64, i16),
    group: &str,
) -> Result<(), ClientError> {
    let req = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TransactionalId(sb(transactional_id)))
        .with_producer_id(ProducerId(ids.0))
        .with_producer_epoch(ids.1)
        .with_group_id(GroupId(sb(group)));
    let resp = link.call(&req, 3, |r| r.error_code).await?;
    check(resp.error_code, "add offsets to transaction")
}

/// EndTxn.
pub(crate) async fn end_txn(
    link: &mut CoordinatorLink,
    transactional_id: &str,
    ids: (i64, i16),
    commit: bool,
) -> Result<(), ClientError> {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(sb(transactional_id)))
        .with_producer_id(ProducerId(ids.0))
        .with_producer_epoch(ids.1)
        .with_committed(commit);
    let resp = link.call(&req, 4, |r| r.error_code).await?;
    check(
        resp.error_code,
        if commit {
            "commit transaction"
        } else {
            "abort transaction"
        },
    )
}

/// TxnOffsetCommit to the group's coordinator.
pub(crate) async fn txn_offset_commit(
    link: &mut CoordinatorLink,
    transactional_id: &str,
    ids: (i64, i16),
    group: &ConsumerGroupMetadata,
    offsets: &[(TopicPartition, i64)],
) -> Result<(), ClientError> {
    let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
    for (tp, offset) in offsets {
        let p = TxnOffsetCommitRequestPartition::default()
            .with_partition_index(tp.partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(-1)
            .with_committed_metadata(Some(sb("")));
        match topics.iter_mut().find(|x| x.name.0.as_str() == tp.topic) {
            Some(x) => x.partitions.push(p),
            None => topics.push(
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(sb(&tp.topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(sb(transactional_id)))
        .with_group_id(GroupId(sb(&group.group_id)))
        .with_producer_id(ProducerId(ids.0))
        .with_producer_epoch(ids.1)
        .with_generation_id(group.generation_id)
        .with_member_id(sb(&group.member_id))
        .with_group_instance_id(group.group_instance_id.as_deref().map(sb))
        .with_topics(topics);
    let first_error = |r: &kafka_protocol::messages::TxnOffsetCommitResponse| {
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.error_code)
            .find(|c| *c != 0)
            .unwrap_or(0)
    };
    let resp = link.call(&req, 5, first_error).await?;
    check(first_error(&resp), "commit offsets in transaction")
}
