"""A confluent-kafka group member for the consumer-group tests: subscribes, consumes,
commits synchronously after every record, and prints one JSON line per event:
{"assigned": [...]}, {"record": [partition, offset, value]}. Runs until killed."""

import json
import sys

from confluent_kafka import Consumer

bootstrap, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]


def on_assign(consumer, partitions):
    print(json.dumps({"assigned": sorted(p.partition for p in partitions)}), flush=True)


c = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "partition.assignment.strategy": "range",
})
c.subscribe([topic], on_assign=on_assign)
while True:
    m = c.poll(0.2)
    if m is None or m.error():
        continue
    c.commit(message=m, asynchronous=False)
    print(json.dumps({"record": [m.partition(), m.offset(), m.value().decode()]}), flush=True)
