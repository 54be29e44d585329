//! EndTxn: commit or abort; the markers are written before the answer.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::broker::Broker;
use crate::txn::errors;

/// Answers EndTxn. From v5, on a broker with transactions v2, the epoch is bumped and the
/// response carries the producer id and epoch for the next transaction.
pub fn handle(broker: &Broker, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let v2 = version >= 5 && broker.txns.v2_enabled();
    let (code, ids) = match broker.txns.end_txn(
        broker,
        req.transactional_id.0.as_str(),
        req.producer_id.0,
        req.producer_epoch,
        req.committed,
        v2,
    ) {
        Ok(ids) => (0, ids),
        Err(errors::PRODUCER_FENCED) if version < 2 => (errors::INVALID_PRODUCER_EPOCH, (-1, -1)),
        Err(c) => (c, (-1, -1)),
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(ids.0))
        .with_producer_epoch(ids.1)
}
