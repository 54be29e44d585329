//! DescribeTransactions: state, producer, timeout and partitions of transactional ids.

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId,
};

use super::{sb, tn};
use crate::broker::Broker;
use crate::txn::{TxnState, errors};

/// Answers DescribeTransactions.
pub fn handle(broker: &Broker, req: DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let states = req
        .transactional_ids
        .into_iter()
        .map(|id| {
            let base = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_transaction_state(sb(""))
                .with_transaction_start_time_ms(-1)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
            if id.0.is_empty() {
                return base.with_error_code(42); // INVALID_REQUEST
            }
            match broker.txns.describe(id.0.as_str()) {
                Some(m) if m.state != TxnState::Dead => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (t, p) in &m.partitions {
                        match topics.last_mut() {
                            Some(td) if td.topic.0.as_str() == t => td.partitions.push(*p),
                            _ => topics.push(
                                TopicData::default()
                                    .with_topic(tn(t))
                                    .with_partitions(vec![*p]),
                            ),
                        }
                    }
                    base.with_transaction_state(sb(m.state.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.epoch)
                        .with_topics(topics)
                }
                _ => base.with_error_code(errors::TRANSACTIONAL_ID_NOT_FOUND),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
