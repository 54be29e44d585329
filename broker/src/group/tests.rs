//! Group state machine scenarios, no sockets and no sleeps: time is a number.

use super::*;

fn cfg() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..Default::default()
    }
}

fn join(req: u64, member: &str, protocols: &[&str]) -> Join {
    Join {
        request_id: req,
        member_id: member.to_string(),
        instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), p.as_bytes().to_vec()))
            .collect(),
        require_known_member_id: false,
    }
}

fn joins(effects: &[Effect]) -> Vec<(u64, JoinResult)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::JoinResponse(r, j) => Some((*r, j.clone())),
            _ => None,
        })
        .collect()
}

fn syncs(effects: &[Effect]) -> Vec<(u64, i16, Vec<u8>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::SyncResponse(r, c, a) => Some((*r, *c, a.clone())),
            _ => None,
        })
        .collect()
}

/// Three members join, the leader assigns, everyone is Stable. Returns the member ids.
fn stable_group_of_three(g: &mut Group) -> Vec<String> {
    let mut held = vec![];
    for r in 1..=3 {
        held.extend(g.join(&cfg(), join(r, "", &["range"]), 0));
    }
    assert!(
        held.is_empty(),
        "joins are held through the initial rebalance delay"
    );
    let done = joins(&g.tick(3_000));
    assert_eq!(done.len(), 3);
    assert_eq!(g.state(), GroupState::CompletingRebalance);
    assert_eq!(g.generation(), 1);
    let leader = g.leader().unwrap().to_string();
    let ids: Vec<String> = done.iter().map(|(_, j)| j.member_id.clone()).collect();
    for (_, j) in &done {
        assert_eq!(j.protocol.as_deref(), Some("range"));
        assert_eq!(j.leader, leader);
        assert_eq!(
            j.members.len(),
            if j.member_id == leader { 3 } else { 0 },
            "only the leader sees members"
        );
    }
    // Followers' syncs wait for the leader's.
    let mut waiting = vec![];
    for (i, id) in ids.iter().enumerate() {
        if *id != leader {
            waiting.extend(g.sync(10 + i as u64, id, 1, vec![], 3_100));
        }
    }
    assert!(waiting.is_empty());
    let assignments = ids
        .iter()
        .map(|id| (id.clone(), format!("for-{id}").into_bytes()))
        .collect();
    let out = syncs(&g.sync(99, &leader, 1, assignments, 3_200));
    assert_eq!(out.len(), 3);
    for (_, code, a) in &out {
        assert_eq!(*code, 0);
        assert!(String::from_utf8(a.clone()).unwrap().starts_with("for-"));
    }
    assert_eq!(g.state(), GroupState::Stable);
    ids
}

#[test]
fn three_members_join_and_get_their_assignments() {
    let mut g = Group::new("g");
    stable_group_of_three(&mut g);
}

#[test]
fn a_member_that_stops_heartbeating_is_removed_and_the_rest_rebalance() {
    let mut g = Group::new("g");
    let ids = stable_group_of_three(&mut g);
    let (alive, dead) = (&ids[..2], &ids[2]);
    for t in [5_000, 9_000, 12_000] {
        for id in alive {
            assert_eq!(g.heartbeat(id, 1, t), 0);
        }
        assert!(g.tick(t).is_empty());
    }
    // The third member's last sign of life was at 3_100: gone after 10 s.
    g.tick(13_200);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    assert_eq!(
        g.heartbeat(&alive[0], 1, 13_300),
        errors::REBALANCE_IN_PROGRESS
    );
    assert_eq!(g.heartbeat(dead, 1, 13_300), errors::UNKNOWN_MEMBER_ID);
    let mut out = g.join(&cfg(), join(50, &alive[0], &["range"]), 13_400);
    assert!(out.is_empty(), "waits for the other live member");
    out = g.join(&cfg(), join(51, &alive[1], &["range"]), 13_500);
    let done = joins(&out);
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|(_, j)| j.generation == 2 && j.error == 0));
    assert_eq!(g.generation(), 2);
}

#[test]
fn new_members_must_rejoin_with_the_id_they_are_given() {
    let mut g = Group::new("g");
    let mut j = join(1, "", &["range"]);
    j.require_known_member_id = true;
    let r = joins(&g.join(&cfg(), j.clone(), 0));
    assert_eq!(r[0].1.error, errors::MEMBER_ID_REQUIRED);
    let id = r[0].1.member_id.clone();
    assert!(!id.is_empty());
    j.request_id = 2;
    j.member_id = id.clone();
    assert!(g.join(&cfg(), j, 10).is_empty());
    let done = joins(&g.tick(3_010));
    assert_eq!(
        (done[0].1.member_id.as_str(), done[0].1.error),
        (id.as_str(), 0)
    );
    // An id never handed out is refused.
    assert_eq!(
        joins(&g.join(&cfg(), join(3, "made-up", &["range"]), 3_020))[0]
            .1
            .error,
        errors::UNKNOWN_MEMBER_ID
    );
}

#[test]
fn bad_joins_get_kafka_errors_and_leave_the_group_alone() {
    let mut g = Group::new("g");
    let mut short = join(1, "", &["range"]);
    short.session_timeout_ms = 10;
    assert_eq!(
        joins(&g.join(&cfg(), short, 0))[0].1.error,
        errors::INVALID_SESSION_TIMEOUT
    );
    assert_eq!(g.state(), GroupState::Empty);
    stable_group_of_three(&mut g);
    let mut other_type = join(7, "", &["range"]);
    other_type.protocol_type = "connect".into();
    assert_eq!(
        joins(&g.join(&cfg(), other_type, 4_000))[0].1.error,
        errors::INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(
        joins(&g.join(&cfg(), join(8, "", &["sticky"]), 4_000))[0]
            .1
            .error,
        errors::INCONSISTENT_GROUP_PROTOCOL
    );
    assert_eq!(
        g.state(),
        GroupState::Stable,
        "refused joins change nothing"
    );
    let small = GroupConfig {
        max_size: 3,
        ..cfg()
    };
    assert_eq!(
        joins(&g.join(&small, join(9, "", &["range"]), 4_000))[0]
            .1
            .error,
        errors::GROUP_MAX_SIZE_REACHED
    );
}

#[test]
fn stale_generations_and_strangers_are_refused() {
    let mut g = Group::new("g");
    let ids = stable_group_of_three(&mut g);
    assert_eq!(g.heartbeat(&ids[0], 0, 4_000), errors::ILLEGAL_GENERATION);
    assert_eq!(g.heartbeat("nobody", 1, 4_000), errors::UNKNOWN_MEMBER_ID);
    assert_eq!(
        syncs(&g.sync(5, &ids[0], 7, vec![], 4_000))[0].1,
        errors::ILLEGAL_GENERATION
    );
}

#[test]
fn leaving_triggers_a_rebalance_and_the_last_leaver_empties_the_group() {
    let mut g = Group::new("g");
    let ids = stable_group_of_three(&mut g);
    let (code, _) = g.leave(&ids[0], 4_000);
    assert_eq!(code, 0);
    assert_eq!(g.state(), GroupState::PreparingRebalance);
    g.join(&cfg(), join(60, &ids[1], &["range"]), 4_100);
    let done = joins(&g.join(&cfg(), join(61, &ids[2], &["range"]), 4_200));
    assert_eq!(done.len(), 2);
    assert_eq!(g.leave("ghost", 4_300).0, errors::UNKNOWN_MEMBER_ID);
    g.leave(&ids[1], 4_400);
    g.leave(&ids[2], 4_500);
    assert_eq!(g.state(), GroupState::Empty);
}

#[test]
fn the_protocol_all_members_support_wins_by_vote() {
    let mut g = Group::new("g");
    g.join(&cfg(), join(1, "", &["cooperative-sticky", "range"]), 0);
    g.join(&cfg(), join(2, "", &["range", "cooperative-sticky"]), 0);
    g.join(&cfg(), join(3, "", &["cooperative-sticky", "range"]), 0);
    let done = joins(&g.tick(3_000));
    assert!(
        done.iter()
            .all(|(_, j)| j.protocol.as_deref() == Some("cooperative-sticky"))
    );
}

#[test]
fn members_that_miss_the_rebalance_deadline_are_dropped() {
    let mut g = Group::new("g");
    let ids = stable_group_of_three(&mut g);
    g.leave(&ids[0], 4_000);
    g.join(&cfg(), join(70, &ids[1], &["range"]), 4_100);
    // ids[2] keeps heartbeating (and is told to rejoin) but never does: after the
    // rebalance timeout (30 s from 4_000) the group goes on without it.
    for t in [10_000, 18_000, 26_000, 33_000] {
        assert_eq!(g.heartbeat(&ids[2], 1, t), errors::REBALANCE_IN_PROGRESS);
        assert!(joins(&g.tick(t)).is_empty(), "still waiting at {t}");
    }
    let done = joins(&g.tick(34_001));
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].1.members.len(), 1, "the lone survivor leads");
}

#[test]
fn a_static_member_rejoining_keeps_its_member_id() {
    let mut g = Group::new("g");
    let mut j = join(1, "", &["range"]);
    j.instance_id = Some("host-a".into());
    g.join(&cfg(), j.clone(), 0);
    let first = joins(&g.tick(3_000))[0].1.member_id.clone();
    j.request_id = 2;
    let again = joins(&g.join(&cfg(), j, 3_500));
    let id = again
        .iter()
        .find(|(r, _)| *r == 2)
        .map(|(_, j)| j.member_id.clone());
    assert_eq!(id, Some(first));
}
