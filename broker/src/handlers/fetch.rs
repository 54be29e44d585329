//! Fetch: read file regions from partition logs, long-polling until `min_bytes` arrive
//! or `max_wait_ms` passes. Sessions (KIP-227) are not kept: every response carries
//! session id 0, which tells clients to send full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::log::ReadSlice;
use crate::partition::Partition;
use crate::topics::Topic;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use tokio::sync::Notify;

use super::tn;
use crate::broker::Broker;
use crate::log::LogError;

fn partition_error(index: i32, code: i16) -> PartitionData {
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_aborted_transactions(None)
        .with_records(Some(Bytes::new()))
}

/// A Fetch answer: the response with empty records where `slices` (one per partition, in
/// order) names the file region holding the data.
#[derive(Debug)]
pub struct FetchReply {
    /// The response; partitions with a slice carry empty records.
    pub response: FetchResponse,
    /// The file region of each partition's records, if any.
    pub slices: Vec<Option<ReadSlice>>,
}

impl FetchReply {
    /// Reads every slice into the response (for transports that cannot send files).
    pub fn into_inline(mut self) -> std::io::Result<FetchResponse> {
        let mut it = self.slices.into_iter();
        for t in self.response.responses.iter_mut() {
            for p in t.partitions.iter_mut() {
                if let Some(Some(s)) = it.next() {
                    p.records = Some(s.read()?);
                }
            }
        }
        Ok(self.response)
    }
}

/// The topic a fetch names, by id (v13+) or by name.
fn requested_topic(broker: &Broker, ft: &FetchTopic, by_id: bool) -> Option<Arc<Topic>> {
    if by_id {
        broker.topic_by_id(&ft.topic_id)
    } else {
        broker.topic(ft.topic.0.as_str())
    }
}

/// The partition a fetch names, if the topic has it.
fn requested_partition<'t>(topic: &'t Topic, fp: &FetchPartition) -> Option<&'t Arc<Partition>> {
    usize::try_from(fp.partition)
        .ok()
        .and_then(|i| topic.partitions.get(i))
}

/// One pass over the requested partitions: where the data is, how many bytes, any error.
fn read_once(broker: &Broker, req: &FetchRequest, version: i16) -> (FetchReply, usize, bool) {
    let by_id = version >= 13;
    let read_committed = req.isolation_level == 1;
    let mut remaining = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut any_error = false;
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut slices = Vec::new();
    for ft in &req.topics {
        let topic = requested_topic(broker, ft, by_id);
        let mut partitions = Vec::with_capacity(ft.partitions.len());
        for fp in &ft.partitions {
            let Some(partition) = topic.as_ref().and_then(|t| requested_partition(t, fp)) else {
                any_error = true;
                let code = if by_id {
                    ResponseError::UnknownTopicId.code()
                } else {
                    ResponseError::UnknownTopicOrPartition.code()
                };
                partitions.push(partition_error(fp.partition, code));
                slices.push(None);
                continue;
            };
            let (slice, hw, lso, start, aborted) = {
                let log = partition.log();
                let max = (fp.partition_max_bytes.max(0) as usize).min(remaining);
                let lso = log.last_stable_offset();
                // read_committed stops at the last stable offset and names the aborted
                // transactions in range, for the client to drop their records.
                let (slice, aborted) = if read_committed {
                    let aborted = log
                        .aborted_between(fp.fetch_offset, lso)
                        .into_iter()
                        .map(|a| {
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(a.producer_id))
                                .with_first_offset(a.first_offset)
                        })
                        .collect();
                    (
                        log.read_below(fp.fetch_offset, max, total == 0, lso),
                        Some(aborted),
                    )
                } else {
                    (log.read(fp.fetch_offset, max, total == 0), None)
                };
                (
                    slice,
                    log.log_end_offset(),
                    lso,
                    log.log_start_offset(),
                    aborted,
                )
            };
            let mut data = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_high_watermark(hw)
                .with_last_stable_offset(lso)
                .with_log_start_offset(start)
                .with_aborted_transactions(aborted)
                .with_records(Some(Bytes::new()));
            let mut region = None;
            match slice {
                Ok(Some(s)) => {
                    total += s.len;
                    remaining = remaining.saturating_sub(s.len);
                    region = Some(s);
                }
                Ok(None) => {}
                Err(LogError::OffsetOutOfRange { .. }) => {
                    any_error = true;
                    data = data.with_error_code(ResponseError::OffsetOutOfRange.code());
                }
                Err(e) => {
                    tracing::error!(topic = %partition.topic, partition = fp.partition, "read failed: {e}");
                    any_error = true;
                    data = data.with_error_code(ResponseError::KafkaStorageError.code());
                }
            }
            partitions.push(data);
            slices.push(region);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(if by_id { tn("") } else { ft.topic.clone() })
                .with_topic_id(ft.topic_id)
                .with_partitions(partitions),
        );
    }
    (
        FetchReply {
            response: FetchResponse::default().with_responses(topics),
            slices,
        },
        total,
        any_error,
    )
}

/// A long-polling fetch's registration with the partitions it reads; unregistered when
/// the fetch answers or is dropped (broker shutdown).
struct Watch {
    wake: Arc<Notify>,
    partitions: Vec<Arc<Partition>>,
}

impl Watch {
    fn new(broker: &Broker, req: &FetchRequest, version: i16) -> Self {
        let wake = Arc::new(Notify::new());
        let mut partitions = Vec::new();
        for ft in &req.topics {
            let Some(topic) = requested_topic(broker, ft, version >= 13) else {
                continue;
            };
            for fp in &ft.partitions {
                if let Some(p) = requested_partition(&topic, fp) {
                    p.watch(&wake);
                    partitions.push(p.clone());
                }
            }
        }
        Self { wake, partitions }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for p in &self.partitions {
            p.unwatch(&self.wake);
        }
    }
}

/// Answers Fetch.
pub async fn handle(broker: &Arc<Broker>, req: FetchRequest, version: i16) -> FetchReply {
    if req.session_id != 0 {
        // We never hand out sessions, so a client naming one has a stale id.
        return FetchReply {
            response: FetchResponse::default()
                .with_error_code(ResponseError::FetchSessionIdNotFound.code())
                .with_session_id(0),
            slices: vec![],
        };
    }
    let wait_ms = (req.max_wait_ms.max(0) as i64).min(broker.config.fetch_max_wait_cap_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut watch: Option<Watch> = None;
    loop {
        let (resp, bytes, any_error) = read_once(broker, &req, version);
        if bytes >= min_bytes || any_error || wait_ms == 0 || req.topics.is_empty() {
            return resp;
        }
        if tokio::time::Instant::now() >= deadline {
            return resp;
        }
        let Some(w) = &watch else {
            // Register with the partitions, then read again: an append in between left
            // a permit, so it is not missed.
            watch = Some(Watch::new(broker, &req, version));
            continue;
        };
        tokio::select! {
            _ = w.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return read_once(broker, &req, version).0;
            }
        }
    }
}
