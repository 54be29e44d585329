#!/usr/bin/env python3
"""kafka-python client half of the interop test, run by test_kafka_python.py in a venv that
holds one kafka-python major version (2.x or 3.x). Self-contained: it imports nothing from
the test suite, so it runs under whichever interpreter the venv has.

    kafka_python_roundtrip.py --bootstrap H:P --topic T --partitions N --codec C --acks A
                              --records IN.json --out OUT.json [--create]

IN.json: list of {partition, key, value, headers: [[k, v]], ts} with bytes as hex (or null).
OUT.json: what the client saw: produce offsets, consumed records, beginning/end offsets,
offsets_for_times answers for the queries given in IN.json's companion `queries`.
Exits non-zero (traceback on stderr) if any client call fails. Everything is bounded in time."""

import argparse
import json
import signal
import sys
import time

import kafka
import kafka.errors
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

DEADLINE = 30.0


def h(b):
    return None if b is None else bytes.fromhex(b)


def x(b):
    return None if b is None else bytes(b).hex()


def wait_ready(common, topic, partitions):
    """Until every partition has a leader that answers ListOffsets: CreateTopics may return
    before the leader hosts the log, and an acks=0 produce sent then would be dropped."""
    c = KafkaConsumer(group_id=None, enable_auto_commit=False, **common)
    try:
        end = time.monotonic() + DEADLINE
        while True:
            ps = c.partitions_for_topic(topic)
            if ps is not None and len(ps) == partitions:
                try:
                    c.end_offsets([TopicPartition(topic, p) for p in ps])
                    return
                except kafka.errors.KafkaTimeoutError:
                    pass
            if time.monotonic() > end:
                raise TimeoutError("topic %s not ready: partitions %r" % (topic, ps))
            time.sleep(0.2)
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--codec", default="none")
    ap.add_argument("--acks", default="all")
    ap.add_argument("--records", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--create", action="store_true")
    ap.add_argument("--idempotence", choices=["off", "on", "default"], default="off",
                    help="off: enable_idempotence=False; on: True; default: the client's default")
    a = ap.parse_args()
    signal.alarm(240)  # hard stop for the whole script

    spec = json.load(open(a.records))
    recs, queries = spec["records"], spec["queries"]
    major = int(kafka.__version__.split(".")[0])
    out = {"version": kafka.__version__}
    common = dict(bootstrap_servers=a.bootstrap, request_timeout_ms=20000)

    if a.create:
        admin = KafkaAdminClient(**common)
        try:
            res = admin.create_topics([NewTopic(a.topic, num_partitions=a.partitions, replication_factor=1)])
            if major < 3:  # 2.x returns the raw response and does not raise on topic errors
                errs = [t for t in res.topic_errors if t[1] != 0]
                assert not errs, "CreateTopics errors: %r" % (errs,)
            else:
                assert all(t["error_code"] == 0 for t in res["topics"]), res
        finally:
            admin.close()
        wait_ready(common, a.topic, a.partitions)

    acks = a.acks if a.acks == "all" else int(a.acks)
    pconf = dict(common, linger_ms=20, compression_type=None if a.codec == "none" else a.codec,
                 max_block_ms=20000)
    if a.idempotence != "default":
        pconf["enable_idempotence"] = a.idempotence == "on"
        pconf["acks"] = acks
    out["idempotence"] = a.idempotence
    if major >= 3:
        pconf["delivery_timeout_ms"] = 30000
    producer = KafkaProducer(**pconf)
    futs = []
    for r in recs:
        futs.append(producer.send(a.topic, value=h(r["value"]), key=h(r["key"]),
                                  headers=[(k, h(v)) for k, v in r["headers"]],
                                  partition=r["partition"], timestamp_ms=r["ts"]))
    producer.flush(timeout=DEADLINE)
    reports = []
    for f in futs:
        md = f.get(timeout=DEADLINE)
        reports.append([md.partition, md.offset])
    producer.close(timeout=10)
    out["reports"] = reports

    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                             **common)
    try:
        tps = [TopicPartition(a.topic, p) for p in range(a.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        want = len(recs)
        got = []
        end = time.monotonic() + DEADLINE
        while len(got) < want and time.monotonic() < end:
            for tp, msgs in consumer.poll(timeout_ms=500).items():
                for m in msgs:
                    got.append({"partition": m.partition, "offset": m.offset, "key": x(m.key),
                                "value": x(m.value),
                                "headers": [[k, x(v)] for k, v in (m.headers or [])],
                                "ts": m.timestamp,
                                "ts_type": {0: "create", 1: "append"}.get(m.timestamp_type, "?")})
        # Anything beyond what was produced would be a broker bug too.
        for tp, msgs in consumer.poll(timeout_ms=1000).items():
            for m in msgs:
                got.append({"partition": m.partition, "offset": m.offset, "extra": True})
        got.sort(key=lambda g: (g["partition"], g["offset"]))  # poll interleaves partitions
        out["consumed"] = got
        out["begin"] = {str(tp.partition): o for tp, o in consumer.beginning_offsets(tps).items()}
        out["end"] = {str(tp.partition): o for tp, o in consumer.end_offsets(tps).items()}
        answers = []
        for rnd in queries:  # each round names a partition at most once
            res = consumer.offsets_for_times({TopicPartition(a.topic, p): t for p, t in rnd})
            for p, t in rnd:
                ot = res[TopicPartition(a.topic, p)]
                answers.append([p, t, None if ot is None else ot.offset, None if ot is None else ot.timestamp])
        out["times"] = answers
    finally:
        consumer.close()

    json.dump(out, open(a.out, "w"))


if __name__ == "__main__":
    sys.exit(main())
