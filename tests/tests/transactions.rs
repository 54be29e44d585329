//! The client's idempotent and transactional producer and `read_committed` consumer
//! against a real broker.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use runnel_api::{
    ClientError, Consumer, ConsumerConfig, ConsumerGroupMetadata, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use runnel_integration_tests::TestBroker;

async fn producer(b: &TestBroker, settings: &[(&str, &str)]) -> Producer {
    let mut c = ProducerConfig::new(&b.bootstrap);
    for (k, v) in settings {
        c.set(k, v).unwrap();
    }
    Producer::connect(c).await.unwrap()
}

async fn reader(b: &TestBroker, committed: bool, tps: &[(&str, i32)]) -> Consumer {
    let mut c = ConsumerConfig::new(&b.bootstrap);
    c.set("auto.offset.reset", "earliest").unwrap();
    c.set(
        "isolation.level",
        if committed {
            "read_committed"
        } else {
            "read_uncommitted"
        },
    )
    .unwrap();
    let mut c = Consumer::connect(c).await.unwrap();
    c.assign(
        tps.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect(),
    )
    .await
    .unwrap();
    c
}

/// Values read until `idle` passes with nothing new.
async fn drain(c: &mut Consumer) -> Vec<String> {
    let mut out = Vec::new();
    let mut quiet = 0;
    while quiet < 3 {
        let got = c.poll(Duration::from_millis(300)).await.unwrap();
        if got.is_empty() {
            quiet += 1;
        }
        out.extend(
            got.iter()
                .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()),
        );
    }
    out
}

#[tokio::test]
async fn the_producer_is_idempotent_by_default_as_the_java_client() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("idem", 1).await;
    assert!(ProducerConfig::new(&b.bootstrap).is_idempotent());
    let mut acks1 = ProducerConfig::new(&b.bootstrap);
    acks1.set("acks", "1").unwrap();
    assert!(!acks1.is_idempotent(), "acks=1 turns the default off");
    acks1.set("enable.idempotence", "true").unwrap();
    assert!(matches!(
        Producer::connect(acks1).await.err(),
        Some(ClientError::Config(_))
    ));

    let p = producer(&b, &[]).await;
    for i in 0..10 {
        p.send(ProducerRecord::new("idem").value(format!("v{i}")))
            .await
            .unwrap();
    }
    p.flush().await.unwrap();
    let broker = b.broker().unwrap();
    let part = broker.partition("idem", 0).unwrap();
    let log = part.log();
    let producers: Vec<_> = log.producer_state().producers().collect();
    assert_eq!(producers.len(), 1, "one producer id wrote");
    let (_, entry) = producers[0];
    assert_eq!(entry.batches.back().unwrap().last_seq, 9);
}

#[tokio::test]
async fn committed_transactions_appear_to_read_committed_and_aborted_ones_never_do() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("tx-out", 2).await;
    let p = producer(&b, &[("transactional.id", "t1")]).await;
    assert!(matches!(
        p.send(ProducerRecord::new("tx-out").value("x")).await.err(),
        Some(ClientError::Config(_))
    ));
    p.init_transactions().await.unwrap();
    for (round, commit) in [(0, false), (1, true), (2, false), (3, true)] {
        p.begin_transaction().await.unwrap();
        for i in 0..10 {
            p.send(
                ProducerRecord::new("tx-out")
                    .partition(i % 2)
                    .value(format!("r{round}-{i}")),
            )
            .await
            .unwrap();
        }
        if commit {
            p.commit_transaction().await.unwrap();
        } else {
            p.abort_transaction().await.unwrap();
        }
    }
    let tps = [("tx-out", 0), ("tx-out", 1)];
    let mut rc = reader(&b, true, &tps).await;
    let mut committed = drain(&mut rc).await;
    committed.sort();
    let mut want: Vec<String> = [1, 3]
        .iter()
        .flat_map(|r| (0..10).map(move |i| format!("r{r}-{i}")))
        .collect();
    want.sort();
    assert_eq!(committed, want);
    let mut ru = reader(&b, false, &tps).await;
    assert_eq!(drain(&mut ru).await.len(), 40);
    // Each partition holds 4 x (5 records + a marker). As in the Java client, positions
    // end past the last marker (and past the aborted batches), so a commit does not lag.
    for c in [&mut rc, &mut ru] {
        for p in 0..2 {
            let tp = TopicPartition::new("tx-out", p);
            assert_eq!(c.position(&tp).await.unwrap(), 24, "{tp:?}");
        }
    }
}

#[tokio::test]
async fn offsets_sent_in_a_transaction_are_committed_with_it() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("eos-in", 1).await;
    b.create_topic("eos-out", 1).await;
    let plain = producer(&b, &[]).await;
    for i in 0..20 {
        plain
            .send(ProducerRecord::new("eos-in").value(format!("{i}")))
            .await
            .unwrap();
    }
    plain.flush().await.unwrap();

    let p = producer(&b, &[("transactional.id", "eos")]).await;
    p.init_transactions().await.unwrap();
    let group = ConsumerGroupMetadata::new("eos-group");
    let tp = TopicPartition::new("eos-in", 0);
    // Round one commits records 0..10 and offset 10; round two aborts 10..20 and 20.
    for (from, commit) in [(0, true), (10, false)] {
        p.begin_transaction().await.unwrap();
        for i in from..from + 10 {
            p.send(ProducerRecord::new("eos-out").value(format!("out-{i}")))
                .await
                .unwrap();
        }
        p.send_offsets_to_transaction(&[(tp.clone(), from + 10)], &group)
            .await
            .unwrap();
        if commit {
            p.commit_transaction().await.unwrap();
        } else {
            p.abort_transaction().await.unwrap();
        }
    }
    let mut c = ConsumerConfig::new(&b.bootstrap);
    c.set("group.id", "eos-group").unwrap();
    let mut c = Consumer::connect(c).await.unwrap();
    let committed = c.committed(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(committed.get(&tp), Some(&10));
    let out = drain(&mut reader(&b, true, &[("eos-out", 0)]).await).await;
    assert_eq!(out, (0..10).map(|i| format!("out-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_zombie_producer_is_fenced_and_its_records_stay_invisible() {
    let b = TestBroker::start(&[]).await;
    b.create_topic("fence", 1).await;
    let old = producer(&b, &[("transactional.id", "same")]).await;
    old.init_transactions().await.unwrap();
    old.begin_transaction().await.unwrap();
    for i in 0..5 {
        old.send(ProducerRecord::new("fence").value(format!("zombie-{i}")))
            .await
            .unwrap();
    }
    old.flush().await.unwrap();

    let new = producer(&b, &[("transactional.id", "same")]).await;
    new.init_transactions().await.unwrap();
    new.begin_transaction().await.unwrap();
    new.send(ProducerRecord::new("fence").value("fresh"))
        .await
        .unwrap();
    new.commit_transaction().await.unwrap();

    // The zombie can neither commit what it wrote nor write more.
    match old.commit_transaction().await {
        Err(ClientError::Broker { code, .. }) => assert_eq!(code, 90, "PRODUCER_FENCED"),
        other => panic!("the zombie's commit must fail, got {other:?}"),
    }
    let out = drain(&mut reader(&b, true, &[("fence", 0)]).await).await;
    assert_eq!(out, vec!["fresh".to_string()]);
}

/// Sends 30,000 records over 6 partitions with small batches and no linger (many batches
/// per partition queued at once, where a later one could overtake an earlier one) and
/// checks every partition holds its records once, in send order.
async fn order_under_load(extra: &[(&str, &str)]) {
    let b = TestBroker::start(&[]).await;
    b.create_topic("order", 6).await;
    let mut settings = vec![
        ("batch.size", "4096"),
        ("linger.ms", "0"),
        ("delivery.timeout.ms", "20000"),
    ];
    settings.extend_from_slice(extra);
    let p = producer(&b, &settings).await;
    let mut deliveries = Vec::new();
    for i in 0..30_000u32 {
        let rec = ProducerRecord::new("order")
            .partition((i % 6) as i32)
            .value(format!("{i:08}-{}", "x".repeat(200)));
        deliveries.push(p.send(rec).await.unwrap());
    }
    let mut failed = 0;
    for d in deliveries {
        if d.await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "every record is acknowledged");
    for part in 0..6 {
        let got = drain(&mut reader(&b, false, &[("order", part)]).await).await;
        let seq: Vec<u32> = got.iter().map(|v| v[..8].parse().unwrap()).collect();
        let want: Vec<u32> = (0..30_000u32).filter(|i| i % 6 == part as u32).collect();
        assert_eq!(
            seq, want,
            "partition {part} holds its records once, in send order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_producer_keeps_each_partitions_order_under_load() {
    order_under_load(&[]).await;
}

/// Several batches per partition are in flight when the broker restarts: those it had
/// appended come back as duplicates, the later ones as out of order behind the failed
/// ones, and all of them are retried in sequence order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_producer_with_batches_in_flight_keeps_order_through_a_restart() {
    let mut b = TestBroker::start(&[]).await;
    b.create_topic("bounce", 3).await;
    let p = producer(
        &b,
        &[
            ("batch.size", "2048"),
            ("linger.ms", "0"),
            ("retry.backoff.ms", "20"),
            ("request.timeout.ms", "3000"),
            ("delivery.timeout.ms", "30000"),
        ],
    )
    .await;
    let n = 12_000u32;
    let mut deliveries = Vec::new();
    for i in 0..n {
        if i == n / 2 {
            b.restart().await;
        }
        let rec = ProducerRecord::new("bounce")
            .partition((i % 3) as i32)
            .value(format!("{i:08}-{}", "y".repeat(100)));
        deliveries.push(p.send(rec).await.unwrap());
    }
    for d in deliveries {
        d.await.unwrap();
    }
    for part in 0..3 {
        let got = drain(&mut reader(&b, false, &[("bounce", part)]).await).await;
        let seq: Vec<u32> = got.iter().map(|v| v[..8].parse().unwrap()).collect();
        let want: Vec<u32> = (0..n).filter(|i| i % 3 == part as u32).collect();
        assert_eq!(
            seq, want,
            "partition {part} holds its records once, in send order"
        );
    }
}

/// A batch the broker refuses for good leaves a gap in the partition's sequence numbers;
/// the producer takes a new producer id and the batches behind it are delivered.
#[tokio::test]
async fn an_idempotent_producer_goes_on_after_a_refused_batch() {
    let b = TestBroker::start(&[]).await;
    runnel_api::Admin::connect(&b.bootstrap)
        .await
        .unwrap()
        .create_topics(&[runnel_api::NewTopic::new("small", 1).config("max.message.bytes", "1000")])
        .await
        .unwrap();
    let p = producer(
        &b,
        &[
            ("linger.ms", "0"),
            ("retry.backoff.ms", "20"),
            ("delivery.timeout.ms", "5000"),
        ],
    )
    .await;
    let first = p
        .send(ProducerRecord::new("small").value("a"))
        .await
        .unwrap();
    assert_eq!(first.await.unwrap().offset, 0);
    let big = p
        .send(ProducerRecord::new("small").value(vec![b'x'; 5000]))
        .await
        .unwrap();
    // Answered before the next records are sent, so none of them shares its batch.
    let big = big.await;
    let mut later = Vec::new();
    for i in 0..50 {
        later.push(
            p.send(ProducerRecord::new("small").value(format!("r{i:02}")))
                .await
                .unwrap(),
        );
    }
    match big {
        Err(ClientError::Broker { code: 10, .. }) => {}
        other => panic!("the oversized record fails with MESSAGE_TOO_LARGE, got {other:?}"),
    }
    for (i, d) in later.into_iter().enumerate() {
        let m = d
            .await
            .unwrap_or_else(|e| panic!("record {i} after the refused one: {e}"));
        assert_eq!(m.offset, 1 + i as i64, "record {i} lands next, in order");
    }
    let got = drain(&mut reader(&b, false, &[("small", 0)]).await).await;
    let want: Vec<String> = std::iter::once("a".to_string())
        .chain((0..50).map(|i| format!("r{i:02}")))
        .collect();
    assert_eq!(got, want, "each record once, in send order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_producer_keeps_each_partitions_order_when_nothing_fails() {
    order_under_load(&[("acks", "1")]).await;
}
