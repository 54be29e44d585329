"""Consumer groups across client implementations, the coordinator's error answers, and
`runnel groups` against Apache Kafka's own kafka-consumer-groups tool.

- confluent-kafka and kafka-python 3.x members in one `range` group share its partitions
  and read every record exactly once; their commits are visible through OffsetFetch.
- Two Java KafkaConsumers with cooperative-sticky split the partitions; when one closes the
  other takes them all and nothing committed is read again.
- JoinGroup/DeleteGroups errors as Kafka answers them (raw frames for exact codes, and as
  the Java client and Kafka's tool surface them).
- `runnel groups describe|reset-offsets|list|delete` print what ConsumerGroupCommand prints.

Every member runs in its own process and prints one JSON line per event (see
clients/group_member.py, clients/kafka_python_group_member.py, java/src/GroupMember.java);
each prints a record only after committing it."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from conftest import ROOT, runnel_bin, unique_topic
from interop_util import in_ci, require_module
from kafka_wire import connect, frame, header_v1, recv_frame, string, Reader

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "java"))
from javakit import BUILD, JVM_OPTS, LIB, java_env, tool  # noqa: E402,F401

HERE = pathlib.Path(__file__).resolve().parent
CK_MEMBER = HERE / "clients" / "group_member.py"
KP_MEMBER = HERE / "clients" / "kafka_python_group_member.py"
GROUP_CMD = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"

# Kafka error codes
INVALID_GROUP_ID = 24
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_SESSION_TIMEOUT = 26
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
COORDINATOR_RETRIABLE = {14, 15, 16}  # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR


# ---------------------------------------------------------------------------- helpers

def kp3_python() -> str:
    py = os.environ.get("RUNNEL_KP3_PYTHON", "/tmp/venv-kp3/bin/python")
    if not os.path.exists(py):
        msg = f"kafka-python 3.x venv {py} missing (.ci/run creates it)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return py


def runnel_cli() -> str:
    """The `runnel` CLI: $RUNNEL_CLI, else the broker binary if it is runnel, else the
    workspace build (RUNNEL_BIN may point at kafka-as-runnel.sh)."""
    env = os.environ.get("RUNNEL_CLI")
    if env:
        return env
    b = runnel_bin()
    if pathlib.Path(b).name == "runnel":
        return b
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "runnel"
        if p.exists():
            return str(p)
    raise RuntimeError("runnel CLI not found: build it or set RUNNEL_CLI")


def cli(broker, *args, timeout=60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([runnel_cli(), "--bootstrap-server", broker.bootstrap, *args],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"runnel {' '.join(args)}: no exit within {timeout}s\n{e.stdout}\n{e.stderr}")


def cli_ok(broker, *args) -> str:
    cp = cli(broker, *args)
    assert cp.returncode == 0, f"runnel {' '.join(args)} exited {cp.returncode}:\n{cp.stdout}\n{cp.stderr}"
    return cp.stdout


def kafka_tool_ok(broker, *args) -> str:
    r = tool(GROUP_CMD, *args, bootstrap=broker.bootstrap, timeout=90)
    r.expect_ok(broker, f"ConsumerGroupCommand {' '.join(args)}")
    return r.stdout


class Member:
    """A group member process printing JSON events (one per line)."""

    def __init__(self, cmd: list[str], name: str, env: dict | None = None):
        self.name = name
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=full_env)
        self.events: queue.Queue = queue.Queue()
        self.assigned: list[int] | None = None
        self.assign_count = 0
        self.records: list[tuple[int, int, str]] = []
        self.other: list[dict] = []
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"unparsed": line})

    def _read_err(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            del self.stderr[:-200]

    def drain(self):
        while True:
            try:
                e = self.events.get_nowait()
            except queue.Empty:
                return
            if "assigned" in e:
                self.assigned = sorted(e["assigned"])
                self.assign_count += 1
            elif "record" in e:
                self.records.append(tuple(e["record"]))
            else:
                self.other.append(e)

    def send(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def describe(self) -> str:
        self.drain()
        return (f"{self.name}: rc={self.proc.poll()} assigned={self.assigned} records={len(self.records)} "
                f"events={self.other[-10:]} stderr tail:\n{''.join(self.stderr[-20:])}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def ck_member(broker, group, topic) -> Member:
    return Member([sys.executable, str(CK_MEMBER), broker.bootstrap, group, topic], "confluent-kafka")


def kp_member(broker, group, topic) -> Member:
    return Member([kp3_python(), str(KP_MEMBER), broker.bootstrap, group, topic], "kafka-python")


def java_member(broker, group, topic, strategy, *configs, name="java") -> Member:
    cmd = ["java", *JVM_OPTS, "-cp", f"{LIB}/*:{BUILD}", "GroupMember", broker.bootstrap, group, topic,
           strategy, *configs]
    return Member(cmd, name, env={"RUNNEL_JAVA_DEADLINE_S": "150"})


def wait_until(pred, timeout, members=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in members:
            m.drain()
        if pred():
            return True
        time.sleep(0.1)
    for m in members:
        m.drain()
    return pred()


def create_topic(broker, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def produce(ck, broker, topic, values, partitions, timestamps=None):
    p = ck.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    errs = []
    for n, i in enumerate(values):
        kw = {"timestamp": timestamps[n]} if timestamps else {}
        p.produce(topic, value=str(i).encode(), partition=i % partitions,
                  on_delivery=lambda e, m: e and errs.append(e), **kw)
    assert p.flush(30) == 0 and not errs, f"produce failed: {errs[:3]}"


def commit(ck, broker, group, offsets: list[tuple[str, int, int]]):
    """Commits as a simple consumer (no membership). Retries while the coordinator is not
    ready: a fresh Kafka answers NOT_COORDINATOR until __consumer_offsets is loaded."""
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        deadline = time.time() + 60
        while True:
            try:
                c.commit(offsets=[ck.TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=False)
                return
            except ck.KafkaException as e:
                if e.args[0].code() not in COORDINATOR_RETRIABLE or time.time() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        c.close()


def committed(ck, broker, group, topic, partitions) -> dict[int, int]:
    """The group's committed offsets, read with OffsetFetch (confluent-kafka's committed())."""
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([ck.TopicPartition(topic, p) for p in range(partitions)], timeout=20)
    finally:
        c.close()
    assert all(tp.error is None for tp in got), got
    return {tp.partition: tp.offset for tp in got}


def partitioned(members, n) -> bool:
    """Every member owns something, no partition twice, all n owned."""
    owned = [p for m in members for p in (m.assigned or [])]
    return all(m.assigned for m in members) and sorted(owned) == list(range(n))


def values_of(members) -> list[int]:
    return sorted(int(v) for m in members for _, _, v in m.records)


def duplicates(members) -> list[int]:
    seen, dup = set(), []
    for v in (int(v) for m in members for _, _, v in m.records):
        if v in seen:
            dup.append(v)
        seen.add(v)
    return dup


# ---------------------------------------------------------------------------- raw frames

def consumer_subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, user_data (null)."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += string(t)
    return out + struct.pack(">i", -1)


def nstr(r: Reader) -> str | None:
    n = r.i16()
    return None if n < 0 else r.take(n).decode()


class Raw:
    """One connection speaking JoinGroup v5 / DeleteGroups v1 / FindCoordinator v1 by hand."""

    def __init__(self, broker):
        self.broker = broker
        self.sock = connect(broker)
        self.corr = 0

    def close(self):
        self.sock.close()

    def _call(self, api_key: int, version: int, body: bytes, timeout: float = 15.0) -> Reader:
        self.corr += 1
        self.sock.sendall(frame(header_v1(api_key, version, self.corr) + body))
        r = Reader(recv_frame(self.sock, timeout))
        assert r.i32() == self.corr, "correlation id"
        return r

    def find_coordinator(self, group: str, deadline_s: float = 60.0) -> int:
        """FindCoordinator v1 until it answers without error (Kafka creates
        __consumer_offsets on the first one). Returns the last error code."""
        deadline = time.time() + deadline_s
        while True:
            r = self._call(10, 1, string(group) + b"\x00")
            r.i32()  # throttle
            err = r.i16()
            if err == 0 or time.time() > deadline:
                return err
            time.sleep(0.3)

    def join(self, group: str, member_id: str = "", protocol_type: str = "consumer",
             protocols: list[tuple[str, bytes]] | None = None, session_ms: int = 30000,
             rebalance_ms: int = 30000, timeout: float = 30.0):
        """JoinGroup v5 -> (error, generation, protocol, leader, member_id, members).
        Retries while the coordinator is loading/unavailable."""
        if protocols is None:
            protocols = [("range", consumer_subscription(["t"]))]
        body = string(group) + struct.pack(">ii", session_ms, rebalance_ms) + string(member_id)
        body += struct.pack(">h", -1) + string(protocol_type) + struct.pack(">i", len(protocols))
        for name, md in protocols:
            body += string(name) + struct.pack(">i", len(md)) + md
        deadline = time.time() + 60
        while True:
            r = self._call(11, 5, body, timeout)
            r.i32()  # throttle
            err, gen = r.i16(), r.i32()
            proto, leader, mid = nstr(r), nstr(r), nstr(r)
            members = []
            for _ in range(r.i32()):
                m, inst = nstr(r), nstr(r)
                md = r.take(r.i32())
                members.append((m, inst, md))
            assert r.done(), "JoinGroup v5 response has trailing bytes"
            if err in COORDINATOR_RETRIABLE and time.time() < deadline:
                time.sleep(0.3)
                continue
            return err, gen, proto, leader, mid, members

    def join_fully(self, group: str, **kw):
        """A new member's two-step join (MEMBER_ID_REQUIRED, then with the id)."""
        err, _, _, _, mid, _ = self.join(group, **kw)
        assert err == MEMBER_ID_REQUIRED and mid, f"first JoinGroup v5: error {err}, member id {mid!r}"
        return self.join(group, member_id=mid, **kw)

    def delete_groups(self, groups: list[str]) -> dict[str, int]:
        body = struct.pack(">i", len(groups)) + b"".join(string(g) for g in groups)
        r = self._call(42, 1, body)
        r.i32()  # throttle
        out = {}
        for _ in range(r.i32()):
            g = nstr(r)
            out[g] = r.i16()
        return out


# ---------------------------------------------------------------------------- 1. mixed group

def test_confluent_and_kafka_python_members_share_one_range_group(broker):
    ck = require_module("confluent_kafka")
    kp3_python()
    topic, group = unique_topic("mixed"), unique_topic("g-mixed")
    create_topic(broker, topic, 4)
    a = ck_member(broker, group, topic)
    b = kp_member(broker, group, topic)
    members = [a, b]
    try:
        ok = wait_until(lambda: partitioned(members, 4), 60, members)
        assert ok, "no assignment covering 4 partitions across both:\n" + "\n".join(m.describe() for m in members)
        version = next((e["version"] for e in b.other if "version" in e), None)
        assert version and version.startswith("3."), f"kafka-python venv runs {version}"
        assert sorted(len(m.assigned) for m in members) == [2, 2], [m.assigned for m in members]
        n = 400
        produce(ck, broker, topic, range(n), 4)
        ok = wait_until(lambda: sum(len(m.records) for m in members) >= n, 60, members)
        assert ok, "not every record consumed:\n" + "\n".join(m.describe() for m in members)
        time.sleep(2)  # anything read twice would show up now
        for m in members:
            m.drain()
        assert not duplicates(members), f"read twice: {duplicates(members)[:20]}"
        assert values_of(members) == list(range(n))
        for m in members:
            assert m.records, f"{m.name} consumed nothing: {m.describe()}"
            assert {p for p, _, _ in m.records} <= set(m.assigned), f"{m.name} read outside its assignment"
        assert committed(ck, broker, group, topic, 4) == {p: n // 4 for p in range(4)}
    finally:
        for m in members:
            m.kill()


# ---------------------------------------------------------------------------- 2. cooperative-sticky

def test_java_cooperative_sticky_members_split_then_the_survivor_takes_all(java_env, broker):
    ck = require_module("confluent_kafka")
    from confluent_kafka.admin import AdminClient
    topic, group = unique_topic("coop"), unique_topic("g-coop")
    create_topic(broker, topic, 4)
    a = java_member(broker, group, topic, "cooperative-sticky", name="java-A")
    members = [a]
    try:
        assert wait_until(lambda: a.assigned == [0, 1, 2, 3], 60, members), a.describe()
        b = java_member(broker, group, topic, "cooperative-sticky", name="java-B")
        members.append(b)
        ok = wait_until(lambda: partitioned(members, 4) and len(a.assigned) == 2, 60, members)
        assert ok, "no 2/2 split:\n" + "\n".join(m.describe() for m in members)
        # Incremental: A gave up only what moved to B, never everything it owned.
        revoked = [e["partitions"] for e in a.other if e.get("rebalance") == "revoked"]
        assert revoked and all(len(r) < 4 for r in revoked), f"A's revocations: {revoked}"
        assert not set(sum(revoked, [])) & set(a.assigned), f"A revoked {revoked} but owns {a.assigned}"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # kept referenced while it works
        desc = admin.describe_consumer_groups([group])[group].result(20)
        assert desc.partition_assignor == "cooperative-sticky", desc
        assert len(desc.members) == 2, desc

        produce(ck, broker, topic, range(200), 4)
        assert wait_until(lambda: sum(len(m.records) for m in members) >= 200, 60, members), \
            "\n".join(m.describe() for m in members)
        a_parts = set(a.assigned)

        # More records arrive while A leaves.
        def trickle():
            for k in range(20):
                produce(ck, broker, topic, range(200 + 10 * k, 210 + 10 * k), 4)
                time.sleep(0.15)
        t = threading.Thread(target=trickle)
        t.start()
        time.sleep(0.5)
        a.send("close")
        try:
            a.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("A did not close within 60 s: " + a.describe())
        a.drain()
        assert a.proc.returncode == 0 and {"closed": True} in a.other, a.describe()
        t.join(60)
        assert wait_until(lambda: b.assigned == [0, 1, 2, 3], 60, [b]), b.describe()
        ok = wait_until(lambda: sum(len(m.records) for m in members) >= 400, 60, members)
        assert ok, "consumption did not continue:\n" + "\n".join(m.describe() for m in members)
        time.sleep(2)
        for m in members:
            m.drain()
        assert not duplicates(members), f"committed records read again: {duplicates(members)[:20]}"
        assert values_of(members) == list(range(400))
        assert {p for p, _, _ in b.records[-100:]} & a_parts, "B never read A's former partitions"
        assert committed(ck, broker, group, topic, 4) == {p: 100 for p in range(4)}
    finally:
        for m in members:
            m.kill()


# ---------------------------------------------------------------------------- 3. error answers

def java_error(m: Member, timeout=90) -> dict:
    try:
        m.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{m.name} still running after {timeout}s (expected a fatal error): {m.describe()}")
    m.drain()
    errs = [e for e in m.other if "error" in e and "commit_failed" not in e]
    assert m.proc.returncode == 2 and errs, f"expected an exception from poll(): {m.describe()}"
    return errs[0]


def test_join_with_a_session_timeout_out_of_range_is_refused(java_env, broker):
    topic, group = unique_topic("sess"), unique_topic("g-sess")
    create_topic(broker, topic, 1)
    raw = Raw(broker)
    try:
        assert raw.find_coordinator(group) == 0
        assert raw.join(group, session_ms=1000)[0] == INVALID_SESSION_TIMEOUT
        assert raw.join(group, session_ms=5999)[0] == INVALID_SESSION_TIMEOUT  # group.min.session.timeout.ms=6000
        assert raw.join(group, session_ms=1_800_001)[0] == INVALID_SESSION_TIMEOUT  # above the max
        assert raw.join(group, session_ms=6000)[0] == MEMBER_ID_REQUIRED  # the minimum itself is fine
    finally:
        raw.close()
    m = java_member(broker, unique_topic("g-sess-java"), topic, "range",
                    "session.timeout.ms=1000", "heartbeat.interval.ms=300")
    try:
        e = java_error(m)
        assert e["error"] == "org.apache.kafka.common.errors.InvalidSessionTimeoutException", e
    finally:
        m.kill()


def test_join_with_an_empty_group_id_is_refused(broker):
    raw = Raw(broker)
    try:
        err, gen, *_ = raw.join("")
        assert (err, gen) == (INVALID_GROUP_ID, -1)
    finally:
        raw.close()


def test_join_with_another_protocol_type_or_no_common_protocol_is_refused(java_env, broker):
    topic, group = unique_topic("proto"), unique_topic("g-proto")
    create_topic(broker, topic, 1)
    first, other = Raw(broker), Raw(broker)
    try:
        assert first.find_coordinator(group) == 0
        err, gen, proto, leader, mid, members = first.join_fully(
            group, protocols=[("range", consumer_subscription([topic]))])
        assert (err, proto, leader) == (0, "range", mid) and gen >= 1 and [m[0] for m in members] == [mid]
        # A `connect` worker cannot join a `consumer` group ...
        err, gen, *_ = other.join(group, protocol_type="connect", protocols=[("default", b"\x00")])
        assert (err, gen) == (INCONSISTENT_GROUP_PROTOCOL, -1)
        # ... nor can a consumer whose only assignor no member supports.
        err, *_ = other.join(group, protocols=[("roundrobin", consumer_subscription([topic]))])
        assert err == INCONSISTENT_GROUP_PROTOCOL
        # Kafka's Java client surfaces it as InconsistentGroupProtocolException.
        m = java_member(broker, group, topic, "roundrobin")
        try:
            e = java_error(m)
            assert e["error"] == "org.apache.kafka.common.errors.InconsistentGroupProtocolException", e
        finally:
            m.kill()
    finally:
        first.close()
        other.close()


def test_group_max_size_refuses_the_second_member(java_env, fresh_broker):
    fresh_broker.overrides["group.max.size"] = "1"
    fresh_broker.overrides["group.initial.rebalance.delay.ms"] = "0"
    fresh_broker.start()
    require_module("confluent_kafka")
    topic, group = unique_topic("max"), unique_topic("g-max")
    create_topic(fresh_broker, topic, 2)
    a = java_member(fresh_broker, group, topic, "range", name="java-A")
    try:
        assert wait_until(lambda: a.assigned == [0, 1], 60, [a]), a.describe()
        b = java_member(fresh_broker, group, topic, "range", name="java-B")
        try:
            e = java_error(b)
            assert e["error"] == "org.apache.kafka.common.errors.GroupMaxSizeReachedException", e
        finally:
            b.kill()
        raw = Raw(fresh_broker)
        try:
            err, gen, *_ = raw.join(group, protocols=[("range", consumer_subscription([topic]))])
            assert (err, gen) == (GROUP_MAX_SIZE_REACHED, -1)
        finally:
            raw.close()
        # The member inside is undisturbed.
        time.sleep(1)
        a.drain()
        assert a.proc.poll() is None and a.assigned == [0, 1], a.describe()
    finally:
        a.kill()


def test_delete_groups_refuses_non_empty_and_unknown_groups(broker):
    require_module("confluent_kafka")
    topic, group = unique_topic("del"), unique_topic("g-del")
    unknown = unique_topic("g-nosuch")
    create_topic(broker, topic, 1)
    m = ck_member(broker, group, topic)
    try:
        assert wait_until(lambda: m.assigned == [0], 60, [m]), m.describe()
        raw = Raw(broker)
        try:
            assert raw.delete_groups([group, unknown]) == {group: NON_EMPTY_GROUP, unknown: GROUP_ID_NOT_FOUND}
        finally:
            raw.close()
        r = tool(GROUP_CMD, "--delete", "--group", group, "--group", unknown, bootstrap=broker.bootstrap, timeout=90)
        out = r.stdout + r.stderr
        assert "Deletion of some consumer groups failed:" in out, r.report(broker, "--delete")
        assert f"* Group '{group}' could not be deleted due to: org.apache.kafka.common.errors.GroupNotEmptyException" \
            in out, r.report(broker, "--delete non-empty")
        assert f"* Group '{unknown}' could not be deleted due to: " \
            "org.apache.kafka.common.errors.GroupIdNotFoundException" in out, r.report(broker, "--delete unknown")
        cp = cli(broker, "groups", "delete", "--group", group)
        assert cp.returncode != 0 and "not empty" in cp.stderr, cp
        cp = cli(broker, "groups", "delete", "--group", unknown)
        assert cp.returncode != 0 and "does not exist" in cp.stderr, cp
        m.drain()
        assert m.proc.poll() is None and m.assigned == [0], m.describe()
    finally:
        m.kill()


# ---------------------------------------------------------------------------- 4. CLI agreement

def table_rows(text: str, group: str, width: int) -> list[tuple[str, ...]]:
    """Rows of a kafka-consumer-groups style table that start with `group`, sorted."""
    rows = [tuple(line.split()) for line in text.splitlines() if line.split()[:1] == [group]]
    assert all(len(r) == width for r in rows), f"rows of {width} columns expected:\n{text}"
    return sorted(rows, key=lambda r: (r[1], int(r[2])))


def kafka_describe(broker, group):
    return table_rows(kafka_tool_ok(broker, "--describe", "--group", group), group, 9)


def runnel_describe(broker, group):
    out = cli_ok(broker, "groups", "describe", "--group", group)
    assert f"Consumer group '{group}' has no active members." in out, out
    return table_rows(out, group, 9)


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}"


def test_runnel_groups_agrees_with_kafka_consumer_groups(java_env, fresh_broker):
    ck = require_module("confluent_kafka")
    fresh_broker.overrides["group.initial.rebalance.delay.ms"] = "0"
    fresh_broker.start()
    b = fresh_broker
    topic, other_topic = unique_topic("cli"), unique_topic("cli-other")
    group, group2 = unique_topic("g-cli"), unique_topic("g-cli2")
    create_topic(b, topic, 3)
    create_topic(b, other_topic, 1)
    # 60 records, 20 per partition, one second apart, an hour ago.
    base = (int(time.time()) - 3600) * 1000
    produce(ck, b, topic, range(60), 3, timestamps=[base + i * 1000 for i in range(60)])
    produce(ck, b, other_topic, range(5), 1)
    commit(ck, b, group, [(topic, 0, 5), (topic, 1, 12), (topic, 2, 20), (other_topic, 0, 2)])
    commit(ck, b, group2, [(other_topic, 0, 4)])

    # describe: topic, partition, current, log-end, lag (and "-" for consumer, host, client)
    expected = sorted([(group, topic, "0", "5", "20", "15", "-", "-", "-"),
                       (group, topic, "1", "12", "20", "8", "-", "-", "-"),
                       (group, topic, "2", "20", "20", "0", "-", "-", "-"),
                       (group, other_topic, "0", "2", "5", "3", "-", "-", "-")], key=lambda r: (r[1], int(r[2])))
    assert kafka_describe(b, group) == expected, "Kafka's own tool disagrees with what was committed"
    assert runnel_describe(b, group) == expected

    # reset-offsets, dry run: same NEW-OFFSET tables; nothing changes
    mid = base + 30_500  # between records 30 and 31 (record i: partition i % 3, offset i // 3)
    specs = [
        ["--to-earliest"],
        ["--to-latest"],
        ["--to-offset", "7"],
        ["--shift-by", "-3"],
        ["--shift-by", "10"],  # clamped at the log end
        ["--to-datetime", iso_utc(mid)],
        ["--to-datetime", iso_utc(base + 3_600_000 * 2)],  # after every record: the log end
    ]
    for topic_arg in (topic, f"{topic}:0,2"):
        for spec in specs:
            args = ["--group", group, "--topic", topic_arg, *spec]
            k = table_rows(kafka_tool_ok(b, "--reset-offsets", *args, "--dry-run"), group, 4)
            r = table_rows(cli_ok(b, "groups", "reset-offsets", *args), group, 4)
            assert k, f"Kafka printed no rows for {args}"
            assert r == k, f"reset-offsets {' '.join(args)} (dry run): runnel {r} vs Kafka {k}"
    want_dt = {"0": "11", "1": "10", "2": "10"}  # first record at/after `mid` per partition
    got = table_rows(cli_ok(b, "groups", "reset-offsets", "--group", group, "--topic", topic,
                            "--to-datetime", iso_utc(mid)), group, 4)
    assert {p: o for _, _, p, o in got} == want_dt, got
    assert kafka_describe(b, group) == expected and runnel_describe(b, group) == expected, "a dry run changed offsets"

    # --execute with Kafka's tool: both describe the new offsets
    preview = table_rows(cli_ok(b, "groups", "reset-offsets", "--group", group, "--topic", topic,
                                "--to-datetime", iso_utc(mid)), group, 4)
    done = table_rows(kafka_tool_ok(b, "--reset-offsets", "--group", group, "--topic", topic,
                                    "--to-datetime", iso_utc(mid), "--execute"), group, 4)
    assert done == preview
    expected = sorted([(group, topic, "0", "11", "20", "9", "-", "-", "-"),
                       (group, topic, "1", "10", "20", "10", "-", "-", "-"),
                       (group, topic, "2", "10", "20", "10", "-", "-", "-"),
                       (group, other_topic, "0", "2", "5", "3", "-", "-", "-")], key=lambda r: (r[1], int(r[2])))
    assert kafka_describe(b, group) == expected
    assert runnel_describe(b, group) == expected

    # --execute with runnel: both describe the new offsets
    preview = table_rows(kafka_tool_ok(b, "--reset-offsets", "--group", group, "--topic", f"{topic}:1,2",
                                       "--shift-by", "-4", "--dry-run"), group, 4)
    done = table_rows(cli_ok(b, "groups", "reset-offsets", "--group", group, "--topic", f"{topic}:1,2",
                             "--shift-by", "-4", "--execute"), group, 4)
    assert done == preview
    expected = sorted([(group, topic, "0", "11", "20", "9", "-", "-", "-"),
                       (group, topic, "1", "6", "20", "14", "-", "-", "-"),
                       (group, topic, "2", "6", "20", "14", "-", "-", "-"),
                       (group, other_topic, "0", "2", "5", "3", "-", "-", "-")], key=lambda r: (r[1], int(r[2])))
    assert kafka_describe(b, group) == expected
    assert runnel_describe(b, group) == expected
    assert committed(ck, b, group, topic, 3) == {0: 11, 1: 6, 2: 6}

    # list, then delete
    k_list = sorted(kafka_tool_ok(b, "--list").split())
    r_list = sorted(cli_ok(b, "groups", "list").split())
    assert k_list == r_list, f"runnel {r_list} vs Kafka {k_list}"
    assert {group, group2} <= set(k_list)
    out = cli_ok(b, "groups", "delete", "--group", group)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in out, out
    assert group not in kafka_tool_ok(b, "--list").split()
    assert group not in cli_ok(b, "groups", "list").split()
    assert group2 in kafka_tool_ok(b, "--list").split()
    assert committed(ck, b, group, topic, 3) == {p: ck.OFFSET_INVALID for p in range(3)}


def test_runnel_groups_list_shows_consumer_groups_only_like_kafka(java_env, fresh_broker):
    """kafka-consumer-groups --list shows consumer groups (protocol type "consumer", or none
    for groups that only hold offsets), not e.g. Kafka Connect's worker groups."""
    ck = require_module("confluent_kafka")
    fresh_broker.overrides["group.initial.rebalance.delay.ms"] = "0"
    fresh_broker.start()
    b = fresh_broker
    topic = unique_topic("lst")
    offsets_only, active, connect = unique_topic("g-offsets"), unique_topic("g-active"), unique_topic("g-connect")
    create_topic(b, topic, 1)
    commit(ck, b, offsets_only, [(topic, 0, 0)])
    m = ck_member(b, active, topic)
    raw = Raw(b)
    try:
        assert wait_until(lambda: m.assigned == [0], 60, [m]), m.describe()
        err, *_ = raw.join_fully(connect, protocol_type="connect", protocols=[("default", b"\x00")])
        assert err == 0
        k_list = sorted(kafka_tool_ok(b, "--list").split())
        assert k_list == sorted([offsets_only, active]), f"Kafka's tool lists {k_list}"
        r_list = sorted(cli_ok(b, "groups", "list").split())
        assert r_list == k_list, f"runnel groups list: {r_list}, kafka-consumer-groups --list: {k_list}"
    finally:
        raw.close()
        m.kill()


def rust_member(broker, group, topic) -> Member:
    examples = pathlib.Path(runnel_cli()).parent / "examples"
    return Member([str(examples / "group_member"), broker.bootstrap, group, topic], "runnel-api")


def test_runnel_confluent_and_kafka_python_members_share_one_group(broker):
    """Runnel's own consumer in one group with confluent-kafka and kafka-python: two
    partitions each, every record read exactly once; the Rust member dies (SIGKILL, no
    LeaveGroup) and the other two take its partitions from its committed offsets."""
    ck = require_module("confluent_kafka")
    topic, group = unique_topic("mix3"), unique_topic("g")
    create_topic(broker, topic, 6)
    members = [rust_member(broker, group, topic), ck_member(broker, group, topic), kp_member(broker, group, topic)]
    try:
        assert wait_until(lambda: partitioned(members, 6) and all(len(m.assigned) == 2 for m in members), 60, members), \
            "\n".join(m.describe() for m in members)
        produce(ck, broker, topic, range(300), 6)
        assert wait_until(lambda: len(values_of(members)) >= 300, 60, members), "\n".join(m.describe() for m in members)
        assert values_of(members) == list(range(300)) and not duplicates(members)
        rust, others = members[0], members[1:]
        assert rust.records, "the Rust member consumed its share"
        rust.kill()
        assert wait_until(lambda: partitioned(others, 6), 60, others), "\n".join(m.describe() for m in others)
        produce(ck, broker, topic, range(300, 600), 6)
        assert wait_until(lambda: len(values_of(members)) >= 600, 60, others), "\n".join(m.describe() for m in members)
        assert values_of(members) == list(range(600)), "nothing skipped"
        assert not duplicates(members), "nothing committed is read again"
    finally:
        for m in members:
            m.kill()
