//! Produce: validate batches, append them, fsync when `flush.messages`/`flush.ms` ask,
//! and answer with base offsets (no answer at all for acks=0).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{sb, tn};
use crate::broker::{Broker, now_ms};
use crate::log::LogError;
use crate::log::batch::BatchHeader;
use crate::partition::{Partition, batch_error_code};
use crate::txn::{Verify, errors};

fn error(index: i32, code: i16, message: Option<String>) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code)
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
        .with_error_message(message.map(|m| sb(&m)))
}

/// A transactional batch is accepted only for a partition its producer added to the open
/// transaction (Kafka's leader-side verification, KIP-890 part 1). The refusal code.
fn verify_transactional(
    broker: &Broker,
    records: &bytes::Bytes,
    partition: &Partition,
    version: i16,
) -> Option<i16> {
    let h = BatchHeader::parse(records).ok()?;
    if !h.is_transactional() || h.producer_id < 0 || h.is_control() {
        return None;
    }
    let verdict = broker.txns.verify_write(
        h.producer_id,
        h.producer_epoch,
        &partition.topic,
        partition.index,
    );
    // Transactions v2 (Produce v12+): the write itself adds the partition to the open
    // transaction, as the leader's AddPartitionsToTxn does in Kafka.
    if version >= 12
        && broker.txns.v2_enabled()
        && verdict == Verify::Refuse(errors::TRANSACTION_ABORTABLE)
    {
        return match broker.txns.add_for_producer(
            broker,
            h.producer_id,
            h.producer_epoch,
            &partition.topic,
            partition.index,
        ) {
            Ok(()) => None,
            Err(errors::PRODUCER_FENCED) => Some(errors::INVALID_PRODUCER_EPOCH),
            Err(code) => Some(code),
        };
    }
    match verdict {
        Verify::Ok => None,
        // Produce v11 brought TRANSACTION_ABORTABLE; older clients get INVALID_TXN_STATE.
        Verify::Refuse(errors::TRANSACTION_ABORTABLE) if version <= 10 => {
            Some(errors::INVALID_TXN_STATE)
        }
        Verify::Refuse(code) => Some(code),
    }
}

/// A produce request whose batches are appended: its answer, once the partitions that
/// `flush.messages`/`flush.ms` ask to fsync are durable.
pub struct Appended {
    acks: i16,
    topics: Vec<TopicProduceResponse>,
    /// Partitions to fsync before answering, and the log end offset each must reach.
    to_flush: Vec<(Arc<Partition>, i64)>,
}

impl Appended {
    /// Whether the answer waits for an fsync.
    pub fn needs_flush(&self) -> bool {
        !self.to_flush.is_empty()
    }

    /// The answer without waiting (`None` for acks=0); only when nothing needs an fsync.
    pub fn into_response(self) -> Option<ProduceResponse> {
        debug_assert!(self.to_flush.is_empty());
        (self.acks != 0).then(|| ProduceResponse::default().with_responses(self.topics))
    }

    /// fsyncs the partitions (all at once; each shares its fsync with concurrent
    /// requests, see [`Partition::flush_to`]) and then answers. A failed fsync turns
    /// that partition's answer into KAFKA_STORAGE_ERROR.
    pub async fn flush(mut self) -> Option<ProduceResponse> {
        let flushes: Vec<_> = std::mem::take(&mut self.to_flush)
            .into_iter()
            .map(|(p, end)| tokio::spawn(async move { (p.flush_to(Some(end)).await, p) }))
            .collect();
        for f in flushes {
            let (res, p) = match f.await {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!("fsync task failed: {e}");
                    continue;
                }
            };
            if let Err(e) = res {
                tracing::error!(topic = %p.topic, partition = p.index, "fsync failed: {e}");
                for t in self.topics.iter_mut() {
                    for r in t.partition_responses.iter_mut() {
                        if r.index == p.index && r.error_code == 0 {
                            r.error_code = ResponseError::KafkaStorageError.code();
                        }
                    }
                }
            }
        }
        self.into_response()
    }
}

/// Validates and appends a Produce request's batches, in request order.
pub fn handle(broker: &Arc<Broker>, req: ProduceRequest, version: i16) -> Appended {
    let acks = req.acks;
    let by_id = version >= 13;
    let mut topics = Vec::new();
    let mut to_flush: Vec<(Arc<Partition>, i64)> = Vec::new();
    let mut appended: Vec<Arc<Partition>> = Vec::new();
    for td in req.topic_data {
        let topic = if by_id {
            broker.topic_by_id(&td.topic_id)
        } else {
            broker.topic(td.name.0.as_str())
        };
        let unknown_code = if by_id {
            ResponseError::UnknownTopicId.code()
        } else {
            ResponseError::UnknownTopicOrPartition.code()
        };
        let mut partitions = Vec::new();
        for pd in td.partition_data {
            if !matches!(acks, -1..=1) {
                partitions.push(error(
                    pd.index,
                    ResponseError::InvalidRequiredAcks.code(),
                    Some(format!("acks must be -1, 0 or 1, got {acks}")),
                ));
                continue;
            }
            let Some(partition) = topic.as_ref().and_then(|t| {
                usize::try_from(pd.index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            }) else {
                partitions.push(error(pd.index, unknown_code, None));
                continue;
            };
            let Some(records) = pd.records else {
                partitions.push(error(
                    pd.index,
                    ResponseError::InvalidRecord.code(),
                    Some("produce request has null records".into()),
                ));
                continue;
            };
            if let Err(e) = crate::log::batch::check_produce_shape(&records, version) {
                tracing::debug!(topic = %partition.topic, partition = pd.index, "rejected produce: {e}");
                partitions.push(error(pd.index, batch_error_code(&e), Some(e.to_string())));
                continue;
            }
            if let Some(code) = verify_transactional(broker, &records, partition, version) {
                partitions.push(error(
                    pd.index,
                    code,
                    Some("the partition is not part of the producer's open transaction".into()),
                ));
                continue;
            }
            match partition.append_records(&records, now_ms()) {
                Ok(info) => {
                    if !info.duplicate {
                        appended.push(partition.clone());
                    }
                    let (start, flush_end) = {
                        let log = partition.log();
                        let end = log.needs_flush(now_ms()).then(|| log.log_end_offset());
                        (log.log_start_offset(), end)
                    };
                    if let Some(end) = flush_end {
                        to_flush.push((partition.clone(), end));
                    }
                    partitions.push(
                        PartitionProduceResponse::default()
                            .with_index(pd.index)
                            .with_base_offset(info.first_offset)
                            .with_log_append_time_ms(info.log_append_time)
                            .with_log_start_offset(start),
                    );
                }
                Err(LogError::Producer(e)) => {
                    tracing::debug!(topic = %partition.topic, partition = pd.index, "refused batch: {e}");
                    partitions.push(error(pd.index, e.code(), Some(e.to_string())));
                }
                Err(LogError::Batch(e)) => {
                    tracing::debug!(topic = %partition.topic, partition = pd.index, "rejected batch: {e}");
                    partitions.push(error(pd.index, batch_error_code(&e), Some(e.to_string())));
                }
                Err(e) => {
                    tracing::error!(topic = %partition.topic, partition = pd.index, "append failed: {e}");
                    partitions.push(error(
                        pd.index,
                        ResponseError::KafkaStorageError.code(),
                        Some(e.to_string()),
                    ));
                }
            }
        }
        topics.push(
            TopicProduceResponse::default()
                .with_name(if by_id { tn("") } else { td.name })
                .with_topic_id(td.topic_id)
                .with_partition_responses(partitions),
        );
    }
    // After the whole request, so a fetch of several of these partitions wakes once.
    for p in &appended {
        p.wake_fetches();
    }
    Appended {
        acks,
        topics,
        to_flush,
    }
}
