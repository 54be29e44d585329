//! The classic consumer-group protocol's state machine, as plain data and functions.
//!
//! ```text
//!            join                      all joined / rebalance timeout
//!  Empty ───────────► PreparingRebalance ─────────────────────────► CompletingRebalance
//!    ▲                    ▲      ▲                                        │ leader's SyncGroup
//!    │ last member leaves │      └──── join / leave / session expiry ─────┤
//!    └────────────────────┴───────────────────────────────────────── Stable ◄┘
//! ```
//!
//! Nothing here does I/O or reads a clock: every call takes `now_ms` and returns the
//! [`Effect`]s (responses to release, rebalances to log) for the async shell to carry out,
//! so every scenario is testable without sockets or sleeps. Request ids let the shell match
//! held requests (JoinGroup and SyncGroup wait for the rest of the group) to responses.

use std::collections::BTreeMap;

pub mod coordinator;
pub mod offsets_log;
#[cfg(test)]
mod tests;

/// Group states, with Kafka's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (offsets may remain).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Everyone has an assignment.
    Stable,
    /// Removed.
    Dead,
}

impl GroupState {
    /// Kafka's spelling, as DescribeGroups and ListGroups report it.
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Kafka error codes the coordinator answers with.
pub mod errors {
    /// UNKNOWN_MEMBER_ID.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// ILLEGAL_GENERATION.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// REBALANCE_IN_PROGRESS.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// INCONSISTENT_GROUP_PROTOCOL.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// INVALID_SESSION_TIMEOUT.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// MEMBER_ID_REQUIRED.
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    /// GROUP_MAX_SIZE_REACHED.
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    /// INVALID_GROUP_ID.
    pub const INVALID_GROUP_ID: i16 = 24;
    /// FENCED_INSTANCE_ID.
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// Coordinator limits (`group.*` broker settings).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`.
    pub max_size: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_size: i32::MAX as usize,
        }
    }
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct Join {
    /// Shell's id for the held request.
    pub request_id: u64,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// `group.instance.id` (static membership).
    pub instance_id: Option<String>,
    /// Client id and host, for DescribeGroups.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// `session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `rebalance.timeout.ms`.
    pub rebalance_timeout_ms: i32,
    /// Protocol type (`consumer`, `connect`, ...).
    pub protocol_type: String,
    /// Supported protocols in preference order: (name, metadata).
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Whether the client understands MEMBER_ID_REQUIRED (JoinGroup v4+).
    pub require_known_member_id: bool,
}

/// A JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    /// Error code (0 ok).
    pub error: i16,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Protocol type.
    pub protocol_type: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Vec<u8>)>,
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Answer a held JoinGroup.
    JoinResponse(u64, JoinResult),
    /// Answer a held SyncGroup: (request id, error, assignment).
    SyncResponse(u64, i16, Vec<u8>),
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    last_heartbeat_ms: i64,
    /// Held JoinGroup while rebalancing.
    pending_join: Option<u64>,
    /// Held SyncGroup while completing.
    pending_sync: Option<u64>,
}

/// One group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group id.
    pub id: String,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending_members: Vec<String>,
    /// When the current rebalance must end (the members' rebalance timeout).
    rebalance_deadline_ms: i64,
    /// A new group waits until then for more members (`group.initial.rebalance.delay.ms`).
    initial_delay_until_ms: i64,
    next_member_seq: u64,
}

/// A member as DescribeGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Instance id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Vec<u8>,
    /// Current assignment.
    pub assignment: Vec<u8>,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: Vec::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            next_member_seq: 0,
        }
    }

    /// A group known from `__consumer_offsets` after a restart: empty, at its generation.
    pub fn restored(id: &str, protocol_type: &str, generation: i32) -> Self {
        let mut g = Self::new(id);
        g.generation = generation;
        g.protocol_type = (!protocol_type.is_empty()).then(|| protocol_type.to_string());
        g
    }

    /// Whether a group member may commit offsets now: the error code, 0 if so.
    pub fn check_commit(&self, member_id: &str, generation: i32) -> i16 {
        if let Err(e) = self.check_member(member_id, generation) {
            return e;
        }
        if self.state == GroupState::CompletingRebalance {
            return errors::REBALANCE_IN_PROGRESS;
        }
        0
    }

    /// Topics the members of a `consumer` group subscribe to (None for other types).
    pub fn subscribed_topics(&self) -> Option<std::collections::BTreeSet<String>> {
        use bytes::Buf;
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        if self.protocol_type.as_deref() != Some("consumer") || self.members.is_empty() {
            return None;
        }
        let mut topics = std::collections::BTreeSet::new();
        for m in self.describe_members() {
            let mut b = bytes::Bytes::from(m.metadata);
            if b.remaining() < 2 {
                continue;
            }
            let version = b.get_i16();
            if let Ok(sub) = ConsumerProtocolSubscription::decode(&mut b, version.clamp(0, 3)) {
                topics.extend(sub.topics.iter().map(|t| t.as_str().to_string()));
            }
        }
        Some(topics)
    }

    /// Current state.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// Current generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Chosen protocol type and protocol.
    pub fn protocol(&self) -> (Option<&str>, Option<&str>) {
        (self.protocol_type.as_deref(), self.protocol.as_deref())
    }

    /// Leader member id.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Members, for DescribeGroups.
    pub fn describe_members(&self) -> Vec<MemberDescription> {
        self.members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: self
                    .protocol
                    .as_ref()
                    .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member_seq += 1;
        format!(
            "{client_id}-{}-{:016x}",
            self.next_member_seq,
            rand_suffix(&self.id, self.next_member_seq)
        )
    }

    fn supports(&self, j: &Join) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(j.protocol_type.as_str()) {
            return false;
        }
        // Some protocol every member (and the joiner) supports must exist.
        j.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// Handles JoinGroup. Returns effects; the request may be held (no effect for it yet).
    pub fn join(&mut self, cfg: &GroupConfig, j: Join, now_ms: i64) -> Vec<Effect> {
        let fail = |error: i16, member_id: String| {
            vec![Effect::JoinResponse(
                j.request_id,
                JoinResult {
                    error,
                    generation: -1,
                    protocol: None,
                    protocol_type: None,
                    leader: String::new(),
                    member_id,
                    members: vec![],
                },
            )]
        };
        if j.session_timeout_ms < cfg.min_session_timeout_ms
            || j.session_timeout_ms > cfg.max_session_timeout_ms
        {
            return fail(errors::INVALID_SESSION_TIMEOUT, j.member_id.clone());
        }
        if j.protocol_type.is_empty() || j.protocols.is_empty() || !self.supports(&j) {
            return fail(errors::INCONSISTENT_GROUP_PROTOCOL, j.member_id.clone());
        }
        let known = self.members.contains_key(&j.member_id);
        if !j.member_id.is_empty() && !known && !self.pending_members.contains(&j.member_id) {
            return fail(errors::UNKNOWN_MEMBER_ID, j.member_id.clone());
        }
        if !known && self.members.len() >= cfg.max_size {
            return fail(errors::GROUP_MAX_SIZE_REACHED, j.member_id.clone());
        }
        // Static members keep their member id across restarts.
        let static_id = j.instance_id.as_ref().and_then(|inst| {
            self.members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(inst))
                .map(|(id, _)| id.clone())
        });
        let member_id = if let Some(id) = static_id.clone() {
            id
        } else if j.member_id.is_empty() {
            let id = self.new_member_id(&j.client_id);
            if j.require_known_member_id && j.instance_id.is_none() {
                // KIP-394: hand out the id and ask the member to join with it.
                self.pending_members.push(id.clone());
                return fail(errors::MEMBER_ID_REQUIRED, id);
            }
            id
        } else {
            j.member_id.clone()
        };
        self.pending_members.retain(|p| *p != member_id);
        let mut effects = Vec::new();
        let prev = self.members.remove(&member_id);
        if let Some(p) = &prev
            && let Some(old) = p.pending_join
            && old != j.request_id
        {
            // The member joined again: its older held join is answered as superseded.
            effects.push(Effect::JoinResponse(
                old,
                JoinResult {
                    error: errors::UNKNOWN_MEMBER_ID,
                    generation: -1,
                    protocol: None,
                    protocol_type: None,
                    leader: String::new(),
                    member_id: member_id.clone(),
                    members: vec![],
                },
            ));
        }
        let protocols_changed = prev.as_ref().is_none_or(|p| p.protocols != j.protocols);
        self.members.insert(
            member_id.clone(),
            Member {
                instance_id: j.instance_id.clone(),
                client_id: j.client_id.clone(),
                client_host: j.client_host.clone(),
                session_timeout_ms: j.session_timeout_ms,
                rebalance_timeout_ms: j.rebalance_timeout_ms,
                protocols: j.protocols.clone(),
                assignment: prev.map(|p| p.assignment).unwrap_or_default(),
                last_heartbeat_ms: now_ms,
                pending_join: Some(j.request_id),
                pending_sync: None,
            },
        );
        if self.protocol_type.is_none() {
            self.protocol_type = Some(j.protocol_type.clone());
        }
        match self.state {
            GroupState::Stable
                if !protocols_changed
                    && (self.leader.as_deref() != Some(&member_id) || static_id.is_some()) =>
            {
                // A follower rejoining with nothing new, or a static member coming back
                // (KIP-345), gets the current generation back without a rebalance.
                let m = self.members.get_mut(&member_id).expect("inserted");
                m.pending_join = None;
                effects.push(Effect::JoinResponse(
                    j.request_id,
                    self.join_result(&member_id),
                ));
                return effects;
            }
            GroupState::PreparingRebalance => {}
            GroupState::Empty => {
                self.start_rebalance(now_ms, cfg.initial_rebalance_delay_ms.max(0), &mut effects);
            }
            _ => self.start_rebalance(now_ms, 0, &mut effects),
        }
        effects.extend(self.maybe_complete_join(now_ms));
        effects
    }

    fn start_rebalance(&mut self, now_ms: i64, extra_delay: i64, effects: &mut Vec<Effect>) {
        // Members waiting on SyncGroup learn that a new rebalance started.
        for m in self.members.values_mut() {
            if let Some(s) = m.pending_sync.take() {
                effects.push(Effect::SyncResponse(
                    s,
                    errors::REBALANCE_IN_PROGRESS,
                    vec![],
                ));
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms as i64)
            .max()
            .unwrap_or(0);
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline_ms = now_ms + timeout.max(extra_delay);
        // Initial delay: a group starting from empty waits a little for more members
        // before its first generation, so they all join the same one.
        self.initial_delay_until_ms = now_ms + extra_delay;
    }

    /// Completes the join phase when every member has rejoined (or the deadline passed,
    /// dropping those that did not). Returns the join responses.
    fn maybe_complete_join(&mut self, now_ms: i64) -> Vec<Effect> {
        if self.state != GroupState::PreparingRebalance {
            return vec![];
        }
        let all_joined = self.members.values().all(|m| m.pending_join.is_some());
        let initial_delay_pending = now_ms < self.initial_delay_until_ms;
        // Keep waiting while someone is missing (or a new group's initial delay runs),
        // unless the deadline has passed.
        let waiting = !all_joined || initial_delay_pending;
        if waiting && now_ms < self.rebalance_deadline_ms {
            return vec![];
        }
        // Members that did not rejoin in time are removed.
        self.members.retain(|_, m| m.pending_join.is_some());
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            return vec![];
        }
        self.generation += 1;
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let mut effects = Vec::new();
        for id in ids {
            let result = self.join_result(&id);
            let m = self.members.get_mut(&id).expect("present");
            m.last_heartbeat_ms = now_ms;
            if let Some(req) = m.pending_join.take() {
                effects.push(Effect::JoinResponse(req, result));
            }
        }
        effects
    }

    fn select_protocol(&self) -> Option<String> {
        // Each member votes for its most preferred protocol that all members support.
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        // Ties go to the first candidate in the first member's preference order.
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(*c).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .map(|c| (*c).clone())
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.describe_members()
                .into_iter()
                .map(|m| (m.member_id, m.instance_id, m.metadata))
                .collect()
        } else {
            vec![]
        };
        JoinResult {
            error: 0,
            generation: self.generation,
            protocol: self.protocol.clone(),
            protocol_type: self.protocol_type.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn check_member(&self, member_id: &str, generation: i32) -> Result<(), i16> {
        if !self.members.contains_key(member_id) {
            return Err(errors::UNKNOWN_MEMBER_ID);
        }
        if generation != self.generation {
            return Err(errors::ILLEGAL_GENERATION);
        }
        Ok(())
    }

    /// Handles SyncGroup; the leader's carries every member's assignment.
    pub fn sync(
        &mut self,
        request_id: u64,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Vec<u8>)>,
        now_ms: i64,
    ) -> Vec<Effect> {
        if let Err(e) = self.check_member(member_id, generation) {
            return vec![Effect::SyncResponse(request_id, e, vec![])];
        }
        match self.state {
            GroupState::PreparingRebalance => {
                vec![Effect::SyncResponse(
                    request_id,
                    errors::REBALANCE_IN_PROGRESS,
                    vec![],
                )]
            }
            GroupState::Stable => {
                let a = self.members[member_id].assignment.clone();
                vec![Effect::SyncResponse(request_id, 0, a)]
            }
            GroupState::CompletingRebalance => {
                let is_leader = self.leader.as_deref() == Some(member_id);
                {
                    let m = self.members.get_mut(member_id).expect("checked");
                    m.pending_sync = Some(request_id);
                    m.last_heartbeat_ms = now_ms;
                }
                if !is_leader {
                    return vec![];
                }
                for m in self.members.values_mut() {
                    m.assignment.clear();
                }
                for (id, a) in assignments {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.assignment = a;
                    }
                }
                self.state = GroupState::Stable;
                let mut effects = Vec::new();
                for m in self.members.values_mut() {
                    if let Some(s) = m.pending_sync.take() {
                        effects.push(Effect::SyncResponse(s, 0, m.assignment.clone()));
                    }
                }
                effects
            }
            GroupState::Empty | GroupState::Dead => {
                vec![Effect::SyncResponse(
                    request_id,
                    errors::UNKNOWN_MEMBER_ID,
                    vec![],
                )]
            }
        }
    }

    /// Handles Heartbeat: returns the error code.
    pub fn heartbeat(&mut self, member_id: &str, generation: i32, now_ms: i64) -> i16 {
        if let Err(e) = self.check_member(member_id, generation) {
            // During a rebalance a member of the previous generation is told to rejoin.
            if e == errors::ILLEGAL_GENERATION && self.state == GroupState::PreparingRebalance {
                return errors::REBALANCE_IN_PROGRESS;
            }
            return e;
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
        match self.state {
            GroupState::PreparingRebalance => errors::REBALANCE_IN_PROGRESS,
            _ => 0,
        }
    }

    /// Handles LeaveGroup for one member: returns its error code and effects.
    pub fn leave(&mut self, member_id: &str, now_ms: i64) -> (i16, Vec<Effect>) {
        let Some(m) = self.members.remove(member_id) else {
            return (errors::UNKNOWN_MEMBER_ID, vec![]);
        };
        let mut effects = Vec::new();
        if let Some(j) = m.pending_join {
            effects.push(Effect::JoinResponse(
                j,
                JoinResult {
                    error: errors::UNKNOWN_MEMBER_ID,
                    generation: -1,
                    protocol: None,
                    protocol_type: None,
                    leader: String::new(),
                    member_id: member_id.to_string(),
                    members: vec![],
                },
            ));
        }
        effects.extend(self.membership_changed(now_ms));
        (0, effects)
    }

    fn membership_changed(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol = None;
            self.leader = None;
            return effects;
        }
        match self.state {
            GroupState::PreparingRebalance => effects.extend(self.maybe_complete_join(now_ms)),
            _ => {
                self.start_rebalance(now_ms, 0, &mut effects);
                effects.extend(self.maybe_complete_join(now_ms));
            }
        }
        effects
    }

    /// Advances time: expires sessions and ends rebalances whose deadline passed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        // A member held in JoinGroup is not expected to heartbeat.
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.pending_join.is_none()
                    && now_ms - m.last_heartbeat_ms > m.session_timeout_ms as i64
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.members.remove(&id);
            effects.extend(self.membership_changed(now_ms));
        }
        effects.extend(self.maybe_complete_join(now_ms));
        effects
    }
}

fn rand_suffix(group: &str, seq: u64) -> u64 {
    // Unique enough within a broker run; member ids only need to differ.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x1000_0000_01b3);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    h ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ t
}
