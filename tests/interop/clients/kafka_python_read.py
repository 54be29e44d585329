#!/usr/bin/env python3
"""kafka-python reader for test_runnel_clients.py, run in a kafka-python venv. Self-contained
(imports nothing from the suite).

    kafka_python_read.py --bootstrap H:P --topic T --count N
                         [--isolation read_committed|read_uncommitted]

Reads every partition of T from the beginning until N records arrived (or 30 s), then one
more short poll, and prints one JSON object on stdout: {"version", "records": [{partition,
offset, ts, ts_type, key, value, headers: [[k, v]]}, ...]} with bytes as hex (null as null),
sorted by (partition, offset), and "position": {partition: the consumer's position after the
reads}. Exits non-zero (traceback on stderr) if a client call fails."""

import argparse
import json
import signal
import sys
import time

import kafka
from kafka import KafkaConsumer, TopicPartition

DEADLINE = 30.0


def x(b):
    return None if b is None else bytes(b).hex()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--isolation", default="read_uncommitted",
                    choices=["read_committed", "read_uncommitted"])
    a = ap.parse_args()
    signal.alarm(120)

    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", isolation_level=a.isolation,
                      request_timeout_ms=20000)
    try:
        end = time.monotonic() + DEADLINE
        parts = None
        while not parts:
            parts = c.partitions_for_topic(a.topic)
            if not parts:
                if time.monotonic() > end:
                    raise TimeoutError("no metadata for topic %s" % a.topic)
                time.sleep(0.2)
        tps = [TopicPartition(a.topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        got = []

        def take(timeout_ms):
            for _tp, msgs in c.poll(timeout_ms=timeout_ms).items():
                for m in msgs:
                    got.append({"partition": m.partition, "offset": m.offset, "key": x(m.key),
                                "value": x(m.value), "headers": [[k, x(v)] for k, v in (m.headers or [])],
                                "ts": m.timestamp,
                                "ts_type": {0: "create", 1: "append"}.get(m.timestamp_type, "?")})

        while len(got) < a.count and time.monotonic() < end:
            take(500)
        take(1500)  # anything beyond what was produced shows up as a count mismatch
        got.sort(key=lambda g: (g["partition"], g["offset"]))
        json.dump({"version": kafka.__version__,
                   "position": {tp.partition: c.position(tp) for tp in tps},
                   "records": got}, sys.stdout)
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
