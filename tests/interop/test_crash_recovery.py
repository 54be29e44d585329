"""Crash test: an acks=1 producer runs while the broker is killed with SIGKILL and
restarted, several times. Every acknowledged record must be read back exactly once, at the
offset it was acknowledged with, in order; the log must still pass CRC validation."""

import threading
import time

from interop_util import require_module

ROUNDS = 4
PARTITIONS = 3


def _produce_until_killed(ck, bootstrap, topic, start_seq, acked, broker, run_for=1.5):
    """Produces numbered records until the broker is SIGKILLed mid-stream."""
    errors = []
    producer = ck.Producer({
        "bootstrap.servers": bootstrap,
        "acks": 1,
        "enable.idempotence": False,
        # No retries: a record is either acknowledged once or reported failed, so the
        # log can hold no duplicate of an acknowledged record.
        "retries": 0,
        "linger.ms": 2,
        "message.timeout.ms": 5000,
        "socket.timeout.ms": 3000,
    })

    def on_delivery(err, msg):
        if err is None:
            acked[int(msg.value())] = (msg.partition(), msg.offset())
        else:
            errors.append(err)

    seq = start_seq
    killer = threading.Timer(run_for, broker.kill9)
    killer.start()
    deadline = time.time() + run_for + 5
    while time.time() < deadline and broker.proc.poll() is None:
        try:
            producer.produce(topic, key=str(seq % 97).encode(), value=str(seq).encode(),
                             partition=seq % PARTITIONS, on_delivery=on_delivery)
            seq += 1
        except BufferError:
            pass
        producer.poll(0)
        if seq % 200 == 0:
            time.sleep(0.001)
    killer.join()
    producer.flush(10)
    return seq


def test_acknowledged_records_survive_repeated_kill_9(fresh_broker):
    ck = require_module("confluent_kafka")
    from confluent_kafka.admin import AdminClient, NewTopic

    broker = fresh_broker
    broker.start()
    topic = "crash-acks1"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1,
                                  config={"segment.bytes": "65536"})])[topic].result(15)

    acked: dict[int, tuple[int, int]] = {}
    seq = 0
    for _ in range(ROUNDS):
        seq = _produce_until_killed(ck, broker.bootstrap, topic, seq, acked, broker)
        broker.start()
    assert len(acked) > 1000, f"too few acknowledged records to prove anything: {len(acked)}"
    # Each restart after SIGKILL must have taken the recovery path.
    assert broker.log_text().count("no clean-shutdown marker") >= ROUNDS, broker.log_text()[-2000:]

    consumer = ck.Consumer({
        "bootstrap.servers": broker.bootstrap,
        "group.id": "crash-check",
        "enable.auto.commit": False,
        "check.crcs": True,
        "enable.partition.eof": True,
    })
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen: dict[int, tuple[int, int]] = {}
    duplicates = []
    eof = set()
    deadline = time.time() + 60
    while len(eof) < PARTITIONS and time.time() < deadline:
        m = consumer.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == ck.KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise AssertionError(f"consumer error: {m.error()}")
        v = int(m.value())
        if v in seen:
            duplicates.append(v)
        seen[v] = (m.partition(), m.offset())
    consumer.close()
    assert len(eof) == PARTITIONS, "did not reach the end of every partition"
    assert not duplicates, f"records stored twice: {duplicates[:10]}"
    lost = [v for v in acked if v not in seen]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:10]}"
    moved = [(v, acked[v], seen[v]) for v in acked if acked[v] != seen[v]]
    assert not moved, f"acknowledged records at other offsets: {moved[:5]}"
    # Per partition, offsets grow with the sequence numbers produced into it.
    for p in range(PARTITIONS):
        in_p = sorted((off, v) for v, (part, off) in seen.items() if part == p)
        values = [v for _, v in in_p]
        assert values == sorted(values), f"partition {p} out of order"
