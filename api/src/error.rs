//! Client errors.

use kafka_protocol::ResponseError;

/// Everything a client call can fail with.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ClientError {
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(String),
    /// The connection closed with the request outstanding.
    #[error("connection closed")]
    Disconnected,
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A response could not be decoded or made no sense.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker does not support what was asked.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The broker answered with a Kafka error code.
    #[error("{}: {message}", code_name(*code))]
    Broker {
        /// Kafka error code.
        code: i16,
        /// Broker's message or context.
        message: String,
    },
    /// Bad client configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The topic does not exist.
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    /// The client was closed.
    #[error("client closed")]
    Closed,
}

/// Kafka's name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`...).
pub fn code_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(e) => format!("{e:?}({code})"),
    }
}

impl ClientError {
    /// A broker error from a code, `None` for 0.
    pub fn from_code(code: i16, message: impl Into<String>) -> Option<Self> {
        (code != 0).then(|| ClientError::Broker {
            code,
            message: message.into(),
        })
    }

    /// Whether retrying (after refreshing metadata) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::Disconnected | ClientError::Timeout(_) => true,
            ClientError::Broker { code, .. } => {
                ResponseError::try_from_code(*code).is_some_and(|e| e.is_retriable())
            }
            _ => false,
        }
    }
}
