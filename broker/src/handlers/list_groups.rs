//! ListGroups, with the state (v4+) and type (v5) filters.

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::sb;
use crate::broker::Broker;

/// Answers ListGroups.
pub fn handle(broker: &Broker, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.as_str().to_ascii_lowercase())
        .collect();
    let groups = broker
        .groups
        .list()
        .into_iter()
        .filter(|(_, _, st)| {
            states.is_empty() || states.contains(&st.as_str().to_ascii_lowercase())
        })
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|(id, pt, st)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(sb(&id)))
                .with_protocol_type(sb(&pt));
            if version >= 4 {
                g = g.with_group_state(sb(st.as_str()));
            }
            if version >= 5 {
                g = g.with_group_type(sb("classic"));
            }
            g
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
