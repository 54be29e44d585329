//! A pipelined connection to one broker: many requests in flight, responses matched in
//! order, versions negotiated with ApiVersions on connect.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Request, StrBytes, VersionRange,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::ClientError;

const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

type Pending = Arc<Mutex<VecDeque<(i32, Option<oneshot::Sender<Result<Bytes, ClientError>>>)>>>;

struct Outgoing {
    /// The frame, size prefix first, in one or more pieces: a request whose record
    /// batches go out by reference has them as pieces of their own (see [`Pieces`]).
    frame: Vec<Bytes>,
    correlation_id: i32,
    reply: Option<oneshot::Sender<Result<Bytes, ClientError>>>,
}

/// A shared, pipelined connection. Cloning shares it.
#[derive(Clone)]
pub struct BrokerConnection {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    client_id: String,
    tx: mpsc::UnboundedSender<Outgoing>,
    next_id: std::sync::atomic::AtomicI32,
    versions: HashMap<i16, (i16, i16)>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    request_timeout: Duration,
    /// Memory for encoding requests, reused once the writer has sent and dropped the
    /// previous frame (a fresh, growing buffer per request touched new pages each time).
    spare: std::sync::Mutex<BytesMut>,
}

impl std::fmt::Debug for BrokerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConnection")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl BrokerConnection {
    /// Connects and negotiates API versions (falling back through the KIP-511 answer).
    pub async fn connect(
        addr: &str,
        client_id: &str,
        request_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let io = |e: std::io::Error| ClientError::Io(format!("{addr}: {e}"));
        let stream = tokio::time::timeout(request_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout(format!("connecting to {addr}")))?
            .map_err(io)?;
        stream.set_nodelay(true).ok();
        let (mut r, w) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
        let pending: Pending = Arc::new(Mutex::new(VecDeque::new()));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Writer: frames go out in order; each expected reply is queued before it is sent.
        // Frames waiting together leave in one gathering write, pieces by reference.
        let wp = pending.clone();
        let wclosed = closed.clone();
        tokio::spawn(async move {
            let mut w = w;
            let mut pieces: VecDeque<Bytes> = VecDeque::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                while let Some(o) = next.take() {
                    if wclosed.load(std::sync::atomic::Ordering::SeqCst) {
                        if let Some(r) = o.reply {
                            let _ = r.send(Err(ClientError::Disconnected));
                        }
                    } else {
                        if o.reply.is_some() {
                            wp.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push_back((o.correlation_id, o.reply));
                        }
                        pieces.extend(o.frame);
                    }
                    if pieces.len() < WRITE_PIECES {
                        next = rx.try_recv().ok();
                    }
                }
                if write_pieces(&mut w, &mut pieces).await.is_err() {
                    wclosed.store(true, std::sync::atomic::Ordering::SeqCst);
                    pieces.clear();
                }
            }
        });
        // Reader: responses arrive in request order.
        let rp = pending.clone();
        let rclosed = closed.clone();
        tokio::spawn(async move {
            let fail_all = |p: &Pending| {
                for (_, reply) in p.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                    if let Some(r) = reply {
                        let _ = r.send(Err(ClientError::Disconnected));
                    }
                }
            };
            loop {
                let len = match r.read_i32().await {
                    Ok(n) if n >= 4 && (n as usize) <= MAX_RESPONSE_BYTES => n as usize,
                    _ => break,
                };
                let Ok(body) = read_body(&mut r, len).await else {
                    break;
                };
                // The whole response (header included) goes to the caller.
                let id = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let next = rp.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                match next {
                    Some((expected, Some(reply))) if expected == id => {
                        let _ = reply.send(Ok(body));
                    }
                    Some((expected, reply)) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Err(ClientError::Protocol(format!(
                                "correlation id {id} where {expected} was expected"
                            ))));
                        }
                        break;
                    }
                    None => break,
                }
            }
            rclosed.store(true, std::sync::atomic::Ordering::SeqCst);
            fail_all(&rp);
        });
        let mut conn = Self {
            inner: Arc::new(Inner {
                addr: addr.to_string(),
                client_id: client_id.to_string(),
                tx,
                next_id: std::sync::atomic::AtomicI32::new(1),
                versions: HashMap::new(),
                closed,
                request_timeout,
                spare: std::sync::Mutex::new(BytesMut::new()),
            }),
        };
        let versions = conn.negotiate().await?;
        // Only this task holds the Arc yet.
        if let Some(inner) = Arc::get_mut(&mut conn.inner) {
            inner.versions = versions;
        }
        Ok(conn)
    }

    async fn negotiate(&self) -> Result<HashMap<i16, (i16, i16)>, ClientError> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("runnel-api"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = 3;
        for _ in 0..3 {
            let mut body = self.raw_request(&req, version, false).await?;
            body.advance(4); // ApiVersions responses always use header v0
            // KIP-511: a broker answers a too-new request with UNSUPPORTED_VERSION, encoded
            // at v0, listing the ApiVersions versions it has. Not every broker encodes that
            // answer at v0 (librdkafka's mock cluster answers a v3 request partly in v3), so
            // as in the Java client: whichever reading gives the error, then a retry at the
            // highest version it names, or at v0 when it names none.
            let asked = ApiVersionsResponse::decode(&mut body.clone(), version);
            let resp = match asked {
                Ok(r) if r.error_code == 0 => r,
                asked => match (ApiVersionsResponse::decode(&mut body, 0), asked) {
                    (Ok(r), _) if r.error_code != 0 || !r.api_keys.is_empty() => r,
                    (_, Ok(r)) => r,
                    (Err(e), Err(_)) | (Ok(_), Err(e)) => {
                        return Err(ClientError::Protocol(format!(
                            "cannot read the ApiVersions answer: {e}"
                        )));
                    }
                },
            };
            if resp.error_code == 35 && version > 0 {
                version = resp
                    .api_keys
                    .iter()
                    .find(|a| a.api_key == ApiKey::ApiVersions as i16)
                    .map_or(0, |av| av.max_version.clamp(0, version - 1));
                continue;
            }
            if resp.error_code != 0 {
                return Err(ClientError::Broker {
                    code: resp.error_code,
                    message: "ApiVersions failed".into(),
                });
            }
            return Ok(resp
                .api_keys
                .iter()
                .map(|a| (a.api_key, (a.min_version, a.max_version)))
                .collect());
        }
        Err(ClientError::Protocol(
            "ApiVersions negotiation did not converge".into(),
        ))
    }

    /// Broker address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Whether the socket has failed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The highest version both sides support for `R`, if any.
    pub fn version_for<R: Request>(&self) -> Option<i16> {
        let ours: VersionRange = R::VERSIONS;
        let (lo, hi) = *self.inner.versions.get(&R::KEY)?;
        let v = hi.min(ours.max);
        (v >= lo.max(ours.min)).then_some(v)
    }

    /// Sends `req` at the negotiated version and decodes the response.
    pub async fn send<R>(&self, req: &R) -> Result<R::Response, ClientError>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        let version = self.version_for::<R>().ok_or_else(|| {
            ClientError::Unsupported(format!(
                "broker {} does not support API key {}",
                self.inner.addr,
                R::KEY
            ))
        })?;
        self.send_at(req, version).await
    }

    /// Sends `req` at `version` and decodes the response.
    pub async fn send_at<R>(&self, req: &R, version: i16) -> Result<R::Response, ClientError>
    where
        R: Request,
        R::Response: Decodable + HeaderVersion,
    {
        let rx = self.enqueue(req, version, false)?;
        self.clone().response::<R::Response>(rx, version).await
    }

    /// Sends `req` expecting no response (Produce with acks=0).
    pub async fn send_no_response<R: Request>(
        &self,
        req: &R,
        version: i16,
    ) -> Result<(), ClientError> {
        self.raw_request(req, version, true).await.map(|_| ())
    }

    /// The decoded response that `rx` will receive.
    async fn response<T: Decodable + HeaderVersion>(
        self,
        rx: Option<oneshot::Receiver<Result<Bytes, ClientError>>>,
        version: i16,
    ) -> Result<T, ClientError> {
        let mut body = self.wait(rx).await?;
        ResponseHeader::decode(&mut body, T::header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        T::decode(&mut body, version).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Queues `req` at `version` now, so requests leave in the order they are queued, and
    /// returns the future of its decoded response. `write_body` writes `req`'s body into
    /// [`Pieces`], so large buffers (a Produce request's batches) go out from their own
    /// memory.
    pub fn start_pieces<R>(
        &self,
        req: &R,
        version: i16,
        write_body: impl FnOnce(&mut Pieces) -> Result<(), ClientError>,
    ) -> Result<
        impl std::future::Future<Output = Result<R::Response, ClientError>> + Send + 'static,
        ClientError,
    >
    where
        R: Request,
        R::Response: Decodable + HeaderVersion + Send + 'static,
    {
        let body_len = req
            .compute_size(version)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let rx = self.enqueue_pieces::<R>(version, body_len, write_body)?;
        Ok(self.clone().response::<R::Response>(rx, version))
    }

    /// Returns the whole response after the size prefix: header, then body.
    async fn raw_request<R: Request>(
        &self,
        req: &R,
        version: i16,
        no_response: bool,
    ) -> Result<Bytes, ClientError> {
        match self.enqueue(req, version, no_response)? {
            None => Ok(Bytes::new()),
            Some(rx) => self.wait(Some(rx)).await,
        }
    }

    /// Encodes and queues a request; the receiver of its response unless none is expected.
    fn enqueue<R: Request>(
        &self,
        req: &R,
        version: i16,
        no_response: bool,
    ) -> Result<Option<oneshot::Receiver<Result<Bytes, ClientError>>>, ClientError> {
        let protocol = |e: anyhow::Error| ClientError::Protocol(e.to_string());
        let body_len = req.compute_size(version).map_err(protocol)?;
        let (id, header, len) = self.frame_start::<R>(version, body_len)?;
        let frame = {
            let mut spare = self.inner.spare.lock().unwrap_or_else(|p| p.into_inner());
            let mut own = BytesMut::new();
            let buf = frame_buffer(&mut spare, &mut own, 4 + len);
            buf.put_i32(len as i32);
            header
                .encode(buf, R::header_version(version))
                .map_err(protocol)?;
            req.encode(buf, version).map_err(protocol)?;
            buf.split().freeze()
        };
        self.queue(id, vec![frame], len, no_response)
    }

    /// Queues a request whose body `write_body` writes into pieces (`body_len` bytes,
    /// as `R::compute_size` gives); the receiver of its response.
    fn enqueue_pieces<R: Request>(
        &self,
        version: i16,
        body_len: usize,
        write_body: impl FnOnce(&mut Pieces) -> Result<(), ClientError>,
    ) -> Result<Option<oneshot::Receiver<Result<Bytes, ClientError>>>, ClientError> {
        let (id, header, len) = self.frame_start::<R>(version, body_len)?;
        let mut frame = Pieces::default();
        frame.buf().put_i32(len as i32);
        header
            .encode(frame.buf(), R::header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        write_body(&mut frame)?;
        self.queue(id, frame.finish(), len, false)
    }

    /// A request's correlation id, header, and frame length after the size prefix.
    fn frame_start<R: Request>(
        &self,
        version: i16,
        body_len: usize,
    ) -> Result<(i32, RequestHeader, usize), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Disconnected);
        }
        let id = self
            .inner
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_string(self.inner.client_id.clone())));
        let len = header
            .compute_size(R::header_version(version))
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            + body_len;
        Ok((id, header, len))
    }

    /// Hands an encoded frame (`4 + len` bytes in pieces) to the writer; the receiver of
    /// its response unless none is expected.
    fn queue(
        &self,
        correlation_id: i32,
        frame: Vec<Bytes>,
        len: usize,
        no_response: bool,
    ) -> Result<Option<oneshot::Receiver<Result<Bytes, ClientError>>>, ClientError> {
        let encoded: usize = frame.iter().map(Bytes::len).sum();
        if encoded != 4 + len {
            return Err(ClientError::Protocol(format!(
                "request encoded to {} bytes, {} expected",
                encoded.saturating_sub(4),
                len
            )));
        }
        let (reply, rx) = if no_response {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        self.inner
            .tx
            .send(Outgoing {
                frame,
                correlation_id,
                reply,
            })
            .map_err(|_| ClientError::Disconnected)?;
        Ok(rx)
    }

    /// Waits for a queued request's response within `request.timeout.ms`.
    async fn wait(
        &self,
        rx: Option<oneshot::Receiver<Result<Bytes, ClientError>>>,
    ) -> Result<Bytes, ClientError> {
        let Some(rx) = rx else {
            return Ok(Bytes::new());
        };
        match tokio::time::timeout(self.inner.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => {
                // A response that never came leaves the pipeline unusable.
                self.inner
                    .closed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Err(ClientError::Timeout(format!(
                    "request to {}",
                    self.inner.addr
                )))
            }
        }
    }
}

/// At most this many pieces of waiting frames go into one gathering write.
const WRITE_PIECES: usize = 256;

/// Writes `pieces` in order with gathering writes, dropping each piece once sent.
async fn write_pieces<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    pieces: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    loop {
        while pieces.front().is_some_and(Bytes::is_empty) {
            pieces.pop_front();
        }
        if pieces.is_empty() {
            return Ok(());
        }
        let n = {
            let slices: Vec<std::io::IoSlice<'_>> = pieces
                .iter()
                .take(WRITE_PIECES)
                .map(|p| std::io::IoSlice::new(p))
                .collect();
            w.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        while left > 0 {
            let Some(front) = pieces.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                pieces.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
}

/// A request frame in pieces, for a gathering write: small parts are copied into a
/// buffer, large shared buffers (a Produce request's record batches) are kept by
/// reference, as Kafka's clients send batches from their own memory.
#[derive(Debug, Default)]
pub struct Pieces {
    pieces: Vec<Bytes>,
    tail: BytesMut,
}

impl Pieces {
    /// Where small parts are written.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Adds `b` by reference after what was written so far.
    pub fn attach(&mut self, b: Bytes) {
        if !self.tail.is_empty() {
            self.pieces.push(self.tail.split().freeze());
        }
        self.pieces.push(b);
    }

    /// The pieces, in order.
    pub fn finish(mut self) -> Vec<Bytes> {
        if !self.tail.is_empty() {
            self.pieces.push(self.tail.split().freeze());
        }
        self.pieces
    }
}

/// Reads exactly `size` bytes (a frame body) into fresh memory that is not zeroed first:
/// zeroing a large response before overwriting it cost consumers ~7% of their CPU.
pub async fn read_body<R: AsyncRead + Unpin>(r: &mut R, size: usize) -> std::io::Result<Bytes> {
    let mut body = BytesMut::with_capacity(size);
    fill(r, &mut body, size).await?;
    Ok(body.freeze())
}

/// The most one read takes from a socket. A receive copies under the socket's lock:
/// meanwhile the sender's packets queue in the socket's backlog, and the window update
/// that lets the sender go on leaves when the call returns. A fetch response of several
/// MiB read in one call kept the broker's `sendfile` waiting on it; reads of this size
/// keep both sides moving (iperf3 reads 128 KiB).
const READ_CHUNK_BYTES: u64 = 256 * 1024;

/// Reads from `r` until `buf` holds `size` bytes, at most [`READ_CHUNK_BYTES`] per read.
async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    size: usize,
) -> std::io::Result<()> {
    while buf.len() < size {
        let want = ((size - buf.len()) as u64).min(READ_CHUNK_BYTES);
        if (&mut *r).take(want).read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Frames larger than this get memory of their own instead of a reused buffer, so one
/// huge frame does not leave a huge buffer behind for the rest of a connection.
pub const REUSE_MAX_BYTES: usize = 1024 * 1024;

/// A buffer for the next frame of `size` bytes: `spare`'s memory when nothing holds it any
/// more and it is large enough, else a new one of exactly `size` (which `spare` becomes,
/// so it never grows past the largest frame), or memory of its own past
/// [`REUSE_MAX_BYTES`].
fn frame_buffer<'a>(
    spare: &'a mut BytesMut,
    own: &'a mut BytesMut,
    size: usize,
) -> &'a mut BytesMut {
    if size > REUSE_MAX_BYTES {
        own.reserve(size);
        return own;
    }
    spare.clear();
    if !spare.try_reclaim(size) {
        *spare = BytesMut::with_capacity(size);
    }
    spare
}

/// Like [`read_body`], into `spare`'s memory when it has room: once every frame read
/// before has been dropped, the same allocation serves the next one, which spares a
/// reader of frames one after another from touching fresh pages for each (the kernel
/// zeroes those on first touch). Frames over [`REUSE_MAX_BYTES`] are read as by
/// [`read_body`].
pub async fn read_body_reusing<R: AsyncRead + Unpin>(
    r: &mut R,
    size: usize,
    spare: &mut BytesMut,
) -> std::io::Result<Bytes> {
    let mut own = BytesMut::new();
    let buf = frame_buffer(spare, &mut own, size);
    fill(r, buf, size).await?;
    Ok(buf.split().freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pieces_arrive_whole_and_in_order_through_short_writes() {
        // A pipe that takes at most 7 bytes at a time cuts pieces anywhere, empty ones
        // included; the reader sees the concatenation.
        let sizes = [0usize, 0, 3, 0, 70_000, 1, 0, 7, 8, 64 * 1024 + 5, 2, 0];
        let mut pieces: VecDeque<Bytes> = VecDeque::new();
        let mut expected = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let p: Bytes = (0..*n).map(|k| (i * 31 + k) as u8).collect();
            expected.extend_from_slice(&p);
            pieces.push_back(p);
        }
        pieces.extend(std::iter::repeat_n(Bytes::from_static(b"x"), WRITE_PIECES));
        expected.extend(std::iter::repeat_n(b'x', WRITE_PIECES));
        let (mut w, mut r) = tokio::io::duplex(7);
        let total = expected.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; total];
            r.read_exact(&mut got).await.map(|_| got)
        });
        write_pieces(&mut w, &mut pieces).await.unwrap();
        assert!(pieces.is_empty());
        assert_eq!(reader.await.unwrap().unwrap(), expected);
    }

    /// A reader over bytes that records the most any one read asked for.
    struct Recording<'a> {
        data: &'a [u8],
        largest_ask: usize,
    }

    impl tokio::io::AsyncRead for Recording<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            self.largest_ask = self.largest_ask.max(buf.remaining());
            let n = buf.remaining().min(self.data.len());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn large_frames_arrive_whole_through_reads_of_bounded_size() {
        // Frames past the read size, and past the reuse limit, in a pattern that shows any
        // misplaced chunk.
        let sizes = [3 * 1024 * 1024 + 17, 600_000, READ_CHUNK_BYTES as usize, 5];
        let frames: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (0..*n).map(|k| (k % 251) as u8 ^ i as u8).collect())
            .collect();
        let wire = frames.concat();
        let mut r = Recording {
            data: &wire,
            largest_ask: 0,
        };
        let mut spare = BytesMut::new();
        for (i, want) in frames.iter().enumerate() {
            let got = if i % 2 == 0 {
                read_body(&mut r, want.len()).await.unwrap()
            } else {
                read_body_reusing(&mut r, want.len(), &mut spare)
                    .await
                    .unwrap()
            };
            assert!(got[..] == want[..], "frame {i} differs");
        }
        assert!(r.data.is_empty());
        assert_eq!(r.largest_ask, READ_CHUNK_BYTES as usize);
    }

    #[tokio::test]
    async fn reused_frame_memory_never_changes_a_frame_still_held() {
        // Frames of varied sizes back to back; some are kept while later ones are read.
        let sizes = [10usize, 70_000, 3, 70_000, 500, 1, 200_000, 64];
        let mut wire = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            wire.extend(std::iter::repeat_n(i as u8 + 1, *n));
        }
        let mut r = &wire[..];
        let mut spare = BytesMut::new();
        let mut kept = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            let frame = read_body_reusing(&mut r, *n, &mut spare).await.unwrap();
            assert_eq!(frame.len(), *n);
            assert!(frame.iter().all(|b| *b == i as u8 + 1), "frame {i}");
            if i % 2 == 0 {
                kept.push((i, frame));
            }
        }
        for (i, f) in &kept {
            assert!(
                f.iter().all(|b| *b == *i as u8 + 1),
                "kept frame {i} changed"
            );
        }
        // Once nothing holds the previous frame, the next one lands in the same memory.
        let mut wire2 = vec![7u8; 1000];
        wire2.extend(vec![8u8; 900]);
        let mut r2 = &wire2[..];
        let mut spare = BytesMut::new();
        let a = read_body_reusing(&mut r2, 1000, &mut spare).await.unwrap();
        let a_ptr = a.as_ptr();
        drop(a);
        let b = read_body_reusing(&mut r2, 900, &mut spare).await.unwrap();
        assert_eq!(b.as_ptr(), a_ptr);
        assert!(b.iter().all(|x| *x == 8));
        // A frame cut short is an error.
        let mut short = &[1u8, 2, 3][..];
        assert!(read_body_reusing(&mut short, 4, &mut spare).await.is_err());
    }

    /// A broker that answers ApiVersions v3 as librdkafka's mock cluster does (error 35,
    /// the body neither a v0 nor a v3 encoding of one entry) and v0..=2 properly; it
    /// records the versions asked for.
    async fn broker_with_apiversions_up_to_v2() -> (String, Arc<Mutex<Vec<i16>>>) {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            while let Ok(len) = s.read_i32().await {
                let mut req = vec![0u8; len as usize];
                s.read_exact(&mut req).await.unwrap();
                let version = i16::from_be_bytes([req[2], req[3]]);
                seen.lock().unwrap().push(version);
                let mut out = BytesMut::new();
                out.put_slice(&req[4..8]); // correlation id
                if version > 2 {
                    // Captured from the mock cluster (librdkafka 2.x).
                    out.put_slice(&[0, 35, 1, 0, 18, 0, 0, 0, 2, 0, 0, 0, 0]);
                } else {
                    let keys = [(ApiKey::ApiVersions, 0, 2), (ApiKey::Fetch, 0, 11)]
                        .into_iter()
                        .map(|(k, lo, hi)| {
                            kafka_protocol::messages::api_versions_response::ApiVersion::default()
                                .with_api_key(k as i16)
                                .with_min_version(lo)
                                .with_max_version(hi)
                        })
                        .collect();
                    ApiVersionsResponse::default()
                        .with_api_keys(keys)
                        .encode(&mut out, version)
                        .unwrap();
                }
                let mut framed = (out.len() as i32).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                s.write_all(&framed).await.unwrap();
            }
        });
        (addr, asked)
    }

    #[tokio::test]
    async fn a_version_refused_in_an_answer_that_names_no_version_falls_back_to_v0() {
        let (addr, asked) = broker_with_apiversions_up_to_v2().await;
        let conn = BrokerConnection::connect(&addr, "t", Duration::from_secs(5))
            .await
            .expect("connects once it falls back");
        assert_eq!(*asked.lock().unwrap(), vec![3, 0]);
        assert_eq!(
            conn.version_for::<kafka_protocol::messages::FetchRequest>(),
            Some(11)
        );
        assert_eq!(
            conn.version_for::<kafka_protocol::messages::ProduceRequest>(),
            None
        );
    }
}
