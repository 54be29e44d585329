//! ListTransactions: every transactional id, filtered by state names, producer ids, how
//! long the transaction has been open (v1) and an id pattern (v2).

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId};

use super::sb;
use crate::broker::{Broker, now_ms};
use crate::txn::TxnState;

/// Answers ListTransactions.
pub fn handle(broker: &Broker, req: ListTransactionsRequest) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut wanted = Vec::new();
    for f in &req.state_filters {
        match TxnState::ALL.iter().find(|s| s.name() == f.as_str()) {
            Some(s) => wanted.push(*s),
            None => unknown.push(f.clone()),
        }
    }
    let pattern = match req.transactional_id_pattern.as_ref().map(|p| p.as_str()) {
        None | Some("") => None,
        Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(r) => Some(r),
            Err(_) => return ListTransactionsResponse::default().with_error_code(42),
        },
    };
    let now = now_ms();
    let states = broker
        .txns
        .list()
        .into_iter()
        .filter(|m| m.state != TxnState::Dead)
        .filter(|m| wanted.is_empty() || wanted.contains(&m.state))
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        .filter(|m| {
            req.duration_filter < 0 || (m.start_ms >= 0 && now - m.start_ms > req.duration_filter)
        })
        .filter(|m| {
            pattern
                .as_ref()
                .is_none_or(|r| r.is_match(&m.transactional_id))
        })
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(kafka_protocol::messages::TransactionalId(sb(
                    &m.transactional_id
                )))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(sb(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}
