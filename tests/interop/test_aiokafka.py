"""aiokafka (asyncio client, its own protocol code) against Runnel. Consumers have no group:
group_id=None, assign(), no commits."""

import asyncio
import time

import pytest

from conftest import unique_topic
from interop_util import (CODECS, POLL_DEADLINE, Got, assert_roundtrip, assert_stored_codec,
                          by_partition, make_records, offset_queries,
                          query_rounds, require_module)

aiokafka = require_module("aiokafka")
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

TIMEOUT = 20


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def create_topic(bootstrap, topic, partitions):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT * 1000)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        errs = [t for t in resp.topic_errors if t[1] != 0]
        assert not errs, f"CreateTopics errors: {errs}"
    finally:
        await admin.close()
    # wait until every partition has a leader answering ListOffsets
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await c.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            await c._client.force_metadata_update()
            ps = c.partitions_for_topic(topic)
            if ps is not None and len(ps) == partitions:
                await c.end_offsets([TopicPartition(topic, p) for p in ps])
                return
            assert time.monotonic() < deadline, f"topic {topic} not ready: {ps}"
            await asyncio.sleep(0.1)
    finally:
        await c.stop()


async def produce(bootstrap, topic, recs, codec, acks, idempotence=False):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=acks, linger_ms=20,
                         compression_type=None if codec == "none" else codec,
                         enable_idempotence=idempotence, request_timeout_ms=TIMEOUT * 1000)
    await p.start()
    try:
        futs = [await p.send(topic, value=r.value, key=r.key, partition=r.partition,
                             timestamp_ms=r.ts, headers=r.headers) for r in recs]
        await p.flush()
        mds = await asyncio.gather(*futs)
        return [None if m is None else (m.partition, m.offset) for m in mds]  # acks=0: None
    finally:
        await p.stop()


async def consume(bootstrap, topic, recs):
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", request_timeout_ms=TIMEOUT * 1000)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in counts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        want = sum(counts.values())
        got: list[Got] = []
        deadline = time.monotonic() + POLL_DEADLINE
        while len(got) < want and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                for m in msgs:
                    got.append(Got(m.partition, m.offset, m.key, m.value, list(m.headers or ()),
                                   m.timestamp, {0: "create", 1: "append"}.get(m.timestamp_type, "?")))
        extra = await c.getmany(timeout_ms=1000)
        extra_n = sum(len(v) for v in extra.values())
        got.sort(key=lambda g: (g.partition, g.offset))  # getmany interleaves partitions
        begin = {tp.partition: o for tp, o in (await c.beginning_offsets(tps)).items()}
        end = {tp.partition: o for tp, o in (await c.end_offsets(tps)).items()}
        times = []
        for rnd in query_rounds(offset_queries(recs)):
            res = await c.offsets_for_times({TopicPartition(topic, p): t for p, t, _ in rnd})
            for p, t, _ in rnd:
                ot = res[TopicPartition(topic, p)]
                times.append((p, t, None if ot is None else ot.offset, None if ot is None else ot.timestamp))
        return got, extra_n, begin, end, times
    finally:
        await c.stop()


async def scenario(broker, topic, codec, acks, create=True, idempotence=False):
    recs = make_records(topic)  # aiokafka cannot send a null header value
    if create:
        await create_topic(broker.bootstrap, topic, 3)
    reports = await produce(broker.bootstrap, topic, recs, codec, acks, idempotence)
    got, extra_n, begin, end, times = await consume(broker.bootstrap, topic, recs)
    return recs, reports, got, extra_n, begin, end, times


def check(recs, reports, got, extra_n, begin, end, times, acks):
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    if acks != 0:
        per: dict[int, list[int]] = {}
        for p, o in reports:
            per.setdefault(p, []).append(o)
        assert per == {p: list(range(n)) for p, n in counts.items()}, "ProduceResponse offsets"
    assert_roundtrip(recs, got)
    assert extra_n == 0, "records beyond those produced"
    assert begin == {p: 0 for p in counts}
    assert end == counts
    parts = by_partition(recs)
    exp = sorted((p, t, o, None if o is None else parts[p][o].ts) for p, t, o in offset_queries(recs))
    assert sorted(times) == exp, "offsets_for_times"


@pytest.mark.parametrize("codec", CODECS)
def test_roundtrip(broker, codec):
    topic = unique_topic(f"aio-{codec}")
    res = run(scenario(broker, topic, codec, "all"))
    check(*res, acks="all")
    recs = res[0]
    assert_stored_codec(broker.data_dir, topic, {p: len(r) for p, r in by_partition(recs).items()}, codec)


@pytest.mark.parametrize("acks,codec", [(0, "lz4"), (1, "gzip")])
def test_acks(broker, acks, codec):
    topic = unique_topic(f"aio-acks{acks}")
    res = run(scenario(broker, topic, codec, acks))
    check(*res, acks=acks)
    recs = res[0]
    assert_stored_codec(broker.data_dir, topic, {p: len(r) for p, r in by_partition(recs).items()}, codec)



def test_idempotent_producer(broker):
    topic = unique_topic("aio-idem")
    res = run(scenario(broker, topic, "gzip", "all", idempotence=True))
    check(*res, acks="all")
    recs = res[0]
    assert_stored_codec(broker.data_dir, topic, {p: len(r) for p, r in by_partition(recs).items()}, "gzip",
                        idempotent=True)
