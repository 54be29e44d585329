#!/usr/bin/env python3
"""kafka-python reader with an isolation level, for test_transactions.py, run in a kafka-python
venv. Self-contained (imports nothing from the suite).

    kafka_python_isolation_read.py --bootstrap H:P --topic T --count N
                                   --isolation read_committed|read_uncommitted

Reads every partition of T from the beginning until N records arrived (or 30 s), then polls
once more for 1.5 s so that records beyond N show up, and prints one JSON object on stdout:
{"version", "position": {p: offset}, "records": [{partition, offset, value}, ...]} with values
as hex, sorted by (partition, offset). Exits non-zero (traceback on stderr) if a call fails."""

import argparse
import json
import signal
import sys
import time

import kafka
from kafka import KafkaConsumer, TopicPartition

DEADLINE = 30.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--isolation", required=True, choices=["read_committed", "read_uncommitted"])
    a = ap.parse_args()
    signal.alarm(120)

    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", isolation_level=a.isolation, request_timeout_ms=20000)
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
                    got.append({"partition": m.partition, "offset": m.offset,
                                "value": None if m.value is None else bytes(m.value).hex()})

        while len(got) < a.count and time.monotonic() < end:
            take(500)
        take(1500)
        got.sort(key=lambda g: (g["partition"], g["offset"]))
        json.dump({"version": kafka.__version__, "position": {tp.partition: c.position(tp) for tp in tps},
                   "records": got}, sys.stdout)
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
