//! DeleteGroups: only empty groups; their offsets go too.

use std::sync::Arc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::broker::Broker;

/// Answers DeleteGroups.
pub async fn handle(broker: &Arc<Broker>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for g in req.groups_names {
        let code = broker.groups.delete_group(broker, g.0.as_str()).await;
        results.push(
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
