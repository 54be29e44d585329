//! Runnel's Kafka client library: an async [`Producer`], [`Consumer`] and [`Admin`] that
//! work against any Kafka-protocol cluster (Runnel, Apache Kafka, Redpanda...).
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_api::ClientError> {
//! use runnel_api::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition};
//! use std::time::Duration;
//!
//! let mut config = ProducerConfig::new("127.0.0.1:9092");
//! config.set("linger.ms", "5")?.set("compression.type", "zstd")?;
//! let producer = Producer::connect(config).await?;
//! let meta = producer.send(ProducerRecord::new("greetings").key("k").value("hello")).await?.await?;
//!
//! let mut consumer = Consumer::connect(ConsumerConfig::new("127.0.0.1:9092")).await?;
//! let tp = TopicPartition::new("greetings", meta.partition);
//! consumer.assign(vec![tp.clone()]).await?;
//! consumer.seek(&tp, meta.offset)?;
//! let records = consumer.poll(Duration::from_secs(5)).await?;
//! assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
//! # Ok(()) }
//! ```
//!
//! The low-level [`Connection`] sends any request typed by the `kafka-protocol` crate.

pub mod admin;
pub mod cluster;
pub mod codec;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod groups;
pub mod membership;
pub mod murmur2;
pub mod net;
mod produce_frame;
pub mod producer;
pub mod records;
#[cfg(test)]
mod scripted_broker;
pub mod serde;
pub mod transactions;
mod txn;

pub use admin::{Admin, AlterOp, ConfigEntry, NewTopic};
pub use cluster::{ClientConfig, Cluster};
pub use connection::Connection;
pub use consumer::{
    Consumer, ConsumerConfig, ConsumerGroupMetadata, ConsumerRecord, IsolationLevel, OffsetReset,
    RebalanceListener, TopicPartition,
};
pub use error::ClientError;
pub use groups::{GroupDescription, GroupListing, GroupMember};
/// The protocol crate every request and response type comes from.
pub use kafka_protocol as protocol;
pub use membership::Assignor;
pub use producer::{
    DeliveryFuture, Partitioner, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use records::{Compression, Header};
