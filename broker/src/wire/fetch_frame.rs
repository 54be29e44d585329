//! Frames a Fetch response around file regions, for zero-copy sends.
//!
//! This is the one place Runnel writes protocol bytes by hand (DESIGN.md allows it). Only
//! the outer levels are hand-written: the response and topic fields, and each partition's
//! records length. Everything else in a partition (fields before `records`, the tagged
//! fields after it) is encoded by the protocol crate, and the tests check the whole frame
//! byte for byte against the crate's own encoding of the same response, at every version.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::protocol::Encodable;

use crate::log::ReadSlice;

/// A piece of a response on the wire.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A region of a segment file.
    File(ReadSlice),
}

impl Chunk {
    /// Length on the wire.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::File(s) => s.len,
        }
    }

    /// Whether it carries no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_array_len(buf: &mut BytesMut, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(buf, n as u64 + 1);
    } else {
        buf.put_i32(n as i32);
    }
}

/// Errors: the response holds something this framer does not handle (the caller then
/// falls back to the crate's encoder).
#[derive(Debug, thiserror::Error)]
#[error("fetch framing: {0}")]
pub struct FrameError(String);

/// Splits the crate's encoding of a partition into the bytes before `records` and the
/// bytes after it, by encoding it with empty records.
fn partition_parts(p: &PartitionData, version: i16) -> Result<(Bytes, Bytes), FrameError> {
    let err = |e: anyhow::Error| FrameError(e.to_string());
    let flexible = version >= 12;
    let mut with_empty = p.clone();
    with_empty.records = Some(Bytes::new());
    let mut full = BytesMut::new();
    with_empty.encode(&mut full, version).map_err(err)?;
    // Same partition without tagged fields: its encoding ends with the empty records
    // field (and, when flexible, an empty tag section), which locates `records`.
    let mut bare = with_empty.clone();
    bare.diverging_epoch = Default::default();
    bare.current_leader = Default::default();
    bare.snapshot_id = Default::default();
    bare.unknown_tagged_fields.clear();
    let mut b = BytesMut::new();
    bare.encode(&mut b, version).map_err(err)?;
    let empty_records_len = if flexible { 1 } else { 4 };
    let tail = if flexible { 1 } else { 0 };
    let prefix_len = b.len() - empty_records_len - tail;
    let full = full.freeze();
    Ok((
        full.slice(..prefix_len),
        full.slice(prefix_len + empty_records_len..),
    ))
}

/// Frames `resp` (whose partitions with a file slice carry empty records) as a complete
/// response frame: size, header, body. `slices` follows the partitions in order.
pub fn frame_fetch_response(
    resp: &FetchResponse,
    version: i16,
    header_version: i16,
    correlation_id: i32,
    slices: &[Option<ReadSlice>],
) -> Result<Vec<Chunk>, FrameError> {
    if !(4..=18).contains(&version) {
        return Err(FrameError(format!("version {version}")));
    }
    if !resp.node_endpoints.is_empty() || !resp.unknown_tagged_fields.is_empty() {
        return Err(FrameError("node endpoints or unknown tags".into()));
    }
    let flexible = version >= 12;
    let mut chunks = Vec::new();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // size, patched below
    buf.put_i32(correlation_id);
    if header_version >= 1 {
        put_uvarint(&mut buf, 0);
    }
    buf.put_i32(resp.throttle_time_ms);
    if version >= 7 {
        buf.put_i16(resp.error_code);
        buf.put_i32(resp.session_id);
    }
    put_array_len(&mut buf, resp.responses.len(), flexible);
    let mut slice_iter = slices.iter();
    for t in &resp.responses {
        if !t.unknown_tagged_fields.is_empty() {
            return Err(FrameError("unknown topic tags".into()));
        }
        if version >= 13 {
            buf.put_slice(t.topic_id.as_bytes());
        } else {
            let name = t.topic.0.as_str().as_bytes();
            if flexible {
                put_uvarint(&mut buf, name.len() as u64 + 1);
            } else {
                buf.put_i16(name.len() as i16);
            }
            buf.put_slice(name);
        }
        put_array_len(&mut buf, t.partitions.len(), flexible);
        for p in &t.partitions {
            let slice = slice_iter.next().cloned().flatten();
            match slice {
                None => {
                    p.encode(&mut buf, version)
                        .map_err(|e| FrameError(e.to_string()))?;
                }
                Some(s) => {
                    let (prefix, suffix) = partition_parts(p, version)?;
                    buf.put_slice(&prefix);
                    if flexible {
                        put_uvarint(&mut buf, s.len as u64 + 1);
                    } else {
                        buf.put_i32(s.len as i32);
                    }
                    chunks.push(Chunk::Bytes(buf.split().freeze()));
                    chunks.push(Chunk::File(s));
                    buf.put_slice(&suffix);
                }
            }
        }
        if flexible {
            put_uvarint(&mut buf, 0);
        }
    }
    if flexible {
        put_uvarint(&mut buf, 0);
    }
    chunks.push(Chunk::Bytes(buf.freeze()));
    let total: usize = chunks.iter().map(Chunk::len).sum::<usize>() - 4;
    if let Some(Chunk::Bytes(first)) = chunks.first_mut() {
        let mut b = BytesMut::from(&first[..]);
        b[0..4].copy_from_slice(&(total as i32).to_be_bytes());
        *first = b.freeze();
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{
        AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch,
    };
    use kafka_protocol::messages::{BrokerId, ProducerId, ResponseHeader, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use std::io::Write;
    use std::sync::Arc;

    fn crate_frame(resp: &FetchResponse, version: i16, header_version: i16, id: i32) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(id)
            .encode(&mut buf, header_version)
            .unwrap();
        resp.encode(&mut buf, version).unwrap();
        let n = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&n.to_be_bytes());
        buf.to_vec()
    }

    fn materialize(chunks: &[Chunk]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            match c {
                Chunk::Bytes(b) => out.extend_from_slice(b),
                Chunk::File(s) => out.extend_from_slice(&s.read().unwrap()),
            }
        }
        out
    }

    /// Builds a response with two topics; every other partition's data lives in a file.
    fn sample(
        version: i16,
        seed: u8,
    ) -> (
        FetchResponse,
        FetchResponse,
        Vec<Option<ReadSlice>>,
        tempfile::NamedTempFile,
    ) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
        file.write_all(&data).unwrap();
        let shared = Arc::new(file.reopen().unwrap());
        let mut inline = FetchResponse::default().with_throttle_time_ms(3);
        let mut framed = inline.clone();
        if version >= 7 {
            inline = inline.with_error_code(0).with_session_id(0);
            framed = framed.with_error_code(0).with_session_id(0);
        }
        let mut slices = Vec::new();
        for t in 0..2 {
            let mut in_parts = Vec::new();
            let mut fr_parts = Vec::new();
            for p in 0..3 {
                let len = 100 * (p + 1) + seed as usize + t * 7;
                let pos = (p * 1000) as u64;
                let mut pd = PartitionData::default()
                    .with_partition_index(p as i32)
                    .with_high_watermark(1000 + p as i64)
                    .with_last_stable_offset(999)
                    .with_log_start_offset(if version >= 5 { 5 } else { -1 })
                    .with_aborted_transactions(if p == 1 {
                        Some(vec![
                            AbortedTransaction::default()
                                .with_producer_id(ProducerId(7))
                                .with_first_offset(3),
                        ])
                    } else {
                        None
                    });
                if version >= 11 {
                    pd = pd.with_preferred_read_replica(BrokerId(-1));
                }
                if version >= 12 && p == 2 {
                    pd = pd
                        .with_diverging_epoch(
                            EpochEndOffset::default().with_epoch(4).with_end_offset(77),
                        )
                        .with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(1))
                                .with_leader_epoch(9),
                        );
                }
                let bytes = Bytes::copy_from_slice(&data[pos as usize..pos as usize + len]);
                if (p + t) % 2 == 0 {
                    in_parts.push(pd.clone().with_records(Some(bytes)));
                    fr_parts.push(pd.with_records(Some(Bytes::new())));
                    slices.push(Some(ReadSlice {
                        file: shared.clone(),
                        position: pos,
                        len,
                    }));
                } else {
                    in_parts.push(pd.clone().with_records(Some(bytes.clone())));
                    fr_parts.push(pd.with_records(Some(bytes)));
                    slices.push(None);
                }
            }
            let topic = FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(if version >= 13 {
                    String::new()
                } else {
                    format!("topic-{t}")
                })))
                .with_topic_id(if version >= 13 {
                    uuid::Uuid::from_u128(t as u128 + 1)
                } else {
                    uuid::Uuid::nil()
                });
            inline
                .responses
                .push(topic.clone().with_partitions(in_parts));
            framed.responses.push(topic.with_partitions(fr_parts));
        }
        (inline, framed, slices, file)
    }

    #[test]
    fn framed_fetch_responses_match_the_crate_encoder_at_every_version() {
        for version in 4..=18i16 {
            let header_version = if version >= 12 { 1 } else { 0 };
            for seed in [1u8, 3, 200] {
                let (inline, framed, slices, _file) = sample(version, seed);
                let want = crate_frame(&inline, version, header_version, 77);
                let chunks =
                    frame_fetch_response(&framed, version, header_version, 77, &slices).unwrap();
                assert!(chunks.iter().any(|c| matches!(c, Chunk::File(_))));
                assert_eq!(materialize(&chunks), want, "fetch v{version} seed {seed}");
            }
        }
    }
}
