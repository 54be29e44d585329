"""Helpers shared by tests/interop/test_java_*.py: fetches Apache Kafka's jars (setup.sh),
runs Java programs and Kafka's CLI classes with a bounded time, and formats failures with
the tool's output and the broker's log."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass

import pytest

JAVA_DIR = pathlib.Path(__file__).resolve().parent
LIB = JAVA_DIR / "lib"
BUILD = JAVA_DIR / "build"
REFERENCE = JAVA_DIR.parents[2] / "docs" / "reference" / "kafka-4-api-versions.txt"

# Quick JVM start on small machines; WARN keeps the clients' config dumps out of the output.
JVM_OPTS = [
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
    "-Dorg.slf4j.simpleLogger.logFile=System.err",
]


@dataclass
class Run:
    cmd: list[str]
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str
    timeout: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def report(self, broker=None, what: str = "") -> str:
        rc = f"killed after {self.timeout:.0f}s time limit" if self.returncode is None else f"exit {self.returncode}"
        parts = [
            f"{what or 'java'}: {rc}",
            "command: " + " ".join(c if c != f"{LIB}/*:{BUILD}" else "lib/*:build" for c in self.cmd),
            "--- stdout (tail) ---\n" + tail(self.stdout, 4000),
            "--- stderr (tail) ---\n" + tail(self.stderr, 6000),
        ]
        if broker is not None:
            log = ANSI.sub("", broker.log_text())
            parts.append(f"--- broker log {getattr(broker, 'log_path', '')} (tail) ---\n" + tail(log, 4000))
        return "\n".join(parts)

    def expect_ok(self, broker=None, what: str = "") -> "Run":
        """Fails the test (without a Python traceback) unless the program exited 0."""
        if not self.ok:
            pytest.fail(self.report(broker, what), pytrace=False)
        return self


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tail(s: str, n: int) -> str:
    s = s or ""
    return s if len(s) <= n else "...\n" + s[-n:]


_setup_done: bool | str = False


def ensure_setup() -> None:
    """Runs setup.sh once per test session (downloads jars on first use, compiles src/)."""
    global _setup_done
    if _setup_done is True:
        return
    if isinstance(_setup_done, str):
        pytest.fail(_setup_done, pytrace=False)
    missing = [t for t in ("java", "javac", "mvn") if shutil.which(t) is None]
    if missing:
        _setup_done = f"Java interop needs {', '.join(missing)} on PATH (a JDK 17+ and Maven); .ci/run installs them"
        pytest.fail(_setup_done, pytrace=False)
    try:
        p = subprocess.run(["bash", str(JAVA_DIR / "setup.sh")], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        _setup_done = "tests/interop/java/setup.sh did not finish within 900 s"
        pytest.fail(_setup_done, pytrace=False)
    if p.returncode != 0:
        _setup_done = f"tests/interop/java/setup.sh failed ({p.returncode}):\n{tail(p.stdout, 3000)}\n{tail(p.stderr, 5000)}"
        pytest.fail(_setup_done, pytrace=False)
    _setup_done = True


@pytest.fixture(scope="session")
def java_env():
    ensure_setup()
    return JAVA_DIR


def java(args: list[str], timeout: float = 120, input: str | None = None, cwd: str | os.PathLike | None = None,
         jvm_opts: list[str] | None = None, env: dict | None = None) -> Run:
    """Runs `java -cp 'lib/*:build' ARGS...` and never longer than `timeout` seconds."""
    cmd = ["java", *JVM_OPTS, *(jvm_opts or []), "-cp", f"{LIB}/*:{BUILD}", *args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=full_env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
        return Run(cmd, proc.returncode, out, err, timeout)
    except subprocess.TimeoutExpired:
        # Ask the JVM for a thread dump first (helps diagnosing hangs), then kill it.
        try:
            proc.send_signal(signal.SIGQUIT)
        except OSError:
            pass
        try:
            out, err = proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return Run(cmd, None, out or "", err or "", timeout)


def tool(main_class: str, *args: str, bootstrap: str | None = None, timeout: float = 60, input: str | None = None,
         cwd=None) -> Run:
    """Runs one of Kafka's CLI classes; `bootstrap` adds --bootstrap-server."""
    a = [main_class]
    if bootstrap:
        a += ["--bootstrap-server", bootstrap]
    a += list(args)
    return java(a, timeout=timeout, input=input, cwd=cwd)


def parse_api_lines(text: str) -> dict[int, tuple[str, int, int]]:
    """`api KEY NAME MIN MAX` lines -> {key: (name, min, max)}."""
    out: dict[int, tuple[str, int, int]] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 5 and f[0] == "api":
            out[int(f[1])] = (f[2], int(f[3]), int(f[4]))
    return out


def reference_api_versions() -> dict[int, tuple[str, int, int]]:
    """Kafka 4.x's advertised ranges from the v4 section of docs/reference/kafka-4-api-versions.txt."""
    text = REFERENCE.read_text()
    section = text.split("## ApiVersions v4 request", 1)[1].split("\n## ", 1)[0]
    ref = parse_api_lines(section)
    assert ref, f"no 'api' lines found in {REFERENCE}"
    return ref


# ----------------------------------------------------------------------------- DumpLogSegments

DUMP_LOG = "kafka.tools.DumpLogSegments"
RECORD_RE = re.compile(r"^\| offset: (\d+) (CreateTime|LogAppendTime): (-?\d+) keySize: (-?\d+) valueSize: (-?\d+) "
                       r"sequence: (-?\d+) headerKeys: \[([^\]]*)\](?: key: (\S*))?(?: payload: (.*))?$")
BATCH_RE = re.compile(r"^baseOffset: (\d+) lastOffset: (\d+) count: (\d+) .* magic: (\d+) compresscodec: (\w+) "
                      r"crc: (\d+) isvalid: (\w+)$")
DUMP_ERRORS = ["Exception", "Mismatches in", "Found timestamp mismatch", "Found out of order timestamp",
               "indexed offsets are not found", "Non-consecutive offsets", "invalid bytes at the end", "isvalid: false"]


def dump_log_segments(broker, files: list, *flags: str, allow: tuple = ()) -> str:
    """Runs Kafka's DumpLogSegments on `files`; fails on a non-zero exit or any error it
    reports, but those in `allow` (a compacted log has non-consecutive offsets)."""
    r = java([DUMP_LOG, *flags, "--files", ",".join(str(f) for f in files)], timeout=120)
    out = r.stdout + r.stderr
    errors = [e for e in DUMP_ERRORS if e in out and e not in allow]
    if not r.ok or errors:
        pytest.fail(r.report(broker, f"DumpLogSegments {' '.join(flags)} (found: {errors})"), pytrace=False)
    return r.stdout


def parse_dump(text: str, what: str):
    """-> (batches, records): batches as dicts (base, last, count, magic, codec, valid),
    records as dicts (offset, ts_type, ts, key_size, value_size, header_keys, key, payload)."""
    batches, records = [], []
    for line in text.splitlines():
        if line.startswith("baseOffset:"):
            m = BATCH_RE.match(line)
            assert m, f"{what}: unparsable batch line {line[:300]!r}"
            batches.append(dict(base=int(m.group(1)), last=int(m.group(2)), count=int(m.group(3)),
                                magic=int(m.group(4)), codec=m.group(5), valid=m.group(7) == "true", line=line))
        elif line.startswith("| offset:"):
            m = RECORD_RE.match(line)
            assert m, f"{what}: unparsable record line {line[:300]!r}"
            records.append(dict(offset=int(m.group(1)), ts_type=m.group(2), ts=int(m.group(3)),
                                key_size=int(m.group(4)), value_size=int(m.group(5)),
                                header_keys=m.group(7).split(",") if m.group(7) else [],
                                key=m.group(8), payload=m.group(9)))
    return batches, records
