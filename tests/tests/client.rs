//! The client library against a real broker: producer, consumer and admin behaviour.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use runnel_api::murmur2::partition_for_key;
use runnel_api::{
    Admin, AlterOp, Compression, Consumer, ConsumerConfig, Header, NewTopic, OffsetReset,
    Partitioner, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use runnel_integration_tests::TestBroker;

async fn producer(b: &TestBroker, settings: &[(&str, &str)]) -> Producer {
    let mut c = ProducerConfig::new(&b.bootstrap);
    for (k, v) in settings {
        c.set(k, v).unwrap();
    }
    Producer::connect(c).await.unwrap()
}

async fn consumer(b: &TestBroker) -> Consumer {
    let mut c = ConsumerConfig::new(&b.bootstrap);
    c.set("auto.offset.reset", "earliest").unwrap();
    Consumer::connect(c).await.unwrap()
}

async fn read_all(c: &mut Consumer, want: usize) -> Vec<runnel_api::ConsumerRecord> {
    let mut out = Vec::new();
    for _ in 0..50 {
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
        if out.len() >= want {
            break;
        }
    }
    out
}

#[tokio::test]
async fn keyed_records_with_headers_round_trip_under_every_codec() {
    let b = TestBroker::start(&[]).await;
    let admin = Admin::connect(&b.bootstrap).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("codecs", 6)])
        .await
        .unwrap();
    // Each codec at its default level, and gzip, LZ4 and zstd at another one
    // (compression.<codec>.level, as the Java client has since Kafka 3.8).
    let variants = [
        ("none", None),
        ("gzip", None),
        ("gzip", Some("9")),
        ("snappy", None),
        ("lz4", None),
        ("lz4", Some("12")),
        ("zstd", None),
        ("zstd", Some("19")),
    ];
    for (name, level) in variants {
        let codec = match level {
            Some(l) => format!("{name}@{l}"),
            None => name.to_string(),
        };
        let level_key = format!("compression.{name}.level");
        let mut settings = vec![("compression.type", name), ("linger.ms", "20")];
        if let Some(l) = level {
            settings.push((level_key.as_str(), l));
        }
        let p = producer(&b, &settings).await;
        let mut deliveries = Vec::new();
        for i in 0..50 {
            let rec = ProducerRecord::new("codecs")
                .key(format!("{codec}-key-{}", i % 7))
                .value(format!("{codec}-value-{i}"))
                .header("n", i.to_string())
                .header("n", "again")
                .timestamp(1_700_000_000_000 + i);
            deliveries.push(p.send(rec).await.unwrap());
        }
        for (i, d) in deliveries.into_iter().enumerate() {
            let m = d.await.unwrap();
            let key = format!("{codec}-key-{}", i % 7);
            assert_eq!(
                m.partition,
                partition_for_key(key.as_bytes(), 6),
                "murmur2 placement as the Java client"
            );
            assert_eq!(m.timestamp, 1_700_000_000_000 + i as i64);
        }
        p.close().await.unwrap();
    }
    let mut c = consumer(&b).await;
    let tps: Vec<_> = (0..6).map(|p| TopicPartition::new("codecs", p)).collect();
    c.assign(tps).await.unwrap();
    let got = read_all(&mut c, 400).await;
    assert_eq!(got.len(), 400);
    for r in &got {
        let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
        let (codec, i) = v.split_once("-value-").unwrap();
        let i: i64 = i.parse().unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(format!("{codec}-key-{}", i % 7).as_bytes())
        );
        assert_eq!(
            r.headers,
            vec![Header::new("n", i.to_string()), Header::new("n", "again")]
        );
        assert_eq!(r.timestamp, 1_700_000_000_000 + i);
    }
}

#[test]
fn compression_levels_outside_kafkas_ranges_are_refused() {
    let mut c = ProducerConfig::new("127.0.0.1:9");
    for ok in [
        ("compression.gzip.level", "-1"),
        ("compression.lz4.level", "17"),
        ("compression.zstd.level", "-7"),
    ] {
        assert!(c.set(ok.0, ok.1).is_ok(), "{ok:?}");
    }
    for bad in [
        ("compression.gzip.level", "0"),
        ("compression.lz4.level", "18"),
        ("compression.zstd.level", "23"),
        ("compression.zstd.level", "high"),
    ] {
        assert!(c.set(bad.0, bad.1).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn null_keys_stick_to_a_partition_per_batch_and_move_on() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("sticky", 4).await;
    let p = producer(&b, &[("linger.ms", "1000"), ("batch.size", "2000")]).await;
    let mut batches = Vec::new();
    for round in 0..12 {
        let mut ds = Vec::new();
        for i in 0..10 {
            ds.push(
                p.send(ProducerRecord::new("sticky").value(format!("r{round}-{i}")))
                    .await
                    .unwrap(),
            );
        }
        p.flush().await.unwrap();
        let mut parts = BTreeSet::new();
        for d in ds {
            parts.insert(d.await.unwrap().partition);
        }
        assert_eq!(parts.len(), 1, "one batch, one partition (round {round})");
        batches.push(*parts.iter().next().unwrap());
    }
    assert!(
        batches.windows(2).all(|w| w[0] != w[1]),
        "each new batch moves to another partition: {batches:?}"
    );
}

#[tokio::test]
async fn round_robin_and_custom_partitioners() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("rr", 3).await;
    let p = producer(
        &b,
        &[(
            "partitioner.class",
            "org.apache.kafka.clients.producer.RoundRobinPartitioner",
        )],
    )
    .await;
    let mut parts = Vec::new();
    for i in 0..6 {
        parts.push(
            p.send(ProducerRecord::new("rr").key("same").value(i.to_string()))
                .await
                .unwrap()
                .await
                .unwrap()
                .partition,
        );
    }
    assert_eq!(parts, vec![0, 1, 2, 0, 1, 2]);

    struct LastByte;
    impl runnel_api::producer::Partition for LastByte {
        fn partition(&self, _: &str, key: Option<&[u8]>, _: Option<&[u8]>, n: i32) -> i32 {
            key.and_then(|k| k.last())
                .map(|b| *b as i32 % n)
                .unwrap_or(0)
        }
    }
    let mut cfg = ProducerConfig::new(&b.bootstrap);
    cfg.partitioner = Partitioner::Custom(std::sync::Arc::new(LastByte));
    let p = Producer::connect(cfg).await.unwrap();
    let m = p
        .send(
            ProducerRecord::new("rr")
                .key(Bytes::from_static(&[7, 5]))
                .value("x"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(m.partition, 2);
}

#[tokio::test]
async fn acks_zero_and_one_deliver_and_seek_works() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("acks", 1).await;
    let p0 = producer(&b, &[("acks", "0")]).await;
    let m = p0
        .send(ProducerRecord::new("acks").value("fire"))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(m.offset, -1, "acks=0 has no offset to report");
    p0.flush().await.unwrap();
    let p1 = producer(&b, &[("acks", "1")]).await;
    let mut last = 0;
    for i in 0..5 {
        last = p1
            .send(ProducerRecord::new("acks").value(i.to_string()))
            .await
            .unwrap()
            .await
            .unwrap()
            .offset;
    }
    let mut c = consumer(&b).await;
    let tp = TopicPartition::new("acks", 0);
    c.assign(vec![tp.clone()]).await.unwrap();
    let all = read_all(&mut c, 6).await;
    assert_eq!(all.len(), 6, "the acks=0 record arrived too");
    assert_eq!(all[0].value.as_deref(), Some(&b"fire"[..]));
    assert_eq!(c.position(&tp).await.unwrap(), last + 1);
    c.seek(&tp, 3).unwrap();
    assert_eq!(c.poll(Duration::from_secs(2)).await.unwrap()[0].offset, 3);
    c.seek_to_end(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 6);
    assert!(c.poll(Duration::from_millis(200)).await.unwrap().is_empty());
}

#[tokio::test]
async fn batches_stay_within_batch_size_as_the_java_producer_keeps_them() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("sized", 1).await;
    let p = producer(&b, &[("batch.size", "1024"), ("linger.ms", "200")]).await;
    let mut deliveries = Vec::new();
    for i in 0..100 {
        let value = format!("{i:0>100}");
        deliveries.push(
            p.send(ProducerRecord::new("sized").value(value))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    // Walk the segment's batch headers: base offset (8), length (4), ..., count at 57.
    let log = std::fs::read(b.data_dir().join("sized-0/00000000000000000000.log")).unwrap();
    let (mut pos, mut sizes, mut records) = (0usize, Vec::new(), 0);
    while pos + 61 <= log.len() {
        let len = i32::from_be_bytes(log[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let size = 12 + len;
        assert!(
            size <= 1024,
            "a batch is {size} bytes, over batch.size=1024: {sizes:?}"
        );
        records += i32::from_be_bytes(log[pos + 57..pos + 61].try_into().unwrap());
        sizes.push(size);
        pos += size;
    }
    assert_eq!(records, 100, "every record is in some batch");
    // Each record takes 110 bytes in a batch: every batch but the last was closed
    // because the next record did not fit.
    let (last, full) = sizes.split_last().unwrap();
    assert!(
        full.iter().all(|s| s + 110 > 1024) && *last <= 1024,
        "batches are filled up to batch.size before the next starts: {sizes:?}"
    );
}

#[tokio::test]
async fn delivery_callbacks_report_each_records_offset_and_a_refused_batch() {
    let b = TestBroker::start(&[]).await;
    Admin::connect(&b.bootstrap)
        .await
        .unwrap()
        .create_topics(&[
            NewTopic::new("callbacks", 1),
            NewTopic::new("small", 1).config("max.message.bytes", "1000"),
        ])
        .await
        .unwrap();
    let p = producer(&b, &[("linger.ms", "5")]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..200 {
        let tx = tx.clone();
        p.send_with_callback(
            ProducerRecord::new("callbacks").value(i.to_string()),
            move |r| {
                let _ = tx.send((i, r));
            },
        )
        .await
        .unwrap();
    }
    let tx2 = tx.clone();
    p.send_with_callback(
        ProducerRecord::new("small").value(vec![b'x'; 5000]),
        move |r| {
            let _ = tx2.send((-1, r));
        },
    )
    .await
    .unwrap();
    drop(tx);
    p.flush().await.unwrap();
    let mut seen = std::collections::BTreeMap::new();
    while let Some((i, r)) = rx.recv().await {
        assert!(seen.insert(i, r).is_none(), "record {i} called back twice");
    }
    assert_eq!(seen.len(), 201, "every record is called back once by flush");
    for i in 0..200 {
        let m = seen[&i].as_ref().expect("delivered");
        assert_eq!(
            (&*m.topic, m.partition, m.offset),
            ("callbacks", 0, i as i64),
            "record {i} lands at its own offset, in send order"
        );
    }
    match &seen[&-1] {
        Err(runnel_api::ClientError::Broker { code, .. }) => {
            assert_eq!(*code, 10, "MESSAGE_TOO_LARGE reaches the callback")
        }
        other => panic!("an oversized record must fail in its callback, got {other:?}"),
    }
}

#[tokio::test]
async fn auto_offset_reset_latest_skips_old_records_and_offsets_for_times_finds_new_ones() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("reset", 1).await;
    let p = producer(&b, &[]).await;
    let now = 1_800_000_000_000i64.min(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    for i in 0..3 {
        p.send(
            ProducerRecord::new("reset")
                .value("old")
                .timestamp(now - 10_000 + i),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut cfg = ConsumerConfig::new(&b.bootstrap);
    cfg.auto_offset_reset = OffsetReset::Latest;
    let mut c = Consumer::connect(cfg).await.unwrap();
    let tp = TopicPartition::new("reset", 0);
    c.assign(vec![tp.clone()]).await.unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 3);
    p.send(ProducerRecord::new("reset").value("new").timestamp(now))
        .await
        .unwrap()
        .await
        .unwrap();
    let got = read_all(&mut c, 1).await;
    assert_eq!(
        got.iter()
            .map(|r| r.value.clone().unwrap())
            .collect::<Vec<_>>(),
        vec![Bytes::from("new")]
    );
    let found = c
        .offsets_for_times(&[(tp.clone(), now - 9_999)])
        .await
        .unwrap();
    assert_eq!((found[0].1, found[0].2), (1, now - 9_999));
}

#[tokio::test]
async fn admin_manages_topics_configs_partitions_and_records() {
    let b = TestBroker::start(&[]).await;
    let admin = Admin::connect(&b.bootstrap).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("adm", 2).config("retention.ms", "3600000")])
        .await
        .unwrap();
    let err = admin
        .create_topics(&[NewTopic::new("adm", 2)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, runnel_api::ClientError::Broker { code: 36, .. }),
        "{err}"
    );
    assert!(
        admin
            .list_topics()
            .await
            .unwrap()
            .contains(&"adm".to_string())
    );
    let d = &admin.describe_topics(&["adm".into()]).await.unwrap()[0];
    assert_eq!(d.partitions.len(), 2);
    assert_eq!(d.partitions[0].isr, vec![1]);
    admin
        .alter_topic_configs(
            "adm",
            &[
                AlterOp::Set("retention.ms".into(), "60000".into()),
                AlterOp::Append("cleanup.policy".into(), "compact".into()),
            ],
        )
        .await
        .unwrap();
    let cfg = admin.describe_topic_configs("adm").await.unwrap();
    let get = |k: &str| cfg.iter().find(|c| c.name == k).unwrap().clone();
    assert_eq!(get("retention.ms").value.as_deref(), Some("60000"));
    assert!(get("retention.ms").is_override());
    assert_eq!(
        get("cleanup.policy").value.as_deref(),
        Some("delete,compact")
    );
    assert!(!get("segment.bytes").is_override());
    admin.create_partitions("adm", 4).await.unwrap();
    assert_eq!(
        admin.describe_topics(&["adm".into()]).await.unwrap()[0]
            .partitions
            .len(),
        4
    );

    let p = producer(&b, &[]).await;
    // The topic is compacted now: as in Kafka, its records need keys.
    for i in 0..10 {
        p.send(
            ProducerRecord::new("adm")
                .partition(0)
                .key(format!("k{i}"))
                .value(i.to_string()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let tp = TopicPartition::new("adm", 0);
    let low = admin.delete_records(&[(tp.clone(), 4)]).await.unwrap();
    assert_eq!(low[0].1, 4);
    let offs = admin
        .list_offsets(&[(tp.clone(), -2), (tp.clone(), -1)])
        .await
        .unwrap();
    assert_eq!((offs[0].1, offs[1].1), (4, 10));
    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!((cluster.controller, cluster.brokers.len()), (1, 1));
    admin.delete_topics(&["adm".into()]).await.unwrap();
    assert!(
        !admin
            .list_topics()
            .await
            .unwrap()
            .contains(&"adm".to_string())
    );
}

#[tokio::test]
async fn the_producer_sees_added_partitions_once_its_metadata_refreshes() {
    // The producer caches each topic's partition count for its per-record path; the
    // cache must follow the cluster metadata, not outlive it.
    let b = TestBroker::start(&[]).await;
    let admin = Admin::connect(&b.bootstrap).await.unwrap();
    admin
        .create_topics(&[NewTopic::new("grow", 2)])
        .await
        .unwrap();
    let p = producer(&b, &[("metadata.max.age.ms", "100"), ("linger.ms", "0")]).await;
    let first = p
        .send(ProducerRecord::new("grow").value("a").partition(1))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(first.partition, 1);
    let err = p
        .send(ProducerRecord::new("grow").value("b").partition(3))
        .await
        .err()
        .expect("partition 3 does not exist yet");
    assert!(err.to_string().contains("does not exist"), "{err}");
    admin.create_partitions("grow", 4).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // This send's batch finds the metadata stale and refreshes it.
    p.send(ProducerRecord::new("grow").value("c").partition(0))
        .await
        .unwrap()
        .await
        .unwrap();
    let added = p
        .send(ProducerRecord::new("grow").value("d").partition(3))
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!((added.partition, added.offset), (3, 0));
    let mut c = consumer(&b).await;
    c.assign(vec![TopicPartition::new("grow", 3)])
        .await
        .unwrap();
    let got = read_all(&mut c, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_deref(), Some(&b"d"[..]));
}

#[tokio::test]
async fn the_producer_retries_through_a_broker_restart() {
    let mut b = TestBroker::start(&[]).await;
    b.create_topic("bounce", 1).await;
    let p = producer(
        &b,
        &[("retry.backoff.ms", "50"), ("request.timeout.ms", "3000")],
    )
    .await;
    let mut ds = Vec::new();
    for i in 0..20 {
        ds.push(
            p.send(ProducerRecord::new("bounce").value(i.to_string()))
                .await
                .unwrap(),
        );
    }
    p.flush().await.unwrap();
    b.restart().await;
    for i in 20..40 {
        ds.push(
            p.send(ProducerRecord::new("bounce").value(i.to_string()))
                .await
                .unwrap(),
        );
    }
    for d in ds {
        d.await.unwrap();
    }
    let mut c = consumer(&b).await;
    c.assign(vec![TopicPartition::new("bounce", 0)])
        .await
        .unwrap();
    let got = read_all(&mut c, 40).await;
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(values, (0..40).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn buffer_memory_applies_back_pressure_instead_of_failing() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("pressure", 1).await;
    let p = producer(
        &b,
        &[
            ("buffer.memory", "4096"),
            ("linger.ms", "50"),
            ("max.block.ms", "10000"),
        ],
    )
    .await;
    let mut ds = Vec::new();
    // 100 records of ~1 KiB through a 4 KiB buffer: sends wait for earlier deliveries.
    for i in 0..100 {
        ds.push(
            p.send(ProducerRecord::new("pressure").value(vec![i as u8; 1000]))
                .await
                .unwrap(),
        );
    }
    for d in ds {
        d.await.unwrap();
    }
    let tight = producer(
        &b,
        &[
            ("buffer.memory", "1000"),
            ("max.block.ms", "100"),
            ("linger.ms", "60000"),
        ],
    )
    .await;
    let _first = tight
        .send(ProducerRecord::new("pressure").value(vec![0u8; 900]))
        .await
        .unwrap();
    let second = tight
        .send(ProducerRecord::new("pressure").value(vec![0u8; 900]))
        .await;
    assert!(
        matches!(second, Err(runnel_api::ClientError::Timeout(_))),
        "max.block.ms bounds the wait"
    );
}

#[tokio::test]
async fn compression_reaches_the_broker_as_chosen() {
    // The batch the broker stores carries the codec the producer picked.
    let b = TestBroker::start(&[]).await;
    b.create_topic("codec-on-disk", 1).await;
    let mut cfg = ProducerConfig::new(&b.bootstrap);
    cfg.compression = Compression::Zstd;
    let p = Producer::connect(cfg).await.unwrap();
    p.send(ProducerRecord::new("codec-on-disk").value(vec![b'z'; 5000]))
        .await
        .unwrap()
        .await
        .unwrap();
    let mut conn = runnel_api::Connection::connect(&b.bootstrap, "t")
        .await
        .unwrap();
    use runnel_api::protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use runnel_api::protocol::messages::{BrokerId, FetchRequest, TopicName};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(
                    runnel_api::protocol::protocol::StrBytes::from_static_str("codec-on-disk"),
                ))
                .with_partitions(vec![
                    FetchPartition::default().with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let resp = conn.send(req, 12).await.unwrap();
    let records = resp.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(
        i16::from_be_bytes([records[21], records[22]]) & 7,
        4,
        "zstd"
    );
    assert!(records.len() < 1000, "5000 repeated bytes compress");
}

#[tokio::test]
async fn the_consumer_is_a_stream() {
    use futures_util::StreamExt;
    let b = TestBroker::start(&[]).await;
    b.create_topic("streamed", 2).await;
    let p = producer(&b, &[]).await;
    for i in 0..30 {
        p.send(
            ProducerRecord::new("streamed")
                .partition(i % 2)
                .value(i.to_string()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut c = consumer(&b).await;
    c.assign(vec![
        TopicPartition::new("streamed", 0),
        TopicPartition::new("streamed", 1),
    ])
    .await
    .unwrap();
    let records: Vec<_> = tokio::time::timeout(
        Duration::from_secs(20),
        Box::pin(c.into_stream()).take(30).collect::<Vec<_>>(),
    )
    .await
    .expect("30 records stream in");
    let mut values: Vec<i32> = records
        .into_iter()
        .map(|r| {
            String::from_utf8(r.unwrap().value.unwrap().to_vec())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    values.sort();
    assert_eq!(values, (0..30).collect::<Vec<_>>());
}

/// A group member in its own task, reporting (member index, partition, value) and its
/// assignments.
fn spawn_member(
    bootstrap: String,
    group: &'static str,
    idx: usize,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, i32, String)>,
    assigned: std::sync::Arc<std::sync::Mutex<Vec<Vec<i32>>>>,
) -> tokio::task::JoinHandle<()> {
    struct Track(usize, std::sync::Arc<std::sync::Mutex<Vec<Vec<i32>>>>);
    impl runnel_api::RebalanceListener for Track {
        fn on_partitions_assigned(&mut self, p: &[TopicPartition]) {
            self.1.lock().unwrap()[self.0] = p.iter().map(|tp| tp.partition).collect();
        }
    }
    tokio::spawn(async move {
        let mut cfg = ConsumerConfig::new(&bootstrap);
        for (k, v) in [
            ("group.id", group),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "1500"),
            ("heartbeat.interval.ms", "200"),
            ("auto.commit.interval.ms", "100"),
        ] {
            cfg.set(k, v).unwrap();
        }
        let mut c = Consumer::connect(cfg).await.unwrap();
        c.set_rebalance_listener(Track(idx, assigned));
        c.subscribe(&["grouped"]).unwrap();
        loop {
            for r in c.poll(Duration::from_millis(100)).await.unwrap() {
                let _ = tx.send((
                    idx,
                    r.partition,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                ));
            }
        }
    })
}

#[tokio::test]
async fn group_members_share_partitions_and_survivors_resume_from_committed_offsets() {
    let b = TestBroker::start(&[
        ("group.initial.rebalance.delay.ms", "0"),
        ("group.min.session.timeout.ms", "1000"),
    ])
    .await;
    b.create_topic("grouped", 6).await;
    let assigned = std::sync::Arc::new(std::sync::Mutex::new(vec![vec![]; 3]));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let members: Vec<_> = (0..3)
        .map(|i| spawn_member(b.bootstrap.clone(), "g1", i, tx.clone(), assigned.clone()))
        .collect();
    async fn wait_for(
        assigned: &std::sync::Mutex<Vec<Vec<i32>>>,
        pred: impl Fn(&[Vec<i32>]) -> bool,
    ) -> bool {
        for _ in 0..100 {
            if pred(&assigned.lock().unwrap()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    assert!(
        wait_for(&assigned, |a| a.iter().all(|p| p.len() == 2)).await,
        "three members, two partitions each: {:?}",
        assigned.lock().unwrap()
    );
    let p = producer(&b, &[]).await;
    for i in 0..60 {
        p.send(
            ProducerRecord::new("grouped")
                .partition(i % 6)
                .value(i.to_string()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 60 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("records flow")
                .unwrap(),
        );
    }
    // Let auto commit (100 ms) record progress, then kill member 0 without a LeaveGroup.
    tokio::time::sleep(Duration::from_millis(500)).await;
    members[0].abort();
    assert!(
        wait_for(&assigned, |a| a[1].len() + a[2].len() == 6
            && a[1].len() == 3)
        .await,
        "after the session timeout the survivors own all six: {:?}",
        assigned.lock().unwrap()
    );
    for i in 60..120 {
        p.send(
            ProducerRecord::new("grouped")
                .partition(i % 6)
                .value(i.to_string()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut after = Vec::new();
    while after.len() < 60 {
        after.push(
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("records flow")
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "nothing committed is read again");
    let mut values: Vec<i32> = after.iter().map(|(_, _, v)| v.parse().unwrap()).collect();
    values.sort();
    assert_eq!(values, (60..120).collect::<Vec<_>>());
    for m in &members[1..] {
        m.abort();
    }
}

#[tokio::test]
async fn cooperative_sticky_moves_only_what_must_move() {
    let b = TestBroker::start(&[
        ("group.initial.rebalance.delay.ms", "0"),
        ("group.min.session.timeout.ms", "1000"),
    ])
    .await;
    b.create_topic("coop", 4).await;
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(usize, &'static str, Vec<i32>)>>>;
    struct Track(usize, Log);
    impl runnel_api::RebalanceListener for Track {
        fn on_partitions_assigned(&mut self, p: &[TopicPartition]) {
            self.1.lock().unwrap().push((
                self.0,
                "assigned",
                p.iter().map(|tp| tp.partition).collect(),
            ));
        }
        fn on_partitions_revoked(&mut self, p: &[TopicPartition]) {
            self.1.lock().unwrap().push((
                self.0,
                "revoked",
                p.iter().map(|tp| tp.partition).collect(),
            ));
        }
    }
    let log: Log = Default::default();
    let spawn = |idx: usize, log: Log| {
        let bootstrap = b.bootstrap.clone();
        tokio::spawn(async move {
            let mut cfg = ConsumerConfig::new(&bootstrap);
            for (k, v) in [
                ("group.id", "coop-g"),
                ("partition.assignment.strategy", "cooperative-sticky"),
                ("session.timeout.ms", "1500"),
                ("heartbeat.interval.ms", "100"),
            ] {
                cfg.set(k, v).unwrap();
            }
            let mut c = Consumer::connect(cfg).await.unwrap();
            c.set_rebalance_listener(Track(idx, log));
            c.subscribe(&["coop"]).unwrap();
            loop {
                c.poll(Duration::from_millis(50)).await.unwrap();
            }
        })
    };
    let first = spawn(0, log.clone());
    let owns = |log: &Log, idx: usize| {
        let mut owned = std::collections::BTreeSet::new();
        for (i, what, ps) in log.lock().unwrap().iter() {
            if *i == idx {
                for p in ps {
                    if *what == "assigned" {
                        owned.insert(*p);
                    } else {
                        owned.remove(p);
                    }
                }
            }
        }
        owned
    };
    for _ in 0..100 {
        if owns(&log, 0).len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        owns(&log, 0).len(),
        4,
        "alone, the first member owns all four"
    );
    let second = spawn(1, log.clone());
    for _ in 0..100 {
        if owns(&log, 0).len() == 2 && owns(&log, 1).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (owns(&log, 0).len(), owns(&log, 1).len()),
        (2, 2),
        "{:?}",
        log.lock().unwrap()
    );
    assert!(owns(&log, 0).is_disjoint(&owns(&log, 1)));
    // The first member only ever gave up the two partitions that moved.
    let revoked: Vec<i32> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, w, _)| *i == 0 && *w == "revoked")
        .flat_map(|(_, _, p)| p.clone())
        .collect();
    assert_eq!(revoked.len(), 2, "{:?}", log.lock().unwrap());
    first.abort();
    second.abort();
}

#[tokio::test]
async fn manual_commits_sync_and_async_are_what_committed_reports() {
    let b = TestBroker::start(&[("group.initial.rebalance.delay.ms", "0")]).await;
    b.create_topic("manual", 1).await;
    let p = producer(&b, &[]).await;
    for i in 0..10 {
        p.send(ProducerRecord::new("manual").value(i.to_string()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut cfg = ConsumerConfig::new(&b.bootstrap);
    cfg.set("group.id", "manual-g")
        .unwrap()
        .set("enable.auto.commit", "false")
        .unwrap()
        .set("auto.offset.reset", "earliest")
        .unwrap();
    let mut c = Consumer::connect(cfg.clone()).await.unwrap();
    c.subscribe(&["manual"]).unwrap();
    let got = read_all(&mut c, 10).await;
    assert_eq!(got.len(), 10);
    let tp = TopicPartition::new("manual", 0);
    c.commit_sync(Some([(tp.clone(), 4)].into())).await.unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        4
    );
    c.commit_async(None).await.unwrap().await.unwrap().unwrap();
    assert_eq!(
        c.committed(std::slice::from_ref(&tp)).await.unwrap()[&tp],
        10
    );
    c.close().await.unwrap();
    // A new member of the group starts at the commit.
    let mut again = Consumer::connect(cfg).await.unwrap();
    again.subscribe(&["manual"]).unwrap();
    p.send(ProducerRecord::new("manual").value("10"))
        .await
        .unwrap()
        .await
        .unwrap();
    let next = read_all(&mut again, 1).await;
    assert_eq!(next[0].offset, 10);
}

#[tokio::test]
async fn a_pattern_subscription_follows_matching_topics() {
    let b = TestBroker::start(&[("group.initial.rebalance.delay.ms", "0")]).await;
    let admin = Admin::connect(&b.bootstrap).await.unwrap();
    admin
        .create_topics(&[
            NewTopic::new("metrics.cpu", 1),
            NewTopic::new("metrics.mem", 1),
            NewTopic::new("logs.app", 1),
        ])
        .await
        .unwrap();
    let p = producer(&b, &[]).await;
    for t in ["metrics.cpu", "metrics.mem", "logs.app"] {
        p.send(ProducerRecord::new(t).value(t))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut cfg = ConsumerConfig::new(&b.bootstrap);
    cfg.set("group.id", "pattern-g")
        .unwrap()
        .set("auto.offset.reset", "earliest")
        .unwrap();
    cfg.set("metadata.max.age.ms", "200").unwrap();
    let mut c = Consumer::connect(cfg).await.unwrap();
    c.subscribe_pattern(r"metrics\..*").unwrap();
    let got = read_all(&mut c, 2).await;
    let mut topics: Vec<String> = got.iter().map(|r| r.topic.to_string()).collect();
    topics.sort();
    assert_eq!(
        topics,
        vec!["metrics.cpu", "metrics.mem"],
        "logs.app does not match"
    );
    // A topic created later that matches is picked up at the next metadata check.
    admin
        .create_topics(&[NewTopic::new("metrics.disk", 1)])
        .await
        .unwrap();
    p.send(ProducerRecord::new("metrics.disk").value("disk"))
        .await
        .unwrap()
        .await
        .unwrap();
    let later = read_all(&mut c, 1).await;
    assert_eq!(later.first().map(|r| &*r.topic), Some("metrics.disk"));
}

/// Many small fetches per partition, decoded only as the application drains them: every
/// record comes exactly once and in order, and a seek drops whatever had been fetched
/// ahead for that partition.
#[tokio::test]
async fn fetched_ahead_records_arrive_once_in_order_and_a_seek_discards_them() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("ahead", 3).await;
    let p = producer(&b, &[("linger.ms", "2"), ("batch.size", "2048")]).await;
    let per_partition = 400i64;
    let mut deliveries = Vec::new();
    for i in 0..per_partition {
        for part in 0..3 {
            let rec = ProducerRecord::new("ahead")
                .partition(part)
                .value(format!("{part}:{i:0>60}"));
            deliveries.push(p.send(rec).await.unwrap());
        }
    }
    for d in deliveries {
        d.await.unwrap();
    }
    let mut cfg = ConsumerConfig::new(&b.bootstrap);
    cfg.set("auto.offset.reset", "earliest").unwrap();
    cfg.set("max.partition.fetch.bytes", "3000").unwrap();
    cfg.set("max.poll.records", "7").unwrap();
    let mut c = Consumer::connect(cfg).await.unwrap();
    let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("ahead", p)).collect();
    c.assign(tps.clone()).await.unwrap();
    let check = |seen: &[runnel_api::ConsumerRecord], starts: [i64; 3]| {
        for part in 0..3 {
            let offsets: Vec<i64> = seen
                .iter()
                .filter(|r| r.partition == part)
                .map(|r| r.offset)
                .collect();
            let want: Vec<i64> = (starts[part as usize]..per_partition).collect();
            assert_eq!(offsets, want, "partition {part}");
        }
        for r in seen {
            let want = format!("{}:{:0>60}", r.partition, r.offset);
            assert_eq!(r.value.as_deref(), Some(want.as_bytes()));
        }
    };
    async fn read_n(c: &mut Consumer, want: usize) -> Vec<runnel_api::ConsumerRecord> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while out.len() < want && std::time::Instant::now() < deadline {
            let got = c.poll(Duration::from_millis(200)).await.unwrap();
            assert!(got.len() <= 7, "max.poll.records");
            out.extend(got);
        }
        out
    }
    let total = 3 * per_partition as usize;
    let all = read_n(&mut c, total).await;
    check(&all, [0, 0, 0]);
    // Seek while records are buffered, fetched but undecoded, and in flight.
    for tp in &tps {
        c.seek(tp, 0).unwrap();
    }
    let head = c.poll(Duration::from_secs(2)).await.unwrap();
    assert_eq!(head.len(), 7, "max.poll.records");
    let starts = [5, 150, 399];
    for (tp, to) in tps.iter().zip(starts) {
        c.seek(tp, to).unwrap();
    }
    let want: i64 = starts.iter().map(|s| per_partition - s).sum();
    let rest = read_n(&mut c, want as usize).await;
    check(&rest, starts);
    for (tp, to) in tps.iter().zip([per_partition; 3]) {
        assert_eq!(c.position(tp).await.unwrap(), to);
    }
}

/// A batch that fails its CRC is reported by `poll` (as the Java client does) with the
/// partition, its offset and where to seek to skip it; the records before it are delivered,
/// fetches made past it are void, and seeking past it goes on. With the default fetch size
/// all three batches come in one response; with a tiny one, one batch per fetch.
#[tokio::test]
async fn a_corrupt_batch_is_an_error_from_poll_and_a_seek_past_it_continues() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("rot", 1).await;
    let p = producer(&b, &[]).await;
    for batch in 0..3 {
        for i in 0..4 {
            p.send(ProducerRecord::new("rot").value(format!("b{batch}r{i}")))
                .await
                .unwrap();
        }
        p.flush().await.unwrap();
    }
    // Flip a value byte inside the second batch, in the segment the broker serves from.
    let seg = b.data_dir().join("rot-0").join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let first_len = 12 + i32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(
        i64::from_be_bytes(bytes[first_len..first_len + 8].try_into().unwrap()),
        4,
        "the second batch starts at offset 4"
    );
    let at = bytes[first_len..]
        .windows(4)
        .position(|w| w == b"b1r2")
        .unwrap()
        + first_len;
    bytes[at] = b'X';
    std::fs::write(&seg, &bytes).unwrap();

    for fetch_bytes in ["1048576", "10"] {
        let mut cfg = ConsumerConfig::new(&b.bootstrap);
        cfg.set("auto.offset.reset", "earliest").unwrap();
        cfg.set("max.partition.fetch.bytes", fetch_bytes).unwrap();
        let mut c = Consumer::connect(cfg).await.unwrap();
        let tp = TopicPartition::new("rot", 0);
        c.assign(vec![tp.clone()]).await.unwrap();
        let mut got = Vec::new();
        let err = loop {
            match c.poll(Duration::from_millis(500)).await {
                Ok(rs) => got.extend(rs.into_iter().map(|r| r.offset)),
                Err(e) => break e,
            }
            assert!(got.len() <= 4, "records past the corrupt batch: {got:?}");
        };
        assert_eq!(got, vec![0, 1, 2, 3], "fetch bytes {fetch_bytes}");
        let msg = err.to_string();
        assert!(
            msg.contains("offset 4 of rot-0") && msg.contains("CRC") && msg.contains("seek to 8"),
            "{msg}"
        );
        assert_eq!(c.position(&tp).await.unwrap(), 4);
        // It stays an error until the application moves on, also from inside the batch.
        assert!(c.poll(Duration::from_secs(3)).await.is_err());
        c.seek(&tp, 6).unwrap();
        let inside = c
            .poll(Duration::from_secs(3))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            inside.contains("offset 6") && inside.contains("seek to 8"),
            "{inside}"
        );
        c.seek(&tp, 8).unwrap();
        let rest = read_all(&mut c, 4).await;
        let values: Vec<_> = rest.iter().map(|r| r.value.clone().unwrap()).collect();
        assert_eq!(
            values,
            ["b2r0", "b2r1", "b2r2", "b2r3"].map(Bytes::from),
            "fetch bytes {fetch_bytes}"
        );
    }
}
