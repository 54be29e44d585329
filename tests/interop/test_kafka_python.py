"""kafka-python 2.x and 3.x against Runnel. Each major version lives in its own venv (made by
.ci/run): $RUNNEL_KP2_PYTHON / $RUNNEL_KP3_PYTHON, else /tmp/venv-kp2/bin/python and
/tmp/venv-kp3/bin/python. The client code runs in a subprocess of that interpreter
(clients/kafka_python_roundtrip.py); the assertions are here.

2.x probes broker versions its own way; 3.x sends ApiVersions v4 first and relies on the
KIP-511 fallback. The codec/acks matrix switches idempotence off explicitly (3.x turns it on
by default); the idempotent producer, and 3.x's untouched defaults, have a test of their own."""

import json
import os
import pathlib
import subprocess

import pytest

from conftest import unique_topic
from interop_util import (CODECS, Got, assert_roundtrip, assert_stored_codec, by_partition, dec,
                          in_ci, make_records, offset_queries, query_rounds, recs_to_json)

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "clients" / "kafka_python_roundtrip.py"

VENVS = {
    "kp2": os.environ.get("RUNNEL_KP2_PYTHON", "/tmp/venv-kp2/bin/python"),
    "kp3": os.environ.get("RUNNEL_KP3_PYTHON", "/tmp/venv-kp3/bin/python"),
}
MAJOR = {"kp2": "2", "kp3": "3"}


def venv_python(which: str) -> str:
    py = VENVS[which]
    if not os.path.exists(py):
        msg = f"kafka-python venv {py} missing (.ci/run creates it)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return py


def run_client(which, broker, tmp_path, topic, recs, codec="none", acks="all", create=True,
               partitions=3, idempotence="off"):
    py = venv_python(which)
    spec = {"records": recs_to_json(recs),
            "queries": [[[p, t] for p, t, _ in rnd] for rnd in query_rounds(offset_queries(recs))]}
    inp, outp = tmp_path / "in.json", tmp_path / "out.json"
    inp.write_text(json.dumps(spec))
    cmd = [py, str(SCRIPT), "--bootstrap", broker.bootstrap, "--topic", topic,
           "--partitions", str(partitions), "--codec", codec, "--acks", acks,
           "--records", str(inp), "--out", str(outp), "--idempotence", idempotence] + \
        (["--create"] if create else [])
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"kafka-python client timed out; stderr tail:\n{(e.stderr or '')[-4000:]}")
    assert cp.returncode == 0, f"kafka-python client failed (rc={cp.returncode}):\n{cp.stderr[-6000:]}"
    out = json.loads(outp.read_text())
    assert out["version"].startswith(MAJOR[which] + "."), f"venv holds kafka-python {out['version']}"
    return out


def check(out, recs, acks):
    counts = {p: len(rs) for p, rs in by_partition(recs).items()}
    if acks != "0":
        per: dict[int, list[int]] = {}
        for p, o in out["reports"]:
            per.setdefault(p, []).append(o)
        assert per == {p: list(range(n)) for p, n in counts.items()}, "ProduceResponse offsets"
    extra = [g for g in out["consumed"] if g.get("extra")]
    assert not extra, f"records beyond those produced: {extra[:3]}"
    got = [Got(g["partition"], g["offset"], dec(g["key"]), dec(g["value"]),
               [(k, dec(v)) for k, v in g["headers"]], g["ts"], g["ts_type"]) for g in out["consumed"]]
    assert_roundtrip(recs, got)
    assert {int(p): o for p, o in out["begin"].items()} == {p: 0 for p in counts}
    assert {int(p): o for p, o in out["end"].items()} == counts
    parts = by_partition(recs)
    exp = sorted((p, t, o, None if o is None else parts[p][o].ts) for p, t, o in offset_queries(recs))
    assert sorted(tuple(a) for a in out["times"]) == exp, "offsets_for_times"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("which", ["kp2", "kp3"])
def test_roundtrip(broker, tmp_path, which, codec):
    topic = unique_topic(f"{which}-{codec}")
    recs = make_records(topic)  # kafka-python cannot send a null header value
    out = run_client(which, broker, tmp_path, topic, recs, codec=codec, acks="all")
    check(out, recs, "all")
    assert_stored_codec(broker.data_dir, topic, {p: len(r) for p, r in by_partition(recs).items()}, codec)


KP2_ACKS0_BUG = pytest.mark.skip(
    reason="kafka-python 2.3.3 never writes an acks=0 ProduceRequest to its socket (seen with strace "
           "against Apache Kafka 4.1.1: records lost there too); a client bug, nothing to learn")


@pytest.mark.parametrize("which,acks,codec", [
    pytest.param("kp2", "0", "snappy", marks=KP2_ACKS0_BUG),
    ("kp2", "1", "lz4"),
    ("kp3", "0", "snappy"),
    ("kp3", "1", "lz4"),
])
def test_acks(broker, tmp_path, which, acks, codec):
    topic = unique_topic(f"{which}-acks{acks}")
    recs = make_records(topic)
    out = run_client(which, broker, tmp_path, topic, recs, codec=codec, acks=acks)
    check(out, recs, acks)
    assert_stored_codec(broker.data_dir, topic, {p: len(r) for p, r in by_partition(recs).items()}, codec)


@pytest.mark.parametrize("which,idempotence", [("kp2", "on"), ("kp3", "default")])
def test_idempotent_producer(broker, tmp_path, which, idempotence):
    """The broker advertises InitProducerId, so the idempotent producer must work: explicitly
    on for 2.x, and 3.x's out-of-the-box defaults (idempotence on, acks=all)."""
    topic = unique_topic(f"{which}-idem")
    recs = make_records(topic)
    out = run_client(which, broker, tmp_path, topic, recs, codec="zstd", idempotence=idempotence)
    check(out, recs, "all")
    assert_stored_codec(broker.data_dir, topic, {p: len(r) for p, r in by_partition(recs).items()}, "zstd",
                        idempotent=True)
