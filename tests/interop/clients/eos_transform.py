#!/usr/bin/env python3
"""The consume-transform-produce loop of test_transactions.py's exactly-once test
(confluent-kafka / librdkafka). Self-contained: imports nothing from the suite.

    eos_transform.py --bootstrap H:P --input IN --output OUT --group G --txid T
                     [--batch 20] [--session-timeout-ms 3000] [--hold-at K:PHASE]

A read_committed consumer in group G (no auto-commit) reads IN; for every poll batch one
transaction: begin, produce transform(value) to the same partition of OUT, send the consumer's
positions with its group metadata (TxnOffsetCommit), commit. transform(v) = v.upper() + b"|eos".

--hold-at K:PHASE stops in the K-th transaction of this process at PHASE and sleeps until the
test SIGKILLs it, so the kill lands at a known point:
    produced   records produced and flushed (in the log, transaction open, offsets not sent)
    offsets    offsets sent to the transaction too, not committed
    committed  right after the commit

stdout, one JSON object per line:
    {"ready": true}                                   after init_transactions
    {"assigned": [p, ...]} / {"revoked": [p, ...]}    rebalance callbacks
    {"txn": k, "phase": "committed", "n": records, "positions": {"p": offset}}
    {"holding": k, "phase": PHASE}                    then sleeps until killed
    {"retry": WHAT, "error": TEXT}                    a retriable error, retried
    {"aborted": k, "error": TEXT, "rewound": {"p": offset}}   abortable error: aborted, rewound
    {"fatal": TEXT}                                   exit 2
"""

import argparse
import faulthandler
import json
import signal
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaException, Producer,
                             TopicPartition)

OP_TIMEOUT = 30


def emit(obj):
    print(json.dumps(obj), flush=True)


def transform(v: bytes) -> bytes:
    return v.upper() + b"|eos"


def retrying(fn, what, attempts=20):
    """Calls fn(); retries errors librdkafka marks retriable (e.g. a commit that timed out
    while the broker restarts), re-raises anything else."""
    for i in range(attempts):
        try:
            return fn()
        except KafkaException as e:
            err = e.args[0]
            if err.retriable() and not err.fatal() and not err.txn_requires_abort() and i + 1 < attempts:
                emit({"retry": what, "error": str(err)})
                time.sleep(0.5)
                continue
            raise


def positions(c):
    return {tp.partition: tp.offset for tp in c.position(c.assignment()) if tp.offset >= 0}


def hold(k, phase):
    emit({"holding": k, "phase": phase})
    while True:
        time.sleep(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--txid", required=True)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--session-timeout-ms", type=int, default=3000)
    ap.add_argument("--hold-at", default=None)
    ap.add_argument("--debug", default=None, help="librdkafka debug contexts for the producer")
    a = ap.parse_args()
    signal.alarm(300)  # never outlive a crashed test run
    faulthandler.register(signal.SIGUSR1)  # the test asks for a traceback when the loop stalls
    hold_k, hold_phase = (None, None)
    if a.hold_at:
        k, hold_phase = a.hold_at.split(":")
        hold_k = int(k)

    # librdkafka >= 2.10 "re-bootstraps" when every broker connection is down (the broker's
    # kill -9): it decommissions the known brokers, and a send_offsets_to_transaction() whose
    # group coordinator was one of them then hangs past its timeout (librdkafka issues #5456,
    # #5511). Reconnecting to the same address instead is what a single broker needs.
    common = {"metadata.recovery.strategy": "none"}
    p = Producer({
        **common,
        "bootstrap.servers": a.bootstrap,
        "transactional.id": a.txid,
        "transaction.timeout.ms": 30000,
        "linger.ms": 5,
        **({"debug": a.debug} if a.debug else {}),
    })
    c = Consumer({
        **common,
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": a.session_timeout_ms,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    })
    try:
        # Fences any previous incarnation with this transactional.id and aborts its open
        # transaction before this one writes anything.
        retrying(lambda: p.init_transactions(OP_TIMEOUT), "init_transactions")
        emit({"ready": True})
        c.subscribe([a.input],
                    on_assign=lambda _c, ps: emit({"assigned": sorted(x.partition for x in ps)}),
                    on_revoke=lambda _c, ps: emit({"revoked": sorted(x.partition for x in ps)}))
        k = 0
        while True:
            msgs = c.consume(num_messages=a.batch, timeout=0.5)
            bad = [m.error() for m in msgs if m.error()]
            if bad:
                emit({"consumer_error": [str(e) for e in bad]})
            msgs = [m for m in msgs if not m.error()]
            if not msgs:
                continue
            k += 1
            try:
                p.begin_transaction()
                for m in msgs:
                    p.produce(a.output, key=m.key(), value=transform(m.value()), partition=m.partition())
                if hold_k == k and hold_phase == "produced":
                    if p.flush(OP_TIMEOUT) != 0:
                        raise RuntimeError("records not delivered before the hold")
                    hold(k, hold_phase)
                offs = [TopicPartition(a.input, part, off) for part, off in sorted(positions(c).items())]
                retrying(lambda: p.send_offsets_to_transaction(offs, c.consumer_group_metadata(), OP_TIMEOUT),
                         "send_offsets_to_transaction")
                if hold_k == k and hold_phase == "offsets":
                    hold(k, hold_phase)
                retrying(lambda: p.commit_transaction(OP_TIMEOUT), "commit_transaction")
            except KafkaException as e:
                err = e.args[0]
                if err.fatal() or not err.txn_requires_abort():
                    raise
                # Abortable (e.g. the group rebalanced under us): drop the transaction and
                # read again from the group's committed offsets.
                retrying(lambda: p.abort_transaction(OP_TIMEOUT), "abort_transaction")
                committed = c.committed(list(c.assignment()), timeout=OP_TIMEOUT)
                rewound = {}
                for tp in committed:
                    off = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    c.seek(TopicPartition(tp.topic, tp.partition, off))
                    rewound[tp.partition] = tp.offset
                emit({"aborted": k, "error": str(err), "rewound": rewound})
                continue
            emit({"txn": k, "phase": "committed", "n": len(msgs), "positions": positions(c)})
            if hold_k == k and hold_phase == "committed":
                hold(k, hold_phase)
    except Exception as e:  # noqa: BLE001 - reported to the test, which restarts us
        emit({"fatal": f"{type(e).__name__}: {e}"})
        sys.exit(2)


if __name__ == "__main__":
    main()
