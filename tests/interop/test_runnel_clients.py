"""Runnel's own client library and CLI against the other clients: what our producer writes,
confluent-kafka (librdkafka), kafka-python 3.x and Apache Kafka's Java client read back
identically, and what they write, ours reads identically.

- Rust producer: target/debug/examples/interop_produce (api/examples/interop_produce.rs)
  writes a deterministic set (keys, null keys, null values, a repeated header key, explicit
  timestamps) to a 6-partition topic with the default partitioner and prints where each
  record landed; keyed records must land where Kafka's Java client puts them,
  (murmur2(key) & 0x7fffffff) % 6, checked with a Python port of Utils.murmur2 and by asking
  the Java client itself (java/src/ClientInterop.java partition-for).
- Rust consumer: target/debug/examples/interop_consume prints what it read as JSON; it does
  not print the timestamp type, so only the timestamp values are compared on that side.
- CLI: `runnel produce|consume|topics|perf` (cli/src/tools.rs), compared with what the
  other clients read/wrote and with Kafka's own TopicCommand.

Every subprocess and poll loop is bounded in time."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from conftest import runnel_bin, unique_topic
from interop_util import (CODECS, POLL_DEADLINE, Got, Rec, assert_roundtrip, assert_stored_codec,
                          by_partition, dec, in_ci, make_records, now_ms, require_exe, require_module)

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "java"))
from javakit import java, java_env, tool  # noqa: E402,F401  (java_env is a fixture)

TOPIC_CMD = "org.apache.kafka.tools.TopicCommand"
KP_READ = HERE / "clients" / "kafka_python_read.py"
KP3_PYTHON = os.environ.get("RUNNEL_KP3_PYTHON", "/tmp/venv-kp3/bin/python")
TIMEOUT = 20
PROC_TIMEOUT = 90  # any one subprocess
JAVA_DEADLINE_S = 90


# ----------------------------------------------------------------------------- murmur2

M32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Apache Kafka's Utils.murmur2 (seed 0x9747b28c), as a signed 32-bit int."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & M32
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & M32
        k ^= k >> r
        k = (k * m) & M32
        h = (h * m) & M32
        h ^= k
    tail = data[4 * n4:]
    rem = len(tail)
    if rem == 3:
        h ^= tail[2] << 16
    if rem >= 2:
        h ^= tail[1] << 8
    if rem >= 1:
        h ^= tail[0]
        h = (h * m) & M32
    h ^= h >> 13
    h = (h * m) & M32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: bytes, partitions: int) -> int:
    """The Java client's BuiltInPartitioner.partitionForKey."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# Apache Kafka's UtilsTest.testMurmur2
MURMUR2_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def test_murmur2_port_matches_kafka_vectors():
    for data, want in MURMUR2_VECTORS:
        assert murmur2(data) == want, data
    # partitions over 6 as kafka-clients 4.1.1 computes them (see api/src/murmur2.rs)
    assert murmur2(b"") == 275646681
    assert [key_partition(k, 6) for k in (b"", b"k1", b"user-42", b"a-little-bit-longer-string")] == [3, 5, 4, 5]


# ----------------------------------------------------------------------------- processes

def _tail(s, n=4000):
    s = s or ""
    if isinstance(s, bytes):
        s = s.decode(errors="replace")
    return s if len(s) <= n else "...\n" + s[-n:]


def run(cmd, *, input=None, env=None, timeout=PROC_TIMEOUT) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("RUNNEL_BOOTSTRAP_SERVER", None)
    full_env.update(env or {})
    try:
        return subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=True,
                              env=full_env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{' '.join(map(str, cmd))} did not finish within {timeout}s\n"
                    f"--- stdout ---\n{_tail(e.stdout)}\n--- stderr ---\n{_tail(e.stderr)}", pytrace=False)


def describe_run(cp: subprocess.CompletedProcess) -> str:
    return (f"command: {' '.join(cp.args)}\nexit {cp.returncode}\n--- stdout ---\n{_tail(cp.stdout)}\n"
            f"--- stderr ---\n{_tail(cp.stderr)}")


def run_ok(cmd, **kw) -> subprocess.CompletedProcess:
    cp = run(cmd, **kw)
    if cp.returncode != 0:
        pytest.fail(describe_run(cp), pytrace=False)
    return cp


def cli(broker, *args, **kw) -> subprocess.CompletedProcess:
    return run([runnel_bin(), "--bootstrap-server", broker.bootstrap, *args], **kw)


def cli_ok(broker, *args, **kw) -> subprocess.CompletedProcess:
    return run_ok([runnel_bin(), "--bootstrap-server", broker.bootstrap, *args], **kw)


def example(name: str) -> pathlib.Path:
    p = pathlib.Path(runnel_bin()).parent / "examples" / name
    if not p.exists():
        msg = f"{p} not built (`cargo test --workspace` builds the runnel-api examples)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return p


def java_ok(broker, *args):
    r = java(["ClientInterop", *args], timeout=JAVA_DEADLINE_S + 30,
             env={"RUNNEL_JAVA_DEADLINE_S": str(JAVA_DEADLINE_S)})
    return r.expect_ok(broker, "ClientInterop " + " ".join(args[:1] + args[2:3]))


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def kp3_python() -> str:
    if not os.path.exists(KP3_PYTHON):
        msg = f"kafka-python 3.x venv {KP3_PYTHON} missing (.ci/run creates it)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return KP3_PYTHON


# ----------------------------------------------------------------------------- confluent-kafka

def ck():
    return require_module("confluent_kafka")


def admin(broker):
    ck()
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def wait_leaders(broker, topic, partitions):
    a = admin(broker)
    deadline = time.monotonic() + TIMEOUT
    while True:
        md = a.list_topics(topic, timeout=TIMEOUT)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions \
                and all(p.leader >= 0 for p in t.partitions.values()):
            return
        assert time.monotonic() < deadline, f"topic {topic} not ready in metadata: {t and t.error}"
        time.sleep(0.1)


def create_topic(broker, topic, partitions):
    ck()
    from confluent_kafka.admin import NewTopic
    a = admin(broker)  # keep the handle alive until the future resolves
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                         request_timeout=TIMEOUT)
    fs[topic].result(timeout=TIMEOUT)
    wait_leaders(broker, topic, partitions)


def topic_names(broker) -> set[str]:
    return set(admin(broker).list_topics(timeout=TIMEOUT).topics)


def ck_produce(broker, topic, recs: list[Rec], codec="none"):
    """confluent-kafka produces `recs` (explicit partitions and timestamps) in order."""
    k = ck()
    p = k.Producer({"bootstrap.servers": broker.bootstrap, "compression.type": codec, "acks": "all",
                    "linger.ms": 20, "enable.idempotence": False, "message.timeout.ms": 30000})
    errs = []
    for r in recs:
        p.produce(topic, value=r.value, key=r.key, partition=r.partition, headers=r.headers,
                  timestamp=r.ts, on_delivery=lambda err, msg: err and errs.append(err))
        p.poll(0)
    assert p.flush(POLL_DEADLINE) == 0, "confluent-kafka did not deliver everything"
    assert not errs, f"delivery errors: {errs[:5]}"


def ck_consume(broker, topic, partitions: int, want: int) -> list[Got]:
    """confluent-kafka reads every partition from the beginning; nothing beyond `want` may come."""
    k = ck()
    c = k.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "runnel-clients-assign",
                    "enable.auto.commit": False, "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest", "enable.partition.eof": False})
    try:
        c.assign([k.TopicPartition(topic, p, k.OFFSET_BEGINNING) for p in range(partitions)])
        got: list[Got] = []
        deadline = time.monotonic() + POLL_DEADLINE
        while len(got) < want and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, f"consumer error: {m.error()}"
            tstype, ts = m.timestamp()
            got.append(Got(m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []), ts,
                           {k.TIMESTAMP_CREATE_TIME: "create", k.TIMESTAMP_LOG_APPEND_TIME: "append"}
                           .get(tstype, "?")))
        assert len(got) == want, f"confluent-kafka consumed {len(got)} of {want} records within {POLL_DEADLINE}s"
        extra = c.poll(1.0)
        assert extra is None or extra.error() is not None, f"unexpected extra record at offset {extra.offset()}"
        return sorted(got, key=lambda g: (g.partition, g.offset))
    finally:
        c.close()


# ----------------------------------------------------------------------------- Rust producer

RUST_N = 240
RUST_PARTS = 6
RUST_KEYS = [f"key-{j}" for j in range(13)]


def rust_record(i: int, base_ts: int) -> tuple:
    """(key, value, headers, ts) of record i as interop_produce.rs writes it."""
    key = None if i % 5 == 4 else f"key-{i % 13}".encode()
    value = None if i % 7 == 6 else f"value-{i}".encode()
    return key, value, [("idx", str(i).encode()), ("dup", b"a"), ("dup", b"b")], base_ts + i


_RUST_TOPICS: dict[tuple[int, str], tuple[str, list[Rec]]] = {}


def rust_produced(broker, codec: str) -> tuple[str, list[Rec]]:
    """Runs interop_produce once per codec (per broker) and checks its own delivery reports;
    returns the topic and the records in production order, with the partition each landed on."""
    cache_key = (id(broker), codec)
    if cache_key in _RUST_TOPICS:
        return _RUST_TOPICS[cache_key]
    exe = example("interop_produce")
    topic = unique_topic(f"rust-{codec}")
    create_topic(broker, topic, RUST_PARTS)
    base_ts = now_ms() - 10 * 60 * 1000
    cp = run_ok([exe, broker.bootstrap, topic, RUST_N, codec, base_ts])
    rows = json_lines(cp.stdout)
    assert [r["i"] for r in rows] == list(range(RUST_N)), "interop_produce: one report per record, in order"
    assert [r["timestamp"] for r in rows] == [base_ts + i for i in range(RUST_N)], \
        "interop_produce: delivery report timestamps are not the records' CreateTimes"
    recs = []
    for r in rows:
        key, value, headers, ts = rust_record(r["i"], base_ts)
        assert 0 <= r["partition"] < RUST_PARTS, r
        if key is not None:
            assert r["partition"] == key_partition(key, RUST_PARTS), \
                f"record {r['i']} key {key!r} landed on partition {r['partition']}, the Java client " \
                f"puts it on {key_partition(key, RUST_PARTS)}"
        recs.append(Rec(r["partition"], key, value, headers, ts))
    per: dict[int, list[int]] = {}
    for r in rows:
        per.setdefault(r["partition"], []).append(r["offset"])
    assert per == {p: list(range(len(o))) for p, o in per.items()}, \
        "interop_produce: offsets per partition are not 0..n-1 in production order"
    _RUST_TOPICS[cache_key] = (topic, recs)
    return topic, recs


def got_from_json(rows: list[dict], ts_key="timestamp", default_ts_type=None) -> list[Got]:
    return [Got(g["partition"], g["offset"], dec(g["key"]), dec(g["value"]),
                [(k, dec(v)) for k, v in g["headers"]], g[ts_key], g.get("ts_type", default_ts_type))
            for g in rows]


@pytest.mark.parametrize("codec", CODECS)
def test_rust_producer_to_confluent(broker, codec):
    topic, recs = rust_produced(broker, codec)
    got = ck_consume(broker, topic, RUST_PARTS, RUST_N)
    assert_roundtrip(recs, got)
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    # the Rust producer really compressed with the codec it was given
    assert_stored_codec(broker.data_dir, topic, counts, codec)


@pytest.mark.parametrize("codec", CODECS)
def test_rust_producer_to_kafka_python3(broker, codec):
    py = kp3_python()
    topic, recs = rust_produced(broker, codec)
    cp = run_ok([py, KP_READ, "--bootstrap", broker.bootstrap, "--topic", topic, "--count", RUST_N])
    out = json.loads(cp.stdout)
    assert out["version"].startswith("3."), f"venv holds kafka-python {out['version']}"
    got = got_from_json(out["records"], ts_key="ts")
    assert len(got) == RUST_N, f"kafka-python read {len(got)} of {RUST_N} records"
    assert_roundtrip(recs, got)


@pytest.mark.parametrize("codec", CODECS)
def test_rust_producer_to_java(java_env, broker, codec):
    topic, recs = rust_produced(broker, codec)
    r = java_ok(broker, "consume", broker.bootstrap, topic, str(RUST_N))
    got = sorted(got_from_json(json_lines(r.stdout)), key=lambda g: (g.partition, g.offset))
    assert len(got) == RUST_N, f"Java consumer read {len(got)} of {RUST_N} records\n{r.stderr[-2000:]}"
    assert_roundtrip(recs, got)


def test_key_partitions_agree_with_java(java_env, broker):
    """The Java client's own partitioner, asked directly, agrees with the Python port for the
    keys interop_produce uses and for Kafka's murmur2 test vectors."""
    keys = RUST_KEYS + [d.decode() for d, _ in MURMUR2_VECTORS]
    r = java_ok(broker, "partition-for", str(RUST_PARTS), *keys)
    java_says = {}
    for line in r.stdout.splitlines():
        k, h, p = line.rsplit(" ", 2)
        java_says[k] = (int(h), int(p))
    assert java_says == {k: (murmur2(k.encode()), key_partition(k.encode(), RUST_PARTS)) for k in keys}
    for d, want in MURMUR2_VECTORS:
        assert java_says[d.decode()][0] == want


# ----------------------------------------------------------------------------- Rust consumer

def rust_consume(broker, topic, n) -> list[Got]:
    cp = run_ok([example("interop_consume"), broker.bootstrap, topic, n])
    rows = json_lines(cp.stdout)
    assert len(rows) == n, f"interop_consume printed {len(rows)} records, asked for {n}"
    # interop_consume does not print the timestamp type: only the values are compared
    return sorted(got_from_json(rows, default_ts_type="create"), key=lambda g: (g.partition, g.offset))


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_producer_to_rust_consumer(broker, codec):
    topic = unique_topic(f"ck2rust-{codec}")
    create_topic(broker, topic, 3)
    # binary keys/values, null key, null value, empty value, ~18 KB value, no headers,
    # duplicate/non-ASCII/empty/null-valued headers, explicit (out-of-order) timestamps
    recs = make_records(topic, partitions=3, per_partition=8, null_header_value=True)
    ck_produce(broker, topic, recs, codec)
    assert_roundtrip(recs, rust_consume(broker, topic, len(recs)))


def java_spec(recs: list[Rec]) -> str:
    def h(b):
        return "-" if b is None else b.hex()
    lines = []
    for r in recs:
        hdrs = ",".join(f"{k.encode().hex()}={h(v)}" for k, v in r.headers)
        lines.append(f"{r.partition}\t{r.ts}\t{h(r.key)}\t{h(r.value)}\t{hdrs}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("codec", CODECS)
def test_java_producer_to_rust_consumer(java_env, broker, codec):
    topic = unique_topic(f"java2rust-{codec}")
    create_topic(broker, topic, 3)
    recs = make_records(topic, partitions=3, per_partition=8, null_header_value=True)
    r = java(["ClientInterop", "produce", broker.bootstrap, topic, codec], input=java_spec(recs),
             timeout=JAVA_DEADLINE_S + 30, env={"RUNNEL_JAVA_DEADLINE_S": str(JAVA_DEADLINE_S)})
    r.expect_ok(broker, f"ClientInterop produce {codec}")
    mds = json_lines(r.stdout)
    assert len(mds) == len(recs)
    per: dict[int, list[int]] = {}
    for md, rec in zip(mds, recs):
        assert (md["partition"], md["timestamp"]) == (rec.partition, rec.ts)
        per.setdefault(md["partition"], []).append(md["offset"])
    assert per == {p: list(range(len(rs))) for p, rs in by_partition(recs).items()}
    assert_roundtrip(recs, rust_consume(broker, topic, len(recs)))
    assert_stored_codec(broker.data_dir, topic, {p: len(rs) for p, rs in by_partition(recs).items()}, codec)


# ----------------------------------------------------------------------------- CLI produce

CLI_HEADERS = [("trace", b"abc-123"), ("dup", b"1"), ("dup", b"2"), ("eq", b"a=b")]


@pytest.mark.parametrize("acks,codec,via_env", [("all", "zstd", False), ("1", "gzip", True),
                                                ("0", "lz4", False), ("all", "snappy", False)])
def test_cli_produce_to_confluent(broker, acks, codec, via_env):
    """`runnel produce` with a key separator, repeated --header and compression: confluent-kafka
    reads exactly those keys/values/headers, keyed records on the murmur2 partition, CreateTime
    stamped during the produce, and the batches stored with the codec."""
    topic = unique_topic(f"cliprod-{acks}-{codec}")
    parts = 3
    create_topic(broker, topic, parts)
    lines, recs = [], []
    for i in range(60):
        key = f"k{i % 7}"
        value = f"line {i}: a:b x=y " + "payload " * (10 * (i % 4))  # later separators stay in the value
        lines.append(f"{key}:{value}")
        recs.append(Rec(key_partition(key.encode(), parts), key.encode(), value.encode(), CLI_HEADERS))
    args = ["produce", "--topic", topic, "--key-separator", ":", "--acks", acks, "--compression", codec]
    for k, v in CLI_HEADERS:
        args += ["--header", f"{k}={v.decode()}"]
    t0 = now_ms()
    if via_env:
        run_ok([runnel_bin(), *args], input="\n".join(lines) + "\n",
               env={"RUNNEL_BOOTSTRAP_SERVER": broker.bootstrap})
    else:
        cli_ok(broker, *args, input="\n".join(lines) + "\n")
    t1 = now_ms()
    got = ck_consume(broker, topic, parts, len(recs))
    assert_roundtrip(recs, got, check_ts=False)
    bad_ts = [(g.partition, g.offset, g.ts, g.ts_type) for g in got
              if not (t0 - 1000 <= g.ts <= t1 + 1000 and g.ts_type == "create")]
    assert not bad_ts, f"CreateTime outside the produce window {t0}..{t1}: {bad_ts[:5]}"
    assert_stored_codec(broker.data_dir, topic, {p: len(rs) for p, rs in by_partition(recs).items()}, codec)


# ----------------------------------------------------------------------------- CLI consume

def cli_records(topic) -> list[Rec]:
    """Printable records for the console consumer: null key, null value, empty value, no
    headers, a repeated header key, explicit timestamps."""
    base = now_ms() - 5 * 60 * 1000
    recs = []
    for i in range(24):
        p = i % 3
        key = None if i % 6 == 1 else f"key-{i}".encode()
        value = None if i % 6 == 2 else (b"" if i % 6 == 3 else f"value {i} with spaces".encode())
        headers = [] if i % 6 == 4 else [("a", b"1"), ("trace", f"t{i}".encode()), ("a", b"2")]
        recs.append(Rec(p, key, value, headers, base + 7 * i))
    return recs


def show(b):
    return "null" if b is None else b.decode()


def console_line(r: Rec, offset: int, sep="\t", ts=True, offs=True, hdrs=True, key=True) -> str:
    fields = []
    if ts:
        fields.append(f"CreateTime:{r.ts}")
    if offs:
        fields += [f"Partition:{r.partition}", f"Offset:{offset}"]
    if hdrs:
        fields.append(",".join(f"{k}:{show(v)}" for k, v in r.headers) if r.headers else "NO_HEADERS")
    if key:
        fields.append(show(r.key))
    fields.append(show(r.value))
    return sep.join(fields)


def per_partition_lines(stdout: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        m = re.search(r"\tPartition:(\d+)\t", line)
        assert m, f"console consumer line without Partition: {line!r}"
        out.setdefault(int(m.group(1)), []).append(line)
    return out


def test_confluent_to_cli_consume(broker):
    topic = unique_topic("clicons")
    create_topic(broker, topic, 3)
    recs = cli_records(topic)
    ck_produce(broker, topic, recs, "gzip")
    parts = by_partition(recs)
    n = len(recs)

    cp = cli_ok(broker, "consume", "--topic", topic, "--from-beginning", "--max-messages", str(n),
                "--timeout-ms", "20000", "--print-key", "--print-headers", "--print-offset", "--print-timestamp")
    exp = {p: [console_line(r, o) for o, r in enumerate(rs)] for p, rs in parts.items()}
    assert per_partition_lines(cp.stdout) == exp, describe_run(cp)

    # one partition from an offset, a custom separator, key only
    cp = cli_ok(broker, "consume", "--topic", topic, "--partition", "1", "--offset", "2", "--max-messages", "3",
                "--timeout-ms", "20000", "--print-key", "--key-separator", "|")
    assert cp.stdout.splitlines() == [console_line(r, o, sep="|", ts=False, offs=False, hdrs=False)
                                      for o, r in list(enumerate(parts[1]))[2:5]], describe_run(cp)

    # no --max-messages: stops after --timeout-ms without records, with Kafka's summary line
    cp = cli_ok(broker, "consume", "--topic", topic, "--partition", "2", "--offset", "earliest",
                "--timeout-ms", "1500", timeout=60)
    assert cp.stdout.splitlines() == [show(r.value) for r in parts[2]], describe_run(cp)
    assert f"Processed a total of {len(parts[2])} messages" in cp.stderr, describe_run(cp)

    # --from-beginning is needed to see old records: without it nothing arrives
    cp = cli_ok(broker, "consume", "--topic", topic, "--timeout-ms", "1500", timeout=60)
    assert cp.stdout == "", describe_run(cp)
    assert "Processed a total of 0 messages" in cp.stderr, describe_run(cp)


def test_kcat_to_cli_consume(broker):
    kcat = require_exe("kcat")
    topic = unique_topic("kcat2cli")
    create_topic(broker, topic, 2)
    sent = {}
    for p in range(2):
        rows = [(f"kk{p}-{j}", f"kcat value {p}/{j} a:b=c") for j in range(10)]
        data = "".join(f"{k}:{v}\n" for k, v in rows)
        run_ok([kcat, "-P", "-b", broker.bootstrap, "-t", topic, "-p", str(p), "-K", ":", "-z", "snappy",
                "-H", "a=1", "-H", "trace=xyz", "-H", "a=2"], input=data)
        sent[p] = rows
    cp = cli_ok(broker, "consume", "--topic", topic, "--from-beginning", "--max-messages", "20",
                "--timeout-ms", "20000", "--print-key", "--print-headers", "--print-offset")
    exp = {p: [f"Partition:{p}\tOffset:{o}\ta:1,trace:xyz,a:2\t{k}\t{v}" for o, (k, v) in enumerate(rows)]
           for p, rows in sent.items()}
    got: dict[int, list[str]] = {}
    for line in cp.stdout.splitlines():
        m = re.match(r"Partition:(\d+)\t", line)
        assert m, f"unexpected line {line!r}\n{describe_run(cp)}"
        got.setdefault(int(m.group(1)), []).append(line)
    assert got == exp, describe_run(cp)


# ----------------------------------------------------------------------------- CLI topics

def parse_describe(out: str, topic: str):
    """TopicCommand-style --describe -> (header fields, [partition fields...])."""
    header, parts = None, []
    for line in out.splitlines():
        fields = {}
        for item in line.strip().split("\t"):
            k, sep, v = item.partition(": ")
            if sep:
                fields[k] = v
            elif item.endswith(":"):
                fields[item[:-1]] = ""
        if fields.get("Topic") != topic:
            continue
        if "Partition" in fields:
            parts.append(fields)
        elif "PartitionCount" in fields:
            header = fields
    return header, parts


def comparable(out: str, topic: str):
    header, parts = parse_describe(out, topic)
    assert header is not None, f"no header line for {topic} in:\n{out}"
    h = {k: header.get(k) for k in ("Topic", "TopicId", "PartitionCount", "ReplicationFactor")}
    h["Configs"] = dict(kv.split("=", 1) for kv in header.get("Configs", "").split(",") if kv)
    ps = [{k: p.get(k) for k in ("Topic", "Partition", "Leader", "Replicas", "Isr")} for p in parts]
    return h, ps


def both_describes(broker, topic):
    ours = cli_ok(broker, "topics", "describe", "--topic", topic)
    r = tool(TOPIC_CMD, "--describe", "--topic", topic, bootstrap=broker.bootstrap, timeout=60)
    r.expect_ok(broker, "TopicCommand --describe")
    return comparable(ours.stdout, topic), comparable(r.stdout, topic), ours.stdout, r.stdout


def test_cli_topics_match_topic_command(java_env, broker):
    topic = unique_topic("clitopics")
    cp = cli_ok(broker, "topics", "create", "--topic", topic, "--partitions", "3",
                "--config", "retention.ms=3600000", "--config", "max.message.bytes=2000000")
    assert cp.stdout.strip() == f"Created topic {topic}.", describe_run(cp)
    wait_leaders(broker, topic, 3)
    assert topic in cli_ok(broker, "topics", "list").stdout.split()

    ours, kafkas, ours_text, kafka_text = both_describes(broker, topic)
    assert ours == kafkas, f"runnel topics describe:\n{ours_text}\nTopicCommand --describe:\n{kafka_text}"
    h, ps = ours
    assert h["PartitionCount"] == "3" and h["ReplicationFactor"] == "1"
    assert h["Configs"] == {"retention.ms": "3600000", "max.message.bytes": "2000000"}, ours_text
    assert [p["Partition"] for p in ps] == ["0", "1", "2"]
    assert all(p["Leader"].isdigit() and p["Replicas"] == p["Isr"] == p["Leader"] for p in ps), ours_text

    cp = cli(broker, "topics", "create", "--topic", topic, "--partitions", "1")
    assert cp.returncode != 0 and "already exists" in cp.stderr, describe_run(cp)

    cp = cli_ok(broker, "topics", "alter", "--topic", topic, "--partitions", "5",
                "--config", "retention.ms=7200000", "--delete-config", "max.message.bytes")
    assert f"Topic {topic} now has 5 partitions." in cp.stdout, describe_run(cp)
    wait_leaders(broker, topic, 5)
    ours, kafkas, ours_text, kafka_text = both_describes(broker, topic)
    assert ours == kafkas, f"runnel topics describe:\n{ours_text}\nTopicCommand --describe:\n{kafka_text}"
    assert ours[0]["PartitionCount"] == "5" and len(ours[1]) == 5, ours_text
    assert ours[0]["Configs"] == {"retention.ms": "7200000"}, ours_text

    cp = cli_ok(broker, "topics", "delete", "--topic", topic)
    assert cp.stdout.strip() == f"Deleted topic {topic}.", describe_run(cp)
    deadline = time.monotonic() + TIMEOUT
    while topic in cli_ok(broker, "topics", "list").stdout.split():
        assert time.monotonic() < deadline, f"{topic} still listed after `runnel topics delete`"
        time.sleep(0.2)
    for args in (["topics", "describe", "--topic", topic], ["topics", "delete", "--topic", topic]):
        cp = cli(broker, *args)
        assert cp.returncode != 0 and f"topic '{topic}' does not exist" in cp.stderr, describe_run(cp)


def test_cli_errors(broker):
    missing = unique_topic("does-not-exist")
    t0 = time.monotonic()
    cp = cli(broker, "consume", "--topic", missing, "--from-beginning", "--max-messages", "1",
             "--timeout-ms", "5000", timeout=60)
    assert cp.returncode != 0, describe_run(cp)
    assert f"topic '{missing}' does not exist" in cp.stderr, describe_run(cp)
    assert cp.stdout == "" and "panicked" not in cp.stderr, describe_run(cp)
    assert time.monotonic() - t0 < 30
    assert missing not in topic_names(broker), "consuming a missing topic created it"

    t0 = time.monotonic()
    cp = run([runnel_bin(), "--bootstrap-server", "127.0.0.1:1", "topics", "list"], timeout=60)
    assert cp.returncode != 0, describe_run(cp)
    assert "cannot reach a broker at 127.0.0.1:1" in cp.stderr, describe_run(cp)
    assert cp.stdout == "" and "panicked" not in cp.stderr, describe_run(cp)
    assert time.monotonic() - t0 < 30


# ----------------------------------------------------------------------------- CLI perf

PERF_RE = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, ([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th, ([\d.]+) ms 99\.9th\.$")


def test_cli_perf_produce_and_consume(broker):
    topic = unique_topic("perf")
    create_topic(broker, topic, 3)
    n, size = 4000, 100
    # "--throughput -1" exactly as the README and kafka-producer-perf-test write it
    cp = cli_ok(broker, "perf", "produce", "--topic", topic, "--num-records", str(n), "--record-size", str(size),
                "--throughput", "-1", "--producer-props", "acks=all", "linger.ms=5", timeout=120)
    last = cp.stdout.strip().splitlines()[-1] if cp.stdout.strip() else ""
    m = PERF_RE.match(last)
    assert m, f"final line not in ProducerPerformance's format: {last!r}\n{describe_run(cp)}"
    count, rps, mbps, avg, mx, p50, p95, p99, p999 = m.groups()
    assert int(count) == n, last
    rps, mbps = float(rps), float(mbps)
    assert rps > 0 and mbps > 0, last
    assert abs(mbps - rps * size / 1048576) <= 0.01 + 0.02 * mbps, f"MB/sec inconsistent with records/sec: {last}"
    p50, p95, p99, p999, mx, avg = map(float, (p50, p95, p99, p999, mx, avg))
    assert 0 <= p50 <= p95 <= p99 <= p999 <= mx, f"percentiles not ordered: {last}"
    assert 0 <= avg <= mx, last

    k = ck()
    c = k.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "runnel-clients-wm"})
    try:
        ends = [c.get_watermark_offsets(k.TopicPartition(topic, p), timeout=TIMEOUT) for p in range(3)]
    finally:
        c.close()
    assert sum(hi for _, hi in ends) == n and all(lo == 0 for lo, _ in ends), ends

    cp = cli_ok(broker, "perf", "consume", "--topic", topic, "--messages", str(n), "--timeout-ms", "20000",
                timeout=120)
    lines = cp.stdout.strip().splitlines()
    assert lines[0] == "data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, elapsed.sec", describe_run(cp)
    mb, _mbs, nmsg, _nps, _secs = [f.strip() for f in lines[1].split(",")]
    assert int(nmsg) == n, describe_run(cp)
    assert mb == f"{n * size / 1048576:.4f}", describe_run(cp)
    assert "WARNING" not in cp.stderr, describe_run(cp)


# ----------------------------------------------------------------------------- librdkafka's mock cluster

MOCK_CLUSTER = HERE.parent.parent / "bench" / "clients.py"


@pytest.fixture
def mock_cluster():
    """librdkafka's in-memory mock cluster (rd_kafka_mock_cluster_new, through the library in
    confluent-kafka's wheel): a Kafka-protocol peer that is not ours and not Kafka. It answers
    an ApiVersions v3 request with UNSUPPORTED_VERSION in a body that reads neither as v0 nor
    as v3; the Java client falls back to v0 there, and so must ours."""
    ck()
    proc = subprocess.Popen([sys.executable, str(MOCK_CLUSTER), "mock-cluster"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("BOOTSTRAP "), f"mock cluster did not start: {line!r}"
        yield proc, line.split()[1]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_cli_against_librdkafka_mock_cluster(mock_cluster):
    proc, bootstrap = mock_cluster
    topic = unique_topic("mock")
    proc.stdin.write(f"create {topic} 3\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "ok"
    lines = [f"k{i % 5}:value {i}" for i in range(300)]
    run_ok([runnel_bin(), "--bootstrap-server", bootstrap, "produce", "--topic", topic, "--key-separator", ":"],
           input="\n".join(lines) + "\n")
    cp = run_ok([runnel_bin(), "--bootstrap-server", bootstrap, "consume", "--topic", topic, "--from-beginning",
                 "--max-messages", str(len(lines)), "--timeout-ms", "20000", "--print-key",
                 "--key-separator", ":"])
    assert sorted(cp.stdout.splitlines()) == sorted(lines), describe_run(cp)
    # Keyed records land where Kafka's partitioner puts them: each key's values in order.
    k = ck()
    c = k.Consumer({"bootstrap.servers": bootstrap, "group.id": "runnel-mock", "enable.auto.commit": False})
    got: dict[int, list[tuple[str, str]]] = {}
    try:
        c.assign([k.TopicPartition(topic, p, k.OFFSET_BEGINNING) for p in range(3)])
        deadline = time.monotonic() + TIMEOUT
        while sum(map(len, got.values())) < len(lines) and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert not m.error(), m.error()
                got.setdefault(m.partition(), []).append((m.key().decode(), m.value().decode()))
    finally:
        c.close()
    for key in {ln.split(":")[0] for ln in lines}:
        where = [p for p, recs in got.items() if any(kk == key for kk, _ in recs)]
        assert where == [key_partition(key.encode(), 3)], (key, where)
        values = [v for kk, v in got[where[0]] if kk == key]
        assert values == [ln.split(":", 1)[1] for ln in lines if ln.startswith(key + ":")], key
