//! The group coordinator's async shell: holds JoinGroup/SyncGroup requests until the
//! state machine releases them, keeps committed offsets, and persists both to
//! `__consumer_offsets` (replayed at startup).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::offsets_log::{self, CommittedOffset, GroupRecord, OffsetsRecord};
use super::{Effect, Group, GroupConfig, GroupState, Join, JoinResult, errors};
use crate::broker::{Broker, now_ms};

/// Partitions of `__consumer_offsets` (`offsets.topic.num.partitions`).
pub const OFFSETS_PARTITIONS: i32 = 50;

enum Waiter {
    Join(oneshot::Sender<JoinResult>),
    Sync(oneshot::Sender<(i16, Vec<u8>)>),
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    offsets: HashMap<String, BTreeMap<(String, i32), CommittedOffset>>,
    waiters: HashMap<u64, Waiter>,
    /// Last persisted (generation, state) per group.
    persisted: HashMap<String, (i32, GroupState)>,
    /// Offsets committed inside open transactions, per producer id; they become
    /// committed offsets when the COMMIT marker lands and vanish on ABORT.
    pending_txn: HashMap<i64, Vec<PendingOffset>>,
}

/// An offset committed in a transaction that has not ended yet.
#[derive(Debug, Clone)]
struct PendingOffset {
    group: String,
    topic: String,
    partition: i32,
    value: CommittedOffset,
}

/// One step of replaying `__consumer_offsets`.
#[derive(Debug, Clone)]
pub enum ReplayItem {
    /// A record, with the producer id when written inside a transaction.
    Record(OffsetsRecord, Option<i64>),
    /// A transaction marker.
    Marker {
        /// Producer id.
        producer_id: i64,
        /// COMMIT (true) or ABORT.
        commit: bool,
    },
}

/// The coordinator for every group (this node coordinates them all).
pub struct GroupCoordinator {
    config: GroupConfig,
    /// `offsets.retention.minutes` in ms.
    pub offsets_retention_ms: i64,
    state: Mutex<State>,
    next_request: AtomicU64,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

/// What OffsetCommit needs to know about the committer.
#[derive(Debug, Clone)]
pub struct Committer {
    /// Member id ("" for simple consumers).
    pub member_id: String,
    /// Generation (-1 for simple consumers).
    pub generation: i32,
}

impl GroupCoordinator {
    /// A coordinator with the given limits.
    pub fn new(config: GroupConfig, offsets_retention_ms: i64) -> Self {
        Self {
            config,
            offsets_retention_ms,
            state: Mutex::new(State::default()),
            next_request: AtomicU64::new(1),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds groups and offsets from `__consumer_offsets` records (startup).
    pub fn replay(&self, items: impl IntoIterator<Item = ReplayItem>) {
        let mut st = self.st();
        for item in items {
            let r = match item {
                ReplayItem::Marker {
                    producer_id,
                    commit,
                } => {
                    Self::complete_pending(&mut st, producer_id, commit);
                    continue;
                }
                ReplayItem::Record(
                    OffsetsRecord::Offset {
                        group,
                        topic,
                        partition,
                        value: Some(value),
                    },
                    Some(pid),
                ) => {
                    st.pending_txn.entry(pid).or_default().push(PendingOffset {
                        group,
                        topic,
                        partition,
                        value,
                    });
                    continue;
                }
                ReplayItem::Record(r, _) => r,
            };
            match r {
                OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                } => match value {
                    Some(v) => {
                        st.offsets
                            .entry(group)
                            .or_default()
                            .insert((topic, partition), v);
                    }
                    None => {
                        if let Some(o) = st.offsets.get_mut(&group) {
                            o.remove(&(topic, partition));
                        }
                    }
                },
                OffsetsRecord::Group { group, value } => match value {
                    Some(v) => {
                        let g = Group::restored(&group, &v.protocol_type, v.generation);
                        st.persisted
                            .insert(group.clone(), (g.generation(), g.state()));
                        st.groups.insert(group, g);
                    }
                    None => {
                        st.groups.remove(&group);
                        st.offsets.remove(&group);
                    }
                },
            }
        }
        // Groups known only through their offsets exist too, empty.
        let names: Vec<String> = st.offsets.keys().cloned().collect();
        for n in names {
            st.groups.entry(n.clone()).or_insert_with(|| Group::new(&n));
        }
    }

    fn apply(&self, st: &mut State, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::JoinResponse(id, r) => {
                    if let Some(Waiter::Join(tx)) = st.waiters.remove(&id) {
                        let _ = tx.send(r);
                    }
                }
                Effect::SyncResponse(id, code, a) => {
                    if let Some(Waiter::Sync(tx)) = st.waiters.remove(&id) {
                        let _ = tx.send((code, a));
                    }
                }
            }
        }
    }

    /// Group metadata records for groups whose generation or state changed.
    fn changed_groups(st: &mut State) -> Vec<OffsetsRecord> {
        let mut out = Vec::new();
        let now = now_ms();
        for (id, g) in &st.groups {
            let key = (g.generation(), g.state());
            if st.persisted.get(id) != Some(&key) && g.generation() > 0 {
                let (pt, p) = g.protocol();
                out.push(OffsetsRecord::Group {
                    group: id.clone(),
                    value: Some(GroupRecord {
                        protocol_type: pt.unwrap_or("").to_string(),
                        generation: g.generation(),
                        protocol: p.map(str::to_string),
                        leader: g.leader().map(str::to_string),
                        state_timestamp: now,
                    }),
                });
            }
        }
        for r in &out {
            if let OffsetsRecord::Group { group, .. } = r
                && let Some(g) = st.groups.get(group)
            {
                st.persisted
                    .insert(group.clone(), (g.generation(), g.state()));
            }
        }
        out
    }

    /// JoinGroup: resolves when the rebalance lets this member through.
    pub async fn join(&self, broker: &Broker, group_id: &str, mut j: Join) -> JoinResult {
        let id = self.next_request.fetch_add(1, Ordering::SeqCst);
        j.request_id = id;
        let (tx, rx) = oneshot::channel();
        let persist = {
            let mut st = self.st();
            st.waiters.insert(id, Waiter::Join(tx));
            let g = st
                .groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(group_id));
            let effects = g.join(&self.config, j.clone(), now_ms());
            self.apply(&mut st, effects);
            Self::changed_groups(&mut st)
        };
        persist_records(broker, persist).await;
        match rx.await {
            Ok(r) => r,
            Err(_) => JoinResult {
                error: errors::UNKNOWN_MEMBER_ID,
                generation: -1,
                protocol: None,
                protocol_type: None,
                leader: String::new(),
                member_id: j.member_id,
                members: vec![],
            },
        }
    }

    /// SyncGroup: resolves when the leader's assignment arrives.
    pub async fn sync(
        &self,
        broker: &Broker,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> (i16, Vec<u8>) {
        let id = self.next_request.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        let persist = {
            let mut st = self.st();
            let Some(g) = st.groups.get_mut(group_id) else {
                return (errors::UNKNOWN_MEMBER_ID, vec![]);
            };
            let effects = g.sync(id, member_id, generation, assignments, now_ms());
            st.waiters.insert(id, Waiter::Sync(tx));
            self.apply(&mut st, effects);
            Self::changed_groups(&mut st)
        };
        persist_records(broker, persist).await;
        rx.await.unwrap_or((errors::REBALANCE_IN_PROGRESS, vec![]))
    }

    /// Heartbeat.
    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let mut st = self.st();
        match st.groups.get_mut(group_id) {
            Some(g) => g.heartbeat(member_id, generation, now_ms()),
            None => errors::UNKNOWN_MEMBER_ID,
        }
    }

    /// LeaveGroup for some members: per-member error codes.
    pub async fn leave(&self, broker: &Broker, group_id: &str, members: &[String]) -> Vec<i16> {
        let (codes, persist) = {
            let mut st = self.st();
            let mut codes = Vec::new();
            let mut all = Vec::new();
            match st.groups.get_mut(group_id) {
                None => codes = vec![errors::UNKNOWN_MEMBER_ID; members.len()],
                Some(g) => {
                    for m in members {
                        let (c, e) = g.leave(m, now_ms());
                        codes.push(c);
                        all.extend(e);
                    }
                }
            }
            self.apply(&mut st, all);
            (codes, Self::changed_groups(&mut st))
        };
        persist_records(broker, persist).await;
        codes
    }

    /// Advances every group's clock (session expiry, rebalance deadlines) and expires old
    /// offsets of empty groups.
    pub async fn tick(&self, broker: &Broker) {
        self.tick_at(broker, now_ms()).await
    }

    /// [`GroupCoordinator::tick`] at a given time (tests drive the clock).
    pub async fn tick_at(&self, broker: &Broker, now: i64) {
        let persist = {
            let mut st = self.st();
            let mut effects = Vec::new();
            for g in st.groups.values_mut() {
                effects.extend(g.tick(now));
            }
            self.apply(&mut st, effects);
            let mut records = Self::changed_groups(&mut st);
            let retention = self.offsets_retention_ms;
            let empty: Vec<String> = st
                .groups
                .iter()
                .filter(|(_, g)| g.state() == GroupState::Empty)
                .map(|(k, _)| k.clone())
                .collect();
            for gid in empty {
                if let Some(offs) = st.offsets.get_mut(&gid) {
                    let old: Vec<(String, i32)> = offs
                        .iter()
                        .filter(|(_, o)| now - o.commit_timestamp > retention)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in old {
                        offs.remove(&k);
                        records.push(OffsetsRecord::Offset {
                            group: gid.clone(),
                            topic: k.0,
                            partition: k.1,
                            value: None,
                        });
                    }
                }
            }
            records
        };
        persist_records(broker, persist).await;
    }

    /// Validates and stores committed offsets; per-partition error codes in order.
    pub async fn commit(
        &self,
        broker: &Broker,
        group_id: &str,
        who: &Committer,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Vec<i16> {
        let check = {
            let mut st = self.st();
            let simple = who.member_id.is_empty() && who.generation < 0;
            match st.groups.get(group_id) {
                None if simple => {
                    st.groups.insert(group_id.to_string(), Group::new(group_id));
                    0
                }
                None => errors::UNKNOWN_MEMBER_ID,
                Some(g) if simple => {
                    if g.state() == GroupState::Empty {
                        0
                    } else {
                        errors::UNKNOWN_MEMBER_ID
                    }
                }
                Some(g) => g.check_commit(&who.member_id, who.generation),
            }
        };
        if check != 0 {
            return vec![check; offsets.len()];
        }
        let (codes, records, accepted) = accept_offsets(broker, group_id, offsets);
        // Durable first, then visible: a commit that fails to persist is not reported.
        if !persist_records(broker, records).await {
            return not_persisted(codes);
        }
        let mut st = self.st();
        let map = st.offsets.entry(group_id.to_string()).or_default();
        for (k, o) in accepted {
            map.insert(k, o);
        }
        codes
    }

    fn complete_pending(st: &mut State, producer_id: i64, commit: bool) {
        let Some(list) = st.pending_txn.remove(&producer_id) else {
            return;
        };
        if !commit {
            return;
        }
        for o in list {
            st.offsets
                .entry(o.group)
                .or_default()
                .insert((o.topic, o.partition), o.value);
        }
    }

    /// Creates `__consumer_offsets` if it does not exist yet.
    pub async fn ensure_offsets_topic(&self, broker: &Broker) -> bool {
        offsets_topic(broker).await.is_some()
    }

    /// A transaction of `producer_id` that wrote offsets ended (its marker was written to
    /// `__consumer_offsets`).
    pub fn complete_txn(&self, producer_id: i64, commit: bool) {
        Self::complete_pending(&mut self.st(), producer_id, commit);
    }

    /// Whether a transaction holds an uncommitted offset for this group and partition
    /// (OffsetFetch with `require_stable` answers UNSTABLE_OFFSET_COMMIT then).
    pub fn has_pending_offset(&self, group_id: &str, topic: &str, partition: i32) -> bool {
        self.st()
            .pending_txn
            .values()
            .flatten()
            .any(|o| o.group == group_id && o.topic == topic && o.partition == partition)
    }

    /// TxnOffsetCommit: validates the committer like OffsetCommit (when it names a
    /// member or generation) and writes the offsets to `__consumer_offsets` inside the
    /// producer's transaction; they become visible when the transaction commits.
    pub async fn txn_commit(
        &self,
        broker: &Broker,
        group_id: &str,
        producer: (i64, i16),
        who: &Committer,
        offsets: Vec<((String, i32), CommittedOffset)>,
    ) -> Vec<i16> {
        let check = {
            let mut st = self.st();
            let simple = who.member_id.is_empty() && who.generation < 0;
            match st.groups.get(group_id) {
                None if simple => {
                    st.groups.insert(group_id.to_string(), Group::new(group_id));
                    0
                }
                None => errors::ILLEGAL_GENERATION,
                Some(g) if g.state() == GroupState::Dead => 15, // COORDINATOR_NOT_AVAILABLE
                Some(_) if simple => 0,
                Some(g) => g.check_commit(&who.member_id, who.generation),
            }
        };
        if check != 0 {
            return vec![check; offsets.len()];
        }
        let (codes, records, accepted) = accept_offsets(broker, group_id, offsets);
        if !persist_records_in(broker, records, Some(producer)).await {
            return not_persisted(codes);
        }
        self.st()
            .pending_txn
            .entry(producer.0)
            .or_default()
            .extend(
                accepted
                    .into_iter()
                    .map(|((topic, partition), value)| PendingOffset {
                        group: group_id.to_string(),
                        topic,
                        partition,
                        value,
                    }),
            );
        codes
    }

    /// Committed offsets of a group (all partitions when `topics` is None).
    pub fn fetch_offsets(&self, group_id: &str) -> BTreeMap<(String, i32), CommittedOffset> {
        self.st().offsets.get(group_id).cloned().unwrap_or_default()
    }

    /// Every group: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let st = self.st();
        let mut v: Vec<_> = st
            .groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol().0.unwrap_or("").to_string(),
                    g.state(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// A copy of a group, for DescribeGroups.
    pub fn describe(&self, group_id: &str) -> Option<Group> {
        self.st().groups.get(group_id).cloned()
    }

    /// DeleteGroups for one group.
    pub async fn delete_group(&self, broker: &Broker, group_id: &str) -> i16 {
        let records = {
            let mut st = self.st();
            match st.groups.get(group_id) {
                None => return 69, // GROUP_ID_NOT_FOUND
                Some(g) if g.state() != GroupState::Empty && g.state() != GroupState::Dead => {
                    return 68;
                } // NON_EMPTY_GROUP
                Some(_) => {}
            }
            st.groups.remove(group_id);
            st.persisted.remove(group_id);
            let mut records: Vec<OffsetsRecord> = st
                .offsets
                .remove(group_id)
                .unwrap_or_default()
                .into_keys()
                .map(|(topic, partition)| OffsetsRecord::Offset {
                    group: group_id.to_string(),
                    topic,
                    partition,
                    value: None,
                })
                .collect();
            records.push(OffsetsRecord::Group {
                group: group_id.to_string(),
                value: None,
            });
            records
        };
        persist_records(broker, records).await;
        0
    }

    /// OffsetDelete for some partitions: per-partition codes, or a group-level error.
    pub async fn delete_offsets(
        &self,
        broker: &Broker,
        group_id: &str,
        parts: &[(String, i32)],
    ) -> Result<Vec<i16>, i16> {
        let (codes, records) = {
            let mut st = self.st();
            let Some(g) = st.groups.get(group_id) else {
                return Err(69);
            };
            let subscribed = g.subscribed_topics();
            let mut codes = Vec::new();
            let mut records = Vec::new();
            for (t, p) in parts {
                if subscribed.as_ref().is_some_and(|s| s.contains(t)) {
                    codes.push(86); // GROUP_SUBSCRIBED_TO_TOPIC
                    continue;
                }
                if broker.partition(t, *p).is_none() {
                    codes.push(3);
                    continue;
                }
                codes.push(0);
                if let Some(o) = st.offsets.get_mut(group_id)
                    && o.remove(&(t.clone(), *p)).is_some()
                {
                    records.push(OffsetsRecord::Offset {
                        group: group_id.to_string(),
                        topic: t.clone(),
                        partition: *p,
                        value: None,
                    });
                }
            }
            (codes, records)
        };
        persist_records(broker, records).await;
        Ok(codes)
    }
}

type Offsets = Vec<((String, i32), CommittedOffset)>;

/// The per-partition checks of OffsetCommit and TxnOffsetCommit: a code per offset (in
/// order), the records to write and the offsets accepted.
fn accept_offsets(
    broker: &Broker,
    group_id: &str,
    offsets: Offsets,
) -> (Vec<i16>, Vec<OffsetsRecord>, Offsets) {
    let mut codes = Vec::with_capacity(offsets.len());
    let mut records = Vec::new();
    let mut accepted = Vec::new();
    for ((topic, partition), o) in offsets {
        if broker.partition(&topic, partition).is_none() {
            codes.push(3); // UNKNOWN_TOPIC_OR_PARTITION
            continue;
        }
        if o.metadata.len() > 4096 {
            codes.push(12); // OFFSET_METADATA_TOO_LARGE
            continue;
        }
        codes.push(0);
        records.push(OffsetsRecord::Offset {
            group: group_id.to_string(),
            topic: topic.clone(),
            partition,
            value: Some(o.clone()),
        });
        accepted.push(((topic, partition), o));
    }
    (codes, records, accepted)
}

/// The codes to answer when the accepted offsets could not be written:
/// COORDINATOR_NOT_AVAILABLE in place of success.
fn not_persisted(codes: Vec<i16>) -> Vec<i16> {
    codes
        .into_iter()
        .map(|c| if c == 0 { 15 } else { c })
        .collect()
}

/// `__consumer_offsets`, created on first use.
async fn offsets_topic(broker: &Broker) -> Option<Arc<crate::topics::Topic>> {
    if let Some(t) = broker.topic(offsets_log::TOPIC) {
        return Some(t);
    }
    let configs = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), "104857600".to_string()),
    ]);
    match broker
        .create_topic(offsets_log::TOPIC, OFFSETS_PARTITIONS, 1, configs)
        .await
    {
        Ok(t) => Some(t),
        Err(_) => broker.topic(offsets_log::TOPIC),
    }
}

/// Appends records to `__consumer_offsets` (creating the topic on first use), one batch
/// per partition. Returns false if the write failed.
async fn persist_records(broker: &Broker, records: Vec<OffsetsRecord>) -> bool {
    persist_records_in(broker, records, None).await
}

/// As [`persist_records`]; with a producer id and epoch the batches are transactional.
async fn persist_records_in(
    broker: &Broker,
    records: Vec<OffsetsRecord>,
    txn: Option<(i64, i16)>,
) -> bool {
    if records.is_empty() {
        return true;
    }
    let Some(topic) = offsets_topic(broker).await else {
        return false;
    };
    let n = topic.partitions.len() as i32;
    let mut by_partition: BTreeMap<i32, runnel_api::records::BatchBuilder> = BTreeMap::new();
    let now = now_ms();
    for r in &records {
        let group = match r {
            OffsetsRecord::Offset { group, .. } | OffsetsRecord::Group { group, .. } => group,
        };
        let p = offsets_log::partition_for(group, n);
        let key = r.key();
        let value = r.value();
        by_partition
            .entry(p)
            .or_default()
            .append(now, Some(&key), value.as_deref(), &[]);
    }
    let mut ok = true;
    for (p, b) in by_partition {
        let Some(part) = topic.partitions.get(p as usize) else {
            ok = false;
            continue;
        };
        let res = match txn {
            None => part.append_records(&b.build(runnel_api::Compression::None, -1, -1, -1), now),
            Some((pid, epoch)) => {
                let mut bytes = b
                    .build(runnel_api::Compression::None, pid, epoch, 0)
                    .to_vec();
                crate::log::batch::set_transactional(&mut bytes);
                part.append_internal(&Bytes::from(bytes), now)
            }
        };
        match res {
            Ok(_) => part.wake_fetches(),
            Err(e) => {
                tracing::error!(partition = p, "writing __consumer_offsets failed: {e}");
                ok = false;
            }
        }
    }
    ok
}

/// Reads `__consumer_offsets` for the startup replay: records (with their producer id
/// when transactional) and transaction markers, in offset order.
pub fn read_offsets_topic(broker: &Broker) -> Vec<ReplayItem> {
    use crate::log::batch::{self, HEADER_LEN};
    let Some(topic) = broker.topic(offsets_log::TOPIC) else {
        return vec![];
    };
    let mut out = Vec::new();
    for part in &topic.partitions {
        part.for_each_batch(|h, one| {
            if h.is_control() {
                if let Some(t) = batch::control_type(&one[HEADER_LEN..]) {
                    out.push(ReplayItem::Marker {
                        producer_id: h.producer_id,
                        commit: t == batch::MARKER_COMMIT,
                    });
                }
                return;
            }
            let Ok(decoded) = runnel_api::records::decode_batches(one, true) else {
                return;
            };
            let pid = h.is_transactional().then_some(h.producer_id);
            for r in &decoded.records {
                if let Some(k) = &r.key
                    && let Some(rec) = OffsetsRecord::decode(k.clone(), r.value.clone())
                {
                    out.push(ReplayItem::Record(rec, pid));
                }
            }
        });
    }
    out
}

/// Shared handle.
pub type SharedCoordinator = Arc<GroupCoordinator>;
