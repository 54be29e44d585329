"""Exactly-once semantics with real clients: idempotent producers, transactions and
read_committed consumers against the broker.

- Duplicate injection: a TCP proxy between an idempotent confluent-kafka producer and the broker
  lets the first Produce request through and drops its response and the connection; the
  producer's retry must not store the batch twice.
- Zombie fencing: a second producer with the same transactional.id fences the first, whose
  open transaction is aborted and whose later produce/commit fail with a fatal fenced error.
- Abort then commit: read_committed readers (confluent-kafka, aiokafka, kafka-python 3.x) see
  only the committed records, read_uncommitted readers see both, control markers take offsets.
- Consume-transform-produce under SIGKILL: clients/eos_transform.py (librdkafka) and
  java/src/TxnLoop.java (Kafka's own client) are killed at chosen points of their transactions
  (and the broker is killed -9 once) and restarted; the output holds every input record
  transformed exactly once, in input order per partition.
- Errors: transaction.timeout.ms above the broker's transaction.max.timeout.ms fails
  InitProducerId with INVALID_TRANSACTION_TIMEOUT; a transaction left open past its timeout
  is aborted by the broker and stops holding back the last stable offset.

Every client process prints JSON lines; the assertions are here."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import Broker, unique_topic
from interop_util import POLL_DEADLINE, assert_stored_codec, in_ci, require_module
from kafka_wire import Reader

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "java"))
from javakit import BUILD, JVM_OPTS, LIB, java_env  # noqa: E402,F401  (java_env is a fixture)

HERE = pathlib.Path(__file__).resolve().parent
TRANSFORMER = HERE / "clients" / "eos_transform.py"
KP_READ = HERE / "clients" / "kafka_python_read.py"

PRODUCE, METADATA = 0, 3
OP_TIMEOUT = 30  # seconds, for every blocking client call

# Broker settings for this module: no initial rebalance delay and short session timeouts (a
# killed group member is replaced within seconds), and the timed-out-transaction sweep every
# 500 ms instead of every 10 s.
TXN_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}


@pytest.fixture(scope="module")
def txn_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("runnel-txn") / "data", overrides=TXN_OVERRIDES)
    b.start()
    yield b
    b.stop()


# ---------------------------------------------------------------------------- helpers

def ck_module():
    return require_module("confluent_kafka")


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    ck_module()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(OP_TIMEOUT)
    # Wait until every partition has a leader that answers a metadata request.
    deadline = time.monotonic() + OP_TIMEOUT
    while True:
        md = admin.list_topics(topic, timeout=OP_TIMEOUT).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions \
                and all(p.leader >= 0 for p in md.partitions.values()):
            return
        assert time.monotonic() < deadline, f"topic {topic} has no leaders after {OP_TIMEOUT}s: {md}"
        time.sleep(0.1)


def txn_producer(bootstrap: str, txid: str, **extra):
    ck = ck_module()
    conf = {"bootstrap.servers": bootstrap, "transactional.id": txid, "linger.ms": 5}
    conf.update(extra)
    return ck.Producer(conf)


def produce_txn(p, topic: str, values: list[bytes], partition: int = 0) -> list[int]:
    """Produces inside the producer's open transaction and flushes; returns the offsets the
    broker acknowledged, in order."""
    acked: list = []

    def on_delivery(err, msg):
        acked.append((err, msg.offset()))

    for v in values:
        p.produce(topic, value=v, partition=partition, on_delivery=on_delivery)
    assert p.flush(OP_TIMEOUT) == 0, "transactional records not delivered within the time limit"
    errors = [e for e, _ in acked if e is not None]
    assert not errors, f"delivery errors inside the transaction: {errors}"
    return [o for _, o in acked]


def produce_plain(bootstrap: str, topic: str, values: list[bytes], partitions: int = 1, keys=None) -> None:
    """Non-transactional, acks=all; value i goes to partition i % partitions."""
    ck = ck_module()
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    errors: list = []
    for i, v in enumerate(values):
        p.produce(topic, key=None if keys is None else keys[i], value=v, partition=i % partitions,
                  on_delivery=lambda err, _m: err and errors.append(err))
        p.poll(0)
    assert p.flush(OP_TIMEOUT) == 0 and not errors, f"plain produce failed: {errors[:5]}"


def read_topic(bootstrap: str, topic: str, partitions: int, isolation: str, want: int = 0,
               deadline_s: float = POLL_DEADLINE):
    """Reads every partition from the beginning with confluent-kafka until at least `want`
    records arrived and every partition reported end-of-partition (the high watermark, or the
    last stable offset under read_committed). Returns ([(partition, offset, value)], eof set)."""
    ck = ck_module()
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("reader"),
                     "enable.auto.commit": False, "enable.partition.eof": True,
                     "isolation.level": isolation, "auto.offset.reset": "earliest"})
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    got: list[tuple[int, int, bytes]] = []
    eof: set[int] = set()
    end = time.monotonic() + deadline_s
    try:
        while time.monotonic() < end and not (len(eof) == partitions and len(got) >= want):
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == ck.KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise AssertionError(f"{isolation} consumer error on {topic}: {m.error()}")
            eof.discard(m.partition())
            got.append((m.partition(), m.offset(), m.value()))
    finally:
        c.close()
    return got, eof


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    ck = ck_module()
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("wm")})
    try:
        return c.get_watermark_offsets(ck.TopicPartition(topic, partition), timeout=OP_TIMEOUT, cached=False)
    finally:
        c.close()


def last_stable_offset(admin, topic: str, partition: int = 0) -> int:
    """ListOffsets(latest) with isolation READ_COMMITTED: the partition's last stable offset."""
    ck = ck_module()
    from confluent_kafka.admin import OffsetSpec

    tp = ck.TopicPartition(topic, partition)
    res = admin.list_offsets({tp: OffsetSpec.latest()}, isolation_level=ck.IsolationLevel.READ_COMMITTED,
                             request_timeout=OP_TIMEOUT)
    return res[tp].result(OP_TIMEOUT).offset


def kp3_python() -> str:
    py = os.environ.get("RUNNEL_KP3_PYTHON", "/tmp/venv-kp3/bin/python")
    if not os.path.exists(py):
        msg = f"kafka-python 3.x venv {py} missing (.ci/run creates it)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return py


def kafka_python_read(bootstrap: str, topic: str, count: int, isolation: str) -> dict:
    cmd = [kp3_python(), str(KP_READ), "--bootstrap", bootstrap, "--topic", topic,
           "--count", str(count), "--isolation", isolation]
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"kafka-python reader timed out; stderr tail:\n{(e.stderr or '')[-4000:]}")
    assert cp.returncode == 0, f"kafka-python reader failed (rc={cp.returncode}):\n{cp.stderr[-6000:]}"
    out = json.loads(cp.stdout)
    assert out["version"].startswith("3."), f"venv holds kafka-python {out['version']}"
    return out


async def aiokafka_read(bootstrap: str, topic: str, count: int, isolation: str):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", isolation_level=isolation)
    await c.start()
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        await c.seek_to_beginning(tp)
        got = []
        end = time.monotonic() + POLL_DEADLINE
        while len(got) < count and time.monotonic() < end:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                got += [(m.partition, m.offset, m.value) for m in msgs]
        for msgs in (await c.getmany(timeout_ms=1500)).values():  # anything beyond `count`
            got += [(m.partition, m.offset, m.value) for m in msgs]
        return got, await c.position(tp)
    finally:
        await c.stop()


def vals(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i:03d}".encode() for i in range(n)]


# ---------------------------------------------------------------------------- the proxy

class DropOneProduceResponse:
    """A TCP proxy on 127.0.0.1 in front of the broker. It parses Kafka frames in both
    directions, rewrites the broker port in Metadata responses to its own (so the client's
    every connection goes through it), and for the first Produce request it sees: forwards
    the request, waits for the broker's response, then drops that response and closes the
    client's connection. The broker has appended the batch; the producer never got the ack."""

    def __init__(self, broker_port: int):
        self.broker_port = broker_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = True
        self.connections = 0
        self.produce_requests = 0
        self.dropped_responses = 0
        self.dropped_batches: list[tuple] = []  # (partition, producer id, epoch, base sequence, records)
        self.sent_batches: list[tuple] = []  # the same, for every Produce request, in order
        self.metadata_rewrites = 0
        self.errors: list[str] = []
        self.socks: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.closed = True
        for s in [self.lsock, *self.socks]:
            try:
                s.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.lsock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.broker_port), timeout=10)
                upstream.settimeout(None)
            except OSError as e:
                self.errors.append(f"connect to broker: {e}")
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                self.socks += [client, upstream]
            pending: dict[int, tuple[int, int, bool]] = {}
            threading.Thread(target=self._client_to_broker, args=(client, upstream, pending), daemon=True).start()
            threading.Thread(target=self._broker_to_client, args=(client, upstream, pending), daemon=True).start()

    @staticmethod
    def _read_frame(s: socket.socket) -> bytes | None:
        buf = b""
        need = 4
        while len(buf) < need:
            chunk = s.recv(need - len(buf))
            if not chunk:
                return None
            buf += chunk
            if len(buf) == 4 and need == 4:
                need = 4 + struct.unpack(">i", buf)[0]
        return buf

    @staticmethod
    def _shut(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass

    def _client_to_broker(self, client, upstream, pending) -> None:
        try:
            while True:
                f = self._read_frame(client)
                if f is None:
                    break
                api_key, version, corr = struct.unpack_from(">hhi", f, 4)
                drop = False
                if api_key == PRODUCE:
                    batches = produce_request_batches(f, version)
                    with self.lock:
                        self.produce_requests += 1
                        self.sent_batches += batches
                        drop, self.armed = self.armed, False
                        if drop:
                            self.dropped_batches = batches
                pending[corr] = (api_key, version, drop)
                upstream.sendall(f)
        except OSError:
            pass
        self._shut(client, upstream)

    def _broker_to_client(self, client, upstream, pending) -> None:
        try:
            while True:
                f = self._read_frame(upstream)
                if f is None:
                    break
                (corr,) = struct.unpack_from(">i", f, 4)
                api_key, version, drop = pending.pop(corr, (None, None, False))
                if drop:
                    with self.lock:
                        self.dropped_responses += 1
                    break  # the response is lost with the connection
                if api_key == METADATA:
                    f = bytearray(f)
                    n = rewrite_metadata_ports(f, version, self.broker_port, self.port)
                    with self.lock:
                        self.metadata_rewrites += n
                    f = bytes(f)
                client.sendall(f)
        except Exception as e:  # noqa: BLE001 - reported by the test
            if not isinstance(e, OSError):
                self.errors.append(f"{type(e).__name__}: {e}")
        self._shut(client, upstream)


def produce_request_batches(frame: bytes, version: int) -> list[tuple]:
    """(partition, producer id, producer epoch, base sequence, record count) of every record
    batch in a Produce request (frame with its length prefix; versions 3-13)."""
    r = Reader(frame)
    r.take(4 + 8)  # frame length, api key, version, correlation id
    r.take(max(r.i16(), 0))  # client id
    flexible = version >= 9
    if flexible:
        r.tagged_fields()  # request header v2
        r.compact_string()  # transactional id
    else:
        r.take(max(r.i16(), 0))
    r.i16()  # acks
    r.i32()  # timeout
    out = []
    for _ in range(r.uvarint() - 1 if flexible else r.i32()):
        if version >= 13:
            r.take(16)  # topic id
        elif flexible:
            r.compact_string()
        else:
            r.take(r.i16())
        for _ in range(r.uvarint() - 1 if flexible else r.i32()):
            partition = r.i32()
            size = r.uvarint() - 1 if flexible else r.i32()
            records = r.take(max(size, 0))
            pos = 0
            while pos + 61 <= len(records):
                (length,) = struct.unpack_from(">i", records, pos + 8)
                pid, epoch, base_seq, count = struct.unpack_from(">qhii", records, pos + 43)
                out.append((partition, pid, epoch, base_seq, count))
                pos += 12 + length
            if flexible:
                r.tagged_fields()
        if flexible:
            r.tagged_fields()
    return out


def rewrite_metadata_ports(frame: bytearray, version: int, old_port: int, new_port: int) -> int:
    """In place: every broker entry of a Metadata response (any version, frame with its length
    prefix) listed on old_port is rewritten to new_port. Returns how many were rewritten."""
    r = Reader(bytes(frame))
    r.take(4)  # frame length
    r.i32()  # correlation id
    flexible = version >= 9
    if flexible:
        r.tagged_fields()  # response header v1
    if version >= 3:
        r.i32()  # throttle_time_ms
    n = r.uvarint() - 1 if flexible else r.i32()
    rewritten = 0
    for _ in range(max(n, 0)):
        r.i32()  # node_id
        if flexible:
            r.compact_string()
        else:
            r.take(r.i16())
        at = r.pos
        if r.i32() == old_port:
            struct.pack_into(">i", frame, at, new_port)
            rewritten += 1
        if version >= 1:  # rack
            if flexible:
                r.compact_string()
            else:
                ln = r.i16()
                if ln > 0:
                    r.take(ln)
        if flexible:
            r.tagged_fields()
    return rewritten


# ---------------------------------------------------------------------------- tests

def test_idempotent_retry_after_a_lost_produce_response_stores_each_record_once(txn_broker):
    ck = ck_module()
    topic = unique_topic("dup")
    create_topic(txn_broker.bootstrap, topic, 1)
    proxy = DropOneProduceResponse(txn_broker.port)
    try:
        p = ck.Producer({
            "bootstrap.servers": proxy.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "none",
            "linger.ms": 5,
            "batch.num.messages": 10,
            "retry.backoff.ms": 100,
            "message.timeout.ms": 60000,
        })
        acked: list = []
        values = vals("dup", 50)
        for v in values:
            p.produce(topic, value=v, partition=0,
                      on_delivery=lambda err, m: acked.append((err, m.value(), m.offset())))
            p.poll(0)
        assert p.flush(OP_TIMEOUT + 30) == 0, "records not delivered through the proxy"
    finally:
        proxy.close()
    assert not proxy.errors, f"proxy errors: {proxy.errors}"
    assert proxy.metadata_rewrites >= 1, "no Metadata response went through the proxy"
    assert proxy.dropped_responses == 1, \
        f"the fault was not injected: {proxy.dropped_responses} Produce responses dropped"
    assert proxy.dropped_batches and all(b[3] >= 0 for b in proxy.dropped_batches), \
        f"the dropped Produce request held no idempotent batch: {proxy.dropped_batches}"
    assert proxy.connections >= 2, f"the producer did not reconnect: {proxy.connections} connection(s)"
    resent = [b for b in proxy.dropped_batches if proxy.sent_batches.count(b) < 2]
    assert not resent, f"batches {resent} of the dropped request were never sent again " \
                       f"(sent: {proxy.sent_batches}): no duplicate reached the broker"
    errors = [e for e, _, _ in acked if e is not None]
    assert not errors, f"delivery errors: {errors[:5]}"
    assert [v for _, v, _ in sorted(acked, key=lambda a: a[2])] == values, "acknowledged values/order"
    assert sorted(o for _, _, o in acked) == list(range(50)), \
        f"acknowledged offsets {sorted(o for _, _, o in acked)} (a retried batch must be acked at its first offset)"

    got, eof = read_topic(txn_broker.bootstrap, topic, 1, "read_uncommitted", want=50)
    assert eof == {0}, "did not reach the end of the partition"
    assert [v for _, _, v in got] == values, \
        f"read back {len(got)} records; duplicates: {sorted({v for _, _, v in got if [x for _, _, x in got].count(v) > 1})[:5]}"
    assert [o for _, o, _ in got] == list(range(50)), "offsets not dense 0..49"
    # On disk: one producer id/epoch, sequences 0.. dense, no batch stored twice.
    assert_stored_codec(txn_broker.data_dir, topic, {0: 50}, "none", idempotent=True)


def test_a_second_producer_with_the_same_transactional_id_fences_the_first(txn_broker):
    ck = ck_module()
    topic, txid = unique_topic("fence"), unique_topic("txid-fence")
    create_topic(txn_broker.bootstrap, topic, 1)

    zombie = txn_producer(txn_broker.bootstrap, txid)
    zombie.init_transactions(OP_TIMEOUT)
    zombie.begin_transaction()
    assert produce_txn(zombie, topic, vals("zombie", 5)) == list(range(5))

    successor = txn_producer(txn_broker.bootstrap, txid)
    successor.init_transactions(OP_TIMEOUT)  # bumps the epoch, aborts the zombie's transaction
    successor.begin_transaction()
    successor_offsets = produce_txn(successor, topic, vals("successor", 5))
    successor.commit_transaction(OP_TIMEOUT)
    assert successor_offsets == list(range(6, 11)), \
        f"successor's offsets {successor_offsets}: expected 6..10 after the zombie's 5 and its abort marker"

    # The zombie carries on with its transaction. (No delivery callback here: confluent-kafka
    # raises the fatal error from flush() and a Python callback run after that fails with
    # SystemError; the log check below shows the late record was not stored.)
    with pytest.raises(ck.KafkaException) as exc:
        zombie.produce(topic, value=b"zombie-late", partition=0)
        zombie.flush(OP_TIMEOUT)
        zombie.commit_transaction(OP_TIMEOUT)
    err = exc.value.args[0]
    fenced = {ck.KafkaError._FENCED, ck.KafkaError.PRODUCER_FENCED, ck.KafkaError.INVALID_PRODUCER_EPOCH}
    assert err.fatal() and err.code() in fenced, \
        f"zombie's produce/commit failed with {err.name()} (fatal={err.fatal()}): {err}; expected a fatal fenced error"
    with pytest.raises(ck.KafkaException) as exc:  # and stays fenced
        zombie.commit_transaction(OP_TIMEOUT)
    assert exc.value.args[0].fatal(), f"commit after fencing: {exc.value.args[0]}"

    committed, eof = read_topic(txn_broker.bootstrap, topic, 1, "read_committed", want=5)
    assert eof == {0}, "read_committed reader did not reach the last stable offset"
    assert [v for _, _, v in committed] == vals("successor", 5), \
        f"read_committed sees {[v for _, _, v in committed]}"
    raw, _ = read_topic(txn_broker.bootstrap, topic, 1, "read_uncommitted", want=10)
    assert [(o, v) for _, o, v in raw] == list(zip(range(5), vals("zombie", 5))) + \
        list(zip(range(6, 11), vals("successor", 5))), \
        f"log holds {[(o, v) for _, o, v in raw]}: the zombie's records written, its late record not"
    assert watermarks(txn_broker.bootstrap, topic) == (0, 12), "abort and commit markers take one offset each"


def test_aborted_records_are_invisible_to_read_committed_readers(txn_broker):
    ck_module()
    topic, txid = unique_topic("abort"), unique_topic("txid-abort")
    create_topic(txn_broker.bootstrap, topic, 1)
    p = txn_producer(txn_broker.bootstrap, txid)
    p.init_transactions(OP_TIMEOUT)
    p.begin_transaction()
    assert produce_txn(p, topic, vals("aborted", 10)) == list(range(10))
    p.abort_transaction(OP_TIMEOUT)
    p.begin_transaction()
    assert produce_txn(p, topic, vals("committed", 10)) == list(range(11, 21)), "offset 10 is the abort marker"
    p.commit_transaction(OP_TIMEOUT)
    assert watermarks(txn_broker.bootstrap, topic) == (0, 22), "high watermark after both markers"

    expected_committed = list(zip(range(11, 21), vals("committed", 10)))
    expected_all = list(zip(range(10), vals("aborted", 10))) + expected_committed

    got, eof = read_topic(txn_broker.bootstrap, topic, 1, "read_committed", want=10)
    assert eof == {0}
    assert [(o, v) for _, o, v in got] == expected_committed, f"confluent-kafka read_committed: {got}"
    got, eof = read_topic(txn_broker.bootstrap, topic, 1, "read_uncommitted", want=20)
    assert eof == {0}
    assert [(o, v) for _, o, v in got] == expected_all, f"confluent-kafka read_uncommitted: {got}"

    require_module("aiokafka")
    for isolation, expected in (("read_committed", expected_committed), ("read_uncommitted", expected_all)):
        got, pos = asyncio.run(asyncio.wait_for(aiokafka_read(txn_broker.bootstrap, topic, len(expected),
                                                              isolation), 120))
        assert [(o, v) for _, o, v in got] == expected, f"aiokafka {isolation}: {got}"
        assert pos == 22, f"aiokafka {isolation}: position {pos} after the commit marker, expected 22"

    for isolation, expected in (("read_committed", expected_committed), ("read_uncommitted", expected_all)):
        out = kafka_python_read(txn_broker.bootstrap, topic, len(expected), isolation)
        got = [(r["offset"], bytes.fromhex(r["value"])) for r in out["records"]]
        assert got == expected, f"kafka-python {out['version']} {isolation}: {got}"


def test_transaction_timeout_above_the_broker_maximum_is_rejected(fresh_broker):
    ck = ck_module()
    fresh_broker.overrides["transaction.max.timeout.ms"] = "60000"
    fresh_broker.start()
    p = txn_producer(fresh_broker.bootstrap, unique_topic("txid-toolong"), **{"transaction.timeout.ms": 120000})
    with pytest.raises(ck.KafkaException) as exc:
        p.init_transactions(OP_TIMEOUT)
    err = exc.value.args[0]
    assert err.code() == ck.KafkaError.INVALID_TRANSACTION_TIMEOUT, \
        f"init_transactions failed with {err.name()}: {err}; expected INVALID_TRANSACTION_TIMEOUT"
    assert "transaction timeout" in str(err).lower() or "INVALID_TRANSACTION_TIMEOUT" in str(err), str(err)

    # The limit itself is allowed, and such a producer works.
    topic = unique_topic("maxtimeout")
    create_topic(fresh_broker.bootstrap, topic, 1)
    ok = txn_producer(fresh_broker.bootstrap, unique_topic("txid-max"), **{"transaction.timeout.ms": 60000})
    ok.init_transactions(OP_TIMEOUT)
    ok.begin_transaction()
    produce_txn(ok, topic, vals("max", 3))
    ok.commit_transaction(OP_TIMEOUT)
    got, _ = read_topic(fresh_broker.bootstrap, topic, 1, "read_committed", want=3)
    assert [v for _, _, v in got] == vals("max", 3)


def test_a_hanging_transaction_is_aborted_after_its_timeout(txn_broker):
    ck = ck_module()
    from confluent_kafka.admin import AdminClient

    topic = unique_topic("hang")
    create_topic(txn_broker.bootstrap, topic, 1)
    admin = AdminClient({"bootstrap.servers": txn_broker.bootstrap})
    stalled = txn_producer(txn_broker.bootstrap, unique_topic("txid-hang"), **{"transaction.timeout.ms": 2000})
    stalled.init_transactions(OP_TIMEOUT)
    stalled.begin_transaction()
    t0 = time.monotonic()
    assert produce_txn(stalled, topic, vals("hanging", 5)) == list(range(5))
    lso_while_open = last_stable_offset(admin, topic)
    sampled_after = time.monotonic() - t0
    produce_plain(txn_broker.bootstrap, topic, vals("after", 5))
    # The stalled producer neither commits nor aborts from here on.

    got, eof = read_topic(txn_broker.bootstrap, topic, 1, "read_committed", want=5, deadline_s=15)
    waited = time.monotonic() - t0
    assert [v for _, _, v in got] == vals("after", 5), \
        f"read_committed after {waited:.1f}s: {got}; expected only the 5 later non-transactional records"
    assert eof == {0}, "read_committed reader did not reach the last stable offset"
    assert [o for _, o, _ in got] == list(range(5, 10)), f"offsets {[o for _, o, _ in got]}"
    assert waited < 12, f"the broker took {waited:.1f}s to abort a transaction with a 2 s timeout"
    if sampled_after < 1.5:  # sampled well before the 2 s timeout could have fired
        assert lso_while_open == 0, f"last stable offset {lso_while_open} while the transaction was open"
    assert last_stable_offset(admin, topic) == 11, "LSO after the abort marker"
    assert watermarks(txn_broker.bootstrap, topic) == (0, 11), "5 + 5 records and one abort marker"
    raw, _ = read_topic(txn_broker.bootstrap, topic, 1, "read_uncommitted", want=10)
    assert [v for _, _, v in raw] == vals("hanging", 5) + vals("after", 5)

    # The timed-out transaction is gone: committing it now fails.
    with pytest.raises(ck.KafkaException):
        stalled.commit_transaction(OP_TIMEOUT)


# ---------------------------------------------------------------------------- consume-transform-produce

class LoopProcess:
    """A consume-transform-produce process printing JSON lines (clients/eos_transform.py or
    java/src/TxnLoop.java)."""

    def __init__(self, cmd: list[str], name: str, env: dict | None = None, dump_signal=signal.SIGUSR1):
        self.name = name
        self.dump_signal = dump_signal  # makes the process print its stacks to stderr
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        self.events: queue.Queue = queue.Queue()
        self.history: list[dict] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"unparsed": line})
        self.events.put(None)  # EOF: the process is gone

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-200]

    def next_event(self, timeout: float):
        try:
            e = self.events.get(timeout=timeout)
        except queue.Empty:
            return {"timeout": True}
        if e is not None:
            self.history.append(e)
        return e

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def describe(self, stacks: bool = False) -> str:
        """Its last events and stderr; with stacks=True (a stalled process) its thread stacks first."""
        if stacks and self.proc.poll() is None:
            self.proc.send_signal(self.dump_signal)
            time.sleep(1)
        return (f"{self.name}: rc={self.proc.poll()} last events={self.history[-8:]} stderr tail:\n"
                f"{''.join(self.stderr[-(120 if stacks else 25):])}")


def run_loop_until_done(start, plans: list[str | None], total: int, broker: Broker | None = None,
                        broker_kill_at: int | None = None, deadline_s: float = 240):
    """Starts loop processes one after another, each with the next hold plan ("K:PHASE", or
    None once the plans are used up), and SIGKILLs each when it reports holding there. A
    process that exits on its own is replaced by the next one (at most 3 times). When the
    committed input positions first reach broker_kill_at, the broker is killed -9 and restarted
    under the running process. Returns (incarnations, unplanned exits) once the committed
    positions sum to `total`, i.e. every input record was consumed in a committed transaction."""
    plans = list(plans)
    incarnations: list[LoopProcess] = []
    unplanned: list[str] = []
    committed: dict[str, int] = {}
    broker_killed = False
    end = time.monotonic() + deadline_s
    while True:
        plan = plans.pop(0) if plans else None
        proc = start(plan)
        incarnations.append(proc)
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    pytest.fail(f"exactly-once loop not done within {deadline_s}s: committed {committed}, "
                                f"{sum(committed.values())}/{total}\n{proc.describe(stacks=True)}", pytrace=False)
                ev = proc.next_event(min(left, 5))
                if ev is None:  # exited on its own
                    proc.proc.wait(timeout=10)
                    unplanned.append(proc.describe())
                    if len(unplanned) > 3:
                        pytest.fail("loop process keeps exiting:\n" + "\n\n".join(unplanned), pytrace=False)
                    break
                if "holding" in ev:
                    assert plan is not None and ev["phase"] == plan.split(":")[1], f"unexpected hold {ev}"
                    proc.kill9()
                    assert proc.proc.returncode == -9
                    break
                if ev.get("phase") == "committed":
                    for part, off in ev["positions"].items():
                        committed[part] = max(committed.get(part, 0), off)
                    progress = sum(committed.values())
                    if broker is not None and not broker_killed and progress >= (broker_kill_at or total):
                        broker.kill9()
                        broker.start(timeout=60)
                        broker_killed = True
                    if progress >= total:
                        proc.kill9()
                        assert broker is None or broker_killed, "the broker was not killed"
                        assert not plans, f"done before the plans {plans} were used"
                        return incarnations, unplanned
        except BaseException:
            proc.kill9()
            raise


def check_exactly_once(bootstrap: str, in_values: list[bytes], out_topic: str, partitions: int, transform):
    """The output, read_committed, is every input record transformed, once, in input order per
    partition (input i was produced to partition i % partitions); the raw log holds more (the
    aborted attempts), so the aborts really happened."""
    expected = {p: [transform(v) for i, v in enumerate(in_values) if i % partitions == p] for p in range(partitions)}
    got, eof = read_topic(bootstrap, out_topic, partitions, "read_committed", want=len(in_values), deadline_s=60)
    assert eof == set(range(partitions)), f"read_committed reader reached the end of {sorted(eof)} only"
    per: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for p, _, v in got:
        per[p].append(v)
    seen: dict[bytes, int] = {}
    for _, _, v in got:
        seen[v] = seen.get(v, 0) + 1
    dups = sorted(v for v, n in seen.items() if n > 1)
    missing = sorted(set(v for vs in expected.values() for v in vs) - set(seen))
    assert len(got) == len(in_values) and not dups and not missing, \
        f"read_committed output: {len(got)} records for {len(in_values)} inputs; " \
        f"{len(dups)} duplicated e.g. {dups[:5]}; {len(missing)} missing e.g. {missing[:5]}"
    for p in range(partitions):
        assert per[p] == expected[p], f"output partition {p} is not its input partition transformed, in order"
    raw, _ = read_topic(bootstrap, out_topic, partitions, "read_uncommitted", want=len(in_values) + 1, deadline_s=20)
    return len(raw)


def test_consume_transform_produce_is_exactly_once_across_kill_9(fresh_broker):
    ck_module()
    broker = fresh_broker
    broker.overrides.update(TXN_OVERRIDES)
    broker.start()
    n, partitions = 2000, 3
    in_topic, out_topic = unique_topic("eos-in"), unique_topic("eos-out")
    group, txid = unique_topic("eos-group"), unique_topic("eos-txid")
    create_topic(broker.bootstrap, in_topic, partitions)
    create_topic(broker.bootstrap, out_topic, partitions)
    in_values = [f"in-{i:05d}".encode() for i in range(n)]
    produce_plain(broker.bootstrap, in_topic, in_values, partitions, keys=[f"k{i}".encode() for i in range(n)])

    def start(plan):
        cmd = [sys.executable, str(TRANSFORMER), "--bootstrap", broker.bootstrap, "--input", in_topic,
               "--output", out_topic, "--group", group, "--txid", txid, "--batch", "20"]
        if plan:
            cmd += ["--hold-at", plan]
        return LoopProcess(cmd, f"eos_transform.py hold={plan}")

    # SIGKILLed mid-transaction with records in the log, with offsets sent but not committed,
    # and right after a commit; then the broker is killed -9 while the last one runs.
    plans = ["8:produced", "15:offsets", "10:committed", "12:produced", "6:offsets", None]
    incarnations, unplanned = run_loop_until_done(start, plans, n, broker=broker, broker_kill_at=1300)
    assert len(incarnations) >= 6 and sum(p.proc.returncode == -9 for p in incarnations) >= 6
    raw = check_exactly_once(broker.bootstrap, in_values, out_topic, partitions,
                             lambda v: v.upper() + b"|eos")
    assert raw > n, f"the raw output log holds {raw} records: the killed transactions left nothing to abort"


def test_java_consume_transform_produce_is_exactly_once_across_kill_9(java_env, txn_broker):
    n, partitions = 1000, 3
    in_topic, out_topic = unique_topic("jeos-in"), unique_topic("jeos-out")
    group, txid = unique_topic("jeos-group"), unique_topic("jeos-txid")
    create_topic(txn_broker.bootstrap, in_topic, partitions)
    create_topic(txn_broker.bootstrap, out_topic, partitions)
    in_values = [f"jin-{i:05d}".encode() for i in range(n)]
    produce_plain(txn_broker.bootstrap, in_topic, in_values, partitions, keys=[f"k{i}".encode() for i in range(n)])

    def start(plan):
        cmd = ["java", *JVM_OPTS, "-cp", f"{LIB}/*:{BUILD}", "TxnLoop", txn_broker.bootstrap, in_topic, out_topic,
               group, txid] + ([plan] if plan else [])
        return LoopProcess(cmd, f"TxnLoop hold={plan}", env={"RUNNEL_JAVA_DEADLINE_S": "200"},
                           dump_signal=signal.SIGQUIT)

    incarnations, unplanned = run_loop_until_done(start, ["6:produced", None], n, deadline_s=180)
    assert not unplanned, "TxnLoop exited on its own:\n" + "\n\n".join(unplanned)
    raw = check_exactly_once(txn_broker.bootstrap, in_values, out_topic, partitions,
                             lambda v: v.upper() + b"|eos-java")
    assert raw > n, f"the raw output log holds {raw} records: the killed transaction left nothing to abort"


# --------------------------------------------------------------------------- on disk, read by Kafka

def test_markers_txnindex_and_producer_snapshot_are_what_kafkas_dump_log_segments_reads(fresh_broker, java_env):
    """Commit 3 records, abort 2, commit 1; after a clean stop Kafka's DumpLogSegments
    finds the markers in the log, the aborted range in the .txnindex and the producer in the
    snapshot written at the log end."""
    from javakit import dump_log_segments

    fresh_broker.start()
    topic = unique_topic("dump")
    create_topic(fresh_broker.bootstrap, topic, 1)
    p = txn_producer(fresh_broker.bootstrap, f"dump-{topic}")
    p.init_transactions(OP_TIMEOUT)
    for values, commit in ((vals("c", 3), True), (vals("a", 2), False), (vals("d", 1), True)):
        p.begin_transaction()
        produce_txn(p, topic, values)
        (p.commit_transaction if commit else p.abort_transaction)(OP_TIMEOUT)
    assert fresh_broker.stop() in (0, 143), "clean stop (143: a JVM ended by SIGTERM)"
    part = fresh_broker.data_dir / f"{topic}-0"
    # c0..c2 @0-2, COMMIT @3, a0..a1 @4-5, ABORT @6, d0 @7, COMMIT @8: log end 9.
    log = dump_log_segments(fresh_broker, [part / f"{0:020d}.log"], "--print-data-log")
    markers = re.findall(r"offset: (\d+) .*endTxnMarker: (COMMIT|ABORT)", log)
    assert markers == [("3", "COMMIT"), ("6", "ABORT"), ("8", "COMMIT")], log[:3000]
    txn = dump_log_segments(fresh_broker, [part / f"{0:020d}.txnindex"])
    entries = re.findall(r"producerId: (\d+) firstOffset: (\d+) lastOffset: (\d+) lastStableOffset: (\d+)", txn)
    assert len(entries) == 1 and entries[0][1:] == ("4", "6", "7"), txn
    snap = dump_log_segments(fresh_broker, [part / f"{9:020d}.snapshot"])
    assert re.search(rf"producerId: {entries[0][0]} producerEpoch: \d+ .*currentTxnFirstOffset: OptionalLong.empty", snap), snap
