//! InitProducerId for idempotent producers. Transactional ids come with the
//! transactions work; until then they are refused with a clear error.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;

/// Answers InitProducerId.
pub fn handle(broker: &Broker, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        tracing::info!(
            "refusing a transactional InitProducerId: transactions are not supported yet"
        );
        return resp.with_error_code(ResponseError::UnsupportedVersion.code());
    }
    match broker.next_producer_id() {
        Ok(id) => resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!("could not reserve producer ids: {e}");
            resp.with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}
