//! The broker's state: config, topics and their logs, and the lifecycle (open, background
//! maintenance, clean shutdown).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::config::{BrokerConfig, ConfigError, TopicConfig};
use crate::log::checkpoint::{self, Offsets};
use crate::log::{Log, LogCheckpoints, LogError};
use crate::partition::Partition;
use crate::topics::{self, MetadataFile, Registry, Topic};

/// Marker Kafka writes in a log dir after a clean shutdown.
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";
const METADATA_FILE: &str = "runnel-metadata.json";
const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
const LOG_START_FILE: &str = "log-start-offset-checkpoint";
const CLEANER_OFFSET_FILE: &str = "cleaner-offset-checkpoint";
const HIGH_WATERMARK_FILE: &str = "replication-offset-checkpoint";
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Errors from topic administration, each with its Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// TOPIC_ALREADY_EXISTS.
    #[error("Topic '{0}' already exists.")]
    TopicExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION.
    #[error("This server does not host this topic-partition.")]
    UnknownTopic(String),
    /// INVALID_TOPIC_EXCEPTION.
    #[error("{0}")]
    InvalidTopic(String),
    /// INVALID_PARTITIONS.
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR.
    #[error("{0}")]
    InvalidReplicationFactor(String),
    /// INVALID_REPLICA_ASSIGNMENT.
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_CONFIG.
    #[error("{0}")]
    InvalidConfig(#[from] ConfigError),
    /// TOPIC_DELETION_DISABLED.
    #[error("Topic deletion is disabled.")]
    DeletionDisabled,
    /// POLICY_VIOLATION.
    #[error("{0}")]
    PolicyViolation(String),
    /// KAFKA_STORAGE_ERROR.
    #[error("storage error: {0}")]
    Storage(String),
}

impl AdminError {
    /// The Kafka error code.
    pub fn code(&self) -> i16 {
        use kafka_protocol::ResponseError as E;
        match self {
            AdminError::TopicExists(_) => E::TopicAlreadyExists.code(),
            AdminError::UnknownTopic(_) => E::UnknownTopicOrPartition.code(),
            AdminError::InvalidTopic(_) => E::InvalidTopicException.code(),
            AdminError::InvalidPartitions(_) => E::InvalidPartitions.code(),
            AdminError::InvalidReplicationFactor(_) => E::InvalidReplicationFactor.code(),
            AdminError::InvalidReplicaAssignment(_) => E::InvalidReplicaAssignment.code(),
            AdminError::InvalidConfig(_) => E::InvalidConfig.code(),
            AdminError::DeletionDisabled => E::TopicDeletionDisabled.code(),
            AdminError::PolicyViolation(_) => E::PolicyViolation.code(),
            AdminError::Storage(_) => E::KafkaStorageError.code(),
        }
    }
}

impl From<LogError> for AdminError {
    fn from(e: LogError) -> Self {
        AdminError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for AdminError {
    fn from(e: std::io::Error) -> Self {
        AdminError::Storage(e.to_string())
    }
}

/// A single-node broker's state.
#[derive(Debug)]
pub struct Broker {
    /// Broker configuration.
    pub config: BrokerConfig,
    /// Cluster id from `meta.properties`.
    pub cluster_id: String,
    registry: RwLock<Registry>,
    next_producer_id: AtomicI64,
    producer_id_limit: AtomicI64,
    /// Serialises topic administration (create/delete/alter) and the metadata file.
    admin: tokio::sync::Mutex<()>,
    /// The consumer-group coordinator.
    pub groups: crate::group::coordinator::GroupCoordinator,
    /// The transaction coordinator.
    pub txns: crate::txn::TxnCoordinator,
    /// Set when the broker starts shutting down: background work stops at its next step.
    stopping: std::sync::atomic::AtomicBool,
}

impl Broker {
    /// Opens the log directory: reads `meta.properties`, the topic registry and the
    /// checkpoints, and recovers every partition log (validating the tails after an
    /// unclean shutdown).
    pub fn open(config: BrokerConfig) -> anyhow::Result<Arc<Self>> {
        let dir = config.log_dir().clone();
        std::fs::create_dir_all(&dir)?;
        let cluster_id = load_or_create_meta(&dir, config.node_id)?;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        let meta: MetadataFile = match std::fs::read(dir.join(METADATA_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(METADATA_FILE).display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetadataFile::default(),
            Err(e) => return Err(e.into()),
        };
        let recovery = checkpoint::read(&dir.join(RECOVERY_POINT_FILE)).unwrap_or_default();
        let starts = checkpoint::read(&dir.join(LOG_START_FILE)).unwrap_or_default();
        let cleaned = checkpoint::read(&dir.join(CLEANER_OFFSET_FILE)).unwrap_or_default();
        let now = now_ms();
        let mut registry = Registry::default();
        for (name, rec) in &meta.topics {
            let cfg = TopicConfig::new(&config.topic_defaults, rec.configs.clone())?;
            let mut partitions = Vec::new();
            for p in 0..rec.partitions {
                let key = (name.clone(), p);
                let cps = LogCheckpoints {
                    recovery_point: recovery.get(&key).copied().unwrap_or(0),
                    log_start_offset: starts.get(&key).copied().unwrap_or(0),
                };
                let pdir = partition_dir(&dir, name, p);
                let (mut log, outcomes) = Log::open(&pdir, cfg.clone(), cps, clean, now)?;
                if let Some(c) = cleaned.get(&key) {
                    let end = log.log_end_offset();
                    log.set_cleaned_to((*c).min(end));
                }
                for o in outcomes.iter().filter(|o| o.truncated_bytes > 0) {
                    tracing::warn!(
                        topic = %name, partition = p, truncated = o.truncated_bytes,
                        reason = o.reason.as_deref().unwrap_or(""),
                        "recovery truncated the log tail"
                    );
                }
                partitions.push(Arc::new(Partition::new(name.clone(), p, log)));
            }
            registry.put(Arc::new(Topic {
                name: name.clone(),
                id: rec.id,
                partitions,
                config: cfg,
            }));
        }
        if clean {
            std::fs::remove_file(&marker)?;
        } else if !meta.topics.is_empty() {
            tracing::info!("no clean-shutdown marker: recovered logs from their recovery points");
        }
        let next_pid = meta.next_producer_id.max(0);
        let groups = crate::group::coordinator::GroupCoordinator::new(
            config.groups.clone(),
            config.offsets_retention_ms,
        );
        let txns = crate::txn::TxnCoordinator::new(config.txn.clone());
        let broker = Arc::new(Self {
            groups,
            txns,
            stopping: std::sync::atomic::AtomicBool::new(false),
            config,
            cluster_id,
            registry: RwLock::new(registry),
            next_producer_id: AtomicI64::new(next_pid),
            // Nothing of the persisted block is handed out until it is re-reserved.
            producer_id_limit: AtomicI64::new(next_pid),
            admin: tokio::sync::Mutex::new(()),
        });
        broker.persist_metadata()?;
        let records = crate::group::coordinator::read_offsets_topic(&broker);
        if !records.is_empty() {
            tracing::info!(records = records.len(), "replayed __consumer_offsets");
        }
        broker.groups.replay(records);
        broker.txns.recover(&broker);
        Ok(broker)
    }

    fn reg(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn reg_mut(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A topic by name.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.reg().by_name.get(name).cloned()
    }

    /// A topic by id.
    pub fn topic_by_id(&self, id: &Uuid) -> Option<Arc<Topic>> {
        let reg = self.reg();
        reg.by_id.get(id).and_then(|n| reg.by_name.get(n)).cloned()
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.reg().by_name.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A partition by topic name and index.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let t = self.topic(topic)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| t.partitions.get(i).cloned())
    }

    fn persist_metadata(&self) -> std::io::Result<()> {
        let file = self
            .reg()
            .to_file(self.producer_id_limit.load(Ordering::SeqCst));
        let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        checkpoint::write_atomically(&self.config.log_dir().join(METADATA_FILE), &json)
    }

    /// Checks what CreateTopics would do, without doing it.
    pub fn check_new_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &BTreeMap<String, String>,
    ) -> Result<(i32, i16, TopicConfig), AdminError> {
        topics::validate_topic_name(name).map_err(AdminError::InvalidTopic)?;
        if self.topic(name).is_some() {
            return Err(AdminError::TopicExists(name.into()));
        }
        // Kafka refuses names that collide once '.' and '_' are treated alike (metrics).
        let canon = |s: &str| s.replace('.', "_");
        if let Some(other) = self.reg().by_name.keys().find(|n| canon(n) == canon(name)) {
            return Err(AdminError::InvalidTopic(format!(
                "Topic '{name}' collides with existing topic: {other}"
            )));
        }
        let partitions = if partitions == -1 {
            self.config.num_partitions
        } else {
            partitions
        };
        if partitions <= 0 {
            return Err(AdminError::InvalidPartitions(
                "Number of partitions was set to an invalid non-positive value.".into(),
            ));
        }
        self.check_partition_policy(name, partitions)?;
        let rf = if replication_factor == -1 {
            self.config.default_replication_factor
        } else {
            replication_factor
        };
        if rf <= 0 {
            return Err(AdminError::InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.".into(),
            ));
        }
        if rf > 1 {
            return Err(AdminError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered."
            )));
        }
        let cfg = TopicConfig::new(&self.config.topic_defaults, configs.clone())?;
        Ok((partitions, rf, cfg))
    }

    fn check_partition_policy(&self, name: &str, partitions: i32) -> Result<(), AdminError> {
        let max = self.config.policy_max_partitions;
        if max >= 0 && partitions as i64 > max {
            return Err(AdminError::PolicyViolation(format!(
                "Topic {name} would have {partitions} partitions; the create-topic policy allows at most {max} (runnel.create.topic.policy.max.partitions)"
            )));
        }
        Ok(())
    }

    /// Creates a topic (CreateTopics and auto-creation).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, AdminError> {
        let _guard = self.admin.lock().await;
        let (partitions, _, cfg) =
            self.check_new_topic(name, partitions, replication_factor, &configs)?;
        let id = Uuid::new_v4();
        let now = now_ms();
        let mut parts = Vec::new();
        for p in 0..partitions {
            parts.push(Arc::new(self.new_partition(name, &id, p, &cfg, now)?));
        }
        let topic = Arc::new(Topic {
            name: name.to_string(),
            id,
            partitions: parts,
            config: cfg,
        });
        self.reg_mut().put(topic.clone());
        self.persist_metadata()?;
        tracing::info!(topic = name, partitions, %id, "created topic");
        Ok(topic)
    }

    fn new_partition(
        &self,
        name: &str,
        id: &Uuid,
        p: i32,
        cfg: &TopicConfig,
        now: i64,
    ) -> Result<Partition, AdminError> {
        let pdir = partition_dir(self.config.log_dir(), name, p);
        if pdir.exists() {
            // Left over from a deleted topic of the same name.
            std::fs::remove_dir_all(&pdir)?;
        }
        let (log, _) = Log::open(&pdir, cfg.clone(), LogCheckpoints::default(), true, now)?;
        std::fs::write(
            pdir.join("partition.metadata"),
            topics::partition_metadata_file(id),
        )?;
        std::fs::write(pdir.join("leader-epoch-checkpoint"), "0\n1\n0 0\n")?;
        Ok(Partition::new(name.to_string(), p, log))
    }

    /// Deletes a topic and its logs.
    pub async fn delete_topic(&self, name: &str) -> Result<Uuid, AdminError> {
        if !self.config.delete_topic_enable {
            return Err(AdminError::DeletionDisabled);
        }
        let _guard = self.admin.lock().await;
        let topic = self
            .reg_mut()
            .remove(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.into()))?;
        self.persist_metadata()?;
        for p in &topic.partitions {
            // Fetches waiting on it answer UNKNOWN_TOPIC_OR_PARTITION now.
            p.wake_fetches();
            let dir = p.log().dir().to_path_buf();
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "could not remove deleted partition: {e}");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _guard = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.into()))?;
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(AdminError::InvalidPartitions(format!(
                "The topic {name} currently has {current} partition(s); {count} would not be an increase."
            )));
        }
        if count == current {
            return Err(AdminError::InvalidPartitions(format!(
                "Topic already has {current} partition(s)."
            )));
        }
        self.check_partition_policy(name, count)?;
        if validate_only {
            return Ok(());
        }
        let now = now_ms();
        let mut parts = topic.partitions.clone();
        for p in current..count {
            parts.push(Arc::new(self.new_partition(
                name,
                &topic.id,
                p,
                &topic.config,
                now,
            )?));
        }
        self.reg_mut().put(Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: parts,
            config: topic.config.clone(),
        }));
        self.persist_metadata()?;
        Ok(())
    }

    /// Replaces a topic's config overrides (validated first).
    pub async fn set_topic_config(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let _guard = self.admin.lock().await;
        let topic = self
            .topic(name)
            .ok_or_else(|| AdminError::UnknownTopic(name.into()))?;
        let cfg = TopicConfig::new(&self.config.topic_defaults, overrides)?;
        if validate_only {
            return Ok(());
        }
        for p in &topic.partitions {
            p.log().set_config(cfg.clone());
        }
        self.reg_mut().put(Arc::new(Topic {
            name: topic.name.clone(),
            id: topic.id,
            partitions: topic.partitions.clone(),
            config: cfg,
        }));
        self.persist_metadata()?;
        Ok(())
    }

    /// Hands out a producer id; ids are reserved in persisted blocks so none is reused
    /// after a restart.
    pub fn next_producer_id(&self) -> std::io::Result<i64> {
        let id = self.next_producer_id.fetch_add(1, Ordering::SeqCst);
        if id >= self.producer_id_limit.load(Ordering::SeqCst) {
            let _ = self
                .producer_id_limit
                .fetch_max(id + PRODUCER_ID_BLOCK, Ordering::SeqCst);
            self.persist_metadata()?;
        }
        Ok(id)
    }

    /// Every partition of every topic.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.topics()
            .iter()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    /// Writes the recovery-point, log-start and high-watermark checkpoint files.
    pub fn write_checkpoints(&self) -> std::io::Result<()> {
        let (mut rp, mut ls, mut hw) = (Offsets::new(), Offsets::new(), Offsets::new());
        let mut cleaned = Offsets::new();
        for p in self.all_partitions() {
            let log = p.log();
            let key = (p.topic.clone(), p.index);
            if log.config().compacted() {
                cleaned.insert(key.clone(), log.first_dirty_offset());
            }
            rp.insert(key.clone(), log.recovery_point());
            ls.insert(key.clone(), log.log_start_offset());
            hw.insert(key, log.log_end_offset());
        }
        let dir = self.config.log_dir();
        checkpoint::write(&dir.join(RECOVERY_POINT_FILE), &rp)?;
        checkpoint::write(&dir.join(LOG_START_FILE), &ls)?;
        checkpoint::write(&dir.join(CLEANER_OFFSET_FILE), &cleaned)?;
        checkpoint::write(&dir.join(HIGH_WATERMARK_FILE), &hw)
    }

    /// Applies retention to every log; returns segments deleted.
    pub fn enforce_retention(&self) -> usize {
        let now = now_ms();
        let mut deleted = 0;
        let expiration = self.config.txn.producer_id_expiration_ms;
        for p in self.all_partitions() {
            let mut log = p.log();
            log.expire_producers(now, expiration);
            match log.enforce_retention(now) {
                Ok(n) => deleted += n,
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, "retention failed: {e}")
                }
            }
        }
        if deleted > 0 {
            tracing::info!(segments = deleted, "retention deleted segments");
        }
        deleted
    }

    /// One log cleaner pass: compacts every compacted log that is dirty enough (see
    /// [`crate::log::cleaner`]). Returns the logs cleaned.
    pub fn clean_logs(&self) -> usize {
        let budget = self.config.log_cleaner_dedupe_buffer_size.max(1 << 20) as usize;
        let mut cleaned = 0;
        for p in self.all_partitions() {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            match self.clean_log(&p, budget) {
                Ok(true) => cleaned += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(topic = %p.topic, partition = p.index, "log cleaning failed: {e}")
                }
            }
        }
        cleaned
    }

    fn clean_log(&self, p: &Arc<Partition>, budget: usize) -> Result<bool, crate::log::LogError> {
        use crate::log::cleaner;
        let now = now_ms();
        let Some(mut plan) = p.log().cleaning_plan(now) else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        let map = cleaner::build_offset_map(&mut plan, budget)?;
        let (mut read, mut kept, mut before, mut after) = (0, 0, 0u64, 0u64);
        let mut horizon: Option<i64> = None;
        // Under the log's lock a deleted topic is already out of the registry, and no
        // new topic of that name can have taken its directory.
        let registered = || {
            self.topic(&p.topic)
                .and_then(|t| t.partitions.get(p.index as usize).cloned())
                .is_some_and(|q| Arc::ptr_eq(&q, p))
        };
        for group in plan.groups() {
            if self.stopping.load(Ordering::SeqCst) || !registered() {
                return Ok(false);
            }
            let (seg, stats) = cleaner::write_group(&mut plan, &map, &group, now)?;
            let size = seg.size();
            let mut log = p.log();
            if self.stopping.load(Ordering::SeqCst) || !registered() {
                seg.discard_cleaned()?;
                return Ok(false);
            }
            if !log.install_cleaned(&group, seg, &stats.dropped_aborts)? {
                // The log changed meanwhile (retention, DeleteRecords): next pass.
                return Ok(false);
            }
            read += stats.records_read;
            kept += stats.records_kept;
            after += size;
            horizon = cleaner::earlier(horizon, stats.delete_horizon_ms);
        }
        before += plan.bytes();
        let mut log = p.log();
        log.set_cleaned_to(plan.first_uncleanable);
        log.set_delete_horizon(horizon, plan.cut);
        drop(log);
        tracing::info!(
            topic = %p.topic, partition = p.index, keys = map.len(),
            records_read = read, records_kept = kept, bytes_before = before, bytes_after = after,
            cleaned_to = plan.first_uncleanable, ms = started.elapsed().as_millis() as u64,
            "cleaned log"
        );
        Ok(true)
    }

    /// fsyncs logs whose `flush.ms` elapsed or that rolled a segment.
    pub async fn flush_due(&self) {
        for p in self.all_partitions() {
            if let Err(e) = p.flush_to(None).await {
                tracing::error!(topic = %p.topic, partition = p.index, "flush failed: {e}");
            }
        }
    }

    /// Tells background work (the log cleaner) to stop at its next step.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Clean shutdown: fsync every log, write checkpoints and the clean-shutdown marker.
    pub fn shutdown(&self) -> std::io::Result<()> {
        self.begin_stop();
        let now = now_ms();
        for p in self.all_partitions() {
            let mut log = p.log();
            if let Err(e) = log
                .flush_all(now)
                .and_then(|_| log.write_producer_snapshot())
            {
                tracing::error!(topic = %p.topic, partition = p.index, "flush at shutdown failed: {e}");
                return Err(std::io::Error::other(e.to_string()));
            }
        }
        self.persist_metadata()?;
        self.write_checkpoints()?;
        checkpoint::write_atomically(&self.config.log_dir().join(CLEAN_SHUTDOWN_FILE), b"")?;
        tracing::info!("clean shutdown complete");
        Ok(())
    }
}

/// `<log.dir>/<topic>-<partition>`.
pub fn partition_dir(dir: &Path, topic: &str, partition: i32) -> PathBuf {
    dir.join(format!("{topic}-{partition}"))
}

/// Reads `meta.properties` or writes a new one with a fresh cluster id.
fn load_or_create_meta(dir: &Path, node_id: i32) -> anyhow::Result<String> {
    let path = dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let pairs = crate::config::parse_properties(&text)?;
        if let Some((_, id)) = pairs.iter().find(|(k, _)| k == "cluster.id") {
            if let Some((_, n)) = pairs.iter().find(|(k, _)| k == "node.id")
                && n.parse::<i32>().ok() != Some(node_id)
            {
                anyhow::bail!(
                    "{} belongs to node.id {n}, but this broker is node.id {node_id}",
                    path.display()
                );
            }
            return Ok(id.clone());
        }
    }
    let cluster_id = topics::kafka_uuid_base64(&Uuid::new_v4());
    let directory_id = topics::kafka_uuid_base64(&Uuid::new_v4());
    let text = format!(
        "#\n#Runnel\nnode.id={node_id}\ndirectory.id={directory_id}\nversion=1\ncluster.id={cluster_id}\n"
    );
    checkpoint::write_atomically(&path, text.as_bytes())?;
    Ok(cluster_id)
}
