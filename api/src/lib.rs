//! Runnel's Kafka client library.
//!
//! Today it holds the low-level layer: a [`Connection`] that sends any Kafka request
//! (typed by the `kafka-protocol` crate) and returns its typed response. The Producer,
//! Consumer and Admin clients are built on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_api::ClientError> {
//! use runnel_api::Connection;
//! use runnel_api::protocol::messages::MetadataRequest;
//!
//! let mut conn = Connection::connect("127.0.0.1:9092", "example").await?;
//! let metadata = conn.send(MetadataRequest::default(), 12).await?;
//! println!("{} brokers", metadata.brokers.len());
//! # Ok(()) }
//! ```

pub mod connection;

pub use connection::{ClientError, Connection};
/// The protocol crate every request and response type comes from.
pub use kafka_protocol as protocol;
