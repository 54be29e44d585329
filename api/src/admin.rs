//! The admin client: topics, partitions, configs, offsets, cluster, records deletion.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runnel_api::ClientError> {
//! use runnel_api::{Admin, NewTopic};
//!
//! let admin = Admin::connect("127.0.0.1:9092").await?;
//! admin.create_topics(&[NewTopic::new("orders", 6).config("retention.ms", "86400000")]).await?;
//! for t in admin.describe_topics(&["orders".into()]).await? {
//!     println!("{} has {} partitions", t.name, t.partitions.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, IncrementalAlterConfigsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{BrokerInfo, ClientConfig, Cluster, TopicInfo};
use crate::consumer::TopicPartition;
use crate::error::ClientError;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (-1: broker default).
    pub partitions: i32,
    /// Replication factor (-1: broker default).
    pub replication_factor: i16,
    /// Config overrides.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with `partitions` and the default replication factor.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: BTreeMap::new(),
        }
    }
    /// Sets the replication factor.
    pub fn replication_factor(mut self, rf: i16) -> Self {
        self.replication_factor = rf;
        self
    }
    /// Adds a config override.
    pub fn config(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.configs.insert(k.into(), v.into());
        self
    }
}

/// A config entry as DescribeConfigs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Name.
    pub name: String,
    /// Value.
    pub value: Option<String>,
    /// Kafka's config source code (1 topic override, 4 static broker, 5 default...).
    pub source: i8,
    /// Read-only?
    pub read_only: bool,
    /// Sensitive?
    pub sensitive: bool,
}

impl ConfigEntry {
    /// Whether the value is an explicit override of the resource (not a default).
    pub fn is_override(&self) -> bool {
        matches!(self.source, 1..=3)
    }
}

/// An IncrementalAlterConfigs operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterOp {
    /// Set a value.
    Set(String, String),
    /// Remove the override.
    Delete(String),
    /// Append to a list value.
    Append(String, String),
    /// Remove from a list value.
    Subtract(String, String),
}

/// Cluster description.
#[derive(Debug, Clone)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Controller broker id.
    pub controller: i32,
    /// Brokers.
    pub brokers: Vec<BrokerInfo>,
}

/// The admin client.
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

fn check(code: i16, message: Option<&StrBytes>, what: &str) -> Result<(), ClientError> {
    match ClientError::from_code(
        code,
        format!("{what}: {}", message.map(|m| m.as_str()).unwrap_or("")),
    ) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Admin {
    /// Connects to `bootstrap`.
    pub async fn connect(bootstrap: &str) -> Result<Self, ClientError> {
        Self::with_config(ClientConfig::new(bootstrap)).await
    }

    /// Connects with full settings.
    pub async fn with_config(config: ClientConfig) -> Result<Self, ClientError> {
        Ok(Self {
            cluster: Cluster::connect(config).await?,
        })
    }

    /// The shared cluster view.
    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    async fn controller(&self) -> Result<crate::net::BrokerConnection, ClientError> {
        let (_, controller) = self.cluster.cluster_id_and_controller().await;
        match self.cluster.connection(controller).await {
            Ok(c) => Ok(c),
            Err(_) => self.cluster.any_connection().await,
        }
    }

    /// Creates topics; fails on the first topic error.
    pub async fn create_topics(&self, topics: &[NewTopic]) -> Result<(), ClientError> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(TopicName(sb(&t.name)))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(sb(k))
                                            .with_value(Some(sb(v)))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = self.controller().await?.send(&req).await?;
        for t in &resp.topics {
            check(
                t.error_code,
                t.error_message.as_ref(),
                &format!("create topic {}", t.name.0.as_str()),
            )?;
        }
        Ok(())
    }

    /// Deletes topics.
    pub async fn delete_topics(&self, names: &[String]) -> Result<(), ClientError> {
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topic_names(names.iter().map(|n| TopicName(sb(n))).collect())
            .with_topics(
                names
                    .iter()
                    .map(|n| DeleteTopicState::default().with_name(Some(TopicName(sb(n)))))
                    .collect(),
            );
        let resp = self.controller().await?.send(&req).await?;
        for r in &resp.responses {
            let name = r
                .name
                .as_ref()
                .map(|n| n.0.as_str().to_string())
                .unwrap_or_default();
            check(
                r.error_code,
                r.error_message.as_ref(),
                &format!("delete topic {name}"),
            )?;
            self.cluster.invalidate(&name).await;
        }
        Ok(())
    }

    /// Names of all topics.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .all_topics()
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    async fn all_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        self.cluster.refresh(None).await?;
        let mut out = Vec::new();
        // After a full refresh every topic is cached; read them back one by one.
        let conn = self.cluster.any_connection().await?;
        let resp = conn
            .send(&kafka_protocol::messages::MetadataRequest::default().with_topics(None))
            .await?;
        for t in resp.topics {
            if let Some(n) = t.name {
                out.push(self.cluster.topic(n.0.as_str()).await?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Partitions, leaders, replicas and ISR of topics.
    pub async fn describe_topics(&self, names: &[String]) -> Result<Vec<TopicInfo>, ClientError> {
        let mut out = Vec::new();
        for n in names {
            self.cluster.invalidate(n).await;
            out.push(self.cluster.topic(n).await?);
        }
        Ok(out)
    }

    /// Grows a topic to `count` partitions.
    pub async fn create_partitions(&self, topic: &str, count: i32) -> Result<(), ClientError> {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(TopicName(sb(topic)))
                    .with_count(count),
            ]);
        let resp = self.controller().await?.send(&req).await?;
        for r in &resp.results {
            check(
                r.error_code,
                r.error_message.as_ref(),
                &format!("create partitions for {topic}"),
            )?;
        }
        self.cluster.invalidate(topic).await;
        Ok(())
    }

    /// A topic's configs (all of them, with sources).
    pub async fn describe_topic_configs(
        &self,
        topic: &str,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        self.describe_configs(2, topic).await
    }

    /// A broker's configs.
    pub async fn describe_broker_configs(
        &self,
        broker_id: i32,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        self.describe_configs(4, &broker_id.to_string()).await
    }

    async fn describe_configs(
        &self,
        resource_type: i8,
        name: &str,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(sb(name))
                .with_configuration_keys(None),
        ]);
        let resp = self.cluster.any_connection().await?.send(&req).await?;
        let r = resp
            .results
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeConfigs".into()))?;
        check(
            r.error_code,
            r.error_message.as_ref(),
            &format!("describe configs of {name}"),
        )?;
        Ok(r.configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.as_str().to_string(),
                value: c.value.map(|v| v.as_str().to_string()),
                source: c.config_source,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect())
    }

    /// Changes a topic's configs.
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        ops: &[AlterOp],
    ) -> Result<(), ClientError> {
        let configs = ops
            .iter()
            .map(|op| {
                let (name, op_code, value) = match op {
                    AlterOp::Set(k, v) => (k, 0, Some(v)),
                    AlterOp::Delete(k) => (k, 1, None),
                    AlterOp::Append(k, v) => (k, 2, Some(v)),
                    AlterOp::Subtract(k, v) => (k, 3, Some(v)),
                };
                AlterableConfig::default()
                    .with_name(sb(name))
                    .with_config_operation(op_code)
                    .with_value(value.map(|v| sb(v)))
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(sb(topic))
                .with_configs(configs),
        ]);
        let resp = self.cluster.any_connection().await?.send(&req).await?;
        for r in &resp.responses {
            check(
                r.error_code,
                r.error_message.as_ref(),
                &format!("alter configs of {topic}"),
            )?;
        }
        Ok(())
    }

    /// ListOffsets for each partition: -1 latest, -2 earliest, -3 max timestamp, or a
    /// timestamp. Returns (offset, timestamp) per partition.
    pub async fn list_offsets(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, i64, i64)>, ClientError> {
        let mut out = Vec::new();
        for (tp, ts) in query {
            let (offset, timestamp) = self
                .cluster
                .list_offset(&tp.topic, tp.partition, *ts, 0)
                .await?;
            out.push((tp.clone(), offset, timestamp));
        }
        Ok(out)
    }

    /// Deletes records below `offset` (-1: the high watermark); returns the new low watermarks.
    pub async fn delete_records(
        &self,
        query: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, i64)>, ClientError> {
        let mut out = Vec::new();
        for (tp, offset) in query {
            let conn = self
                .cluster
                .leader_connection(&tp.topic, tp.partition)
                .await?;
            let req = DeleteRecordsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    DeleteRecordsTopic::default()
                        .with_name(TopicName(sb(&tp.topic)))
                        .with_partitions(vec![
                            DeleteRecordsPartition::default()
                                .with_partition_index(tp.partition)
                                .with_offset(*offset),
                        ]),
                ]);
            let resp = conn.send(&req).await?;
            let p = resp
                .topics
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| ClientError::Protocol("empty DeleteRecords".into()))?;
            check(
                p.error_code,
                None,
                &format!("delete records {}-{}", tp.topic, tp.partition),
            )?;
            out.push((tp.clone(), p.low_watermark));
        }
        Ok(out)
    }

    /// Cluster id, controller and brokers.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        self.cluster.refresh(Some(&[])).await?;
        let (cluster_id, controller) = self.cluster.cluster_id_and_controller().await;
        Ok(ClusterDescription {
            cluster_id,
            controller,
            brokers: self.cluster.brokers().await,
        })
    }
}
