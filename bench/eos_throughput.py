#!/usr/bin/env python3
"""Producer throughput by delivery mode, with one client (confluent-kafka / librdkafka)
against whatever broker is at --bootstrap: plain (acks=all, no idempotence), idempotent,
and transactional with a commit every --txn-size records.

    python3 bench/eos_throughput.py --bootstrap 127.0.0.1:9092 [--records 200000]

Prints one line per mode: records/s and MB/s (median of --runs)."""

import argparse
import statistics
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def run(bootstrap: str, mode: str, records: int, size: int, txn_size: int) -> float:
    topic = f"eos-bench-{mode}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result()
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
            "batch.size": 65536, "queue.buffering.max.messages": 1000000}
    if mode == "plain":
        conf["enable.idempotence"] = False
    elif mode == "idempotent":
        conf["enable.idempotence"] = True
    else:
        conf["transactional.id"] = topic
    p = Producer(conf)
    if mode == "transactional":
        p.init_transactions(30)
    payload = b"x" * size
    start = time.perf_counter()
    sent = 0
    while sent < records:
        n = min(txn_size, records - sent) if mode == "transactional" else records - sent
        if mode == "transactional":
            p.begin_transaction()
        for _ in range(n):
            while True:
                try:
                    p.produce(topic, payload)
                    break
                except BufferError:
                    p.poll(0.001)
        sent += n
        if mode == "transactional":
            p.commit_transaction(60)
        else:
            p.poll(0)
    p.flush(60)
    return records / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--txn-size", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    for mode in ("plain", "idempotent", "transactional"):
        rates = [run(a.bootstrap, mode, a.records, a.size, a.txn_size) for _ in range(a.runs)]
        med = statistics.median(rates)
        print(f"{mode:14s} {med:12,.0f} rec/s {med * a.size / 1e6:8.1f} MB/s  runs={[round(r) for r in rates]}",
              flush=True)


if __name__ == "__main__":
    main()
