//! Admin calls about transactions: ListTransactions, DescribeTransactions (to each
//! transactional id's coordinator) and DescribeProducers (to partition leaders).

use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, ListTransactionsRequest, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::Admin;
use crate::error::ClientError;
use crate::txn::CoordinatorLink;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A line of ListTransactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionListing {
    /// Transactional id.
    pub transactional_id: String,
    /// Coordinator broker id.
    pub coordinator: i32,
    /// Producer id.
    pub producer_id: i64,
    /// State name (Empty, Ongoing, PrepareCommit, ...).
    pub state: String,
}

/// DescribeTransactions for one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDescription {
    /// Transactional id.
    pub transactional_id: String,
    /// Coordinator broker id.
    pub coordinator: i32,
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// State name.
    pub state: String,
    /// `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// When the open transaction started (-1: none).
    pub start_time_ms: i64,
    /// Partitions in the open transaction.
    pub partitions: Vec<(String, i32)>,
}

/// One active producer of a partition (DescribeProducers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerDescription {
    /// Producer id.
    pub producer_id: i64,
    /// Epoch.
    pub producer_epoch: i32,
    /// Coordinator epoch of its last marker.
    pub coordinator_epoch: i32,
    /// Last sequence written.
    pub last_sequence: i32,
    /// Last write's timestamp.
    pub last_timestamp: i64,
    /// First offset of its open transaction on the partition (-1: none).
    pub current_txn_start_offset: i64,
}

impl Admin {
    /// Every transactional id every broker coordinates, optionally only those in
    /// `states` (by name) or open for longer than `min_duration_ms`.
    pub async fn list_transactions(
        &self,
        states: &[String],
        min_duration_ms: Option<i64>,
    ) -> Result<Vec<TransactionListing>, ClientError> {
        let mut out = Vec::new();
        for b in self.cluster().brokers().await {
            let conn = self.cluster().connection(b.id).await?;
            let req = ListTransactionsRequest::default()
                .with_state_filters(states.iter().map(|s| sb(s)).collect())
                .with_duration_filter(min_duration_ms.unwrap_or(-1));
            let resp = conn.send(&req).await?;
            if let Some(e) = ClientError::from_code(resp.error_code, "list transactions") {
                return Err(e);
            }
            out.extend(
                resp.transaction_states
                    .into_iter()
                    .map(|t| TransactionListing {
                        transactional_id: t.transactional_id.0.as_str().to_string(),
                        coordinator: b.id,
                        producer_id: t.producer_id.0,
                        state: t.transaction_state.as_str().to_string(),
                    }),
            );
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        Ok(out)
    }

    /// The state of one transactional id, from its coordinator.
    pub async fn describe_transaction(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionDescription, ClientError> {
        let mut link = CoordinatorLink::new(
            self.cluster().clone(),
            transactional_id,
            1,
            self.cluster().config().request_timeout,
        );
        let req = DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(sb(transactional_id))]);
        let resp = link
            .call(&req, 0, |r| {
                r.transaction_states.first().map_or(0, |t| t.error_code)
            })
            .await?;
        let t = resp
            .transaction_states
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeTransactions".into()))?;
        if let Some(e) = ClientError::from_code(
            t.error_code,
            format!("describe transaction {transactional_id}"),
        ) {
            return Err(e);
        }
        let addr = link.addr().unwrap_or_default();
        let coordinator = self
            .cluster()
            .brokers()
            .await
            .iter()
            .find(|b| b.addr == addr)
            .map_or(-1, |b| b.id);
        Ok(TransactionDescription {
            transactional_id: t.transactional_id.0.as_str().to_string(),
            coordinator,
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            state: t.transaction_state.as_str().to_string(),
            timeout_ms: t.transaction_timeout_ms,
            start_time_ms: t.transaction_start_time_ms,
            partitions: t
                .topics
                .iter()
                .flat_map(|td| {
                    td.partitions
                        .iter()
                        .map(|p| (td.topic.0.as_str().to_string(), *p))
                })
                .collect(),
        })
    }

    /// The active producers of a partition, from its leader.
    pub async fn describe_producers(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<ProducerDescription>, ClientError> {
        let conn = self.cluster().leader_connection(topic, partition).await?;
        let req = DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(TopicName(sb(topic)))
                .with_partition_indexes(vec![partition]),
        ]);
        let resp = conn.send(&req).await?;
        let p = resp
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeProducers".into()))?;
        if let Some(e) = ClientError::from_code(
            p.error_code,
            p.error_message
                .map(|m| m.as_str().to_string())
                .unwrap_or_else(|| format!("describe producers of {topic}-{partition}")),
        ) {
            return Err(e);
        }
        Ok(p.active_producers
            .into_iter()
            .map(|s| ProducerDescription {
                producer_id: s.producer_id.0,
                producer_epoch: s.producer_epoch,
                coordinator_epoch: s.coordinator_epoch,
                last_sequence: s.last_sequence,
                last_timestamp: s.last_timestamp,
                current_txn_start_offset: s.current_txn_start_offset,
            })
            .collect())
    }
}
