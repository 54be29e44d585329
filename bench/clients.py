#!/usr/bin/env python3
"""Python (confluent-kafka / librdkafka) workloads used by bench/suite.py. Each subcommand is
run as its own process, so the orchestrator never shares a GIL with a measured client.

    clients.py produce --bootstrap B --topic T --num-records N --record-size S [--acks 1]
        Throughput producer (acks=1 unless --acks, linger.ms=5, batch.size=65536): one JSON
        line {"records", "seconds", "records_per_sec", "errors"} on stdout.

    clients.py consume --bootstrap B --topic T --num-records N [--timeout 300]
        Throughput consumer: N records from the beginning of every partition (assigned, no
        group join), default fetch settings: one JSON line {"records", "bytes", "seconds",
        "records_per_sec", "mb_per_sec", "errors"}; exits 1 if fewer arrive in time.

    clients.py latency --bootstrap B --topic T [--rate-mb 20] [--record-size 1024]
                       [--warmup 5] [--duration 20] [--linger-ms 1]
        End-to-end latency at a fixed rate: a producer process stamps each value with
        time.time_ns() at produce(); a consumer process (this one) assigned to every
        partition from the beginning computes receive time - send time. Percentiles over the
        records sent during the measurement window (after the warm-up). One JSON line, with
        the producer's own queue wait and produce round trip (p99, librdkafka statistics).
        On a topic with message.timestamp.type=LogAppendTime it also splits each latency at
        the broker's append stamp (ms): to_append_* and from_append_* percentiles.

    clients.py fsync-writers --dir D [--writers 6] [--size 65536] [--seconds 3] [--overwrite]
        The disk's ceiling for scenario 5's pattern: W threads, each appending SIZE bytes to
        its own file in D and fdatasync'ing after every write (as a broker fsyncs each of 6
        partitions' logs after each appended batch): one JSON line {"mb_per_sec",
        "fsyncs_per_sec"}. With --overwrite each file is first written (64 MiB, untimed)
        and the timed writes go over it again, round and round: the file's length and
        blocks stay as they are, so an fdatasync has no inode to write.

    clients.py fetch-loop --bootstrap B --topic T --partitions P --num-records N
                          [--record-size 1024] [--timeout 300]
        The least a consumer can do: Fetch v4 requests for every partition of a single-node
        broker from offset 0, one in flight, answers read 256 KiB per receive into one reused
        buffer, and only the batch headers read (offsets and record counts; no CRC check,
        no records decoded), until N records have arrived: one JSON line {"records",
        "seconds", "fetches", "mb_per_sec"} with MB/s of record values (N x --record-size).
        What a broker can serve when its client costs almost nothing.

    clients.py mock-cluster
        librdkafka's in-memory mock cluster (1 broker) in this process, standing in for a
        broker: prints "BOOTSTRAP host:port", then serves commands from stdin
        ("create TOPIC PARTITIONS" -> "ok" / "error N") until EOF.
"""

import argparse
import ctypes
import glob
import json
import multiprocessing as mp
import os
import statistics
import struct
import sys
import time

# Identical producer settings for every broker (and the mock cluster).
PRODUCER_CONF = {
    "acks": 1,
    "linger.ms": 5,
    "batch.size": 65536,
    "queue.buffering.max.messages": 1_000_000,
    "delivery.report.only.error": True,
}

# statistics.interval.ms: librdkafka reports, every second, the p99 of the time a record
# waits inside the producer before its request is written (int_latency) and of the produce
# round trip (rtt); the latency result carries the median of each over the window.
LATENCY_PRODUCER_CONF = {"acks": 1, "linger.ms": 1, "statistics.interval.ms": 1000}  # linger: --linger-ms
LATENCY_CONSUMER_CONF = {"fetch.wait.max.ms": 10, "fetch.min.bytes": 1, "enable.auto.commit": False}


def cmd_produce(a) -> None:
    from confluent_kafka import Producer

    errors = []

    def on_error(err, _msg):  # called only for failed records (delivery.report.only.error)
        if err is not None and len(errors) < 5:
            errors.append(str(err))
        elif err is not None:
            errors.append(None)

    p = Producer({"bootstrap.servers": a.bootstrap, **PRODUCER_CONF, "acks": a.acks, "on_delivery": on_error})
    p.list_topics(a.topic, timeout=30)  # metadata first, as the Java tools do
    payload = b"x" * a.record_size
    produce, poll = p.produce, p.poll
    start = time.perf_counter()
    for _ in range(a.num_records):
        while True:
            try:
                produce(a.topic, payload)
                break
            except BufferError:
                poll(0.001)
    left = p.flush(300)
    secs = time.perf_counter() - start
    n_err = len(errors) + left
    print(json.dumps({"records": a.num_records, "seconds": secs,
                      "records_per_sec": a.num_records / secs, "errors": n_err,
                      "error_samples": [e for e in errors if e][:5],
                      "unflushed": left}), flush=True)
    sys.exit(1 if n_err else 0)


def cmd_consume(a) -> None:
    """Reads --num-records from the beginning of every partition (assigned, no group join,
    like `runnel perf consume`) with the consumer's default fetch settings; MB/s of values."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

    # fetch.queue.backoff.ms: once librdkafka's local queue holds queued.max.messages.kbytes
    # (64 MiB), it stops fetching a partition for this long (default 1000 ms) even when the
    # application empties the queue in a fraction of that. A broker that answers faster
    # fills the queue sooner and gets whole idle seconds added to its figure: the row
    # measured that back-off, bimodally, instead of the broker (librdkafka's docs advise
    # lowering it when ~1 s gaps between messages appear). The same setting for every broker.
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"bench-consume-{os.getpid()}",
                  "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
    md = c.list_topics(a.topic, timeout=30)
    parts = sorted(md.topics[a.topic].partitions)
    start = time.perf_counter()
    c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in parts])
    records = nbytes = errors = 0
    deadline = time.monotonic() + a.timeout
    consume = c.consume
    while records < a.num_records and time.monotonic() < deadline:
        for m in consume(num_messages=10_000, timeout=1.0):
            if m.error():
                errors += 1
                continue
            records += 1
            nbytes += len(m)
    secs = time.perf_counter() - start
    c.close()
    print(json.dumps({"records": records, "bytes": nbytes, "seconds": secs, "errors": errors,
                      "records_per_sec": records / secs, "mb_per_sec": nbytes / 1e6 / secs}), flush=True)
    sys.exit(0 if records >= a.num_records and not errors else 1)


def _latency_producer(bootstrap, topic, rate_bytes, size, t_start_ns, warmup_ns, t_end_ns, out_q,
                      linger_ms=1.0):
    from confluent_kafka import Producer

    errs = [0]
    queue_p99, rtt_p99 = [], []

    def on_delivery(err, _msg):
        if err is not None:
            errs[0] += 1

    def on_stats(raw):
        # the broker entry whose int_latency counted the most records: the leader's
        now = time.time_ns()
        if not t_start_ns + warmup_ns + 1_000_000_000 <= now <= t_end_ns:
            return
        brokers = [b for b in json.loads(raw).get("brokers", {}).values() if "int_latency" in b]
        if brokers:
            b = max(brokers, key=lambda b: b["int_latency"].get("cnt", 0))
            if b["int_latency"].get("cnt", 0) > 0:
                queue_p99.append(b["int_latency"]["p99"] / 1e3)
                rtt_p99.append(b["rtt"]["p99"] / 1e3)

    p = Producer({"bootstrap.servers": bootstrap, **LATENCY_PRODUCER_CONF, "linger.ms": linger_ms,
                  "delivery.report.only.error": True, "on_delivery": on_delivery,
                  "stats_cb": on_stats})
    p.list_topics(topic, timeout=30)
    filler = b"x" * (size - 8)
    rate = rate_bytes / size  # records/s
    while time.time_ns() < t_start_ns:
        time.sleep(0.001)
    sent = 0
    begin = time.perf_counter()
    while True:
        now = time.time_ns()
        if now >= t_end_ns:
            break
        due = int((time.perf_counter() - begin) * rate)
        while sent < due:
            ts = time.time_ns()
            try:
                p.produce(topic, struct.pack(">q", ts) + filler)
            except BufferError:
                p.poll(0.001)
                continue
            sent += 1
        p.poll(0)
        time.sleep(0.0005)
    elapsed = time.perf_counter() - begin
    left = p.flush(60)
    out_q.put({"sent": sent, "elapsed": elapsed, "errors": errs[0] + left,
               "producer_queue_p99_ms": statistics.median(queue_p99) if queue_p99 else -1,
               "produce_rtt_p99_ms": statistics.median(rtt_p99) if rtt_p99 else -1})


def cmd_latency(a) -> None:
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING, TIMESTAMP_LOG_APPEND_TIME

    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"bench-latency-{os.getpid()}",
                  **LATENCY_CONSUMER_CONF})
    md = c.list_topics(a.topic, timeout=30)
    parts = sorted(md.topics[a.topic].partitions)
    c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in parts])
    # let the consumer connect and start fetching before the producer begins
    t_settle = time.time() + 2
    while time.time() < t_settle:
        c.poll(0.1)

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    t0 = time.time_ns() + 1_000_000_000  # producer starts 1 s from now (spawn time)
    win_lo = t0 + int(a.warmup * 1e9)
    win_hi = win_lo + int(a.duration * 1e9)
    prod = ctx.Process(target=_latency_producer,
                       args=(a.bootstrap, a.topic, a.rate_mb * 1e6, a.record_size, t0,
                             int(a.warmup * 1e9), win_hi, q, a.linger_ms))
    prod.start()
    lat_ns = []
    # With message.timestamp.type=LogAppendTime the broker stamps each batch when it
    # appends it (in ms), which splits the latency into send -> append -> receive.
    to_broker_ns, from_broker_ns = [], []
    received = 0
    window_bytes = 0
    result = None
    deadline_after_done = None
    hard_deadline = time.time() + 1 + a.warmup + a.duration + 120
    next_check_ns = 0
    while True:
        # poll() returns as soon as one record is there (consume(n) would wait to fill n)
        m = c.poll(0.05)
        now = time.time_ns()
        if m is not None and not m.error():
            v = m.value()
            received += 1
            ts = struct.unpack(">q", v[:8])[0]
            if win_lo <= ts < win_hi:
                lat_ns.append(now - ts)
                window_bytes += len(v)
                kind, append_ms = m.timestamp()
                if kind == TIMESTAMP_LOG_APPEND_TIME:
                    to_broker_ns.append(append_ms * 1_000_000 - ts)
                    from_broker_ns.append(now - append_ms * 1_000_000)
        if now < next_check_ns:
            continue
        next_check_ns = now + 100_000_000
        if time.time() > hard_deadline:
            print(json.dumps({"error": f"timed out: {received} records received, producer "
                              f"{'done' if result else 'not done'}"}), flush=True)
            prod.kill()
            os._exit(1)
        if result is None:
            try:
                result = q.get_nowait()
                deadline_after_done = time.time() + 10
            except Exception:
                if not prod.is_alive() and prod.exitcode not in (None, 0):
                    print(json.dumps({"error": f"producer process exited {prod.exitcode}"}), flush=True)
                    os._exit(1)
        if result is not None and (received >= result["sent"] or time.time() > deadline_after_done):
            break
    prod.join(10)
    c.close()
    def pct(xs: list, q: float) -> float:
        if not xs:
            return float("nan")
        import math
        return xs[max(0, math.ceil(q * len(xs)) - 1)] / 1e6

    for xs in (lat_ns, to_broker_ns, from_broker_ns):
        xs.sort()
    n = len(lat_ns)

    out = {"sent": result["sent"], "received": received, "lost": result["sent"] - received,
           "producer_errors": result["errors"], "measured": n,
           "window_mb_per_sec": window_bytes / 1e6 / a.duration,
           "target_mb_per_sec": a.rate_mb,
           "p50_ms": pct(lat_ns, 0.50), "p99_ms": pct(lat_ns, 0.99), "p999_ms": pct(lat_ns, 0.999),
           "max_ms": lat_ns[-1] / 1e6 if n else float("nan"),
           "bytes": result["sent"] * a.record_size,
           "producer_queue_p99_ms": result["producer_queue_p99_ms"],
           "produce_rtt_p99_ms": result["produce_rtt_p99_ms"]}
    if from_broker_ns:
        for name, xs in (("to_append", to_broker_ns), ("from_append", from_broker_ns)):
            for q, tag in ((0.50, "p50"), (0.99, "p99"), (0.999, "p999")):
                out[f"{name}_{tag}_ms"] = pct(xs, q)
    print(json.dumps(out), flush=True)
    sys.exit(0 if n and out["lost"] == 0 and not result["errors"] else 1)


def _librdkafka():
    import confluent_kafka
    libdir = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
    cands = glob.glob(os.path.join(libdir, "librdkafka*.so*"))
    if not cands:  # confluent-kafka built against a system librdkafka
        cands = ["librdkafka.so.1"]
    lib = ctypes.CDLL(cands[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    return lib


def cmd_fetch_loop(a) -> None:
    # Its own few lines of the wire format rather than tests/interop/kafka_wire.py, whose
    # Fetch is one partition and whose frames are built by concatenation: here the answer
    # goes into one reused buffer and only batch headers are read, so the client costs
    # next to nothing.
    import socket

    host, port = a.bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(64 << 20)
    view = memoryview(buf)

    def read_exact(n: int) -> None:
        got = 0
        while got < n:
            k = s.recv_into(view[got:n], min(n - got, 256 * 1024))
            if k == 0:
                raise EOFError("broker closed the connection")
            got += k

    topic = a.topic.encode()
    offsets = [0] * a.partitions
    records = fetches = 0
    start = time.perf_counter()
    deadline = time.monotonic() + a.timeout
    while records < a.num_records and time.monotonic() < deadline:
        fetches += 1
        # Fetch v4, request header v1: replica -1, max wait 500 ms, min bytes 1, max bytes
        # 50 MiB, read_uncommitted, 1 MiB per partition (the Java consumer's defaults).
        req = struct.pack(">hhih", 1, 4, fetches, 5) + b"bench" + struct.pack(
            ">iiiibih", -1, 500, 1, 52428800, 0, 1, len(topic)) + topic + struct.pack(">i", a.partitions)
        for p in range(a.partitions):
            req += struct.pack(">iqi", p, offsets[p], 1048576)
        s.sendall(struct.pack(">i", len(req)) + req)
        read_exact(4)
        n = struct.unpack_from(">i", buf)[0]
        if n > len(buf):
            raise ValueError(f"answer of {n} bytes")
        read_exact(n)
        pos = 8  # correlation id, throttle time
        for _ in range(struct.unpack_from(">i", buf, pos)[0]):
            pos += 4
            pos += 2 + struct.unpack_from(">h", buf, pos)[0]
            parts = struct.unpack_from(">i", buf, pos)[0]
            pos += 4
            for _ in range(parts):
                p, err = struct.unpack_from(">ih", buf, pos)
                if err:
                    raise ValueError(f"partition {p}: error {err}")
                pos += 22  # partition, error, high watermark, last stable offset
                aborted = struct.unpack_from(">i", buf, pos)[0]
                pos += 4 + max(aborted, 0) * 16
                size = struct.unpack_from(">i", buf, pos)[0]
                pos += 4
                end, q = pos + max(size, 0), pos
                while q + 61 <= end:
                    base, length = struct.unpack_from(">qi", buf, q)
                    if q + 12 + length > end:
                        break  # cut by the size limit: fetched again from its start
                    last_delta = struct.unpack_from(">i", buf, q + 23)[0]
                    records += struct.unpack_from(">i", buf, q + 57)[0]
                    offsets[p] = base + last_delta + 1
                    q += 12 + length
                pos = end
    secs = time.perf_counter() - start
    s.close()
    print(json.dumps({"records": records, "seconds": secs, "fetches": fetches,
                      "mb_per_sec": records * a.record_size / 1e6 / secs}), flush=True)
    sys.exit(0 if records >= a.num_records else 1)


def cmd_mock_cluster(_a) -> None:
    lib = _librdkafka()
    errstr = ctypes.create_string_buffer(512)
    rk = lib.rd_kafka_new(0, lib.rd_kafka_conf_new(), errstr, 512)  # 0 = RD_KAFKA_PRODUCER
    if not rk:
        print("error rd_kafka_new: " + errstr.value.decode(), flush=True)
        sys.exit(1)
    mc = lib.rd_kafka_mock_cluster_new(rk, 1)
    if not mc:
        print("error rd_kafka_mock_cluster_new failed", flush=True)
        sys.exit(1)
    print("BOOTSTRAP " + lib.rd_kafka_mock_cluster_bootstraps(mc).decode(), flush=True)
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "create":
            rc = lib.rd_kafka_mock_topic_create(mc, parts[1].encode(), int(parts[2]), 1)
            print("ok" if rc == 0 else f"error {rc}", flush=True)
        elif parts:
            print("error unknown command", flush=True)
    os._exit(0)  # skip destroying the cluster (and its data) on the way out


# How much of each file --overwrite writes first and then goes over again.
OVERWRITE_SPAN = 64 << 20


def cmd_fsync_writers(a) -> None:
    import threading

    data = b"x" * a.size
    written = [0] * a.writers
    syncs = [0] * a.writers
    span = (OVERWRITE_SPAN // a.size) * a.size
    paths = [os.path.join(a.dir, f"fsync-writer-{os.getpid()}-{i}.bin") for i in range(a.writers)]
    fds = []
    try:
        for p in paths:
            fds.append(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        if a.overwrite:
            zeros = bytes(1 << 20)
            for fd in fds:
                for _ in range(span // len(zeros) + 1):
                    os.write(fd, zeros)
                os.fsync(fd)
        start = time.monotonic()
        end = start + a.seconds

        def writer(i: int) -> None:
            fd, pos = fds[i], 0
            while time.monotonic() < end:  # the writes and os.fdatasync release the GIL
                if a.overwrite:
                    os.pwrite(fd, data, pos)
                    pos = (pos + len(data)) % span
                else:
                    os.write(fd, data)
                os.fdatasync(fd)
                written[i] += len(data)
                syncs[i] += 1

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(a.writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        # One place gives the files back, whatever failed (an open, the first write).
        for fd in fds:
            os.close(fd)
        for p in paths:
            if os.path.exists(p):
                os.unlink(p)
    secs = time.monotonic() - start
    print(json.dumps({"writers": a.writers, "size": a.size, "seconds": secs,
                      "mb_per_sec": sum(written) / 1e6 / secs, "fsyncs_per_sec": sum(syncs) / secs}),
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--num-records", type=int, required=True)
    p.add_argument("--record-size", type=int, required=True)
    p.add_argument("--acks", default="1", choices=["0", "1", "all", "-1"])
    p = sub.add_parser("consume")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--num-records", type=int, required=True)
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    p = sub.add_parser("latency")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--rate-mb", type=float, default=20.0, help="MB/s (10^6 bytes)")
    p.add_argument("--record-size", type=int, default=1024)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--linger-ms", type=float, default=1.0, help="the producer's linger.ms")
    p = sub.add_parser("fsync-writers")
    p.add_argument("--dir", required=True)
    p.add_argument("--writers", type=int, default=6)
    p.add_argument("--size", type=int, default=65536)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--overwrite", action="store_true",
                   help="write over files written before, instead of appending")
    p = sub.add_parser("fetch-loop")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--num-records", type=int, required=True)
    p.add_argument("--record-size", type=int, default=1024)
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    sub.add_parser("mock-cluster")
    a = ap.parse_args()
    {"produce": cmd_produce, "consume": cmd_consume, "latency": cmd_latency,
     "fsync-writers": cmd_fsync_writers, "fetch-loop": cmd_fetch_loop,
     "mock-cluster": cmd_mock_cluster}[a.cmd](a)


if __name__ == "__main__":
    main()
