//! The producer: per-partition batching with `batch.size` and `linger.ms`, compression,
//! `acks`, retries within `delivery.timeout.ms`, `max.in.flight.requests.per.connection`,
//! `buffer.memory` back-pressure, and the partitioners.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_api::ClientError> {
//! use runnel_api::{Producer, ProducerConfig, ProducerRecord};
//!
//! let producer = Producer::connect(ProducerConfig::new("127.0.0.1:9092")).await?;
//! let delivery = producer.send(ProducerRecord::new("orders").key("o-1").value("{\"qty\":2}")).await?;
//! let meta = delivery.await?;
//! println!("written to partition {} at offset {}", meta.partition, meta.offset);
//! producer.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Delivery guarantees
//!
//! The producer is idempotent by default (`enable.idempotence`, as the Java client since
//! 3.0, unless `acks` is not `all`): the broker recognises a retried batch by its producer
//! id and sequence number and never writes it twice.
//!
//! With a `transactional.id` it writes to many partitions atomically and can commit a
//! consumer's offsets in the same transaction: exactly-once consume-transform-produce.
//! Records of aborted transactions never reach `read_committed` consumers, and a newer
//! producer with the same `transactional.id` fences an older one (a zombie).
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_api::ClientError> {
//! use std::time::Duration;
//! use runnel_api::{Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition};
//!
//! let mut cc = ConsumerConfig::new("127.0.0.1:9092");
//! cc.set("group.id", "upper-caser")?;
//! cc.set("enable.auto.commit", "false")?;
//! cc.set("isolation.level", "read_committed")?;
//! let mut consumer = Consumer::connect(cc).await?;
//! consumer.subscribe(&["words"])?;
//!
//! let mut pc = ProducerConfig::new("127.0.0.1:9092");
//! pc.set("transactional.id", "upper-caser-1")?; // stable across restarts of this instance
//! let producer = Producer::connect(pc).await?;
//! producer.init_transactions().await?; // fences any previous instance
//!
//! loop {
//!     let records = consumer.poll(Duration::from_millis(500)).await?;
//!     if records.is_empty() {
//!         continue;
//!     }
//!     producer.begin_transaction().await?;
//!     let mut next: Vec<(TopicPartition, i64)> = Vec::new();
//!     for r in &records {
//!         let upper = r.value.as_ref().map(|v| v.to_ascii_uppercase()).unwrap_or_default();
//!         producer.send(ProducerRecord::new("WORDS").value(upper)).await?;
//!         let tp = r.topic_partition();
//!         next.retain(|(t, _)| *t != tp);
//!         next.push((tp, r.offset + 1));
//!     }
//!     let group = consumer.group_metadata().expect("group.id is set");
//!     producer.send_offsets_to_transaction(&next, &group).await?;
//!     if let Err(e) = producer.commit_transaction().await {
//!         // Nothing of this batch is visible; abort and reprocess from the last commit.
//!         eprintln!("commit failed: {e}");
//!         producer.abort_transaction().await?;
//!         for (tp, _) in &next {
//!             if let Some(o) = consumer.committed(std::slice::from_ref(tp)).await?.get(tp) {
//!                 consumer.seek(tp, *o)?;
//!             }
//!         }
//!     }
//! }
//! # }
//! ```

use std::collections::{HashMap, VecDeque};

// The maps looked up for every record use a fast non-cryptographic hash (their keys
// are the application's own topic names and partition numbers).
use rustc_hash::FxHashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};

use crate::cluster::{ClientConfig, Cluster};
use crate::error::ClientError;
use crate::murmur2::partition_for_key;
use crate::records::{BatchBuilder, Compression, Header};

/// A user-supplied partitioner.
pub trait Partition: Send + Sync {
    /// Picks a partition in `0..partitions` for a record.
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partitions: i32,
    ) -> i32;
}

/// How records without an explicit partition are placed.
#[derive(Clone, Default)]
pub enum Partitioner {
    /// Kafka's default: murmur2 of the key, positive, mod partitions; records without a
    /// key stick to one partition for a whole batch, then move on (KIP-480/794).
    #[default]
    Default,
    /// Every record to the next partition in turn (`RoundRobinPartitioner`).
    RoundRobin,
    /// A user-supplied partitioner.
    Custom(Arc<dyn Partition>),
}

impl std::fmt::Debug for Partitioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partitioner::Default => f.write_str("Default"),
            Partitioner::RoundRobin => f.write_str("RoundRobin"),
            Partitioner::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Producer settings, with the Java client's names and defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Common settings.
    pub client: ClientConfig,
    /// `acks`: -1 (all), 0 or 1.
    pub acks: i16,
    /// `linger.ms`.
    pub linger: Duration,
    /// `batch.size` in bytes.
    pub batch_size: usize,
    /// `compression.type`.
    pub compression: Compression,
    /// `compression.gzip.level`, `compression.lz4.level`, `compression.zstd.level` (Kafka's
    /// defaults -1, 9 and 3; LZ4's 9 is its fast mode, as in the Java client).
    pub compression_levels: [i32; 3],
    /// `retries`.
    pub retries: u32,
    /// `delivery.timeout.ms`.
    pub delivery_timeout: Duration,
    /// `max.in.flight.requests.per.connection`.
    pub max_in_flight: usize,
    /// `buffer.memory` in bytes.
    pub buffer_memory: usize,
    /// `max.block.ms`: how long `send` waits for buffer memory.
    pub max_block: Duration,
    /// `max.request.size`.
    pub max_request_size: usize,
    /// `partitioner.class` equivalent.
    pub partitioner: Partitioner,
    /// `enable.idempotence` as set (None: on unless `acks`, `retries` or
    /// `max.in.flight.requests.per.connection` rule it out, as the Java client does).
    pub idempotence: Option<bool>,
    /// `transactional.id`.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`.
    pub transaction_timeout: Duration,
}

impl ProducerConfig {
    /// Defaults for `bootstrap` (as the Java client's, but idempotence comes later).
    pub fn new(bootstrap: &str) -> Self {
        Self {
            client: ClientConfig::new(bootstrap),
            acks: -1,
            linger: Duration::from_millis(5),
            batch_size: 16_384,
            compression: Compression::None,
            compression_levels: [
                crate::codec::GZIP_LEVELS.0,
                crate::codec::LZ4_LEVELS.0,
                crate::codec::ZSTD_LEVELS.0,
            ],
            retries: i32::MAX as u32,
            delivery_timeout: Duration::from_secs(120),
            max_in_flight: 5,
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            max_request_size: 1_048_576,
            partitioner: Partitioner::Default,
            idempotence: None,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }

    /// Whether the producer is idempotent: explicitly, because it is transactional, or
    /// by default when `acks=all`, `retries` > 0 and at most 5 requests in flight.
    pub fn is_idempotent(&self) -> bool {
        self.transactional_id.is_some()
            || self
                .idempotence
                .unwrap_or(self.acks == -1 && self.retries > 0 && self.max_in_flight <= 5)
    }

    fn validate(&self) -> Result<(), ClientError> {
        let explicit = self.idempotence == Some(true) || self.transactional_id.is_some();
        if self.transactional_id.is_some() && self.idempotence == Some(false) {
            return Err(ClientError::Config(
                "transactional.id requires enable.idempotence=true".into(),
            ));
        }
        if explicit {
            if self.acks != -1 {
                return Err(ClientError::Config(
                    "enable.idempotence requires acks=all".into(),
                ));
            }
            if self.max_in_flight > 5 {
                return Err(ClientError::Config(
                    "enable.idempotence requires max.in.flight.requests.per.connection <= 5".into(),
                ));
            }
            if self.retries == 0 {
                return Err(ClientError::Config(
                    "enable.idempotence requires retries > 0".into(),
                ));
            }
        }
        Ok(())
    }

    /// Applies a Java-client property (`acks`, `linger.ms`, `batch.size`,
    /// `compression.type`, `retries`, ...).
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ClientError> {
        if self.client.set(key, value)? {
            return Ok(self);
        }
        let bad = |why: &str| ClientError::Config(format!("{key}={value}: {why}"));
        let num = || value.trim().parse::<u64>().map_err(|_| bad("not a number"));
        match key {
            "acks" => {
                self.acks = match value.trim() {
                    "all" | "-1" => -1,
                    "0" => 0,
                    "1" => 1,
                    _ => return Err(bad("expected all, -1, 0 or 1")),
                }
            }
            "linger.ms" => self.linger = Duration::from_millis(num()?),
            "batch.size" => self.batch_size = num()? as usize,
            "compression.type" => {
                self.compression = Compression::parse(value).ok_or_else(|| bad("unknown codec"))?
            }
            "compression.gzip.level" | "compression.lz4.level" | "compression.zstd.level" => {
                let codec = match key {
                    "compression.gzip.level" => Compression::Gzip,
                    "compression.lz4.level" => Compression::Lz4,
                    _ => Compression::Zstd,
                };
                let level: i32 = value.trim().parse().map_err(|_| bad("not a number"))?;
                crate::codec::check_level(codec.id() as u8, level).map_err(|why| bad(&why))?;
                if let Some(slot) = level_slot(codec) {
                    self.compression_levels[slot] = level;
                }
            }
            "retries" => self.retries = num()?.min(u32::MAX as u64) as u32,
            "delivery.timeout.ms" => self.delivery_timeout = Duration::from_millis(num()?),
            "max.in.flight.requests.per.connection" => {
                self.max_in_flight = (num()? as usize).max(1)
            }
            "buffer.memory" => self.buffer_memory = num()? as usize,
            "max.block.ms" => self.max_block = Duration::from_millis(num()?),
            "max.request.size" => self.max_request_size = num()? as usize,
            "partitioner.class" => {
                self.partitioner = match value.trim() {
                    "org.apache.kafka.clients.producer.RoundRobinPartitioner"
                    | "round_robin"
                    | "roundrobin" => Partitioner::RoundRobin,
                    "" | "default" => Partitioner::Default,
                    _ => {
                        return Err(bad(
                            "only the default and RoundRobinPartitioner are built in",
                        ));
                    }
                }
            }
            "enable.idempotence" => {
                self.idempotence = Some(match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("expected true or false")),
                })
            }
            "transactional.id" => {
                self.transactional_id = Some(value.trim().to_string()).filter(|t| !t.is_empty())
            }
            "transaction.timeout.ms" => self.transaction_timeout = Duration::from_millis(num()?),
            "key.serializer" | "value.serializer" => {}
            _ => {
                return Err(ClientError::Config(format!(
                    "unknown producer property '{key}'"
                )));
            }
        }
        Ok(self)
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic. Shared, so that a loop sending to one topic does not copy its name for every
    /// record (with [`RecordMetadata::topic`], 8% of `runnel perf produce`'s CPU at 100 B).
    pub topic: Arc<str>,
    /// Partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value (`None` is a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Timestamp in ms; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic` with no key or value yet.
    pub fn new(topic: impl Into<Arc<str>>) -> Self {
        Self {
            topic: topic.into(),
            ..Default::default()
        }
    }
    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Sets the value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }
    /// Sets the partition.
    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }
    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }
    /// Sets the timestamp.
    pub fn timestamp(mut self, ts: i64) -> Self {
        self.timestamp = Some(ts);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic (shared by the records of a batch, as [`crate::ConsumerRecord::topic`] is).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset (-1 with acks=0).
    pub offset: i64,
    /// The record's timestamp (the broker's with LogAppendTime).
    pub timestamp: i64,
}

/// Resolves when the record is acknowledged (or fails).
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// Who learns a record's outcome: a [`DeliveryFuture`] or a callback.
enum Outcome {
    Future(oneshot::Sender<Result<RecordMetadata, ClientError>>),
    Callback(Box<dyn FnOnce(Result<RecordMetadata, ClientError>) + Send>),
}

impl Outcome {
    fn send(self, r: Result<RecordMetadata, ClientError>) {
        match self {
            Outcome::Future(tx) => {
                let _ = tx.send(r);
            }
            Outcome::Callback(f) => f(r),
        }
    }
}

/// What [`Producer::try_enqueue`] did with a record.
enum Enqueued {
    /// Queued, or refused.
    Done(Result<(), ClientError>),
    /// It has to wait (for metadata or `buffer.memory`): the slow path takes it.
    Wait(ProducerRecord, Outcome),
    /// Queued, and the sender woken.
    Woke,
}

/// A record's notification and its timestamp.
type Waiter = (Outcome, i64);

struct OpenBatch {
    builder: BatchBuilder,
    waiters: Vec<Waiter>,
    created: Instant,
    /// The `buffer.memory` its records hold.
    memory: MemoryHold,
}

/// `buffer.memory` held by one batch's records, given back when the batch is dropped
/// (a count, not a permit per record: the hot path only adds to it).
struct MemoryHold {
    semaphore: Arc<Semaphore>,
    permits: usize,
}

impl Drop for MemoryHold {
    fn drop(&mut self) {
        if self.permits > 0 {
            self.semaphore.add_permits(self.permits);
        }
    }
}

/// What the accumulator keeps per topic: the send path finds it with one lookup of the
/// topic's name per record (by `&str`: no key to allocate).
#[derive(Default)]
struct TopicState {
    /// The partition count read from the cluster's metadata, with the metadata's
    /// generation then (none yet: the send path has to ask).
    count: Option<(u64, usize)>,
    /// The uniform sticky partitioner's current partition.
    sticky: Option<i32>,
    /// The round-robin partitioner's counter.
    round_robin: u32,
    /// The batches being filled, by partition.
    open: FxHashMap<i32, OpenBatch>,
}

impl TopicState {
    /// The partition count, if it was read at metadata generation `generation`.
    fn count_at(&self, generation: u64) -> Option<usize> {
        self.count.filter(|(g, _)| *g == generation).map(|(_, c)| c)
    }
}

/// Removes and returns the open batches `take` selects, of every topic.
fn take_open_where(
    topics: &mut FxHashMap<String, TopicState>,
    take: impl Fn(&OpenBatch) -> bool,
) -> Vec<((String, i32), OpenBatch)> {
    let mut out = Vec::new();
    for (topic, t) in topics.iter_mut() {
        let chosen: Vec<i32> = t
            .open
            .iter()
            .filter(|(_, b)| take(b))
            .map(|(p, _)| *p)
            .collect();
        for p in chosen {
            if let Some(b) = t.open.remove(&p) {
                out.push(((topic.clone(), p), b));
            }
        }
    }
    out
}

struct ReadyBatch {
    topic: String,
    partition: i32,
    bytes: Bytes,
    waiters: Vec<Waiter>,
    _memory: MemoryHold,
    first_ready: Instant,
    attempts: u32,
    retry_at: Option<Instant>,
    /// Close order (per producer): a retried batch goes back in front of its partition's
    /// later batches.
    order: u64,
    /// It was sent and no answer came (a dropped connection, a timeout): the broker may
    /// have written it.
    maybe_written: bool,
}

#[derive(Default)]
struct Accumulator {
    topics: FxHashMap<String, TopicState>,
    ready: VecDeque<ReadyBatch>,
    /// Buffers of finished batches, for the next batches to fill (fresh memory for
    /// every batch meant page faults and zeroed pages for every batch).
    spare_buffers: Vec<BytesMut>,
    /// Next sequence number per partition (idempotent producers).
    sequences: HashMap<(String, i32), i32>,
    /// Producer id and epoch (-1, -1 when not idempotent).
    ids: (i64, i16),
    /// Whether batches are built transactional.
    transactional: bool,
    /// Batches in flight per partition (idempotent producers).
    in_flight: HashMap<(String, i32), usize>,
    /// Partitions where a batch of this producer id and epoch was acknowledged: the broker
    /// holds the producer's sequence there, so a later batch that arrives before an
    /// earlier one (which failed) is refused as out of order instead of appended.
    acked: std::collections::HashSet<(String, i32)>,
    /// The next batch's [`ReadyBatch::order`].
    next_order: u64,
    /// Partitions of which a batch failed since the sender's last pass: batches of them
    /// that the dispatcher has not sent yet go back to `ready`, behind the failed one, so
    /// no later batch is written while earlier ones wait to be retried (which could
    /// push those out of the broker's window of 5 recognised duplicates).
    stalled: std::collections::HashSet<(String, i32)>,
    /// An idempotent (not transactional) producer's batch failed for good after it was
    /// given its sequence numbers: the broker will never take the later sequences of that
    /// partition. Once nothing is in flight the sender takes a new producer id and
    /// numbers the waiting batches afresh (the Java client bumps the epoch instead).
    reset_ids: bool,
}

/// Whether an idempotent producer's next batch of a partition may be handed to the
/// dispatcher now, with `in_flight` batches of the partition handed over and not yet
/// answered. Several may be, as with the Java client, once the broker holds the
/// producer's sequence for the partition (`acked`); before that, a later batch arriving
/// first (its predecessor failed) would be appended out of order, so one goes at a time.
/// On the wire they are bounded by the connection's max.in.flight.requests.per.connection
/// (at most 5, the broker's duplicate window), one batch per partition per request; and
/// once one of them fails, the dispatcher sends no later batch of the partition
/// (`Accumulator::stalled`). A retried batch waits for its partition's in-flight batches
/// to come back: they fail as out of order behind it and are retried after it.
fn may_send(in_flight: usize, acked: bool, retry: bool) -> bool {
    in_flight == 0 || (acked && !retry)
}

/// The transactional side of a producer.
#[derive(Default)]
struct TxnState {
    link: Option<crate::txn::CoordinatorLink>,
    initialized: bool,
    open: bool,
    partitions: std::collections::HashSet<(String, i32)>,
    /// The coordinator knows of the open transaction (a partition or offsets were added).
    started: bool,
}

struct Inner {
    cluster: Arc<Cluster>,
    config: ProducerConfig,
    acc: Mutex<Accumulator>,
    wake: Notify,
    memory: Arc<Semaphore>,
    in_flight: Mutex<HashMap<i32, Arc<Semaphore>>>,
    outstanding: AtomicUsize,
    idle: Notify,
    closed: AtomicBool,
    txn: tokio::sync::Mutex<TxnState>,
    /// A transaction is open (checked by `send` without the async lock).
    txn_open: AtomicBool,
    /// The first failed send inside the open transaction: it can only be aborted now.
    txn_error: Mutex<Option<ClientError>>,
    /// When the producer started, and from when a send that wakes the sender yields to it
    /// again (µs after `started`).
    started: Instant,
    next_sender_turn: AtomicU64,
}

/// An async Kafka producer. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    /// Connects to the cluster and starts the sender.
    pub async fn connect(config: ProducerConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let cluster = Cluster::connect(config.client.clone()).await?;
        let mut acc = Accumulator {
            ids: (-1, -1),
            ..Default::default()
        };
        if config.is_idempotent() && config.transactional_id.is_none() {
            acc.ids = idempotent_producer_id(&cluster, config.max_block).await?;
        }
        let memory = Arc::new(Semaphore::new(
            config.buffer_memory.clamp(1, Semaphore::MAX_PERMITS),
        ));
        let inner = Arc::new(Inner {
            cluster,
            config,
            acc: Mutex::new(acc),
            wake: Notify::new(),
            memory,
            in_flight: Mutex::new(HashMap::new()),
            outstanding: AtomicUsize::new(0),
            idle: Notify::new(),
            closed: AtomicBool::new(false),
            txn: tokio::sync::Mutex::new(TxnState::default()),
            txn_open: AtomicBool::new(false),
            txn_error: Mutex::new(None),
            started: Instant::now(),
            next_sender_turn: AtomicU64::new(0),
        });
        tokio::spawn(sender_loop(inner.clone()));
        Ok(Self { inner })
    }

    fn acc(&self) -> std::sync::MutexGuard<'_, Accumulator> {
        self.inner.acc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record. The outer future completes once the record is buffered (it waits
    /// for `buffer.memory` up to `max.block.ms`); the returned [`DeliveryFuture`]
    /// completes when the broker acknowledges it.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(record, Outcome::Future(tx)).await?;
        Ok(DeliveryFuture { rx })
    }

    /// Queues a record like [`Producer::send`], and calls `callback` with its outcome
    /// once the broker acknowledges it or it fails (as Java's `send(record, callback)`).
    /// The callback runs on the producer's sender task: keep it short.
    pub async fn send_with_callback<F>(
        &self,
        record: ProducerRecord,
        callback: F,
    ) -> Result<(), ClientError>
    where
        F: FnOnce(Result<RecordMetadata, ClientError>) + Send + 'static,
    {
        self.enqueue(record, Outcome::Callback(Box::new(callback)))
            .await
    }

    async fn enqueue(&self, record: ProducerRecord, notify: Outcome) -> Result<(), ClientError> {
        match self.try_enqueue(record, notify) {
            Enqueued::Done(r) => r,
            Enqueued::Woke => {
                self.give_the_sender_a_turn().await;
                Ok(())
            }
            // Boxed: the slow path's awaits (metadata, buffer.memory with a timeout) make a
            // large future, which every send would otherwise build and move.
            Enqueued::Wait(record, notify) => Box::pin(self.enqueue_slow(record, notify)).await,
        }
    }

    /// Queues a record without waiting when its topic's partition count is known and
    /// `buffer.memory` has room: the common case, with one lock and one lookup of the
    /// topic.
    fn try_enqueue(&self, record: ProducerRecord, notify: Outcome) -> Enqueued {
        let cfg = &self.inner.config;
        if self.inner.closed.load(Ordering::SeqCst) {
            return Enqueued::Done(Err(ClientError::Closed));
        }
        if cfg.transactional_id.is_some() && !self.inner.txn_open.load(Ordering::SeqCst) {
            return Enqueued::Done(Err(ClientError::Config(
                "a transactional producer sends inside a transaction: call begin_transaction"
                    .into(),
            )));
        }
        let permits = match self.permits_for(&record) {
            Ok(p) => p,
            Err(e) => return Enqueued::Done(Err(e)),
        };
        // Held as a permit until the record is in a batch (given back if anything before
        // that fails), then as the batch's count.
        let permit = match self.inner.memory.try_acquire_many(permits as u32) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => {
                return Enqueued::Done(Err(ClientError::Closed));
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                return Enqueued::Wait(record, notify);
            }
        };
        let generation = self.inner.cluster.generation();
        let wake = {
            let mut acc = self.acc();
            let Some(count) = acc
                .topics
                .get(&*record.topic)
                .and_then(|t| t.count_at(generation))
            else {
                // (The permit goes back as it drops.)
                return Enqueued::Wait(record, notify);
            };
            self.append(&mut acc, record, notify, count, permit, permits)
        };
        match wake {
            Ok(true) => {
                self.inner.wake.notify_one();
                Enqueued::Woke
            }
            Ok(false) => Enqueued::Done(Ok(())),
            Err(e) => Enqueued::Done(Err(e)),
        }
    }

    /// Lets the sender run after a send woke it, at most once per `linger.ms` (1 ms at
    /// least). The sender is woken from the application's task, and tokio keeps a task
    /// woken that way in the worker's next-task slot, which no other worker takes from,
    /// until the waking task yields. An application that sends in a loop with nothing else
    /// to wait for would hold its batches until `buffer.memory` filled, long past
    /// `linger.ms`. Yielding on every wake instead sent each batch alone as it filled,
    /// which cost 15-55% of the throughput at 100 B records.
    async fn give_the_sender_a_turn(&self) {
        let now = self.inner.started.elapsed().as_micros() as u64;
        if now >= self.inner.next_sender_turn.load(Ordering::Relaxed) {
            let gap = self.inner.config.linger.max(Duration::from_millis(1));
            let next = now + gap.as_micros() as u64;
            self.inner.next_sender_turn.store(next, Ordering::Relaxed);
            tokio::task::yield_now().await;
        }
    }

    /// [`Producer::try_enqueue`] for a record that has to wait: for its topic's partition
    /// count (cached while the cluster's metadata stays unchanged) or for `buffer.memory`
    /// (up to `max.block.ms`).
    async fn enqueue_slow(
        &self,
        record: ProducerRecord,
        notify: Outcome,
    ) -> Result<(), ClientError> {
        let cfg = &self.inner.config;
        let generation = self.inner.cluster.generation();
        let cached = self
            .acc()
            .topics
            .get(&*record.topic)
            .and_then(|t| t.count_at(generation));
        let count = match cached {
            Some(c) => c,
            None => {
                let c = self
                    .inner
                    .cluster
                    .partition_count_or_create(&record.topic)
                    .await?;
                self.acc()
                    .topics
                    .entry(record.topic.to_string())
                    .or_default()
                    .count = Some((generation, c));
                c
            }
        };
        let permits = self.permits_for(&record)?;
        let memory = &self.inner.memory;
        let permit = match memory.try_acquire_many(permits as u32) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(ClientError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                tokio::time::timeout(cfg.max_block, memory.acquire_many(permits as u32))
                    .await
                    .map_err(|_| {
                        ClientError::Timeout(format!(
                            "buffer.memory full for max.block.ms ({:?})",
                            cfg.max_block
                        ))
                    })?
                    .map_err(|_| ClientError::Closed)?
            }
        };
        let wake = {
            let mut acc = self.acc();
            self.append(&mut acc, record, notify, count, permit, permits)?
        };
        if wake {
            self.inner.wake.notify_one();
            self.give_the_sender_a_turn().await;
        }
        Ok(())
    }

    /// The `buffer.memory` a record holds while queued; an error if it can never be sent.
    fn permits_for(&self, record: &ProducerRecord) -> Result<usize, ClientError> {
        let cfg = &self.inner.config;
        let size = BatchBuilder::record_size(
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        if size > cfg.max_request_size {
            return Err(ClientError::Broker {
                code: 10,
                message: format!("record of {size} bytes exceeds max.request.size"),
            });
        }
        Ok(size.min(cfg.buffer_memory).max(1))
    }

    /// Appends a record of a topic with `count` partitions to its partition's open batch
    /// (closing that batch first when the record does not fit); whether the sender should
    /// wake up.
    fn append(
        &self,
        acc: &mut Accumulator,
        record: ProducerRecord,
        notify: Outcome,
        count: usize,
        permit: tokio::sync::SemaphorePermit<'_>,
        permits: usize,
    ) -> Result<bool, ClientError> {
        let cfg = &self.inner.config;
        let count = count as i32;
        if count == 0 {
            return Err(ClientError::UnknownTopic(record.topic.to_string()));
        }
        if let Some(p) = record.partition
            && (p < 0 || p >= count)
        {
            return Err(ClientError::Config(format!(
                "partition {p} of {} does not exist ({count} partitions)",
                record.topic
            )));
        }
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let mut wake = false;
        let mut t = acc
            .topics
            .get_mut(&*record.topic)
            .expect("a topic's state exists once its partition count is known");
        let mut partition = match record.partition {
            Some(p) => p,
            None => choose_partition(t, cfg, &record, count),
        };
        // As Java's producer: a record that does not fit the open batch closes it and
        // starts the next one (on the next sticky partition for unkeyed records), so a
        // batch stays within batch.size unless one record alone is larger.
        let fits = |b: &OpenBatch| {
            b.builder.is_empty()
                || b.builder.size_bytes()
                    + b.builder.appended_size(
                        timestamp,
                        record.key.as_deref(),
                        record.value.as_deref(),
                        &record.headers,
                    )
                    <= cfg.batch_size
        };
        if t.open.get(&partition).is_some_and(|b| !fits(b)) {
            let full = t.open.remove(&partition).expect("just seen");
            close_batch(acc, cfg, (record.topic.to_string(), partition), full);
            wake = true;
            // (Once per batch: looked up again after closing borrowed the accumulator.)
            t = acc.topics.get_mut(&*record.topic).expect("still there");
            if record.partition.is_none() {
                partition = choose_partition(t, cfg, &record, count);
            }
        }
        let batch = match t.open.entry(partition) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                // A new batch gives the sender a new linger deadline to wait for.
                wake = true;
                let per_batch = (cfg.batch_size / permits).clamp(1, 4096);
                e.insert(OpenBatch {
                    builder: match acc.spare_buffers.pop() {
                        Some(buffer) => BatchBuilder::reusing(buffer, cfg.batch_size),
                        None => BatchBuilder::with_capacity(cfg.batch_size),
                    },
                    waiters: Vec::with_capacity(per_batch),
                    created: Instant::now(),
                    memory: MemoryHold {
                        semaphore: self.inner.memory.clone(),
                        permits: 0,
                    },
                })
            }
        };
        batch.builder.append(
            timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
        batch.waiters.push((notify, timestamp));
        permit.forget();
        batch.memory.permits += permits;
        self.inner.outstanding.fetch_add(1, Ordering::SeqCst);
        if batch.builder.size_bytes() >= cfg.batch_size {
            let full = t.open.remove(&partition).expect("just appended to");
            close_batch(acc, cfg, (record.topic.to_string(), partition), full);
            wake = true;
        } else if cfg.linger.is_zero() {
            wake = true;
        }
        Ok(wake)
    }

    /// Sends every buffered record now and waits until all are acknowledged or failed.
    pub async fn flush(&self) -> Result<(), ClientError> {
        loop {
            let idle = self.inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let mut acc = self.acc();
                for (k, b) in take_open_where(&mut acc.topics, |_| true) {
                    close_batch(&mut acc, &self.inner.config, k, b);
                }
            }
            self.inner.wake.notify_one();
            if self.inner.outstanding.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            idle.await;
        }
    }

    /// Flushes, then stops the sender.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.flush().await?;
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Registers the `transactional.id` with its coordinator: gets the producer id and a
    /// new epoch, which fences any older producer with the same id and aborts its open
    /// transaction. Call once before the first [`Producer::begin_transaction`].
    pub async fn init_transactions(&self) -> Result<(), ClientError> {
        let id = self.transactional_id()?;
        let mut txn = self.inner.txn.lock().await;
        let timeout = self.inner.config.max_block;
        let link = txn.link.get_or_insert_with(|| {
            crate::txn::CoordinatorLink::new(self.inner.cluster.clone(), &id, 1, timeout)
        });
        self.renew_producer_id(link, &id).await?;
        txn.initialized = true;
        txn.open = false;
        txn.partitions.clear();
        Ok(())
    }

    /// Starts a transaction: what is sent until [`Producer::commit_transaction`] or
    /// [`Producer::abort_transaction`] becomes visible to `read_committed` consumers
    /// all at once, or not at all.
    pub async fn begin_transaction(&self) -> Result<(), ClientError> {
        self.transactional_id()?;
        let mut txn = self.inner.txn.lock().await;
        if !txn.initialized {
            return Err(ClientError::Config(
                "call init_transactions before begin_transaction".into(),
            ));
        }
        if txn.open {
            return Err(ClientError::Config("a transaction is already open".into()));
        }
        txn.open = true;
        txn.started = false;
        txn.partitions.clear();
        *self
            .inner
            .txn_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.inner.txn_open.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Commits a consumer's positions (the offsets of the next records to read) as part
    /// of the open transaction: they become the group's committed offsets if and only if
    /// the transaction commits. `group` comes from [`crate::Consumer::group_metadata`].
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(crate::TopicPartition, i64)],
        group: &crate::ConsumerGroupMetadata,
    ) -> Result<(), ClientError> {
        let id = self.transactional_id()?;
        let mut txn = self.inner.txn.lock().await;
        if !txn.open {
            return Err(ClientError::Config("no transaction is open".into()));
        }
        let ids = self.inner.acc_ids();
        let link = txn
            .link
            .as_mut()
            .ok_or_else(|| ClientError::Config("init_transactions was not called".into()))?;
        crate::txn::add_offsets(link, &id, ids, &group.group_id).await?;
        txn.started = true;
        let mut group_link = crate::txn::CoordinatorLink::new(
            self.inner.cluster.clone(),
            &group.group_id,
            0,
            self.inner.config.max_block,
        );
        crate::txn::txn_offset_commit(&mut group_link, &id, ids, group, offsets).await
    }

    /// Sends everything buffered, then commits the open transaction. If any send in it
    /// failed, nothing is committed: the error is returned and the transaction must be
    /// aborted.
    pub async fn commit_transaction(&self) -> Result<(), ClientError> {
        self.end_transaction(true).await
    }

    /// Aborts the open transaction: nothing sent in it becomes visible to
    /// `read_committed` consumers.
    pub async fn abort_transaction(&self) -> Result<(), ClientError> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<(), ClientError> {
        let id = self.transactional_id()?;
        if !self.inner.txn.lock().await.open {
            return Err(ClientError::Config("no transaction is open".into()));
        }
        self.flush().await?;
        if commit
            && let Some(e) = self
                .inner
                .txn_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        {
            return Err(e);
        }
        let mut txn = self.inner.txn.lock().await;
        let ids = self.inner.acc_ids();
        // A transaction that never added a partition or offsets has nothing to end on the
        // coordinator (it never left Empty there).
        if txn.started {
            let link = txn
                .link
                .as_mut()
                .ok_or_else(|| ClientError::Config("init_transactions was not called".into()))?;
            crate::txn::end_txn(link, &id, ids, commit).await?;
        }
        txn.open = false;
        txn.started = false;
        txn.partitions.clear();
        self.inner.txn_open.store(false, Ordering::SeqCst);
        let failed = self
            .inner
            .txn_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        if failed && !commit {
            // Batches failed mid-transaction leave gaps in the sequence numbers: start
            // over with a new epoch (and sequence 0) as Kafka's clients do.
            let link = txn
                .link
                .as_mut()
                .ok_or_else(|| ClientError::Config("init_transactions was not called".into()))?;
            self.renew_producer_id(link, &id).await?;
        }
        Ok(())
    }

    /// InitProducerId for the transactional id: a new epoch, sequences from 0.
    async fn renew_producer_id(
        &self,
        link: &mut crate::txn::CoordinatorLink,
        id: &str,
    ) -> Result<(), ClientError> {
        let ms = self
            .inner
            .config
            .transaction_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let ids = crate::txn::init_producer_id(link, id, ms).await?;
        let mut acc = self.acc();
        acc.ids = ids;
        acc.sequences.clear();
        acc.acked.clear();
        acc.transactional = true;
        Ok(())
    }

    fn transactional_id(&self) -> Result<String, ClientError> {
        self.inner
            .config
            .transactional_id
            .clone()
            .ok_or_else(|| ClientError::Config("transactional.id is not set".into()))
    }

    /// Partition count of a topic (from metadata).
    pub async fn partitions_for(&self, topic: &str) -> Result<i32, ClientError> {
        Ok(self
            .inner
            .cluster
            .topic_or_create(topic)
            .await?
            .partitions
            .len() as i32)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn choose_partition(
    t: &mut TopicState,
    cfg: &ProducerConfig,
    r: &ProducerRecord,
    count: i32,
) -> i32 {
    match &cfg.partitioner {
        Partitioner::Custom(p) => p
            .partition(&r.topic, r.key.as_deref(), r.value.as_deref(), count)
            .rem_euclid(count),
        Partitioner::RoundRobin => {
            let p = (t.round_robin % count as u32) as i32;
            t.round_robin = t.round_robin.wrapping_add(1);
            p
        }
        Partitioner::Default => match &r.key {
            Some(k) => partition_for_key(k, count),
            None => {
                // Uniform sticky: stay on the partition until its batch is closed.
                let current = t.sticky;
                match current {
                    Some(p) if p < count && t.open.contains_key(&p) => p,
                    _ => {
                        let mut rng = rand::rng();
                        let mut p = rng.random_range(0..count);
                        if count > 1 && Some(p) == current {
                            p = (p + 1 + rng.random_range(0..count - 1)) % count;
                        }
                        t.sticky = Some(p);
                        p
                    }
                }
            }
        },
    }
}

/// Where a codec's level is in [`ProducerConfig::compression_levels`] (`None`: no levels).
fn level_slot(codec: Compression) -> Option<usize> {
    match codec {
        Compression::Gzip => Some(0),
        Compression::Lz4 => Some(1),
        Compression::Zstd => Some(2),
        _ => None,
    }
}

fn close_batch(acc: &mut Accumulator, cfg: &ProducerConfig, key: (String, i32), b: OpenBatch) {
    let (pid, epoch) = acc.ids;
    let seq = if pid >= 0 {
        // Sequences are fixed when a batch closes, so a retry resends the same numbers
        // and the broker recognises it.
        take_sequence(&mut acc.sequences, key.clone(), b.builder.len())
    } else {
        -1
    };
    let level = level_slot(cfg.compression).map(|slot| cfg.compression_levels[slot]);
    let bytes =
        b.builder
            .into_batch_at_level(cfg.compression, level, (pid, epoch, seq), acc.transactional);
    acc.ready.push_back(ReadyBatch {
        topic: key.0,
        partition: key.1,
        bytes,
        waiters: b.waiters,
        _memory: b.memory,
        first_ready: Instant::now(),
        attempts: 0,
        retry_at: None,
        order: acc.next_order,
        maybe_written: false,
    });
    acc.next_order += 1;
}

/// The base sequence for a partition's next batch of `records`, advancing the counter
/// (sequences wrap at i32::MAX, as Kafka's do).
fn take_sequence(
    sequences: &mut HashMap<(String, i32), i32>,
    key: (String, i32),
    records: usize,
) -> i32 {
    let next = sequences.entry(key).or_insert(0);
    let s = *next;
    *next = ((s as i64 + records as i64) % (i32::MAX as i64 + 1)) as i32;
    s
}

/// Spare batch buffers kept for reuse, at most (and at most this many bytes of them).
const SPARE_BUFFERS: usize = 16;
const SPARE_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A batch is no longer in flight: the next one of its partition may go, and its
/// buffer may serve a later batch.
fn release(inner: &Inner, b: &mut ReadyBatch) {
    let bytes = std::mem::take(&mut b.bytes);
    let mut acc = inner.acc.lock().unwrap_or_else(|p| p.into_inner());
    if landed(&mut acc, &b.topic, b.partition) {
        inner.wake.notify_one();
    }
    let room = inner.config.batch_size + crate::records::BATCH_HEADER_BYTES;
    if acc.spare_buffers.len() < SPARE_BUFFERS.min(SPARE_BUFFER_BYTES / room)
        && let Ok(buffer) = bytes.try_into_mut()
        && buffer.capacity() >= room
        && buffer.capacity() <= 2 * room
    {
        acc.spare_buffers.push(buffer);
    }
}

/// A batch of the partition is no longer in flight; whether it was.
fn landed(acc: &mut Accumulator, topic: &str, partition: i32) -> bool {
    let key = (topic.to_string(), partition);
    match acc.in_flight.get_mut(&key) {
        Some(n) if *n > 1 => *n -= 1,
        Some(_) => {
            acc.in_flight.remove(&key);
        }
        None => return false,
    }
    true
}

fn finish(inner: &Inner, mut batch: ReadyBatch, result: Result<(i64, i64), ClientError>) {
    {
        let mut acc = inner.acc.lock().unwrap_or_else(|p| p.into_inner());
        if acc.ids.0 >= 0 {
            if result.is_ok() {
                acc.acked.insert((batch.topic.clone(), batch.partition));
            } else if inner.config.transactional_id.is_none()
                && crate::records::batch_producer_id(&batch.bytes) == acc.ids.0
            {
                // (A batch numbered under an older id leaves no gap in the current one.)
                acc.reset_ids = true;
            }
        }
    }
    release(inner, &mut batch);
    let n = batch.waiters.len();
    // One copy of the name per batch: a String per record was an allocation, a copy and a
    // free per acknowledged record.
    let topic: Arc<str> = Arc::from(batch.topic.as_str());
    for (i, (notify, ts)) in batch.waiters.into_iter().enumerate() {
        let r = match &result {
            Ok((base, append_time)) => Ok(RecordMetadata {
                topic: topic.clone(),
                partition: batch.partition,
                offset: if *base < 0 { -1 } else { base + i as i64 },
                timestamp: if *append_time >= 0 { *append_time } else { ts },
            }),
            Err(e) => Err(e.clone()),
        };
        notify.send(r);
    }
    if let Err(e) = &result
        && inner.config.transactional_id.is_some()
    {
        let mut slot = inner.txn_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| e.clone());
    }
    if inner.outstanding.fetch_sub(n, Ordering::SeqCst) == n {
        inner.idle.notify_waiters();
    }
}

/// Takes a new producer id for an idempotent producer whose sequences have a gap (see
/// `Accumulator::reset_ids`) and renumbers the batches waiting to be sent, in close order
/// per partition, from sequence 0. Only once nothing is in flight, so no answer about an
/// old sequence can arrive after. Whether the sender may go on (false: try again later).
async fn reset_producer_id(inner: &Arc<Inner>) -> bool {
    {
        let acc = inner.acc.lock().unwrap_or_else(|p| p.into_inner());
        if !acc.reset_ids {
            return true;
        }
        if !acc.in_flight.is_empty() {
            return false;
        }
    }
    let ids = match idempotent_producer_id(&inner.cluster, Duration::ZERO).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::debug!("new producer id: {e}");
            return false;
        }
    };
    let unknown = {
        let mut acc = inner.acc.lock().unwrap_or_else(|p| p.into_inner());
        acc.ids = ids;
        acc.sequences.clear();
        acc.acked.clear();
        acc.reset_ids = false;
        // A batch the broker may already hold would be written twice under the new id:
        // it fails instead (below), as its delivery timeout would have made it.
        let (mut ready, unknown): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut acc.ready)
            .into_iter()
            .partition(|b| !b.maybe_written);
        for b in ready.iter_mut() {
            let key = (b.topic.clone(), b.partition);
            let count = crate::records::batch_record_count(&b.bytes).max(0) as usize;
            let seq = take_sequence(&mut acc.sequences, key, count);
            if let Some(bytes) = crate::records::restamp_producer(&b.bytes, ids.0, ids.1, seq) {
                b.bytes = bytes;
            }
        }
        acc.ready = ready;
        unknown
    };
    for b in unknown {
        finish(
            inner,
            b,
            Err(ClientError::Timeout(
                "no answer for this batch, and an earlier batch of its partition failed: \
                 the producer took a new producer id, so a retry could be written twice"
                    .into(),
            )),
        );
    }
    true
}

async fn sender_loop(inner: Arc<Inner>) {
    loop {
        let wake = inner.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let may_go = reset_producer_id(&inner).await;
        let now = Instant::now();
        let mut next_deadline: Option<Instant> = None;
        let mut due = Vec::new();
        {
            let mut acc = inner.acc.lock().unwrap_or_else(|p| p.into_inner());
            // What failed before this pass is in `ready` now, where order is kept.
            acc.stalled.clear();
            // Lingered long enough: close.
            let linger = inner.config.linger;
            for (k, b) in take_open_where(&mut acc.topics, |b| now >= b.created + linger) {
                close_batch(&mut acc, &inner.config, k, b);
            }
            for b in acc.topics.values().flat_map(|t| t.open.values()) {
                let d = b.created + inner.config.linger;
                next_deadline = Some(next_deadline.map_or(d, |n| n.min(d)));
            }
            let mut keep = VecDeque::new();
            let ordered = acc.ids.0 >= 0;
            if ordered && !may_go {
                // Waiting for a new producer id: nothing goes with the old numbers.
                next_deadline = Some(now + inner.config.client.retry_backoff);
                keep = std::mem::take(&mut acc.ready);
            }
            let mut held: std::collections::HashSet<(String, i32)> = Default::default();
            while let Some(b) = acc.ready.pop_front() {
                let key = (b.topic.clone(), b.partition);
                let go = !ordered
                    || (!held.contains(&key)
                        && may_send(
                            acc.in_flight.get(&key).copied().unwrap_or(0),
                            acc.acked.contains(&key),
                            b.attempts > 0,
                        ));
                if !go {
                    // Behind an earlier batch of its partition: keep the order.
                    held.insert(key);
                    keep.push_back(b);
                    continue;
                }
                match b.retry_at {
                    Some(t) if t > now => {
                        next_deadline = Some(next_deadline.map_or(t, |n| n.min(t)));
                        if ordered {
                            held.insert(key);
                        }
                        keep.push_back(b);
                    }
                    _ => {
                        if ordered {
                            *acc.in_flight.entry(key).or_insert(0) += 1;
                        }
                        due.push(b)
                    }
                }
            }
            acc.ready = keep;
        }
        if !due.is_empty() {
            dispatch(&inner, due).await;
        }
        if inner.closed.load(Ordering::SeqCst) && inner.outstanding.load(Ordering::SeqCst) == 0 {
            return;
        }
        match next_deadline {
            Some(d) => {
                tokio::select! {
                    _ = &mut wake => {}
                    _ = tokio::time::sleep_until(d.into()) => {}
                }
            }
            None => wake.await,
        }
    }
}

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

impl Inner {
    fn acc_ids(&self) -> (i64, i16) {
        self.acc.lock().unwrap_or_else(|p| p.into_inner()).ids
    }
}

fn requeue(inner: &Arc<Inner>, b: ReadyBatch, err: ClientError) {
    let retriable = err.is_retriable();
    requeue_if(inner, b, err, retriable)
}

fn requeue_if(inner: &Arc<Inner>, mut b: ReadyBatch, err: ClientError, retriable: bool) {
    let cfg = &inner.config;
    if retriable && b.attempts < cfg.retries && b.first_ready.elapsed() < cfg.delivery_timeout {
        b.attempts += 1;
        b.retry_at = Some(Instant::now() + cfg.client.retry_backoff);
        let mut acc = inner.acc.lock().unwrap_or_else(|p| p.into_inner());
        landed(&mut acc, &b.topic, b.partition);
        if acc.ids.0 >= 0 {
            acc.stalled.insert((b.topic.clone(), b.partition));
        }
        put_back(&mut acc, b);
        drop(acc);
        inner.wake.notify_one();
    } else {
        finish(inner, b, Err(err));
    }
}

/// Puts a batch back into `ready` in front of its partition's later batches.
fn put_back(acc: &mut Accumulator, b: ReadyBatch) {
    // (In flight ones that fail behind it come back here too, in any order: sequence
    // order again.)
    let same = |r: &ReadyBatch| r.topic == b.topic && r.partition == b.partition;
    let at = acc
        .ready
        .iter()
        .position(|r| same(r) && r.order > b.order)
        .or_else(|| acc.ready.iter().rposition(same).map(|i| i + 1))
        .unwrap_or(0);
    acc.ready.insert(at, b);
}

/// Groups due batches by leader and sends one request per leader (up to
/// `max.request.size`), each in its own task bounded by `max.in.flight`.
async fn dispatch(inner: &Arc<Inner>, due: Vec<ReadyBatch>) {
    let mut by_leader: HashMap<i32, Vec<ReadyBatch>> = HashMap::new();
    for b in due {
        if b.first_ready.elapsed() >= inner.config.delivery_timeout {
            finish(
                inner,
                b,
                Err(ClientError::Timeout("delivery.timeout.ms expired".into())),
            );
            continue;
        }
        let leader = match inner.cluster.topic(&b.topic).await {
            Ok(t) => t
                .partitions
                .get(b.partition as usize)
                .map(|p| p.leader)
                .unwrap_or(-1),
            Err(e) => {
                requeue(inner, b, e);
                continue;
            }
        };
        if leader < 0 {
            inner.cluster.invalidate(&b.topic).await;
            requeue(
                inner,
                b,
                ClientError::Broker {
                    code: 5,
                    message: "no leader".into(),
                },
            );
            continue;
        }
        by_leader.entry(leader).or_default().push(b);
    }
    if inner.config.transactional_id.is_some() {
        by_leader = add_to_transaction(inner, by_leader).await;
    }
    for (leader, batches) in by_leader {
        let sem = {
            let mut m = inner.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(leader)
                .or_insert_with(|| Arc::new(Semaphore::new(inner.config.max_in_flight)))
                .clone()
        };
        let groups = into_requests(batches, inner.config.max_request_size, |b| {
            ((b.topic.clone(), b.partition), b.bytes.len())
        });
        for mut group in groups {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                return;
            };
            // A batch of a partition failed while this group waited: its later batches
            // wait behind the retry.
            {
                let mut acc = inner.acc.lock().unwrap_or_else(|p| p.into_inner());
                if !acc.stalled.is_empty() {
                    let (held, go): (Vec<_>, Vec<_>) = group
                        .into_iter()
                        .partition(|b| acc.stalled.contains(&(b.topic.clone(), b.partition)));
                    for b in held {
                        landed(&mut acc, &b.topic, b.partition);
                        put_back(&mut acc, b);
                    }
                    group = go;
                }
            }
            if group.is_empty() {
                inner.wake.notify_one();
                continue;
            }
            // Requests are queued on the connection here, in order, so batches of one
            // partition reach the broker in the order they were closed; only the wait for
            // the answer runs in its own task.
            send_request(inner, leader, group, permit).await;
        }
    }
}

/// Splits a leader's due batches (in close order) into Produce requests, to be sent in
/// the returned order: at most one batch per partition in a request, and a partition's
/// batches in their order across requests, each request within `max_request_size` (a
/// batch larger than that goes alone). As the Java client drains one batch of every
/// ready partition into a request, a request takes the next batch of each partition:
/// cutting a request at the first partition seen twice would, with the sticky
/// partitioner's random order, send about half the batches per request, and each
/// request with acks=all and an fsync per batch costs a round trip.
fn into_requests<T, K: PartialEq>(
    batches: Vec<T>,
    max_request_size: usize,
    key_size: impl Fn(&T) -> (K, usize),
) -> Vec<Vec<T>> {
    let mut requests: Vec<(usize, Vec<T>)> = Vec::new();
    // The request each partition's latest batch went into: its next goes later.
    let mut last: Vec<(K, usize)> = Vec::new();
    for b in batches {
        let (key, size) = key_size(&b);
        let slot = last.iter().position(|(k, _)| *k == key);
        let from = slot.map_or(0, |i| last[i].1 + 1);
        let at = (from..requests.len())
            .find(|&i| requests[i].1.is_empty() || requests[i].0 + size <= max_request_size)
            .unwrap_or_else(|| {
                requests.push((0, Vec::new()));
                requests.len() - 1
            });
        requests[at].0 += size;
        requests[at].1.push(b);
        match slot {
            Some(i) => last[i].1 = at,
            None => last.push((key, at)),
        }
    }
    requests.into_iter().map(|(_, r)| r).collect()
}

/// Adds the partitions of due batches to the open transaction (AddPartitionsToTxn) before
/// they are sent; if that fails the batches are requeued (retriable) or failed.
async fn add_to_transaction(
    inner: &Arc<Inner>,
    by_leader: HashMap<i32, Vec<ReadyBatch>>,
) -> HashMap<i32, Vec<ReadyBatch>> {
    let mut txn = inner.txn.lock().await;
    let mut new: Vec<(String, i32)> = by_leader
        .values()
        .flatten()
        .map(|b| (b.topic.clone(), b.partition))
        .filter(|k| !txn.partitions.contains(k))
        .collect();
    new.sort();
    new.dedup();
    if new.is_empty() {
        return by_leader;
    }
    let ids = inner.acc_ids();
    let id = inner.config.transactional_id.clone().unwrap_or_default();
    let result = match txn.link.as_mut() {
        Some(link) => crate::txn::add_partitions(link, &id, ids, &new).await,
        None => Err(ClientError::Config(
            "init_transactions was not called".into(),
        )),
    };
    match result {
        Ok(()) => {
            txn.partitions.extend(new);
            txn.started = true;
            by_leader
        }
        Err(e) => {
            drop(txn);
            for b in by_leader.into_values().flatten() {
                requeue(inner, b, e.clone());
            }
            HashMap::new()
        }
    }
}

/// A producer id for an idempotent (non-transactional) producer. A retriable failure
/// (a broker still loading its producer-id block answers COORDINATOR_LOAD_IN_PROGRESS, as
/// Apache Kafka does just after it starts; a lost connection) is tried again after
/// `retry.backoff.ms` until `patience` has passed, as Kafka's clients retry it.
async fn idempotent_producer_id(
    cluster: &Cluster,
    patience: Duration,
) -> Result<(i64, i16), ClientError> {
    let deadline = Instant::now() + patience;
    let backoff = cluster.config().retry_backoff;
    loop {
        let attempt = async {
            let conn = cluster.any_connection().await?;
            let req = kafka_protocol::messages::InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(i32::MAX)
                .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                .with_producer_epoch(-1);
            let resp = conn.send(&req).await?;
            match ClientError::from_code(resp.error_code, "init producer id") {
                Some(e) => Err(e),
                None => Ok((resp.producer_id.0, resp.producer_epoch)),
            }
        }
        .await;
        match attempt {
            Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                tracing::debug!("init producer id: {e}; trying again");
                tokio::time::sleep(backoff).await;
            }
            done => return done,
        }
    }
}

async fn send_request(
    inner: &Arc<Inner>,
    leader: i32,
    batches: Vec<ReadyBatch>,
    permit: OwnedSemaphorePermit,
) {
    let conn = match inner.cluster.connection(leader).await {
        Ok(c) => c,
        Err(e) => {
            for b in batches {
                inner.cluster.invalidate(&b.topic).await;
                requeue(inner, b, e.clone());
            }
            return;
        }
    };
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for b in &batches {
        let pd = PartitionProduceData::default()
            .with_index(b.partition)
            .with_records(Some(b.bytes.clone()));
        match topics.iter_mut().find(|t| t.name.0.as_str() == b.topic) {
            Some(t) => t.partition_data.push(pd),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(b.topic.clone())))
                    .with_partition_data(vec![pd]),
            ),
        }
    }
    let acks = inner.config.acks;
    let txn_id = inner.config.transactional_id.as_deref();
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_transactional_id(txn_id.map(|t| TransactionalId(StrBytes::from_string(t.into()))))
        .with_timeout_ms(inner.config.client.request_timeout.as_millis() as i32)
        .with_topic_data(topics);
    // Topic ids (Produce v13) are not used: cap at v12 so names identify topics; a
    // transactional producer stays at v11 (transactions v1: it adds partitions itself).
    let cap = if txn_id.is_some() { 11 } else { 12 };
    let version = conn.version_for::<ProduceRequest>().map(|v| v.min(cap));
    let Some(version) = version else {
        for b in batches {
            finish(inner, b, Err(ClientError::Unsupported("Produce".into())));
        }
        return;
    };
    if acks == 0 {
        let r = conn.send_no_response(&req, version).await;
        // The request holds the batches' bytes: let go of them so buffers can be reused.
        drop(req);
        for b in batches {
            match &r {
                Ok(()) => finish(inner, b, Ok((-1, -1))),
                Err(e) => requeue(inner, b, e.clone()),
            }
        }
        return;
    }
    // The batches go out from their own memory (a gathering write), not copied into the
    // request first.
    let pending = conn.start_pieces(&req, version, |out| {
        crate::produce_frame::produce_pieces(&req, version, out)
    });
    drop(req);
    let pending = match pending {
        Ok(p) => p,
        Err(e) => {
            for b in batches {
                requeue(inner, b, e.clone());
            }
            return;
        }
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let result = pending.await;
        handle_produce_response(&inner, batches, result).await;
        drop(permit);
    });
}

async fn handle_produce_response(
    inner: &Arc<Inner>,
    batches: Vec<ReadyBatch>,
    result: Result<kafka_protocol::messages::ProduceResponse, ClientError>,
) {
    match result {
        Err(e) => {
            for mut b in batches {
                b.maybe_written = true;
                requeue(inner, b, e.clone());
            }
        }
        Ok(resp) => {
            // (error code, base offset, log append time, error message) per partition.
            type Outcome = (i16, i64, i64, Option<String>);
            let mut results: HashMap<(String, i32), Outcome> = HashMap::new();
            for t in resp.responses {
                for p in t.partition_responses {
                    results.insert(
                        (t.name.0.as_str().to_string(), p.index),
                        (
                            p.error_code,
                            p.base_offset,
                            p.log_append_time_ms,
                            p.error_message.map(|m| m.as_str().to_string()),
                        ),
                    );
                }
            }
            for b in batches {
                match results.remove(&(b.topic.clone(), b.partition)) {
                    Some((0, base, append, _)) => finish(inner, b, Ok((base, append))),
                    Some((code, _, _, msg)) => {
                        let err = ClientError::Broker {
                            code,
                            message: msg.unwrap_or_default(),
                        };
                        if err.is_retriable() {
                            inner.cluster.invalidate(&b.topic).await;
                        }
                        // An idempotent producer's later batch can overtake an earlier
                        // one that is being retried; it is retried in turn.
                        if code == OUT_OF_ORDER_SEQUENCE_NUMBER && inner.acc_ids().0 >= 0 {
                            requeue_if(inner, b, err, true);
                            continue;
                        }
                        requeue(inner, b, err);
                    }
                    None => requeue(
                        inner,
                        b,
                        ClientError::Protocol("partition missing from produce response".into()),
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{into_requests, may_send};

    /// (partition, size) of each batch of each request.
    fn split(batches: &[(i32, usize)], max: usize) -> Vec<Vec<(i32, usize)>> {
        into_requests(batches.to_vec(), max, |b| *b)
    }

    #[test]
    fn a_request_takes_the_next_batch_of_every_partition_in_order() {
        // The sticky partitioner closes batches in a random partition order: each request
        // gets one batch of each partition, and a partition's batches keep their order.
        let closed = [
            (3, 10),
            (1, 11),
            (3, 12),
            (0, 13),
            (1, 14),
            (3, 15),
            (2, 16),
        ];
        assert_eq!(
            split(&closed, 1000),
            vec![
                vec![(3, 10), (1, 11), (0, 13), (2, 16)],
                vec![(3, 12), (1, 14)],
                vec![(3, 15)],
            ]
        );
    }

    #[test]
    fn a_full_request_sends_a_partitions_later_batches_after_it() {
        // Request 0 is full after two batches: partition 2 goes to request 1, and partition
        // 0's second batch, though it would fit in request 0's size, goes after its first.
        let closed = [(0, 40), (1, 50), (2, 30), (0, 5), (3, 10)];
        assert_eq!(
            split(&closed, 100),
            vec![vec![(0, 40), (1, 50), (3, 10)], vec![(2, 30), (0, 5)]]
        );
        // A batch larger than max.request.size goes alone.
        assert_eq!(
            split(&[(0, 10), (1, 500), (2, 20)], 100),
            vec![vec![(0, 10), (2, 20)], vec![(1, 500)]]
        );
    }

    #[test]
    fn batches_pipeline_per_partition_only_where_the_broker_knows_the_sequence() {
        // Nothing in flight: any batch goes.
        assert!(may_send(0, false, false));
        assert!(may_send(0, false, true));
        assert!(may_send(0, true, true));
        // Before a first acknowledgement, one at a time.
        assert!(!may_send(1, false, false));
        // After it, new batches pipeline (the connection's permits bound the wire).
        assert!(may_send(1, true, false));
        assert!(may_send(7, true, false));
        // A retry waits until its partition has nothing in flight.
        assert!(!may_send(1, true, true));
        assert!(!may_send(3, false, true));
    }
}

#[cfg(test)]
mod init_tests {
    use super::*;
    use crate::scripted_broker;
    use kafka_protocol::messages::{ApiKey, InitProducerIdResponse, ProducerId};
    use kafka_protocol::protocol::Encodable;

    /// A broker that answers InitProducerId with COORDINATOR_LOAD_IN_PROGRESS `loading`
    /// times before giving producer id 42: what Apache Kafka does while it fetches its
    /// first block of producer ids. Counts the InitProducerId requests.
    async fn loading_broker(loading: usize) -> (String, Arc<AtomicUsize>) {
        let inits = Arc::new(AtomicUsize::new(0));
        let counted = inits.clone();
        let addr = scripted_broker::start(&[(ApiKey::InitProducerId, 5)], &[], move |req, out| {
            if req.api != ApiKey::InitProducerId {
                return false;
            }
            let resp = if counted.fetch_add(1, Ordering::SeqCst) < loading {
                InitProducerIdResponse::default().with_error_code(14)
            } else {
                InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(42))
                    .with_producer_epoch(3)
            };
            resp.encode(out, req.version).unwrap();
            true
        })
        .await;
        (addr, inits)
    }

    #[tokio::test]
    async fn an_idempotent_producer_waits_out_a_broker_still_loading_producer_ids() {
        let (addr, inits) = loading_broker(3).await;
        let mut cfg = ProducerConfig::new(&addr);
        cfg.set("acks", "all").unwrap();
        cfg.set("retry.backoff.ms", "10").unwrap();
        let producer = Producer::connect(cfg).await.unwrap();
        assert_eq!(producer.inner.acc_ids(), (42, 3));
        assert_eq!(inits.load(Ordering::SeqCst), 4);

        // Within max.block.ms only: a broker that keeps loading is an error in the end.
        let (addr, _) = loading_broker(usize::MAX).await;
        let mut cfg = ProducerConfig::new(&addr);
        cfg.set("retry.backoff.ms", "10").unwrap();
        cfg.set("max.block.ms", "200").unwrap();
        let started = Instant::now();
        let err = Producer::connect(cfg).await.err().unwrap();
        assert!(
            matches!(err, ClientError::Broker { code: 14, .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[cfg(test)]
mod sender_turn_tests {
    use super::*;
    use crate::scripted_broker;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
    use kafka_protocol::protocol::{Decodable, Encodable};

    /// Answers Produce requests with success, counting them.
    async fn counting_broker() -> (String, Arc<AtomicUsize>) {
        let produced = Arc::new(AtomicUsize::new(0));
        let counted = produced.clone();
        let apis = [(ApiKey::Produce, 9)];
        let addr = scripted_broker::start(&apis, &[("t", 1)], move |req, out| {
            let Ok(p) = ProduceRequest::decode(&mut req.body.clone(), req.version) else {
                return false;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let topics = p.topic_data.iter().map(|t| {
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|d| PartitionProduceResponse::default().with_index(d.index))
                            .collect(),
                    )
            });
            ProduceResponse::default()
                .with_responses(topics.collect())
                .encode(out, req.version)
                .is_ok()
        })
        .await;
        (addr, produced)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_leave_while_the_application_keeps_sending() {
        let (addr, produced) = counting_broker().await;
        // As in a perf-test loop, the application runs as a task on a worker thread and
        // sends with nothing else to wait for. buffer.memory holds ~128k such records:
        // without a turn for the sender, the first batch left only once it was full. With
        // one, it leaves after linger.ms, ~2k records in.
        tokio::spawn(async move {
            let mut cfg = ProducerConfig::new(&addr);
            for (k, v) in [
                ("acks", "1"),
                ("enable.idempotence", "false"),
                ("linger.ms", "5"),
                ("batch.size", "16384"),
                ("buffer.memory", "16777216"),
            ] {
                cfg.set(k, v).unwrap();
            }
            let producer = Producer::connect(cfg).await.unwrap();
            let value = Bytes::from(vec![b'v'; 100]);
            let mut sent = 0;
            while produced.load(Ordering::SeqCst) == 0 && sent < 1_000_000 {
                let record = ProducerRecord::new("t").value(value.clone());
                producer.send(record).await.unwrap();
                sent += 1;
            }
            assert!(
                sent < 64_000,
                "the first batch reached the broker only after {sent} records were queued"
            );
            producer.flush().await.unwrap();
        })
        .await
        .unwrap();
    }
}
