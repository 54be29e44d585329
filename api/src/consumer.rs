//! The consumer: manual assignment (`assign`, `seek`, `position`) or group subscription
//! (`subscribe`, with commits to the group), and `poll` with a fetch kept in flight per
//! broker so the next records are on their way while the application handles these.
//!
//! **At-most-once**: commit before processing; a crash after the commit loses the batch
//! being processed, never duplicates it.
//!
//! ```no_run
//! # async fn demo(mut consumer: runnel_api::Consumer) -> Result<(), runnel_api::ClientError> {
//! # fn process(_: &runnel_api::ConsumerRecord) {}
//! // with enable.auto.commit=false
//! loop {
//!     let records = consumer.poll(std::time::Duration::from_secs(1)).await?;
//!     consumer.commit_sync(None).await?; // positions are already past these records
//!     for r in &records {
//!         process(r);
//!     }
//! }
//! # }
//! ```
//!
//! **At-least-once**: process, then commit; a crash before the commit re-delivers the
//! batch, so processing must tolerate duplicates.
//!
//! ```no_run
//! # async fn demo(mut consumer: runnel_api::Consumer) -> Result<(), runnel_api::ClientError> {
//! # fn process(_: &runnel_api::ConsumerRecord) {}
//! loop {
//!     let records = consumer.poll(std::time::Duration::from_secs(1)).await?;
//!     for r in &records {
//!         process(r);
//!     }
//!     consumer.commit_sync(None).await?;
//! }
//! # }
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_api::ClientError> {
//! use runnel_api::{Consumer, ConsumerConfig, TopicPartition};
//! use std::time::Duration;
//!
//! let mut consumer = Consumer::connect(ConsumerConfig::new("127.0.0.1:9092")).await?;
//! consumer.assign(vec![TopicPartition::new("orders", 0)]).await?;
//! consumer.seek_to_beginning(&[TopicPartition::new("orders", 0)]).await?;
//! for record in consumer.poll(Duration::from_secs(1)).await? {
//!     println!("{} @ {}: {:?}", record.partition, record.offset, record.value);
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::task::JoinHandle;

use crate::cluster::{ClientConfig, Cluster};
use crate::error::ClientError;
use crate::records::{Header, PartialDecode, batches_end, decode_committed_partial};

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Start from the log start.
    Earliest,
    /// Start from the end.
    Latest,
    /// Fail with an error.
    None,
}

/// `isolation.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationLevel {
    /// See every record.
    #[default]
    ReadUncommitted,
    /// Stop at the last stable offset.
    ReadCommitted,
}

/// Consumer settings, with the Java client's names and defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Common settings.
    pub client: ClientConfig,
    /// `fetch.min.bytes`.
    pub fetch_min_bytes: i32,
    /// `fetch.max.wait.ms`.
    pub fetch_max_wait: Duration,
    /// `fetch.max.bytes`.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`.
    pub max_partition_fetch_bytes: i32,
    /// `max.poll.records`.
    pub max_poll_records: usize,
    /// `auto.offset.reset`.
    pub auto_offset_reset: OffsetReset,
    /// `isolation.level`.
    pub isolation_level: IsolationLevel,
    /// `check.crcs`.
    pub check_crcs: bool,
    /// `group.id` (needed for `subscribe` and commits).
    pub group_id: Option<String>,
    /// `group.instance.id` (static membership).
    pub group_instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`.
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`.
    pub assignors: Vec<crate::membership::Assignor>,
    /// `enable.auto.commit`.
    pub enable_auto_commit: bool,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
}

impl ConsumerConfig {
    /// Defaults for `bootstrap`.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            client: ClientConfig::new(bootstrap),
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            max_poll_records: 500,
            auto_offset_reset: OffsetReset::Latest,
            isolation_level: IsolationLevel::ReadUncommitted,
            check_crcs: true,
            group_id: None,
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            assignors: vec![crate::membership::Assignor::Range],
            enable_auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
        }
    }

    /// Applies a Java-client property.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ClientError> {
        if self.client.set(key, value)? {
            return Ok(self);
        }
        let bad = |why: &str| ClientError::Config(format!("{key}={value}: {why}"));
        let num = || value.trim().parse::<i64>().map_err(|_| bad("not a number"));
        match key {
            "fetch.min.bytes" => self.fetch_min_bytes = num()? as i32,
            "fetch.max.wait.ms" => {
                self.fetch_max_wait = Duration::from_millis(num()?.max(0) as u64)
            }
            "fetch.max.bytes" => self.fetch_max_bytes = num()? as i32,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = num()? as i32,
            "max.poll.records" => self.max_poll_records = num()?.max(1) as usize,
            "auto.offset.reset" => {
                self.auto_offset_reset = match value.trim() {
                    "earliest" => OffsetReset::Earliest,
                    "latest" => OffsetReset::Latest,
                    "none" => OffsetReset::None,
                    _ => return Err(bad("expected earliest, latest or none")),
                }
            }
            "isolation.level" => {
                self.isolation_level = match value.trim() {
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => return Err(bad("expected read_uncommitted or read_committed")),
                }
            }
            "check.crcs" => self.check_crcs = value.trim() == "true",
            "group.id" => self.group_id = Some(value.trim().to_string()).filter(|g| !g.is_empty()),
            "group.instance.id" => {
                self.group_instance_id = Some(value.trim().to_string()).filter(|g| !g.is_empty())
            }
            "session.timeout.ms" => {
                self.session_timeout = Duration::from_millis(num()?.max(0) as u64)
            }
            "heartbeat.interval.ms" => {
                self.heartbeat_interval = Duration::from_millis(num()?.max(1) as u64)
            }
            "max.poll.interval.ms" => {
                self.max_poll_interval = Duration::from_millis(num()?.max(1) as u64)
            }
            "enable.auto.commit" => self.enable_auto_commit = value.trim() == "true",
            "auto.commit.interval.ms" => {
                self.auto_commit_interval = Duration::from_millis(num()?.max(1) as u64)
            }
            "partition.assignment.strategy" => {
                self.assignors = value
                    .split(',')
                    .map(|a| {
                        crate::membership::Assignor::parse(a)
                            .ok_or_else(|| bad("supported: range, roundrobin"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "key.deserializer" | "value.deserializer" => {}
            _ => {
                return Err(ClientError::Config(format!(
                    "unknown consumer property '{key}'"
                )));
            }
        }
        Ok(self)
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic (shared by the records of a fetch: no copy of the name per record).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp.
    pub timestamp: i64,
    /// Whether the timestamp is the broker's LogAppendTime.
    pub log_append_time: bool,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
}

impl ConsumerRecord {
    /// The partition the record was read from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }
}

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    /// Next offset handed to the application.
    position: Option<i64>,
    /// Next offset to fetch (ahead of `position` while records are buffered).
    fetch_position: Option<i64>,
    /// Bumped by seeks so stale in-flight results are dropped.
    epoch: u64,
    /// Once the record at this offset is handed out, the position moves on to this
    /// offset (past batches after it with no records for the application).
    skip: Option<(i64, i64)>,
}

type FetchOutcome = Result<Vec<(TopicPartition, u64, i64, PartitionResult)>, ClientError>;

enum PartitionResult {
    /// Record batches as fetched, the aborted transactions among them, and the offset
    /// after the last whole batch (from the batch headers).
    Records(Bytes, Vec<(i64, i64)>, Option<i64>),
    Error(i16),
}

/// Fetched record batches of one partition, decoded only when the application needs
/// them, so that the next fetch is already on its way while they are.
struct Undecoded {
    tp: TopicPartition,
    epoch: u64,
    /// The fetch offset (the first batch may start before it).
    from: i64,
    records: Bytes,
    aborted: Vec<(i64, i64)>,
}

/// An async consumer with manual partition assignment.
pub struct Consumer {
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    state: HashMap<TopicPartition, PartitionState>,
    order: Vec<TopicPartition>,
    buffer: VecDeque<ConsumerRecord>,
    undecoded: VecDeque<Undecoded>,
    /// A partition whose records could not be decoded, reported once the records before
    /// them are handed out.
    failed: Option<(TopicPartition, ClientError)>,
    in_flight: HashMap<i32, JoinHandle<FetchOutcome>>,
    membership: Option<crate::membership::Membership>,
    subscription: Option<Subscription>,
    listener: Option<Box<dyn RebalanceListener>>,
    last_auto_commit: Instant,
    /// Whether the group runs the cooperative (incremental) protocol.
    cooperative: bool,
    /// Topics of the last join, and when a pattern was last checked against metadata.
    joined_topics: std::collections::BTreeSet<String>,
    last_pattern_check: Instant,
}

/// Who a consumer is in its group, for a transactional producer committing offsets on
/// its behalf (`KafkaConsumer.groupMetadata()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// `group.id`.
    pub group_id: String,
    /// Generation of the current membership (-1 outside a group rebalance protocol).
    pub generation_id: i32,
    /// Member id ("" when not a member).
    pub member_id: String,
    /// `group.instance.id`.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Metadata for a group id alone (no membership checks by the coordinator).
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }
}

/// What a subscribed consumer follows.
enum Subscription {
    Topics(std::collections::BTreeSet<String>),
    Pattern(regex::Regex),
}

/// Callbacks around rebalances (`ConsumerRebalanceListener`).
pub trait RebalanceListener: Send + Sync {
    /// Partitions are about to be taken away (commit their progress here).
    fn on_partitions_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions were assigned.
    fn on_partitions_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions were lost without a chance to commit (the member was fenced).
    fn on_partitions_lost(&mut self, _partitions: &[TopicPartition]) {}
}

impl Consumer {
    /// The group this consumer is in and its membership, for
    /// [`crate::Producer::send_offsets_to_transaction`]; `None` without a `group.id`.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        match &self.membership {
            Some(m) => Some(ConsumerGroupMetadata {
                group_id: m.group_id().to_string(),
                generation_id: m.generation,
                member_id: m.member_id.clone(),
                group_instance_id: m.instance_id().map(str::to_string),
            }),
            None => self.config.group_id.clone().map(ConsumerGroupMetadata::new),
        }
    }

    /// Connects to the cluster.
    pub async fn connect(config: ConsumerConfig) -> Result<Self, ClientError> {
        let cluster = Cluster::connect(config.client.clone()).await?;
        Ok(Self {
            cluster,
            config,
            state: HashMap::new(),
            order: Vec::new(),
            buffer: VecDeque::new(),
            undecoded: VecDeque::new(),
            failed: None,
            in_flight: HashMap::new(),
            membership: None,
            subscription: None,
            listener: None,
            last_auto_commit: Instant::now(),
            cooperative: false,
            joined_topics: Default::default(),
            last_pattern_check: Instant::now(),
        })
    }

    /// Replaces the assignment.
    pub async fn assign(&mut self, partitions: Vec<TopicPartition>) -> Result<(), ClientError> {
        for tp in &partitions {
            let t = self.cluster.topic(&tp.topic).await?;
            if tp.partition < 0 || tp.partition as usize >= t.partitions.len() {
                return Err(ClientError::Broker {
                    code: 3,
                    message: format!("{}-{} does not exist", tp.topic, tp.partition),
                });
            }
        }
        let old = std::mem::take(&mut self.state);
        self.state = partitions
            .iter()
            .map(|tp| {
                let s = old.get(tp).copied().unwrap_or(PartitionState {
                    position: None,
                    fetch_position: None,
                    epoch: 0,
                    skip: None,
                });
                (tp.clone(), s)
            })
            .collect();
        self.order = partitions;
        self.buffer.retain(|r| {
            self.state
                .contains_key(&TopicPartition::new(&*r.topic, r.partition))
        });
        self.undecoded.retain(|u| self.state.contains_key(&u.tp));
        if self
            .failed
            .as_ref()
            .is_some_and(|(tp, _)| !self.state.contains_key(tp))
        {
            self.failed = None;
        }
        Ok(())
    }

    /// The current assignment.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.order
    }

    fn state_mut(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState, ClientError> {
        self.state.get_mut(tp).ok_or_else(|| {
            ClientError::Config(format!("{}-{} is not assigned", tp.topic, tp.partition))
        })
    }

    /// Sets the next offset to read.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) -> Result<(), ClientError> {
        let s = self.state_mut(tp)?;
        s.position = Some(offset);
        s.fetch_position = Some(offset);
        s.epoch += 1;
        s.skip = None;
        let (t, p) = (tp.topic.as_str(), tp.partition);
        self.buffer
            .retain(|r| !(&*r.topic == t && r.partition == p));
        self.undecoded.retain(|u| u.tp != *tp);
        if self.failed.as_ref().is_some_and(|(f, _)| f == tp) {
            self.failed = None;
        }
        Ok(())
    }

    /// Seeks to the log start offsets.
    pub async fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<(), ClientError> {
        let offsets = self.list_offsets(tps, -2).await?;
        for (tp, o) in offsets {
            self.seek(&tp, o)?;
        }
        Ok(())
    }

    /// Seeks to the log end offsets.
    pub async fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<(), ClientError> {
        let offsets = self.list_offsets(tps, -1).await?;
        for (tp, o) in offsets {
            self.seek(&tp, o)?;
        }
        Ok(())
    }

    /// The next offset `poll` will return for `tp` (resolving `auto.offset.reset`).
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<i64, ClientError> {
        if self.state_mut(tp)?.position.is_none() {
            self.reset_positions().await?;
        }
        self.state_mut(tp)?
            .position
            .ok_or_else(|| ClientError::Protocol("no position".into()))
    }

    /// Offsets for times (or -1 latest / -2 earliest), per partition: (partition, offset).
    pub async fn offsets_for_times(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, i64, i64)>, ClientError> {
        let mut out = Vec::new();
        for (tp, ts) in query {
            let r = self
                .list_offsets_full(std::slice::from_ref(tp), *ts)
                .await?;
            out.extend(r);
        }
        Ok(out)
    }

    async fn list_offsets(
        &self,
        tps: &[TopicPartition],
        ts: i64,
    ) -> Result<Vec<(TopicPartition, i64)>, ClientError> {
        Ok(self
            .list_offsets_full(tps, ts)
            .await?
            .into_iter()
            .map(|(tp, o, _)| (tp, o))
            .collect())
    }

    async fn list_offsets_full(
        &self,
        tps: &[TopicPartition],
        ts: i64,
    ) -> Result<Vec<(TopicPartition, i64, i64)>, ClientError> {
        let isolation = if self.config.isolation_level == IsolationLevel::ReadCommitted {
            1
        } else {
            0
        };
        let mut out = Vec::new();
        for tp in tps {
            let (offset, timestamp) = self
                .cluster
                .list_offset(&tp.topic, tp.partition, ts, isolation)
                .await?;
            out.push((tp.clone(), offset, timestamp));
        }
        Ok(out)
    }

    async fn reset_positions(&mut self) -> Result<(), ClientError> {
        let missing: Vec<TopicPartition> = self
            .order
            .iter()
            .filter(|tp| self.state[tp].position.is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let ts = match self.config.auto_offset_reset {
            OffsetReset::Earliest => -2,
            OffsetReset::Latest => -1,
            OffsetReset::None => {
                return Err(ClientError::Config(format!(
                    "no offset for {missing:?} and auto.offset.reset=none"
                )));
            }
        };
        for (tp, o) in self.list_offsets(&missing, ts).await? {
            self.seek(&tp, o)?;
        }
        Ok(())
    }

    fn membership(&mut self) -> Result<&mut crate::membership::Membership, ClientError> {
        if self.membership.is_none() {
            let group_id = self.config.group_id.clone().ok_or_else(|| {
                ClientError::Config("group.id is required to subscribe or commit".into())
            })?;
            let settings = crate::membership::GroupSettings {
                group_id,
                instance_id: self.config.group_instance_id.clone(),
                session_timeout: self.config.session_timeout,
                heartbeat_interval: self.config.heartbeat_interval,
                max_poll_interval: self.config.max_poll_interval,
                assignors: self.config.assignors.clone(),
            };
            self.membership = Some(crate::membership::Membership::new(
                self.cluster.clone(),
                settings,
            ));
        }
        Ok(self.membership.as_mut().expect("just set"))
    }

    /// Subscribes to topics; partitions come from the group's assignment.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        self.membership()?
            .rejoin_needed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.subscription = Some(Subscription::Topics(
            topics.iter().map(|t| t.to_string()).collect(),
        ));
        Ok(())
    }

    /// Subscribes to every topic matching a regular expression (checked at each rebalance
    /// and every `metadata.max.age.ms`: a new matching topic triggers a rejoin).
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<(), ClientError> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| ClientError::Config(format!("bad pattern: {e}")))?;
        self.membership()?
            .rejoin_needed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.subscription = Some(Subscription::Pattern(re));
        Ok(())
    }

    /// Sets the rebalance callbacks.
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    async fn subscribed_topics(&self) -> Result<std::collections::BTreeSet<String>, ClientError> {
        match &self.subscription {
            None => Ok(Default::default()),
            Some(Subscription::Topics(t)) => Ok(t.clone()),
            Some(Subscription::Pattern(re)) => {
                let conn = self.cluster.any_connection().await?;
                let md = conn
                    .send(&kafka_protocol::messages::MetadataRequest::default().with_topics(None))
                    .await?;
                Ok(md
                    .topics
                    .into_iter()
                    .filter(|t| !t.is_internal)
                    .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                    .filter(|n| re.is_match(n))
                    .collect())
            }
        }
    }

    /// The positions of the current assignment, for commits.
    fn positions(&self) -> std::collections::BTreeMap<TopicPartition, i64> {
        self.order
            .iter()
            .filter_map(|tp| self.state[tp].position.map(|p| (tp.clone(), p)))
            .collect()
    }

    /// Rejoins the group if it asked for it; runs the rebalance callbacks. Eager
    /// protocols revoke everything first; cooperative-sticky revokes only what moves (and
    /// then rejoins so that the partitions reach their new owner).
    async fn ensure_membership(&mut self) -> Result<(), ClientError> {
        if self.subscription.is_none() {
            return Ok(());
        }
        let needed = self
            .membership()?
            .rejoin_needed
            .load(std::sync::atomic::Ordering::SeqCst);
        if !needed {
            return Ok(());
        }
        let owned = self.order.clone();
        let cooperative = self.cooperative;
        let mut fenced = false;
        if !owned.is_empty() && self.config.enable_auto_commit {
            let positions = self.positions();
            if let Err(e) = self.membership()?.commit(&positions).await {
                tracing::debug!("commit before rebalance failed: {e}");
                // Fenced out of the group: the partitions are already someone else's.
                fenced = matches!(e, ClientError::Broker { code: 22 | 25, .. });
            }
        }
        if !owned.is_empty()
            && (fenced || !cooperative)
            && let Some(l) = self.listener.as_mut()
        {
            if fenced {
                l.on_partitions_lost(&owned);
            } else {
                l.on_partitions_revoked(&owned);
            }
        }
        let topics = self.subscribed_topics().await?;
        self.joined_topics = topics.clone();
        self.last_pattern_check = Instant::now();
        let keep: Vec<TopicPartition> = if cooperative { owned.clone() } else { vec![] };
        let (assigned, protocol) = self.membership()?.join(&topics, &keep).await?;
        self.cooperative = protocol.is_some_and(|p| p.is_cooperative());
        let before: std::collections::BTreeSet<TopicPartition> = owned.iter().cloned().collect();
        let after: std::collections::BTreeSet<TopicPartition> = assigned.iter().cloned().collect();
        let revoked: Vec<TopicPartition> = before.difference(&after).cloned().collect();
        let added: Vec<TopicPartition> = if self.cooperative {
            after.difference(&before).cloned().collect()
        } else {
            assigned.clone()
        };
        if self.cooperative
            && !revoked.is_empty()
            && let Some(l) = self.listener.as_mut()
        {
            l.on_partitions_revoked(&revoked);
        }
        for (_, h) in self.in_flight.drain() {
            h.abort();
        }
        // Retained partitions keep their positions; new ones start from the group's commits.
        self.assign(assigned.clone()).await?;
        let committed = self.membership()?.committed(&added).await?;
        for (tp, o) in committed {
            if o >= 0 {
                self.seek(&tp, o)?;
            }
        }
        if let Some(l) = self.listener.as_mut() {
            l.on_partitions_assigned(&added);
        }
        if self.cooperative && !revoked.is_empty() {
            // Give up the revoked partitions so the leader can hand them over.
            self.membership()?
                .rejoin_needed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.last_auto_commit = Instant::now();
        Ok(())
    }

    /// Commits the current positions (or the given offsets) and waits for the answer.
    pub async fn commit_sync(
        &mut self,
        offsets: Option<std::collections::BTreeMap<TopicPartition, i64>>,
    ) -> Result<(), ClientError> {
        let offsets = offsets.unwrap_or_else(|| self.positions());
        self.membership()?.commit(&offsets).await
    }

    /// Sends a commit of the current positions (or the given offsets) without waiting;
    /// the returned task reports the outcome.
    pub async fn commit_async(
        &mut self,
        offsets: Option<std::collections::BTreeMap<TopicPartition, i64>>,
    ) -> Result<tokio::task::JoinHandle<Result<(), ClientError>>, ClientError> {
        let offsets = offsets.unwrap_or_else(|| self.positions());
        self.membership()?.commit_async(&offsets).await
    }

    /// The group's committed offsets for `partitions` (-1 where none).
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<std::collections::BTreeMap<TopicPartition, i64>, ClientError> {
        self.membership()?.committed(partitions).await
    }

    /// Commits (with auto commit) and leaves the group.
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.membership.is_some() {
            if self.config.enable_auto_commit && !self.order.is_empty() {
                let positions = self.positions();
                let _ = self.membership()?.commit(&positions).await;
            }
            self.membership()?.leave().await?;
        }
        Ok(())
    }

    /// Returns buffered records, fetching if needed, waiting up to `timeout`.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>, ClientError> {
        let deadline = Instant::now() + timeout;
        if matches!(self.subscription, Some(Subscription::Pattern(_)))
            && self.last_pattern_check.elapsed() >= self.config.client.metadata_max_age
        {
            self.last_pattern_check = Instant::now();
            let topics = self.subscribed_topics().await?;
            if topics != self.joined_topics {
                self.membership()?
                    .rejoin_needed
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        self.ensure_membership().await?;
        if self.config.enable_auto_commit
            && self.membership.is_some()
            && self.last_auto_commit.elapsed() >= self.config.auto_commit_interval
        {
            let positions = self.positions();
            if let Err(e) = self.membership()?.commit(&positions).await {
                tracing::debug!("auto commit failed: {e}");
            }
            self.last_auto_commit = Instant::now();
        }
        self.reset_positions().await?;
        loop {
            if !self.buffer.is_empty() {
                let n = self.buffer.len().min(self.config.max_poll_records);
                let out: Vec<ConsumerRecord> = self.buffer.drain(..n).collect();
                self.advance_positions(&out);
                // Pipelining: the next fetch leaves before the application sees these.
                self.start_fetches().await;
                return Ok(out);
            }
            // The next fetch leaves before the batches already here are decoded. A task
            // spawned from a worker waits in that worker's next-task slot, which no other
            // worker takes from, until this task yields: without the yield the request
            // only went out once the whole response had been decoded and handed out.
            if self.start_fetches().await && !self.undecoded.is_empty() {
                tokio::task::yield_now().await;
            }
            if let Some((_, e)) = self.failed.take() {
                return Err(e);
            }
            if !self.undecoded.is_empty() {
                // Fill this poll from as many fetched partitions as it takes.
                while self.buffer.len() < self.config.max_poll_records
                    && self.failed.is_none()
                    && let Some(u) = self.undecoded.pop_front()
                {
                    self.decode(u);
                }
                continue;
            }
            let now = Instant::now();
            if now >= deadline || self.in_flight.is_empty() {
                if self.in_flight.is_empty() && now < deadline {
                    tokio::time::sleep(self.config.client.retry_backoff.min(deadline - now)).await;
                    continue;
                }
                return Ok(Vec::new());
            }
            // Wait for whichever fetch completes first.
            let node = {
                let futs = self.in_flight.iter_mut().map(|(n, h)| {
                    let n = *n;
                    Box::pin(async move { (n, h.await) })
                });
                match tokio::time::timeout(deadline - now, futures_select_all(futs.collect())).await
                {
                    Ok((n, res)) => Some((n, res)),
                    Err(_) => None,
                }
            };
            let Some((n, res)) = node else {
                return Ok(Vec::new());
            };
            self.in_flight.remove(&n);
            match res {
                Ok(Ok(parts)) => self.absorb(parts).await?,
                Ok(Err(e)) => {
                    tracing::debug!("fetch from broker {n} failed: {e}");
                    tokio::time::sleep(self.config.client.retry_backoff).await;
                }
                Err(e) => return Err(ClientError::Protocol(format!("fetch task failed: {e}"))),
            }
        }
    }

    async fn absorb(
        &mut self,
        parts: Vec<(TopicPartition, u64, i64, PartitionResult)>,
    ) -> Result<(), ClientError> {
        for (tp, epoch, fetched_from, result) in parts {
            let Some(s) = self.state.get_mut(&tp) else {
                continue;
            };
            if s.epoch != epoch || s.fetch_position != Some(fetched_from) {
                continue; // a seek happened meanwhile
            }
            match result {
                PartitionResult::Records(records, aborted, next) => {
                    if let Some(n) = next.filter(|n| *n > fetched_from) {
                        s.fetch_position = Some(n);
                    }
                    if !records.is_empty() {
                        self.undecoded.push_back(Undecoded {
                            tp,
                            epoch,
                            from: fetched_from,
                            records,
                            aborted,
                        });
                    }
                }
                PartitionResult::Error(1) => {
                    // OFFSET_OUT_OF_RANGE: apply auto.offset.reset.
                    s.position = None;
                    s.fetch_position = None;
                    if self.config.auto_offset_reset == OffsetReset::None {
                        return Err(ClientError::Broker {
                            code: 1,
                            message: format!(
                                "offset out of range for {}-{}",
                                tp.topic, tp.partition
                            ),
                        });
                    }
                }
                PartitionResult::Error(code) => {
                    tracing::debug!(topic = %tp.topic, partition = tp.partition, code, "fetch error; refreshing metadata");
                    self.cluster.invalidate(&tp.topic).await;
                }
            }
        }
        self.reset_positions().await
    }

    /// Moves each partition's position past the last of its records in `out` (records
    /// of a partition come in runs).
    fn advance_positions(&mut self, out: &[ConsumerRecord]) {
        let mut i = 0;
        while i < out.len() {
            let (topic, partition) = (&out[i].topic, out[i].partition);
            let mut last = i;
            while last + 1 < out.len()
                && out[last + 1].partition == partition
                && out[last + 1].topic == *topic
            {
                last += 1;
            }
            if let Some(s) = self
                .state
                .get_mut(&TopicPartition::new(&**topic, partition))
            {
                let offset = out[last].offset;
                s.position = Some(match s.skip {
                    Some((at, to)) if at == offset => {
                        s.skip = None;
                        to
                    }
                    _ => offset + 1,
                });
            }
            i = last + 1;
        }
    }

    /// Decodes fetched batches into the buffer. A batch that fails to decode (a bad CRC,
    /// a malformed record) is an error, as in the Java client: the records before it are
    /// handed out first, then `poll` reports it, and the partition's fetch goes back to it
    /// until the application seeks past it.
    fn decode(&mut self, u: Undecoded) {
        let Some(s) = self.state.get_mut(&u.tp) else {
            return;
        };
        if s.epoch != u.epoch {
            return; // a seek happened meanwhile
        }
        let PartialDecode { decoded, error } =
            decode_committed_partial(u.records, self.config.check_crcs, &u.aborted);
        let (from, topic, partition) = (u.from, &u.tp.topic, u.tp.partition);
        let shared: Arc<str> = Arc::from(topic.as_str());
        // The end of the batches read whole (control batches and aborted ones included).
        let end = decoded.next_offset.unwrap_or(from).max(from);
        if let Some(bad) = error {
            // Fetches made past the bad batch, and their results, are void.
            s.fetch_position = Some(end);
            s.epoch += 1;
            self.undecoded.retain(|x| x.tp != u.tp);
            let skip = match bad.end {
                Some(e) if e > end => format!("seek to {e} to skip that batch"),
                _ => "seek past it to continue".to_string(),
            };
            let message = format!(
                "cannot read the record batch at offset {} of {topic}-{partition}: {}; {skip}",
                bad.base_offset.max(from),
                bad.error
            );
            self.failed = Some((u.tp.clone(), ClientError::Protocol(message)));
        }
        let before = self.buffer.len();
        self.buffer.reserve(decoded.records.len());
        self.buffer.extend(
            decoded
                .records
                .into_iter()
                .filter(|r| r.offset >= from)
                .map(|r| ConsumerRecord {
                    topic: shared.clone(),
                    partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    log_append_time: r.log_append_time,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                }),
        );
        // As in the Java client, the position moves past batches with nothing for the
        // application (transaction markers, aborted or compacted-away records) once the
        // records before them are handed out, so committed offsets do not lag behind them.
        // None of this partition's earlier records are still buffered: results are only
        // taken in once the buffer is empty.
        match self.buffer.back().filter(|_| self.buffer.len() > before) {
            Some(last) if last.offset + 1 < end => s.skip = Some((last.offset, end)),
            Some(_) => {}
            None => {
                if s.position.is_some_and(|p| p < end) {
                    s.position = Some(end);
                }
            }
        }
    }

    /// Starts a fetch from each leader without one in flight; whether any started.
    async fn start_fetches(&mut self) -> bool {
        // Partitions to fetch, grouped by leader, skipping leaders with a fetch in flight.
        let mut by_leader: HashMap<i32, Vec<(TopicPartition, u64, i64)>> = HashMap::new();
        for tp in &self.order {
            let s = self.state[tp];
            let Some(pos) = s.fetch_position else {
                continue;
            };
            let Ok(t) = self.cluster.topic(&tp.topic).await else {
                continue;
            };
            let leader = t
                .partitions
                .get(tp.partition as usize)
                .map(|p| p.leader)
                .unwrap_or(-1);
            if leader < 0 || self.in_flight.contains_key(&leader) {
                continue;
            }
            by_leader
                .entry(leader)
                .or_default()
                .push((tp.clone(), s.epoch, pos));
        }
        let started = !by_leader.is_empty();
        for (leader, parts) in by_leader {
            let cluster = self.cluster.clone();
            let config = self.config.clone();
            self.in_flight
                .insert(leader, tokio::spawn(fetch(cluster, config, leader, parts)));
        }
        started
    }
}

impl Consumer {
    /// The consumer as a `Stream` of records (each poll waits up to 500 ms and the stream
    /// keeps polling; it ends only on an error, which it yields first).
    ///
    /// ```no_run
    /// # async fn demo(consumer: runnel_api::Consumer) {
    /// use futures_util::StreamExt;
    /// let mut records = Box::pin(consumer.into_stream());
    /// while let Some(Ok(record)) = records.next().await {
    ///     println!("{}: {:?}", record.offset, record.value);
    /// }
    /// # }
    /// ```
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<ConsumerRecord, ClientError>> {
        let state = (self, VecDeque::<ConsumerRecord>::new(), false);
        futures_util::stream::unfold(state, |(mut c, mut pending, failed)| async move {
            if failed {
                return None;
            }
            loop {
                if let Some(r) = pending.pop_front() {
                    return Some((Ok(r), (c, pending, false)));
                }
                match c.poll(Duration::from_millis(500)).await {
                    Ok(records) => pending.extend(records),
                    Err(e) => return Some((Err(e), (c, pending, true))),
                }
            }
        })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for (_, h) in self.in_flight.drain() {
            h.abort();
        }
    }
}

/// Waits for the first of several futures.
async fn futures_select_all<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> F::Output {
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn fetch(
    cluster: Arc<Cluster>,
    config: ConsumerConfig,
    leader: i32,
    parts: Vec<(TopicPartition, u64, i64)>,
) -> FetchOutcome {
    let conn = cluster.connection(leader).await?;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (tp, _, pos) in &parts {
        let fp = FetchPartition::default()
            .with_partition(tp.partition)
            .with_fetch_offset(*pos)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(config.max_partition_fetch_bytes);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == tp.topic) {
            Some(t) => t.partitions.push(fp),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![fp]),
            ),
        }
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(config.fetch_max_wait.as_millis() as i32)
        .with_min_bytes(config.fetch_min_bytes)
        .with_max_bytes(config.fetch_max_bytes)
        .with_isolation_level(if config.isolation_level == IsolationLevel::ReadCommitted {
            1
        } else {
            0
        })
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    // Topic ids (v13+) are not used: cap at v12 so names identify topics.
    let version = conn
        .version_for::<FetchRequest>()
        .map(|v| v.min(12))
        .ok_or_else(|| ClientError::Unsupported("Fetch".into()))?;
    let resp = conn.send_at(&req, version).await?;
    if let Some(e) = ClientError::from_code(resp.error_code, "fetch") {
        return Err(e);
    }
    let mut out = Vec::new();
    for t in resp.responses {
        let topic = t.topic.0.as_str().to_string();
        for p in t.partitions {
            let tp = TopicPartition::new(topic.clone(), p.partition_index);
            let Some((_, epoch, pos)) = parts.iter().find(|(x, _, _)| *x == tp) else {
                continue;
            };
            let result = if p.error_code != 0 {
                PartitionResult::Error(p.error_code)
            } else {
                let aborted: Vec<(i64, i64)> = p
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect();
                let records = p.records.unwrap_or_default();
                let next = batches_end(&records);
                PartitionResult::Records(records, aborted, next)
            };
            out.push((tp, *epoch, *pos, result));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod fetch_ahead_tests {
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use bytes::BytesMut;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;
    use crate::records::{BatchBuilder, Compression};
    use crate::scripted_broker;

    /// Answers a fetch from offset 0 with records 0 and 1 of t-0, and any later one with
    /// nothing; counts the fetches and keeps the offset of the last.
    fn answer_fetch(
        req: scripted_broker::Request,
        out: &mut BytesMut,
        fetches: &AtomicUsize,
        last_offset: &AtomicI64,
    ) -> bool {
        let Ok(fetch) = FetchRequest::decode(&mut req.body.clone(), req.version) else {
            return false;
        };
        let offset = fetch.topics[0].partitions[0].fetch_offset;
        last_offset.store(offset, Ordering::SeqCst);
        fetches.fetch_add(1, Ordering::SeqCst);
        let records = (offset == 0).then(|| {
            let mut b = BatchBuilder::new();
            b.append(1_000, None, Some(b"r0"), &[]);
            b.append(1_001, None, Some(b"r1"), &[]);
            b.build(Compression::None, -1, -1, -1)
        });
        FetchResponse::default()
            .with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(fetch.topics[0].topic.clone())
                    .with_partitions(vec![
                        PartitionData::default()
                            .with_partition_index(0)
                            .with_high_watermark(2)
                            .with_records(Some(records.unwrap_or_default())),
                    ]),
            ])
            .encode(out, req.version)
            .is_ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_fetch_leaves_while_the_application_works_on_the_last_records() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let last_offset = Arc::new(AtomicI64::new(-1));
        let (f, l) = (fetches.clone(), last_offset.clone());
        let addr = scripted_broker::start(&[(ApiKey::Fetch, 12)], &[("t", 1)], move |req, out| {
            req.api == ApiKey::Fetch && answer_fetch(req, out, &f, &l)
        })
        .await;
        // As in `runnel perf consume`, the application runs as a task on a worker thread,
        // where the fetch tasks the consumer spawns queue behind it.
        tokio::spawn(async move {
            let mut cfg = ConsumerConfig::new(&addr);
            cfg.set("max.poll.records", "1").unwrap();
            let mut c = Consumer::connect(cfg).await.unwrap();
            let tp = TopicPartition::new("t", 0);
            c.assign(vec![tp.clone()]).await.unwrap();
            c.seek(&tp, 0).unwrap();
            let got = c.poll(Duration::from_secs(5)).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].offset, 0);
            // The application works on its record without yielding to the runtime; the
            // fetch for what follows the batch is out meanwhile.
            let deadline = Instant::now() + Duration::from_secs(5);
            while fetches.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                fetches.load(Ordering::SeqCst),
                2,
                "the next fetch waited for the application"
            );
            assert_eq!(last_offset.load(Ordering::SeqCst), 2);
            // Record 1 is still handed out, from the batch already fetched.
            let got = c.poll(Duration::from_secs(5)).await.unwrap();
            assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [1]);
        })
        .await
        .unwrap();
    }
}
