#![allow(clippy::unwrap_used)] // tests fail loudly by design
//! The broker over real sockets, driven request by request with the protocol crate's
//! types: what a Kafka client sends, what it must get back.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use runnel_api::Connection;
use runnel_broker::server::{self, RunningServer};
use runnel_broker::{Broker, BrokerConfig};

struct TestBroker {
    addr: String,
    dir: std::path::PathBuf,
    running: Option<RunningServer>,
    extra: Vec<(String, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestBroker {
    async fn start(dir: &std::path::Path, extra: &[(&str, &str)]) -> Self {
        let mut t = TestBroker {
            addr: String::new(),
            dir: dir.to_path_buf(),
            running: None,
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        t.boot().await;
        t
    }

    async fn boot(&mut self) {
        let port = free_port();
        let mut pairs = vec![
            (
                "listeners".to_string(),
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            ("log.dirs".to_string(), self.dir.display().to_string()),
        ];
        pairs.extend(self.extra.clone());
        let broker = Broker::open(BrokerConfig::from_pairs(&pairs).unwrap()).unwrap();
        let running = server::start(broker).await.unwrap();
        self.addr = running.local_addrs[0].to_string();
        self.running = Some(running);
    }

    async fn restart(&mut self) {
        self.running.take().unwrap().shutdown().await.unwrap();
        self.boot().await;
    }

    async fn conn(&self) -> Connection {
        Connection::connect(&self.addr, "runnel-test")
            .await
            .unwrap()
    }
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// Record timestamps are `base() + ts`: recent, so time retention (7 days by default)
/// leaves them alone, as it would a real producer's.
fn base() -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| runnel_broker::broker::now_ms() - 60_000)
}

fn batch(n: usize, compression: Compression, ts: i64) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32 - 1,
            timestamp: base() + ts + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: [(s("h"), Some(Bytes::from_static(b"v")))]
                .into_iter()
                .collect(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

async fn create_topic(
    c: &mut Connection,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> CreatableTopicResult {
    let topic = CreatableTopic::default()
        .with_name(TopicName(s(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        );
    let resp = c
        .send(
            CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(5000),
            7,
        )
        .await
        .unwrap();
    resp.topics.into_iter().next().unwrap()
}

async fn produce(
    c: &mut Connection,
    topic: &str,
    partition: i32,
    records: Bytes,
    version: i16,
    topic_id: uuid::Uuid,
) -> PartitionProduceResponse {
    let td = TopicProduceData::default()
        .with_name(TopicName(s(if version >= 13 { "" } else { topic })))
        .with_topic_id(if version >= 13 {
            topic_id
        } else {
            uuid::Uuid::nil()
        })
        .with_partition_data(vec![
            PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records)),
        ]);
    let resp = c
        .send(
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![td]),
            version,
        )
        .await
        .unwrap();
    resp.responses
        .into_iter()
        .next()
        .unwrap()
        .partition_responses
        .into_iter()
        .next()
        .unwrap()
}

fn fetch_request(
    topic: &str,
    topic_id: uuid::Uuid,
    version: i16,
    offset: i64,
    max_wait_ms: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s(if version >= 13 { "" } else { topic })))
                .with_topic_id(if version >= 13 {
                    topic_id
                } else {
                    uuid::Uuid::nil()
                })
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

fn decode_records(bytes: &Option<Bytes>) -> Vec<Record> {
    let mut b = bytes.clone().unwrap_or_default();
    RecordBatchDecoder::decode_all(&mut b)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .collect()
}

#[tokio::test]
async fn api_versions_advertises_kafka_4_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    let resp = c
        .send(
            ApiVersionsRequest::default()
                .with_client_software_name(s("t"))
                .with_client_software_version(s("1")),
            4,
        )
        .await
        .unwrap();
    assert_eq!(resp.error_code, 0);
    let range = |k: ApiKey| {
        resp.api_keys
            .iter()
            .find(|a| a.api_key == k as i16)
            .map(|a| (a.min_version, a.max_version))
    };
    assert_eq!(range(ApiKey::Produce), Some((0, 13)));
    assert_eq!(range(ApiKey::Fetch), Some((4, 18)));
    assert_eq!(range(ApiKey::Metadata), Some((0, 13)));
    assert_eq!(range(ApiKey::JoinGroup), Some((0, 9)));
    assert_eq!(range(ApiKey::AddPartitionsToTxn), Some((0, 5)));
    assert_eq!(range(ApiKey::EndTxn), Some((0, 5)));
    assert_eq!(range(ApiKey::DescribeAcls), Some((1, 3)));
    assert_eq!(
        range(ApiKey::DescribeUserScramCredentials),
        None,
        "unimplemented APIs are not advertised"
    );
}

#[tokio::test]
async fn too_new_api_versions_gets_a_v0_unsupported_version_answer_listing_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    // ApiVersions v99 with a flexible (v2) header: key, version, correlation, client id, tags.
    let mut frame = BytesMut::new();
    frame.put_i16(18);
    frame.put_i16(99);
    frame.put_i32(42);
    frame.put_i16(1);
    frame.put_u8(b'x');
    frame.put_u8(0);
    frame.put_u8(0); // body: just empty tagged fields
    let mut wire = BytesMut::new();
    wire.put_i32(frame.len() as i32);
    wire.extend_from_slice(&frame);
    c.send_raw(&wire).await.unwrap();
    let (correlation, mut body) = c.read_raw_response().await.unwrap();
    assert_eq!(correlation, 42);
    let resp =
        <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, ResponseError::UnsupportedVersion.code());
    assert!(
        resp.api_keys
            .iter()
            .any(|a| a.api_key == 18 && a.max_version == 4)
    );
}

#[tokio::test]
async fn records_round_trip_at_old_and_new_versions_including_topic_ids() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    let created = create_topic(&mut c, "roundtrip", 1, &[]).await;
    assert_eq!(created.error_code, 0, "{:?}", created.error_message);
    let id = created.topic_id;
    assert!(!id.is_nil(), "topic id assigned at creation");
    let mut expected = 0;
    for (i, (pv, codec)) in [
        (3, Compression::None),
        (9, Compression::Gzip),
        (12, Compression::Snappy),
        (13, Compression::Lz4),
        (13, Compression::Zstd),
    ]
    .into_iter()
    .enumerate()
    {
        let r = produce(
            &mut c,
            "roundtrip",
            0,
            batch(3, codec, 1000 * i as i64),
            pv,
            id,
        )
        .await;
        assert_eq!(r.error_code, 0, "produce v{pv}: {:?}", r.error_message);
        assert_eq!(r.base_offset, expected, "produce v{pv}");
        expected += 3;
    }
    for fv in [4, 11, 12, 13, 18] {
        let resp = c
            .send(fetch_request("roundtrip", id, fv, 0, 0), fv)
            .await
            .unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch v{fv}");
        assert_eq!(p.high_watermark, 15);
        let recs = decode_records(&p.records);
        assert_eq!(recs.len(), 15, "fetch v{fv}");
        assert_eq!(
            recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..15).collect::<Vec<_>>()
        );
        assert_eq!(recs[4].key.as_deref(), Some(&b"key-1"[..]));
        assert_eq!(
            recs[4].headers.get(&s("h")).cloned().flatten().as_deref(),
            Some(&b"v"[..])
        );
        if fv >= 13 {
            assert_eq!(resp.responses[0].topic_id, id);
        }
    }
}

/// Kafka's checks of a partition's records before validation: zstd needs Produce v7 and a
/// partition takes one batch per request. Refused data is not written.
#[tokio::test]
async fn zstd_needs_produce_v7_and_a_partition_takes_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    let nil = uuid::Uuid::nil();
    assert_eq!(create_topic(&mut c, "z", 1, &[]).await.error_code, 0);
    let old = produce(&mut c, "z", 0, batch(2, Compression::Zstd, 0), 6, nil).await;
    assert_eq!(
        old.error_code,
        ResponseError::UnsupportedCompressionType.code()
    );
    // Other codecs are fine at v6, zstd from v7.
    let lz4 = produce(&mut c, "z", 0, batch(2, Compression::Lz4, 0), 6, nil).await;
    assert_eq!((lz4.error_code, lz4.base_offset), (0, 0));
    let v7 = produce(&mut c, "z", 0, batch(2, Compression::Zstd, 0), 7, nil).await;
    assert_eq!((v7.error_code, v7.base_offset), (0, 2));

    let mut two = batch(1, Compression::None, 0).to_vec();
    two.extend_from_slice(&batch(1, Compression::None, 0));
    let two = produce(&mut c, "z", 0, Bytes::from(two), 9, nil).await;
    assert_eq!(two.error_code, ResponseError::InvalidRecord.code());
    let msg = two.error_message.map(|m| m.to_string()).unwrap_or_default();
    assert!(msg.contains("exactly one record batch"), "{msg}");
    // A cut-off tail is still a corrupt batch, not a second one.
    let mut tail = batch(1, Compression::None, 0).to_vec();
    tail.extend_from_slice(&batch(1, Compression::None, 0)[..30]);
    let tail = produce(&mut c, "z", 0, Bytes::from(tail), 9, nil).await;
    assert_eq!(tail.error_code, ResponseError::CorruptMessage.code());

    // A `producer` topic's zstd batch goes out as stored, even at v9.
    let resp = c.send(fetch_request("z", nil, 9, 0, 0), 9).await.unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.error_code, p.high_watermark), (0, 4));
    assert_eq!(decode_records(&p.records).len(), 4);

    assert_eq!(
        create_topic(&mut c, "zt", 1, &[("compression.type", "zstd")])
            .await
            .error_code,
        0
    );
    let plain = produce(&mut c, "zt", 0, batch(3, Compression::None, 0), 9, nil).await;
    assert_eq!(plain.error_code, 0, "{:?}", plain.error_message);
    // Kafka 4 dropped its refusal of zstd topics to Fetch below v10 with down-conversion:
    // Kafka 4.1.1 serves them to v9 as stored, and so does Runnel.
    for fv in [9, 10] {
        let resp = c
            .send(fetch_request("zt", nil, fv, 0, 0), fv)
            .await
            .unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch v{fv}");
        assert_eq!(decode_records(&p.records).len(), 3, "fetch v{fv}");
        let stored = p.records.as_ref().unwrap();
        assert_eq!(
            i16::from_be_bytes([stored[21], stored[22]]) & 7,
            4,
            "stored as zstd"
        );
    }
}

#[tokio::test]
async fn a_waiting_fetch_is_woken_by_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    create_topic(&mut c, "wake", 1, &[]).await;
    let mut waiter = b.conn().await;
    // Long poll far longer than the test waits: only a wake-up can return data in time.
    let fetch = tokio::spawn(async move {
        waiter
            .send(fetch_request("wake", uuid::Uuid::nil(), 12, 0, 25_000), 12)
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fetch.is_finished(),
        "an empty fetch with max_wait must wait"
    );
    produce(
        &mut c,
        "wake",
        0,
        batch(2, Compression::None, 0),
        9,
        uuid::Uuid::nil(),
    )
    .await;
    let resp = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(
        decode_records(&resp.responses[0].partitions[0].records).len(),
        2
    );
}

#[tokio::test]
async fn errors_carry_kafka_codes() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    assert_eq!(
        create_topic(&mut c, "bad name!", 1, &[]).await.error_code,
        ResponseError::InvalidTopicException.code()
    );
    assert_eq!(
        create_topic(&mut c, "zero", 0, &[]).await.error_code,
        ResponseError::InvalidPartitions.code()
    );
    assert_eq!(
        create_topic(&mut c, "cfg", 1, &[("retention.ms", "soon")])
            .await
            .error_code,
        ResponseError::InvalidConfig.code()
    );
    assert_eq!(
        create_topic(&mut c, "cfg", 1, &[("no.such.config", "1")])
            .await
            .error_code,
        ResponseError::InvalidConfig.code()
    );
    let rf3 = c
        .send(
            CreateTopicsRequest::default().with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(s("rf3")))
                    .with_num_partitions(1)
                    .with_replication_factor(3),
            ]),
            7,
        )
        .await
        .unwrap();
    assert_eq!(
        rf3.topics[0].error_code,
        ResponseError::InvalidReplicationFactor.code()
    );
    assert_eq!(
        create_topic(&mut c, "small", 1, &[("max.message.bytes", "200")])
            .await
            .error_code,
        0
    );
    assert_eq!(
        create_topic(&mut c, "small", 1, &[]).await.error_code,
        ResponseError::TopicAlreadyExists.code()
    );

    let big = produce(
        &mut c,
        "small",
        0,
        batch(50, Compression::None, 0),
        9,
        uuid::Uuid::nil(),
    )
    .await;
    assert_eq!(big.error_code, ResponseError::MessageTooLarge.code());
    let unknown = produce(
        &mut c,
        "nope",
        0,
        batch(1, Compression::None, 0),
        9,
        uuid::Uuid::nil(),
    )
    .await;
    assert_eq!(
        unknown.error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let unknown_p = produce(
        &mut c,
        "small",
        7,
        batch(1, Compression::None, 0),
        9,
        uuid::Uuid::nil(),
    )
    .await;
    assert_eq!(
        unknown_p.error_code,
        ResponseError::UnknownTopicOrPartition.code()
    );
    let mut corrupt = batch(2, Compression::None, 0).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    let bad = produce(
        &mut c,
        "small",
        0,
        Bytes::from(corrupt),
        9,
        uuid::Uuid::nil(),
    )
    .await;
    assert_eq!(bad.error_code, ResponseError::CorruptMessage.code());

    let oor = c
        .send(fetch_request("small", uuid::Uuid::nil(), 12, 5, 0), 12)
        .await
        .unwrap();
    assert_eq!(
        oor.responses[0].partitions[0].error_code,
        ResponseError::OffsetOutOfRange.code()
    );
    // Nothing bad was written: the log is still empty.
    let lo = c
        .send(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    ListOffsetsTopic::default()
                        .with_name(TopicName(s("small")))
                        .with_partitions(vec![
                            ListOffsetsPartition::default()
                                .with_partition_index(0)
                                .with_timestamp(-1),
                        ]),
                ]),
            7,
        )
        .await
        .unwrap();
    assert_eq!(lo.topics[0].partitions[0].offset, 0);
}

#[tokio::test]
async fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut good = b.conn().await;
    create_topic(&mut good, "survivor", 1, &[]).await;
    let frames: Vec<Vec<u8>> = vec![
        // 2 GiB claimed
        0x7fff_ffffu32.to_be_bytes().to_vec(),
        // negative size
        (-5i32).to_be_bytes().to_vec(),
        // garbage body with a plausible size
        [12u32.to_be_bytes().to_vec(), b"garbage!!!!!".to_vec()].concat(),
        // unknown API key 9999
        [
            8u32.to_be_bytes().to_vec(),
            vec![0x27, 0x0f, 0, 0, 0, 0, 0, 1],
        ]
        .concat(),
        // Metadata v99
        [8u32.to_be_bytes().to_vec(), vec![0, 3, 0, 99, 0, 0, 0, 1]].concat(),
        // Produce v12 whose body is cut short
        [
            10u32.to_be_bytes().to_vec(),
            vec![0, 0, 0, 12, 0, 0, 0, 1, 0, 0],
        ]
        .concat(),
    ];
    for f in frames {
        let mut bad = b.conn().await;
        bad.send_raw(&f).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), bad.read_frame())
            .await
            .expect("closed promptly");
        assert!(r.is_err(), "the broker closes a connection that sent {f:?}");
    }
    let r = produce(
        &mut good,
        "survivor",
        0,
        batch(2, Compression::None, 0),
        9,
        uuid::Uuid::nil(),
    )
    .await;
    assert_eq!(
        (r.error_code, r.base_offset),
        (0, 0),
        "other clients keep working"
    );
}

#[tokio::test]
async fn acks_zero_gets_no_response_and_pipelining_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    create_topic(&mut c, "fire", 1, &[]).await;
    let td = TopicProduceData::default()
        .with_name(TopicName(s("fire")))
        .with_partition_data(vec![
            PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(1, Compression::None, 0))),
        ]);
    c.send_only(
        &ProduceRequest::default()
            .with_acks(0)
            .with_topic_data(vec![td]),
        9,
    )
    .await
    .unwrap();
    // The next response on the wire must be the metadata answer, not a produce answer.
    let md = c
        .send(MetadataRequest::default().with_topics(Some(vec![])), 12)
        .await
        .unwrap();
    assert!(md.topics.is_empty());
    let resp = c
        .send(fetch_request("fire", uuid::Uuid::nil(), 12, 0, 0), 12)
        .await
        .unwrap();
    assert_eq!(
        decode_records(&resp.responses[0].partitions[0].records).len(),
        1
    );
}

#[tokio::test]
async fn topics_data_and_configs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    let created = create_topic(&mut c, "durable", 2, &[("retention.ms", "123456")]).await;
    for i in 0..4 {
        produce(
            &mut c,
            "durable",
            i % 2,
            batch(5, Compression::Zstd, 0),
            9,
            uuid::Uuid::nil(),
        )
        .await;
    }
    drop(c);
    b.restart().await;
    let mut c = b.conn().await;
    let md = c
        .send(MetadataRequest::default().with_topics(None), 12)
        .await
        .unwrap();
    let t = md
        .topics
        .iter()
        .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("durable"))
        .unwrap();
    assert_eq!(t.topic_id, created.topic_id);
    assert_eq!(t.partitions.len(), 2);
    let resp = c
        .send(fetch_request("durable", uuid::Uuid::nil(), 12, 0, 0), 12)
        .await
        .unwrap();
    assert_eq!(resp.responses[0].partitions[0].high_watermark, 10);
    let dc = c
        .send(
            DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("durable"))
                    .with_configuration_keys(Some(vec![s("retention.ms")])),
            ]),
            4,
        )
        .await
        .unwrap();
    let entry = &dc.results[0].configs[0];
    assert_eq!(
        (
            entry.value.as_ref().map(|v| v.as_str()),
            entry.config_source
        ),
        (Some("123456"), 1)
    );
}

#[tokio::test]
async fn delete_records_and_list_offsets_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    create_topic(&mut c, "times", 1, &[]).await;
    for i in 0..5 {
        produce(
            &mut c,
            "times",
            0,
            batch(2, Compression::None, 10_000 + 100 * i),
            9,
            uuid::Uuid::nil(),
        )
        .await;
    }
    let list = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(s("times")))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts),
                    ]),
            ])
    };
    let at = |r: ListOffsetsResponse| {
        (
            r.topics[0].partitions[0].offset,
            r.topics[0].partitions[0].timestamp,
        )
    };
    assert_eq!(
        at(c.send(list(base() + 10_150), 8).await.unwrap()),
        (4, base() + 10_200)
    );
    assert_eq!(
        at(c.send(list(-3), 8).await.unwrap()),
        (9, base() + 10_401),
        "max timestamp"
    );
    assert_eq!(
        at(c.send(list(base() + 99_999), 8).await.unwrap()),
        (-1, -1)
    );
    let dr = c
        .send(
            DeleteRecordsRequest::default().with_topics(vec![
                DeleteRecordsTopic::default()
                    .with_name(TopicName(s("times")))
                    .with_partitions(vec![
                        DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(6),
                    ]),
            ]),
            2,
        )
        .await
        .unwrap();
    assert_eq!(dr.topics[0].partitions[0].low_watermark, 6);
    assert_eq!(at(c.send(list(-2), 8).await.unwrap()).0, 6);
    assert_eq!(
        at(c.send(list(0), 8).await.unwrap()).0,
        6,
        "deleted records are not found by time"
    );
}

#[tokio::test]
async fn large_fetches_sent_from_the_file_decode_the_same_at_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    let id = create_topic(&mut c, "big", 1, &[]).await.topic_id;
    // 40 records of 10 KiB: well above the size sent with sendfile.
    let records: Vec<Record> = (0..40)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32 - 1,
            timestamp: base() + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![(i % 251) as u8; 10 * 1024])),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    assert_eq!(
        produce(&mut c, "big", 0, buf.freeze(), 9, id)
            .await
            .error_code,
        0
    );
    for fv in [4, 11, 12, 13, 18] {
        let resp = c
            .send(fetch_request("big", id, fv, 0, 0), fv)
            .await
            .unwrap();
        let got = decode_records(&resp.responses[0].partitions[0].records);
        assert_eq!(got.len(), 40, "fetch v{fv}");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(
                r.value.as_ref().map(|v| (v.len(), v[0])),
                Some((10 * 1024, (i % 251) as u8)),
                "fetch v{fv} record {i}"
            );
        }
    }
}

#[tokio::test]
async fn background_retention_deletes_old_segments_and_moves_the_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(
        dir.path(),
        &[
            ("log.retention.check.interval.ms", "50"),
            ("log.initial.task.delay.ms", "0"),
        ],
    )
    .await;
    let mut c = b.conn().await;
    create_topic(
        &mut c,
        "short",
        1,
        &[("segment.bytes", "1024"), ("retention.bytes", "2048")],
    )
    .await;
    for i in 0..40 {
        produce(
            &mut c,
            "short",
            0,
            batch(3, Compression::None, i),
            9,
            uuid::Uuid::nil(),
        )
        .await;
    }
    let earliest = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(s("short")))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-2),
                ]),
        ]);
    let log_files = || {
        std::fs::read_dir(dir.path().join("short-0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".log")
            })
            .count()
    };
    let (mut start, mut segs) = (0, usize::MAX);
    // Deadline-bounded wait for the background task (every 50 ms here).
    for _ in 0..200 {
        start = c.send(earliest.clone(), 7).await.unwrap().topics[0].partitions[0].offset;
        segs = log_files();
        if start > 0 && segs <= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(start > 0, "retention never moved the log start offset");
    // retention.bytes=2048 over 1 KiB segments keeps at most 3 closed ones plus the active.
    assert!(segs <= 4, "{segs} segments left");
    let resp = c
        .send(fetch_request("short", uuid::Uuid::nil(), 12, start, 0), 12)
        .await
        .unwrap();
    assert_eq!(
        decode_records(&resp.responses[0].partitions[0].records)[0].offset,
        start
    );
}

#[tokio::test]
async fn flush_messages_one_fsyncs_before_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    create_topic(&mut c, "synced", 1, &[("flush.messages", "1")]).await;
    create_topic(&mut c, "lazy", 1, &[]).await;
    for _ in 0..3 {
        produce(
            &mut c,
            "synced",
            0,
            batch(2, Compression::None, 0),
            9,
            uuid::Uuid::nil(),
        )
        .await;
        produce(
            &mut c,
            "lazy",
            0,
            batch(2, Compression::None, 0),
            9,
            uuid::Uuid::nil(),
        )
        .await;
    }
    let broker = b.running.as_ref().unwrap().broker();
    // The recovery point (everything below it is fsynced) reaches the end only when asked.
    assert_eq!(
        broker
            .partition("synced", 0)
            .unwrap()
            .log()
            .recovery_point(),
        6
    );
    assert_eq!(
        broker.partition("lazy", 0).unwrap().log().recovery_point(),
        0
    );
}

/// Produce requests waiting for their fsync do not stop the connection: the client may
/// pipeline produces (some with acks=0) and other requests, and every answer comes back in
/// request order, each produce acknowledged only once its records are durable; a bad
/// frame behind them closes the connection only after they are answered.
#[tokio::test]
async fn pipelined_produces_waiting_for_fsync_are_answered_in_request_order() {
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    create_topic(&mut c, "gc", 2, &[("flush.messages", "1")]).await;
    let produce_req = |partition: i32, acks: i16| {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s("gc")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch(3, Compression::None, 0))),
                    ]),
            ])
    };
    // (correlation id, Some(partition) for a produce answer, None for metadata)
    let mut expected = Vec::new();
    for i in 0..24 {
        let partition = i % 2;
        if i == 8 || i == 17 {
            // acks=0: appended in its turn, never answered
            c.send_only(&produce_req(partition, 0), 9).await.unwrap();
        }
        if i == 12 {
            let id = c
                .send_only(&MetadataRequest::default().with_topics(Some(vec![])), 12)
                .await
                .unwrap();
            expected.push((id, None));
        }
        let id = c.send_only(&produce_req(partition, -1), 9).await.unwrap();
        expected.push((id, Some(partition)));
    }
    // A bad frame closes the connection, but only after what came before it is answered.
    c.send_raw(&3i32.to_be_bytes()).await.unwrap();
    let mut next_offset = [0i64, 0];
    for (id, what) in expected {
        let mut body = c.read_frame().await.unwrap();
        let version = if what.is_some() { 9 } else { 12 };
        let header_version = if what.is_some() {
            ProduceResponse::header_version(version)
        } else {
            MetadataResponse::header_version(version)
        };
        let header = ResponseHeader::decode(&mut body, header_version).unwrap();
        assert_eq!(
            header.correlation_id, id,
            "answers must come in request order"
        );
        let Some(partition) = what else {
            MetadataResponse::decode(&mut body, version).unwrap();
            continue;
        };
        let resp = ProduceResponse::decode(&mut body, version).unwrap();
        let r = &resp.responses[0].partition_responses[0];
        assert_eq!((r.index, r.error_code), (partition, 0));
        // the acks=0 batches sent before this one took their offsets first
        if r.base_offset != next_offset[partition as usize] {
            assert_eq!(r.base_offset, next_offset[partition as usize] + 3);
        }
        next_offset[partition as usize] = r.base_offset + 3;
        let log = b
            .running
            .as_ref()
            .unwrap()
            .broker()
            .partition("gc", partition);
        assert!(
            log.unwrap().log().recovery_point() >= r.base_offset + 3,
            "acknowledged before its fsync"
        );
    }
    assert_eq!(next_offset, [39, 39]);
    assert!(c.read_frame().await.is_err(), "closed after the bad frame");
}

#[tokio::test]
async fn the_create_topic_policy_refuses_with_policy_violation() {
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(
        dir.path(),
        &[("runnel.create.topic.policy.max.partitions", "4")],
    )
    .await;
    let mut c = b.conn().await;
    let r = create_topic(&mut c, "wide", 5, &[]).await;
    assert_eq!(r.error_code, ResponseError::PolicyViolation.code());
    assert!(r.error_message.unwrap().as_str().contains("at most 4"));
    assert_eq!(create_topic(&mut c, "narrow", 4, &[]).await.error_code, 0);
    let grow = c
        .send(
            CreatePartitionsRequest::default().with_topics(vec![
                kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(TopicName(s("narrow")))
                    .with_count(6),
            ]),
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        grow.results[0].error_code,
        ResponseError::PolicyViolation.code()
    );
}

#[tokio::test]
async fn describe_log_dirs_gives_each_partitions_size_and_the_disks_space() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[]).await;
    let mut c = b.conn().await;
    let created = create_topic(&mut c, "sized", 2, &[]).await;
    assert_eq!(created.error_code, 0, "{:?}", created.error_message);
    let r = produce(
        &mut c,
        "sized",
        1,
        batch(5, Compression::None, 0),
        9,
        created.topic_id,
    )
    .await;
    assert_eq!(r.error_code, 0);
    let on_disk = |p: i32| -> i64 {
        std::fs::read_dir(dir.path().join(format!("sized-{p}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .map(|p| std::fs::metadata(p).unwrap().len() as i64)
            .sum()
    };
    assert!(on_disk(1) > 0);

    // Every partition (topics null), v4 with the file system's space.
    let resp = c
        .send(DescribeLogDirsRequest::default().with_topics(None), 4)
        .await
        .unwrap();
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.results.len(), 1);
    let d = &resp.results[0];
    assert_eq!(d.error_code, 0);
    assert_eq!(d.log_dir.as_str(), dir.path().display().to_string());
    assert!(
        d.total_bytes > 0 && d.usable_bytes >= 0 && d.usable_bytes <= d.total_bytes,
        "{d:?}"
    );
    let t = d
        .topics
        .iter()
        .find(|t| t.name.0.as_str() == "sized")
        .unwrap();
    let mut sizes: Vec<(i32, i64)> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.partition_size))
        .collect();
    sizes.sort();
    assert_eq!(sizes, [(0, on_disk(0)), (1, on_disk(1))]);

    // Named partitions, v1: one that exists, two that do not (left out, as Kafka does).
    let resp = c
        .send(
            DescribeLogDirsRequest::default().with_topics(Some(vec![
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(s("sized")))
                    .with_partitions(vec![1, 7]),
                DescribableLogDirTopic::default()
                    .with_topic(TopicName(s("nope")))
                    .with_partitions(vec![0]),
            ])),
            1,
        )
        .await
        .unwrap();
    let d = &resp.results[0];
    let got: Vec<(String, i32, i64)> = d
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.partition_size))
        })
        .collect();
    assert_eq!(got, [("sized".to_string(), 1, on_disk(1))]);
}

#[tokio::test]
async fn reassignments_on_one_node_accept_only_the_assignment_there_is() {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let b = TestBroker::start(dir.path(), &[("node.id", "3")]).await;
    let mut c = b.conn().await;
    assert_eq!(create_topic(&mut c, "moved", 1, &[]).await.error_code, 0);
    let ask = |topic: &str, replicas: Option<Vec<i32>>, allow_rf_change: bool| {
        AlterPartitionReassignmentsRequest::default()
            .with_allow_replication_factor_change(allow_rf_change)
            .with_topics(vec![
                ReassignableTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![
                        ReassignablePartition::default()
                            .with_partition_index(0)
                            .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect())),
                    ]),
            ])
    };
    let cases = [
        ("moved", Some(vec![3]), true, 0),
        (
            "moved",
            None,
            true,
            ResponseError::NoReassignmentInProgress.code(),
        ),
        (
            "moved",
            Some(vec![]),
            true,
            ResponseError::InvalidReplicaAssignment.code(),
        ),
        (
            "moved",
            Some(vec![2]),
            true,
            ResponseError::InvalidReplicaAssignment.code(),
        ),
        (
            "moved",
            Some(vec![3, 3]),
            true,
            ResponseError::InvalidReplicaAssignment.code(),
        ),
        (
            "moved",
            Some(vec![3, 4]),
            false,
            ResponseError::InvalidReplicationFactor.code(),
        ),
        (
            "gone",
            Some(vec![3]),
            true,
            ResponseError::UnknownTopicOrPartition.code(),
        ),
    ];
    for (topic, replicas, allow, want) in cases {
        let resp = c
            .send(ask(topic, replicas.clone(), allow), 1)
            .await
            .unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!(
            p.error_code, want,
            "{topic} {replicas:?}: {:?}",
            p.error_message
        );
    }
    let listed = c
        .send(ListPartitionReassignmentsRequest::default(), 0)
        .await
        .unwrap();
    assert_eq!((listed.error_code, listed.topics.len()), (0, 0));

    // Broker configs: deleting one (none is dynamic) succeeds, setting one is refused.
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let alter = |op: i8, name: &str| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(s(name))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(s("leader.replication.throttled.rate"))
                        .with_config_operation(op)
                        .with_value(Some(s("100"))),
                ]),
        ])
    };
    for (op, name, want) in [
        (1, "3", 0),
        (1, "", 0),
        (0, "3", ResponseError::InvalidRequest.code()),
        (1, "9", ResponseError::InvalidRequest.code()),
    ] {
        let resp = c.send(alter(op, name), 1).await.unwrap();
        assert_eq!(
            resp.responses[0].error_code, want,
            "op {op} on broker {name:?}"
        );
    }
}
