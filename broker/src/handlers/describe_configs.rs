//! DescribeConfigs for topics, this broker and its loggers.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::sb;
use crate::broker::Broker;
use crate::config::TOPIC_CONFIG_KEYS;

/// Resource type TOPIC.
pub const RESOURCE_TOPIC: i8 = 2;
/// Resource type BROKER.
pub const RESOURCE_BROKER: i8 = 4;
/// Resource type BROKER_LOGGER.
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
/// Config source: a broker logger's level.
pub const CONFIG_SOURCE_BROKER_LOGGER: i8 = 6;
/// Config source: a topic override.
pub const CONFIG_SOURCE_TOPIC: i8 = 1;
/// Config source: the broker's static config file.
pub const CONFIG_SOURCE_STATIC_BROKER: i8 = 4;
/// Config source: a built-in default.
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// Kafka's config type STRING.
const CONFIG_TYPE_STRING: i8 = 2;

/// Kafka's config type codes.
fn config_type(key: &str) -> i8 {
    const BOOLEAN: i8 = 1;
    const STRING: i8 = CONFIG_TYPE_STRING;
    const INT: i8 = 3;
    const LONG: i8 = 5;
    const DOUBLE: i8 = 6;
    const LIST: i8 = 7;
    match key {
        "cleanup.policy"
        | "listeners"
        | "advertised.listeners"
        | "log.dirs"
        | "log.cleanup.policy" => LIST,
        "compression.type" | "message.timestamp.type" | "log.message.timestamp.type" => STRING,
        "preallocate"
        | "unclean.leader.election.enable"
        | "auto.create.topics.enable"
        | "delete.topic.enable" => BOOLEAN,
        "min.cleanable.dirty.ratio" => DOUBLE,
        "max.message.bytes"
        | "compression.gzip.level"
        | "compression.lz4.level"
        | "compression.zstd.level"
        | "min.insync.replicas"
        | "segment.bytes"
        | "segment.index.bytes"
        | "index.interval.bytes"
        | "num.partitions"
        | "node.id"
        | "broker.id"
        | "message.max.bytes"
        | "socket.request.max.bytes"
        | "log.index.interval.bytes"
        | "log.index.size.max.bytes"
        | "default.replication.factor" => INT,
        _ => LONG,
    }
}

/// The broker key a topic key defaults from.
fn broker_synonym(key: &str) -> Option<&'static str> {
    TOPIC_CONFIG_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, b)| *b)
}

/// Where a non-overridden topic config's value comes from.
pub fn default_source(broker: &Broker, topic_key: &str) -> Option<i8> {
    let b = broker_synonym(topic_key)?;
    Some(if broker.config.explicit.contains_key(b) {
        CONFIG_SOURCE_STATIC_BROKER
    } else {
        CONFIG_SOURCE_DEFAULT
    })
}

fn entry(
    name: &str,
    value: &str,
    source: i8,
    synonyms: Vec<DescribeConfigsSynonym>,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(sb(name))
        .with_value(Some(sb(value)))
        .with_read_only(false)
        .with_config_source(source)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(config_type(name))
}

fn wanted(keys: &Option<Vec<kafka_protocol::protocol::StrBytes>>, name: &str) -> bool {
    match keys {
        None => true,
        Some(k) => k.iter().any(|x| x.as_str() == name),
    }
}

/// Answers DescribeConfigs.
pub fn handle(
    broker: &Broker,
    req: DescribeConfigsRequest,
    _version: i16,
) -> DescribeConfigsResponse {
    let mut results = Vec::new();
    for r in req.resources {
        let name = r.resource_name.as_str().to_string();
        let base = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        match r.resource_type {
            RESOURCE_TOPIC => {
                let Some(topic) = broker.topic(&name) else {
                    results.push(
                        base.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(sb(&format!(
                                "Topic '{name}' does not exist."
                            )))),
                    );
                    continue;
                };
                let configs = topic
                    .config
                    .describe()
                    .into_iter()
                    .filter(|(k, _, _)| wanted(&r.configuration_keys, k))
                    .map(|(k, v, overridden)| {
                        let dflt = default_source(broker, k).unwrap_or(CONFIG_SOURCE_DEFAULT);
                        let source = if overridden {
                            CONFIG_SOURCE_TOPIC
                        } else {
                            dflt
                        };
                        let mut synonyms = Vec::new();
                        if req.include_synonyms {
                            if overridden {
                                synonyms.push(
                                    DescribeConfigsSynonym::default()
                                        .with_name(sb(k))
                                        .with_value(Some(sb(&v)))
                                        .with_source(CONFIG_SOURCE_TOPIC),
                                );
                            }
                            if let Some(b) = broker_synonym(k) {
                                let bval = broker.config.explicit.get(b).cloned();
                                if let Some(bv) = &bval {
                                    synonyms.push(
                                        DescribeConfigsSynonym::default()
                                            .with_name(sb(b))
                                            .with_value(Some(sb(bv)))
                                            .with_source(CONFIG_SOURCE_STATIC_BROKER),
                                    );
                                }
                            }
                        }
                        entry(k, &v, source, synonyms)
                    })
                    .collect();
                results.push(base.with_configs(configs));
            }
            RESOURCE_BROKER => {
                if !name.is_empty() && name != broker.config.node_id.to_string() {
                    results.push(
                        base.with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(sb(&format!(
                                "Unexpected broker id, expected {} or empty string, but received {name}",
                                broker.config.node_id
                            )))),
                    );
                    continue;
                }
                let configs = broker
                    .config
                    .describe()
                    .into_iter()
                    .filter(|(k, _, _)| wanted(&r.configuration_keys, k))
                    .map(|(k, v, explicit)| {
                        let source = if explicit {
                            CONFIG_SOURCE_STATIC_BROKER
                        } else {
                            CONFIG_SOURCE_DEFAULT
                        };
                        entry(&k, &v, source, vec![])
                    })
                    .collect();
                results.push(base.with_configs(configs));
            }
            RESOURCE_BROKER_LOGGER => {
                let levels = if name != broker.config.node_id.to_string() {
                    Err(format!(
                        "Unexpected broker id, expected {}",
                        broker.config.node_id
                    ))
                } else {
                    crate::loggers::current()
                        .ok_or_else(|| "This broker's loggers are not configurable".to_string())
                };
                let levels = match levels {
                    Ok(l) => l,
                    Err(msg) => {
                        results.push(
                            base.with_error_code(ResponseError::InvalidRequest.code())
                                .with_error_message(Some(sb(&msg))),
                        );
                        continue;
                    }
                };
                let configs = levels
                    .describe()
                    .into_iter()
                    .filter(|(k, _)| wanted(&r.configuration_keys, k))
                    .map(|(k, v)| {
                        entry(&k, &v, CONFIG_SOURCE_BROKER_LOGGER, vec![])
                            .with_config_type(CONFIG_TYPE_STRING)
                    })
                    .collect();
                results.push(base.with_configs(configs));
            }
            other => results.push(
                base.with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(sb(&format!(
                        "Resource type {other} is not supported by DescribeConfigs on this broker"
                    )))),
            ),
        }
    }
    DescribeConfigsResponse::default().with_results(results)
}
