//! Frames a Produce request around its record batches, so the batches go to the socket
//! from their own memory (a gathering write) instead of being copied into the request,
//! as Kafka's clients send them.
//!
//! Runnel does not lay out the request itself: the protocol crate encodes it twice with
//! each large batch left out, once with an empty records field and once with a one-byte
//! one, and the two encodings differ exactly at those fields. Each is cut there, and the
//! only bytes written by hand are each batch's records length (as the Fetch framing in
//! the broker does). The tests check the pieces byte for byte against the crate's own
//! encoding of the whole request, at every version.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::protocol::Encodable;

use crate::error::ClientError;
use crate::net::Pieces;

/// Batches at least this long go out by reference; shorter ones are copied (an extra
/// piece costs more than copying them).
pub const SHARE_MIN_BYTES: usize = 1024;

/// Writes `req`'s body at `version` into `out`, each batch of at least
/// [`SHARE_MIN_BYTES`] attached by reference.
pub fn produce_pieces(
    req: &ProduceRequest,
    version: i16,
    out: &mut Pieces,
) -> Result<(), ClientError> {
    let err = |e: anyhow::Error| ClientError::Protocol(e.to_string());
    let flexible = version >= 9;
    // The batches that go by reference, in encoding order, and the request with each
    // replaced by an empty records field and by a one-byte one.
    let mut shared: Vec<Bytes> = Vec::new();
    let mut empty = req.clone();
    let mut one = req.clone();
    for (te, to) in empty.topic_data.iter_mut().zip(one.topic_data.iter_mut()) {
        for (pe, po) in te
            .partition_data
            .iter_mut()
            .zip(to.partition_data.iter_mut())
        {
            if let Some(r) = pe.records.as_ref().filter(|r| r.len() >= SHARE_MIN_BYTES) {
                shared.push(r.clone());
                pe.records = Some(Bytes::new());
                po.records = Some(Bytes::from_static(&[0]));
            }
        }
    }
    if shared.is_empty() {
        req.encode(out.buf(), version).map_err(err)?;
        return Ok(());
    }
    let mut e = BytesMut::new();
    empty.encode(&mut e, version).map_err(err)?;
    let mut o = BytesMut::new();
    one.encode(&mut o, version).map_err(err)?;
    // `o` is `e` with each left-out records field one longer, plus one byte after it: they
    // first differ at the last byte of the field's length (a 4-byte length, or a 1-byte
    // unsigned varint when flexible).
    let len_bytes = if flexible { 1 } else { 4 };
    let (mut i, mut j, mut from) = (0usize, 0usize, 0usize);
    let mut batches = shared.into_iter();
    while i < e.len() && j < o.len() {
        if e[i] == o[j] {
            i += 1;
            j += 1;
            continue;
        }
        let field = (i + 1).checked_sub(len_bytes).filter(|f| *f >= from);
        let (Some(field), Some(batch)) = (field, batches.next()) else {
            return Err(ClientError::Protocol(
                "Produce framing: the encodings differ where no batch was left out".into(),
            ));
        };
        out.buf().put_slice(&e[from..field]);
        if flexible {
            put_uvarint(out.buf(), batch.len() as u64 + 1);
        } else {
            out.buf().put_i32(batch.len() as i32);
        }
        out.attach(batch);
        from = i + 1;
        i += 1;
        j += 2;
    }
    // Every batch found its place, and both encodings ended together.
    if batches.next().is_some() || i != e.len() || j != o.len() {
        return Err(ClientError::Protocol(
            "Produce framing: a left-out batch was not found".into(),
        ));
    }
    out.buf().put_slice(&e[from..]);
    Ok(())
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{TopicName, TransactionalId};
    use kafka_protocol::protocol::StrBytes;

    fn records(len: usize, seed: u8) -> Bytes {
        (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
    }

    fn request(txn: Option<&str>, topics: &[(&str, Vec<Option<Bytes>>)]) -> ProduceRequest {
        ProduceRequest::default()
            .with_transactional_id(txn.map(|t| TransactionalId(StrBytes::from_string(t.into()))))
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(
                topics
                    .iter()
                    .map(|(name, parts)| {
                        TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_string((*name).into())))
                            .with_partition_data(
                                parts
                                    .iter()
                                    .enumerate()
                                    .map(|(i, r)| {
                                        PartitionProduceData::default()
                                            .with_index(i as i32 * 7)
                                            .with_records(r.clone())
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    #[test]
    fn pieces_are_the_crates_encoding_byte_for_byte_with_large_batches_by_reference() {
        // Sizes around the sharing threshold, and records lengths whose unsigned varint
        // takes 2 and 3 bytes; a null and an empty records field; batches filled with
        // zeros and ones, the bytes the framing compares on.
        let cases = [
            request(None, &[("t", vec![Some(records(70_000, 0))])]),
            request(
                Some("txn-1"),
                &[
                    (
                        "orders",
                        vec![
                            Some(records(SHARE_MIN_BYTES, 1)),
                            None,
                            Some(records(SHARE_MIN_BYTES - 1, 2)),
                            Some(Bytes::new()),
                            Some(Bytes::from(vec![0u8; 20_000])),
                        ],
                    ),
                    ("b", vec![Some(Bytes::from(vec![1u8; 2_000_000]))]),
                    ("no-partitions", vec![]),
                    ("c", vec![Some(records(5, 9)), Some(records(4096, 3))]),
                ],
            ),
            request(Some(""), &[("small", vec![Some(records(100, 4)), None])]),
            request(None, &[]),
        ];
        for version in 3..=12 {
            for (n, req) in cases.iter().enumerate() {
                let mut whole = BytesMut::new();
                req.encode(&mut whole, version).unwrap();
                let mut out = Pieces::default();
                produce_pieces(req, version, &mut out).unwrap();
                let pieces = out.finish();
                let joined: Vec<u8> = pieces.iter().flatten().copied().collect();
                assert_eq!(joined, whole[..], "case {n} v{version}");
                // Every batch of at least the threshold is a piece of its own, in the
                // batch's own memory; nothing else is.
                let large: Vec<&Bytes> = req
                    .topic_data
                    .iter()
                    .flat_map(|t| &t.partition_data)
                    .filter_map(|p| p.records.as_ref())
                    .filter(|r| r.len() >= SHARE_MIN_BYTES)
                    .collect();
                let by_reference: Vec<&Bytes> = pieces
                    .iter()
                    .filter(|p| large.iter().any(|r| r.as_ptr() == p.as_ptr()))
                    .collect();
                assert_eq!(by_reference.len(), large.len(), "case {n} v{version}");
                for (r, p) in large.iter().zip(&by_reference) {
                    assert_eq!(r.len(), p.len());
                }
            }
        }
    }
}
