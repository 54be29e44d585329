//! The transaction coordinator: transactional ids → producer id and epoch, the partitions
//! of each open transaction, and the two-phase end of a transaction (Prepare* persisted
//! to `__transaction_state`, markers written to every partition, Complete* persisted).
//!
//! One node coordinates every transactional id, and writing a marker is a local append,
//! so a transaction ends within the EndTxn request: clients never see
//! CONCURRENT_TRANSACTIONS. State changes are persisted before they are acknowledged and
//! replayed at startup, where a transaction caught between Prepare and Complete is
//! finished. Transactions v1 semantics (clients add partitions with AddPartitionsToTxn);
//! see ADR 7.

pub mod log;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::broker::{Broker, now_ms};
use crate::config::TxnConfig;
use crate::group::offsets_log;

/// Kafka error codes the coordinator answers with.
pub mod errors {
    /// COORDINATOR_NOT_AVAILABLE.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// INVALID_PRODUCER_EPOCH.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// INVALID_TXN_STATE.
    pub const INVALID_TXN_STATE: i16 = 48;
    /// INVALID_PRODUCER_ID_MAPPING.
    pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    /// INVALID_TRANSACTION_TIMEOUT.
    pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    /// CONCURRENT_TRANSACTIONS.
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    /// KAFKA_STORAGE_ERROR.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// PRODUCER_FENCED.
    pub const PRODUCER_FENCED: i16 = 90;
    /// TRANSACTION_ABORTABLE.
    pub const TRANSACTION_ABORTABLE: i16 = 120;
    /// TRANSACTIONAL_ID_NOT_FOUND.
    pub const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
}

/// A transaction's state, numbered as in `__transaction_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// No transaction open.
    Empty = 0,
    /// Partitions added, not yet ended.
    Ongoing = 1,
    /// Commit decided; markers being written.
    PrepareCommit = 2,
    /// Abort decided; markers being written.
    PrepareAbort = 3,
    /// Committed.
    CompleteCommit = 4,
    /// Aborted.
    CompleteAbort = 5,
    /// Expired id.
    Dead = 6,
    /// Aborting to fence a producer.
    PrepareEpochFence = 7,
}

impl TxnState {
    /// From the persisted byte.
    pub fn from_i8(v: i8) -> Option<Self> {
        Some(match v {
            0 => Self::Empty,
            1 => Self::Ongoing,
            2 => Self::PrepareCommit,
            3 => Self::PrepareAbort,
            4 => Self::CompleteCommit,
            5 => Self::CompleteAbort,
            6 => Self::Dead,
            7 => Self::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::Ongoing => "Ongoing",
            Self::PrepareCommit => "PrepareCommit",
            Self::PrepareAbort => "PrepareAbort",
            Self::CompleteCommit => "CompleteCommit",
            Self::CompleteAbort => "CompleteAbort",
            Self::Dead => "Dead",
            Self::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Every state, for filters.
    pub const ALL: [TxnState; 8] = [
        Self::Empty,
        Self::Ongoing,
        Self::PrepareCommit,
        Self::PrepareAbort,
        Self::CompleteCommit,
        Self::CompleteAbort,
        Self::Dead,
        Self::PrepareEpochFence,
    ];
}

/// What the coordinator keeps per transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    /// The transactional id.
    pub transactional_id: String,
    /// Producer id.
    pub producer_id: i64,
    /// Current epoch.
    pub epoch: i16,
    /// `transaction.timeout.ms` the producer asked for.
    pub timeout_ms: i32,
    /// State.
    pub state: TxnState,
    /// Partitions of the open transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Last change.
    pub last_update_ms: i64,
    /// When the open transaction began (-1: none).
    pub start_ms: i64,
    /// The epoch before the last transactions-v2 bump, to recognise a retried EndTxn
    /// (not persisted, as in Kafka).
    pub prev_epoch: i16,
}

#[derive(Default)]
struct Inner {
    txns: HashMap<String, TxnMeta>,
    by_pid: HashMap<i64, String>,
    last_check_ms: i64,
}

/// The transaction coordinator of this node.
pub struct TxnCoordinator {
    config: TxnConfig,
    inner: Mutex<Inner>,
    partitions: i32,
}

impl std::fmt::Debug for TxnCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxnCoordinator").finish_non_exhaustive()
    }
}

/// What a partition's write needs from the transaction it claims to belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The partition is part of the producer's open transaction.
    Ok,
    /// Refuse with this code.
    Refuse(i16),
}

impl TxnCoordinator {
    /// A coordinator with the given settings.
    pub fn new(config: TxnConfig) -> Self {
        let partitions = config.state_log_partitions;
        Self {
            config,
            inner: Mutex::new(Inner::default()),
            partitions,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds state from `__transaction_state` and finishes transactions that were
    /// between Prepare and Complete when the broker stopped.
    pub fn recover(&self, broker: &Broker) {
        let mut latest: HashMap<String, Option<TxnMeta>> = HashMap::new();
        if let Some(topic) = broker.topic(log::TOPIC) {
            for part in &topic.partitions {
                for (k, v) in read_records(part) {
                    let Some(id) = log::decode_key(k) else {
                        continue;
                    };
                    let meta = v.and_then(|v| log::decode_value(&id, v));
                    latest.insert(id, meta);
                }
            }
        }
        let mut inner = self.lock();
        for (id, m) in latest {
            if let Some(m) = m {
                inner.by_pid.insert(m.producer_id, id.clone());
                inner.txns.insert(id, m);
            }
        }
        let pending: Vec<(String, bool)> = inner
            .txns
            .values()
            .filter_map(|m| match m.state {
                TxnState::PrepareCommit => Some((m.transactional_id.clone(), true)),
                TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                    Some((m.transactional_id.clone(), false))
                }
                _ => None,
            })
            .collect();
        let n = inner.txns.len();
        for (id, commit) in pending {
            tracing::info!(transactional_id = %id, commit, "finishing a transaction interrupted by a restart");
            let _ = self.finish(broker, &mut inner, &id, commit);
        }
        if n > 0 {
            tracing::info!(transactional_ids = n, "replayed __transaction_state");
        }
    }

    async fn ensure_topic(&self, broker: &Broker) -> bool {
        if broker.topic(log::TOPIC).is_some() {
            return true;
        }
        let configs = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), "104857600".to_string()),
        ]);
        let _ = broker
            .create_topic(log::TOPIC, self.partitions, 1, configs)
            .await;
        broker.topic(log::TOPIC).is_some()
    }

    /// Writes a transaction's record (or a tombstone) to `__transaction_state`.
    fn persist(&self, broker: &Broker, id: &str, meta: Option<&TxnMeta>) -> Result<(), i16> {
        let Some(topic) = broker.topic(log::TOPIC) else {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        };
        let n = topic.partitions.len() as i32;
        let p = offsets_log::partition_for(id, n);
        let now = now_ms();
        let mut b = runnel_api::records::BatchBuilder::new();
        let value = meta.map(log::value);
        b.append(now, Some(&log::key(id)), value.as_deref(), &[]);
        let bytes: Bytes = b.build(runnel_api::Compression::None, -1, -1, -1);
        let Some(part) = topic.partitions.get(p as usize) else {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        };
        part.append_records(&bytes, now).map_err(|e| {
            tracing::error!(partition = p, "writing __transaction_state failed: {e}");
            errors::COORDINATOR_NOT_AVAILABLE
        })?;
        part.wake_fetches();
        Ok(())
    }

    fn new_meta(&self, broker: &Broker, id: &str, timeout_ms: i32) -> Result<TxnMeta, i16> {
        let pid = broker
            .next_producer_id()
            .map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?;
        Ok(TxnMeta {
            transactional_id: id.to_string(),
            producer_id: pid,
            epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms(),
            start_ms: -1,
            prev_epoch: -1,
        })
    }

    /// Whether transactions v2 (KIP-890 part 2) is enabled (`transaction.version` 2).
    pub fn v2_enabled(&self) -> bool {
        self.config.transaction_version >= 2
    }

    /// Transactions v2: a partition written by a transactional producer joins its
    /// transaction (the leader's implicit AddPartitionsToTxn).
    pub fn add_for_producer(
        &self,
        broker: &Broker,
        pid: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), i16> {
        let id = {
            let inner = self.lock();
            match inner.by_pid.get(&pid) {
                Some(id) => id.clone(),
                None => return Err(errors::INVALID_PRODUCER_ID_MAPPING),
            }
        };
        self.add_partitions(
            broker,
            &id,
            pid,
            epoch,
            &[(topic.to_string(), partition)],
            false,
        )
    }

    /// InitProducerId for a transactional id: a new producer id, or the next epoch of
    /// the existing one (aborting any open transaction, which fences the old producer).
    pub async fn init_producer_id(
        &self,
        broker: &Broker,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), i16> {
        if timeout_ms <= 0 || timeout_ms as i64 > self.config.max_timeout_ms {
            return Err(errors::INVALID_TRANSACTION_TIMEOUT);
        }
        if !self.ensure_topic(broker).await {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        }
        let mut inner = self.lock();
        let existing = inner.txns.get(id).cloned();
        let mut m = match existing {
            None => self.new_meta(broker, id, timeout_ms)?,
            Some(m) => {
                if let Some((pid, epoch)) = expected
                    && (pid != m.producer_id || epoch != m.epoch)
                {
                    return Err(errors::PRODUCER_FENCED);
                }
                let mut m = m;
                if m.state == TxnState::Ongoing {
                    // Fence the old producer: bump the epoch and abort with it.
                    m.epoch = m.epoch.saturating_add(1);
                    m.state = TxnState::PrepareEpochFence;
                    inner.txns.insert(id.to_string(), m.clone());
                    self.finish(broker, &mut inner, id, false)?;
                    m = inner.txns.get(id).cloned().unwrap_or(m);
                } else if matches!(
                    m.state,
                    TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
                ) {
                    return Err(errors::CONCURRENT_TRANSACTIONS);
                }
                if m.epoch >= i16::MAX - 1 {
                    // Epochs exhausted: a new producer id starts again at 0.
                    inner.by_pid.remove(&m.producer_id);
                    self.new_meta(broker, id, timeout_ms)?
                } else {
                    m.epoch += 1;
                    m
                }
            }
        };
        m.timeout_ms = timeout_ms;
        m.prev_epoch = -1;
        m.state = TxnState::Empty;
        m.partitions.clear();
        m.start_ms = -1;
        m.last_update_ms = now_ms();
        self.persist(broker, id, Some(&m))?;
        inner.by_pid.insert(m.producer_id, id.to_string());
        let out = (m.producer_id, m.epoch);
        inner.txns.insert(id.to_string(), m);
        Ok(out)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: adds partitions to the open transaction
    /// (opening it if needed). With `verify_only`, only checks they are in it.
    pub fn add_partitions(
        &self,
        broker: &Broker,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(String, i32)],
        verify_only: bool,
    ) -> Result<(), i16> {
        let mut inner = self.lock();
        let Some(mut m) = inner.txns.get(id).cloned() else {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        };
        if m.producer_id != pid {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        if m.epoch != epoch {
            return Err(errors::PRODUCER_FENCED);
        }
        match m.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                return Err(errors::CONCURRENT_TRANSACTIONS);
            }
            TxnState::Dead => return Err(errors::INVALID_PRODUCER_ID_MAPPING),
            _ => {}
        }
        let all_in = m.state == TxnState::Ongoing && parts.iter().all(|p| m.partitions.contains(p));
        if verify_only {
            return if all_in {
                Ok(())
            } else {
                Err(errors::INVALID_TXN_STATE)
            };
        }
        if all_in {
            return Ok(());
        }
        let now = now_ms();
        if m.state != TxnState::Ongoing {
            m.start_ms = now;
            m.partitions.clear();
        }
        m.state = TxnState::Ongoing;
        m.partitions.extend(parts.iter().cloned());
        m.last_update_ms = now;
        self.persist(broker, id, Some(&m))?;
        inner.txns.insert(id.to_string(), m);
        Ok(())
    }

    /// Whether a transactional write of `pid`/`epoch` to a partition belongs to its open
    /// transaction (the leader-side check of KIP-890 part 1).
    pub fn verify_write(&self, pid: i64, epoch: i16, topic: &str, partition: i32) -> Verify {
        let inner = self.lock();
        let Some(m) = inner.by_pid.get(&pid).and_then(|id| inner.txns.get(id)) else {
            return Verify::Refuse(errors::INVALID_PRODUCER_ID_MAPPING);
        };
        if epoch != m.epoch {
            return Verify::Refuse(errors::INVALID_PRODUCER_EPOCH);
        }
        if m.state == TxnState::Ongoing && m.partitions.contains(&(topic.to_string(), partition)) {
            Verify::Ok
        } else {
            // Callers that predate TRANSACTION_ABORTABLE get INVALID_TXN_STATE instead.
            Verify::Refuse(errors::TRANSACTION_ABORTABLE)
        }
    }

    /// EndTxn: commits or aborts the open transaction. With transactions v2 (`v2`: EndTxn
    /// v5+ on a broker with `transaction.version` 2) the epoch is bumped first, so the
    /// markers fence anything the producer still had in flight, and the new producer id
    /// and epoch are returned; otherwise (-1, -1).
    pub fn end_txn(
        &self,
        broker: &Broker,
        id: &str,
        pid: i64,
        epoch: i16,
        commit: bool,
        v2: bool,
    ) -> Result<(i64, i16), i16> {
        let mut inner = self.lock();
        let Some(m) = inner.txns.get(id).cloned() else {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        };
        if m.producer_id != pid {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        }
        let completed = matches!(
            (m.state, commit),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false)
        );
        if v2 {
            // A retry of an EndTxn that already bumped the epoch carries the old one.
            let retry = m.prev_epoch >= 0 && epoch == m.prev_epoch;
            let valid = match m.state {
                TxnState::Ongoing | TxnState::Empty => epoch == m.epoch,
                _ => retry,
            };
            if !valid {
                return Err(errors::PRODUCER_FENCED);
            }
            return match m.state {
                TxnState::Ongoing => {
                    let mut bumped = m;
                    let exhausted = bumped.epoch >= i16::MAX - 1;
                    bumped.prev_epoch = bumped.epoch;
                    bumped.epoch = bumped.epoch.saturating_add(1);
                    inner.txns.insert(id.to_string(), bumped);
                    self.finish(broker, &mut inner, id, commit)?;
                    if exhausted {
                        self.new_producer_id_for(broker, &mut inner, id)?;
                    }
                    let m = inner
                        .txns
                        .get(id)
                        .ok_or(errors::INVALID_PRODUCER_ID_MAPPING)?;
                    Ok((m.producer_id, m.epoch))
                }
                _ if completed => Ok((m.producer_id, m.epoch)),
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    Err(errors::CONCURRENT_TRANSACTIONS)
                }
                _ => Err(errors::INVALID_TXN_STATE),
            };
        }
        if m.epoch != epoch {
            return Err(errors::PRODUCER_FENCED);
        }
        match m.state {
            TxnState::Ongoing => self
                .finish(broker, &mut inner, id, commit)
                .map(|_| (-1, -1)),
            // A retry of the EndTxn that already completed.
            _ if completed => Ok((-1, -1)),
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                Err(errors::CONCURRENT_TRANSACTIONS)
            }
            _ => Err(errors::INVALID_TXN_STATE),
        }
    }

    /// Epochs exhausted: the transactional id continues under a new producer id.
    fn new_producer_id_for(&self, broker: &Broker, inner: &mut Inner, id: &str) -> Result<(), i16> {
        let Some(mut m) = inner.txns.get(id).cloned() else {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        };
        let pid = broker
            .next_producer_id()
            .map_err(|_| errors::COORDINATOR_NOT_AVAILABLE)?;
        inner.by_pid.remove(&m.producer_id);
        m.producer_id = pid;
        m.epoch = 0;
        m.prev_epoch = -1;
        self.persist(broker, id, Some(&m))?;
        inner.by_pid.insert(m.producer_id, id.to_string());
        inner.txns.insert(id.to_string(), m);
        Ok(())
    }

    /// Prepare → markers → Complete, persisting both steps.
    fn finish(
        &self,
        broker: &Broker,
        inner: &mut Inner,
        id: &str,
        commit: bool,
    ) -> Result<(), i16> {
        let Some(mut m) = inner.txns.get(id).cloned() else {
            return Err(errors::INVALID_PRODUCER_ID_MAPPING);
        };
        m.state = if commit {
            TxnState::PrepareCommit
        } else if m.state == TxnState::PrepareEpochFence {
            TxnState::PrepareEpochFence
        } else {
            TxnState::PrepareAbort
        };
        m.last_update_ms = now_ms();
        self.persist(broker, id, Some(&m))?;
        inner.txns.insert(id.to_string(), m.clone());
        let now = now_ms();
        for (topic, p) in &m.partitions {
            let Some(part) = broker.partition(topic, *p) else {
                continue; // the topic was deleted meanwhile
            };
            let res = part
                .log()
                .append_marker(m.producer_id, m.epoch, commit, 0, now);
            match res {
                Ok(_) => {
                    // The marker moves the last stable offset: read_committed fetches
                    // waiting on this partition can read on.
                    part.wake_fetches();
                    if topic == offsets_log::TOPIC {
                        broker.groups.complete_txn(m.producer_id, commit);
                    }
                }
                Err(e) => {
                    tracing::error!(topic = %topic, partition = p, "writing a transaction marker failed: {e}");
                    return Err(errors::KAFKA_STORAGE_ERROR);
                }
            }
        }
        m.state = if commit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        };
        m.partitions.clear();
        m.start_ms = -1;
        m.last_update_ms = now_ms();
        self.persist(broker, id, Some(&m))?;
        inner.txns.insert(id.to_string(), m);
        Ok(())
    }

    /// Aborts transactions open longer than their timeout (bumping the epoch, so the
    /// stalled producer is fenced) and forgets idle transactional ids; runs every
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub fn tick(&self, broker: &Broker, now: i64) {
        let mut inner = self.lock();
        if now - inner.last_check_ms < self.config.abort_timed_out_interval_ms {
            return;
        }
        inner.last_check_ms = now;
        let timed_out: Vec<String> = inner
            .txns
            .values()
            .filter(|m| {
                m.state == TxnState::Ongoing
                    && m.start_ms >= 0
                    && now - m.start_ms > m.timeout_ms as i64
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in timed_out {
            if let Some(m) = inner.txns.get_mut(&id) {
                tracing::info!(transactional_id = %id, producer_id = m.producer_id, "aborting a transaction past its timeout");
                m.epoch = m.epoch.saturating_add(1);
                m.state = TxnState::PrepareEpochFence;
            }
            let _ = self.finish(broker, &mut inner, &id, false);
        }
        let expired: Vec<String> = inner
            .txns
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now - m.last_update_ms > self.config.transactional_id_expiration_ms
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        for id in expired {
            if self.persist(broker, &id, None).is_ok()
                && let Some(m) = inner.txns.remove(&id)
            {
                inner.by_pid.remove(&m.producer_id);
            }
        }
    }

    /// A copy of one transaction's state.
    pub fn describe(&self, id: &str) -> Option<TxnMeta> {
        self.lock().txns.get(id).cloned()
    }

    /// Every transaction, sorted by id.
    pub fn list(&self) -> Vec<TxnMeta> {
        let mut v: Vec<TxnMeta> = self.lock().txns.values().cloned().collect();
        v.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        v
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_for(&self, id: &str) -> i32 {
        offsets_log::partition_for(id, self.partitions)
    }
}

/// Every (key, value) record of one partition, in offset order.
pub fn read_records(part: &crate::partition::Partition) -> Vec<(Bytes, Option<Bytes>)> {
    let mut out = Vec::new();
    part.for_each_batch(|h, one| {
        if h.is_control() {
            return;
        }
        if let Ok(decoded) = runnel_api::records::decode_batches(one, true) {
            out.extend(
                decoded
                    .records
                    .into_iter()
                    .filter_map(|r| Some((r.key?, r.value))),
            );
        }
    });
    out
}
