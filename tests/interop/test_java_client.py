"""Apache Kafka's own Java client (kafka-clients 4.x from Maven Central) against Runnel.

Each test runs one step of tests/interop/java/src/Roundtrip.java, which exits non-zero with
a `MISMATCH: ...` (or `ERROR: ...`) line on the first difference from Kafka's behaviour.
The consumers use assign() without group.id, so no group coordinator is needed.
"""

import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "java"))
from javakit import dump_log_segments, java, java_env, parse_dump  # noqa: E402,F401  (java_env is a fixture)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
DEADLINE_S = 120  # the Java program's own watchdog; the subprocess limit is above it


def roundtrip(broker, *step: str):
    r = java(["Roundtrip", broker.bootstrap, *step], timeout=DEADLINE_S + 30,
             env={"RUNNEL_JAVA_DEADLINE_S": str(DEADLINE_S)})
    return r.expect_ok(broker, "Roundtrip " + " ".join(step))


def test_describe_cluster_and_broker_configs(java_env, broker):
    roundtrip(broker, "cluster")


def test_admin_topics_and_configs(java_env, broker):
    """createTopics (+ TopicExists / InvalidTopic errors), listTopics, describeTopics,
    describeConfigs, incrementalAlterConfigs SET/DELETE (+ unknown name), deleteTopics."""
    roundtrip(broker, "admin")


@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_roundtrip(java_env, broker, codec):
    """Keyed records with headers (repeated, empty, null values), null keys, tombstones and a
    ~96 KiB value, acks=all, explicit CreateTime timestamps, three partitions; read back with
    an assigned KafkaConsumer and compared field by field; reads with fetch sizes below one
    batch; seek into the middle of a batch; begin/end offsets. Then Kafka's DumpLogSegments
    reads the partitions' .log files: the producer's batches are stored as sent (codec kept)."""
    r = roundtrip(broker, "roundtrip", codec)
    topic = re.search(r"topic=(\S+)", r.stdout).group(1)
    for part in range(3):
        logs = sorted((broker.data_dir / f"{topic}-{part}").glob("*.log"))
        assert logs, f"no segment files in {broker.data_dir / f'{topic}-{part}'}"
        text = dump_log_segments(broker, logs, "--deep-iteration", "--print-data-log")
        batches, recs = parse_dump(text, f"{topic}-{part}")
        assert batches and all(b["valid"] and b["magic"] == 2 and b["codec"] == codec for b in batches), \
            "\n".join(b["line"] for b in batches)
        assert [x["offset"] for x in recs] == list(range(40)), f"{topic}-{part}: offsets {[x['offset'] for x in recs]}"
        for x in recs:
            n = x["offset"] * 3 + part  # the n-th record sent (see Roundtrip.roundtrip)
            keys = ["codec", "n"] + ["n"] * (n % 5 == 0) + ["empty"] * (n % 7 == 0) + ["null"] * (n % 11 == 0)
            assert x["header_keys"] == keys, f"{topic}-{part}@{x['offset']}: header keys {x['header_keys']}, sent {keys}"
            assert x["key"] == (None if n % 17 == 5 else f"key-{codec}-{n}"), f"{topic}-{part}@{x['offset']}: {x['key']}"
            assert (x["payload"] is None) == (n % 23 == 7), f"{topic}-{part}@{x['offset']}: tombstone mismatch"
            assert x["ts_type"] == "CreateTime", x


def test_idempotent_producer(java_env, broker):
    """The Java producer's default: enable.idempotence=true (InitProducerId, sequences),
    5 in-flight requests, small batches."""
    roundtrip(broker, "idempotent")


def test_offsets_for_times_and_list_offsets(java_env, broker):
    """offsetsForTimes inside and across batches, beginningOffsets/endOffsets, and
    Admin.listOffsets earliest/latest/maxTimestamp."""
    roundtrip(broker, "offsets")


def test_delete_records(java_env, broker):
    """deleteRecords moves the log start offset; reads below it are OFFSET_OUT_OF_RANGE;
    deleting past the high watermark fails; beforeOffset(-1) means the high watermark."""
    roundtrip(broker, "delete-records")


def test_create_partitions(java_env, broker):
    roundtrip(broker, "create-partitions")


def test_delete_topic(java_env, broker):
    roundtrip(broker, "delete-topic")


def test_acks_0_1_all(java_env, broker):
    roundtrip(broker, "acks")


def test_log_append_time_topic(java_env, broker):
    """message.timestamp.type=LogAppendTime: the broker stamps the batch; the producer's
    RecordMetadata and the consumer see the broker's time with type LOG_APPEND_TIME."""
    roundtrip(broker, "log-append-time")


def test_timestamp_validation(java_env, broker):
    """message.timestamp.before.max.ms / after.max.ms reject out-of-range CreateTime records
    with INVALID_TIMESTAMP."""
    roundtrip(broker, "timestamp-validation")


def test_max_message_bytes(java_env, broker):
    """A batch above the topic's max.message.bytes gets MESSAGE_TOO_LARGE; the log goes on."""
    roundtrip(broker, "limits")
