//! IncrementalAlterConfigs for topic configs: SET, DELETE, APPEND, SUBTRACT; for broker
//! configs only DELETE (none has a dynamic value); for broker loggers SET and DELETE of
//! their levels (see `crate::loggers`).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC};
use super::sb;
use crate::broker::Broker;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// Topic keys whose values are lists (APPEND/SUBTRACT apply).
const LIST_KEYS: &[&str] = &["cleanup.policy"];

/// Answers IncrementalAlterConfigs.
pub async fn handle(
    broker: &Arc<Broker>,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for r in req.resources {
        let name = r.resource_name.as_str().to_string();
        let base = AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let fail = |code: i16, msg: String| {
            base.clone()
                .with_error_code(code)
                .with_error_message(Some(sb(&msg)))
        };
        match r.resource_type {
            RESOURCE_TOPIC => {}
            RESOURCE_BROKER => {
                // No broker config has a dynamic value here, so deleting them is the no-op
                // Kafka answers with success: what `kafka-reassign-partitions --verify`
                // does to clear replication throttles.
                let this_broker = name.is_empty() || name == broker.config.node_id.to_string();
                let only_deletes = r.configs.iter().all(|c| c.config_operation == OP_DELETE);
                responses.push(if !this_broker {
                    fail(
                        ResponseError::InvalidRequest.code(),
                        format!("Unexpected broker id, expected {}", broker.config.node_id),
                    )
                } else if only_deletes {
                    base
                } else {
                    fail(
                        ResponseError::InvalidRequest.code(),
                        "Dynamic broker configs are not supported yet; set them in server.properties"
                            .into(),
                    )
                });
                continue;
            }
            RESOURCE_BROKER_LOGGER => {
                if name != broker.config.node_id.to_string() {
                    responses.push(fail(
                        ResponseError::InvalidRequest.code(),
                        format!("Unexpected broker id, expected {}", broker.config.node_id),
                    ));
                    continue;
                }
                let changed = crate::loggers::update(req.validate_only, |levels| {
                    for c in &r.configs {
                        let logger = c.name.as_str();
                        match (c.config_operation, c.value.as_ref()) {
                            (OP_SET, Some(v)) => levels.set(logger, v.as_str())?,
                            (OP_SET, None) => {
                                return Err(format!("Null value not supported for : {logger}"));
                            }
                            (OP_DELETE, _) => levels.delete(logger)?,
                            (op, _) => {
                                return Err(format!(
                                    "Operation {op} is not supported for broker loggers: only SET and DELETE"
                                ));
                            }
                        }
                    }
                    Ok(())
                });
                responses.push(match changed {
                    Ok(()) => {
                        if !req.validate_only {
                            tracing::info!(
                                loggers = %r.configs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(","),
                                "log levels changed"
                            );
                        }
                        base
                    }
                    Err(msg) => fail(ResponseError::InvalidConfig.code(), msg),
                });
                continue;
            }
            other => {
                responses.push(fail(
                    ResponseError::InvalidRequest.code(),
                    format!("Resource type {other} is not supported by IncrementalAlterConfigs"),
                ));
                continue;
            }
        }
        let Some(topic) = broker.topic(&name) else {
            responses.push(fail(
                ResponseError::UnknownTopicOrPartition.code(),
                format!("Topic '{name}' does not exist."),
            ));
            continue;
        };
        let mut overrides = topic.config.overrides.clone();
        let mut error = None;
        for c in &r.configs {
            let key = c.name.as_str().to_string();
            let value = c.value.as_ref().map(|v| v.as_str().to_string());
            match c.config_operation {
                OP_SET => match value {
                    Some(v) => {
                        overrides.insert(key, v);
                    }
                    None => error = Some(format!("Null value not supported for : {key}")),
                },
                OP_DELETE => {
                    overrides.remove(&key);
                }
                OP_APPEND | OP_SUBTRACT => {
                    if !LIST_KEYS.contains(&key.as_str()) {
                        error = Some(format!(
                            "Config value append is not allowed for config key: {key}"
                        ));
                        break;
                    }
                    let current = overrides
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| topic.config.cleanup_policy.clone());
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    for v in value
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                    {
                        if c.config_operation == OP_APPEND {
                            if !items.iter().any(|i| i == v) {
                                items.push(v.to_string());
                            }
                        } else {
                            items.retain(|i| i != v);
                        }
                    }
                    overrides.insert(key, items.join(","));
                }
                op => {
                    error = Some(format!("Unknown config operation {op}"));
                    break;
                }
            }
        }
        if let Some(msg) = error {
            responses.push(fail(ResponseError::InvalidConfig.code(), msg));
            continue;
        }
        match broker
            .set_topic_config(&name, overrides, req.validate_only)
            .await
        {
            Ok(()) => responses.push(base),
            Err(e) => responses.push(fail(e.code(), e.to_string())),
        }
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
