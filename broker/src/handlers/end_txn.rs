//! EndTxn: commit or abort; the markers are written before the answer.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::broker::Broker;
use crate::txn::errors;

/// Answers EndTxn.
pub fn handle(broker: &Broker, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let code = match broker.txns.end_txn(
        broker,
        req.transactional_id.0.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        req.committed,
    ) {
        Ok(()) => 0,
        Err(errors::PRODUCER_FENCED) if version < 2 => errors::INVALID_PRODUCER_EPOCH,
        Err(c) => c,
    };
    // Transactions v1: the epoch does not change at EndTxn, so v5's fields stay -1.
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
