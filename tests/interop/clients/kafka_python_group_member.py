#!/usr/bin/env python3
"""A kafka-python group member for test_groups_clients.py, run in a kafka-python venv.
Self-contained (imports nothing from the suite).

    kafka_python_group_member.py BOOTSTRAP GROUP TOPIC

Subscribes with the range assignor (protocol "range", like librdkafka's), commits each
record synchronously before printing it, and prints one JSON line per event, like
clients/group_member.py: {"version": ...} first, then {"assigned": [...]} (the whole
assignment after each rebalance), {"record": [partition, offset, value]},
{"commit_failed": [partition, offset], "error": ...}. Runs until killed (or 300 s)."""

import json
import signal
import sys

import kafka
from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata


def emit(obj):
    print(json.dumps(obj), flush=True)


class Listener(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        emit({"assigned": sorted(tp.partition for tp in assigned)})


def main():
    bootstrap, group, topic = sys.argv[1:4]
    signal.alarm(300)
    emit({"version": kafka.__version__})
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500,
                      partition_assignment_strategy=[RangePartitionAssignor],
                      value_deserializer=lambda b: b.decode())
    c.subscribe(topics=[topic], listener=Listener())
    while True:
        batch = c.poll(timeout_ms=200)
        for tp, msgs in batch.items():
            for m in msgs:
                try:
                    c.commit({tp: OffsetAndMetadata(m.offset + 1, "", -1)})
                except KafkaError as e:
                    emit({"commit_failed": [tp.partition, m.offset], "error": type(e).__name__})
                    try:
                        c.seek(tp, m.offset)
                    except (AssertionError, KafkaError, ValueError):
                        pass  # no longer ours
                    break
                emit({"record": [m.partition, m.offset, m.value]})


if __name__ == "__main__":
    main()
