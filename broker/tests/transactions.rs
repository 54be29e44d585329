//! Idempotence and transactions through the request handlers of a real broker (data on
//! disk, restarts clean and unclean): what Kafka's producers and consumers rely on.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use runnel_broker::handlers;
use runnel_broker::{Broker, BrokerConfig};

fn open(dir: &std::path::Path, extra: &[(&str, &str)]) -> Arc<Broker> {
    let mut pairs = vec![("log.dirs".to_string(), dir.display().to_string())];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Broker::open(BrokerConfig::from_pairs(&pairs).unwrap()).unwrap()
}

/// A broker with topic "t" of `partitions` partitions.
async fn open_with_topic(
    dir: &std::path::Path,
    extra: &[(&str, &str)],
    partitions: i32,
) -> Arc<Broker> {
    let broker = open(dir, extra);
    broker
        .create_topic("t", partitions, 1, BTreeMap::new())
        .await
        .unwrap();
    broker
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A batch of `n` records from a producer (transactional when `txn`).
fn batch(pid: i64, epoch: i16, seq: i32, n: usize, txn: bool, tag: &str) -> Bytes {
    let mut b = runnel_api::records::BatchBuilder::new();
    for i in 0..n {
        let v = format!("{tag}-{i}");
        b.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    let mut bytes = b
        .build(runnel_api::Compression::None, pid, epoch, seq)
        .to_vec();
    if txn {
        runnel_broker::log::batch::set_transactional(&mut bytes);
    }
    Bytes::from(bytes)
}

async fn produce(broker: &Arc<Broker>, topic: &str, p: i32, records: Bytes) -> (i16, i64) {
    produce_v(broker, topic, p, records, 9).await
}

async fn produce_v(
    broker: &Arc<Broker>,
    topic: &str,
    p: i32,
    records: Bytes,
    version: i16,
) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(p)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp = handlers::produce::handle(broker, req, version)
        .flush()
        .await
        .unwrap();
    let r = &resp.responses[0].partition_responses[0];
    (r.error_code, r.base_offset)
}

fn leo(broker: &Broker, topic: &str, p: i32) -> i64 {
    broker.partition(topic, p).unwrap().log().log_end_offset()
}

fn lso(broker: &Broker, topic: &str, p: i32) -> i64 {
    broker
        .partition(topic, p)
        .unwrap()
        .log()
        .last_stable_offset()
}

async fn init_txn(broker: &Arc<Broker>, id: &str, timeout_ms: i32) -> (i16, i64, i16) {
    let r = handlers::init_producer_id::handle(
        broker,
        InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s(id))))
            .with_transaction_timeout_ms(timeout_ms)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
        5,
    )
    .await;
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

fn add_partitions(broker: &Broker, id: &str, pid: i64, epoch: i16, topic: &str, ps: &[i32]) -> i16 {
    let r = handlers::add_partitions_to_txn::handle(
        broker,
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s(id)))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(ps.to_vec()),
            ]),
        3,
    );
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn end_txn(broker: &Broker, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    handlers::end_txn::handle(
        broker,
        EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
        3,
    )
    .error_code
}

/// A read_committed (or not) fetch of partition `p` from `offset`: (LSO, record count
/// in the returned data batches, aborted (pid, first offset) list).
async fn fetch(
    broker: &Arc<Broker>,
    topic: &str,
    p: i32,
    offset: i64,
    committed: bool,
) -> (i64, usize, Option<Vec<(i64, i64)>>) {
    fetch_waiting(broker, topic, p, offset, committed, 0).await
}

/// As [`fetch`], long-polling up to `max_wait_ms` for at least one byte.
async fn fetch_waiting(
    broker: &Arc<Broker>,
    topic: &str,
    p: i32,
    offset: i64,
    committed: bool,
    max_wait_ms: i32,
) -> (i64, usize, Option<Vec<(i64, i64)>>) {
    let req = FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(if committed { 1 } else { 0 })
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let resp = handlers::fetch::handle(broker, req, 12)
        .await
        .into_inline()
        .unwrap();
    let d = &resp.responses[0].partitions[0];
    assert_eq!(d.error_code, 0);
    let mut bytes = d.records.clone().unwrap_or_default();
    let mut n = 0;
    while bytes.len() >= 61 {
        let h = runnel_broker::log::batch::BatchHeader::parse(&bytes).unwrap();
        if !h.is_control() {
            n += h.records_count as usize;
        }
        let _ = bytes.split_to(h.total_size().min(bytes.len()));
    }
    let aborted = d.aborted_transactions.as_ref().map(|a| {
        a.iter()
            .map(|t| (t.producer_id.0, t.first_offset))
            .collect::<Vec<_>>()
    });
    (d.last_stable_offset, n, aborted)
}

#[tokio::test]
async fn a_retried_batch_is_not_written_twice_even_after_an_unclean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with_topic(dir.path(), &[], 1).await;
    let pid = broker.next_producer_id().unwrap();
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 0, 0, 5, false, "a")).await,
        (0, 0)
    );
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 0, 5, 5, false, "b")).await,
        (0, 5)
    );
    // The retry of the first batch (its response was lost) gets its original offset.
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 0, 0, 5, false, "a")).await,
        (0, 0)
    );
    assert_eq!(leo(&broker, "t", 0), 10);
    // A gap is refused: OUT_OF_ORDER_SEQUENCE_NUMBER.
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 0, 11, 1, false, "c"))
            .await
            .0,
        45
    );
    // A zombie with an older epoch, once the producer moved on: INVALID_PRODUCER_EPOCH.
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 1, 0, 1, false, "d")).await,
        (0, 10)
    );
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 0, 10, 1, false, "e"))
            .await
            .0,
        47
    );
    assert_eq!(leo(&broker, "t", 0), 11);

    // kill -9: no shutdown, so no snapshot; the state comes back from the log itself.
    drop(broker);
    let broker = open(dir.path(), &[]);
    assert_eq!(leo(&broker, "t", 0), 11);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 1, 0, 1, false, "d")).await,
        (0, 10)
    );
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 1, 1, 2, false, "f")).await,
        (0, 11)
    );
    assert_eq!(leo(&broker, "t", 0), 13);

    // A clean restart goes through the snapshot.
    broker.shutdown().unwrap();
    drop(broker);
    let broker = open(dir.path(), &[]);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 1, 1, 2, false, "f")).await,
        (0, 11)
    );
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, 1, 4, 1, false, "g"))
            .await
            .0,
        45
    );
    assert_eq!(leo(&broker, "t", 0), 13);
}

#[tokio::test]
async fn aborted_transactions_are_hidden_from_read_committed_and_the_lso_waits_for_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with_topic(dir.path(), &[], 1).await;
    let (code, pid, epoch) = init_txn(&broker, "tx", 60_000).await;
    assert_eq!((code, epoch), (0, 0));
    assert_eq!(
        produce(&broker, "t", 0, batch(-1, -1, -1, 2, false, "plain")).await,
        (0, 0)
    );

    // Writing before adding the partition is refused (INVALID_TXN_STATE before produce
    // v11, TRANSACTION_ABORTABLE after), and nothing is written.
    assert_eq!(
        produce_v(&broker, "t", 0, batch(pid, epoch, 0, 3, true, "x"), 9)
            .await
            .0,
        48
    );
    assert_eq!(
        produce_v(&broker, "t", 0, batch(pid, epoch, 0, 3, true, "x"), 11)
            .await
            .0,
        120
    );
    assert_eq!(leo(&broker, "t", 0), 2);

    assert_eq!(add_partitions(&broker, "tx", pid, epoch, "t", &[0]), 0);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, epoch, 0, 3, true, "x")).await,
        (0, 2)
    );
    assert_eq!(
        lso(&broker, "t", 0),
        2,
        "the open transaction holds the LSO"
    );
    let (lso_seen, n, _) = fetch(&broker, "t", 0, 0, true).await;
    assert_eq!((lso_seen, n), (2, 2), "read_committed stops at the LSO");
    let (_, n, aborted) = fetch(&broker, "t", 0, 0, false).await;
    assert_eq!((n, aborted), (5, None), "read_uncommitted sees everything");

    assert_eq!(end_txn(&broker, "tx", pid, epoch, false), 0);
    assert_eq!(leo(&broker, "t", 0), 6, "an ABORT marker was appended");
    assert_eq!(lso(&broker, "t", 0), 6);
    let (_, n, aborted) = fetch(&broker, "t", 0, 0, true).await;
    assert_eq!(n, 5, "the aborted records are returned ...");
    assert_eq!(aborted, Some(vec![(pid, 2)]), "... with the range to drop");
    // The retried EndTxn is fine; the opposite decision is not.
    assert_eq!(end_txn(&broker, "tx", pid, epoch, false), 0);
    assert_eq!(end_txn(&broker, "tx", pid, epoch, true), 48);

    // A committed transaction after it: nothing aborted from offset 6 on.
    assert_eq!(add_partitions(&broker, "tx", pid, epoch, "t", &[0]), 0);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, epoch, 3, 2, true, "y")).await,
        (0, 6)
    );
    assert_eq!(end_txn(&broker, "tx", pid, epoch, true), 0);
    let (lso_seen, _, aborted) = fetch(&broker, "t", 0, 6, true).await;
    assert_eq!((lso_seen, aborted), (9, Some(vec![])));

    // The aborted range survives an unclean restart (.txnindex rebuilt from the log).
    drop(broker);
    let broker = open(dir.path(), &[]);
    let (lso_seen, _, aborted) = fetch(&broker, "t", 0, 0, true).await;
    assert_eq!((lso_seen, aborted), (9, Some(vec![(pid, 2)])));
    assert!(
        dir.path()
            .join("t-0/00000000000000000000.txnindex")
            .exists()
    );
}

/// Returns once a fetch is long-polling `p` (panics after 10 s).
async fn until_a_fetch_waits(p: &runnel_broker::partition::Partition) {
    let t0 = std::time::Instant::now();
    while p.waiting_fetches() == 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the fetch never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_waiting_read_committed_fetch_is_woken_by_the_commit_marker_of_its_partition_only() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with_topic(dir.path(), &[], 2).await;
    let (_, pid, epoch) = init_txn(&broker, "tx", 60_000).await;
    assert_eq!(add_partitions(&broker, "tx", pid, epoch, "t", &[0]), 0);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, epoch, 0, 3, true, "x")).await,
        (0, 0)
    );
    // Nothing is stable yet: a read_committed fetch long-polls (far longer than the test
    // waits, so only a wake-up answers it in time).
    let b = broker.clone();
    let waiting = tokio::spawn(async move { fetch_waiting(&b, "t", 0, 0, true, 25_000).await });
    let p0 = broker.partition("t", 0).unwrap();
    let p1 = broker.partition("t", 1).unwrap();
    until_a_fetch_waits(&p0).await;
    assert_eq!(
        (p0.waiting_fetches(), p1.waiting_fetches()),
        (1, 0),
        "a fetch waits on the partitions it reads, not on others"
    );
    // Appends elsewhere leave it waiting.
    assert_eq!(
        produce(&broker, "t", 1, batch(-1, -1, -1, 2, false, "other")).await,
        (0, 0)
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "nothing became readable on partition 0"
    );
    assert_eq!(end_txn(&broker, "tx", pid, epoch, true), 0);
    let (lso_seen, n, aborted) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the commit marker wakes the fetch")
        .unwrap();
    assert_eq!((lso_seen, n, aborted), (4, 3, Some(vec![])));
    assert_eq!(p0.waiting_fetches(), 0, "an answered fetch unregisters");

    // A fetch given up while waiting (its connection closed) unregisters too.
    let b = broker.clone();
    let abandoned = tokio::spawn(async move { fetch_waiting(&b, "t", 1, 2, false, 25_000).await });
    until_a_fetch_waits(&p1).await;
    abandoned.abort();
    let _ = abandoned.await;
    assert_eq!(p1.waiting_fetches(), 0);
}

#[tokio::test]
async fn a_waiting_fetch_answers_at_once_when_its_topic_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), &[]);
    broker
        .create_topic("gone", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let req = FetchRequest::default()
        .with_max_wait_ms(25_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s("gone")))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let b = broker.clone();
    let waiting = tokio::spawn(async move { handlers::fetch::handle(&b, req, 12).await });
    let p = broker.partition("gone", 0).unwrap();
    until_a_fetch_waits(&p).await;
    broker.delete_topic("gone").await.unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the deletion wakes the fetch")
        .unwrap()
        .response;
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        kafka_protocol::ResponseError::UnknownTopicOrPartition.code()
    );
}

#[tokio::test]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with_topic(dir.path(), &[], 1).await;
    let (_, pid, e0) = init_txn(&broker, "tx", 60_000).await;
    assert_eq!(add_partitions(&broker, "tx", pid, e0, "t", &[0]), 0);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, e0, 0, 4, true, "zombie")).await,
        (0, 0)
    );
    assert_eq!(lso(&broker, "t", 0), 0);

    // The new instance: same id, same producer id, a higher epoch; the zombie's open
    // transaction is aborted.
    let (code, pid2, e1) = init_txn(&broker, "tx", 60_000).await;
    assert_eq!((code, pid2), (0, pid));
    assert!(e1 > e0);
    assert_eq!(
        lso(&broker, "t", 0),
        leo(&broker, "t", 0),
        "the zombie's data was aborted"
    );
    let (_, _, aborted) = fetch(&broker, "t", 0, 0, true).await;
    assert_eq!(aborted, Some(vec![(pid, 0)]));

    // Whatever the zombie does next fails and writes nothing.
    let end = leo(&broker, "t", 0);
    assert_eq!(add_partitions(&broker, "tx", pid, e0, "t", &[0]), 90);
    assert_eq!(end_txn(&broker, "tx", pid, e0, true), 90);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, e0, 4, 1, true, "zombie"))
            .await
            .0,
        47
    );
    assert_eq!(leo(&broker, "t", 0), end);

    // The fencing holds after a restart.
    broker.shutdown().unwrap();
    drop(broker);
    let broker = open(dir.path(), &[]);
    assert_eq!(end_txn(&broker, "tx", pid, e0, true), 90);
    assert_eq!(add_partitions(&broker, "tx", pid, e1, "t", &[0]), 0);
}

#[tokio::test]
async fn misuse_gets_kafkas_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with_topic(dir.path(), &[("transaction.max.timeout.ms", "60000")], 1).await;
    assert_eq!(
        init_txn(&broker, "tx", 60_001).await.0,
        50,
        "INVALID_TRANSACTION_TIMEOUT"
    );
    let (_, pid, epoch) = init_txn(&broker, "tx", 60_000).await;
    assert_eq!(
        end_txn(&broker, "tx", pid, epoch, true),
        48,
        "EndTxn with nothing open"
    );
    assert_eq!(
        end_txn(&broker, "nope", pid, epoch, true),
        49,
        "unknown transactional id"
    );
    assert_eq!(
        end_txn(&broker, "tx", pid + 1, epoch, true),
        49,
        "someone else's id"
    );
    // An unknown partition: UNKNOWN_TOPIC_OR_PARTITION, the rest OPERATION_NOT_ATTEMPTED.
    let r = handlers::add_partitions_to_txn::handle(
        &broker,
        AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![0, 7]),
            ]),
        3,
    );
    let codes: Vec<i16> = r.results_by_topic_v3_and_below[0]
        .results_by_partition
        .iter()
        .map(|p| p.partition_error_code)
        .collect();
    assert_eq!(codes, vec![55, 3]);
    // A transactional batch from a producer id no coordinator knows.
    assert_eq!(
        produce(&broker, "t", 0, batch(999_999, 0, 0, 1, true, "u"))
            .await
            .0,
        49
    );
    assert_eq!(leo(&broker, "t", 0), 0);
}

#[tokio::test]
async fn hanging_transactions_are_aborted_after_their_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(
        dir.path(),
        &[(
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "1",
        )],
    );
    broker
        .create_topic("t", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let (_, pid, epoch) = init_txn(&broker, "slow", 100).await;
    assert_eq!(add_partitions(&broker, "slow", pid, epoch, "t", &[0]), 0);
    assert_eq!(
        produce(&broker, "t", 0, batch(pid, epoch, 0, 3, true, "h")).await,
        (0, 0)
    );
    assert_eq!(lso(&broker, "t", 0), 0);
    let now = runnel_broker::broker::now_ms();
    broker.txns.tick(&broker, now + 50);
    assert_eq!(lso(&broker, "t", 0), 0, "not yet timed out");
    broker.txns.tick(&broker, now + 10_000);
    assert_eq!(lso(&broker, "t", 0), 4, "aborted: the marker is at 3");
    let d = broker.txns.describe("slow").unwrap();
    assert_eq!(d.state.name(), "CompleteAbort");
    assert!(d.epoch > epoch, "the stalled producer is fenced");
    assert_eq!(end_txn(&broker, "slow", pid, epoch, true), 90);
}

#[tokio::test]
async fn offsets_committed_in_a_transaction_appear_only_when_it_commits_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path(), &[]);
    broker
        .create_topic("in", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let (_, pid, epoch) = init_txn(&broker, "eos", 60_000).await;
    let add_offsets = |b: &Arc<Broker>| {
        let b = b.clone();
        async move {
            handlers::add_offsets_to_txn::handle(
                &b,
                AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TransactionalId(s("eos")))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_group_id(GroupId(s("g"))),
                3,
            )
            .await
            .error_code
        }
    };
    let commit_offset = |b: &Arc<Broker>, offset: i64| {
        let b = b.clone();
        async move {
            let r = handlers::txn_offset_commit::handle(
                &b,
                TxnOffsetCommitRequest::default()
                    .with_transactional_id(TransactionalId(s("eos")))
                    .with_group_id(GroupId(s("g")))
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
                    .with_generation_id(-1)
                    .with_topics(vec![
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(s("in")))
                            .with_partitions(vec![
                                TxnOffsetCommitRequestPartition::default()
                                    .with_partition_index(0)
                                    .with_committed_offset(offset),
                            ]),
                    ]),
                3,
            )
            .await;
            r.topics[0].partitions[0].error_code
        }
    };
    let committed = |b: &Broker| {
        b.groups
            .fetch_offsets("g")
            .get(&("in".into(), 0))
            .map(|o| o.offset)
    };

    // TxnOffsetCommit before AddOffsetsToTxn is refused.
    assert_eq!(commit_offset(&broker, 1).await, 48);
    assert_eq!(add_offsets(&broker).await, 0);
    assert_eq!(commit_offset(&broker, 10).await, 0);
    assert_eq!(committed(&broker), None, "pending until the commit");
    assert!(broker.groups.has_pending_offset("g", "in", 0));
    assert_eq!(end_txn(&broker, "eos", pid, epoch, true), 0);
    assert_eq!(committed(&broker), Some(10));

    // An aborted one leaves the committed offset alone.
    assert_eq!(add_offsets(&broker).await, 0);
    assert_eq!(commit_offset(&broker, 20).await, 0);
    assert_eq!(end_txn(&broker, "eos", pid, epoch, false), 0);
    assert_eq!(committed(&broker), Some(10));

    // One left open across an unclean restart: still pending, then committed.
    assert_eq!(add_offsets(&broker).await, 0);
    assert_eq!(commit_offset(&broker, 30).await, 0);
    drop(broker);
    let broker = open(dir.path(), &[]);
    assert_eq!(committed(&broker), Some(10));
    assert!(broker.groups.has_pending_offset("g", "in", 0));
    assert_eq!(end_txn(&broker, "eos", pid, epoch, true), 0);
    assert_eq!(committed(&broker), Some(30));
    drop(broker);
    let broker = open(dir.path(), &[]);
    assert_eq!(committed(&broker), Some(30));
    assert!(!broker.groups.has_pending_offset("g", "in", 0));
}

fn end_txn_v(
    broker: &Broker,
    id: &str,
    pid: i64,
    epoch: i16,
    commit: bool,
    v: i16,
) -> (i16, i64, i16) {
    let r = handlers::end_txn::handle(
        broker,
        EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
        v,
    );
    (r.error_code, r.producer_id.0, r.producer_epoch)
}

#[tokio::test]
async fn transactions_v2_add_partitions_implicitly_and_bump_the_epoch_at_every_end() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with_topic(dir.path(), &[], 1).await;
    let features = handlers::api_versions::handle(&broker, &ApiVersionsRequest::default(), 3);
    let finalized: Vec<(String, i16)> = features
        .finalized_features
        .iter()
        .map(|f| (f.name.to_string(), f.max_version_level))
        .collect();
    assert_eq!(finalized, vec![("transaction.version".to_string(), 2)]);

    let (_, pid, e0) = init_txn(&broker, "v2", 60_000).await;
    // Produce v12: no AddPartitionsToTxn needed, the write joins the transaction.
    assert_eq!(
        produce_v(&broker, "t", 0, batch(pid, e0, 0, 3, true, "a"), 12).await,
        (0, 0)
    );
    assert_eq!(broker.txns.describe("v2").unwrap().state.name(), "Ongoing");
    let (code, pid1, e1) = end_txn_v(&broker, "v2", pid, e0, true, 5);
    assert_eq!(
        (code, pid1, e1),
        (0, pid, e0 + 1),
        "EndTxn v5 returns the bumped epoch"
    );
    assert_eq!(lso(&broker, "t", 0), 4, "committed: the marker is at 3");
    // A retry of that EndTxn (old epoch) succeeds with the same answer.
    assert_eq!(end_txn_v(&broker, "v2", pid, e0, true, 5), (0, pid, e1));
    // The old epoch can no longer write: the marker fenced it.
    assert_eq!(
        produce_v(&broker, "t", 0, batch(pid, e0, 3, 1, true, "z"), 12)
            .await
            .0,
        47
    );
    // The next transaction runs on the new epoch from sequence 0, offsets included.
    assert_eq!(
        produce_v(&broker, "t", 0, batch(pid, e1, 0, 2, true, "b"), 12)
            .await
            .0,
        0
    );
    let r = handlers::txn_offset_commit::handle(
        &broker,
        TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("v2")))
            .with_group_id(GroupId(s("g2")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(e1)
            .with_generation_id(-1)
            .with_topics(vec![
                TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(6),
                    ]),
            ]),
        5,
    )
    .await;
    assert_eq!(
        r.topics[0].partitions[0].error_code, 0,
        "v5 adds the offsets partition"
    );
    let (code, _, e2) = end_txn_v(&broker, "v2", pid, e1, false, 5);
    assert_eq!((code, e2), (0, e1 + 1));
    assert_eq!(
        broker.groups.fetch_offsets("g2").get(&("t".into(), 0)),
        None,
        "aborted"
    );
    let (_, _, aborted) = fetch(&broker, "t", 0, 0, true).await;
    assert_eq!(aborted, Some(vec![(pid, 4)]));
}

async fn produce_v12(broker: &Arc<Broker>, records: Bytes) -> i16 {
    produce_v(broker, "t", 0, records, 12).await.0
}

#[tokio::test]
async fn with_transaction_version_0_nothing_joins_a_transaction_implicitly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with_topic(dir.path(), &[("runnel.transaction.version", "0")], 1).await;
    let features = handlers::api_versions::handle(&broker, &ApiVersionsRequest::default(), 3);
    assert!(features.finalized_features.is_empty());
    let (_, pid, e0) = init_txn(&broker, "v1", 60_000).await;
    assert_eq!(
        produce_v12(&broker, batch(pid, e0, 0, 1, true, "a")).await,
        120
    );
    assert_eq!(add_partitions(&broker, "v1", pid, e0, "t", &[0]), 0);
    assert_eq!(
        produce_v12(&broker, batch(pid, e0, 0, 1, true, "a")).await,
        0
    );
    assert_eq!(
        end_txn_v(&broker, "v1", pid, e0, true, 5),
        (0, -1, -1),
        "no bump"
    );
}
