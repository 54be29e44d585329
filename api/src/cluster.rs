//! Cluster metadata and connections: discovery from any bootstrap broker, a connection per
//! broker, refresh when a broker says it no longer leads a partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex;

use crate::error::ClientError;
use crate::net::BrokerConnection;

/// Settings shared by every client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: Vec<String>,
    /// `client.id`.
    pub client_id: String,
    /// `request.timeout.ms`.
    pub request_timeout: Duration,
    /// `retry.backoff.ms`.
    pub retry_backoff: Duration,
    /// `metadata.max.age.ms`.
    pub metadata_max_age: Duration,
}

impl ClientConfig {
    /// Config for `bootstrap` (comma-separated `host:port` list).
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap_servers: bootstrap
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            client_id: "runnel".into(),
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            metadata_max_age: Duration::from_secs(300),
        }
    }

    /// Applies a Kafka client property; returns false if the key is not a common one.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, ClientError> {
        let ms = || {
            value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    ClientError::Config(format!("{key}={value}: not a number of milliseconds"))
                })
        };
        match key {
            "bootstrap.servers" => {
                *self = Self {
                    client_id: self.client_id.clone(),
                    ..Self::new(value)
                }
            }
            "client.id" => self.client_id = value.to_string(),
            "request.timeout.ms" => self.request_timeout = ms()?,
            "retry.backoff.ms" => self.retry_backoff = ms()?,
            "metadata.max.age.ms" => self.metadata_max_age = ms()?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// One partition's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader broker id (-1 if none).
    pub leader: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica broker ids.
    pub replicas: Vec<i32>,
    /// In-sync replica broker ids.
    pub isr: Vec<i32>,
    /// Error code for this partition.
    pub error_code: i16,
}

/// One topic's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Topic id.
    pub id: uuid::Uuid,
    /// Internal topic?
    pub is_internal: bool,
    /// Partitions, by index.
    pub partitions: Vec<PartitionInfo>,
}

/// A broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Broker id.
    pub id: i32,
    /// `host:port`.
    pub addr: String,
    /// Rack.
    pub rack: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    brokers: HashMap<i32, BrokerInfo>,
    topics: HashMap<String, TopicInfo>,
    cluster_id: Option<String>,
    controller: i32,
    refreshed: Option<Instant>,
}

/// Shared metadata and connections.
#[derive(Debug)]
pub struct Cluster {
    config: ClientConfig,
    state: Mutex<State>,
    conns: Mutex<HashMap<String, BrokerConnection>>,
    /// Bumped whenever topic metadata changes (a refresh or an invalidation), so callers
    /// may cache what they read until it moves.
    generation: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// Creates a cluster view and loads metadata from a bootstrap broker.
    pub async fn connect(config: ClientConfig) -> Result<Arc<Self>, ClientError> {
        if config.bootstrap_servers.is_empty() {
            return Err(ClientError::Config("bootstrap.servers is empty".into()));
        }
        let c = Arc::new(Self {
            config,
            state: Mutex::new(State::default()),
            conns: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        });
        c.refresh(Some(&[])).await?;
        Ok(c)
    }

    /// Client settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A connection to `addr`, opened (or reopened) as needed.
    pub async fn connection_to(&self, addr: &str) -> Result<BrokerConnection, ClientError> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(addr)
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let c =
            BrokerConnection::connect(addr, &self.config.client_id, self.config.request_timeout)
                .await?;
        conns.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A connection to broker `id`.
    pub async fn connection(&self, id: i32) -> Result<BrokerConnection, ClientError> {
        let addr = self
            .state
            .lock()
            .await
            .brokers
            .get(&id)
            .map(|b| b.addr.clone())
            .ok_or_else(|| ClientError::Protocol(format!("unknown broker id {id}")))?;
        self.connection_to(&addr).await
    }

    /// A connection to any reachable broker (known ones first, then bootstrap).
    pub async fn any_connection(&self) -> Result<BrokerConnection, ClientError> {
        let mut addrs: Vec<String> = self
            .state
            .lock()
            .await
            .brokers
            .values()
            .map(|b| b.addr.clone())
            .collect();
        addrs.sort();
        addrs.extend(self.config.bootstrap_servers.iter().cloned());
        let mut last = ClientError::Disconnected;
        for a in addrs {
            match self.connection_to(&a).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reloads metadata: for `topics` (None: all topics; empty: brokers only).
    pub async fn refresh(&self, topics: Option<&[String]>) -> Result<(), ClientError> {
        self.refresh_with(topics, false).await
    }

    /// Reloads metadata, letting the broker auto-create the named topics if it does so.
    pub async fn refresh_with(
        &self,
        topics: Option<&[String]>,
        auto_create: bool,
    ) -> Result<(), ClientError> {
        let conn = self.any_connection().await?;
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(auto_create);
        let resp = conn.send(&req).await?;
        let mut st = self.state.lock().await;
        st.brokers = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerInfo {
                        id: b.node_id.0,
                        addr: format!("{}:{}", b.host.as_str(), b.port),
                        rack: b.rack.as_ref().map(|r| r.as_str().to_string()),
                    },
                )
            })
            .collect();
        st.cluster_id = resp.cluster_id.as_ref().map(|c| c.as_str().to_string());
        st.controller = resp.controller_id.0;
        if topics.is_none() {
            st.topics.clear();
        }
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.as_str().to_string()) else {
                continue;
            };
            if t.error_code != 0 {
                st.topics.remove(&name);
                continue;
            }
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            st.topics.insert(
                name.clone(),
                TopicInfo {
                    name,
                    id: t.topic_id,
                    is_internal: t.is_internal,
                    partitions,
                },
            );
        }
        st.refreshed = Some(Instant::now());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Changes whenever topic metadata may have changed: what was read from it under an
    /// older generation may be stale.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A topic's metadata, loading it if unknown or stale.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        {
            let st = self.state.lock().await;
            let fresh = st
                .refreshed
                .is_some_and(|t| t.elapsed() < self.config.metadata_max_age);
            if fresh && let Some(t) = st.topics.get(name) {
                return Ok(t.clone());
            }
        }
        self.refresh(Some(&[name.to_string()])).await?;
        self.state
            .lock()
            .await
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic(name.to_string()))
    }

    /// How many partitions `name` has, fetching its metadata (which auto-creates it where
    /// the broker allows) when unknown: the producer's per-record lookup, without a copy.
    pub async fn partition_count_or_create(&self, name: &str) -> Result<usize, ClientError> {
        if let Some(t) = self.state.lock().await.topics.get(name) {
            return Ok(t.partitions.len());
        }
        Ok(self.topic_or_create(name).await?.partitions.len())
    }

    /// Like [`Cluster::topic`], letting the broker auto-create it (as producers do): a
    /// topic's metadata, fetched when unknown.
    pub async fn topic_or_create(&self, name: &str) -> Result<TopicInfo, ClientError> {
        if let Some(t) = self.state.lock().await.topics.get(name) {
            return Ok(t.clone());
        }
        self.refresh_with(Some(&[name.to_string()]), true).await?;
        self.state
            .lock()
            .await
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic(name.to_string()))
    }

    /// A connection to the leader of `topic`-`partition`.
    pub async fn leader_connection(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<BrokerConnection, ClientError> {
        let t = self.topic(topic).await?;
        let leader = t
            .partitions
            .get(partition as usize)
            .map(|p| p.leader)
            .ok_or_else(|| ClientError::Broker {
                code: 3,
                message: format!("{topic}-{partition} does not exist"),
            })?;
        self.connection(leader).await
    }

    /// ListOffsets for one partition at `timestamp` (-1 latest, -2 earliest, -3 max
    /// timestamp, or a time): (offset, timestamp), -1s when nothing matches.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        isolation_level: i8,
    ) -> Result<(i64, i64), ClientError> {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};
        let conn = self.leader_connection(topic, partition).await?;
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(timestamp),
                    ]),
            ]);
        let resp = conn.send(&req).await?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty ListOffsets response".into()))?;
        if let Some(e) =
            ClientError::from_code(p.error_code, format!("list offsets {topic}-{partition}"))
        {
            return Err(e);
        }
        Ok((p.offset, p.timestamp))
    }

    /// Forgets a topic so the next lookup reloads it.
    pub async fn invalidate(&self, topic: &str) {
        self.state.lock().await.topics.remove(topic);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Known brokers.
    pub async fn brokers(&self) -> Vec<BrokerInfo> {
        let mut b: Vec<_> = self.state.lock().await.brokers.values().cloned().collect();
        b.sort_by_key(|b| b.id);
        b
    }

    /// Cluster id and controller id.
    pub async fn cluster_id_and_controller(&self) -> (Option<String>, i32) {
        let st = self.state.lock().await;
        (st.cluster_id.clone(), st.controller)
    }
}
