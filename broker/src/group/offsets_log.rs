//! Records of `__consumer_offsets`, in Apache Kafka's formats, so the topic is the durable
//! state of every group: committed offsets (key v1, value v3) and group metadata
//! (key v2, value v3). A null value (tombstone) deletes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The internal topic.
pub const TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode` (over UTF-16 code units), which Kafka uses to place a group.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition that holds `group` (Kafka's `Utils.abs(hash) % n`).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// Offset.
    pub offset: i64,
    /// Leader epoch (-1 unknown).
    pub leader_epoch: i32,
    /// Metadata string.
    pub metadata: String,
    /// Commit time (ms).
    pub commit_timestamp: i64,
}

/// Group metadata as persisted (members are not restored after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Protocol type.
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Leader.
    pub leader: Option<String>,
    /// When the state last changed.
    pub state_timestamp: i64,
}

/// A decoded `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// An offset commit (None: deleted).
    Offset {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Value.
        value: Option<CommittedOffset>,
    },
    /// Group metadata (None: group deleted).
    Group {
        /// Group.
        group: String,
        /// Value.
        value: Option<GroupRecord>,
    },
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn get_str(b: &mut Bytes) -> Option<Option<String>> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_i16();
    if n < 0 {
        return Some(None);
    }
    if b.remaining() < n as usize {
        return None;
    }
    let s = b.split_to(n as usize);
    Some(Some(String::from_utf8_lossy(&s).into_owned()))
}

impl OffsetsRecord {
    /// The record key.
    pub fn key(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                ..
            } => {
                b.put_i16(1);
                put_str(&mut b, group);
                put_str(&mut b, topic);
                b.put_i32(*partition);
            }
            OffsetsRecord::Group { group, .. } => {
                b.put_i16(2);
                put_str(&mut b, group);
            }
        }
        b.freeze()
    }

    /// The record value (None for a tombstone).
    pub fn value(&self) -> Option<Bytes> {
        let mut b = BytesMut::new();
        match self {
            OffsetsRecord::Offset { value: Some(v), .. } => {
                b.put_i16(3);
                b.put_i64(v.offset);
                b.put_i32(v.leader_epoch);
                put_str(&mut b, &v.metadata);
                b.put_i64(v.commit_timestamp);
            }
            OffsetsRecord::Group { value: Some(v), .. } => {
                b.put_i16(3);
                put_str(&mut b, &v.protocol_type);
                b.put_i32(v.generation);
                put_nullable(&mut b, v.protocol.as_deref());
                put_nullable(&mut b, v.leader.as_deref());
                b.put_i64(v.state_timestamp);
                b.put_i32(0); // members are not persisted
            }
            _ => return None,
        }
        Some(b.freeze())
    }

    /// Decodes a record; `None` for keys of other kinds or malformed bytes.
    pub fn decode(mut key: Bytes, value: Option<Bytes>) -> Option<Self> {
        if key.remaining() < 2 {
            return None;
        }
        match key.get_i16() {
            0 | 1 => {
                let group = get_str(&mut key)??;
                let topic = get_str(&mut key)??;
                if key.remaining() < 4 {
                    return None;
                }
                let partition = key.get_i32();
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        if v.remaining() < 2 {
                            return None;
                        }
                        let version = v.get_i16();
                        if v.remaining() < 8 {
                            return None;
                        }
                        let offset = v.get_i64();
                        let leader_epoch = if version >= 3 && v.remaining() >= 4 {
                            v.get_i32()
                        } else {
                            -1
                        };
                        let metadata = get_str(&mut v)?.unwrap_or_default();
                        let commit_timestamp = if v.remaining() >= 8 { v.get_i64() } else { 0 };
                        Some(CommittedOffset {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp,
                        })
                    }
                };
                Some(OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            2 => {
                let group = get_str(&mut key)??;
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        if v.remaining() < 2 {
                            return None;
                        }
                        let _version = v.get_i16();
                        let protocol_type = get_str(&mut v)?.unwrap_or_default();
                        if v.remaining() < 4 {
                            return None;
                        }
                        let generation = v.get_i32();
                        let protocol = get_str(&mut v)?;
                        let leader = get_str(&mut v)?;
                        let state_timestamp = if v.remaining() >= 8 { v.get_i64() } else { 0 };
                        Some(GroupRecord {
                            protocol_type,
                            generation,
                            protocol,
                            leader,
                            state_timestamp,
                        })
                    }
                };
                Some(OffsetsRecord::Group { group, value })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Java: "my-group".hashCode() == -1906497762; abs % 50 == 12.
        assert_eq!(java_string_hash("my-group"), -1906497762);
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(java_string_hash(""), 0);
    }

    #[test]
    fn records_round_trip() {
        let r = OffsetsRecord::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(CommittedOffset {
                offset: 42,
                leader_epoch: 0,
                metadata: "m".into(),
                commit_timestamp: 7,
            }),
        };
        assert_eq!(OffsetsRecord::decode(r.key(), r.value()), Some(r));
        let g = OffsetsRecord::Group {
            group: "g".into(),
            value: Some(GroupRecord {
                protocol_type: "consumer".into(),
                generation: 5,
                protocol: Some("range".into()),
                leader: None,
                state_timestamp: 9,
            }),
        };
        assert_eq!(OffsetsRecord::decode(g.key(), g.value()), Some(g));
        let tomb = OffsetsRecord::Group {
            group: "g".into(),
            value: None,
        };
        assert_eq!(OffsetsRecord::decode(tomb.key(), None), Some(tomb));
    }
}
