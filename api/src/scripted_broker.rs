//! A broker for unit tests that answers each request as a test scripts it, on 127.0.0.1.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, MetadataResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One request, its header already read.
pub struct Request {
    pub api: ApiKey,
    pub version: i16,
    /// The request body.
    pub body: Bytes,
}

/// Starts a broker (node 1) that answers ApiVersions with `apis` and Metadata with itself
/// as the leader of each partition of `topics`; every other request goes to `answer`,
/// which encodes the response body into its buffer, or returns `false` to close the
/// connection. Returns the broker's address.
pub async fn start<F>(apis: &[(ApiKey, i16)], topics: &[(&str, i32)], answer: F) -> String
where
    F: Fn(Request, &mut BytesMut) -> bool + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut ranges: Vec<(ApiKey, i16)> = vec![(ApiKey::ApiVersions, 3), (ApiKey::Metadata, 12)];
    ranges.extend_from_slice(apis);
    let topics: Vec<(String, i32)> = topics.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (answer, ranges, topics) = (answer.clone(), ranges.clone(), topics.clone());
            tokio::spawn(async move {
                while let Ok(len) = s.read_i32().await {
                    let mut body = vec![0u8; len.max(0) as usize];
                    if s.read_exact(&mut body).await.is_err() || body.len() < 4 {
                        return;
                    }
                    let key = i16::from_be_bytes([body[0], body[1]]);
                    let version = i16::from_be_bytes([body[2], body[3]]);
                    let Ok(api) = ApiKey::try_from(key) else {
                        return;
                    };
                    let mut body = Bytes::from(body);
                    let header =
                        RequestHeader::decode(&mut body, api.request_header_version(version))
                            .unwrap();
                    let mut out = BytesMut::new();
                    ResponseHeader::default()
                        .with_correlation_id(header.correlation_id)
                        .encode(&mut out, api.response_header_version(version))
                        .unwrap();
                    match api {
                        ApiKey::ApiVersions => {
                            api_versions(&ranges).encode(&mut out, version).unwrap()
                        }
                        ApiKey::Metadata => {
                            metadata(port, &topics).encode(&mut out, version).unwrap()
                        }
                        api => {
                            if !answer(Request { api, version, body }, &mut out) {
                                return;
                            }
                        }
                    }
                    if s.write_i32(out.len() as i32).await.is_err()
                        || s.write_all(&out).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    format!("127.0.0.1:{port}")
}

fn api_versions(ranges: &[(ApiKey, i16)]) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        ranges
            .iter()
            .map(|(k, max)| {
                ApiVersion::default()
                    .with_api_key(*k as i16)
                    .with_min_version(0)
                    .with_max_version(*max)
            })
            .collect(),
    )
}

fn metadata(port: u16, topics: &[(String, i32)]) -> MetadataResponse {
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(port as i32),
        ])
        .with_controller_id(BrokerId(1))
        .with_topics(
            topics
                .iter()
                .map(|(name, n)| {
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                        .with_partitions(
                            (0..*n)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(1))
                                        .with_replica_nodes(vec![BrokerId(1)])
                                        .with_isr_nodes(vec![BrokerId(1)])
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}
