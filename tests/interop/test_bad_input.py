"""Malformed and unexpected input on raw sockets. For each case the broker must answer as
Kafka does (closing *that* connection is what Kafka does for malformed frames, unknown API
keys and unsupported versions other than ApiVersions'), must never leave a request hanging,
and must keep serving everyone else: a raw connection opened before the bad input and a
confluent-kafka producer/consumer pair keep working after each case."""

import os
import struct
import time

import pytest

from conftest import unique_topic
from interop_util import POLL_DEADLINE, now_ms, require_module
from kafka_wire import (Closed, api_versions_request, closed_or_frame, connect, fetch_request_v9, frame,
                        header_v1, header_v2, parse_api_versions, parse_fetch_v9, parse_produce_v6,
                        parse_produce_v9, produce_request_v6, produce_request_v9, record_batch,
                        recv_frame, uvarint)

ck = require_module("confluent_kafka")
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

# APIs the broker says it implements (brief of this suite): they must be advertised.
IMPLEMENTED = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions",
               19: "CreateTopics", 20: "DeleteTopics", 21: "DeleteRecords", 32: "DescribeConfigs",
               37: "CreatePartitions", 44: "IncrementalAlterConfigs", 60: "DescribeCluster"}


class Bystander:
    """Clients connected before the bad input that must not notice it."""

    def __init__(self, broker):
        self.broker = broker
        self.topic = unique_topic("bystander")
        a = AdminClient({"bootstrap.servers": broker.bootstrap})
        a.create_topics([NewTopic(self.topic, 1, 1)], request_timeout=20)[self.topic].result(timeout=20)
        self.producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all",
                                  "enable.idempotence": False, "linger.ms": 0,
                                  "message.timeout.ms": 20000})
        self.consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bystander",
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        self.consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self.raw = connect(broker)
        self.corr = 1000
        self.n = 0
        self.check()

    def check(self, what=""):
        b = self.broker
        assert b.proc.poll() is None, f"broker process died ({what}): rc={b.proc.returncode}"
        # the raw connection opened earlier still gets answers
        self.corr += 1
        try:
            self.raw.sendall(api_versions_request(3, self.corr))
            resp = recv_frame(self.raw)
        except (Closed, OSError) as e:
            time.sleep(0.5)
            state = "alive" if b.proc.poll() is None else f"DEAD rc={b.proc.returncode}"
            pytest.fail(f"bystander raw connection lost after {what} ({e!r}); broker {state}")
        corr, err, apis, _, _ = parse_api_versions(resp, 3)
        assert (corr, err) == (self.corr, 0), f"bystander raw connection after {what}"
        # a real client still produces and consumes
        value = f"alive-{self.n}".encode()
        self.n += 1
        errs = []
        self.producer.produce(self.topic, value=value, on_delivery=lambda e, m: errs.append(e))
        assert self.producer.flush(POLL_DEADLINE) == 0, f"bystander produce not delivered after {what}"
        assert errs == [None], f"bystander produce failed after {what}: {errs}"
        deadline = time.monotonic() + POLL_DEADLINE
        while time.monotonic() < deadline:
            m = self.consumer.poll(0.5)
            if m is not None:
                assert m.error() is None, f"bystander consumer error after {what}: {m.error()}"
                if m.value() == value:
                    return
        pytest.fail(f"bystander consumer did not get {value!r} after {what}")

    def close(self):
        self.raw.close()
        self.consumer.close()
        self.producer.flush(5)
        self.producer = None  # destroys the librdkafka handle before the broker stops


@pytest.fixture(scope="module")
def _bystander(broker):
    box = [Bystander(broker)]
    yield box
    box[0].close()


@pytest.fixture
def bystander(broker, _bystander):
    """The module's bystander; if an earlier case killed the broker (that case has failed
    already), restart it on the same port and data so later cases still report on their own."""
    if broker.proc.poll() is not None:
        _bystander[0].close()
        broker.start()
        _bystander[0] = Bystander(broker)
    return _bystander[0]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- ApiVersions

@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_api_versions_each_version(broker, bystander, version):
    with connect(broker) as s:
        s.sendall(api_versions_request(version, 7))
        corr, err, apis, throttle, _ = parse_api_versions(recv_frame(s), version)
    assert (corr, err) == (7, 0)
    missing = {k: n for k, n in IMPLEMENTED.items() if k not in apis}
    assert not missing, f"implemented APIs not advertised: {missing}"
    assert all(lo <= hi for lo, hi in apis.values()), apis
    assert apis[18][0] == 0 and apis[18][1] >= 3, f"ApiVersions range {apis[18]}"
    if version >= 1:
        assert throttle == 0
    bystander.check(f"ApiVersions v{version}")


@pytest.mark.parametrize("version", [5, 99, 32767])
def test_api_versions_unsupported_version_kip511(broker, bystander, version):
    """A too-new ApiVersions gets a v0-encoded UNSUPPORTED_VERSION (35) that still lists the
    broker's ApiVersions range; the connection stays usable (kafka-python 3.x retries on it)."""
    with connect(broker) as s:
        s.sendall(api_versions_request(version, 42))
        resp = recv_frame(s)
        corr, err, apis, _, _ = parse_api_versions(resp, 0)  # exact v0 layout, no trailing bytes
        assert corr == 42
        assert err == 35, f"error {err}, want UNSUPPORTED_VERSION (35)"
        assert 18 in apis, f"KIP-511: the error must list the ApiVersions range, got {apis}"
        lo, hi = apis[18]
        assert lo == 0 and 3 <= hi < version
        # the client retries at the highest version the broker gave it, on the same connection
        s.sendall(api_versions_request(hi, 43))
        corr, err, apis2, _, _ = parse_api_versions(recv_frame(s), hi)
        assert (corr, err) == (43, 0)
        assert 0 in apis2 and 1 in apis2 and 3 in apis2
    bystander.check(f"ApiVersions v{version}")


def test_pipelined_requests_answered_in_order(broker, bystander):
    reqs = [(v, 100 + i) for i, v in enumerate([0, 3, 1, 4, 2, 0, 3, 3, 1, 0])]
    with connect(broker) as s:
        s.sendall(b"".join(api_versions_request(v, c) for v, c in reqs))
        got = [parse_api_versions(recv_frame(s), v)[:2] for v, _ in reqs]
    assert got == [(c, 0) for _, c in reqs]
    bystander.check("pipelined")


def test_request_split_byte_by_byte(broker, bystander):
    req = api_versions_request(3, 5) + api_versions_request(0, 6)
    with connect(broker) as s:
        for i in range(len(req)):
            s.sendall(req[i:i + 1])
            if i % 7 == 0:
                time.sleep(0.002)
        assert parse_api_versions(recv_frame(s), 3)[:2] == (5, 0)
        assert parse_api_versions(recv_frame(s), 0)[:2] == (6, 0)
    bystander.check("byte-by-byte request")


# ---------------------------------------------------------------- unknown / unsupported

def expect_closed_or_error(s, corr, what):
    kind, resp = closed_or_frame(s, 10)
    if kind == "frame":
        got = struct.unpack(">i", resp[:4])[0]
        assert got == corr, f"{what}: answered with correlation id {got}, want {corr}"
    return kind


def test_unknown_api_key(broker, bystander):
    with connect(broker) as s:
        s.sendall(frame(header_v1(9999, 0, 77) + b"\x00\x00\x00\x00"))
        expect_closed_or_error(s, 77, "api key 9999")
    with connect(broker) as s:  # flexible-looking header too
        s.sendall(frame(header_v2(9999, 3, 78) + uvarint(0)))
        expect_closed_or_error(s, 78, "api key 9999 (header v2)")
    bystander.check("unknown api key")


def test_metadata_unsupported_version(broker, bystander):
    with connect(broker) as s:
        s.sendall(frame(header_v2(3, 99, 55) + uvarint(0) + b"\x01\x00" + uvarint(0)))
        expect_closed_or_error(s, 55, "Metadata v99")
    bystander.check("Metadata v99")


def test_unadvertised_api_gets_clean_answer(broker, bystander):
    """An API the broker does not advertise (e.g. FindCoordinator while there is no group
    coordinator) gets an error or a closed connection, never a hang."""
    with connect(broker) as s:
        s.sendall(api_versions_request(3, 1))
        _, _, apis, _, _ = parse_api_versions(recv_frame(s), 3)
    unadvertised = [k for k in (10, 11, 22, 68, 57) if k not in apis]
    if not unadvertised:
        pytest.skip("all probed APIs are advertised now")
    for k in unadvertised:
        with connect(broker) as s:
            s.sendall(frame(header_v2(k, 4, 66) + uvarint(0) + uvarint(0)))
            expect_closed_or_error(s, 66, f"unadvertised api {k}")
    bystander.check("unadvertised api")


# ---------------------------------------------------------------- malformed frames

GARBAGE = {
    "http-request": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",  # length 0x47455420 > max
    "tls-client-hello": bytes.fromhex("16030100a5010000a10303") + os.urandom(32),
    "random-framed": frame(bytes(range(256)) * 2),
    "zero-length-frame": struct.pack(">i", 0),
    "negative-length": struct.pack(">i", -1) + b"\x00" * 16,
    "frame-shorter-than-header": frame(b"\x00\x12\x00"),
    "bad-client-id-length": frame(struct.pack(">hhih", 18, 0, 9, 30000) + b"x"),
    "truncated-flexible-body": frame(header_v2(18, 3, 9) + uvarint(50) + b"ab"),
    "metadata-huge-array-count": frame(header_v1(3, 4, 9) + struct.pack(">i", 0x7FFFFFF0)),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_frame(broker, bystander, name):
    with connect(broker) as s:
        s.sendall(GARBAGE[name])
        kind, resp = closed_or_frame(s, 10)
        if kind == "frame":
            # an answer is acceptable only as a well-formed reply to a request we could
            # parse; our garbage never carries a correlation id the broker can know
            assert name in ("truncated-flexible-body", "bad-client-id-length", "metadata-huge-array-count"), \
                f"{name}: broker answered garbage with {resp[:32].hex()}"
            assert struct.unpack(">i", resp[:4])[0] == 9
    bystander.check(f"garbage {name}")


def test_frame_length_2gib(broker, bystander):
    """A frame announcing 0x7fffffff bytes must be refused at once (Kafka: larger than
    socket.request.max.bytes, close), without reserving memory for it."""
    pid = broker.proc.pid
    before = rss_kib(pid)
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 0x7FFFFFFF) + header_v1(18, 0, 1))
        t0 = time.monotonic()
        kind, _ = closed_or_frame(s, 10)
        assert kind == "closed", "broker answered a frame it cannot have read"
        assert time.monotonic() - t0 < 5, "broker waited for the 2 GiB body instead of refusing it"
    grown = rss_kib(pid) - before
    assert grown < 256 * 1024, f"broker RSS grew by {grown} KiB on a 2 GiB length prefix"
    bystander.check("2 GiB length")


def test_frame_just_over_max_request(broker, bystander):
    """socket.request.max.bytes defaults to 104857600: one byte over is refused up front."""
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 104857601) + header_v1(18, 0, 1))
        kind, _ = closed_or_frame(s, 10)
        assert kind == "closed"
    bystander.check("just over max")


def test_truncated_frame_then_disconnect(broker, bystander):
    for _ in range(5):
        s = connect(broker)
        s.sendall(struct.pack(">i", 100) + b"\x00\x12\x00\x00\x00\x00")
        s.close()
    bystander.check("truncated frames")


def test_many_idle_connections(broker, bystander):
    socks = [connect(broker) for _ in range(64)]
    bystander.check("64 idle connections open")
    for s in socks:
        s.close()
    # and one that half-closes after its request still gets its answer or a clean close
    with connect(broker) as s:
        s.sendall(api_versions_request(0, 3))
        s.shutdown(1)  # SHUT_WR
        kind, resp = closed_or_frame(s, 10)
        if kind == "frame":
            assert parse_api_versions(resp, 0)[:2] == (3, 0)
    bystander.check("idle connections closed")


# ---------------------------------------------------------------- bad record batches

def test_produce_corrupt_batch_rejected(broker, bystander):
    """Produce v9 with a good batch, then one whose CRC32C does not match: Kafka answers
    CORRUPT_MESSAGE (2) for that partition, keeps the connection and stores nothing."""
    topic = unique_topic("raw-produce")
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(topic, 1, 1)], request_timeout=20)[topic].result(timeout=20)
    ts = now_ms() - 60_000
    good = record_batch([(b"k0", b"v0"), (None, b"v1"), (b"k2", None)], ts)
    bad = bytearray(record_batch([(b"k3", b"v3")], ts))
    bad[-1] ^= 0xFF  # flip a bit of the last record: CRC no longer matches
    deadline = time.monotonic() + 20
    with connect(broker) as s:
        while True:  # the new topic's leader may need a moment
            s.sendall(produce_request_v9(1, topic, 0, good))
            corr, res = parse_produce_v9(recv_frame(s))
            if res and res[0][2] in (3, 5, 6) and time.monotonic() < deadline:  # UNKNOWN_TOPIC, LEADER_NOT_AVAILABLE, NOT_LEADER
                time.sleep(0.2)
                continue
            break
        assert (corr, res) == (1, [(topic, 0, 0, 0)])
        s.sendall(produce_request_v9(2, topic, 0, bytes(bad)))
        corr, res = parse_produce_v9(recv_frame(s))
        assert corr == 2
        assert [(t, p, e) for t, p, e, _ in res] == [(topic, 0, 2)], f"want CORRUPT_MESSAGE (2), got {res}"
        # records count that lies about the batch
        lie = bytearray(record_batch([(b"k4", b"v4")], ts))
        struct.pack_into(">i", lie, 57, 5)  # recordsCount = 5, CRC now wrong too
        s.sendall(produce_request_v9(3, topic, 0, bytes(lie)))
        corr, res = parse_produce_v9(recv_frame(s))
        assert corr == 3 and res[0][2] != 0, f"batch with a false record count accepted: {res}"
        # the same connection still produces
        s.sendall(produce_request_v9(4, topic, 0, good))
        corr, res = parse_produce_v9(recv_frame(s))
        assert (corr, res) == (4, [(topic, 0, 0, 3)])
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "raw-check", "enable.auto.commit": False})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20) == (0, 6)
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        end = time.monotonic() + POLL_DEADLINE
        while len(got) < 6 and time.monotonic() < end:
            m = c.poll(0.5)
            if m is not None:
                assert m.error() is None, m.error()
                got.append((m.offset(), m.key(), m.value(), m.timestamp()[1]))
        assert got == [(0, b"k0", b"v0", ts), (1, None, b"v1", ts), (2, b"k2", None, ts),
                       (3, b"k0", b"v0", ts), (4, None, b"v1", ts), (5, b"k2", None, ts)]
    finally:
        c.close()
    bystander.check("corrupt batches")


def _create(broker, topic, config=None):
    a = AdminClient({"bootstrap.servers": broker.bootstrap})
    a.create_topics([NewTopic(topic, 1, 1, config=config or {})], request_timeout=20)[topic].result(timeout=20)


def _produce_until_led(s, request, parse, topic):
    """Sends a Produce until the new topic has a leader; -> the partition's (error, base offset)."""
    deadline = time.monotonic() + 20
    corr = 10
    while True:
        corr += 1
        s.sendall(request(corr))
        got, res = parse(recv_frame(s))
        assert got == corr and [(t, p) for t, p, _, _ in res] == [(topic, 0)], res
        if res[0][2] in (3, 5, 6) and time.monotonic() < deadline:  # not led yet
            time.sleep(0.2)
            continue
        return res[0][2], res[0][3]


def test_produce_shape_checks_and_zstd_versions(broker, bystander):
    """Kafka's checks of a partition's records before it validates them: zstd needs Produce
    v7 (UNSUPPORTED_COMPRESSION_TYPE, 76, at v6) and a partition takes exactly one batch per
    request (INVALID_RECORD, 87). Nothing refused is stored. A topic whose compression.type
    is zstd is served to Fetch v9 and v10 alike, as Kafka 4.1.1 does."""
    cramjam = require_module("cramjam")
    ts = now_ms() - 60_000
    zstd = record_batch([(b"k", b"v" * 100)], ts, compress=cramjam.zstd.compress, codec=4)
    plain = record_batch([(b"k", b"v")], ts)
    topic = unique_topic("raw-shape")
    _create(broker, topic)
    with connect(broker) as s:
        err, _ = _produce_until_led(s, lambda c: produce_request_v6(c, topic, 0, zstd), parse_produce_v6, topic)
        assert err == 76, f"zstd at Produce v6: want UNSUPPORTED_COMPRESSION_TYPE (76), got {err}"
        assert _produce_until_led(s, lambda c: produce_request_v6(c, topic, 0, plain), parse_produce_v6,
                                  topic) == (0, 0)
        assert _produce_until_led(s, lambda c: produce_request_v9(c, topic, 0, zstd), parse_produce_v9,
                                  topic) == (0, 1)
        err, _ = _produce_until_led(s, lambda c: produce_request_v9(c, topic, 0, plain + plain),
                                    parse_produce_v9, topic)
        assert err == 87, f"two batches for one partition: want INVALID_RECORD (87), got {err}"
        # A producer-compressed zstd batch is served as stored even at Fetch v9.
        s.sendall(fetch_request_v9(50, topic, 0, 0))
        corr, top, parts = parse_fetch_v9(recv_frame(s))
        assert (corr, top) == (50, 0)
        assert [(t, p, e, hw) for t, p, e, hw, _ in parts] == [(topic, 0, 0, 2)]
        assert len(parts[0][4]) == len(plain) + len(zstd)

    ztopic = unique_topic("raw-zstd-topic")
    _create(broker, ztopic, {"compression.type": "zstd"})
    with connect(broker) as s:
        assert _produce_until_led(s, lambda c: produce_request_v9(c, ztopic, 0, plain), parse_produce_v9,
                                  ztopic) == (0, 0)
        # Kafka 3.x refused this (UNSUPPORTED_COMPRESSION_TYPE below Fetch v10); Kafka 4
        # dropped that with down-conversion and serves the stored zstd batch.
        for corr, version in ((60, 9), (61, 10)):
            s.sendall(fetch_request_v9(corr, ztopic, 0, 0, version=version))
            got, top, parts = parse_fetch_v9(recv_frame(s))
            assert (got, top) == (corr, 0)
            assert [(t, p, e, hw) for t, p, e, hw, _ in parts] == [(ztopic, 0, 0, 1)], f"Fetch v{version}"
            assert struct.unpack_from(">h", parts[0][4], 21)[0] & 7 == 4, "the topic stores zstd"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "raw-shape", "enable.auto.commit": False})
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20) == (0, 2)
    finally:
        c.close()
    bystander.check("produce shape checks")


def test_broker_survived(broker, bystander):
    bystander.check("whole module")
    log = broker.log_text()
    assert "panicked at" not in log, "broker log shows a panic"
