//! DeleteTopics (by name, or by topic id from v6).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::sb;
use crate::broker::Broker;

/// Answers DeleteTopics.
pub async fn handle(
    broker: &Arc<Broker>,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // v0-5 name topics in `topic_names`; v6 in `topics` (by name or id).
    let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::new();
    for (name, id) in wanted {
        let resolved = match &name {
            Some(n) => broker.topic(n.0.as_str()).map(|t| t.name.clone()),
            None => broker.topic_by_id(&id).map(|t| t.name.clone()),
        };
        let Some(topic_name) = resolved else {
            let code = if name.is_some() {
                ResponseError::UnknownTopicOrPartition.code()
            } else {
                ResponseError::UnknownTopicId.code()
            };
            responses.push(
                DeletableTopicResult::default()
                    .with_name(name)
                    .with_topic_id(id)
                    .with_error_code(code)
                    .with_error_message(Some(sb("This server does not host this topic."))),
            );
            continue;
        };
        let res = broker.delete_topic(&topic_name).await;
        responses.push(match res {
            Ok(deleted_id) => DeletableTopicResult::default()
                .with_name(Some(super::tn(&topic_name)))
                .with_topic_id(deleted_id),
            Err(e) => DeletableTopicResult::default()
                .with_name(Some(super::tn(&topic_name)))
                .with_topic_id(id)
                .with_error_code(e.code())
                .with_error_message(Some(sb(&e.to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
