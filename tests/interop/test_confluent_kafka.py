"""confluent-kafka (the current librdkafka, bundled in the wheel) against Runnel.

The broker has no group coordinator yet: consumers set a group.id (the client insists),
use assign() with explicit start offsets and never commit."""

import time

import pytest

from conftest import unique_topic
from interop_util import (CODECS, POLL_DEADLINE, Got, assert_roundtrip, assert_stored_codec,
                          by_partition, make_records, max_timestamp_offset, offset_queries,
                          query_rounds, require_module)

ck = require_module("confluent_kafka")
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, Producer,  # noqa: E402
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,  # noqa: E402
                                   ConfigResource, NewPartitions, NewTopic, OffsetSpec,
                                   ResourceType)

TIMEOUT = 20


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(broker, topic, partitions=3, config=None):
    a = admin(broker)
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                   config=config or {})], request_timeout=TIMEOUT)
    fs[topic].result(timeout=TIMEOUT)
    wait_leaders(a, topic, partitions)
    return a


def wait_leaders(a, topic, partitions):
    deadline = time.monotonic() + TIMEOUT
    while True:
        md = a.list_topics(topic, timeout=TIMEOUT)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions \
                and all(p.leader >= 0 for p in t.partitions.values()):
            return md
        assert time.monotonic() < deadline, f"topic {topic} not ready in metadata: {t and t.error}"
        time.sleep(0.1)


def produce(broker, topic, recs, codec="none", acks="all", **extra):
    """Produce `recs` in order; return the delivery reports as (partition, offset, error)."""
    conf = {"bootstrap.servers": broker.bootstrap, "compression.type": codec, "acks": acks,
            "linger.ms": 20, "enable.idempotence": False, "message.timeout.ms": 30000}
    conf.update(extra)
    p = Producer(conf)
    reports = []

    def on_delivery(err, msg):
        reports.append((msg.partition(), msg.offset(), err, msg.key()))

    for r in recs:
        p.produce(topic, value=r.value, key=r.key, partition=r.partition, headers=r.headers,
                  timestamp=r.ts, on_delivery=on_delivery)
        p.poll(0)
    left = p.flush(POLL_DEADLINE)
    assert left == 0, f"{left} messages not delivered within {POLL_DEADLINE}s"
    assert len(reports) == len(recs)
    errs = [(pt, e) for pt, _, e, _ in reports if e is not None]
    assert not errs, f"delivery errors: {errs[:5]}"
    return reports


def new_consumer(broker, **extra):
    conf = {"bootstrap.servers": broker.bootstrap, "group.id": "runnel-interop-assign",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "enable.partition.eof": False}
    conf.update(extra)
    return Consumer(conf)


def consume_all(broker, topic, counts: dict[int, int], start=OFFSET_BEGINNING) -> list[Got]:
    c = new_consumer(broker)
    try:
        c.assign([TopicPartition(topic, p, start) for p in counts])
        want = sum(counts.values())
        got: list[Got] = []
        deadline = time.monotonic() + POLL_DEADLINE
        while len(got) < want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, f"consumer error: {m.error()}"
            tstype, ts = m.timestamp()
            got.append(Got(m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []), ts,
                           {ck.TIMESTAMP_CREATE_TIME: "create", ck.TIMESTAMP_LOG_APPEND_TIME: "append"}
                           .get(tstype, "?")))
        assert len(got) == want, f"consumed {len(got)} of {want} records within {POLL_DEADLINE}s"
        # nothing beyond what we produced
        extra = c.poll(1.0)
        assert extra is None or extra.error() is not None, f"unexpected extra record at offset {extra.offset()}"
        return got
    finally:
        c.close()


def test_metadata_and_describe_cluster(broker):
    a = admin(broker)
    md = a.list_topics(timeout=TIMEOUT)
    assert len(md.brokers) == 1
    (b,) = md.brokers.values()
    assert (b.host, b.port) == ("127.0.0.1", broker.port)
    assert md.controller_id == b.id
    dc = a.describe_cluster(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    assert dc.cluster_id, "DescribeCluster returned no cluster id"
    assert [(n.id, n.host, n.port) for n in dc.nodes] == [(b.id, "127.0.0.1", broker.port)]
    assert dc.controller is not None and dc.controller.id == b.id


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip(broker, codec):
    topic = unique_topic(f"ck-{codec}")
    a = create_topic(broker, topic, 3)
    recs = make_records(topic, null_header_value=True)
    reports = produce(broker, topic, recs, codec=codec, acks="all")

    # ProduceResponse base offsets: each partition 0..n-1 in production order.
    per_part: dict[int, list[int]] = {}
    for pt, off, _, _ in reports:
        per_part.setdefault(pt, []).append(off)
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    assert per_part == {p: list(range(n)) for p, n in counts.items()}

    got = consume_all(broker, topic, counts)
    assert_roundtrip(recs, got)

    c = new_consumer(broker)
    try:
        for p, n in counts.items():
            assert c.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT) == (0, n)
        # ListOffsets by timestamp through the consumer API
        # (one timestamp per partition per request: Kafka rejects duplicate partitions)
        for rnd in query_rounds(offset_queries(recs)):
            res = c.offsets_for_times([TopicPartition(topic, p, t) for p, t, _ in rnd], timeout=TIMEOUT)
            got_q = sorted((r.partition, q[1], r.offset) for r, q in
                           zip(sorted(res, key=lambda r: r.partition), sorted(rnd)))
            exp_q = sorted((p, t, -1 if o is None else o) for p, t, o in rnd)
            assert got_q == exp_q
    finally:
        c.close()

    # ListOffsets through the admin API, including MAX_TIMESTAMP (-3)
    parts = by_partition(recs)
    specs = {}
    for p in counts:
        specs[TopicPartition(topic, p, 0)] = OffsetSpec.earliest()
    res = {tp.partition: f.result(timeout=TIMEOUT)
           for tp, f in a.list_offsets(specs, request_timeout=TIMEOUT).items()}
    assert {p: r.offset for p, r in res.items()} == {p: 0 for p in counts}
    specs = {TopicPartition(topic, p, 0): OffsetSpec.latest() for p in counts}
    res = {tp.partition: f.result(timeout=TIMEOUT)
           for tp, f in a.list_offsets(specs, request_timeout=TIMEOUT).items()}
    assert {p: r.offset for p, r in res.items()} == counts
    specs = {TopicPartition(topic, p, 0): OffsetSpec.max_timestamp() for p in counts}
    res = {tp.partition: f.result(timeout=TIMEOUT)
           for tp, f in a.list_offsets(specs, request_timeout=TIMEOUT).items()}
    assert {p: (r.offset, r.timestamp) for p, r in res.items()} == \
        {p: max_timestamp_offset(parts[p]) for p in counts}
    for p, t, o in offset_queries(recs):
        f = a.list_offsets({TopicPartition(topic, p, 0): OffsetSpec.for_timestamp(t)},
                           request_timeout=TIMEOUT)
        r = next(iter(f.values())).result(timeout=TIMEOUT)
        exp = (-1, -1) if o is None else (o, parts[p][o].ts)
        assert (p, t, r.offset, r.timestamp) == (p, t, *exp)

    assert_stored_codec(broker.data_dir, topic, counts, codec)


@pytest.mark.parametrize("acks,codec", [("0", "gzip"), ("1", "zstd"), ("0", "none")])
def test_acks(broker, acks, codec):
    topic = unique_topic(f"ck-acks{acks}")
    create_topic(broker, topic, 3)
    recs = make_records(topic, null_header_value=True)
    reports = produce(broker, topic, recs, codec=codec, acks=acks)
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    if acks == "1":
        per_part: dict[int, list[int]] = {}
        for pt, off, _, _ in reports:
            per_part.setdefault(pt, []).append(off)
        assert per_part == {p: list(range(n)) for p, n in counts.items()}
    got = consume_all(broker, topic, counts)
    assert_roundtrip(recs, got)
    assert_stored_codec(broker.data_dir, topic, counts, codec)


@pytest.mark.parametrize("topic_codec,client_codec", [("zstd", "lz4"), ("uncompressed", "zstd"),
                                                     ("lz4", "none"), ("gzip", "snappy")])
def test_topic_compression_type_recompresses(broker, topic_codec, client_codec):
    """A topic whose compression.type names a codec stores every batch in it, whatever the
    producer used, as Kafka recompresses, at the topic's compression.<codec>.level;
    consumers read the records the producer sent."""
    topic = unique_topic(f"ck-ctype-{topic_codec}")
    levels = {"zstd": "19", "gzip": "1", "lz4": "12"}
    config = {"compression.type": topic_codec}
    if topic_codec in levels:
        config[f"compression.{topic_codec}.level"] = levels[topic_codec]
    create_topic(broker, topic, 3, config=config)
    recs = make_records(topic, null_header_value=True)
    produce(broker, topic, recs, codec=client_codec, acks="all")
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    assert_roundtrip(recs, consume_all(broker, topic, counts))
    assert_stored_codec(broker.data_dir, topic, counts,
                        "none" if topic_codec == "uncompressed" else topic_codec)


def test_auto_create_on_produce(broker):
    topic = unique_topic("ck-auto")
    recs = make_records(topic, partitions=1, per_partition=5)
    produce(broker, topic, recs, codec="lz4", acks="all")
    a = admin(broker)
    md = a.list_topics(topic, timeout=TIMEOUT)
    assert md.topics[topic].error is None
    assert len(md.topics[topic].partitions) == 1  # num.partitions defaults to 1
    assert_roundtrip(recs, consume_all(broker, topic, {0: 5}))


def test_create_partitions(broker):
    topic = unique_topic("ck-cp")
    a = create_topic(broker, topic, 2)
    a.create_partitions([NewPartitions(topic, 4)], request_timeout=TIMEOUT)[topic].result(timeout=TIMEOUT)
    wait_leaders(a, topic, 4)
    recs = make_records(topic, partitions=4, per_partition=3)
    produce(broker, topic, recs, codec="snappy")
    assert_roundtrip(recs, consume_all(broker, topic, {p: 3 for p in range(4)}))
    # shrinking is refused
    with pytest.raises(ck.KafkaException) as ei:
        a.create_partitions([NewPartitions(topic, 3)], request_timeout=TIMEOUT)[topic].result(timeout=TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS


def test_delete_records(broker):
    topic = unique_topic("ck-dr")
    a = create_topic(broker, topic, 1)
    recs = make_records(topic, partitions=1, per_partition=10)
    produce(broker, topic, recs, codec="gzip")
    fs = a.delete_records([TopicPartition(topic, 0, 4)], request_timeout=TIMEOUT)
    dr = next(iter(fs.values())).result(timeout=TIMEOUT)
    assert dr.low_watermark == 4
    c = new_consumer(broker)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT) == (4, 10)
    finally:
        c.close()
    got = consume_all(broker, topic, {0: 6})
    assert [g.offset for g in got] == list(range(4, 10))
    assert [(g.key, g.value) for g in got] == [(r.key, r.value) for r in recs[4:]]
    res = a.list_offsets({TopicPartition(topic, 0, 0): OffsetSpec.earliest()}, request_timeout=TIMEOUT)
    assert next(iter(res.values())).result(timeout=TIMEOUT).offset == 4


def test_configs(broker):
    topic = unique_topic("ck-cfg")
    a = create_topic(broker, topic, 1, config={"cleanup.policy": "delete", "retention.ms": "3600000"})
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = a.describe_configs([res], request_timeout=TIMEOUT)[res].result(timeout=TIMEOUT)
    assert entries["retention.ms"].value == "3600000"
    assert not entries["retention.ms"].is_default
    assert "segment.bytes" in entries and "max.message.bytes" in entries
    alter = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("segment.ms", "600000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([alter], request_timeout=TIMEOUT)[alter].result(timeout=TIMEOUT)
    entries = a.describe_configs([res], request_timeout=TIMEOUT)[res].result(timeout=TIMEOUT)
    assert (entries["retention.ms"].value, entries["segment.ms"].value) == ("7200000", "600000")
    # broker resource
    md = a.list_topics(timeout=TIMEOUT)
    bres = ConfigResource(ResourceType.BROKER, str(next(iter(md.brokers))))
    bentries = a.describe_configs([bres], request_timeout=TIMEOUT)[bres].result(timeout=TIMEOUT)
    assert "log.dirs" in bentries or "log.dir" in bentries


def test_delete_topic(broker):
    topic = unique_topic("ck-del")
    a = create_topic(broker, topic, 2)
    a.delete_topics([topic], request_timeout=TIMEOUT)[topic].result(timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        md = a.list_topics(timeout=TIMEOUT)
        if topic not in md.topics:
            break
        assert time.monotonic() < deadline, "deleted topic still listed"
        time.sleep(0.2)
    # creating it again with a different partition count works
    create_topic(broker, topic, 1)


def test_create_existing_topic_fails(broker):
    topic = unique_topic("ck-dup")
    a = create_topic(broker, topic, 1)
    with pytest.raises(ck.KafkaException) as ei:
        a.create_topics([NewTopic(topic, 1, 1)], request_timeout=TIMEOUT)[topic].result(timeout=TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


@pytest.mark.parametrize("how", ["stop", "kill9"])
def test_restart_keeps_data(fresh_broker, how):
    """Acknowledged (acks=all) records, their timestamps and offsets survive a graceful stop
    and a kill -9 of the broker process (the page cache survives a process crash)."""
    b = fresh_broker
    b.start()
    topic = unique_topic(f"ck-restart-{how}")
    create_topic(b, topic, 3)
    recs = make_records(topic, null_header_value=True)
    half = len(recs) // 2
    produce(b, topic, recs[:half], codec="zstd")
    produce(b, topic, recs[half:], codec="gzip")
    b.stop() if how == "stop" else b.kill9()
    b.start()
    a = admin(b)
    wait_leaders(a, topic, 3)
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    assert_roundtrip(recs, consume_all(b, topic, counts))
    c = new_consumer(b)
    try:
        for p, n in counts.items():
            assert c.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT) == (0, n)
        for rnd in query_rounds(offset_queries(recs)):
            res = c.offsets_for_times([TopicPartition(topic, p, t) for p, t, _ in rnd], timeout=TIMEOUT)
            assert sorted((r.partition, r.offset) for r in res) == \
                sorted((p, -1 if o is None else o) for p, _, o in rnd)
    finally:
        c.close()
    # and the log keeps appending at the right offsets
    more = make_records(topic + "-more", partitions=3, per_partition=2)
    reports = produce(b, topic, more, codec="none")
    assert sorted((pt, off) for pt, off, _, _ in reports) == \
        sorted((p, counts[p] + j) for p in range(3) for j in range(2))


def test_idempotent_producer(broker):
    """enable.idempotence=true: InitProducerId, then batches with producer id and sequences."""
    topic = unique_topic("ck-idem")
    create_topic(broker, topic, 3)
    recs = make_records(topic, null_header_value=True)
    reports = produce(broker, topic, recs, codec="snappy", acks="all", **{"enable.idempotence": True})
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    per_part: dict[int, list[int]] = {}
    for pt, off, _, _ in reports:
        per_part.setdefault(pt, []).append(off)
    assert per_part == {p: list(range(n)) for p, n in counts.items()}
    assert_roundtrip(recs, consume_all(broker, topic, counts))
    assert_stored_codec(broker.data_dir, topic, counts, "snappy", idempotent=True)
