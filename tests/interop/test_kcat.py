"""kcat (Debian's, on librdkafka 2.0.2: an older client) against Runnel.

Topics are auto-created by kcat's produce; the broker runs with num.partitions=3 so they
get three partitions. kcat cannot set per-message timestamps: librdkafka stamps CreateTime
at produce time, so timestamps are checked against the wall clock window of the produce
and then used as the ground truth for `-Q` (offsets for times)."""

import json
import re
import subprocess
import time

import pytest

from conftest import Broker, unique_topic
from interop_util import CODECS, POLL_DEADLINE, assert_stored_codec, now_ms, require_exe

KCAT = "kcat"
PARTS = 3
PER_PART = 8


@pytest.fixture(scope="module")
def broker3(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("runnel-kcat") / "data", overrides={"num.partitions": "3"})
    b.start()
    yield b
    b.stop()


def kcat(*args, input=None, timeout=POLL_DEADLINE):
    exe = require_exe(KCAT)
    try:
        cp = subprocess.run([exe, *args], input=input, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"kcat {' '.join(args)} timed out after {timeout}s; stderr:\n"
                    f"{(e.stderr or b'').decode(errors='replace')[-3000:]}")
    assert cp.returncode == 0, f"kcat {' '.join(args)} failed rc={cp.returncode}:\n" \
                               f"{cp.stderr.decode(errors='replace')[-3000:]}"
    return cp.stdout.decode()


HEADERS = [("a", "1"), ("trace", "xyz-42"), ("a", "2")]  # duplicate keys, order kept


def lines_for(topic, codec, p):
    out = []
    for j in range(PER_PART):
        key = f"k{p}-{j}"
        val = f"{codec}-p{p}-r{j}-" + ("compressible payload " * (40 if j % 3 == 0 else 1)).strip()
        out.append((key, val))
    return out


def produce(broker, topic, codec, acks="all"):
    """One kcat -P per partition: -K key delimiter, -H headers, -z codec."""
    sent = {}
    t0 = now_ms()
    for p in range(PARTS):
        recs = lines_for(topic, codec, p)
        data = "".join(f"{k}:{v}\n" for k, v in recs).encode()
        args = ["-P", "-b", broker.bootstrap, "-t", topic, "-p", str(p), "-K", ":", "-z", codec,
                "-X", f"acks={acks}", "-X", "linger.ms=20"]
        for hk, hv in HEADERS:
            args += ["-H", f"{hk}={hv}"]
        kcat(*args, input=data)
        sent[p] = recs
    return sent, t0, now_ms()


FMT = "%p\t%o\t%k\t%s\t%T\t%h\n"


def consume(broker, topic):
    out = kcat("-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", FMT)
    rows = {}
    for line in out.splitlines():
        p, o, k, s, ts, h = line.split("\t")
        rows.setdefault(int(p), []).append((int(o), k, s, int(ts), h))
    return rows


def query(broker, topic, pts):
    """kcat -Q for (partition, timestamp) pairs, one partition at most once per call
    (kcat keeps only the last timestamp given for a partition)."""
    args = ["-Q", "-b", broker.bootstrap]
    for p, t in pts:
        args += ["-t", f"{topic}:{p}:{t}"]
    out = kcat(*args)
    res = {}
    for line in out.splitlines():
        m = re.fullmatch(r"\s*(\S+) \[(\d+)\] offset (-?\d+)\s*", line)
        if m:
            assert m.group(1) == topic
            res[int(m.group(2))] = int(m.group(3))
    return res


def first_at_or_after(rows, t):
    for o, _, _, ts, _ in rows:
        if ts >= t:
            return o
    return -1


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_query(broker3, codec):
    topic = unique_topic(f"kcat-{codec}")
    sent, t0, t1 = produce(broker3, topic, codec, acks="all")
    rows = consume(broker3, topic)
    assert sorted(rows) == list(range(PARTS))
    hdr = ",".join(f"{k}={v}" for k, v in HEADERS)
    for p in range(PARTS):
        got = [(o, k, s, h) for o, k, s, _, h in rows[p]]
        assert got == [(j, k, v, hdr) for j, (k, v) in enumerate(sent[p])], f"partition {p}"
        tss = [ts for _, _, _, ts, _ in rows[p]]
        assert all(t0 - 5 <= ts <= t1 + 5 for ts in tss), f"partition {p}: timestamps {tss} outside [{t0}, {t1}]"
        assert tss == sorted(tss), f"partition {p}: CreateTimes from one producer must not go back"

    # -Q: offsets for times (ListOffsets by timestamp), plus -1 (latest) and -2 (earliest)
    probes = {p: sorted({rows[p][0][3] - 1, rows[p][0][3], rows[p][3][3], rows[p][-1][3],
                         rows[p][-1][3] + 1, -1, -2}) for p in range(PARTS)}
    for k in range(max(len(v) for v in probes.values())):
        pts = [(p, v[k]) for p, v in probes.items() if k < len(v)]
        res = query(broker3, topic, pts)
        exp = {}
        for p, t in pts:
            exp[p] = PER_PART if t == -1 else 0 if t == -2 else first_at_or_after(rows[p], t)
        assert res == exp, f"kcat -Q {pts}"

    assert_stored_codec(broker3.data_dir, topic, {p: PER_PART for p in range(PARTS)}, codec)


def test_json_consume_and_tstype(broker3):
    topic = unique_topic("kcat-json")
    sent, t0, t1 = produce(broker3, topic, "lz4")
    out = kcat("-C", "-b", broker3.bootstrap, "-t", topic, "-p", "1", "-o", "beginning", "-e", "-q", "-J")
    msgs = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [(m["partition"], m["offset"], m["key"], m["payload"], m["tstype"], m["headers"]) for m in msgs] == \
        [(1, j, k, v, "create", [x for kv in HEADERS for x in kv]) for j, (k, v) in enumerate(sent[1])]


def test_acks0(broker3):
    topic = unique_topic("kcat-acks0")
    sent, _, _ = produce(broker3, topic, "gzip", acks="0")
    # acks=0: nothing confirms the write, so wait (bounded) for the high watermark.
    deadline = time.monotonic() + POLL_DEADLINE
    while True:
        res = query(broker3, topic, [(p, -1) for p in range(PARTS)])
        if res == {p: PER_PART for p in range(PARTS)} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert res == {p: PER_PART for p in range(PARTS)}
    rows = consume(broker3, topic)
    for p in range(PARTS):
        assert [(o, k, s) for o, k, s, _, _ in rows[p]] == [(j, k, v) for j, (k, v) in enumerate(sent[p])]


def test_metadata_listing(broker3):
    topic = unique_topic("kcat-md")
    produce(broker3, topic, "none")
    md = json.loads(kcat("-L", "-J", "-b", broker3.bootstrap))
    assert [(b["name"]) for b in md["brokers"]] == [broker3.bootstrap]
    bid = md["brokers"][0]["id"]
    assert md["controllerid"] == bid
    t = [t for t in md["topics"] if t["topic"] == topic]
    assert len(t) == 1, f"{topic} not in kcat -L"
    assert "error" not in t[0], t[0]
    parts = sorted(t[0]["partitions"], key=lambda p: p["partition"])
    assert [(p["partition"], p["leader"], [r["id"] for r in p["replicas"]], [r["id"] for r in p["isrs"]])
            for p in parts] == [(i, bid, [bid], [bid]) for i in range(PARTS)]
    # plain-text listing of one topic
    txt = kcat("-L", "-b", broker3.bootstrap, "-t", topic)
    assert f'topic "{topic}" with {PARTS} partitions:' in txt
    assert f"broker {bid} at {broker3.bootstrap}" in txt
