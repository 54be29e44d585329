"""Runnel's ApiVersions answer, decoded by Apache Kafka 4.x's own client codecs
(tests/interop/java/src/ApiVersionsDump.java) and compared with what Apache Kafka 4.x
advertises (docs/reference/kafka-4-api-versions.txt): every API Runnel advertises must carry
exactly Kafka's version range, and a too-new request gets the KIP-511 v0 fallback."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "java"))
from javakit import java, java_env, parse_api_lines, reference_api_versions  # noqa: E402,F401


def dump(broker, version: int):
    r = java(["ApiVersionsDump", broker.bootstrap, str(version)], timeout=60)
    r.expect_ok(broker, f"ApiVersionsDump v{version}")
    fields = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition(" ")
        if k != "api":
            fields.setdefault(k, v)
    return r, fields, parse_api_lines(r.stdout)


def test_api_versions_v4_ranges_match_kafka(java_env, broker):
    r, fields, apis = dump(broker, 4)
    assert fields["error_code"] == "0", r.report(broker, "ApiVersions v4")
    assert 18 in apis, f"ApiVersions (18) is not advertised:\n{r.stdout}"
    ref = reference_api_versions()
    problems = []
    for key, (name, lo, hi) in sorted(apis.items()):
        if key not in ref:
            problems.append(f"{name}({key}) {lo}-{hi}: advertised, but Apache Kafka 4.x does not advertise it on a client listener")
        elif (lo, hi) != ref[key][1:]:
            problems.append(f"{name}({key}): advertised {lo}-{hi}, Apache Kafka 4.x advertises {ref[key][1]}-{ref[key][2]}")
    assert not problems, "\n".join(problems) + f"\n(full answer:\n{r.stdout})"


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_older_request_versions(java_env, broker, version):
    """Kafka answers v0..v3 with the same api list as v4."""
    _, _, v4 = dump(broker, 4)
    r, fields, apis = dump(broker, version)
    assert fields["error_code"] == "0", r.report(broker, f"ApiVersions v{version}")
    assert apis == v4, f"ApiVersions v{version} lists other ranges than v4:\nv{version}: {apis}\nv4: {v4}"


@pytest.mark.parametrize("version", [5, 127])
def test_api_versions_too_new_gets_kip511_fallback(java_env, broker, version):
    """A request newer than v4 is answered in v0 with UNSUPPORTED_VERSION (35) and an api list
    that includes ApiVersions 0-4 (Kafka 4.1 lists only that entry); any other entry listed
    must carry the same range as in the v4 answer."""
    r, fields, apis = dump(broker, version)
    assert fields["response_version"] == "0"
    assert fields["error_code"] == "35", r.report(broker, f"ApiVersions v{version}")
    assert apis.get(18) == ("ApiVersions", 0, 4), f"fallback answer does not list ApiVersions 0-4:\n{r.stdout}"
    _, _, v4 = dump(broker, 4)
    wrong = {k: v for k, v in apis.items() if v4.get(k) != v}
    assert not wrong, f"fallback lists ranges that differ from the v4 answer: {wrong}"
