"""Apache Kafka 4.x's own command-line tools (the classes behind kafka-topics.sh,
kafka-configs.sh, kafka-get-offsets.sh, kafka-console-producer/consumer.sh,
kafka-producer-perf-test.sh, kafka-broker-api-versions.sh and kafka-dump-log.sh) run
against Runnel, with their output checked as a Kafka user would read it."""

import os
import pathlib
import random
import re
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "java"))
from javakit import dump_log_segments, java_env, parse_dump, reference_api_versions, tool  # noqa: E402,F401
from conftest import unique_topic  # noqa: E402

TOPIC_CMD = "org.apache.kafka.tools.TopicCommand"
CONFIG_CMD = "kafka.admin.ConfigCommand"  # still in kafka_2.13 (core) in 4.1
GET_OFFSETS = "org.apache.kafka.tools.GetOffsetShell"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
API_VERSIONS_CMD = "org.apache.kafka.tools.BrokerApiVersionsCommand"
LOG_DIRS_CMD = "org.apache.kafka.tools.LogDirsCommand"
ACL_CMD = "org.apache.kafka.tools.AclCommand"
ELECTION_CMD = "org.apache.kafka.tools.LeaderElectionCommand"
REASSIGN_CMD = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def run_ok(broker, main_class, *args, bootstrap=True, timeout=60, input=None, what=None):
    r = tool(main_class, *args, bootstrap=broker.bootstrap if bootstrap else None, timeout=timeout, input=input)
    return r.expect_ok(broker, what or f"{main_class.rsplit('.', 1)[-1]} {' '.join(args)}")


def topics_list(broker) -> list[str]:
    return run_ok(broker, TOPIC_CMD, "--list").stdout.split()


def create_topic(broker, topic, partitions=1, *configs):
    args = ["--create", "--topic", topic, "--partitions", str(partitions), "--replication-factor", "1"]
    for c in configs:
        args += ["--config", c]
    r = run_ok(broker, TOPIC_CMD, *args)
    assert f"Created topic {topic}." in r.stdout, r.report(broker, "TopicCommand --create")


def wait_for(pred, timeout=15.0, interval=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def parse_describe(out: str, topic: str):
    """TopicCommand --describe -> (header fields, [partition fields...])."""
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


def offsets(broker, topic, time_spec) -> dict[int, int]:
    r = run_ok(broker, GET_OFFSETS, "--topic", topic, "--time", str(time_spec))
    out = {}
    for line in r.stdout.split():
        t, p, o = line.rsplit(":", 2)
        assert t == topic, f"GetOffsetShell printed another topic: {line}"
        out[int(p)] = int(o)
    return out


# --------------------------------------------------------------------------- TopicCommand

def test_topic_command_lifecycle(java_env, broker):
    topic = unique_topic("tc")
    create_topic(broker, topic, 3, "retention.ms=3600000", "max.message.bytes=2000000")
    assert topic in topics_list(broker)

    # creating it again fails the way Kafka's tool reports it
    r = tool(TOPIC_CMD, "--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1",
             bootstrap=broker.bootstrap)
    assert r.returncode == 1 and f"Topic '{topic}' already exists" in r.stdout + r.stderr, r.report(broker, "create existing")

    r = run_ok(broker, TOPIC_CMD, "--describe", "--topic", topic)
    header, parts = parse_describe(r.stdout, topic)
    assert header is not None, r.report(broker, "describe: no header line")
    assert header["PartitionCount"] == "3", r.stdout
    assert header["ReplicationFactor"] == "1", r.stdout
    assert header.get("TopicId") and header["TopicId"] != "AAAAAAAAAAAAAAAAAAAAAA", f"bad topic id: {r.stdout}"
    configs = dict(kv.split("=", 1) for kv in header["Configs"].split(",") if kv)
    assert configs.get("retention.ms") == "3600000", r.stdout
    assert configs.get("max.message.bytes") == "2000000", r.stdout
    assert [p["Partition"] for p in parts] == ["0", "1", "2"], r.stdout
    for p in parts:
        assert re.fullmatch(r"\d+", p["Leader"]), f"partition {p['Partition']} has no leader: {r.stdout}"
        assert p["Replicas"] == p["Leader"] and p["Isr"] == p["Leader"], r.stdout

    r = tool(TOPIC_CMD, "--describe", "--topic", "no-such-topic-" + topic, bootstrap=broker.bootstrap)
    assert r.returncode == 1 and "does not exist" in r.stdout + r.stderr, r.report(broker, "describe missing topic")

    run_ok(broker, TOPIC_CMD, "--alter", "--topic", topic, "--partitions", "5")
    def five():
        h, ps = parse_describe(run_ok(broker, TOPIC_CMD, "--describe", "--topic", topic).stdout, topic)
        return h is not None and h["PartitionCount"] == "5" and len(ps) == 5 and all(p["Leader"].isdigit() for p in ps)
    assert wait_for(five), run_ok(broker, TOPIC_CMD, "--describe", "--topic", topic).stdout

    r = run_ok(broker, TOPIC_CMD, "--describe", "--under-replicated-partitions")
    assert r.stdout.strip() == "", f"under-replicated partitions on a single broker: {r.stdout}"

    run_ok(broker, TOPIC_CMD, "--delete", "--topic", topic)
    assert wait_for(lambda: topic not in topics_list(broker)), f"{topic} still listed after --delete"


# --------------------------------------------------------------------------- ConfigCommand

def describe_topic_configs(broker, topic, *extra) -> tuple[str, dict[str, str]]:
    r = run_ok(broker, CONFIG_CMD, "--entity-type", "topics", "--entity-name", topic, "--describe", *extra)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^\s+([a-z0-9._]+)=(\S*) sensitive=", line)
        if m:
            out[m.group(1)] = m.group(2)
    return r.stdout, out


def test_config_command_topic(java_env, broker):
    topic = unique_topic("cfg")
    create_topic(broker, topic, 1, "retention.ms=3600000")
    text, cfg = describe_topic_configs(broker, topic)
    assert f"Dynamic configs for topic {topic} are:" in text, text
    assert cfg == {"retention.ms": "3600000"}, text
    assert "synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=3600000}" in text, text

    r = run_ok(broker, CONFIG_CMD, "--entity-type", "topics", "--entity-name", topic, "--alter",
               "--add-config", "retention.ms=7200000,segment.ms=100000")
    assert f"Completed updating config for topic {topic}." in r.stdout, r.stdout
    assert wait_for(lambda: describe_topic_configs(broker, topic)[1] == {"retention.ms": "7200000", "segment.ms": "100000"}), \
        describe_topic_configs(broker, topic)[0]

    run_ok(broker, CONFIG_CMD, "--entity-type", "topics", "--entity-name", topic, "--alter", "--delete-config", "retention.ms")
    assert wait_for(lambda: describe_topic_configs(broker, topic)[1] == {"segment.ms": "100000"}), \
        describe_topic_configs(broker, topic)[0]

    text, allcfg = describe_topic_configs(broker, topic, "--all")
    assert f"All configs for topic {topic} are:" in text, text
    for k, v in {"cleanup.policy": "delete", "retention.ms": "604800000", "segment.ms": "100000",
                 "segment.bytes": "1073741824", "compression.type": "producer",
                 "message.timestamp.type": "CreateTime", "min.insync.replicas": "1",
                 "compression.gzip.level": "-1", "compression.lz4.level": "9",
                 "compression.zstd.level": "3"}.items():
        assert allcfg.get(k) == v, f"--describe --all: {k}={allcfg.get(k)!r}, expected {v!r}\n{text}"

    # compression levels (Kafka 3.8+): in range accepted, out of range refused
    run_ok(broker, CONFIG_CMD, "--entity-type", "topics", "--entity-name", topic, "--alter",
           "--add-config", "compression.zstd.level=12")
    assert wait_for(lambda: describe_topic_configs(broker, topic)[1].get("compression.zstd.level") == "12"), \
        describe_topic_configs(broker, topic)[0]
    for bad in ("compression.zstd.level=23", "compression.lz4.level=0", "compression.gzip.level=10"):
        r = tool(CONFIG_CMD, "--entity-type", "topics", "--entity-name", topic, "--alter", "--add-config", bad,
                 bootstrap=broker.bootstrap)
        assert r.returncode != 0, r.report(broker, f"ConfigCommand accepted {bad}")

    r = tool(CONFIG_CMD, "--entity-type", "topics", "--entity-name", topic, "--alter", "--add-config", "no.such.config=1",
             bootstrap=broker.bootstrap)
    assert r.returncode != 0, r.report(broker, "ConfigCommand with an unknown config name succeeded")


# --------------------------------------------------------------------------- console tools, offsets

def test_console_producer_consumer_and_get_offsets(java_env, broker):
    topic = unique_topic("console")
    create_topic(broker, topic, 1)
    n = 25
    # default ConsoleProducer: acks=all, idempotent; lz4 batches; headers, key, value
    lines = [f"h1:a{i},h2:b{i}\tkey-{i}\tvalue {i} " + "z" * (i * 7) for i in range(n)]
    run_ok(broker, CONSOLE_PRODUCER, "--topic", topic, "--compression-codec", "lz4",
           "--property", "parse.key=true", "--property", "parse.headers=true",
           input="\n".join(lines) + "\n", timeout=90)

    assert offsets(broker, topic, -1) == {0: n}, "GetOffsetShell --time -1 (latest)"
    assert offsets(broker, topic, -2) == {0: 0}, "GetOffsetShell --time -2 (earliest)"

    r = run_ok(broker, CONSOLE_CONSUMER, "--topic", topic, "--partition", "0", "--offset", "earliest",
               "--max-messages", str(n), "--timeout-ms", "30000",
               "--property", "print.key=true", "--property", "print.headers=true",
               "--property", "print.offset=true", "--property", "print.partition=true",
               "--property", "print.timestamp=true", timeout=90)
    got = [l for l in r.stdout.splitlines() if l.startswith("CreateTime:")]
    assert len(got) == n, r.report(broker, "ConsoleConsumer")
    now_ms = time.time() * 1000
    for i, line in enumerate(got):
        ts, part, off, rest = line.split("\t", 3)
        assert abs(int(ts.split(":")[1]) - now_ms) < 600_000, f"implausible CreateTime in {line!r}"
        assert (part, off) == ("Partition:0", f"Offset:{i}"), line
        assert rest == lines[i], f"record {i}: consumer printed {rest!r}, producer sent {lines[i]!r}"
    assert f"Processed a total of {n} messages" in r.stderr, r.stderr

    # numeric start offset
    r = run_ok(broker, CONSOLE_CONSUMER, "--topic", topic, "--partition", "0", "--offset", "20",
               "--max-messages", "3", "--timeout-ms", "30000", "--property", "print.offset=true", timeout=90)
    assert [l.split("\t")[0] for l in r.stdout.splitlines()] == ["Offset:20", "Offset:21", "Offset:22"], r.stdout

    # GetOffsetShell by timestamp: a time before every record -> offset 0; after all -> none printed
    assert offsets(broker, topic, int(now_ms) - 3_600_000) == {0: 0}
    r = run_ok(broker, GET_OFFSETS, "--topic", topic, "--time", str(int(now_ms) + 3_600_000))
    assert r.stdout.strip() in ("", f"{topic}:0:"), f"GetOffsetShell for a future timestamp printed {r.stdout!r}"


def test_producer_performance(java_env, broker):
    topic = unique_topic("perf")
    create_topic(broker, topic, 3)
    n = 20000
    r = run_ok(broker, PRODUCER_PERF, "--topic", topic, "--num-records", str(n), "--record-size", "200",
               "--throughput", "-1", "--producer-props", f"bootstrap.servers={broker.bootstrap}", "acks=all",
               "compression.type=lz4", "linger.ms=5", bootstrap=False, timeout=180)
    assert re.search(rf"^{n} records sent", r.stdout, re.M), r.report(broker, "ProducerPerformance")
    latest = offsets(broker, topic, -1)
    assert set(latest) == {0, 1, 2} and sum(latest.values()) == n, f"GetOffsetShell latest: {latest}"


def test_broker_api_versions_command(java_env, broker):
    r = run_ok(broker, API_VERSIONS_CMD)
    assert re.search(rf"^{re.escape(broker.bootstrap)} \(id: \d+ rack: .*\) -> \(", r.stdout, re.M), r.stdout
    ref = reference_api_versions()
    seen = {}
    for m in re.finditer(r"^\s+(\w+)\((\d+)\): (?:(\d+) to (\d+)|(\d+)|UNSUPPORTED)", r.stdout, re.M):
        key = int(m.group(2))
        if m.group(3):
            seen[key] = (int(m.group(3)), int(m.group(4)))
        elif m.group(5):
            seen[key] = (int(m.group(5)), int(m.group(5)))
    assert 18 in seen, r.stdout
    wrong = {k: v for k, v in seen.items() if k not in ref or ref[k][1:] != v}
    assert not wrong, f"ranges differ from Apache Kafka 4.x ({{key: (min, max)}}): {wrong}\n{r.stdout}"


def test_log_dirs_command_shows_each_partitions_size_on_disk(java_env, broker):
    import json
    topic = unique_topic("logdirs")
    create_topic(broker, topic, 3)
    run_ok(broker, PRODUCER_PERF, "--topic", topic, "--num-records", "3000", "--record-size", "100",
           "--throughput", "-1", "--producer-props", f"bootstrap.servers={broker.bootstrap}", "acks=all",
           bootstrap=False, timeout=180)

    def described(*args):
        r = run_ok(broker, LOG_DIRS_CMD, "--describe", *args)
        line = next((l for l in r.stdout.splitlines() if l.startswith("{")), None)
        assert line, r.report(broker, "LogDirsCommand --describe")
        return json.loads(line)

    def on_disk(p):
        return sum(f.stat().st_size for f in (broker.data_dir / f"{topic}-{p}").glob("*.log"))

    out = described("--topic-list", topic)
    [b] = out["brokers"]
    [d] = b["logDirs"]
    assert d["error"] is None and pathlib.Path(d["logDir"]) == broker.data_dir.resolve(), d
    sizes = {p["partition"]: p["size"] for p in d["partitions"]}
    assert sizes == {f"{topic}-{p}": on_disk(p) for p in range(3)}, sizes
    assert sum(sizes.values()) > 3000 * 100, sizes
    assert all(p["offsetLag"] == 0 and p["isFuture"] is False for p in d["partitions"]), d
    # Without --topic-list every partition the broker hosts is listed.
    everything = {p["partition"] for p in described()["brokers"][0]["logDirs"][0]["partitions"]}
    assert set(sizes) <= everything, everything


def test_acl_command_says_security_is_disabled_as_kafka_without_an_authorizer_does(java_env, broker):
    """Runnel has no authorizer; kafka-acls gets the answers Apache Kafka gives when
    authorizer.class.name is unset (checked against Kafka 4.1.1 itself)."""
    for args, message in [
        (["--list"], "No Authorizer is configured on the broker"),
        (["--add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "t"],
         "No Authorizer is configured."),
        (["--remove", "--force", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "t"],
         "No Authorizer is configured."),
    ]:
        r = tool(ACL_CMD, *args, bootstrap=broker.bootstrap, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode == 1, r.report(broker, f"AclCommand {' '.join(args)} should exit 1")
        assert f"Error while executing ACL command: org.apache.kafka.common.errors.SecurityDisabledException: {message}" \
            in out, r.report(broker, f"AclCommand {' '.join(args)}")


def test_leader_election_and_reassignment_tools_on_a_single_node(java_env, broker, tmp_path):
    """kafka-leader-election and kafka-reassign-partitions print and exit as against a
    single-node Apache Kafka 4.1.1 (outputs checked against it): every partition already
    has its preferred leader, and [node.id] is the only assignment there can be."""
    import json
    topic = unique_topic("elect")
    create_topic(broker, topic, 2)

    def run(main, *args):
        r = tool(main, *args, bootstrap=broker.bootstrap, timeout=60)
        assert r.returncode is not None, r.report(broker, f"{main} {' '.join(args)}")
        return r.returncode, r.stdout + r.stderr

    rc, out = run(ELECTION_CMD, "--election-type", "PREFERRED", "--topic", topic, "--partition", "0")
    assert rc == 0 and f"Valid replica already elected for partitions {topic}-0" in out, out[-2000:]
    rc, out = run(ELECTION_CMD, "--election-type", "UNCLEAN", "--topic", topic, "--partition", "1")
    assert rc == 0 and f"Valid replica already elected for partitions {topic}-1" in out, out[-2000:]
    rc, out = run(ELECTION_CMD, "--election-type", "PREFERRED", "--all-topic-partitions")
    assert rc == 0 and "could not be elected" not in out, out[-2000:]
    rc, out = run(ELECTION_CMD, "--election-type", "PREFERRED", "--topic", "no-such-topic", "--partition", "0")
    assert rc == 1 and "UnknownTopicOrPartitionException: No such topic as no-such-topic" in out, out[-2000:]

    rc, out = run(REASSIGN_CMD, "--list")
    assert rc == 0 and "No partition reassignments found." in out, out[-2000:]

    def plan(name, replicas, t=topic):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({"version": 1, "partitions": [{"topic": t, "partition": 0, "replicas": replicas}]}))
        return str(f)

    same = plan("same", [1])
    rc, out = run(REASSIGN_CMD, "--execute", "--reassignment-json-file", same)
    assert rc == 0 and f"Successfully started partition reassignment for {topic}-0" in out, out[-2000:]
    rc, out = run(REASSIGN_CMD, "--verify", "--reassignment-json-file", same)
    assert rc == 0 and f"Reassignment of partition {topic}-0 is completed." in out, out[-2000:]
    assert f"Clearing topic-level throttles on topic {topic}" in out, out[-2000:]
    rc, out = run(REASSIGN_CMD, "--cancel", "--reassignment-json-file", same)
    assert rc == 0 and "None of the specified partition reassignments are active." in out, out[-2000:]
    rc, out = run(REASSIGN_CMD, "--execute", "--reassignment-json-file", plan("bad", [2]))
    assert rc == 1 and "Unknown broker id 2" in out, out[-2000:]
    rc, out = run(REASSIGN_CMD, "--execute", "--reassignment-json-file", plan("nope", [1], "no-such-topic"))
    assert rc == 1 and "UnknownTopicOrPartitionException: Topic no-such-topic not found." in out, out[-2000:]


def test_broker_logger_levels_change_at_run_time_with_kafka_configs(java_env, fresh_broker):
    if "RUNNEL_LOG" in os.environ:
        pytest.skip("RUNNEL_LOG sets other starting levels than this test expects")
    broker = fresh_broker  # its own: the levels changed here must not leak into other tests
    broker.start()
    entity = ["--entity-type", "broker-loggers", "--entity-name", "1"]

    def levels():
        r = run_ok(broker, CONFIG_CMD, "--describe", *entity)
        return dict(re.findall(r"^  ([\w.]+)=(\w+) sensitive=", r.stdout, re.M))

    before = levels()
    assert before["root"] == "INFO" and before["runnel_broker.server"] == "INFO", before
    assert "connection closed" not in broker.log_text()
    run_ok(broker, CONFIG_CMD, "--alter", *entity, "--add-config", "runnel_broker.server=DEBUG")
    now = levels()  # this tool's connection closes at DEBUG now
    assert now["runnel_broker.server"] == "DEBUG" and now["root"] == "INFO", now
    assert now["runnel_broker.log"] == "INFO", now
    assert wait_for(lambda: "DEBUG" in broker.log_text() and "connection closed" in broker.log_text()), \
        broker.log_text()[-2000:]

    r = tool(CONFIG_CMD, "--alter", *entity, "--add-config", "runnel_broker.server=LOUD",
             bootstrap=broker.bootstrap, timeout=60)
    assert r.returncode == 1 and "not a supported log level" in r.stdout + r.stderr, r.report(broker)
    r = tool(CONFIG_CMD, "--alter", *entity, "--delete-config", "root", bootstrap=broker.bootstrap, timeout=60)
    assert r.returncode == 1 and "Removing the log level of the root logger is not allowed" in r.stdout + r.stderr, \
        r.report(broker)
    run_ok(broker, CONFIG_CMD, "--alter", *entity, "--delete-config", "runnel_broker.server")
    assert levels() == before


# --------------------------------------------------------------------------- DumpLogSegments

def segments(part_dir: pathlib.Path) -> list[int]:
    return sorted(int(p.stem) for p in part_dir.glob("*.log"))


def dump(broker, part_dir, bases, *flags, files=(".log", ".index", ".timeindex")):
    return dump_log_segments(broker, [part_dir / f"{b:020d}{ext}" for b in bases for ext in files], *flags)


def check_dump(text, codec, expected, first_offset, what):
    """Every batch valid, magic 2, the produced codec; records consecutive from first_offset and
    equal to what was produced. Returns the next offset."""
    batches, recs = parse_dump(text, what)
    assert batches, f"{what}: no batches in the dump:\n{text[:3000]}"
    for b in batches:
        assert b["valid"] and b["magic"] == 2, f"{what}: {b['line']}"
        assert b["codec"] == codec, f"{what}: batch stored with codec {b['codec']}, produced with {codec}: {b['line']}"
    assert sum(b["count"] for b in batches) == len(recs), f"{what}: batch counts disagree with records printed"
    off = first_offset
    for r in recs:
        assert r["offset"] == off, f"{what}: expected offset {off}, dump shows {r['offset']}"
        key, value = expected[off]
        assert (r["key"], r["payload"]) == (key, value), \
            f"{what}: offset {off}: dump shows key={r['key']!r} payload={(r['payload'] or '')[:80]!r}..., produced {key!r}"
        assert r["key_size"] == len(key) and r["value_size"] == len(value), f"{what}: sizes at offset {off}: {r}"
        assert r["ts_type"] == "CreateTime", f"{what}: {r}"
        off += 1
    return off


@pytest.mark.parametrize("codec", CODECS)
def test_dump_log_segments(java_env, fresh_broker, codec):
    """Runnel's segments (.log/.index/.timeindex) read by Kafka's own kafka-dump-log:
    rolled segments while the broker runs, then every segment after a graceful stop; then
    the broker restarts on its files and serves the same data across a segment boundary."""
    broker = fresh_broker
    broker.start()
    topic = unique_topic(f"dump-{codec}")
    create_topic(broker, topic, 1, "segment.bytes=1048576")  # Kafka 4's minimum segment.bytes
    rnd = random.Random(codec)
    n = 3000
    expected = [(f"key-{i}", f"value-{i}-" + rnd.randbytes(500).hex()) for i in range(n)]  # ~1 KB, ~50% compressible
    run_ok(broker, CONSOLE_PRODUCER, "--topic", topic, "--compression-codec", codec,
           "--producer-property", "enable.idempotence=false", "--request-required-acks", "all",
           "--property", "parse.key=true", input="".join(f"{k}\t{v}\n" for k, v in expected), timeout=120)
    assert offsets(broker, topic, -1) == {0: n}

    part_dir = broker.data_dir / f"{topic}-0"
    bases = segments(part_dir)
    assert len(bases) >= 2, f"no segment rolled at segment.bytes=1048576 after ~3 MB ({codec}): {sorted(p.name for p in part_dir.iterdir())}"
    assert bases[0] == 0
    rolled = bases[:-1]

    # While running: rolled segments only (Kafka's own active segment has preallocated index
    # files that fail --index-sanity-check while the broker runs).
    out = dump(broker, part_dir, rolled, "--deep-iteration", "--print-data-log", "--index-sanity-check")
    for b in rolled:
        assert f"{b:020d}.index passed sanity check." in out and f"{b:020d}.timeindex passed sanity check." in out, out[-2000:]
    nxt = check_dump(out, codec, expected, 0, f"{codec} rolled segments (running)")
    assert nxt == bases[-1], f"rolled segments end at offset {nxt}, but the next segment is named {bases[-1]:020d}"
    idx = dump(broker, part_dir, rolled, files=(".index", ".timeindex"))  # entry-by-entry verification
    assert re.search(r"^offset: \d+ position: \d+$", idx, re.M), f"rolled .index has no entries:\n{idx[:2000]}"
    assert re.search(r"^timestamp: \d+ offset: \d+$", idx, re.M), f"rolled .timeindex has no entries:\n{idx[:2000]}"

    # After a graceful stop: every segment, including the last one.
    broker.stop()
    bases = segments(part_dir)
    out = dump(broker, part_dir, bases, "--deep-iteration", "--print-data-log", "--index-sanity-check")
    assert check_dump(out, codec, expected, 0, f"{codec} all segments (stopped)") == n
    dump(broker, part_dir, bases, files=(".index", ".timeindex"))

    # Restarted on the same files: offsets and the data are all there.
    broker.start()
    assert offsets(broker, topic, -1) == {0: n} and offsets(broker, topic, -2) == {0: 0}
    r = run_ok(broker, CONSOLE_CONSUMER, "--topic", topic, "--partition", "0", "--offset", str(bases[-1] - 2),
               "--max-messages", "4", "--timeout-ms", "30000", "--property", "print.key=true",
               "--property", "print.offset=true", timeout=90)
    want = [f"Offset:{o}\t{expected[o][0]}\t{expected[o][1]}" for o in range(bases[-1] - 2, bases[-1] + 2)]
    assert r.stdout.splitlines() == want, f"after restart, across the segment boundary at {bases[-1]}:\n{r.stdout[:2000]}"
