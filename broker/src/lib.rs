//! Runnel's broker: a single-node server that speaks the Apache Kafka wire protocol, over
//! partition logs stored in Kafka's on-disk layout.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use runnel_broker::{Broker, BrokerConfig, server};
//!
//! let config = BrokerConfig::from_pairs(&[
//!     ("listeners".into(), "PLAINTEXT://127.0.0.1:9092".into()),
//!     ("log.dirs".into(), "./runnel-data".into()),
//! ])?;
//! let broker = Broker::open(config)?;
//! let running = server::start(broker).await?;
//! // ... serve until asked to stop ...
//! running.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod broker;
pub mod config;
pub mod group;
pub mod handlers;
pub mod log;
pub mod loggers;
pub mod partition;
pub mod server;
pub mod topics;
pub mod txn;
pub mod wire;

pub use broker::Broker;
pub use config::BrokerConfig;
