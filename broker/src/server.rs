//! The Kafka protocol server: listeners, per-connection request loops, background
//! maintenance, and clean shutdown.
//!
//! Each connection reads length-prefixed frames and handles them one at a time, in
//! order; the answers go out in request order (as Kafka guarantees) from a writer task,
//! so a Produce waiting for its fsync does not stop the next requests from being read
//! and appended (pipelining, and group commit across them). A frame that is
//! oversized, truncated or undecodable closes that one connection with a logged reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::broker::Broker;
use crate::handlers::{self, Reply, RequestContext, api_versions};
use crate::wire::{Chunk, Outbox, frame_fetch_response};

/// A connection idle this long drops a request buffer larger than [`IDLE_BUFFER_KEEP`]
/// (busy connections reuse theirs for the next request).
const IDLE_BUFFER_RELEASE: std::time::Duration = std::time::Duration::from_secs(1);
const IDLE_BUFFER_KEEP: usize = 64 * 1024;

/// A running server.
pub struct RunningServer {
    /// Bound addresses, in listener order.
    pub local_addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    broker: Arc<Broker>,
}

impl RunningServer {
    /// The broker being served.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, lets connections finish their current request, then shuts the
    /// broker down cleanly (flush, checkpoints, clean-shutdown marker).
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.broker.begin_stop();
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    tracing::warn!("connections still open at shutdown; closing them");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || broker.shutdown())
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Binds the configured listeners and starts serving.
pub async fn start(broker: Arc<Broker>) -> std::io::Result<RunningServer> {
    let (tx, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut local_addrs = Vec::new();
    for l in &broker.config.listeners {
        let listener = TcpListener::bind(l.bind_addr()).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.bind_addr()))
        })?;
        let addr = listener.local_addr()?;
        tracing::info!(listener = %l.name, %addr, "Kafka protocol listener ready");
        local_addrs.push(addr);
        tasks.spawn(accept_loop(listener, broker.clone(), rx.clone()));
    }
    tasks.spawn(maintenance(broker.clone(), rx.clone()));
    if broker.config.log_cleaner_enable {
        tasks.spawn(log_cleaner(broker.clone(), rx.clone()));
    }
    Ok(RunningServer {
        local_addrs,
        shutdown: tx,
        tasks,
        broker,
    })
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = tracing::info_span!("conn", %peer);
                    conns.spawn(connection(stream, peer, broker.clone(), shutdown.clone()).instrument(span));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// The log cleaner: a pass every `log.cleaner.backoff.ms`, on a blocking thread of its
/// own so that a long pass holds up neither retention nor the coordinators' timers.
async fn log_cleaner(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let backoff = Duration::from_millis(broker.config.log_cleaner_backoff_ms as u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => break,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.clean_logs()).await;
    }
}

/// Background work: retention, `flush.ms`, checkpoints.
async fn maintenance(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let c = &broker.config;
    // As Kafka, the first retention pass waits `log.initial.task.delay.ms` after start.
    let mut retention = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_millis(c.log_initial_task_delay_ms as u64),
        Duration::from_millis(c.log_retention_check_interval_ms as u64),
    );
    let mut flush = tokio::time::interval(Duration::from_millis(
        c.log_flush_scheduler_interval_ms as u64,
    ));
    let mut checkpoint = tokio::time::interval(Duration::from_millis(
        c.log_flush_offset_checkpoint_interval_ms as u64,
    ));
    let mut groups = tokio::time::interval(Duration::from_millis(100));
    for t in [&mut retention, &mut flush, &mut checkpoint, &mut groups] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = retention.tick() => {
                let b = broker.clone();
                let _ = tokio::task::spawn_blocking(move || b.enforce_retention()).await;
            }
            _ = flush.tick() => broker.flush_due().await,
            _ = groups.tick() => {
                broker.groups.tick(&broker).await;
                broker.txns.tick(&broker, crate::broker::now_ms());
            }
            _ = checkpoint.tick() => {
                let b = broker.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.write_checkpoints()).await {
                    tracing::error!("writing checkpoints failed: {e}");
                }
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    #[error("request size {0} is outside [8, socket.request.max.bytes={1}]")]
    BadSize(i32, i64),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// How many answers a connection may have waiting (handled, not yet written) before it
/// stops reading requests: the bound on per-connection pipelining.
const PIPELINE_DEPTH: usize = 16;

/// One answer in a connection's queue, in request order.
enum Outgoing {
    /// Ready to write (`None`: the request gets no answer).
    Ready(Option<Vec<Chunk>>),
    /// Being finished by its own task (a Produce waiting for its fsync).
    Later(tokio::task::JoinHandle<Result<Option<Vec<Chunk>>, CloseReason>>),
}

/// Answers that must go out before the next one: filled only while a deferred answer is
/// outstanding, so a connection without fsyncs writes every answer as soon as it has it.
#[derive(Default)]
struct Queue(std::collections::VecDeque<Outgoing>);

impl Queue {
    /// Waits until the oldest answer is ready and takes it (cancel-safe: a deferred
    /// answer's task keeps running and stays queued).
    async fn next(&mut self) -> Result<Option<Vec<Chunk>>, CloseReason> {
        let out = match self.0.front_mut() {
            None => return std::future::pending().await,
            Some(Outgoing::Ready(_)) => None,
            Some(Outgoing::Later(task)) => Some(
                task.await
                    .map_err(|e| CloseReason::Io(std::io::Error::other(e)))?,
            ),
        };
        match (self.0.pop_front(), out) {
            (Some(Outgoing::Ready(chunks)), _) => Ok(chunks),
            (_, Some(done)) => done,
            _ => unreachable!("the front was just looked at"),
        }
    }

    /// Writes the oldest answers that are ready, in order.
    async fn write_ready(&mut self, writer: &mut Outbox) -> Result<(), CloseReason> {
        while let Some(front) = self.0.front() {
            if let Outgoing::Later(task) = front
                && !task.is_finished()
            {
                break;
            }
            if let Some(chunks) = self.next().await? {
                writer.write_chunks(chunks).await?;
            }
        }
        Ok(())
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let host = format!("/{}", peer.ip());
    stream.set_nodelay(true).ok();
    set_buffer_sizes(&stream, &broker.config);
    let (r, w) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut writer = Outbox::new(w);
    // Requests are handled one at a time, in order. An answer waiting for an fsync is
    // queued and written when its task finishes, meanwhile the next requests are read
    // and handled; answers behind it queue too, so they all go out in request order.
    let mut queue = Queue::default();
    let mut spare = bytes::BytesMut::new();
    let max = broker.config.socket_request_max_bytes;
    let result: Result<(), CloseReason> = async {
        loop {
            // Answers only leave the buffer when no further request is already here
            // (pipelined answers share a write), or before waiting.
            if reader.buffer().is_empty() && !writer.is_empty() {
                writer.flush().await?;
            }
            // Wait for the next request, writing queued answers as they become ready.
            loop {
                if queue.0.len() >= PIPELINE_DEPTH {
                    if let Some(chunks) = queue.next().await? {
                        writer.write_chunks(chunks).await?;
                    }
                    continue;
                }
                tokio::select! {
                    biased;
                    out = queue.next() => {
                        if let Some(chunks) = out? {
                            writer.write_chunks(chunks).await?;
                        }
                        queue.write_ready(&mut writer).await?;
                        if reader.buffer().is_empty() {
                            writer.flush().await?;
                        }
                    }
                    got = reader.fill_buf() => match got {
                        Ok([]) => return Ok(()),
                        Ok(_) => break,
                        Err(e) => return Err(e.into()),
                    },
                    _ = shutdown.changed() => return Ok(()),
                    // An idle connection gives its request buffer back.
                    _ = tokio::time::sleep(IDLE_BUFFER_RELEASE), if spare.capacity() > IDLE_BUFFER_KEEP => {
                        spare = bytes::BytesMut::new();
                    }
                }
            }
            let size = match reader.read_i32().await {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if size < 8 || size as i64 > max {
                return Err(CloseReason::BadSize(size, max));
            }
            // The body goes into memory that is not zeroed first, reused from the last
            // request once nothing holds that any more.
            let frame =
                runnel_api::net::read_body_reusing(&mut reader, size as usize, &mut spare).await?;
            let handling = handle_frame(&broker, frame, &host);
            tokio::pin!(handling);
            let out = loop {
                tokio::select! {
                    biased;
                    out = &mut handling => break out?,
                    // earlier answers may go out while this request is handled
                    out = queue.next() => {
                        if let Some(chunks) = out? {
                            writer.write_chunks(chunks).await?;
                        }
                        writer.flush().await?;
                    }
                }
            };
            match out {
                Outgoing::Ready(Some(chunks)) if queue.0.is_empty() => {
                    writer.write_chunks(chunks).await?
                }
                Outgoing::Ready(None) if queue.0.is_empty() => {}
                out => queue.0.push_back(out),
            }
        }
    }
    .await;
    // Whatever the reason for closing, the requests already handled are answered.
    let drained: Result<(), CloseReason> = async {
        while !queue.0.is_empty() {
            if let Some(chunks) = queue.next().await? {
                writer.write_chunks(chunks).await?;
            }
        }
        writer.flush().await?;
        Ok(())
    }
    .await;
    for r in [result, drained] {
        match r {
            Ok(()) => {}
            Err(CloseReason::Io(e)) => {
                tracing::debug!("connection closed: {e}");
                return;
            }
            Err(reason) => {
                tracing::warn!("closing connection: {reason}");
                return;
            }
        }
    }
    tracing::debug!("connection closed");
}

/// `socket.send.buffer.bytes` / `socket.receive.buffer.bytes` on an accepted connection
/// (-1 leaves the OS's size, which it grows as the connection needs).
fn set_buffer_sizes(stream: &TcpStream, config: &crate::config::BrokerConfig) {
    let sock = socket2::SockRef::from(stream);
    if let Ok(n) = usize::try_from(config.socket_send_buffer_bytes)
        && let Err(e) = sock.set_send_buffer_size(n)
    {
        tracing::debug!("SO_SNDBUF {n}: {e}");
    }
    if let Ok(n) = usize::try_from(config.socket_receive_buffer_bytes)
        && let Err(e) = sock.set_recv_buffer_size(n)
    {
        tracing::debug!("SO_RCVBUF {n}: {e}");
    }
}

/// Decodes one request frame, runs its handler and encodes the response frame.
async fn handle_frame(
    broker: &Arc<Broker>,
    mut frame: Bytes,
    host: &str,
) -> Result<Outgoing, CloseReason> {
    let mut peek = frame.clone();
    let api_key_raw = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|_| CloseReason::UnknownApi(api_key_raw))?;
    if api_key == ApiKey::ApiVersions && !handlers::servable(api_key, version) && version >= 0 {
        // KIP-511: answer a too-new ApiVersions with a v0 response listing our ranges.
        let resp = api_versions::unsupported_version();
        return encode_response(correlation_id, 0, 0, |buf| resp.encode(buf, 0))
            .map(|b| Outgoing::Ready(Some(vec![Chunk::Bytes(b)])));
    }
    if !handlers::servable(api_key, version) {
        return Err(CloseReason::UnsupportedVersion(api_key, version));
    }
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| CloseReason::Malformed(format!("{api_key:?} v{version} header: {e}")))?;
    let request = RequestKind::decode(api_key, &mut frame, version)
        .map_err(|e| CloseReason::Malformed(format!("{api_key:?} v{version}: {e}")))?;
    if frame.has_remaining() {
        tracing::debug!(
            ?api_key,
            version,
            extra = frame.remaining(),
            "trailing bytes after request"
        );
    }
    let client = header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_default();
    let span =
        tracing::debug_span!("request", api = ?api_key, version, correlation_id, client = %client);
    let header_version = api_key.response_header_version(version);
    let ctx = RequestContext {
        client_id: client.clone(),
        client_host: host.to_string(),
    };
    let reply = handlers::dispatch(broker, request, version, &ctx)
        .instrument(span.clone())
        .await;
    let answer = move |reply| encode_reply(reply, correlation_id, header_version, version);
    match reply {
        Reply::Later(rest) => Ok(Outgoing::Later(tokio::spawn(
            async move { answer(rest.await.map_or(Reply::Nothing, Reply::Response)) }
                .instrument(span),
        ))),
        reply => answer(reply).map(Outgoing::Ready),
    }
}

/// Encodes a handler's reply as the response frame.
fn encode_reply(
    reply: Reply,
    correlation_id: i32,
    header_version: i16,
    version: i16,
) -> Result<Option<Vec<Chunk>>, CloseReason> {
    match reply {
        Reply::Nothing => Ok(None),
        Reply::Later(_) => unreachable!("handle_frame spawns deferred replies"),
        Reply::Response(response) => {
            encode_response(correlation_id, header_version, version, |buf| {
                response.encode(buf, version)
            })
            .map(|b| Some(vec![Chunk::Bytes(b)]))
        }
        Reply::Fetch(reply) => {
            match frame_fetch_response(
                &reply.response,
                version,
                header_version,
                correlation_id,
                &reply.slices,
            ) {
                Ok(chunks) => Ok(Some(chunks)),
                Err(e) => {
                    tracing::debug!("falling back to an in-memory fetch response: {e}");
                    let response = reply.into_inline()?;
                    encode_response(correlation_id, header_version, version, |buf| {
                        response.encode(buf, version)
                    })
                    .map(|b| Some(vec![Chunk::Bytes(b)]))
                }
            }
        }
    }
}

fn encode_response(
    correlation_id: i32,
    header_version: i16,
    _version: i16,
    body: impl FnOnce(&mut BytesMut) -> anyhow::Result<()>,
) -> Result<Bytes, CloseReason> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, header_version)
        .map_err(|e| CloseReason::Malformed(format!("encoding response header: {e}")))?;
    body(&mut buf).map_err(|e| CloseReason::Malformed(format!("encoding response: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}
