"""Helpers shared by the interop tests: a deterministic record set, the exact checks run on
what each client reads back, expected answers to ListOffsets queries, and a reader of the
broker's on-disk segments (Kafka's layout: `<log.dirs>/<topic>-<partition>/<base>.log`) to
check that the batches were stored with the codec the client asked for."""

from __future__ import annotations

import importlib
import os
import pathlib
import random
import shutil
import struct
import time
from dataclasses import dataclass, field

import pytest

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CODEC_ID = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TINY_BATCH = 160  # bytes of records below which a client may skip compression

# Every poll loop in the suite is bounded by this (seconds).
POLL_DEADLINE = 30.0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_module(name: str):
    """Import a client library; skip locally if absent, fail under CI (where .ci/run installs it)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if in_ci():
            pytest.fail(f"{name} is not installed but CI must have it (.ci/run installs it): {e}")
        pytest.skip(f"{name} not installed: {e}")


def require_exe(path_or_name: str) -> str:
    found = shutil.which(path_or_name) or (path_or_name if os.path.isfile(path_or_name) else None)
    if not found:
        if in_ci():
            pytest.fail(f"{path_or_name} not found but CI must have it (.ci/run installs it)")
        pytest.skip(f"{path_or_name} not found")
    return found


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Rec:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    ts: int = -1

    def as_tuple(self):
        return (self.key, self.value, list(self.headers), self.ts)


def make_records(tag: str, partitions: int = 3, per_partition: int = 12, base_ts: int | None = None,
                 null_header_value: bool = False, binary: bool = True) -> list[Rec]:
    """A deterministic record set spread over `partitions`, in production order.

    Covers: binary keys/values, a null key, a null value (tombstone), an empty value, a
    large compressible value, no headers, duplicate header keys, a non-ASCII header key,
    an empty header value, optionally a null header value (not every client can send one),
    and, in partition 0, one record whose timestamp is far above its neighbours' so that
    ListOffsets MAX_TIMESTAMP and by-timestamp lookups are not the trivial answer.
    Timestamps are explicit CreateTimes, all in the recent past."""
    if base_ts is None:
        base_ts = now_ms() - 30 * 60 * 1000  # 30 min ago: inside any timestamp-skew limit
    rnd = random.Random(tag)
    out = []
    for i in range(partitions * per_partition):
        p = i % partitions
        j = i // partitions
        key: bytes | None = f"{tag}-k{i}".encode()
        value: bytes | None = f"{tag}-v{i}".encode()
        if binary:
            value += b"\x00\x01\xfe\xff"
        headers: list[tuple[str, bytes | None]] = [
            ("h-idx", str(i).encode()),
            ("h-dup", b"a"),
            ("h-dup", b"b"),
            ("h-\u00fcml", "w\u20ac".encode()),
        ]
        if binary:
            headers.append(("h-bin", bytes([0, 1, 2, 255])))
        if j == 1:
            headers = []
        elif j == 2:
            key = None
        elif j == 3:
            value = None
        elif j == 4:
            value = b""
        elif j == 5:
            value = (f"{tag}-big-{i}-".encode() * 400) + bytes(rnd.getrandbits(8) for _ in range(2048))
        elif j == 6:
            headers.append(("h-empty", b""))
            if null_header_value:
                headers.append(("h-null", None))
        ts = base_ts + i * 10
        if p == 0 and j == 7:
            ts = base_ts + 1_000_000  # the partition's maximum timestamp, out of order
        out.append(Rec(p, key, value, headers, ts))
    return out


def by_partition(recs: list[Rec]) -> dict[int, list[Rec]]:
    parts: dict[int, list[Rec]] = {}
    for r in recs:
        parts.setdefault(r.partition, []).append(r)
    return parts


def expected_offset_for_time(recs: list[Rec], target: int) -> int | None:
    """Kafka's answer: the earliest offset whose timestamp is >= target, else none."""
    for o, r in enumerate(recs):
        if r.ts >= target:
            return o
    return None


def offset_queries(recs: list[Rec]) -> list[tuple[int, int, int | None]]:
    """(partition, target timestamp, expected offset or None) for a few interesting targets."""
    qs = []
    for p, rs in sorted(by_partition(recs).items()):
        targets = {rs[0].ts - 1000, rs[0].ts, max(r.ts for r in rs) + 1}
        for j in (1, 3, 5, len(rs) - 1):
            if j < len(rs):
                targets.add(rs[j].ts)
                targets.add(rs[j].ts - 1)
                targets.add(rs[j].ts + 1)
        for t in sorted(targets):
            qs.append((p, t, expected_offset_for_time(rs, t)))
    return qs


def max_timestamp_offset(recs: list[Rec]) -> tuple[int, int]:
    """(offset, timestamp) of the record with the largest timestamp (first one on ties)."""
    best = max(range(len(recs)), key=lambda o: (recs[o].ts, -o))
    return best, recs[best].ts


@dataclass
class Got:
    """One record as a client read it back."""
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    ts: int
    ts_type: str = "create"  # "create" | "append" | "?"


def assert_roundtrip(expected: list[Rec], got: list[Got], *, check_ts: bool = True) -> None:
    """Everything read back must be exactly what was produced: same partitions, offsets
    0..n-1 in production order, keys, values, headers (order and duplicates included) and
    CreateTime timestamps."""
    exp = by_partition(expected)
    gotp: dict[int, list[Got]] = {}
    for g in got:
        gotp.setdefault(g.partition, []).append(g)
    assert sorted(gotp) == sorted(exp), "records came back on different partitions"
    for p in sorted(exp):
        e, g = exp[p], gotp[p]
        assert [x.offset for x in g] == list(range(len(e))), f"partition {p}: offsets not 0..{len(e)-1} in order"
        exp_rows = [(o, r.key, r.value, r.headers) for o, r in enumerate(e)]
        got_rows = [(x.offset, x.key, x.value, x.headers) for x in g]
        assert got_rows == exp_rows, f"partition {p}: keys/values/headers differ"
        if check_ts:
            assert [(x.offset, x.ts, x.ts_type) for x in g] == [(o, r.ts, "create") for o, r in enumerate(e)], \
                f"partition {p}: timestamps differ"


def consume_until(poll_once, want: int, deadline_s: float = POLL_DEADLINE) -> list:
    """Call poll_once() (returns a list of items) until `want` items arrived or the deadline."""
    items: list = []
    end = time.monotonic() + deadline_s
    while len(items) < want and time.monotonic() < end:
        items.extend(poll_once())
    return items


# ---------------------------------------------------------------- on-disk segments

def _crc32c_table():
    poly = 0x82F63B78
    tab = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        tab.append(c)
    return tab


_CRC_TAB = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    tab = _CRC_TAB
    for b in data:
        c = tab[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


@dataclass
class Batch:
    base_offset: int
    last_offset_delta: int
    magic: int
    attributes: int
    records: int
    crc_ok: bool
    base_ts: int
    max_ts: int
    producer_id: int = -1
    producer_epoch: int = -1
    base_sequence: int = -1
    records_bytes: int = 0  # size of the records section as stored (compressed if compressed)

    @property
    def codec(self) -> int:
        return self.attributes & 0x7


def read_batches(data_dir: pathlib.Path, topic: str, partition: int) -> list[Batch]:
    """Record batches v2 of one partition, read straight from the segment files."""
    d = pathlib.Path(data_dir) / f"{topic}-{partition}"
    out = []
    for seg in sorted(d.glob("*.log")):
        buf = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(buf):
            base, length = struct.unpack_from(">qi", buf, pos)
            if length <= 0 or pos + 12 + length > len(buf):
                break  # preallocated tail or a torn write
            (epoch, magic, crc, attrs, lod, bts, mts, pid, pep, bseq, cnt) = struct.unpack_from(
                ">ibIhiqqqhii", buf, pos + 12)
            body = buf[pos + 21: pos + 12 + length]
            out.append(Batch(base, lod, magic, attrs, cnt, crc32c(body) == crc, bts, mts, pid, pep, bseq,
                             length - 49))
            pos += 12 + length
    return out


def assert_stored_codec(data_dir, topic: str, counts: dict[int, int], codec: str,
                        idempotent: bool = False) -> None:
    """The broker keeps batches as the producer sent them, so the codec the client was told to
    use must be the one on disk (a client that silently fell back to no compression, e.g.
    because of the versions we advertise, shows up here). Also: CRCs valid, offsets dense."""
    used: set[int] = set()
    for p, n in counts.items():
        batches = read_batches(data_dir, topic, p)
        assert batches, f"no record batches on disk for {topic}-{p} under {data_dir}"
        assert all(b.magic == 2 for b in batches), f"{topic}-{p}: non-v2 batch on disk"
        assert all(b.crc_ok for b in batches), f"{topic}-{p}: CRC32C mismatch on disk"
        nxt = 0
        for b in batches:
            assert b.base_offset == nxt, f"{topic}-{p}: batch at {b.base_offset}, expected {nxt}"
            assert b.records == b.last_offset_delta + 1
            nxt = b.base_offset + b.last_offset_delta + 1
        assert nxt == n, f"{topic}-{p}: {nxt} records on disk, produced {n}"
        if idempotent:
            assert all(b.producer_id >= 0 and b.producer_epoch >= 0 for b in batches), \
                f"{topic}-{p}: idempotent batches stored without producer id/epoch"
            seqs = [(b.base_sequence, b.records) for b in batches]
            exp, nxt_seq = [], 0
            for _, n_rec in seqs:
                exp.append((nxt_seq, n_rec))
                nxt_seq += n_rec
            assert seqs == exp, f"{topic}-{p}: producer sequences on disk {seqs}"
        # librdkafka sends a batch uncompressed when compressing would make it bigger, which
        # happens to tiny batches (one short record): allow that, and nothing else.
        wrong = [(b.base_offset, b.records, b.records_bytes, b.codec) for b in batches
                 if b.codec != CODEC_ID[codec]
                 and not (b.codec == 0 and b.records_bytes <= TINY_BATCH)]
        assert not wrong, (f"{topic}-{p}: batches (base offset, records, bytes, codec) {wrong} "
                           f"not stored with {codec} ({CODEC_ID[codec]}) that the client was set to")
        used.update(b.codec for b in batches)
    assert CODEC_ID[codec] in used, f"{topic}: no batch stored with {codec}"


# ---------------------------------------------------------------- JSON transport

def enc(b: bytes | None):
    return None if b is None else b.hex()


def dec(s):
    return None if s is None else bytes.fromhex(s)


def recs_to_json(recs: list[Rec]) -> list[dict]:
    return [{"partition": r.partition, "key": enc(r.key), "value": enc(r.value),
             "headers": [[k, enc(v)] for k, v in r.headers], "ts": r.ts} for r in recs]


def query_rounds(qs: list[tuple[int, int, int | None]]) -> list[list[tuple[int, int, int | None]]]:
    """Split offset queries into requests holding each partition at most once."""
    per: dict[int, list] = {}
    for q in qs:
        per.setdefault(q[0], []).append(q)
    rounds = []
    k = 0
    while True:
        rnd = [v[k] for v in per.values() if k < len(v)]
        if not rnd:
            return rounds
        rounds.append(rnd)
        k += 1
