//! CreateTopics.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::describe_configs::{self, CONFIG_SOURCE_DEFAULT, CONFIG_SOURCE_TOPIC};
use super::sb;
use crate::broker::{AdminError, Broker};
use crate::config::TopicConfig;

fn result_configs(broker: &Broker, cfg: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    cfg.describe()
        .into_iter()
        .map(|(k, v, overridden)| {
            let source = if overridden {
                CONFIG_SOURCE_TOPIC
            } else {
                describe_configs::default_source(broker, k).unwrap_or(CONFIG_SOURCE_DEFAULT)
            };
            CreatableTopicConfigs::default()
                .with_name(sb(k))
                .with_value(Some(sb(&v)))
                .with_config_source(source)
        })
        .collect()
}

/// Answers CreateTopics.
pub async fn handle(
    broker: &Arc<Broker>,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut seen = HashSet::new();
    let duplicates: HashSet<String> = req
        .topics
        .iter()
        .filter(|t| !seen.insert(t.name.0.as_str().to_string()))
        .map(|t| t.name.0.as_str().to_string())
        .collect();
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let fail = |code: i16, msg: String| {
            CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code)
                .with_error_message(Some(sb(&msg)))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_configs(None)
        };
        if duplicates.contains(&name) {
            results.push(fail(
                ResponseError::InvalidRequest.code(),
                format!(
                    "Create topics request from client contains multiple entries for topic {name}"
                ),
            ));
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut bad_config = None;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.as_str().to_string(), v.as_str().to_string());
                }
                None => {
                    bad_config = Some(format!(
                        "Null value not supported for topic configs: {}",
                        c.name.as_str()
                    ))
                }
            }
        }
        if let Some(msg) = bad_config {
            results.push(fail(ResponseError::InvalidConfig.code(), msg));
            continue;
        }
        let (mut partitions, mut rf) = (t.num_partitions, t.replication_factor);
        if !t.assignments.is_empty() {
            if partitions != -1 || rf != -1 {
                results.push(fail(
                    ResponseError::InvalidRequest.code(),
                    "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
                ));
                continue;
            }
            let node = broker.config.node_id;
            let mut indexes: Vec<i32> = t.assignments.iter().map(|a| a.partition_index).collect();
            indexes.sort_unstable();
            let contiguous = indexes.iter().enumerate().all(|(i, p)| *p == i as i32);
            let bad_broker = t
                .assignments
                .iter()
                .flat_map(|a| a.broker_ids.iter())
                .find(|b| b.0 != node);
            if !contiguous {
                results.push(fail(
                    ResponseError::InvalidReplicaAssignment.code(),
                    "Partitions should be a consecutive 0-based integer sequence".into(),
                ));
                continue;
            }
            if let Some(b) = bad_broker {
                results.push(fail(
                    ResponseError::InvalidReplicaAssignment.code(),
                    format!("Unknown broker {} in replica assignment", b.0),
                ));
                continue;
            }
            partitions = t.assignments.len() as i32;
            rf = t.assignments[0].broker_ids.len() as i16;
            if rf == 0 {
                results.push(fail(
                    ResponseError::InvalidReplicaAssignment.code(),
                    "Replica assignment is empty".into(),
                ));
                continue;
            }
        }
        let outcome = if req.validate_only {
            broker
                .check_new_topic(&name, partitions, rf, &configs)
                .map(|(p, r, cfg)| (p, r, cfg, uuid::Uuid::nil()))
        } else {
            broker
                .create_topic(&name, partitions, rf, configs)
                .await
                .map(|topic| {
                    (
                        topic.partitions.len() as i32,
                        1,
                        topic.config.clone(),
                        topic.id,
                    )
                })
        };
        match outcome {
            Ok((p, r, cfg, id)) => {
                let mut res = CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_topic_id(id)
                    .with_num_partitions(p)
                    .with_replication_factor(r);
                if version >= 5 {
                    res = res.with_configs(Some(result_configs(broker, &cfg)));
                }
                results.push(res);
            }
            Err(e) => {
                if !matches!(e, AdminError::TopicExists(_)) {
                    tracing::info!(topic = %name, "create topic refused: {e}");
                }
                results.push(fail(e.code(), e.to_string()));
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}
