//! The client side of the classic group protocol: find the coordinator, join, let the
//! leader assign with `range` or `roundrobin`, sync, heartbeat, commit and leave.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::cluster::Cluster;
use crate::consumer::TopicPartition;
use crate::error::ClientError;
use crate::net::BrokerConnection;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Partition assignment strategies (`partition.assignment.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// `range`: per topic, contiguous ranges of partitions to members in id order.
    Range,
    /// `roundrobin`: all partitions dealt to members in turn.
    RoundRobin,
    /// `sticky`: balanced, moving as few partitions as possible (eager revocation).
    Sticky,
    /// `cooperative-sticky`: sticky, and partitions that move are first revoked by their
    /// owner in one rebalance and assigned in the next (KIP-429), so the others keep
    /// consuming throughout.
    CooperativeSticky,
}

impl Assignor {
    /// Kafka's protocol name.
    pub fn name(&self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::Sticky => "sticky",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Whether the protocol is incremental (members keep partitions across rebalances).
    pub fn is_cooperative(&self) -> bool {
        *self == Assignor::CooperativeSticky
    }

    /// Parses a name or a Java class name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "range" | "org.apache.kafka.clients.consumer.RangeAssignor" => Some(Assignor::Range),
            "roundrobin" | "org.apache.kafka.clients.consumer.RoundRobinAssignor" => {
                Some(Assignor::RoundRobin)
            }
            "sticky" | "org.apache.kafka.clients.consumer.StickyAssignor" => Some(Assignor::Sticky),
            "cooperative-sticky"
            | "org.apache.kafka.clients.consumer.CooperativeStickyAssignor" => {
                Some(Assignor::CooperativeSticky)
            }
            _ => None,
        }
    }

    /// Assigns `partitions` (per topic, a count) to members with their subscriptions.
    pub fn assign(
        &self,
        members: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        self.assign_with_owned(members, &BTreeMap::new(), partitions)
    }

    /// Assigns with knowledge of what each member owns now (the sticky assignors use it;
    /// cooperative-sticky withholds partitions another member still owns).
    pub fn assign_with_owned(
        &self,
        members: &BTreeMap<String, BTreeSet<String>>,
        owned: &BTreeMap<String, Vec<TopicPartition>>,
        partitions: &BTreeMap<String, i32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> =
            members.keys().map(|m| (m.clone(), vec![])).collect();
        match self {
            Assignor::Sticky | Assignor::CooperativeSticky => {
                let target = sticky(members, owned, partitions);
                if *self == Assignor::Sticky {
                    return target;
                }
                // A partition moving away from its current owner is left out this round:
                // the owner revokes it and rejoins; the next rebalance hands it over.
                let owner: BTreeMap<&TopicPartition, &String> = owned
                    .iter()
                    .flat_map(|(m, tps)| tps.iter().map(move |tp| (tp, m)))
                    .collect();
                return target
                    .into_iter()
                    .map(|(m, tps)| {
                        let keep = tps
                            .into_iter()
                            .filter(|tp| owner.get(tp).is_none_or(|o| **o == m))
                            .collect();
                        (m, keep)
                    })
                    .collect();
            }
            Assignor::Range => {
                for (topic, n) in partitions {
                    let subs: Vec<&String> = members
                        .iter()
                        .filter(|(_, t)| t.contains(topic))
                        .map(|(m, _)| m)
                        .collect();
                    if subs.is_empty() {
                        continue;
                    }
                    let per = *n / subs.len() as i32;
                    let extra = *n % subs.len() as i32;
                    let mut next = 0;
                    for (i, m) in subs.iter().enumerate() {
                        let count = per + if (i as i32) < extra { 1 } else { 0 };
                        for p in next..next + count {
                            out.get_mut(*m)
                                .expect("member")
                                .push(TopicPartition::new(topic.as_str(), p));
                        }
                        next += count;
                    }
                }
            }
            Assignor::RoundRobin => {
                let ids: Vec<&String> = members.keys().collect();
                let mut i = 0usize;
                for (topic, n) in partitions {
                    for p in 0..*n {
                        // Next member (in turn) subscribed to this topic.
                        for _ in 0..ids.len() {
                            let m = ids[i % ids.len()];
                            i += 1;
                            if members[m].contains(topic) {
                                out.get_mut(m)
                                    .expect("member")
                                    .push(TopicPartition::new(topic.as_str(), p));
                                break;
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

/// The sticky target: keep valid owned partitions up to a fair share, give the rest to
/// the least-loaded subscribers, then even out.
fn sticky(
    members: &BTreeMap<String, BTreeSet<String>>,
    owned: &BTreeMap<String, Vec<TopicPartition>>,
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let all: Vec<TopicPartition> = partitions
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.as_str(), p)))
        .filter(|tp| members.values().any(|s| s.contains(&tp.topic)))
        .collect();
    let mut out: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|m| (m.clone(), vec![])).collect();
    if members.is_empty() {
        return out;
    }
    let max_share = all.len().div_ceil(members.len());
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for (m, tps) in owned {
        let Some(subs) = members.get(m) else { continue };
        for tp in tps {
            let exists = partitions.get(&tp.topic).is_some_and(|n| tp.partition < *n);
            if exists && subs.contains(&tp.topic) && !taken.contains(tp) && out[m].len() < max_share
            {
                taken.insert(tp.clone());
                out.get_mut(m).expect("member").push(tp.clone());
            }
        }
    }
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let least = out
            .iter()
            .filter(|(m, _)| members[*m].contains(&tp.topic))
            .min_by_key(|(m, v)| (v.len(), (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = least {
            out.get_mut(&m).expect("member").push(tp.clone());
        }
    }
    // Even out: move from the most to the least loaded while the gap exceeds one.
    loop {
        let most = out
            .iter()
            .max_by_key(|(m, v)| (v.len(), std::cmp::Reverse((*m).clone())))
            .map(|(m, v)| (m.clone(), v.len()));
        let least = out
            .iter()
            .min_by_key(|(m, v)| (v.len(), (*m).clone()))
            .map(|(m, v)| (m.clone(), v.len()));
        let (Some(most), Some(least)) = (most, least) else {
            break;
        };
        if most.1 <= least.1 + 1 {
            break;
        }
        let movable = out[&most.0]
            .iter()
            .rposition(|tp| members[&least.0].contains(&tp.topic));
        let Some(i) = movable else { break };
        let tp = out.get_mut(&most.0).expect("member").remove(i);
        out.get_mut(&least.0).expect("member").push(tp);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn encode_subscription(topics: &BTreeSet<String>, owned: &[TopicPartition]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    let sub = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| sb(t)).collect())
        .with_owned_partitions(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    kafka_protocol::messages::consumer_protocol_subscription::TopicPartition::default()
                        .with_topic(TopicName(sb(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let mut b = BytesMut::new();
    // v1 carries the owned partitions the sticky assignors need.
    b.put_i16(1);
    let _ = sub.encode(&mut b, 1);
    b.freeze()
}

/// A member's subscribed topics and the partitions it owns.
type Subscription = (BTreeSet<String>, Vec<TopicPartition>);

fn decode_subscription(mut b: Bytes) -> Subscription {
    if b.remaining() < 2 {
        return Default::default();
    }
    let v = b.get_i16().clamp(0, 3);
    match ConsumerProtocolSubscription::decode(&mut b, v) {
        Ok(s) => (
            s.topics.iter().map(|t| t.as_str().to_string()).collect(),
            s.owned_partitions
                .iter()
                .flat_map(|tp| {
                    let t = tp.topic.0.as_str().to_string();
                    tp.partitions
                        .iter()
                        .map(move |p| TopicPartition::new(t.clone(), *p))
                })
                .collect(),
        ),
        Err(_) => Default::default(),
    }
}

fn encode_assignment(tps: &[TopicPartition]) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .push(tp.partition);
    }
    let a = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic
            .into_iter()
            .map(|(t, ps)| {
                kafka_protocol::messages::consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(sb(t)))
                    .with_partitions(ps)
            })
            .collect(),
    );
    let mut b = BytesMut::new();
    b.put_i16(0);
    let _ = a.encode(&mut b, 0);
    b.freeze()
}

fn decode_assignment(mut b: Bytes) -> Vec<TopicPartition> {
    if b.remaining() < 2 {
        return vec![];
    }
    let v = b.get_i16().clamp(0, 3);
    match ConsumerProtocolAssignment::decode(&mut b, v) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|tp| {
                let t = tp.topic.0.as_str().to_string();
                tp.partitions
                    .into_iter()
                    .map(move |p| TopicPartition::new(t.clone(), p))
            })
            .collect(),
        Err(_) => vec![],
    }
}

/// An OffsetCommit for `group` as `member_id` of `generation` (-1 and "" outside any).
pub(crate) fn offset_commit_request(
    group: &str,
    generation: i32,
    member_id: &str,
    offsets: &BTreeMap<TopicPartition, i64>,
) -> OffsetCommitRequest {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, o) in offsets {
        topics.entry(tp.topic.as_str()).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*o),
        );
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(sb(member_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

/// The first partition error of an OffsetCommit response, if any.
pub(crate) fn check_commit_response(
    resp: kafka_protocol::messages::OffsetCommitResponse,
) -> Result<(), ClientError> {
    for t in resp.topics {
        for p in t.partitions {
            if let Some(e) = ClientError::from_code(
                p.error_code,
                format!("commit {}-{}", t.name.0.as_str(), p.partition_index),
            ) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Asks any broker which broker coordinates `group`: (host, port).
pub(crate) async fn find_coordinator(
    cluster: &Cluster,
    group: &str,
) -> Result<(String, i32), ClientError> {
    find_coordinator_of(cluster, group, 0).await
}

/// The coordinator of a key: a group (`key_type` 0) or a transactional id (1).
pub(crate) async fn find_coordinator_of(
    cluster: &Cluster,
    group: &str,
    key_type: i8,
) -> Result<(String, i32), ClientError> {
    let conn = cluster.any_connection().await?;
    let version = conn
        .version_for::<FindCoordinatorRequest>()
        .ok_or_else(|| ClientError::Unsupported("FindCoordinator".into()))?;
    let g = sb(group);
    // v4+ asks for a batch of keys; older versions for one.
    let req = if version >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![g])
    } else {
        FindCoordinatorRequest::default().with_key(g)
    };
    let req = if version >= 1 {
        req.with_key_type(key_type)
    } else {
        req
    };
    let resp = conn.send_at(&req, version).await?;
    match resp.coordinators.first() {
        Some(c) => match ClientError::from_code(c.error_code, "find coordinator") {
            Some(e) => Err(e),
            None => Ok((c.host.as_str().to_string(), c.port)),
        },
        None => match ClientError::from_code(resp.error_code, "find coordinator") {
            Some(e) => Err(e),
            None => Ok((resp.host.as_str().to_string(), resp.port)),
        },
    }
}

/// Group settings.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// `group.id`.
    pub group_id: String,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// `session.timeout.ms`.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms` (the rebalance timeout).
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`, in preference order.
    pub assignors: Vec<Assignor>,
}

/// One membership of a group.
pub struct Membership {
    cluster: Arc<Cluster>,
    settings: GroupSettings,
    coordinator: Option<BrokerConnection>,
    /// Current member id ("" before the first join).
    pub member_id: String,
    /// Current generation (-1 when not a member).
    pub generation: i32,
    /// Set by the heartbeat task when the group wants this member to rejoin.
    pub rejoin_needed: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Membership {
    /// A membership that has not joined yet.
    pub fn new(cluster: Arc<Cluster>, settings: GroupSettings) -> Self {
        Self {
            cluster,
            settings,
            coordinator: None,
            member_id: String::new(),
            generation: -1,
            rejoin_needed: Arc::new(AtomicBool::new(true)),
            heartbeat: None,
        }
    }

    /// The group id.
    pub fn group_id(&self) -> &str {
        &self.settings.group_id
    }

    /// The static member id (`group.instance.id`), if any.
    pub fn instance_id(&self) -> Option<&str> {
        self.settings.instance_id.as_deref()
    }

    async fn coordinator(&mut self) -> Result<BrokerConnection, ClientError> {
        if let Some(c) = &self.coordinator
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let mut attempt = 0;
        let node = loop {
            attempt += 1;
            match find_coordinator(&self.cluster, &self.settings.group_id).await {
                Ok(n) => break n,
                // The coordinator may still be loading or electing (Kafka creates
                // __consumer_offsets on first use): retry a while.
                Err(e) if e.is_retriable() && attempt < 50 => {
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                }
                Err(e) => return Err(e),
            }
        };
        // A connection of its own, so held joins and fetch long polls never delay each other.
        let cfg = self.cluster.config();
        let c = BrokerConnection::connect(
            &format!("{}:{}", node.0, node.1),
            &cfg.client_id,
            self.settings.max_poll_interval + cfg.request_timeout,
        )
        .await?;
        self.coordinator = Some(c.clone());
        Ok(c)
    }

    /// Joins (or rejoins) the group and returns this member's assignment and the
    /// protocol the group chose.
    pub async fn join(
        &mut self,
        topics: &BTreeSet<String>,
        owned: &[TopicPartition],
    ) -> Result<(Vec<TopicPartition>, Option<Assignor>), ClientError> {
        self.stop_heartbeat();
        for _attempt in 0..20 {
            let conn = self.coordinator().await?;
            let protocols = self
                .settings
                .assignors
                .iter()
                .map(|a| {
                    JoinGroupRequestProtocol::default()
                        .with_name(sb(a.name()))
                        .with_metadata(encode_subscription(topics, owned))
                })
                .collect();
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(sb(&self.settings.group_id)))
                .with_session_timeout_ms(self.settings.session_timeout.as_millis() as i32)
                .with_rebalance_timeout_ms(self.settings.max_poll_interval.as_millis() as i32)
                .with_member_id(sb(&self.member_id))
                .with_group_instance_id(self.settings.instance_id.as_deref().map(sb))
                .with_protocol_type(sb("consumer"))
                .with_protocols(protocols);
            let version = conn
                .version_for::<JoinGroupRequest>()
                .ok_or_else(|| ClientError::Unsupported("JoinGroup".into()))?;
            let version = if self.settings.instance_id.is_none() {
                version.min(9)
            } else {
                version
            };
            let resp = match conn.send_at(&req, version).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() => {
                    self.coordinator = None;
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match resp.error_code {
                0 => {}
                79 => {
                    // MEMBER_ID_REQUIRED: join again with the id the coordinator gave.
                    self.member_id = resp.member_id.as_str().to_string();
                    continue;
                }
                25 | 22 => {
                    self.member_id.clear();
                    continue;
                }
                14..=16 | 27 => {
                    self.coordinator = None;
                    tokio::time::sleep(self.cluster.config().retry_backoff).await;
                    continue;
                }
                code => {
                    return Err(ClientError::Broker {
                        code,
                        message: format!("JoinGroup {}", self.settings.group_id),
                    });
                }
            }
            self.member_id = resp.member_id.as_str().to_string();
            self.generation = resp.generation_id;
            let protocol = resp
                .protocol_name
                .as_ref()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let mut assignments = Vec::new();
            if resp.leader.as_str() == self.member_id {
                let assignor = Assignor::parse(&protocol).unwrap_or(Assignor::Range);
                let decoded: Vec<(String, Subscription)> = resp
                    .members
                    .iter()
                    .map(|m| {
                        (
                            m.member_id.as_str().to_string(),
                            decode_subscription(m.metadata.clone()),
                        )
                    })
                    .collect();
                let members: BTreeMap<String, BTreeSet<String>> = decoded
                    .iter()
                    .map(|(m, (t, _))| (m.clone(), t.clone()))
                    .collect();
                let owned_by: BTreeMap<String, Vec<TopicPartition>> =
                    decoded.into_iter().map(|(m, (_, o))| (m, o)).collect();
                let all: Vec<String> = members
                    .values()
                    .flatten()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let mut counts = BTreeMap::new();
                for t in &all {
                    self.cluster.invalidate(t).await;
                    if let Ok(info) = self.cluster.topic(t).await {
                        counts.insert(t.clone(), info.partitions.len() as i32);
                    }
                }
                for (m, tps) in assignor.assign_with_owned(&members, &owned_by, &counts) {
                    assignments.push(
                        SyncGroupRequestAssignment::default()
                            .with_member_id(sb(&m))
                            .with_assignment(encode_assignment(&tps)),
                    );
                }
            }
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(sb(&self.settings.group_id)))
                .with_generation_id(self.generation)
                .with_member_id(sb(&self.member_id))
                .with_group_instance_id(self.settings.instance_id.as_deref().map(sb))
                .with_assignments(assignments);
            let sv = conn
                .version_for::<SyncGroupRequest>()
                .ok_or_else(|| ClientError::Unsupported("SyncGroup".into()))?;
            let sync = if sv >= 5 {
                sync.with_protocol_type(Some(sb("consumer")))
                    .with_protocol_name(Some(sb(&protocol)))
            } else {
                sync
            };
            let sresp = match conn.send_at(&sync, sv).await {
                Ok(r) => r,
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            };
            match sresp.error_code {
                0 => {}
                27 | 22 => continue,
                25 => {
                    self.member_id.clear();
                    continue;
                }
                code => {
                    return Err(ClientError::Broker {
                        code,
                        message: format!("SyncGroup {}", self.settings.group_id),
                    });
                }
            }
            self.rejoin_needed.store(false, Ordering::SeqCst);
            self.start_heartbeat(conn);
            return Ok((
                decode_assignment(sresp.assignment),
                Assignor::parse(&protocol),
            ));
        }
        Err(ClientError::Timeout(format!(
            "could not join group {}",
            self.settings.group_id
        )))
    }

    fn start_heartbeat(&mut self, conn: BrokerConnection) {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(sb(&self.settings.group_id)))
            .with_generation_id(self.generation)
            .with_member_id(sb(&self.member_id))
            .with_group_instance_id(self.settings.instance_id.as_deref().map(sb));
        let flag = self.rejoin_needed.clone();
        let every = self.settings.heartbeat_interval;
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match conn.send(&req).await {
                    Ok(r) if r.error_code == 0 => {}
                    Ok(_) => {
                        // REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID...
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(_) => {
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    /// Commits offsets as this member (or as a simple consumer before joining).
    pub async fn commit(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        self.commit_async(offsets)
            .await?
            .await
            .unwrap_or(Err(ClientError::Closed))
    }

    /// Sends an offset commit and returns a task that completes with its outcome.
    pub async fn commit_async(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<tokio::task::JoinHandle<Result<(), ClientError>>, ClientError> {
        if offsets.is_empty() {
            return Ok(tokio::spawn(async { Ok(()) }));
        }
        let conn = self.coordinator().await?;
        let req = offset_commit_request(
            &self.settings.group_id,
            self.generation,
            &self.member_id,
            offsets,
        );
        let version = conn
            .version_for::<OffsetCommitRequest>()
            .map(|v| v.min(9))
            .ok_or_else(|| ClientError::Unsupported("OffsetCommit".into()))?;
        let rejoin = self.rejoin_needed.clone();
        Ok(tokio::spawn(async move {
            let result = check_commit_response(conn.send_at(&req, version).await?);
            // Fenced or mid-rebalance: the member must rejoin.
            if let Err(ClientError::Broker {
                code: 22 | 25 | 27, ..
            }) = &result
            {
                rejoin.store(true, Ordering::SeqCst);
            }
            result
        }))
    }

    /// Committed offsets for `tps` (-1 where none).
    pub async fn committed(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let conn = self.coordinator().await?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            by_topic
                .entry(tp.topic.as_str())
                .or_default()
                .push(tp.partition);
        }
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(&self.settings.group_id)))
            .with_topics(Some(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(sb(t)))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            ));
        let version = conn
            .version_for::<OffsetFetchRequest>()
            .map(|v| v.min(7))
            .ok_or_else(|| ClientError::Unsupported("OffsetFetch".into()))?;
        let resp = conn.send_at(&req, version).await?;
        if let Some(e) = ClientError::from_code(resp.error_code, "offset fetch") {
            return Err(e);
        }
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                out.insert(
                    TopicPartition::new(t.name.0.as_str(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
        Ok(out)
    }

    /// Leaves the group (a static member stays registered, as in Kafka).
    pub async fn leave(&mut self) -> Result<(), ClientError> {
        self.stop_heartbeat();
        if self.member_id.is_empty() || self.settings.instance_id.is_some() {
            return Ok(());
        }
        let conn = self.coordinator().await?;
        let version = conn
            .version_for::<LeaveGroupRequest>()
            .ok_or_else(|| ClientError::Unsupported("LeaveGroup".into()))?;
        let mut req =
            LeaveGroupRequest::default().with_group_id(GroupId(sb(&self.settings.group_id)));
        req = if version >= 3 {
            req.with_members(vec![
                MemberIdentity::default().with_member_id(sb(&self.member_id)),
            ])
        } else {
            req.with_member_id(sb(&self.member_id))
        };
        let _ = conn.send_at(&req, version).await;
        self.member_id.clear();
        self.generation = -1;
        Ok(())
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(spec: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        spec.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn range_gives_contiguous_ranges_and_the_extras_to_the_first_members() {
        let m = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let out = Assignor::Range.assign(&m, &BTreeMap::from([("t".to_string(), 7)]));
        let parts = |id: &str| out[id].iter().map(|tp| tp.partition).collect::<Vec<_>>();
        assert_eq!(
            (parts("a"), parts("b"), parts("c")),
            (vec![0, 1, 2], vec![3, 4], vec![5, 6])
        );
    }

    #[test]
    fn roundrobin_deals_partitions_in_turn_to_subscribers_only() {
        let m = members(&[("a", &["t", "u"]), ("b", &["t"])]);
        let out = Assignor::RoundRobin.assign(
            &m,
            &BTreeMap::from([("t".to_string(), 3), ("u".to_string(), 2)]),
        );
        assert_eq!(out["a"].len() + out["b"].len(), 5);
        assert!(out["b"].iter().all(|tp| tp.topic == "t"));
        // t0→a t1→b t2→a, then b (not subscribed to u) is skipped: u0→a u1→a, as in Kafka.
        assert_eq!(out["a"].len(), 4);
    }

    #[test]
    fn sticky_keeps_what_members_own_and_balances() {
        let m = members(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let counts = BTreeMap::from([("t".to_string(), 6)]);
        // a owned everything (it was alone); b and c just joined.
        let owned = BTreeMap::from([(
            "a".to_string(),
            (0..6)
                .map(|p| TopicPartition::new("t", p))
                .collect::<Vec<_>>(),
        )]);
        let out = Assignor::Sticky.assign_with_owned(&m, &owned, &counts);
        assert!(out.values().all(|v| v.len() == 2), "{out:?}");
        assert!(out["a"].iter().all(|tp| tp.partition < 6));
        // cooperative: b and c get nothing a still owns this round; a keeps its share.
        let coop = Assignor::CooperativeSticky.assign_with_owned(&m, &owned, &counts);
        assert_eq!(coop["a"], out["a"]);
        assert!(coop["b"].is_empty() && coop["c"].is_empty());
        // next round: a owns only its share, the rest moves.
        let owned2 = BTreeMap::from([("a".to_string(), out["a"].clone())]);
        let coop2 = Assignor::CooperativeSticky.assign_with_owned(&m, &owned2, &counts);
        assert!(coop2.values().all(|v| v.len() == 2), "{coop2:?}");
        assert_eq!(coop2["a"], out["a"], "a keeps what it had");
    }

    #[test]
    fn subscription_and_assignment_bytes_round_trip() {
        let topics: BTreeSet<String> = ["x".to_string(), "y".to_string()].into();
        let owned = vec![TopicPartition::new("x", 1)];
        assert_eq!(
            decode_subscription(encode_subscription(&topics, &owned)),
            (topics, owned)
        );
        let tps = vec![
            TopicPartition::new("x", 0),
            TopicPartition::new("x", 3),
            TopicPartition::new("y", 1),
        ];
        assert_eq!(decode_assignment(encode_assignment(&tps)), tps);
    }
}
