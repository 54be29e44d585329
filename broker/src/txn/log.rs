//! `__transaction_state` records in Apache Kafka's formats: key version 0 (the
//! transactional id) and value version 0 (producer id and epoch, timeout, status,
//! partitions, timestamps).

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{TxnMeta, TxnState};

/// The internal topic's name.
pub const TOPIC: &str = "__transaction_state";

/// Key of a transactional id's record.
pub fn key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i16(transactional_id.len() as i16);
    b.put_slice(transactional_id.as_bytes());
    b.freeze()
}

/// Value of a transaction's record.
pub fn value(m: &TxnMeta) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i64(m.producer_id);
    b.put_i16(m.epoch);
    b.put_i32(m.timeout_ms);
    b.put_i8(m.state as i8);
    // Partitions grouped by topic.
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some((name, ps)) if *name == t.as_str() => ps.push(*p),
            _ => topics.push((t.as_str(), vec![*p])),
        }
    }
    b.put_i32(topics.len() as i32);
    for (t, ps) in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(m.last_update_ms);
    b.put_i64(m.start_ms);
    b.freeze()
}

fn get_string(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 || b.remaining() < n as usize {
        return None;
    }
    Some(String::from_utf8_lossy(&b.split_to(n as usize)).into_owned())
}

/// Decodes a key: the transactional id.
pub fn decode_key(mut k: Bytes) -> Option<String> {
    if k.remaining() < 2 || k.get_i16() != 0 {
        return None;
    }
    get_string(&mut k)
}

/// Decodes a value (version 0).
pub fn decode_value(transactional_id: &str, mut v: Bytes) -> Option<TxnMeta> {
    if v.remaining() < 2 + 8 + 2 + 4 + 1 + 4 || v.get_i16() != 0 {
        return None;
    }
    let producer_id = v.get_i64();
    let epoch = v.get_i16();
    let timeout_ms = v.get_i32();
    let state = TxnState::from_i8(v.get_i8())?;
    let n = v.get_i32();
    let mut partitions = BTreeSet::new();
    for _ in 0..n.max(0) {
        let t = get_string(&mut v)?;
        if v.remaining() < 4 {
            return None;
        }
        let k = v.get_i32();
        for _ in 0..k.max(0) {
            if v.remaining() < 4 {
                return None;
            }
            partitions.insert((t.clone(), v.get_i32()));
        }
    }
    if v.remaining() < 16 {
        return None;
    }
    Some(TxnMeta {
        transactional_id: transactional_id.to_string(),
        producer_id,
        epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms: v.get_i64(),
        start_ms: v.get_i64(),
        prev_epoch: -1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let m = TxnMeta {
            transactional_id: "tx-1".into(),
            producer_id: 4000,
            epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            last_update_ms: 10,
            start_ms: 5,
            prev_epoch: -1,
        };
        assert_eq!(decode_key(key("tx-1")).as_deref(), Some("tx-1"));
        assert_eq!(decode_value("tx-1", value(&m)), Some(m));
        assert_eq!(decode_value("tx-1", Bytes::from_static(&[0, 0, 1])), None);
    }
}
