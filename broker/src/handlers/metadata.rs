//! Metadata: brokers, the controller, topics and partitions (leader, replicas, ISR).

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use uuid::Uuid;

use super::{acl_ops, sb, tn};
use crate::broker::{AdminError, Broker};
use crate::topics::Topic;

fn topic_entry(broker: &Broker, t: &Topic, include_ops: bool) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    MetadataResponseTopic::default()
        .with_name(Some(tn(&t.name)))
        .with_topic_id(t.id)
        .with_is_internal(t.name.starts_with("__"))
        .with_topic_authorized_operations(if include_ops {
            acl_ops::topic_all()
        } else {
            acl_ops::NOT_REQUESTED
        })
        .with_partitions(
            t.partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.index)
                        .with_leader_id(node)
                        .with_leader_epoch(0)
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                        .with_offline_replicas(vec![])
                })
                .collect(),
        )
}

fn error_entry(name: Option<&str>, id: Uuid, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(tn))
        .with_topic_id(id)
        .with_error_code(code)
        .with_topic_authorized_operations(acl_ops::NOT_REQUESTED)
}

/// Answers Metadata, auto-creating requested topics when allowed.
pub async fn handle(broker: &Arc<Broker>, req: MetadataRequest, version: i16) -> MetadataResponse {
    let include_ops = req.include_topic_authorized_operations;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let all = match &req.topics {
        None => true,
        Some(t) => t.is_empty() && version == 0,
    };
    let allow_auto = version < 4 || req.allow_auto_topic_creation;
    let mut topics = Vec::new();
    if all {
        for t in broker.topics() {
            topics.push(topic_entry(broker, &t, include_ops));
        }
    } else {
        for rt in req.topics.unwrap_or_default() {
            let Some(name) = rt.name.as_ref().map(|n| n.0.as_str().to_string()) else {
                topics.push(match broker.topic_by_id(&rt.topic_id) {
                    Some(t) => topic_entry(broker, &t, include_ops),
                    None => error_entry(None, rt.topic_id, ResponseError::UnknownTopicId.code()),
                });
                continue;
            };
            if let Some(t) = broker.topic(&name) {
                topics.push(topic_entry(broker, &t, include_ops));
                continue;
            }
            if let Err(msg) = crate::topics::validate_topic_name(&name) {
                tracing::debug!(topic = %name, "metadata for an invalid topic name: {msg}");
                topics.push(error_entry(
                    Some(&name),
                    Uuid::nil(),
                    ResponseError::InvalidTopicException.code(),
                ));
                continue;
            }
            if allow_auto && broker.config.auto_create_topics_enable {
                match broker.create_topic(&name, -1, -1, BTreeMap::new()).await {
                    Ok(t) => topics.push(topic_entry(broker, &t, include_ops)),
                    // Created concurrently by another request: report it as it is.
                    Err(AdminError::TopicExists(_)) => match broker.topic(&name) {
                        Some(t) => topics.push(topic_entry(broker, &t, include_ops)),
                        None => topics.push(error_entry(
                            Some(&name),
                            Uuid::nil(),
                            ResponseError::LeaderNotAvailable.code(),
                        )),
                    },
                    Err(e) => topics.push(error_entry(Some(&name), Uuid::nil(), e.code())),
                }
            } else {
                topics.push(error_entry(
                    Some(&name),
                    Uuid::nil(),
                    ResponseError::UnknownTopicOrPartition.code(),
                ));
            }
        }
    }
    let brokers = broker
        .config
        .advertised_listeners
        .first()
        .map(|l| {
            vec![
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(broker.config.node_id))
                    .with_host(sb(&l.host))
                    .with_port(l.port as i32),
            ]
        })
        .unwrap_or_default();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(sb(&broker.cluster_id)))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_topics(topics)
        // The field exists only in v8-v10 (DescribeCluster carries it later).
        .with_cluster_authorized_operations(
            if req.include_cluster_authorized_operations && (8..=10).contains(&version) {
                acl_ops::cluster_all()
            } else {
                acl_ops::NOT_REQUESTED
            },
        )
}
