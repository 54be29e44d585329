"""A little of the Kafka wire protocol by hand, for tests that must send what no client
would (bad frames, unsupported versions) and read the broker's exact bytes back.

Only what test_bad_input.py needs: request headers v1/v2, ApiVersions v0-v4 requests and
responses, a v2 record batch builder (with CRC32C), Produce v6 and v9 and Fetch v9 and
v10 requests/responses."""

from __future__ import annotations

import socket
import struct
import time

from interop_util import crc32c


# ---------------------------------------------------------------- primitives

def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(n: int) -> bytes:
    return uvarint((n << 1) ^ (n >> 63))


def string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def compact_bytes(b: bytes | None) -> bytes:
    if b is None:
        return uvarint(0)
    return uvarint(len(b) + 1) + b


class Reader:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ValueError(f"short read: want {n} at {self.pos}, have {len(self.buf) - self.pos}")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def uvarint(self):
        shift = n = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def compact_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def tagged_fields(self) -> dict[int, bytes]:
        out = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            out[tag] = self.take(self.uvarint())
        return out

    def done(self) -> bool:
        return self.pos == len(self.buf)


# ---------------------------------------------------------------- framing

CLIENT_ID = "runnel-interop-raw"


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def header_v1(api_key: int, version: int, corr: int, client_id: str | None = CLIENT_ID) -> bytes:
    return struct.pack(">hhi", api_key, version, corr) + string(client_id)


def header_v2(api_key: int, version: int, corr: int, client_id: str | None = CLIENT_ID) -> bytes:
    return header_v1(api_key, version, corr, client_id) + uvarint(0)


def api_versions_request(version: int, corr: int) -> bytes:
    if version >= 3:
        body = compact_string("runnel-interop") + compact_string("1.0") + uvarint(0)
        return frame(header_v2(18, version, corr) + body)
    return frame(header_v1(18, version, corr))


def connect(broker, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Closed(Exception):
    """The broker closed the connection (EOF or reset)."""


def recv_exact(s: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within the deadline ({len(buf)}/{n} bytes)")
        s.settimeout(left)
        try:
            chunk = s.recv(n - len(buf))
        except (ConnectionResetError, BrokenPipeError) as e:
            raise Closed(str(e)) from e
        except socket.timeout as e:
            raise TimeoutError(f"no complete answer within the deadline ({len(buf)}/{n} bytes)") from e
        if not chunk:
            raise Closed("EOF")
        buf += chunk
    return bytes(buf)


def recv_frame(s: socket.socket, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    (n,) = struct.unpack(">i", recv_exact(s, 4, deadline))
    assert 0 <= n < 64 << 20, f"response frame length {n}"
    return recv_exact(s, n, deadline)


def closed_or_frame(s: socket.socket, timeout: float = 10.0):
    """('closed', None) if the broker closes the connection, ('frame', bytes) if it answers.
    Raises TimeoutError if it does neither in time (a hung request: Kafka never does that)."""
    try:
        return "frame", recv_frame(s, timeout)
    except Closed:
        return "closed", None


# ---------------------------------------------------------------- ApiVersions

def parse_api_versions(resp: bytes, version: int):
    """Response header v0 (always, for ApiVersions) + body at `version`.
    Returns (correlation_id, error_code, {api_key: (min, max)}, throttle_ms, tagged)."""
    r = Reader(resp)
    corr = r.i32()
    err = r.i16()
    apis = {}
    throttle, tagged = None, {}
    if version >= 3:
        n = r.uvarint() - 1
        for _ in range(max(n, 0)):
            k, lo, hi = r.i16(), r.i16(), r.i16()
            r.tagged_fields()
            apis[k] = (lo, hi)
        throttle = r.i32()
        tagged = r.tagged_fields()
    else:
        n = r.i32()
        for _ in range(max(n, 0)):
            k, lo, hi = r.i16(), r.i16(), r.i16()
            apis[k] = (lo, hi)
        if version >= 1:
            throttle = r.i32()
    assert r.done(), f"ApiVersions v{version} response has {len(resp) - r.pos} trailing bytes"
    return corr, err, apis, throttle, tagged


# ---------------------------------------------------------------- records and Produce

def record_batch(records: list[tuple[bytes | None, bytes | None]], base_ts: int,
                 compress=None, codec: int = 0) -> bytes:
    """A v2 record batch (base offset 0, no producer id); `compress` turns the records
    section into `codec`'s bytes (uncompressed without it)."""
    body = bytearray()
    for i, (k, v) in enumerate(records):
        rec = bytearray()
        rec += b"\x00"  # attributes
        rec += varint(0)  # timestamp delta
        rec += varint(i)  # offset delta
        rec += varint(-1) if k is None else varint(len(k)) + k
        rec += varint(-1) if v is None else varint(len(v)) + v
        rec += varint(0)  # headers
        body += varint(len(rec)) + rec
    if compress is not None:
        body = bytes(compress(bytes(body)))
    after_crc = struct.pack(">hiqqqhii", codec, len(records) - 1, base_ts, base_ts, -1, -1, -1, len(records)) + bytes(body)
    crc = crc32c(after_crc)
    after_len = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def produce_request_v9(corr: int, topic: str, partition: int, records: bytes, acks: int = -1) -> bytes:
    body = uvarint(0)  # transactional_id: null
    body += struct.pack(">hi", acks, 10000)
    body += uvarint(2) + compact_string(topic)
    body += uvarint(2) + struct.pack(">i", partition) + compact_bytes(records) + uvarint(0)
    body += uvarint(0)  # topic tagged fields
    body += uvarint(0)  # request tagged fields
    return frame(header_v2(0, 9, corr) + body)


def parse_produce_v9(resp: bytes):
    """-> (correlation_id, [(topic, partition, error_code, base_offset)])"""
    r = Reader(resp)
    corr = r.i32()
    r.tagged_fields()  # response header v1
    out = []
    for _ in range(r.uvarint() - 1):
        name = r.compact_string()
        for _ in range(r.uvarint() - 1):
            idx, err, base = r.i32(), r.i16(), r.i64()
            r.i64()  # log_append_time
            r.i64()  # log_start_offset
            for _ in range(r.uvarint() - 1):  # record_errors
                r.i32()
                r.compact_string()
                r.tagged_fields()
            r.compact_string()  # error_message
            r.tagged_fields()
            out.append((name, idx, err, base))
        r.tagged_fields()
    r.i32()  # throttle
    r.tagged_fields()
    return corr, out


def produce_request_v6(corr: int, topic: str, partition: int, records: bytes, acks: int = -1) -> bytes:
    body = string(None)  # transactional_id
    body += struct.pack(">hi", acks, 10000)
    body += struct.pack(">i", 1) + string(topic)
    body += struct.pack(">ii", 1, partition) + struct.pack(">i", len(records)) + records
    return frame(header_v1(0, 6, corr) + body)


def parse_produce_v6(resp: bytes):
    """-> (correlation_id, [(topic, partition, error_code, base_offset)])"""
    r = Reader(resp)
    corr = r.i32()
    out = []
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            idx, err, base = r.i32(), r.i16(), r.i64()
            r.i64()  # log_append_time
            r.i64()  # log_start_offset
            out.append((name, idx, err, base))
    r.i32()  # throttle
    assert r.done(), "trailing bytes in a Produce v6 response"
    return corr, out


def fetch_request_v9(corr: int, topic: str, partition: int, offset: int, version: int = 9) -> bytes:
    """Fetch v9 or v10 (same layout) of one partition, answered at once (max_wait 0)."""
    assert version in (9, 10)
    body = struct.pack(">iiiibii", -1, 0, 0, 1 << 20, 0, 0, -1)
    body += struct.pack(">i", 1) + string(topic)
    body += struct.pack(">iiiqqi", 1, partition, -1, offset, -1, 1 << 20)
    body += struct.pack(">i", 0)  # forgotten topics
    return frame(header_v1(1, version, corr) + body)


def parse_fetch_v9(resp: bytes):
    """-> (correlation_id, top-level error, [(topic, partition, error_code, high_watermark, records)])"""
    r = Reader(resp)
    corr = r.i32()
    r.i32()  # throttle
    err = r.i16()
    r.i32()  # session id
    out = []
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            idx, perr, hw = r.i32(), r.i16(), r.i64()
            r.i64()  # last stable offset
            r.i64()  # log start offset
            for _ in range(max(r.i32(), 0)):  # aborted transactions (nullable)
                r.i64()
                r.i64()
            n = r.i32()
            out.append((name, idx, perr, hw, r.take(n) if n > 0 else b""))
    assert r.done(), "trailing bytes in a Fetch v9 response"
    return corr, err, out
