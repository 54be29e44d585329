"""Log compaction (cleanup.policy=compact) seen by real clients: librdkafka writes keyed
records and tombstones in several segments, the broker's log cleaner compacts them, and
librdkafka, Apache Kafka's ConsoleConsumer and kafka-dump-log read the result: the last
record of every key at the offset it was acknowledged with, tombstones included, valid
batches and indexes; an aborted transaction's marker goes once its records did, and
read_committed readers still see every committed record."""

import pathlib
import sys
import time

import pytest

from conftest import Broker, unique_topic
from interop_util import POLL_DEADLINE, require_module

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "java"))
from javakit import dump_log_segments, java_env, parse_dump, tool  # noqa: E402,F401

KEYS = 40
ROUNDS = 3


@pytest.fixture(scope="module")
def cleaner_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("runnel-compaction") / "data",
               {"log.cleaner.backoff.ms": "100"})
    b.start()
    yield b
    b.stop()


def _create(ck_admin, bootstrap, topic, **configs):
    from confluent_kafka.admin import NewTopic
    admin = ck_admin({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, 1, 1, config=configs)])[topic]
    fut.result(timeout=20)


def _compacted_topic(broker, prefix, **configs):
    """A new one-partition compacted topic whose segments roll every 100 ms and are cleaned
    at any dirty ratio."""
    from confluent_kafka.admin import AdminClient
    topic = unique_topic(prefix)
    _create(AdminClient, broker.bootstrap, topic, **{
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        **configs})
    return topic


def _produce(ck, bootstrap, records, compression):
    """Produces (key, value) pairs, one flush per call; returns [(key, value, offset)]."""
    p = ck.Producer({"bootstrap.servers": bootstrap, "compression.type": compression,
                     "linger.ms": 5, "acks": "all"})
    acked, errors = [], []

    def report(err, msg):
        if err is None:
            acked.append((msg.key().decode(), msg.value() and msg.value().decode(), msg.offset()))
        else:
            errors.append(err)

    for topic, key, value in records:
        p.produce(topic, key=key.encode(), value=value and value.encode(), on_delivery=report)
    assert p.flush(30) == 0 and not errors, errors
    return acked


def _read_all(ck, bootstrap, topic, end):
    """Every record from the beginning of partition 0 up to offset `end`: [(offset, key, value)]."""
    from confluent_kafka import TopicPartition
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"),
                     "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    out, deadline = [], time.time() + POLL_DEADLINE
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    if m.offset() >= end:
                        break
                    continue
                raise AssertionError(m.error())
            out.append((m.offset(), m.key().decode(), m.value() and m.value().decode()))
    finally:
        c.close()
    return out


def test_the_cleaner_keeps_each_keys_last_record_and_clients_read_it(cleaner_broker, java_env):
    ck = require_module("confluent_kafka")
    broker = cleaner_broker
    topic = _compacted_topic(broker, "compact", **{"index.interval.bytes": "100"})
    acked = []
    for rnd in range(ROUNDS):
        keys = range(KEYS) if rnd < ROUNDS - 1 else range(0, KEYS, 3)
        recs = [(topic, f"key-{k}", f"round-{rnd}-" + "x" * k) for k in keys]
        if rnd == 1:
            recs += [(topic, f"key-{k}", None) for k in range(0, KEYS, 10)]  # tombstones
        acked += _produce(ck, broker.bootstrap, recs, ["lz4", "zstd", "none"][rnd])
        time.sleep(0.2)  # past segment.ms: the next append rolls the segment
    # One more record rolls the last round's segment, so the cleaner may compact it.
    acked += _produce(ck, broker.bootstrap, [(topic, "sentinel", "end")], "none")
    end = max(o for _, _, o in acked) + 1
    latest = {}
    for key, value, offset in sorted(acked, key=lambda a: a[2]):
        latest[key] = (offset, value)
    want = sorted((o, k, v) for k, (o, v) in latest.items())

    got, deadline = None, time.time() + POLL_DEADLINE
    while time.time() < deadline:
        got = _read_all(ck, broker.bootstrap, topic, end)
        if got == want:
            break
        time.sleep(0.3)
    assert got == want, (
        f"after compaction librdkafka read {len(got)} records, expected the {len(want)} last ones "
        f"of each key at their acknowledged offsets; first differences: "
        f"{[g for g in got if g not in want][:5]} / missing {[w for w in want if w not in got][:5]}")
    assert any(v is None for _, _, v in got), "the tombstones are kept (delete.retention.ms is a day)"

    # Kafka's own consumer reads the same records at the same offsets.
    r = tool("org.apache.kafka.tools.consumer.ConsoleConsumer", "--topic", topic, "--partition", "0",
             "--offset", "earliest", "--max-messages", str(len(want)), "--timeout-ms", "30000",
             "--property", "print.key=true", "--property", "print.offset=true",
             bootstrap=broker.bootstrap, timeout=90).expect_ok(broker, "ConsoleConsumer")
    lines = r.stdout.splitlines()
    assert lines == [f"Offset:{o}\t{k}\t{'null' if v is None else v}" for o, k, v in want], r.stdout[:2000]

    # kafka-dump-log finds valid batches and sane indexes in the cleaned segments.
    part_dir = broker.data_dir / f"{topic}-0"
    bases = sorted(int(p.stem) for p in part_dir.glob("*.log"))[:-1]
    files = [part_dir / f"{b:020d}{ext}" for b in bases for ext in (".log", ".index", ".timeindex")]
    out = dump_log_segments(broker, files, "--deep-iteration", "--print-data-log", "--index-sanity-check",
                            allow=("Non-consecutive offsets",))
    batches, records = parse_dump(out, "cleaned segments")
    assert batches and all(b["valid"] for b in batches), out[-3000:]
    for b in bases:
        assert f"{b:020d}.index passed sanity check." in out, out[-2000:]
    assert [(r["offset"], r["key"]) for r in records] == [(o, k) for o, k, _ in want if k != "sentinel"]


def test_a_record_without_a_key_is_refused_by_a_compacted_topic(cleaner_broker):
    ck = require_module("confluent_kafka")
    from confluent_kafka.admin import AdminClient
    broker = cleaner_broker
    topic = unique_topic("compact-nokey")
    _create(AdminClient, broker.bootstrap, topic, **{"cleanup.policy": "compact"})
    p = ck.Producer({"bootstrap.servers": broker.bootstrap, "retries": 0})
    errors = []
    p.produce(topic, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    assert len(errors) == 1 and errors[0] is not None, errors
    assert errors[0].code() == ck.KafkaError.INVALID_RECORD, errors[0]
    # The broker still takes keyed records, from offset 0: nothing was written.
    acked = _produce(ck, broker.bootstrap, [(topic, "k", "v")], "none")
    assert [o for _, _, o in acked] == [0]


def test_committed_offsets_survive_compaction_of_consumer_offsets_and_a_restart(cleaner_broker):
    ck = require_module("confluent_kafka")
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource)
    broker = cleaner_broker
    topic = unique_topic("compact-commits")
    _create(AdminClient, broker.bootstrap, topic)
    group = unique_topic("compact-group")
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                     "enable.auto.commit": False})
    tp = TopicPartition(topic, 0, 1)
    c.commit(offsets=[tp], asynchronous=False)  # creates __consumer_offsets
    # Small segments for the offsets topic, as a user may set with kafka-configs.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"}.items()]
    res = ConfigResource("topic", "__consumer_offsets", incremental_configs=entries)
    for f in admin.incremental_alter_configs([res]).values():
        f.result(timeout=20)
    last = 0
    for i in range(2, 12):
        c.commit(offsets=[TopicPartition(topic, 0, i)], asynchronous=False)
        last = i
        time.sleep(0.15)
    deadline = time.time() + POLL_DEADLINE
    while time.time() < deadline and "cleaned log topic=__consumer_offsets" not in broker.log_text():
        time.sleep(0.2)
    assert "cleaned log topic=__consumer_offsets" in broker.log_text(), "the offsets topic was never compacted"
    c.close()
    broker.stop()
    broker.start()
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                     "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, 0)], timeout=20)
        assert [(p.topic, p.partition, p.offset) for p in got] == [(topic, 0, last)]
    finally:
        c.close()


def test_an_aborted_transactions_marker_goes_and_read_committed_readers_still_see_the_rest(
        cleaner_broker, java_env):
    """Once the cleaner removed an aborted transaction's records it removes the abort marker
    after delete.retention.ms, and the transaction's entry in the aborted-transaction index
    with it: a read_committed consumer told of an aborted transaction whose marker is gone
    would skip the same producer's later, committed records."""
    ck = require_module("confluent_kafka")
    broker = cleaner_broker
    topic = _compacted_topic(broker, "compact-txn", **{"delete.retention.ms": "500"})
    p = ck.Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": unique_topic("tx"),
                     "linger.ms": 5})
    p.init_transactions(30)
    for commit, value in ((False, "aborted"), (True, "committed")):
        p.begin_transaction()
        for k in range(5):
            p.produce(topic, key=f"{value}-{k}".encode(), value=value.encode(), partition=0)
        assert p.flush(30) == 0
        (p.commit_transaction if commit else p.abort_transaction)(30)
        time.sleep(0.2)  # past segment.ms: the next append rolls the segment
    # A record after a roll, so the segments holding both transactions may be cleaned.
    _produce(ck, broker.bootstrap, [(topic, "sentinel", "end")], "none")

    part_dir = broker.data_dir / f"{topic}-0"

    def txn_index_bytes():
        return sum(f.stat().st_size for f in part_dir.glob("*.txnindex"))

    deadline = time.time() + POLL_DEADLINE
    while time.time() < deadline and txn_index_bytes() > 0:
        time.sleep(0.2)
    assert txn_index_bytes() == 0, "the aborted transaction is still in the .txnindex"

    want = [(k, "committed") for k in (f"committed-{i}" for i in range(5))] + [("sentinel", "end")]
    from confluent_kafka import TopicPartition
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g"),
                     "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, 0, 0)])
    got, deadline = [], time.time() + POLL_DEADLINE
    try:
        while time.time() < deadline and len(got) < len(want):
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append((m.key().decode(), m.value().decode()))
    finally:
        c.close()
    assert got == want

    r = tool("org.apache.kafka.tools.consumer.ConsoleConsumer", "--topic", topic, "--partition", "0",
             "--offset", "earliest", "--isolation-level", "read_committed",
             "--max-messages", str(len(want)), "--timeout-ms", "30000", "--property", "print.key=true",
             bootstrap=broker.bootstrap, timeout=90).expect_ok(broker, "ConsoleConsumer")
    assert r.stdout.splitlines() == [f"{k}\t{v}" for k, v in want], r.stdout[:2000]

    # The abort marker is gone from the cleaned segments; the commit marker stays while its
    # transaction's records do.
    files = sorted(part_dir.glob("*.log"))
    out = dump_log_segments(broker, files, "--deep-iteration", allow=("Non-consecutive offsets",))
    assert "endTxnMarker: ABORT" not in out, out[-3000:]
    assert "endTxnMarker: COMMIT" in out, out[-3000:]
    batch_lines = [line for line in out.splitlines() if line.startswith("baseOffset:")]
    assert batch_lines and all("isvalid: true" in line for line in batch_lines), out[-3000:]
