//! The topic registry: names, topic ids (KIP-516), partitions and configs, persisted in
//! `<log.dir>/runnel-metadata.json` so topics survive restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::TopicConfig;
use crate::partition::Partition;

/// Longest legal topic name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name as Kafka does: 1-249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters, topic name: {name}"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// A topic and its partitions.
#[derive(Debug)]
pub struct Topic {
    /// Name.
    pub name: String,
    /// Topic id, assigned at creation.
    pub id: Uuid,
    /// Partitions, by index.
    pub partitions: Vec<Arc<Partition>>,
    /// Effective config.
    pub config: TopicConfig,
}

/// What is persisted per topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicRecord {
    /// Topic id.
    pub id: Uuid,
    /// Partition count.
    pub partitions: i32,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

/// The persisted metadata file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataFile {
    /// Topics by name.
    pub topics: BTreeMap<String, TopicRecord>,
    /// Next producer id block start (InitProducerId).
    #[serde(default)]
    pub next_producer_id: i64,
}

/// In-memory registry.
#[derive(Debug, Default)]
pub struct Registry {
    /// Topics by name.
    pub by_name: HashMap<String, Arc<Topic>>,
    /// Names by topic id.
    pub by_id: HashMap<Uuid, String>,
}

impl Registry {
    /// Inserts or replaces a topic.
    pub fn put(&mut self, topic: Arc<Topic>) {
        self.by_id.insert(topic.id, topic.name.clone());
        self.by_name.insert(topic.name.clone(), topic);
    }

    /// Removes a topic.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Topic>> {
        let t = self.by_name.remove(name)?;
        self.by_id.remove(&t.id);
        Some(t)
    }

    /// Builds the persisted form.
    pub fn to_file(&self, next_producer_id: i64) -> MetadataFile {
        MetadataFile {
            topics: self
                .by_name
                .values()
                .map(|t| {
                    (
                        t.name.clone(),
                        TopicRecord {
                            id: t.id,
                            partitions: t.partitions.len() as i32,
                            configs: t.config.overrides.clone(),
                        },
                    )
                })
                .collect(),
            next_producer_id,
        }
    }
}

/// Kafka's `partition.metadata` file content for a topic id.
pub fn partition_metadata_file(id: &Uuid) -> String {
    format!("version: 0\ntopic_id: {}\n", kafka_uuid_base64(id))
}

/// Kafka prints topic ids as URL-safe base64 without padding.
pub fn kafka_uuid_base64(id: &Uuid) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = id.as_bytes();
    let mut out = String::with_capacity(22);
    for chunk in b.chunks(3) {
        let n = match chunk.len() {
            3 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8 | chunk[2] as u32,
            2 => (chunk[0] as u32) << 16 | (chunk[1] as u32) << 8,
            _ => (chunk[0] as u32) << 16,
        };
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a b", "ä", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uuid_base64_matches_kafka_format() {
        let id = Uuid::from_bytes([0xff; 16]);
        let s = kafka_uuid_base64(&id);
        assert_eq!(s.len(), 22);
        assert_eq!(s, "_____________________w");
    }
}
