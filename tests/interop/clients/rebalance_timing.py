#!/usr/bin/env python3
"""Rebalance timing (a measurement, not a test): how long the classic protocol takes to
give 10 confluent-kafka consumers their assignment, and to reassign after one leaves.

    python3 tests/interop/clients/rebalance_timing.py [--runs 3] [--members 10] [--heartbeat-ms N]
    RUNNEL_BIN=$PWD/tests/interop/java/kafka-as-runnel.sh python3 tests/interop/clients/rebalance_timing.py

Starts the broker as the interop suite does (tests/interop/conftest.py; $RUNNEL_BIN picks it)
with group.initial.rebalance.delay.ms=0, creates a topic with as many partitions as members,
and per run, in a new group:
  join:  from starting all members (threads: Consumer(), subscribe(), poll loop) until each
         has a non-empty assignment and together they own every partition exactly once;
  leave: from one member's close() until each of the others got a new assignment (on_assign
         after the close started) and together they own every partition.
Members use partition.assignment.strategy=range, otherwise librdkafka's defaults (session
45 s, heartbeat 3 s) unless --heartbeat-ms is given. Prints each run and the medians."""

import argparse
import pathlib
import statistics
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from confluent_kafka import Consumer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from conftest import Broker, runnel_bin  # noqa: E402


class M:
    def __init__(self, bootstrap, group, topic, hb):
        self.bootstrap, self.group, self.topic, self.hb = bootstrap, group, topic, hb
        self.assigns: list[tuple[float, list[int]]] = []
        self.stop = threading.Event()
        self.close_started = None
        self.closed = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        conf = {"bootstrap.servers": self.bootstrap, "group.id": self.group,
                "partition.assignment.strategy": "range", "enable.auto.commit": False,
                "auto.offset.reset": "earliest"}
        if self.hb:
            conf["heartbeat.interval.ms"] = self.hb
        c = Consumer(conf)

        def on_assign(_c, parts):
            self.assigns.append((time.monotonic(), sorted(p.partition for p in parts)))

        c.subscribe([self.topic], on_assign=on_assign)
        while not self.stop.is_set():
            c.poll(0.05)
        self.close_started = time.monotonic()
        c.close()
        self.closed.set()

    @property
    def current(self):
        return self.assigns[-1][1] if self.assigns else []


def covered(members, n):
    owned = [p for m in members for p in m.current]
    return all(m.current for m in members) and sorted(owned) == list(range(n))


def wait(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def one_run(bootstrap, topic, n, hb, run):
    group = f"timing-{run}-{time.time_ns()}"
    ms = [M(bootstrap, group, topic, hb) for _ in range(n)]
    t0 = time.monotonic()
    for m in ms:
        m.t.start()
    if not wait(lambda: covered(ms, n), 120):
        raise RuntimeError(f"join: no full assignment in 120 s: {[m.current for m in ms]}")
    join_s = max(m.assigns[-1][0] for m in ms) - t0
    gens = max(len(m.assigns) for m in ms)
    time.sleep(1.0)  # settled
    victim, rest = ms[0], ms[1:]
    victim.stop.set()
    if not wait(lambda: victim.close_started is not None, 10):
        raise RuntimeError("victim did not start closing")
    t1 = victim.close_started
    ok = wait(lambda: all(m.assigns and m.assigns[-1][0] > t1 for m in rest) and covered(rest, n), 120)
    if not ok:
        raise RuntimeError(f"leave: no full reassignment in 120 s: {[m.current for m in rest]}")
    leave_s = max(m.assigns[-1][0] for m in rest) - t1
    for m in rest:
        m.stop.set()
    for m in ms:
        m.closed.wait(60)
    return join_s, leave_s, gens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--heartbeat-ms", type=int, default=0)
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rebalance-timing-"))
    b = Broker(tmp / "data", {"group.initial.rebalance.delay.ms": "0"})
    b.start(timeout=120)
    try:
        topic = "timing"
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        deadline = time.time() + 60
        while True:
            try:
                admin.create_topics([NewTopic(topic, a.members, 1)])[topic].result(30)
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        time.sleep(2)
        print(f"broker: {runnel_bin()} at {b.bootstrap}; members={a.members} heartbeat.interval.ms="
              f"{a.heartbeat_ms or 'default (3000)'}", flush=True)
        joins, leaves = [], []
        for run in range(a.runs):
            j, lv, gens = one_run(b.bootstrap, topic, a.members, a.heartbeat_ms, run)
            joins.append(j)
            leaves.append(lv)
            print(f"run {run + 1}: join {j:.3f} s (assignments seen by the busiest member: {gens}), "
                  f"leave {lv:.3f} s", flush=True)
        print(f"median: join {statistics.median(joins):.3f} s, leave {statistics.median(leaves):.3f} s")
    finally:
        b.stop()


if __name__ == "__main__":
    main()
