//! One TCP connection to a Kafka-protocol broker, sending typed requests.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Errors from a [`Connection`] (the low-level test connection).
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed or was closed by the broker.
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        /// Broker address.
        addr: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A request could not be encoded or a response could not be decoded.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The response's correlation id did not match the request's.
    #[error("correlation id mismatch: sent {sent}, received {received}")]
    Correlation {
        /// The id sent.
        sent: i32,
        /// The id received.
        received: i32,
    },
}

/// Largest response this client accepts (guards against a corrupt length prefix).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// A connection to one broker. Requests are sent one at a time, in order.
pub struct Connection {
    stream: TcpStream,
    addr: String,
    client_id: String,
    next_correlation_id: i32,
}

impl Connection {
    /// Opens a TCP connection to `addr` (`host:port`).
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ConnectionError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectionError::Io {
                addr: addr.to_string(),
                source,
            })?;
        stream.set_nodelay(true).ok();
        Ok(Self {
            stream,
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            next_correlation_id: 1,
        })
    }

    fn io(&self, source: std::io::Error) -> ConnectionError {
        ConnectionError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send<R>(
        &mut self,
        request: R,
        version: i16,
    ) -> Result<R::Response, ConnectionError>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        let correlation_id = self.send_only(&request, version).await?;
        let mut body = self.read_frame().await?;
        let header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
        if header.correlation_id != correlation_id {
            return Err(ConnectionError::Correlation {
                sent: correlation_id,
                received: header.correlation_id,
            });
        }
        R::Response::decode(&mut body, version)
            .map_err(|e| ConnectionError::Protocol(e.to_string()))
    }

    /// Sends `request` without waiting for a response (for `acks=0` produce); returns the
    /// correlation id used.
    pub async fn send_only<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<i32, ConnectionError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.send_raw(&buf).await?;
        Ok(correlation_id)
    }

    /// Writes raw bytes to the socket (tests use it to send malformed frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.stream.write_all(bytes).await.map_err(|e| self.io(e))
    }

    /// Reads one length-prefixed frame.
    pub async fn read_frame(&mut self) -> Result<Bytes, ConnectionError> {
        let len = self.stream.read_i32().await.map_err(|e| self.io(e))?;
        if len < 0 || len as usize > MAX_RESPONSE_BYTES {
            return Err(ConnectionError::Protocol(format!(
                "bad response length {len}"
            )));
        }
        crate::net::read_body(&mut self.stream, len as usize)
            .await
            .map_err(|e| self.io(e))
    }

    /// Reads a frame and returns its correlation id and the rest (for raw-protocol tests).
    pub async fn read_raw_response(&mut self) -> Result<(i32, Bytes), ConnectionError> {
        let mut body = self.read_frame().await?;
        if body.len() < 4 {
            return Err(ConnectionError::Protocol("short response".into()));
        }
        let id = body.get_i32();
        Ok((id, body))
    }
}
