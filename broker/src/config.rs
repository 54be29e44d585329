//! Broker and topic configuration, with Apache Kafka's property names.
//!
//! The broker reads a `.properties` file plus command-line overrides into
//! [`BrokerConfig`]. Each topic has a [`TopicConfig`]: its own overrides (set at creation
//! or through IncrementalAlterConfigs) on top of the broker's defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A configuration error: an unknown key or a value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The key is not one Runnel knows.
    #[error("unknown configuration '{0}'")]
    UnknownKey(String),
    /// The value is not valid for the key.
    #[error("invalid value '{value}' for configuration '{key}': {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A line of a properties file could not be parsed.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Parses Java `.properties` text (`key=value` or `key: value`, `#`/`!` comments).
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some(pos) = line.find(['=', ':']) else {
            return Err(ConfigError::Syntax {
                line: i + 1,
                reason: format!("expected key=value, got '{line}'"),
            });
        };
        let key = line[..pos].trim().to_string();
        let value = line[pos + 1..].trim().to_string();
        if key.is_empty() {
            return Err(ConfigError::Syntax {
                line: i + 1,
                reason: "empty key".into(),
            });
        }
        out.push((key, value));
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse::<T>()
        .map_err(|_| ConfigError::InvalidValue {
            key: key.into(),
            value: value.into(),
            reason: "not a number".into(),
        })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            key: key.into(),
            value: value.into(),
            reason: "expected true or false".into(),
        }),
    }
}

/// A socket buffer size: -1 (the OS default) or a positive number of bytes.
fn buffer_size(key: &str, value: &str) -> Result<i64, ConfigError> {
    let v = parse_num(key, value)?;
    if v == -1 || (1..=i32::MAX as i64).contains(&v) {
        return Ok(v);
    }
    Err(ConfigError::InvalidValue {
        key: key.into(),
        value: value.into(),
        reason: "must be -1 (the OS default) or a positive number of bytes".into(),
    })
}

fn at_least(key: &str, value: &str, v: i64, min: i64) -> Result<i64, ConfigError> {
    if v < min {
        return Err(ConfigError::InvalidValue {
            key: key.into(),
            value: value.into(),
            reason: format!("must be at least {min}"),
        });
    }
    Ok(v)
}

/// One listener: `PLAINTEXT://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Listener name (`PLAINTEXT`).
    pub name: String,
    /// Host to bind (and advertise, unless `advertised.listeners` says otherwise).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Listener {
    /// Parses `NAME://host:port` (or bare `host:port`, taken as PLAINTEXT).
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::InvalidValue {
            key: "listeners".into(),
            value: s.into(),
            reason: reason.into(),
        };
        let (name, rest) = match s.split_once("://") {
            Some((n, r)) => (n.trim().to_string(), r),
            None => ("PLAINTEXT".to_string(), s),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("expected NAME://host:port"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = port.parse::<u16>().map_err(|_| bad("bad port"))?;
        if name != "PLAINTEXT" {
            return Err(bad("only PLAINTEXT listeners are supported"));
        }
        Ok(Self { name, host, port })
    }

    /// `host:port` for binding.
    pub fn bind_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Transaction coordinator and producer-state settings, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`: the largest `transaction.timeout.ms` a producer may ask.
    pub max_timeout_ms: i64,
    /// `transactional.id.expiration.ms`: idle transactional ids are forgotten after this.
    pub transactional_id_expiration_ms: i64,
    /// `producer.id.expiration.ms`: idle producers' sequence state is dropped after this.
    pub producer_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub abort_timed_out_interval_ms: i64,
    /// `transaction.state.log.num.partitions`.
    pub state_log_partitions: i32,
    /// `runnel.transaction.version`: the `transaction.version` feature level finalized in
    /// ApiVersions (Kafka sets it with `kafka-features.sh`); 2 enables transactions v2
    /// (KIP-890: implicit partition adds, an epoch bump per transaction).
    pub transaction_version: i16,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            producer_id_expiration_ms: 86_400_000,
            abort_timed_out_interval_ms: 10_000,
            state_log_partitions: 50,
            transaction_version: 2,
        }
    }
}

/// Broker-wide settings (Kafka's `server.properties` names).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `node.id` (also `broker.id`).
    pub node_id: i32,
    /// `listeners`.
    pub listeners: Vec<Listener>,
    /// `advertised.listeners` (defaults to `listeners`).
    pub advertised_listeners: Vec<Listener>,
    /// `log.dirs` (or `log.dir`); Runnel uses the first.
    pub log_dirs: Vec<PathBuf>,
    /// `num.partitions` for auto-created topics and CreateTopics with -1.
    pub num_partitions: i32,
    /// `default.replication.factor`.
    pub default_replication_factor: i16,
    /// `auto.create.topics.enable`.
    pub auto_create_topics_enable: bool,
    /// `delete.topic.enable`.
    pub delete_topic_enable: bool,
    /// `message.max.bytes`: default for a topic's `max.message.bytes`.
    pub message_max_bytes: i64,
    /// `socket.request.max.bytes`: largest request frame accepted.
    pub socket_request_max_bytes: i64,
    /// `socket.send.buffer.bytes`: SO_SNDBUF of accepted connections (-1: the OS's,
    /// which grows with the connection). Not Kafka's 100 KiB by default: with it
    /// `runnel perf consume` read faster here but librdkafka's consumer less than half
    /// as fast (bench of 2026-12-02, rows 3r and 3m).
    pub socket_send_buffer_bytes: i64,
    /// `socket.receive.buffer.bytes`: SO_RCVBUF of accepted connections (-1: the OS's,
    /// which grows with the connection; Kafka's default of 100 KiB slowed producers).
    pub socket_receive_buffer_bytes: i64,
    /// `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: i64,
    /// `log.cleaner.enable`: whether compacted topics are compacted.
    pub log_cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: the pause between cleaner passes.
    pub log_cleaner_backoff_ms: i64,
    /// `log.cleaner.dedupe.buffer.size`: memory for one pass's key map.
    pub log_cleaner_dedupe_buffer_size: i64,
    /// `log.initial.task.delay.ms`: delay before the first retention run after start.
    pub log_initial_task_delay_ms: i64,
    /// `log.flush.offset.checkpoint.interval.ms`.
    pub log_flush_offset_checkpoint_interval_ms: i64,
    /// `log.flush.scheduler.interval.ms`: how often `flush.ms` is checked.
    pub log_flush_scheduler_interval_ms: i64,
    /// `replica.fetch.wait.max.ms`-like cap on a Fetch long poll (`fetch.max.wait.ms` cap).
    pub fetch_max_wait_cap_ms: i64,
    /// `runnel.create.topic.policy.max.partitions`: the built-in create-topic policy
    /// (Kafka's pluggable `create.topic.policy.class.name` needs Java); topics or
    /// partition increases above it fail with POLICY_VIOLATION. -1: no limit.
    pub policy_max_partitions: i64,
    /// Group coordinator limits (`group.*`).
    pub groups: crate::group::GroupConfig,
    /// `offsets.retention.minutes`, in ms.
    pub offsets_retention_ms: i64,
    /// Transaction coordinator and producer-state settings.
    pub txn: TxnConfig,
    /// Defaults for topic-level settings, from the `log.*` broker keys.
    pub topic_defaults: TopicDefaults,
    /// Every key that was set explicitly, for DescribeConfigs on the broker.
    pub explicit: BTreeMap<String, String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let listener = Listener {
            name: "PLAINTEXT".into(),
            host: "127.0.0.1".into(),
            port: 9092,
        };
        Self {
            node_id: 1,
            listeners: vec![listener.clone()],
            advertised_listeners: vec![listener],
            log_dirs: vec![PathBuf::from("runnel-data")],
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            delete_topic_enable: true,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            socket_send_buffer_bytes: -1,
            socket_receive_buffer_bytes: -1,
            log_retention_check_interval_ms: 300_000,
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_dedupe_buffer_size: 134_217_728,
            log_initial_task_delay_ms: 30_000,
            log_flush_offset_checkpoint_interval_ms: 60_000,
            log_flush_scheduler_interval_ms: 1_000,
            fetch_max_wait_cap_ms: 30_000,
            policy_max_partitions: -1,
            groups: crate::group::GroupConfig::default(),
            offsets_retention_ms: 7 * 24 * 3_600_000,
            txn: TxnConfig::default(),
            topic_defaults: TopicDefaults::default(),
            explicit: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Builds a config from key/value pairs (a properties file, then overrides).
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let mut advertised = None;
        let mut retention_ms = None;
        let mut retention_minutes = None;
        let mut retention_hours = None;
        let mut roll_ms = None;
        let mut roll_hours = None;
        for (k, v) in pairs {
            let key = k.as_str();
            let val = v.as_str();
            c.explicit.insert(k.clone(), v.clone());
            match key {
                "node.id" | "broker.id" => c.node_id = parse_num(key, val)?,
                "listeners" => {
                    c.listeners = val
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| Listener::parse(s.trim()))
                        .collect::<Result<_, _>>()?
                }
                "advertised.listeners" => {
                    advertised = Some(
                        val.split(',')
                            .filter(|s| !s.trim().is_empty())
                            .map(|s| Listener::parse(s.trim()))
                            .collect::<Result<Vec<_>, _>>()?,
                    )
                }
                "log.dirs" | "log.dir" => {
                    c.log_dirs = val
                        .split(',')
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| PathBuf::from(s.trim()))
                        .collect()
                }
                "num.partitions" => {
                    c.num_partitions = at_least(key, val, parse_num(key, val)?, 1)? as i32
                }
                "default.replication.factor" => {
                    c.default_replication_factor =
                        at_least(key, val, parse_num(key, val)?, 1)? as i16
                }
                "auto.create.topics.enable" => c.auto_create_topics_enable = parse_bool(key, val)?,
                "delete.topic.enable" => c.delete_topic_enable = parse_bool(key, val)?,
                "message.max.bytes" => {
                    c.message_max_bytes = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "socket.request.max.bytes" => {
                    c.socket_request_max_bytes = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "socket.send.buffer.bytes" => c.socket_send_buffer_bytes = buffer_size(key, val)?,
                "socket.receive.buffer.bytes" => {
                    c.socket_receive_buffer_bytes = buffer_size(key, val)?
                }
                "log.retention.check.interval.ms" => {
                    c.log_retention_check_interval_ms = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "runnel.create.topic.policy.max.partitions" => {
                    c.policy_max_partitions = at_least(key, val, parse_num(key, val)?, -1)?
                }
                "log.initial.task.delay.ms" => {
                    c.log_initial_task_delay_ms = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "log.flush.offset.checkpoint.interval.ms" => {
                    c.log_flush_offset_checkpoint_interval_ms =
                        at_least(key, val, parse_num(key, val)?, 1)?
                }
                "log.flush.scheduler.interval.ms" => {
                    c.log_flush_scheduler_interval_ms = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "log.segment.bytes" => {
                    c.topic_defaults.segment_bytes = at_least(key, val, parse_num(key, val)?, 14)?
                }
                "log.roll.ms" => roll_ms = Some(at_least(key, val, parse_num(key, val)?, 1)?),
                "log.roll.hours" => roll_hours = Some(at_least(key, val, parse_num(key, val)?, 1)?),
                "log.retention.ms" => {
                    retention_ms = Some(at_least(key, val, parse_num(key, val)?, -1)?)
                }
                "log.retention.minutes" => retention_minutes = Some(parse_num::<i64>(key, val)?),
                "log.retention.hours" => retention_hours = Some(parse_num::<i64>(key, val)?),
                "log.retention.bytes" => {
                    c.topic_defaults.retention_bytes = at_least(key, val, parse_num(key, val)?, -1)?
                }
                "log.flush.interval.messages" => {
                    c.topic_defaults.flush_messages = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "log.flush.interval.ms" => {
                    c.topic_defaults.flush_ms = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "log.index.interval.bytes" => {
                    c.topic_defaults.index_interval_bytes =
                        at_least(key, val, parse_num(key, val)?, 0)?
                }
                "log.index.size.max.bytes" => {
                    c.topic_defaults.segment_index_bytes =
                        at_least(key, val, parse_num(key, val)?, 4)?
                }
                "log.message.timestamp.type" => {
                    c.topic_defaults.message_timestamp_type = parse_timestamp_type(key, val)?
                }
                "log.message.timestamp.before.max.ms" => {
                    c.topic_defaults.message_timestamp_before_max_ms =
                        at_least(key, val, parse_num(key, val)?, 0)?
                }
                "log.message.timestamp.after.max.ms" => {
                    c.topic_defaults.message_timestamp_after_max_ms =
                        at_least(key, val, parse_num(key, val)?, 0)?
                }
                "log.cleanup.policy" => c.topic_defaults.cleanup_policy = val.to_string(),
                "log.cleaner.enable" => c.log_cleaner_enable = parse_bool(key, val)?,
                "log.cleaner.backoff.ms" => {
                    c.log_cleaner_backoff_ms = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "log.cleaner.dedupe.buffer.size" => {
                    c.log_cleaner_dedupe_buffer_size =
                        at_least(key, val, parse_num(key, val)?, 1 << 20)?
                }
                "log.cleaner.delete.retention.ms" => {
                    c.topic_defaults.delete_retention_ms =
                        at_least(key, val, parse_num(key, val)?, 0)?
                }
                "log.cleaner.min.compaction.lag.ms" => {
                    c.topic_defaults.min_compaction_lag_ms =
                        at_least(key, val, parse_num(key, val)?, 0)?
                }
                "log.cleaner.max.compaction.lag.ms" => {
                    c.topic_defaults.max_compaction_lag_ms =
                        at_least(key, val, parse_num(key, val)?, 1)?
                }
                "log.cleaner.min.cleanable.ratio" => {
                    c.topic_defaults.min_cleanable_dirty_ratio = parse_ratio(key, val)?
                }
                // One cleaner thread does all the work on a node this size.
                "log.cleaner.threads" => {
                    at_least(key, val, parse_num(key, val)?, 1)?;
                }
                "compression.type" => {
                    c.topic_defaults.compression_type = parse_compression_type(key, val)?
                }
                "compression.gzip.level" => {
                    c.topic_defaults.compression_gzip_level = parse_level(key, val, 1)?
                }
                "compression.lz4.level" => {
                    c.topic_defaults.compression_lz4_level = parse_level(key, val, 3)?
                }
                "compression.zstd.level" => {
                    c.topic_defaults.compression_zstd_level = parse_level(key, val, 4)?
                }
                "min.insync.replicas" => {
                    c.topic_defaults.min_insync_replicas =
                        at_least(key, val, parse_num(key, val)?, 1)? as i32
                }
                // Accepted for compatibility with Kafka's sample server.properties; they
                // describe KRaft roles and threads that a single Runnel process does not need.
                "process.roles"
                | "controller.quorum.voters"
                | "controller.quorum.bootstrap.servers"
                | "controller.listener.names"
                | "inter.broker.listener.name"
                | "listener.security.protocol.map"
                | "num.network.threads"
                | "num.io.threads"
                | "num.recovery.threads.per.data.dir"
                | "offsets.topic.replication.factor"
                | "transaction.state.log.replication.factor"
                | "transaction.state.log.min.isr"
                | "share.coordinator.state.topic.replication.factor"
                | "share.coordinator.state.topic.min.isr" => {}
                "group.initial.rebalance.delay.ms" => {
                    c.groups.initial_rebalance_delay_ms =
                        at_least(key, val, parse_num(key, val)?, 0)?
                }
                "group.min.session.timeout.ms" => {
                    c.groups.min_session_timeout_ms =
                        at_least(key, val, parse_num(key, val)?, 1)? as i32
                }
                "group.max.session.timeout.ms" => {
                    c.groups.max_session_timeout_ms =
                        at_least(key, val, parse_num(key, val)?, 1)? as i32
                }
                "group.max.size" => {
                    c.groups.max_size = at_least(key, val, parse_num(key, val)?, 1)? as usize
                }
                "offsets.retention.minutes" => {
                    c.offsets_retention_ms =
                        at_least(key, val, parse_num(key, val)?, 1)?.saturating_mul(60_000)
                }
                "transaction.max.timeout.ms" => {
                    c.txn.max_timeout_ms = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "transactional.id.expiration.ms" => {
                    c.txn.transactional_id_expiration_ms =
                        at_least(key, val, parse_num(key, val)?, 1)?
                }
                "producer.id.expiration.ms" => {
                    c.txn.producer_id_expiration_ms = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                    c.txn.abort_timed_out_interval_ms = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "runnel.transaction.version" => {
                    let v = at_least(key, val, parse_num(key, val)?, 0)?;
                    if v > 2 {
                        return Err(ConfigError::InvalidValue {
                            key: key.into(),
                            value: val.into(),
                            reason: "transaction.version levels are 0, 1 and 2".into(),
                        });
                    }
                    c.txn.transaction_version = v as i16;
                }
                "transaction.state.log.num.partitions" => {
                    c.txn.state_log_partitions =
                        at_least(key, val, parse_num(key, val)?, 1)?.min(10_000) as i32
                }
                _ => return Err(ConfigError::UnknownKey(k.clone())),
            }
        }
        if let Some(ms) = retention_ms {
            c.topic_defaults.retention_ms = ms;
        } else if let Some(m) = retention_minutes {
            c.topic_defaults.retention_ms = m.saturating_mul(60_000);
        } else if let Some(h) = retention_hours {
            c.topic_defaults.retention_ms = h.saturating_mul(3_600_000);
        }
        if let Some(ms) = roll_ms {
            c.topic_defaults.segment_ms = ms;
        } else if let Some(h) = roll_hours {
            c.topic_defaults.segment_ms = h.saturating_mul(3_600_000);
        }
        c.topic_defaults.max_message_bytes = c.message_max_bytes;
        c.advertised_listeners = advertised.unwrap_or_else(|| c.listeners.clone());
        if c.listeners.is_empty() {
            return Err(ConfigError::InvalidValue {
                key: "listeners".into(),
                value: String::new(),
                reason: "at least one listener is required".into(),
            });
        }
        if c.log_dirs.is_empty() {
            return Err(ConfigError::InvalidValue {
                key: "log.dirs".into(),
                value: String::new(),
                reason: "at least one log directory is required".into(),
            });
        }
        Ok(c)
    }

    /// The directory holding all partition logs.
    pub fn log_dir(&self) -> &PathBuf {
        &self.log_dirs[0]
    }

    /// The broker-level configs reported by DescribeConfigs: (name, value, set explicitly).
    pub fn describe(&self) -> Vec<(String, String, bool)> {
        let d = &self.topic_defaults;
        let adv = |ls: &[Listener]| {
            ls.iter()
                .map(|l| format!("{}://{}:{}", l.name, l.host, l.port))
                .collect::<Vec<_>>()
                .join(",")
        };
        let rows = [
            ("node.id", self.node_id.to_string()),
            ("broker.id", self.node_id.to_string()),
            ("listeners", adv(&self.listeners)),
            ("advertised.listeners", adv(&self.advertised_listeners)),
            (
                "log.dirs",
                self.log_dirs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("num.partitions", self.num_partitions.to_string()),
            (
                "default.replication.factor",
                self.default_replication_factor.to_string(),
            ),
            (
                "auto.create.topics.enable",
                self.auto_create_topics_enable.to_string(),
            ),
            ("delete.topic.enable", self.delete_topic_enable.to_string()),
            ("message.max.bytes", self.message_max_bytes.to_string()),
            (
                "socket.request.max.bytes",
                self.socket_request_max_bytes.to_string(),
            ),
            (
                "socket.send.buffer.bytes",
                self.socket_send_buffer_bytes.to_string(),
            ),
            (
                "socket.receive.buffer.bytes",
                self.socket_receive_buffer_bytes.to_string(),
            ),
            (
                "log.retention.check.interval.ms",
                self.log_retention_check_interval_ms.to_string(),
            ),
            (
                "log.initial.task.delay.ms",
                self.log_initial_task_delay_ms.to_string(),
            ),
            (
                "runnel.create.topic.policy.max.partitions",
                self.policy_max_partitions.to_string(),
            ),
            (
                "group.initial.rebalance.delay.ms",
                self.groups.initial_rebalance_delay_ms.to_string(),
            ),
            (
                "group.min.session.timeout.ms",
                self.groups.min_session_timeout_ms.to_string(),
            ),
            (
                "group.max.session.timeout.ms",
                self.groups.max_session_timeout_ms.to_string(),
            ),
            ("group.max.size", self.groups.max_size.to_string()),
            (
                "offsets.retention.minutes",
                (self.offsets_retention_ms / 60_000).to_string(),
            ),
            (
                "transaction.max.timeout.ms",
                self.txn.max_timeout_ms.to_string(),
            ),
            (
                "transactional.id.expiration.ms",
                self.txn.transactional_id_expiration_ms.to_string(),
            ),
            (
                "producer.id.expiration.ms",
                self.txn.producer_id_expiration_ms.to_string(),
            ),
            (
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                self.txn.abort_timed_out_interval_ms.to_string(),
            ),
            (
                "transaction.state.log.num.partitions",
                self.txn.state_log_partitions.to_string(),
            ),
            (
                "runnel.transaction.version",
                self.txn.transaction_version.to_string(),
            ),
            ("log.segment.bytes", d.segment_bytes.to_string()),
            ("log.roll.ms", d.segment_ms.to_string()),
            ("log.retention.ms", d.retention_ms.to_string()),
            ("log.retention.bytes", d.retention_bytes.to_string()),
            ("log.flush.interval.messages", d.flush_messages.to_string()),
            ("log.flush.interval.ms", d.flush_ms.to_string()),
            (
                "log.index.interval.bytes",
                d.index_interval_bytes.to_string(),
            ),
            (
                "log.index.size.max.bytes",
                d.segment_index_bytes.to_string(),
            ),
            (
                "log.message.timestamp.type",
                d.message_timestamp_type.as_str().to_string(),
            ),
            (
                "log.message.timestamp.before.max.ms",
                d.message_timestamp_before_max_ms.to_string(),
            ),
            (
                "log.message.timestamp.after.max.ms",
                d.message_timestamp_after_max_ms.to_string(),
            ),
            ("log.cleanup.policy", d.cleanup_policy.clone()),
            ("log.cleaner.enable", self.log_cleaner_enable.to_string()),
            (
                "log.cleaner.backoff.ms",
                self.log_cleaner_backoff_ms.to_string(),
            ),
            (
                "log.cleaner.dedupe.buffer.size",
                self.log_cleaner_dedupe_buffer_size.to_string(),
            ),
            (
                "log.cleaner.delete.retention.ms",
                d.delete_retention_ms.to_string(),
            ),
            (
                "log.cleaner.min.compaction.lag.ms",
                d.min_compaction_lag_ms.to_string(),
            ),
            (
                "log.cleaner.max.compaction.lag.ms",
                d.max_compaction_lag_ms.to_string(),
            ),
            (
                "log.cleaner.min.cleanable.ratio",
                d.min_cleanable_dirty_ratio.to_string(),
            ),
            ("compression.type", d.compression_type.clone()),
            (
                "compression.gzip.level",
                d.compression_gzip_level.to_string(),
            ),
            ("compression.lz4.level", d.compression_lz4_level.to_string()),
            (
                "compression.zstd.level",
                d.compression_zstd_level.to_string(),
            ),
            ("min.insync.replicas", d.min_insync_replicas.to_string()),
        ];
        rows.into_iter()
            .map(|(k, v)| {
                let explicit = self.explicit.contains_key(k);
                (k.to_string(), v, explicit)
            })
            .collect()
    }
}

/// `message.timestamp.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamp is kept.
    CreateTime,
    /// The broker stamps each batch with its append time.
    LogAppendTime,
}

impl TimestampType {
    /// Kafka's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

fn parse_timestamp_type(key: &str, v: &str) -> Result<TimestampType, ConfigError> {
    match v.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(ConfigError::InvalidValue {
            key: key.into(),
            value: v.into(),
            reason: "expected CreateTime or LogAppendTime".into(),
        }),
    }
}

/// `compression.<codec>.level` for Kafka codec `codec`, in the range Kafka accepts.
fn parse_level(key: &str, v: &str, codec: u8) -> Result<i32, ConfigError> {
    let level: i32 = parse_num(key, v)?;
    runnel_api::codec::check_level(codec, level).map_err(|reason| ConfigError::InvalidValue {
        key: key.into(),
        value: v.into(),
        reason,
    })?;
    Ok(level)
}

fn parse_compression_type(key: &str, v: &str) -> Result<String, ConfigError> {
    match v.trim() {
        "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(v.trim().into()),
        _ => Err(ConfigError::InvalidValue {
            key: key.into(),
            value: v.into(),
            reason: "expected one of producer, uncompressed, gzip, snappy, lz4, zstd".into(),
        }),
    }
}

/// Defaults for topic-level settings, taken from the broker's `log.*` keys.
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    /// `segment.bytes` (`log.segment.bytes`).
    pub segment_bytes: i64,
    /// `segment.ms` (`log.roll.ms`).
    pub segment_ms: i64,
    /// `retention.ms` (`log.retention.ms`); -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes` (`log.retention.bytes`); -1 keeps all.
    pub retention_bytes: i64,
    /// `flush.messages` (`log.flush.interval.messages`).
    pub flush_messages: i64,
    /// `flush.ms` (`log.flush.interval.ms`).
    pub flush_ms: i64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: i64,
    /// `segment.index.bytes`.
    pub segment_index_bytes: i64,
    /// `max.message.bytes` (`message.max.bytes`).
    pub max_message_bytes: i64,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: how far in the past a CreateTime may be.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far in the future a CreateTime may be.
    pub message_timestamp_after_max_ms: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: String,
    /// `compression.type`.
    pub compression_type: String,
    /// `compression.gzip.level` (-1: zlib's default).
    pub compression_gzip_level: i32,
    /// `compression.lz4.level` (9, the default, is LZ4's fast mode).
    pub compression_lz4_level: i32,
    /// `compression.zstd.level`.
    pub compression_zstd_level: i32,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// `delete.retention.ms` (`log.cleaner.delete.retention.ms`): how long a tombstone
    /// stays readable after its segment was cleaned.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms` (`log.cleaner.min.compaction.lag.ms`).
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms` (`log.cleaner.max.compaction.lag.ms`).
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio` (`log.cleaner.min.cleanable.ratio`).
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            segment_bytes: 1_073_741_824,
            segment_ms: 604_800_000,
            retention_ms: 604_800_000,
            retention_bytes: -1,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            segment_index_bytes: 10_485_760,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            // Kafka 4 rejects timestamps more than an hour ahead by default.
            message_timestamp_after_max_ms: 3_600_000,
            cleanup_policy: "delete".into(),
            compression_type: "producer".into(),
            compression_gzip_level: runnel_api::codec::GZIP_LEVELS.0,
            compression_lz4_level: runnel_api::codec::LZ4_LEVELS.0,
            compression_zstd_level: runnel_api::codec::ZSTD_LEVELS.0,
            min_insync_replicas: 1,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

/// The topic-level keys Runnel understands, with the broker key each defaults from.
pub const TOPIC_CONFIG_KEYS: &[(&str, &str)] = &[
    ("cleanup.policy", "log.cleanup.policy"),
    ("compression.gzip.level", "compression.gzip.level"),
    ("compression.lz4.level", "compression.lz4.level"),
    ("compression.type", "compression.type"),
    ("compression.zstd.level", "compression.zstd.level"),
    ("delete.retention.ms", "log.cleaner.delete.retention.ms"),
    ("file.delete.delay.ms", "log.segment.delete.delay.ms"),
    ("flush.messages", "log.flush.interval.messages"),
    ("flush.ms", "log.flush.interval.ms"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms"),
    ("max.message.bytes", "message.max.bytes"),
    (
        "message.timestamp.after.max.ms",
        "log.message.timestamp.after.max.ms",
    ),
    (
        "message.timestamp.before.max.ms",
        "log.message.timestamp.before.max.ms",
    ),
    ("message.timestamp.type", "log.message.timestamp.type"),
    (
        "min.cleanable.dirty.ratio",
        "log.cleaner.min.cleanable.ratio",
    ),
    ("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms"),
    ("min.insync.replicas", "min.insync.replicas"),
    ("preallocate", "log.preallocate"),
    ("retention.bytes", "log.retention.bytes"),
    ("retention.ms", "log.retention.ms"),
    ("segment.bytes", "log.segment.bytes"),
    ("segment.index.bytes", "log.index.size.max.bytes"),
    ("segment.jitter.ms", "log.roll.jitter.ms"),
    ("segment.ms", "log.roll.ms"),
    (
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
    ),
];

/// A topic's effective settings: broker defaults with the topic's overrides applied.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    /// The topic's own overrides, as set (validated) by the user.
    pub overrides: BTreeMap<String, String>,
    /// `segment.bytes`.
    pub segment_bytes: i64,
    /// `segment.ms`.
    pub segment_ms: i64,
    /// `retention.ms`.
    pub retention_ms: i64,
    /// `retention.bytes`.
    pub retention_bytes: i64,
    /// `flush.messages`.
    pub flush_messages: i64,
    /// `flush.ms`.
    pub flush_ms: i64,
    /// `index.interval.bytes`.
    pub index_interval_bytes: i64,
    /// `max.message.bytes`.
    pub max_message_bytes: i64,
    /// `message.timestamp.type`.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`.
    pub message_timestamp_after_max_ms: i64,
    /// `cleanup.policy`.
    pub cleanup_policy: String,
    /// `compression.type`.
    pub compression_type: String,
    /// `compression.gzip.level` (-1: zlib's default).
    pub compression_gzip_level: i32,
    /// `compression.lz4.level` (9, the default, is LZ4's fast mode).
    pub compression_lz4_level: i32,
    /// `compression.zstd.level`.
    pub compression_zstd_level: i32,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`.
    pub min_cleanable_dirty_ratio: f64,
}

impl TopicConfig {
    /// `compression.<codec>.level` for Kafka codec `codec` (`None` for Snappy and none).
    pub fn compression_level(&self, codec: i16) -> Option<i32> {
        match codec {
            1 => Some(self.compression_gzip_level),
            3 => Some(self.compression_lz4_level),
            4 => Some(self.compression_zstd_level),
            _ => None,
        }
    }

    /// Whether the log cleaner compacts this topic (`cleanup.policy` has `compact`).
    pub fn compacted(&self) -> bool {
        self.cleanup_policy
            .split(',')
            .any(|p| p.trim() == "compact")
    }

    /// Builds the effective config; fails on an unknown key or invalid value.
    pub fn new(
        defaults: &TopicDefaults,
        overrides: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut c = TopicConfig {
            overrides: BTreeMap::new(),
            segment_bytes: defaults.segment_bytes,
            segment_ms: defaults.segment_ms,
            retention_ms: defaults.retention_ms,
            retention_bytes: defaults.retention_bytes,
            flush_messages: defaults.flush_messages,
            flush_ms: defaults.flush_ms,
            index_interval_bytes: defaults.index_interval_bytes,
            max_message_bytes: defaults.max_message_bytes,
            message_timestamp_type: defaults.message_timestamp_type,
            message_timestamp_before_max_ms: defaults.message_timestamp_before_max_ms,
            message_timestamp_after_max_ms: defaults.message_timestamp_after_max_ms,
            cleanup_policy: defaults.cleanup_policy.clone(),
            compression_type: defaults.compression_type.clone(),
            compression_gzip_level: defaults.compression_gzip_level,
            compression_lz4_level: defaults.compression_lz4_level,
            compression_zstd_level: defaults.compression_zstd_level,
            min_insync_replicas: defaults.min_insync_replicas,
            delete_retention_ms: defaults.delete_retention_ms,
            min_compaction_lag_ms: defaults.min_compaction_lag_ms,
            max_compaction_lag_ms: defaults.max_compaction_lag_ms,
            min_cleanable_dirty_ratio: defaults.min_cleanable_dirty_ratio,
        };
        for (k, v) in &overrides {
            let key = k.as_str();
            let val = v.as_str();
            match key {
                "segment.bytes" => c.segment_bytes = at_least(key, val, parse_num(key, val)?, 14)?,
                "segment.ms" => c.segment_ms = at_least(key, val, parse_num(key, val)?, 1)?,
                "retention.ms" => c.retention_ms = at_least(key, val, parse_num(key, val)?, -1)?,
                "retention.bytes" => {
                    c.retention_bytes = at_least(key, val, parse_num(key, val)?, -1)?
                }
                "flush.messages" => c.flush_messages = at_least(key, val, parse_num(key, val)?, 1)?,
                "flush.ms" => c.flush_ms = at_least(key, val, parse_num(key, val)?, 0)?,
                "index.interval.bytes" => {
                    c.index_interval_bytes = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "max.message.bytes" => {
                    c.max_message_bytes = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "message.timestamp.type" => {
                    c.message_timestamp_type = parse_timestamp_type(key, val)?
                }
                "message.timestamp.before.max.ms" => {
                    c.message_timestamp_before_max_ms = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "message.timestamp.after.max.ms" => {
                    c.message_timestamp_after_max_ms = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "cleanup.policy" => {
                    for p in val.split(',') {
                        if !matches!(p.trim(), "delete" | "compact") {
                            return Err(ConfigError::InvalidValue {
                                key: key.into(),
                                value: val.into(),
                                reason: "expected delete, compact or both".into(),
                            });
                        }
                    }
                    c.cleanup_policy = val.into();
                }
                "compression.type" => c.compression_type = parse_compression_type(key, val)?,
                "compression.gzip.level" => c.compression_gzip_level = parse_level(key, val, 1)?,
                "compression.lz4.level" => c.compression_lz4_level = parse_level(key, val, 3)?,
                "compression.zstd.level" => c.compression_zstd_level = parse_level(key, val, 4)?,
                "min.insync.replicas" => {
                    c.min_insync_replicas = at_least(key, val, parse_num(key, val)?, 1)? as i32
                }
                "delete.retention.ms" => {
                    c.delete_retention_ms = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "min.compaction.lag.ms" => {
                    c.min_compaction_lag_ms = at_least(key, val, parse_num(key, val)?, 0)?
                }
                "max.compaction.lag.ms" => {
                    c.max_compaction_lag_ms = at_least(key, val, parse_num(key, val)?, 1)?
                }
                "segment.index.bytes" | "file.delete.delay.ms" | "segment.jitter.ms" => {
                    at_least(key, val, parse_num(key, val)?, 0)?;
                }
                "min.cleanable.dirty.ratio" => {
                    c.min_cleanable_dirty_ratio = parse_ratio(key, val)?;
                }
                "preallocate" | "unclean.leader.election.enable" => {
                    parse_bool(key, val)?;
                }
                _ => return Err(ConfigError::UnknownKey(k.clone())),
            }
        }
        c.overrides = overrides;
        Ok(c)
    }

    /// Every topic-level key with its effective value and whether the topic overrides it.
    pub fn describe(&self) -> Vec<(&'static str, String, bool)> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|(k, _)| {
                let v = match *k {
                    "segment.bytes" => self.segment_bytes.to_string(),
                    "segment.ms" => self.segment_ms.to_string(),
                    "retention.ms" => self.retention_ms.to_string(),
                    "retention.bytes" => self.retention_bytes.to_string(),
                    "flush.messages" => self.flush_messages.to_string(),
                    "flush.ms" => self.flush_ms.to_string(),
                    "index.interval.bytes" => self.index_interval_bytes.to_string(),
                    "max.message.bytes" => self.max_message_bytes.to_string(),
                    "message.timestamp.type" => self.message_timestamp_type.as_str().into(),
                    "message.timestamp.before.max.ms" => {
                        self.message_timestamp_before_max_ms.to_string()
                    }
                    "message.timestamp.after.max.ms" => {
                        self.message_timestamp_after_max_ms.to_string()
                    }
                    "cleanup.policy" => self.cleanup_policy.clone(),
                    "compression.type" => self.compression_type.clone(),
                    "compression.gzip.level" => self.compression_gzip_level.to_string(),
                    "compression.lz4.level" => self.compression_lz4_level.to_string(),
                    "compression.zstd.level" => self.compression_zstd_level.to_string(),
                    "min.insync.replicas" => self.min_insync_replicas.to_string(),
                    "delete.retention.ms" => self.delete_retention_ms.to_string(),
                    "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
                    "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
                    "min.cleanable.dirty.ratio" => self.min_cleanable_dirty_ratio.to_string(),
                    other => self
                        .overrides
                        .get(other)
                        .cloned()
                        .unwrap_or_else(|| default_only_value(other).into()),
                };
                (*k, v, self.overrides.contains_key(*k))
            })
            .collect()
    }
}

fn parse_ratio(key: &str, val: &str) -> Result<f64, ConfigError> {
    let r: f64 = parse_num(key, val)?;
    if !(0.0..=1.0).contains(&r) {
        return Err(ConfigError::InvalidValue {
            key: key.into(),
            value: val.into(),
            reason: "must be between 0 and 1".into(),
        });
    }
    Ok(r)
}

fn default_only_value(key: &str) -> &'static str {
    match key {
        "segment.index.bytes" => "10485760",
        "file.delete.delay.ms" => "60000",
        "preallocate" => "false",
        "segment.jitter.ms" => "0",
        "unclean.leader.election.enable" => "false",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_with_comments_and_both_separators() {
        let p = parse_properties("# c\n! c\nlog.dirs=/a\n num.partitions : 3 \n\n").unwrap();
        assert_eq!(
            p,
            vec![
                ("log.dirs".into(), "/a".into()),
                ("num.partitions".into(), "3".into())
            ]
        );
    }

    #[test]
    fn broker_config_reads_kafka_names_and_retention_precedence() {
        let pairs = vec![
            ("log.retention.hours".to_string(), "1".to_string()),
            ("log.retention.minutes".to_string(), "2".to_string()),
            (
                "listeners".to_string(),
                "PLAINTEXT://127.0.0.1:19092".to_string(),
            ),
        ];
        let c = BrokerConfig::from_pairs(&pairs).unwrap();
        assert_eq!(c.topic_defaults.retention_ms, 120_000, "minutes beat hours");
        assert_eq!(c.listeners[0].port, 19092);
        assert_eq!(c.advertised_listeners, c.listeners);
    }

    #[test]
    fn unknown_broker_key_is_an_error() {
        let err = BrokerConfig::from_pairs(&[("no.such.key".into(), "1".into())]).unwrap_err();
        assert_eq!(err, ConfigError::UnknownKey("no.such.key".into()));
    }

    #[test]
    fn socket_buffer_sizes_take_minus_one_or_bytes() {
        let cfg = |k: &str, v: &str| BrokerConfig::from_pairs(&[(k.into(), v.into())]);
        let d = cfg("num.partitions", "1").unwrap();
        assert_eq!(d.socket_send_buffer_bytes, -1);
        assert_eq!(d.socket_receive_buffer_bytes, -1);
        let c = cfg("socket.send.buffer.bytes", "102400").unwrap();
        assert_eq!(c.socket_send_buffer_bytes, 102_400);
        let c = cfg("socket.receive.buffer.bytes", "262144").unwrap();
        assert_eq!(c.socket_receive_buffer_bytes, 262_144);
        for (k, v) in [
            ("socket.send.buffer.bytes", "0"),
            ("socket.send.buffer.bytes", "-2"),
            ("socket.receive.buffer.bytes", "big"),
            ("socket.receive.buffer.bytes", "4294967296"),
        ] {
            assert!(
                matches!(cfg(k, v), Err(ConfigError::InvalidValue { .. })),
                "{k}={v} is refused"
            );
        }
    }

    #[test]
    fn topic_config_rejects_bad_values_and_unknown_keys() {
        let d = TopicDefaults::default();
        let bad = |k: &str, v: &str| {
            TopicConfig::new(&d, BTreeMap::from([(k.to_string(), v.to_string())])).is_err()
        };
        assert!(bad("retention.ms", "abc"));
        assert!(bad("segment.bytes", "10"));
        assert!(bad("cleanup.policy", "keep"));
        assert!(bad("nope", "1"));
        let ok =
            TopicConfig::new(&d, BTreeMap::from([("retention.ms".into(), "5".into())])).unwrap();
        assert_eq!(ok.retention_ms, 5);
        let row = ok
            .describe()
            .into_iter()
            .find(|r| r.0 == "retention.ms")
            .unwrap();
        assert_eq!((row.1.as_str(), row.2), ("5", true));
    }
}
