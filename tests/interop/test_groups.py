"""Consumer groups with real clients: members share partitions, commit to
__consumer_offsets, and a member that dies without leaving loses its partitions to the
others, who resume from the last committed offsets. Offsets survive a broker kill -9, and
Apache Kafka's kafka-consumer-groups tool reads them."""

import json
import pathlib
import queue
import subprocess
import sys
import threading
import time

from conftest import unique_topic
from interop_util import require_module

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "java"))
from javakit import tool  # noqa: E402

MEMBER = pathlib.Path(__file__).resolve().parent / "clients" / "group_member.py"
GROUP_CMD = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


class Member:
    """A group member in its own process, so it can die without a LeaveGroup."""

    def __init__(self, bootstrap, group, topic):
        self.proc = subprocess.Popen([sys.executable, str(MEMBER), bootstrap, group, topic],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: queue.Queue = queue.Queue()
        self.assigned: list[int] = []
        self.records: list[tuple[int, int, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def drain(self):
        while True:
            try:
                e = self.events.get_nowait()
            except queue.Empty:
                return
            if "assigned" in e:
                self.assigned = e["assigned"]
            else:
                self.records.append(tuple(e["record"]))

    def kill9(self):
        self.proc.kill()
        self.proc.wait()


def produce(ck, bootstrap, topic, start, n, partitions=6):
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + n):
        p.produce(topic, value=str(i).encode(), partition=i % partitions)
    assert p.flush(30) == 0


def wait_until(pred, timeout, members):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in members:
            m.drain()
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_a_dead_member_loses_its_partitions_and_the_others_resume_from_committed_offsets(broker):
    ck = require_module("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group = unique_topic("grp"), unique_topic("g")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])[topic].result(15)
    members = [Member(broker.bootstrap, group, topic) for _ in range(3)]
    try:
        ok = wait_until(lambda: sorted(len(m.assigned) for m in members) == [2, 2, 2], 30, members)
        assert ok, f"assignments: {[m.assigned for m in members]}"
        assert sorted(p for m in members for p in m.assigned) == list(range(6))
        produce(ck, broker.bootstrap, topic, 0, 300)
        assert wait_until(lambda: sum(len(m.records) for m in members) == 300, 30, members)
        victim, survivors = members[0], members[1:]
        victim_partitions = set(victim.assigned)
        victim.kill9()  # no LeaveGroup: the coordinator must notice the silence
        assert wait_until(lambda: sorted(p for m in survivors for p in m.assigned) == list(range(6)), 40, survivors), \
            f"survivors own {[m.assigned for m in survivors]}"
        before = {m: len(m.records) for m in survivors}
        produce(ck, broker.bootstrap, topic, 300, 300)
        assert wait_until(lambda: sum(len(m.records) - before[m] for m in survivors) == 300, 30, survivors)
        # Everything the victim consumed (and committed) is not read again; nothing is skipped.
        new = [r for m in survivors for r in m.records[before[m]:]]
        values = sorted(int(v) for _, _, v in new)
        assert values == list(range(300, 600)), "after the rebalance exactly the new records are read"
        assert {p for p, _, _ in new} >= victim_partitions
    finally:
        for m in members:
            m.kill9()


def test_committed_offsets_survive_kill_9_and_kafka_tools_read_them(fresh_broker):
    ck = require_module("confluent_kafka")
    fresh_broker.overrides["group.initial.rebalance.delay.ms"] = "0"
    fresh_broker.start()
    topic, group = unique_topic("off"), unique_topic("g")
    produce(ck, fresh_broker.bootstrap, topic, 0, 60, partitions=1)
    c = ck.Consumer({"bootstrap.servers": fresh_broker.bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < 40 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m)
    c.commit(offsets=[ck.TopicPartition(topic, 0, got[39].offset() + 1)], asynchronous=False)
    c.close()
    fresh_broker.kill9()
    fresh_broker.start()
    c = ck.Consumer({"bootstrap.servers": fresh_broker.bootstrap, "group.id": group})
    committed = c.committed([ck.TopicPartition(topic, 0)], timeout=15)
    c.close()
    assert committed[0].offset == 40
    r = tool(GROUP_CMD, "--describe", "--group", group, bootstrap=fresh_broker.bootstrap, timeout=60)
    r.expect_ok(fresh_broker, "kafka-consumer-groups --describe")
    row = [line.split() for line in r.stdout.splitlines() if line.startswith(group)]
    assert row, r.stdout
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert row[0][1:6] == [topic, "0", "40", "60", "20"], r.stdout
    r = tool(GROUP_CMD, "--list", bootstrap=fresh_broker.bootstrap, timeout=60)
    assert group in r.stdout.split(), r.stdout
