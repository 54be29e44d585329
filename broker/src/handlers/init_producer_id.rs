//! InitProducerId: a producer id for idempotent producers, and for transactional ones the
//! transaction coordinator's id and next epoch (fencing any older producer of the id).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::txn::errors;

/// Answers InitProducerId.
pub async fn handle(
    broker: &Broker,
    req: InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let given = (req.producer_id.0, req.producer_epoch);
    if (given.0 < 0) != (given.1 < 0) {
        return resp.with_error_code(ResponseError::InvalidRequest.code());
    }
    let expected = (given.0 >= 0).then_some(given);
    match req.transactional_id.as_ref().map(|t| t.0.as_str()) {
        None => {
            // Idempotent producer: a bumped epoch for a known id (KIP-360), else a new id.
            if let Some((pid, epoch)) = expected
                && epoch < i16::MAX - 1
            {
                return resp
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch + 1);
            }
            match broker.next_producer_id() {
                Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
                Err(e) => {
                    tracing::error!("could not reserve producer ids: {e}");
                    resp.with_error_code(ResponseError::KafkaStorageError.code())
                }
            }
        }
        Some("") => resp.with_error_code(ResponseError::InvalidRequest.code()),
        Some(id) => match broker
            .txns
            .init_producer_id(broker, id, req.transaction_timeout_ms, expected)
            .await
        {
            Ok((pid, epoch)) => resp
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch),
            Err(code) => {
                // Before v4 clients know no PRODUCER_FENCED.
                let code = if code == errors::PRODUCER_FENCED && version < 4 {
                    errors::INVALID_PRODUCER_EPOCH
                } else {
                    code
                };
                resp.with_error_code(code)
            }
        },
    }
}
