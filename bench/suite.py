#!/usr/bin/env python3
"""Runnel vs Apache Kafka 4.1.1 benchmark suite (see bench/README.md). Run it as

    bash bench/run [--runs N] [--quick] [--only 1,2,...] [--out FILE]

Each run starts a fresh Runnel broker, runs the selected scenarios, stops it, then does the
same with a fresh Kafka broker (R, K, R, K, ...); the table shows the median over the runs.
Progress goes to stderr, the markdown table (and the machine's limits) to stdout."""

import argparse
import atexit
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RUNNEL = ROOT / "target" / "release" / "runnel"
JAVA_DIR = ROOT / "tests" / "interop" / "java"
JAVA_CP = str(JAVA_DIR / "lib") + "/*"
KAFKA_SH = JAVA_DIR / "kafka-as-runnel.sh"
CLIENTS = BENCH / "clients.py"
LATENCY_C = ROOT / "target" / "bench" / "latency"  # built by bench/run from bench/latency.c
CLK_TCK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30
T0 = time.monotonic()

# Kafka's broker JVM as its own start script gives it: kafka-server-start.sh's heap and
# kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS (Kafka 4.1), so the reference is Kafka
# with its default settings (kafka-as-runnel.sh alone runs a leaner JVM for the tests).
KAFKA_JVM_OPTS = ("-Xmx1G -Xms1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 "
                  "-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent "
                  "-XX:MaxInlineLevel=15 -Djava.awt.headless=true")
# Java tools: the heap kafka-producer-perf-test.sh / kafka-consumer-perf-test.sh use, quiet logs
JAVA_TOOL = ["java", "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", JAVA_CP]
PRODUCER_PROPS = ["acks=1", "linger.ms=5", "batch.size=65536"]
SCENARIOS = (1, 2, 3, 4, 5, 6, 7)
# Produce rows also run against librdkafka's mock cluster, the ceiling for their client.
MOCK_PRODUCE_ROWS = ((1, "1m.rps", "100 B"), (1, "1r.rps", "100 B"),
                     (2, "2m.rps", "1 KiB"), (2, "2r.rps", "1 KiB"))
MOCK_PRODUCERS = {"m": ("Python producer", "confluent-kafka"),
                  "r": ("runnel perf produce", "runnel perf produce")}
# Scenario 7 (not among the six): scenario 2 with the producer compressing, as most
# deployments run. The broker decompresses every batch to validate it, as Kafka does.
CODECS = (("7l", "lz4"), ("7z", "zstd"))

SIZES = {
    "default": dict(n100=2_000_000, n1k=500_000, warm_produce=(8, 2_000_000), warm_consume=16,
                    lat_warmup=5.0, lat_duration=20.0,
                    n_fsync=200_000, idle_topics=100, idle_parts=10, idle_wait=10.0, idle_settle=5.0,
                    iperf_secs=5, dd_mib=2048, dsync_count=2000, fsync_secs=3.0, step_timeout=600, runs=3,
                    touch_memory=True),
    "quick": dict(n100=50_000, n1k=20_000, warm_produce=(1, 10_000), warm_consume=1,
                  lat_warmup=2.0, lat_duration=5.0,
                  n_fsync=10_000, idle_topics=100, idle_parts=10, idle_wait=3.0, idle_settle=2.0,
                  iperf_secs=2, dd_mib=256, dsync_count=300, fsync_secs=1.0, step_timeout=240, runs=1,
                  touch_memory=False),
}

KINDS = ("runnel", "kafka")
LABEL = {"runnel": "Runnel", "kafka": "Kafka", "mock": "mock cluster"}
# Scenario 5 ÷ scenario 2 with the same client (derived from the medians).
FSYNC_RATIOS = ("5.vs2", "5r.vs2", "5m.vs2")
# Scenario 4's measurements: row id, client (table, sentences), command, linger.ms. linger.ms=1 is the
# suite's setting since it began; with it the client's own wait is most of Runnel's p99, so
# 4z runs the C client with linger.ms=0 (the Java client's default before Kafka 4.0, and
# what latency-minded applications set), where what the broker costs per request shows.
LATENCY_VARIANTS = (
    ("4", "confluent-kafka (Python)", "the Python client", [sys.executable, str(CLIENTS), "latency"], 1),
    ("4c", "librdkafka from C (bench/latency.c)", "the C client", [str(LATENCY_C)], 1),
    ("4z", "librdkafka from C (bench/latency.c)", "the C client at linger.ms=0", [str(LATENCY_C)], 0))
LATENCY_ROWS = tuple(v[0] for v in LATENCY_VARIANTS)
# Row id -> the client as the report's sentences name it.
LATENCY_SHORT = {v[0]: v[2] for v in LATENCY_VARIANTS}
# The rows of one latency measurement (scenario 4, 4c and 4z).
LATENCY_KEYS = ("p50", "p99", "p999", "qp99", "rtt99", "rate", "steal")


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StepError(Exception):
    """A measured step failed; the message goes into the table cell."""


class BrokerDied(StepError):
    pass


# --------------------------------------------------------------------------------------------
# processes we start (and must stop)

_CHILDREN: set = set()  # live client Popen objects
_BROKERS: set = set()   # live Broker objects


def _cleanup() -> None:
    for p in list(_CHILDREN):
        try:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the group id is its pid
        except OSError:
            pass
        _CHILDREN.discard(p)
    for b in list(_BROKERS):
        try:
            b.stop()
        except Exception as e:  # noqa: BLE001
            log(f"stopping {b.kind}: {e}")


atexit.register(_cleanup)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime (fields 14, 15)


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise StepError("no VmRSS")


SAMPLE_S = 0.05  # how often `Suite.measured` samples the client's and the broker's CPU


def busiest_window(samples: list, work_s: float, cpus: int) -> tuple:
    """From (seconds, client CPU s, broker CPU s) samples, the client's and the broker's
    shares of `cpus` CPUs over the span of at least `work_s` seconds in which the client
    used the most CPU; (None, None) without two samples that far apart."""
    best = (None, None)
    j = 0
    for i, (ti, ci, bi) in enumerate(samples):
        j = max(j, i + 1)
        while j < len(samples) and samples[j][0] - ti < work_s:
            j += 1
        if j == len(samples):
            if i == 0 and len(samples) > 1:  # shorter than work_s: the whole run
                j = len(samples) - 1
            else:
                break
        tj, cj, bj = samples[j]
        span = (tj - ti) * cpus
        if span > 0 and (best[0] is None or (cj - ci) / span > best[0]):
            best = ((cj - ci) / span, (bj - bi) / span)
    return best


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_steal() -> tuple:
    """(steal, total) jiffies of all CPUs from /proc/stat: time the hypervisor ran something
    else while this VM wanted to run (0 on bare metal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


def steal_pct(before: tuple, after: tuple) -> float:
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else 0.0


# --------------------------------------------------------------------------------------------
# kernel settings held for the run

class SettingHold:
    """One kernel setting (a file under /proc/sys or /sys), changed for the run and put back
    at exit: atexit, and main's `finally`, so also on Ctrl-C and SIGTERM. A second put-back
    changes nothing."""

    def __init__(self, path: Path):
        self.path = path
        self.old = None

    def current(self):
        """What the setting reads now, or None where this kernel has no such setting."""
        return self.path.read_text().strip() if self.path.exists() else None

    def set(self, value: str, was: str) -> str:
        """Writes `value` over `was` (what `current` just read) and returns what the setting
        then reads (the kernel may refuse or round it); the first `was` is what `release`
        puts back. Raises OSError."""
        self.path.write_text(value + "\n")
        if self.old is None:
            self.old = was
            atexit.register(self.release)
        return self.path.read_text().strip()

    def release(self) -> None:
        if self.old is None:
            return
        try:
            self.path.write_text(self.old + "\n")
        except OSError as e:
            log(f"could not put {self.path} back to {self.old}: {e}")
        self.old = None


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters/page_reporting_order")


def buddy_max_order(buddyinfo: str):
    """The largest order of free block the kernel keeps, from /proc/buddyinfo (each zone's
    line gives one count per order after "Node N, zone NAME")."""
    counts = [len(ln.split()) - 4 for ln in buddyinfo.splitlines() if ln.startswith("Node")]
    return max(counts) - 1 if counts and max(counts) > 0 else None


class PageReportingHold(SettingHold):
    """Free page reporting, held off for the run.

    A VM whose balloon device reports free pages (virtio-balloon, VIRTIO_BALLOON_F_REPORTING)
    hands free guest memory back to the host a few seconds after it is freed; the guest's
    next touch of such a page traps to the host, which backs and zeroes it again. Every
    broker writes what it is sent into fresh page-cache pages, so how long ago that memory
    was freed decided a large part of its CPU: on this project's VM, dd wrote 2 GiB into the
    page cache at 0.4-1.1 GB/s into memory freed seconds before and at 4.4-5.0 GB/s into
    memory freed a moment before, and one broker's CPU for the same produce run went from
    0.13 s to 0.5-0.78 s and back as the phases came and went. The kernel reports only free
    blocks of at least `page_reporting_order`; above the largest order it reports nothing."""

    def __init__(self):
        super().__init__(PAGE_REPORTING)

    def hold(self) -> dict:
        """Holds reporting off where it can; what it found and did, for the report."""
        was = self.current()
        if was is None:
            return {"present": False}
        info = {"present": True, "order_was": int(was)}
        try:
            top = buddy_max_order(Path("/proc/buddyinfo").read_text())
            if top is None:
                raise OSError("no zones in /proc/buddyinfo")
            order = int(self.set(str(top + 1), was))
            info.update(order=order, held=order > top)
        except OSError as e:
            info.update(held=False, error=f"{type(e).__name__}: {e}")
        return info


TCP_CONGESTION = Path("/proc/sys/net/ipv4/tcp_congestion_control")


class TcpCongestionHold(SettingHold):
    """The TCP congestion control new connections get, set for the run (Linux's own default,
    cubic, unless told otherwise).

    This project's VM defaults to bbr. BBR paces every connection; with no pacing qdisc
    (loopback has none) TCP paces by itself, arming a timer per burst, and on this VM that
    made a 64 KiB segment over loopback cost the sender about 35 µs: one read of 500 MB of
    Fetch answers from Runnel took about 7,000 timer interrupts (150 under cubic), ran at
    1.3-2.2 GB/s, and cost the broker 0.24-0.31 s of CPU (3.4-4.8 GB/s and 0.02-0.07 s
    under cubic; bench/README.md). Only connections opened after the change get it, so it
    is set before any broker starts."""

    def __init__(self):
        super().__init__(TCP_CONGESTION)

    def hold(self, want: str) -> dict:
        """Sets `want` where it can ("machine": keeps the machine's); what it found and did,
        for the report."""
        was = self.current()
        if was is None:
            return {"present": False}
        info = {"present": True, "was": was, "want": want}
        if want == "machine":
            return {**info, "now": was, "kept": True}
        if was == want:
            return {**info, "now": want}
        try:
            info["now"] = self.set(want, was)
        except OSError as e:
            info.update(now=info["was"], error=f"{type(e).__name__}: {e}")
        return info


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def touch_free_memory(reserve: int, timeout: float) -> dict:
    """Has a child process write one byte into every page of the memory the kernel could
    give it, less `reserve`, and exit: with reporting held off, the host then backs all of it
    before anything is timed, and no broker meets memory the host took back."""
    n = mem_available() - reserve
    if n < GIB:
        return {"gib": 0.0, "seconds": 0.0}
    t = time.monotonic()
    subprocess.run([sys.executable, "-c", "import sys; n = int(sys.argv[1]); b = bytearray(n); "
                    "b[::4096] = bytes([1]) * len(range(0, n, 4096))", str(n)],
                   check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    return {"gib": round(n / GIB, 2), "seconds": round(time.monotonic() - t, 2)}


def admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 10000})


class Broker:
    """A broker process: `runnel server`, Kafka via kafka-as-runnel.sh, or librdkafka's mock
    cluster (bench/clients.py mock-cluster)."""

    def __init__(self, kind: str, tmp: Path, tag: str):
        self.kind = kind
        self.dir = tmp / f"{kind}-{tag}"
        self.dir.mkdir(parents=True)
        self.proc = None
        self.port = None
        self.bootstrap = None
        self.log_path = self.dir / "broker.log"
        self.stop_info = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float) -> float:
        t = time.monotonic()
        logf = open(self.log_path, "wb")
        if self.kind == "mock":
            self.proc = subprocess.Popen([sys.executable, str(CLIENTS), "mock-cluster"], cwd=ROOT,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf,
                                         text=True, start_new_session=True)
            _BROKERS.add(self)
            line = self.proc.stdout.readline().strip()
            if not line.startswith("BOOTSTRAP "):
                raise StepError(f"mock cluster did not start: {line or self.tail()}")
            self.bootstrap = line.split()[1]
            return time.monotonic() - t
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        data = self.dir / "data"
        if self.kind == "runnel":
            # kafka-as-runnel.sh sets group.initial.rebalance.delay.ms=0 for Kafka: same here
            cmd = [str(RUNNEL), "server", "--listeners", listeners, "--log-dirs", str(data),
                   "--override", "group.initial.rebalance.delay.ms=0"]
        else:
            cmd = ["bash", str(KAFKA_SH), "server", "--listeners", listeners, "--log-dirs", str(data)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "KAFKA_JVM_OPTS": KAFKA_JVM_OPTS})
        _BROKERS.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise StepError(f"{self.kind} exited with {self.proc.returncode} at start: {self.tail()}")
            if time.monotonic() > deadline:
                raise StepError(f"{self.kind} not ready within {timeout:.0f}s: {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            try:
                admin(self.bootstrap).list_topics(timeout=3)  # a metadata request answered
                return time.monotonic() - t
            except Exception:  # noqa: BLE001
                time.sleep(0.3)

    def tail(self, n: int = 3) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-n:])[-300:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def death(self) -> str:
        rc = self.proc.returncode
        why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        errs = [ln for ln in lines if re.search(r"panic|ERROR|FATAL|Exception", ln)]
        return f"{LABEL[self.kind]} broker died ({why})" + (f": {errs[-1][-200:]}" if errs else "")

    def check_alive(self) -> None:
        if not self.alive():
            raise BrokerDied(self.death())

    def cpu(self) -> float:
        self.check_alive()
        return proc_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        self.check_alive()
        return proc_rss_kib(self.pid)

    def create_topic(self, name: str, partitions: int = 6, config: dict | None = None) -> None:
        if self.kind == "mock":
            self.proc.stdin.write(f"create {name} {partitions}\n")
            self.proc.stdin.flush()
            ans = self.proc.stdout.readline().strip()
            if ans != "ok":
                raise StepError(f"mock create topic {name}: {ans}")
            return
        create_topics(self.bootstrap, [name], partitions, config)

    def stop(self) -> None:
        if self.proc is None:
            return
        t = time.monotonic()
        if self.proc.poll() is None:
            if self.kind == "mock":
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
            else:
                self.proc.send_signal(signal.SIGTERM)
            killed = False
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                log(f"{self.kind} (pid {self.pid}) did not stop within 60 s of SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(10)
                killed = True
            self.stop_info = {"rc": self.proc.returncode, "seconds": round(time.monotonic() - t, 1), "killed": killed}
        elif self.stop_info is None:
            self.stop_info = {"rc": self.proc.returncode, "seconds": 0.0, "killed": False, "already_exited": True}
        _BROKERS.discard(self)


def stored_records(bootstrap: str, topic: str) -> int:
    """Sum of the partitions' high watermarks (what the broker says it stored)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check", "log_level": 0})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi
        return total
    finally:
        c.close()


def create_topics(bootstrap: str, names: list, partitions: int, config: dict | None = None,
                  timeout: float = 120) -> None:
    from confluent_kafka.admin import NewTopic
    a = admin(bootstrap)
    for i in range(0, len(names), 25):
        chunk = names[i:i + 25]
        fs = a.create_topics([NewTopic(n, partitions, 1, config={k: str(v) for k, v in (config or {}).items()})
                              for n in chunk], request_timeout=60)
        for n, f in fs.items():
            try:
                f.result(timeout)
            except Exception as e:  # noqa: BLE001
                raise StepError(f"create topic {n}: {e}") from None
    # wait until metadata shows every partition with a leader
    deadline = time.monotonic() + timeout
    want = set(names)
    while True:
        md = a.list_topics(timeout=10)
        ready = {n for n in want if n in md.topics and md.topics[n].error is None
                 and len(md.topics[n].partitions) == partitions
                 and all(p.leader >= 0 for p in md.topics[n].partitions.values())}
        if ready == want:
            return
        if time.monotonic() > deadline:
            raise StepError(f"{len(want - ready)} topics without leaders after {timeout:.0f}s")
        time.sleep(0.2)


class RssSampler:
    """VmRSS of a pid every 0.5 s in a thread; `.stop()` returns the peak (KiB)."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.pid, self.interval, self.peak, self.samples = pid, interval, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            try:
                self.peak = max(self.peak, proc_rss_kib(self.pid))
                self.samples += 1
            except Exception:  # noqa: BLE001
                pass
            if self._stop.wait(self.interval):
                return

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


# --------------------------------------------------------------------------------------------
# running client tools


def run_client(cmd: list, timeout: float, logdir: Path, name: str, on_start=None) -> str:
    """Run a client to completion; its stdout, or StepError with a reason. `on_start` is
    called with the client's pid once it is started."""
    out_p, err_p = logdir / f"{name}.out", logdir / f"{name}.err"
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        p = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=err, start_new_session=True)
        _CHILDREN.add(p)
        if on_start is not None:
            on_start(p.pid)
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise StepError(f"timed out after {timeout:.0f}s") from None
        finally:
            if p.poll() is None:  # interrupted (SIGTERM / Ctrl-C): don't leave the client behind
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
            _CHILDREN.discard(p)
    stdout = out_p.read_text(errors="replace")
    if rc != 0:
        raise StepError(f"exit {rc}: {error_reason(stdout, err_p.read_text(errors='replace'))}")
    return stdout


def error_reason(stdout: str, stderr: str) -> str:
    for line in stdout.splitlines()[::-1]:
        if line.startswith("{") and '"error' in line:
            try:
                d = json.loads(line)
                return str(d.get("error") or d.get("error_samples"))[:160]
            except ValueError:
                pass
    lines = [ln.strip() for ln in (stderr + "\n" + stdout).splitlines() if ln.strip()]
    keyed = [ln for ln in lines if re.search(r"error|exception|fail", ln, re.I)]
    pick = (keyed or lines or ["no output"])[-1]
    return pick[:160]


PP_RE = re.compile(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\),"
                   r" ([\d.]+) ms avg latency, ([\d.]+) ms max latency")


def parse_perf_produce(stdout: str, n: int) -> dict:
    """Final summary line of ProducerPerformance / runnel perf produce."""
    m = None
    for line in stdout.splitlines():
        mm = PP_RE.search(line)
        if mm:
            m = mm
    if not m:
        raise StepError("no summary line: " + (stdout.strip().splitlines() or ["empty output"])[-1][:120])
    sent = int(m.group(1))
    if sent != n:
        raise StepError(f"only {sent} of {n} records sent")
    pct = re.findall(r"([\d.]+) ms (50th|95th|99th|99\.9th)", stdout.splitlines()[-1])
    return {"records_per_sec": float(m.group(2)), "avg_latency_ms": float(m.group(4)),
            "max_latency_ms": float(m.group(5)), **{f"p{k}_ms": float(v) for v, k in pct}}


def parse_perf_consume(stdout: str, n: int) -> dict:
    """ConsumerPerformance / runnel perf consume: a CSV header line and a values line."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "MB.sec" in ln and i + 1 < len(lines):
            keys = [k.strip() for k in ln.split(",")]
            vals = [v.strip() for v in lines[i + 1].split(",")]
            d = dict(zip(keys, vals))
            got = int(float(d["data.consumed.in.nMsg"]))
            if got < n:
                raise StepError(f"only {got} of {n} records consumed")
            return d
    raise StepError("no result line: " + (lines or ["empty output"])[-1][:120])


# --------------------------------------------------------------------------------------------
# results

class Results:
    def __init__(self):
        self.entries = []  # dicts: row, kind, run, value | error, cpu_s_per_gib, extra

    def ok(self, row, kind, run, value, cpu=None, **extra):
        extra.pop("cpu_per_gib", None)
        extra.pop("_samples", None)  # raw CPU samples stay out of the stored results
        self.entries.append({"row": row, "kind": kind, "run": run, "value": value,
                             "cpu_s_per_gib": cpu, "error": None, **extra})

    def fail(self, rows, kind, run, reason):
        for row in rows:
            self.entries.append({"row": row, "kind": kind, "run": run, "value": None,
                                 "cpu_s_per_gib": None, "error": str(reason)})

    def get(self, row, kind):
        return [e for e in self.entries if e["row"] == row and e["kind"] == kind]

    def run_ratios(self, row) -> list:
        """Runnel's figure ÷ Kafka's, run by run: the two ran one after the other in each
        run, so the spread of these shows how far the machine's noise moves the median."""
        def by_run(kind):
            return {e["run"]: e["value"] for e in self.get(row, kind)
                    if e["error"] is None and isinstance(e["value"], (int, float)) and not math.isnan(e["value"])}
        r, k = by_run("runnel"), by_run("kafka")
        return [r[i] / k[i] for i in sorted(r) if k.get(i)]

    def ratio_range(self, row):
        """The lowest and highest of `run_ratios`, or None with fewer than two runs."""
        per_run = self.run_ratios(row)
        return (min(per_run), max(per_run)) if len(per_run) > 1 else None

    def median(self, row, kind, key="value"):
        vals = [e[key] for e in self.get(row, kind) if e["error"] is None and e[key] is not None
                and not (isinstance(e[key], float) and math.isnan(e[key]))]
        return statistics.median(vals) if vals else None


# rows of the table: id, scenario, metric, format, "higher is better"
def row_specs(cfg) -> list:
    n100, n1k = cfg["n100"], cfg["n1k"]
    pp = "Kafka ProducerPerformance"
    rows = []

    def add(rid, scen, label, metric, fmt):
        rows.append({"id": rid, "scenario": scen, "label": label, "metric": metric, "fmt": fmt})

    for s, size, n in ((1, "100 B", n100), (2, "1 KiB", n1k)):
        add(f"{s}.rps", s, f"{s}. produce {size} acks=1, {pp}", "records/s", "int")
        add(f"{s}.mbs", s, f"{s}. produce {size} acks=1, {pp}", "MB/s", "f1")
        add(f"{s}r.rps", s, f"{s}r. produce {size} acks=1, runnel perf produce", "records/s", "int")
        add(f"{s}r.mbs", s, f"{s}r. produce {size} acks=1, runnel perf produce", "MB/s", "f1")
        add(f"{s}m.rps", s, f"{s}m. produce {size} acks=1, confluent-kafka (Python)", "records/s", "int")
    add("3.fetch", 3, "3. consume scenario 2's 1 KiB records, Kafka ConsumerPerformance", "MB/s (fetch, excl. group join)", "f1")
    add("3.total", 3, "3. consume scenario 2's 1 KiB records, Kafka ConsumerPerformance", "MB/s (incl. group join)", "f1")
    add("3r.mbs", 3, "3r. consume scenario 2's 1 KiB records, runnel perf consume", "MB/s", "f1")
    add("3m.mbs", 3, "3m. consume scenario 2's 1 KiB records, confluent-kafka (Python)", "MB/s", "f1")
    add("3p.mbs", 3, "3p. consume scenario 2's 1 KiB records, a minimal Fetch loop (Python, batch headers only)",
        "MB/s", "f1")
    for r, client, _, _, linger in LATENCY_VARIANTS:
        lat = f"{r}. end-to-end latency, 1 KiB at {cfg['lat_rate']:g} MB/s, {client}, linger.ms={linger}"
        add(f"{r}.p50", 4, lat, "p50 ms", "f2")
        add(f"{r}.p99", 4, lat, "p99 ms", "f2")
        add(f"{r}.p999", 4, lat, "p99.9 ms", "f2")
        add(f"{r}.qp99", 4, lat, "of which in the producer before its request is written: p99 ms "
            "(librdkafka's int_latency)", "f2")
        add(f"{r}.rtt99", 4, lat, "produce round trip p99 ms (librdkafka's rtt)", "f2")
        add(f"{r}.rate", 4, lat, "achieved MB/s", "f1")
        add(f"{r}.steal", 4, lat, "CPU steal % (hypervisor) during the run", "f1")
    fs = "5. produce 1 KiB acks=all, flush.messages=1 (fsync per batch), " + pp
    add("5.rps", 5, fs, "records/s", "int")
    add("5.mbs", 5, fs, "MB/s", "f1")
    add("5.vs2", 5, fs, "÷ scenario 2 records/s (same broker)", "f3")
    fs = "5r. produce 1 KiB acks=all, flush.messages=1 (fsync per batch), runnel perf produce"
    add("5r.rps", 5, fs, "records/s", "int")
    add("5r.mbs", 5, fs, "MB/s", "f1")
    add("5r.vs2", 5, fs, "÷ scenario 2r records/s (same broker, same client)", "f3")
    fs = "5m. produce 1 KiB acks=all, flush.messages=1 (fsync per batch), confluent-kafka (Python)"
    add("5m.rps", 5, fs, "records/s", "int")
    add("5m.vs2", 5, fs, "÷ scenario 2m records/s (same broker, same client)", "f3")
    for rid, codec in CODECS:
        label = f"{rid}. produce 1 KiB acks=1 compression.type={codec}, {pp}"
        add(f"{rid}.rps", 7, label, "records/s", "int")
        add(f"{rid}.mbs", 7, label, "MB/s (uncompressed)", "f1")
    add("6.peak", 6, "6. broker memory", "peak RSS MiB during scenario 2", "int")
    add("6.empty", 6, "6. broker memory", "RSS MiB, fresh broker, idle, no topics", "int")
    add("6.idle", 6, "6. broker memory",
        f"RSS MiB, idle {cfg['idle_wait']:g} s after creating {cfg['idle_topics'] * cfg['idle_parts']:,} partitions", "int")
    add("6.create", 6, "6. broker memory",
        f"s to create {cfg['idle_topics']} topics × {cfg['idle_parts']} partitions", "f2")
    add("6.idlecpu", 6, "6. broker memory", f"broker CPU s during those {cfg['idle_wait']:g} s idle", "f2")
    add("6.stop", 6, "6. broker memory", "s to shut down (SIGTERM) with those partitions", "f2")
    return rows


def fmt_num(v, fmt) -> str:
    if v is None:
        return "—"
    if fmt == "int":
        return f"{v:,.0f}"
    if fmt == "f1":
        return f"{v:,.1f}"
    if fmt == "f2":
        return f"{v:,.2f}"
    return f"{v:,.3f}"


def short(reason: str, n: int = 90) -> str:
    reason = " ".join(str(reason).split()).replace("|", "/")
    return reason if len(reason) <= n else reason[: n - 1] + "…"


# --------------------------------------------------------------------------------------------
# the suite

class Suite:
    def __init__(self, args, cfg, tmp: Path):
        self.args, self.cfg, self.tmp = args, cfg, tmp
        self.only = args.only
        self.res = Results()
        self.limits = {}
        self.sessions = []  # broker start/stop info for the raw JSON
        self.cpus = os.cpu_count()
        self.page_reporting = PageReportingHold()
        self.tcp_congestion = TcpCongestionHold()

    def sel(self, s: int) -> bool:
        return s in self.only

    # one measured client run: CPU of the broker and of the client(s) around it
    def measured(self, b: Broker, cmd: list, name: str, nbytes: int, logdir: Path):
        """Runs a client; the CPU the broker and the client used, and (under "_samples",
        for `busiest`) both sampled every SAMPLE_S while it ran."""
        os.sync()  # the previous step's dirty pages should not be written back during this one
        c0, k0, t = b.cpu(), children_cpu(), time.monotonic()
        samples = [(0.0, 0.0, 0.0)]  # (s since start, client CPU s, broker CPU s)
        stop, threads = threading.Event(), []

        def sample(pid):
            def loop():
                while not stop.wait(SAMPLE_S):
                    try:
                        at, client, broker = time.monotonic() - t, proc_cpu_seconds(pid), b.cpu() - c0
                    except (OSError, ValueError, IndexError, BrokerDied):
                        return  # the client (or broker) is gone: the last sample is taken below
                    if client >= samples[-1][1]:  # an exiting client's counts can drop
                        samples.append((at, client, broker))
            threads.append(threading.Thread(target=loop, daemon=True))
            threads[-1].start()
        try:
            out = run_client(cmd, self.cfg["step_timeout"], logdir, name, on_start=sample)
        finally:
            stop.set()
            for th in threads:
                th.join()
        wall = time.monotonic() - t
        c1, k1 = b.cpu(), children_cpu()
        cpu = c1 - c0
        samples.append((wall, k1 - k0, cpu))
        return out, {"broker_cpu_s": round(cpu, 2), "client_cpu_s": round(k1 - k0, 2), "wall_s": round(wall, 2),
                     "bytes": nbytes, "cpu_per_gib": cpu / (nbytes / GIB) if nbytes else None,
                     "_samples": samples}

    def busiest(self, m: dict, work_s: float) -> dict:
        """`m` from `measured`, with the client's and the broker's shares of the CPUs over the
        `work_s` seconds the client itself timed (its own figure's span) in place of the
        samples: the whole run's shares include start-up and group joins."""
        client, broker = busiest_window(m.pop("_samples"), work_s, self.cpus or 1)
        if client is not None:
            m.update(client_busy=round(client, 3), broker_busy=round(broker, 3), work_s=round(work_s, 3))
        return m

    def pp(self, b, topic, n, size, props=PRODUCER_PROPS):
        return [*JAVA_TOOL, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
                "--num-records", n, "--record-size", size, "--throughput", "-1",
                "--producer-props", f"bootstrap.servers={b.bootstrap}", *props]

    def rp(self, b, topic, n, size, props=PRODUCER_PROPS):
        return [RUNNEL, "--bootstrap-server", b.bootstrap, "perf", "produce", "--topic", topic,
                "--num-records", n, "--record-size", size, "--producer-props", *props]

    def rc(self, b, topic, n):
        return [RUNNEL, "--bootstrap-server", b.bootstrap, "perf", "consume", "--topic", topic, "--messages", n]

    def py(self, b, topic, n, size, acks="1"):
        return [sys.executable, CLIENTS, "produce", "--bootstrap", b.bootstrap, "--topic", topic,
                "--num-records", n, "--record-size", size, "--acks", acks]

    def check_stored(self, b, kind, topic, n) -> int:
        """The broker must hold every record the client says was acknowledged."""
        stored = stored_records(b.bootstrap, topic)
        if stored < n:
            raise StepError(f"client reported {n} records sent, broker's high watermarks sum to {stored}")
        if stored > n:  # producer retries without idempotence may duplicate: not a loss
            log(f"  {LABEL[kind]} {topic}: {stored - n} more records stored than sent (retried batches?)")
        return stored

    def step(self, b, kind, run, rows, fn):
        """Run one step; on failure mark its rows failed. Re-raises BrokerDied."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            if b is not None and not b.alive():
                e = BrokerDied(b.death())  # the client's error is a consequence
            reason = str(e) if isinstance(e, StepError) else f"{type(e).__name__}: {e}"
            log(f"  {LABEL[kind]} {rows[0]}: failed: {reason}")
            self.res.fail(rows, kind, run, reason)
        if b is not None and not b.alive():
            raise BrokerDied(b.death())

    def produce_rows(self, b, kind, run, prefix, tool, topic, n, size, logdir, acks="1", config=None,
                     extra_props=()):
        """ProducerPerformance / runnel perf produce / the Python producer: records/s, MB/s.
        `acks` and the topic `config` are scenario 5's (acks=all, flush.messages=1);
        `extra_props` scenario 7's compression.type (ProducerPerformance only)."""
        props = [f"acks={acks}", *PRODUCER_PROPS[1:], *extra_props]
        def go():
            b.create_topic(topic, config=config)
            if tool == "py":
                out, m = self.measured(b, self.py(b, topic, n, size, acks), prefix, n * size, logdir)
                d = json.loads(out.strip().splitlines()[-1])
                rps, extra = d["records_per_sec"], {}
            else:
                cmd = (self.pp(b, topic, n, size, props) if tool == "pp"
                       else self.rp(b, topic, n, size, props))
                out, m = self.measured(b, cmd, prefix, n * size, logdir)
                extra = parse_perf_produce(out, n)
                rps = extra.pop("records_per_sec")
            m = self.busiest(m, n / rps if rps else 0.0)
            if kind != "mock":
                extra["stored"] = self.check_stored(b, kind, topic, n)
            self.res.ok(f"{prefix}.rps", kind, run, rps, m["cpu_per_gib"], **m, **extra)
            if tool != "py":
                self.res.ok(f"{prefix}.mbs", kind, run, rps * size / 1e6, m["cpu_per_gib"], **m)
            p99 = f", p99 {extra['p99th_ms']} ms" if "p99th_ms" in extra else ""
            log(f"  {LABEL[kind]} {prefix}: {rps:,.0f} records/s, {rps * size / 1e6:,.1f} MB/s, "
                f"broker CPU {m['broker_cpu_s']:.2f} s ({m['cpu_per_gib']:.2f} s/GiB), "
                f"client CPU {m['client_cpu_s']:.2f} s{p99}")
        rows = [f"{prefix}.rps"] + ([f"{prefix}.mbs"] if tool != "py" else [])
        self.step(b, kind, run, rows, go)

    def main_session(self, kind: str, run: int) -> None:
        cfg = self.cfg
        b = Broker(kind, self.tmp, f"run{run}")
        logdir = b.dir
        want = [s for s in SCENARIOS if self.sel(s)]
        planned = [r["id"] for r in self.rows if r["scenario"] in want and r["id"] not in
                   ("6.empty", "6.idle", "6.create", "6.idlecpu", "6.stop", *FSYNC_RATIOS)]
        log(f"run {run}/{self.runs}: starting {LABEL[kind]} for scenarios {','.join(map(str, want))}")
        info = {"kind": kind, "run": run, "session": "main"}
        self.sessions.append(info)
        try:
            info["start_s"] = round(b.start(cfg["start_timeout"]), 1)
            info["pid"] = b.pid
            log(f"  {LABEL[kind]} ready on {b.bootstrap} in {info['start_s']} s (pid {b.pid})")
            self.run_scenarios(b, kind, run, logdir, info)
        except BrokerDied as e:
            log(f"  {LABEL[kind]}: {e}")
            done = {(e_["row"]) for e_ in self.res.entries if e_["kind"] == kind and e_["run"] == run}
            self.res.fail([r for r in planned if r not in done], kind, run, e)
        except StepError as e:  # start failed
            log(f"  {LABEL[kind]}: {e}")
            self.res.fail(planned, kind, run, e)
        finally:
            b.stop()
            info["stop"] = b.stop_info
            log(f"  {LABEL[kind]} stopped: {b.stop_info}")
            if not self.args.keep:
                shutil.rmtree(b.dir / "data", ignore_errors=True)

    def warm_up(self, b: Broker, kind: str, logdir: Path, info: dict) -> None:
        """Untimed passes of produce and consume work before the timed steps, the same for
        both brokers. Kafka's JVM compiles its produce and fetch paths as they run. Here, back
        to back passes of `runnel perf produce` (2M × 100 B) took its broker 2.73 s of CPU in
        the first pass and 0.52 s in the eighth (103 → 279 MB/s), and passes of `runnel perf
        consume` (500k × 1 KiB) 0.40 s in the first and 0.11–0.15 s from the twelfth (1.2 →
        2.0–2.9 GB/s); Runnel's stayed level. The 300k records produced before timing
        scenario 3 until 2026-12-05 left Kafka's fetch path at about half its speed.
        Each pass's MB/s and broker CPU go to the log and to `info["warmup"]`."""
        cfg, passes = self.cfg, []
        info["warmup"] = passes

        def one(what, cmd, nbytes, parse):
            out, m = self.measured(b, cmd, f"warmup-{what}{len(passes)}", nbytes, logdir)
            m.pop("_samples")
            mbs = parse(out)
            passes.append({"what": what, "mbs": round(mbs, 1), "broker_cpu_s": m["broker_cpu_s"]})
            log(f"  {LABEL[kind]} warm-up {what} pass: {mbs:,.1f} MB/s, broker CPU {m['broker_cpu_s']:.2f} s")

        n_passes, n = cfg["warm_produce"]
        b.create_topic("bench-warmup")
        for _ in range(n_passes):
            one("produce", self.rp(b, "bench-warmup", n, 100), n * 100,
                lambda out: parse_perf_produce(out, n)["records_per_sec"] * 100 / 1e6)
        n1k = cfg["n1k"]
        b.create_topic("bench-warmup-1k")
        run_client(self.rp(b, "bench-warmup-1k", n1k, 1024), cfg["step_timeout"], logdir, "warmup-1k")
        for _ in range(cfg["warm_consume"]):
            one("consume", self.rc(b, "bench-warmup-1k", n1k), n1k * 1024,
                lambda out: float(parse_perf_consume(out, n1k)["MB.sec"]) * 1.048576)

    def run_scenarios(self, b: Broker, kind: str, run: int, logdir: Path, info: dict) -> None:
        cfg = self.cfg
        n100, n1k = cfg["n100"], cfg["n1k"]
        if cfg.get("warm_produce"):
            self.step(b, kind, run, ["warmup"], lambda: self.warm_up(b, kind, logdir, info))

        if self.sel(1):
            self.produce_rows(b, kind, run, "1", "pp", "s1-pp", n100, 100, logdir)
            self.produce_rows(b, kind, run, "1r", "rp", "s1-rp", n100, 100, logdir)
            self.produce_rows(b, kind, run, "1m", "py", "s1-py", n100, 100, logdir)

        s2_topic = None
        if self.sel(2) or self.sel(3) or self.sel(6):
            sampler = RssSampler(b.pid)
            try:
                self.produce_rows(b, kind, run, "2", "pp", "s2-pp", n1k, 1024, logdir)
                if any(e["row"] == "2.rps" and e["kind"] == kind and e["run"] == run and e["error"] is None
                       for e in self.res.entries):
                    s2_topic = "s2-pp"
                if self.sel(2):
                    self.produce_rows(b, kind, run, "2r", "rp", "s2-rp", n1k, 1024, logdir)
                    self.produce_rows(b, kind, run, "2m", "py", "s2-py", n1k, 1024, logdir)
            finally:
                peak = sampler.stop()
            if self.sel(6):
                if peak:
                    self.res.ok("6.peak", kind, run, peak / 1024, None, samples=sampler.samples)
                    log(f"  {LABEL[kind]} 6: peak RSS during scenario 2: {peak / 1024:,.0f} MiB")
                else:
                    self.res.fail(["6.peak"], kind, run, "no RSS sample")
            if not self.sel(2):  # scenario 2 ran only to feed 3 / 6
                self.res.entries = [e for e in self.res.entries
                                    if not (e["kind"] == kind and e["run"] == run and e["row"] in ("2.rps", "2.mbs"))]

        if self.sel(3):
            def consume():
                if s2_topic is None:
                    raise StepError("scenario 2's produce failed: nothing to consume")
                cmd = [*JAVA_TOOL, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server",
                       b.bootstrap, "--topic", s2_topic, "--messages", n1k, "--group", f"bench-cp-{run}"]
                out, m = self.measured(b, cmd, "3", n1k * 1024, logdir)
                d = parse_perf_consume(out, n1k)
                mib = 1.048576  # the tools print MiB
                fetch, total = float(d["fetch.MB.sec"]) * mib, float(d["MB.sec"]) * mib
                m = self.busiest(m, float(d["fetch.time.ms"]) / 1000)
                self.res.ok("3.fetch", kind, run, fetch, m["cpu_per_gib"], **m, raw=d)
                self.res.ok("3.total", kind, run, total, m["cpu_per_gib"], **m)
                log(f"  {LABEL[kind]} 3: {fetch:,.1f} MB/s fetch, {total:,.1f} MB/s incl. group join "
                    f"({d.get('rebalance.time.ms')} ms), broker CPU {m['cpu_per_gib']:.2f} s/GiB")
            self.step(b, kind, run, ["3.fetch", "3.total"], consume)

            def consume_r():
                if s2_topic is None:
                    raise StepError("scenario 2's produce failed: nothing to consume")
                cmd = self.rc(b, s2_topic, n1k)
                out, m = self.measured(b, cmd, "3r", n1k * 1024, logdir)
                d = parse_perf_consume(out, n1k)
                v = float(d["MB.sec"]) * 1.048576
                m = self.busiest(m, n1k * 1024 / (v * 1e6) if v else 0.0)
                self.res.ok("3r.mbs", kind, run, v, m["cpu_per_gib"], **m, raw=d)
                log(f"  {LABEL[kind]} 3r: {v:,.1f} MB/s, broker CPU {m['cpu_per_gib']:.2f} s/GiB")
            self.step(b, kind, run, ["3r.mbs"], consume_r)

            def consume_py(row, args):
                """A consumer from bench/clients.py that prints one JSON line with the records
                it read and their MB/s."""
                if s2_topic is None:
                    raise StepError("scenario 2's produce failed: nothing to consume")
                cmd = [sys.executable, CLIENTS, *args, "--bootstrap", b.bootstrap, "--topic", s2_topic,
                       "--num-records", n1k]
                out, m = self.measured(b, cmd, row, n1k * 1024, logdir)
                d = json.loads(out.strip().splitlines()[-1])
                if d.get("records") != n1k:  # fewer, or the same records more than once
                    raise StepError(f"read {d.get('records')} of {n1k} records")
                v = d["mb_per_sec"]
                m = self.busiest(m, n1k * 1024 / (v * 1e6) if v else 0.0)
                self.res.ok(f"{row}.mbs", kind, run, v, m["cpu_per_gib"], **m, raw=d)
                log(f"  {LABEL[kind]} {row}: {v:,.1f} MB/s, broker CPU {m['cpu_per_gib']:.2f} s/GiB, "
                    f"client CPU {m['client_cpu_s']:.2f} s")

            self.step(b, kind, run, ["3m.mbs"], lambda: consume_py("3m", ["consume"]))
            # Not a client users run: what the broker serves when its client costs almost
            # nothing (no CRC, no records decoded), beside the real clients above.
            self.step(b, kind, run, ["3p.mbs"],
                      lambda: consume_py("3p", ["fetch-loop", "--partitions", 6, "--record-size", 1024]))

        if self.sel(4):
            self.latency_rows(b, kind, run, logdir)

        if self.sel(5):
            # fsync after every appended batch, acks=all: the same three clients
            n, fsync = cfg["n_fsync"], {"flush.messages": 1}
            self.produce_rows(b, kind, run, "5", "pp", "s5-fsync", n, 1024, logdir, "all", fsync)
            self.produce_rows(b, kind, run, "5r", "rp", "s5r-fsync", n, 1024, logdir, "all", fsync)
            self.produce_rows(b, kind, run, "5m", "py", "s5m-fsync", n, 1024, logdir, "all", fsync)

        if self.sel(7):
            # ProducerPerformance sends random capital letters in every record: zstd stores them
            # in about 62% of the space, LZ4 (no entropy coding) hardly compresses them at all.
            for rid, codec in CODECS:
                self.produce_rows(b, kind, run, rid, "pp", f"s{rid}-{codec}", cfg["n1k"], 1024, logdir,
                                  extra_props=[f"compression.type={codec}"])

    def idle_session(self, kind: str, run: int) -> None:
        cfg = self.cfg
        b = Broker(kind, self.tmp, f"idle{run}")
        rows = ["6.empty", "6.create", "6.idle", "6.idlecpu"]
        info = {"kind": kind, "run": run, "session": "idle"}
        self.sessions.append(info)
        log(f"run {run}/{self.runs}: starting a fresh {LABEL[kind]} for scenario 6 (idle memory)")
        try:
            info["start_s"] = round(b.start(cfg["start_timeout"]), 1)
            time.sleep(cfg["idle_settle"])
            rss0 = b.rss_kib()
            self.res.ok("6.empty", kind, run, rss0 / 1024)
            names = [f"idle-{i:03d}" for i in range(cfg["idle_topics"])]
            t = time.monotonic()
            c0 = b.cpu()
            create_topics(b.bootstrap, names, cfg["idle_parts"], timeout=cfg["step_timeout"])
            created = time.monotonic() - t
            self.res.ok("6.create", kind, run, created, None, broker_cpu_s=round(b.cpu() - c0, 2))
            c1 = b.cpu()
            time.sleep(cfg["idle_wait"])
            c2, rss = b.cpu(), b.rss_kib()
            self.res.ok("6.idle", kind, run, rss / 1024)
            self.res.ok("6.idlecpu", kind, run, c2 - c1)
            log(f"  {LABEL[kind]} 6: RSS {rss0 / 1024:,.0f} MiB empty, {rss / 1024:,.0f} MiB with "
                f"{len(names) * cfg['idle_parts']:,} partitions (created in {created:.1f} s), "
                f"idle CPU {c2 - c1:.2f} s in {cfg['idle_wait']:g} s")
        except Exception as e:  # noqa: BLE001
            log(f"  {LABEL[kind]} 6 (idle): failed: {e}")
            done = {e_["row"] for e_ in self.res.entries if e_["kind"] == kind and e_["run"] == run}
            self.res.fail([r for r in rows if r not in done], kind, run, e)
        finally:
            stopped_at = time.monotonic()
            b.stop()
            info["stop"] = b.stop_info
            if not any(e_["row"] == "6.idle" and e_["kind"] == kind and e_["run"] == run and e_["error"] is None
                       for e_ in self.res.entries):
                self.res.fail(["6.stop"], kind, run, "scenario 6 did not get that far")
            elif b.stop_info and b.stop_info.get("killed"):
                self.res.fail(["6.stop"], kind, run, "did not stop within 60 s of SIGTERM (SIGKILL)")
            else:
                self.res.ok("6.stop", kind, run, time.monotonic() - stopped_at, None, rc=b.proc.returncode)
                log(f"  {LABEL[kind]} 6: shut down in {time.monotonic() - stopped_at:.1f} s (exit status {b.proc.returncode})")
            if not self.args.keep:
                shutil.rmtree(b.dir / "data", ignore_errors=True)

    def latency_rows(self, b, kind: str, run: int, logdir) -> None:
        """Scenario 4 against broker `b`: rows 4 (Python), 4c (C) and 4z (C, linger.ms=0)."""
        cfg = self.cfg
        # The same measurement with two clients: Python (confluent-kafka) and C (the
        # same librdkafka without the interpreter's own scheduling in the figure).
        for r, _, _, tool, linger in LATENCY_VARIANTS:
            def latency(r=r, tool=tool, linger=linger):
                if not Path(tool[0]).exists():
                    raise StepError(f"{tool[0]} is missing (bench/run builds it from bench/latency.c)")
                topic = f"s{r}-latency"
                b.create_topic(topic)
                cmd = tool + ["--bootstrap", b.bootstrap, "--topic", topic,
                              "--rate-mb", cfg["lat_rate"], "--record-size", 1024,
                              "--warmup", cfg["lat_warmup"], "--duration", cfg["lat_duration"],
                              "--linger-ms", linger]
                os.sync()
                c0, k0, st0 = b.cpu(), children_cpu(), cpu_steal()
                out = run_client(cmd, cfg["step_timeout"], logdir, r)
                cpu, ccpu = b.cpu() - c0, children_cpu() - k0
                steal = steal_pct(st0, cpu_steal())
                d = json.loads(out.strip().splitlines()[-1])
                per_gib = cpu / (d["bytes"] / GIB)
                m = {"broker_cpu_s": round(cpu, 2), "client_cpu_s": round(ccpu, 2), "bytes": d["bytes"]}
                for k, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("p999", "p999_ms"),
                               ("qp99", "producer_queue_p99_ms"), ("rtt99", "produce_rtt_p99_ms"),
                               ("rate", "window_mb_per_sec")):
                    if d.get(key, -1) < 0:
                        self.res.fail([f"{r}.{k}"], kind, run, "librdkafka reported no statistics")
                        continue
                    self.res.ok(f"{r}.{k}", kind, run, d[key], per_gib, **m,
                                **({"raw": d} if k == "p50" else {}))
                self.res.ok(f"{r}.steal", kind, run, steal, per_gib, **m)
                log(f"  {LABEL[kind]} {r}: p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, "
                    f"p99.9 {d['p999_ms']:.2f} ms, max {d['max_ms']:.1f} ms over {d['measured']:,} records "
                    f"at {d['window_mb_per_sec']:.1f} MB/s, client CPU {ccpu:.1f} s, CPU steal {steal:.1f}%")
            self.step(b, kind, run, [f"{r}.{k}" for k in LATENCY_KEYS], latency)

    def mock_session(self, run: int) -> None:
        cfg = self.cfg
        b = Broker("mock", self.tmp, f"run{run}")
        rows = ((["1m.rps", "1r.rps", "1r.mbs"] if self.sel(1) else [])
                + (["2m.rps", "2r.rps", "2r.mbs"] if self.sel(2) else [])
                + ([f"{r}.{k}" for r in LATENCY_ROWS for k in LATENCY_KEYS]
                   if self.sel(4) else []))
        log(f"run {run}/{self.runs}: librdkafka mock cluster")
        try:
            b.start(30)
            # The same producers against a broker that stores nothing. (Kafka's Java client
            # cannot use the mock cluster's Metadata answers; its consumers cannot read a
            # scenario 3's worth either: the mock keeps 5 MiB per partition.)
            if self.sel(1):
                self.produce_rows(b, "mock", run, "1m", "py", "s1-py", cfg["n100"], 100, b.dir)
                self.produce_rows(b, "mock", run, "1r", "rp", "s1-rp", cfg["n100"], 100, b.dir)
            if self.sel(2):
                self.produce_rows(b, "mock", run, "2m", "py", "s2-py", cfg["n1k"], 1024, b.dir)
                self.produce_rows(b, "mock", run, "2r", "rp", "s2-rp", cfg["n1k"], 1024, b.dir)
            if self.sel(4):
                # A floor for scenario 4: the same clients and rate against a broker that
                # does no work, so what is left is the clients and this machine.
                self.latency_rows(b, "mock", run, b.dir)
        except Exception as e:  # noqa: BLE001
            log(f"  mock cluster: failed: {e}")
            done = {e_["row"] for e_ in self.res.entries if e_["kind"] == "mock" and e_["run"] == run}
            self.res.fail([r for r in rows if r not in done], "mock", run, e)
        finally:
            b.stop()

    # machine limits ------------------------------------------------------------------------
    def measure_limits(self) -> None:
        cfg = self.cfg
        lim = self.limits
        log("machine limits: iperf3 loopback")
        try:
            if not shutil.which("iperf3"):
                raise StepError("iperf3 not installed")
            port = free_port()
            srv = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
            _CHILDREN.add(srv)
            try:
                time.sleep(0.5)
                out = None
                for _ in range(10):  # wait for the server to listen
                    try:
                        out = run_client(["iperf3", "-c", "127.0.0.1", "-p", port, "-t", cfg["iperf_secs"], "-J"],
                                         cfg["iperf_secs"] + 60, self.tmp, "iperf3")
                        break
                    except StepError as e:
                        if "connect" not in str(e).lower() and "refused" not in str(e).lower():
                            raise
                        time.sleep(0.5)
                if out is None:
                    raise StepError("iperf3 server did not come up")
                d = json.loads(out)
                bps = d["end"]["sum_received"]["bits_per_second"]
                lim["iperf3_gbit_per_sec"] = bps / 1e9
                log(f"  loopback TCP: {bps / 1e9:.1f} Gbit/s")
            finally:
                try:
                    srv.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(srv.pid, signal.SIGKILL)
                    srv.wait()
                _CHILDREN.discard(srv)
        except Exception as e:  # noqa: BLE001
            lim["iperf3_error"] = str(e)
            log(f"  iperf3 failed: {e}")

        f = self.tmp / "dd.bin"
        for key, extra, desc in (("dd_fdatasync_mb_per_sec", ["conv=fdatasync"], "with fdatasync"),
                                 ("dd_buffered_mb_per_sec", [], "buffered")):
            log(f"machine limits: dd {cfg['dd_mib']} MiB {desc}")
            try:
                os.sync()
                t, k0 = time.monotonic(), children_cpu()
                run_client(["dd", "if=/dev/zero", f"of={f}", "bs=1M", f"count={cfg['dd_mib']}", *extra],
                           cfg["step_timeout"], self.tmp, "dd")
                secs = time.monotonic() - t
                lim[key] = cfg["dd_mib"] * (1 << 20) / 1e6 / secs
                # dd's CPU per GiB (reading /dev/zero included): what writing into the page
                # cache costs a process on this machine, beside the brokers' CPU per GiB.
                lim[key.replace("mb_per_sec", "cpu_s_per_gib")] = (children_cpu() - k0) / (cfg["dd_mib"] / 1024)
                log(f"  {lim[key]:,.0f} MB/s")
            except Exception as e:  # noqa: BLE001
                lim[key.replace("mb_per_sec", "error")] = str(e)
            finally:
                f.unlink(missing_ok=True)
        log(f"machine limits: dd 64 KiB × {cfg['dsync_count']} with oflag=dsync")
        try:
            t = time.monotonic()
            run_client(["dd", "if=/dev/zero", f"of={f}", "bs=64k", f"count={cfg['dsync_count']}", "oflag=dsync"],
                       cfg["step_timeout"], self.tmp, "dd")
            secs = time.monotonic() - t
            lim["dd_dsync_writes_per_sec"] = cfg["dsync_count"] / secs
            lim["dd_dsync_mb_per_sec"] = cfg["dsync_count"] * 65536 / 1e6 / secs
            log(f"  {lim['dd_dsync_writes_per_sec']:,.0f} synchronous writes/s")
        except Exception as e:  # noqa: BLE001
            lim["dd_dsync_error"] = str(e)
        finally:
            f.unlink(missing_ok=True)
        # Scenario 5's own pattern: 6 logs, each fsynced after every appended batch (64 KiB),
        # or after four when group commit gathers them (256 KiB).
        for size in (65536, 262144):
            key = f"fsync_writers_{size // 1024}k"
            log(f"machine limits: 6 writers appending {size // 1024} KiB with an fdatasync after each")
            try:
                out = run_client([sys.executable, CLIENTS, "fsync-writers", "--dir", self.tmp, "--writers", 6,
                                  "--size", size, "--seconds", cfg["fsync_secs"]],
                                 cfg["step_timeout"], self.tmp, "fsync-writers")
                lim[key + "_mb_per_sec"] = json.loads(out.strip().splitlines()[-1])["mb_per_sec"]
                log(f"  {lim[key + '_mb_per_sec']:,.0f} MB/s")
            except Exception as e:  # noqa: BLE001
                lim[key + "_error"] = str(e)

    # ---------------------------------------------------------------------------------------
    def hold_memory(self) -> None:
        """Free page reporting off, then the free memory touched once (see
        PageReportingHold); what happened goes to the report."""
        info = self.page_reporting.hold()
        if not info.get("present"):
            log("free page reporting: not on this machine")
        elif not info.get("held"):
            log(f"free page reporting: on (order {info['order_was']}), could not hold it off: {info.get('error')}")
        else:
            log(f"free page reporting: held off for the run (page_reporting_order {info['order_was']} → "
                f"{info['order']}, put back at exit)")
            if self.cfg.get("touch_memory"):
                log("touching the free memory once")
                try:
                    info["touched"] = touch_free_memory(2 * GIB, self.cfg["step_timeout"])
                    log(f"  {info['touched']['gib']:.1f} GiB in {info['touched']['seconds']:.1f} s")
                except (subprocess.SubprocessError, OSError) as e:
                    info["touch_error"] = str(e)
                    log(f"  failed: {e}")
        self.limits["memory"] = info

    def hold_tcp_congestion(self) -> None:
        """The congestion control every connection of the run gets (TcpCongestionHold)."""
        want = self.cfg["tcp_congestion"]
        info = self.tcp_congestion.hold(want)
        if info.get("present"):
            log(f"TCP congestion control: {info['now']}" + (f" (the machine's {info['was']} put back at exit)"
                                                             if info["now"] != info["was"] else "")
                + (f"; could not set {want}: {info['error']}" if info.get("error") else ""))
        self.limits["tcp_congestion"] = info

    def run(self) -> None:
        self.rows = row_specs(self.cfg)
        self.runs = self.cfg["runs"]
        self.hold_tcp_congestion()
        self.hold_memory()
        if not self.args.no_limits:
            self.measure_limits()
        for run in range(1, self.runs + 1):
            # Which broker goes first swaps every run: the first steps after a start meet a
            # colder machine (fresh pages on a VM, caches), and neither broker should always
            # take that.
            for kind in (KINDS if run % 2 else KINDS[::-1]):
                if any(self.sel(s) for s in SCENARIOS):
                    self.main_session(kind, run)
                if self.sel(6):
                    self.idle_session(kind, run)
            if self.sel(1) or self.sel(2) or self.sel(4):
                self.mock_session(run)
        # derived: scenario 5 ÷ scenario 2, per broker and client, from the medians
        for row in FSYNC_RATIOS:
            s5, s2 = row.split(".")[0], "2" + row.split(".")[0][1:]
            for kind in KINDS:
                r5, r2 = self.res.median(f"{s5}.rps", kind), self.res.median(f"{s2}.rps", kind)
                if r5 is not None and r2:
                    self.res.ok(row, kind, 0, r5 / r2)
                elif self.sel(5):
                    self.res.fail([row], kind, 0, f"scenario {s2} or {s5} failed" if self.sel(2)
                                  else "scenario 2 not run (add 2 to --only)")

    # report --------------------------------------------------------------------------------
    def cell(self, row, kind, fmt):
        es = self.res.get(row, kind)
        if not es:
            return "—"
        bad = [e for e in es if e["error"] is not None]
        med = self.res.median(row, kind)
        if med is None:
            return f"failed: {short(bad[0]['error'])}" if bad else "—"
        s = fmt_num(med, fmt)
        if bad:
            s += f" ({len(bad)}/{len(es)} failed: {short(bad[0]['error'], 50)})"
        return s

    def table(self) -> str:
        lines = ["| scenario | metric | Runnel | Kafka | Runnel/Kafka ratio | ratio, lowest–highest run "
                 "| Runnel broker CPU s/GiB | Kafka broker CPU s/GiB |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            if r["scenario"] not in self.only:
                continue
            rid = r["id"]
            if not any(self.res.get(rid, k) for k in (*KINDS, "mock")):
                continue  # a row this run did not have (an older run's JSON)
            vr, vk = self.res.median(rid, "runnel"), self.res.median(rid, "kafka")
            ratio = f"{vr / vk:.2f}" if vr is not None and vk else "—"
            rr = self.res.ratio_range(rid)
            spread = f"{rr[0]:.2f}–{rr[1]:.2f}" if rr else "—"
            cr, ck = self.res.median(rid, "runnel", "cpu_s_per_gib"), self.res.median(rid, "kafka", "cpu_s_per_gib")
            lines.append(f"| {r['label']} | {r['metric']} | {self.cell(rid, 'runnel', r['fmt'])} | "
                         f"{self.cell(rid, 'kafka', r['fmt'])} | {ratio} | {spread} | {fmt_num(cr, 'f2')} | "
                         f"{fmt_num(ck, 'f2')} |")
        return "\n".join(lines)

    def warmup_text(self) -> str:
        """The untimed warm-up's first and last pass for each broker (median over runs), which
        shows whether the timed steps met a broker still warming up."""
        parts = []
        for kind in KINDS:
            runs = [s["warmup"] for s in self.sessions if s.get("kind") == kind and s.get("warmup")]
            said = []
            for what in ("produce", "consume"):
                ps = [[p for p in w if p["what"] == what] for w in runs]
                ps = [x for x in ps if x]
                if not ps:
                    continue
                med = lambda i, k: statistics.median(x[i][k] for x in ps)  # noqa: E731
                said.append(f"{what} {med(0, 'mbs'):,.0f} → {med(-1, 'mbs'):,.0f} MB/s "
                            f"(broker CPU {med(0, 'broker_cpu_s'):.2f} → {med(-1, 'broker_cpu_s'):.2f} s)")
            if said:
                parts.append(f"{LABEL[kind]} " + ", ".join(said))
        if not parts:
            return ""
        n_passes, n = self.cfg["warm_produce"]
        return (f"Before its timed steps each broker ran the same untimed warm-up: {n_passes} × {n:,} × 100 B "
                f"with runnel perf produce, then {self.cfg['warm_consume']} × {self.cfg['n1k']:,} × 1 KiB with "
                f"runnel perf consume. First → last pass, median of runs: " + "; ".join(parts) + ". ")

    def limits_text(self) -> str:
        lim, cfg = self.limits, self.cfg
        out = ["", "Machine limits (measured in this run):", ""]
        if "memory" in lim:
            out.append(memory_text(lim["memory"]))
        if "tcp_congestion" in lim:
            out.append(tcp_congestion_text(lim["tcp_congestion"]))
        if not self.args.no_limits:
            if "iperf3_gbit_per_sec" in lim:
                g = lim["iperf3_gbit_per_sec"]
                out.append(f"- loopback TCP, iperf3 1 stream {cfg['iperf_secs']} s: {g:,.1f} Gbit/s ({g * 1e3 / 8:,.0f} MB/s)")
            else:
                out.append(f"- loopback TCP, iperf3: failed: {short(lim.get('iperf3_error', '?'))}")
            for key, desc in (("dd_fdatasync", f"dd {cfg['dd_mib']} MiB bs=1M conv=fdatasync"),
                              ("dd_buffered", f"dd {cfg['dd_mib']} MiB bs=1M, buffered (page cache)")):
                v = lim.get(key + "_mb_per_sec")
                c = lim.get(key + "_cpu_s_per_gib")
                out.append(f"- disk write, {desc}: " + (f"{v:,.0f} MB/s" if v else
                                                          f"failed: {short(lim.get(key + '_error', '?'))}")
                           + (f" (dd's CPU: {c:.2f} s/GiB)" if v and c is not None else ""))
            v = lim.get("dd_dsync_writes_per_sec")
            out.append(f"- synchronous writes, dd bs=64k oflag=dsync × {cfg['dsync_count']}: " +
                       (f"{v:,.0f} writes/s ({lim['dd_dsync_mb_per_sec']:,.0f} MB/s)" if v else
                        f"failed: {short(lim.get('dd_dsync_error', '?'))}"))
            for size in (64, 256):
                v = lim.get(f"fsync_writers_{size}k_mb_per_sec")
                err = lim.get(f"fsync_writers_{size}k_error")
                if v is None and err is None:
                    continue  # an older run's JSON
                out.append(f"- 6 writers, each appending {size} KiB to its own file with an fdatasync after "
                           "every write (scenario 5's pattern): "
                           + (f"{v:,.0f} MB/s" if v else f"failed: {short(err or '?')}"))
        for s, rid, size in MOCK_PRODUCE_ROWS:
            if not self.sel(s):
                continue
            row = rid.split(".")[0]
            client = MOCK_PRODUCERS[row[-1]][0]
            if not self.res.get(rid, "mock") and row.endswith("r"):
                continue  # an older run's JSON, from before runnel perf ran against the mock
            m = self.res.median(rid, "mock")
            if m is None:
                es = [e for e in self.res.get(rid, "mock") if e["error"]]
                out.append(f"- librdkafka mock cluster, same {client} as row {row} ({size}): failed: "
                           f"{short(es[0]['error']) if es else 'not run'}")
                continue
            rel = []
            for kind in KINDS:
                v = self.res.median(rid, kind)
                if v is not None:
                    rel.append(f"{LABEL[kind]} {v / m:.0%} of it")
            cpu = self.res.median(rid, "mock", "cpu_s_per_gib")
            out.append(f"- librdkafka mock cluster (in-memory, 1 broker), same {client} as row {row} ({size}): "
                       f"{m:,.0f} records/s ({m * (100 if s == 1 else 1024) / 1e6:,.1f} MB/s)"
                       + (f"; {', '.join(rel)}" if rel else "")
                       + (f"; mock broker CPU {cpu:.2f} s/GiB" if cpu is not None else ""))
        if self.sel(4):
            for r, client in LATENCY_SHORT.items():
                if not self.res.get(f"{r}.p99", "mock"):
                    continue  # not in this run (an older run's JSON)
                m = {k: self.res.median(f"{r}.{k}", "mock") for k in ("p50", "p99", "p999")}
                if m["p99"] is None:
                    es = [e for e in self.res.get(f"{r}.p99", "mock") if e["error"]]
                    out.append(f"- librdkafka mock cluster, same latency client as row {r} ({client}): failed: "
                               f"{short(es[0]['error']) if es else 'not run'}")
                    continue
                rel = []
                for kind in KINDS:
                    v = self.res.median(f"{r}.p99", kind)
                    if v is not None:
                        rel.append(f"{LABEL[kind]}'s p99 {v / m['p99']:.3g}× it")
                out.append(f"- librdkafka mock cluster (in-memory, 1 broker), same latency client as row {r} ({client}), "
                           f"{cfg['lat_rate']:g} MB/s: p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms, "
                           f"p99.9 {m['p999']:.2f} ms" + (f"; {', '.join(rel)}" if rel else ""))
        return "\n".join(out) if len(out) > 3 else ""

    # the targets, checked against the medians ---------------------------------------
    def share(self, row, kind, who):
        """Median share of the machine's CPUs that `who` ("client" / "broker") took during a
        step, and whether over the client's own timed span (runs that sampled the CPU: the
        busiest stretch that long) or over the whole step, start-up included (older runs)."""
        cpus = self.cpus or 1
        es = [e for e in self.res.get(row, kind) if e["error"] is None]
        busy = [e[f"{who}_busy"] for e in es if e.get(f"{who}_busy") is not None]
        if busy:
            return statistics.median(busy), True
        vals = [e[f"{who}_cpu_s"] / (e["wall_s"] * cpus) for e in es
                if e.get(f"{who}_cpu_s") is not None and e.get("wall_s")]
        return (statistics.median(vals) if vals else None), False

    def targets_text(self) -> str:
        """Each target of the performance issue, met or not, from this run's medians; where a
        target is not met, what bounds it (the client's CPU, the loopback, the mock ceiling)."""
        med = self.res.median
        met, unmet = [], []

        def put(ok, text):
            (met if ok else unmet).append(text)

        loop = self.limits.get("iperf3_gbit_per_sec")
        loop_mb = loop * 1e3 / 8 if loop else None
        thr = [(1, "1.rps", "scenario 1, Kafka ProducerPerformance", None),
               (1, "1r.rps", "scenario 1r, runnel perf produce", "mock"),
               (1, "1m.rps", "scenario 1m, confluent-kafka", "mock"),
               (2, "2.rps", "scenario 2, Kafka ProducerPerformance", None),
               (2, "2r.rps", "scenario 2r, runnel perf produce", "mock"),
               (2, "2m.rps", "scenario 2m, confluent-kafka", "mock"),
               (3, "3.fetch", "scenario 3, Kafka ConsumerPerformance (fetch)", "loop"),
               (3, "3r.mbs", "scenario 3r, runnel perf consume", "loop"),
               (3, "3m.mbs", "scenario 3m, confluent-kafka", "loop")]
        for s, rid, what, bound in thr:
            if not self.sel(s):
                continue
            if not self.res.get(rid, "runnel") and not self.res.get(rid, "kafka"):
                continue  # not in this run (an older run's JSON)
            r, k = med(rid, "runnel"), med(rid, "kafka")
            if r is None or not k:
                unmet.append(f"{what}: no figure (failed)")
                continue
            rr = self.res.ratio_range(rid)
            spread = f", {rr[0]:.2f}–{rr[1]:.2f}× run by run" if rr else ""
            text = f"{what}: {r / k:.2f}× Kafka{spread} (target 2×)"
            if r / k < 2:
                why = []
                (cs, timed), (bs, _) = self.share(rid, "runnel", "client"), self.share(rid, "runnel", "broker")
                if cs is not None and bs is not None:
                    span = " while it moved the records (the span it timed itself)" if timed else ""
                    why.append(f"with Runnel the client process used {cs:.0%} of the {self.cpus} CPUs{span} "
                               f"and the broker {bs:.0%}")
                m = med(rid, "mock")
                if bound == "mock" and m:
                    why.append(f"2× Kafka would be {2 * k / m:.0%} of what this client reaches against "
                               f"librdkafka's mock cluster, which stores nothing")
                if bound == "loop" and loop_mb:
                    why.append(f"2× Kafka would be {2 * k:,.0f} MB/s; iperf3's one stream over the "
                               f"loopback did {loop_mb:,.0f} MB/s")
                pr, pk = med("3p.mbs", "runnel"), med("3p.mbs", "kafka")
                if rid == "3r.mbs" and pr and pk and pr > 1.2 * r:
                    of_loop = f", {pr / loop_mb:.0%} of iperf3's figure" if loop_mb else ""
                    # iperf3's one stream is not always the most the loopback carries: the
                    # loop itself can read more, and then that is the ceiling to compare with.
                    beyond = (f"; 2× Kafka's would be {2 * pk:,.0f} MB/s, more than the loopback carried"
                              if loop_mb and 2 * pk > max(loop_mb, pr) else "")
                    why.append(f"a minimal Fetch loop (row 3p, not a client users run) read {pr:,.0f} MB/s "
                               f"from Runnel ({pr / pk:.2f}× Kafka's {pk:,.0f}{of_loop}), so with Runnel "
                               f"this client is the bound{beyond}")
                text += " — " + "; ".join(why) if why else ""
            put(r / k >= 2, text)
        for s, rid, size in MOCK_PRODUCE_ROWS:
            want = 0.95 if s == 1 else 0.85
            r, m = (med(rid, "runnel"), med(rid, "mock")) if self.sel(s) else (None, None)
            if r is not None and m:
                client = MOCK_PRODUCERS[rid.split(".")[0][-1]][1]
                text = f"{size} with {client}: {r / m:.0%} of the mock cluster's {m:,.0f} records/s (target {want:.0%})"
                rc, mc = med(rid, "runnel", "cpu_s_per_gib"), med(rid, "mock", "cpu_s_per_gib")
                if r / m < want and rc is not None and mc:
                    text += (f" — Runnel's broker used {rc:.2f} s of CPU per GiB, the mock cluster {mc:.2f}: "
                             "the mock keeps the batches in memory, Runnel writes them to the page cache "
                             "(a copy into the filesystem), on the two CPUs the client also runs on")
                    dd = self.limits.get("dd_buffered_cpu_s_per_gib")
                    if dd:
                        text += (f"; writing a GiB into the page cache alone took dd {dd:.2f} s of CPU in "
                                 f"this run, so the mock's {mc:.2f} plus that is {mc + dd:.2f}")
                put(r / m >= want, text)
        if self.sel(2):
            r, m = med("2m.rps", "runnel", "cpu_s_per_gib"), med("2m.rps", "mock", "cpu_s_per_gib")
            if r is not None and m:
                put(r / m <= 2, f"broker CPU per GiB produced (2m): {r:.2f} s against the mock "
                                f"cluster's {m:.2f}, {r / m:.2f}× (target at most 2×)")
        if self.sel(4):
            for rid, client in LATENCY_SHORT.items():
                if not self.res.get(f"{rid}.p99", "runnel") and not self.res.get(f"{rid}.p99", "kafka"):
                    continue  # not in this run (an older run's JSON)
                r, k = med(f"{rid}.p99", "runnel"), med(f"{rid}.p99", "kafka")
                if r is None or not k:
                    unmet.append(f"p99 with {client}: no figure (failed)")
                    continue
                text = (f"p99 with {client}: {r:.2f} ms (target under 5), "
                        f"{k / r:.2f}× lower than Kafka's {k:.2f} (target 2×)")
                q = med(f"{rid}.qp99", "runnel")
                if k / r < 2 and q is not None:
                    text += (f" — {q:.2f} ms of it is librdkafka's own time before the request is "
                             f"written (int_latency p99; {med(f'{rid}.qp99', 'kafka') or 0:.2f} with Kafka)")
                put(r < 5 and k / r >= 2, text)
        if self.sel(5):
            for rid, what in (("5.vs2", "ProducerPerformance"), ("5r.vs2", "runnel perf produce"),
                              ("5m.vs2", "confluent-kafka")):
                v = med(rid, "runnel")
                if v is None:
                    continue
                text = (f"fsync per batch with {what}: {v:.0%} of the same client's "
                        f"scenario 2 (target 50%; Kafka {med(rid, 'kafka') or 0:.0%})")
                mbs = med(rid.split(".")[0] + ".rps", "runnel")
                seq, dsync = self.limits.get("dd_fdatasync_mb_per_sec"), self.limits.get("dd_dsync_mb_per_sec")
                if v < 0.5 and mbs is not None and seq and dsync:
                    mbs *= 1024 / 1e6
                    text += (f" — Runnel wrote {mbs:,.0f} MB/s with an fsync per batch, {mbs / v / 2:,.0f} "
                             f"would be 50%; this disk writes {seq:,.0f} MB/s in one {self.cfg['dd_mib']:,} MiB fdatasync'd "
                             f"stream and {dsync:,.0f} MB/s in synchronous 64 KiB writes (dd)")
                    w64, w256 = (self.limits.get(f"fsync_writers_{k}k_mb_per_sec") for k in (64, 256))
                    if w64 and w256:
                        text += (f", and {w64:,.0f} MB/s ({w256:,.0f} MB/s) from 6 writers fsyncing "
                                 f"every 64 KiB (256 KiB)")
                put(v >= 0.5, text)
        if self.sel(6):
            for rid, what, lim in (("6.peak", "during scenario 2", 64), ("6.idle", "with 1,000 idle partitions", 128)):
                v = med(rid, "runnel")
                if v is not None:
                    put(v < lim, f"RSS {what}: {v:,.0f} MiB (target under {lim})")
        if not met and not unmet:
            return ""
        out = ["", "Against the performance issue's targets (from the medians above):", ""]
        out += [f"- met: {t}" for t in met] + [f"- not met: {t}" for t in unmet]
        return "\n".join(out)


def memory_text(m: dict) -> str:
    """The report's line on free page reporting (PageReportingHold)."""
    if not m.get("present"):
        return "- free page reporting (a VM's balloon device taking free memory back): not on this machine"
    what = ("- free page reporting (the VM's balloon device takes free guest memory back; the guest's next "
            "touch of it traps to the host): ")
    if not m.get("held"):
        return (what + f"on (page_reporting_order {m['order_was']}); it could not be held off "
                f"({short(m.get('error') or '?')}), so produce figures include the host backing fresh "
                "page-cache pages again, which raised a broker's CPU per produce run 4-6× in phases")
    what += f"held off for the run (page_reporting_order {m['order_was']} → {m['order']}, put back after)"
    t = m.get("touched")
    if t and t["gib"] > 0:
        rate = t["gib"] * GIB / 1e9 / t["seconds"] if t["seconds"] else 0
        what += (f"; then {t['gib']:.1f} GiB of free memory was touched once before anything was timed, "
                 f"in {t['seconds']:.0f} s ({rate:.2f} GB/s)")
    elif m.get("touch_error"):
        what += f"; touching the free memory first failed: {short(m['touch_error'])}"
    return what


def tcp_congestion_text(t: dict) -> str:
    """The report's line on TCP congestion control (TcpCongestionHold)."""
    what = "- TCP congestion control of every connection in the run: "
    if not t.get("present"):
        return what + "unknown (no /proc/sys/net/ipv4/tcp_congestion_control)"
    if t.get("kept"):
        return what + f"{t['now']}, the machine's (--tcp-congestion machine)"
    if t.get("error"):
        return (what + f"{t['now']}, the machine's; {t['want']} could not be set ({short(t['error'])}), so "
                "the figures include what its pacing costs, if it paces (bbr does)")
    if t["now"] == t["was"]:
        return what + f"{t['now']}, the machine's own"
    return (what + f"{t['now']}, set for the run (the machine's is {t['was']}, put back after; "
            "bench/README.md says why)")


def machine_info() -> dict:
    info = {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        info["mem_total_mib"] = int(open("/proc/meminfo").readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        info["runnel_version"] = subprocess.run([str(RUNNEL), "--version"], capture_output=True, text=True,
                                                timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    try:
        import confluent_kafka
        v = confluent_kafka.version()
        info["confluent_kafka"] = v if isinstance(v, str) else v[0]
        info["librdkafka"] = confluent_kafka.libversion()[0]
    except Exception:  # noqa: BLE001
        pass
    try:  # the librdkafka that bench/latency.c is linked with (Debian's package)
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "librdkafka-dev"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if out:
            info["librdkafka_c"] = out
    except Exception:  # noqa: BLE001
        pass
    info["kafka_jvm_opts"] = KAFKA_JVM_OPTS
    info["kafka_jars"] = sorted(p.name for p in (JAVA_DIR / "lib").glob("kafka_2.13-*.jar"))
    return info


def render(suite, cfg, minfo, summary) -> str:
    """The markdown report: table, machine limits, the issue's targets, and a footer."""
    load = summary.get("load_average") or {}
    steal = summary.get("steal_pct")
    minutes = summary.get("seconds", 0) / 60
    foot = (f"\n\nMedian of {cfg['runs']} run(s) per broker (fresh broker and data directory per run, "
            f"Runnel and Kafka alternating, each first in every other run); MB = 10^6 bytes of record values, GiB = 2^30. "
            f"{cfg['n100']:,} × 100 B, {cfg['n1k']:,} × 1 KiB, {cfg['n_fsync']:,} × 1 KiB with fsync. "
            f"{minfo.get('cpus')} CPUs shared by brokers and clients; "
            + (f"load average {load['start'][0]:.2f} at start, {load['end'][0]:.2f} at end; " if load else "")
            + (f"CPU steal (hypervisor) {steal:.1f}% of the run; " if steal is not None else "")
            + f"took {minutes:.1f} min. " + suite.warmup_text() +
            f"{minfo.get('runnel_version', 'runnel ?')}, Kafka {', '.join(minfo.get('kafka_jars', []))}"
            + (f" (JVM: {minfo['kafka_jvm_opts']})" if minfo.get("kafka_jvm_opts") else "") + ", "
            f"confluent-kafka {minfo.get('confluent_kafka', '?')} (librdkafka {minfo.get('librdkafka', '?')}); "
            f"bench/latency.c with librdkafka {minfo.get('librdkafka_c', '?')} (Debian).")
    return suite.table() + "\n" + suite.limits_text() + "\n" + suite.targets_text() + foot + "\n"


def rerender(path: str) -> int:
    """--report: print the report of an earlier run from its raw JSON (no brokers started)."""
    d = json.loads(Path(path).read_text())
    args = argparse.Namespace(only=set(d["scenarios"]), no_limits=d.get("no_limits", not d.get("limits")),
                              keep=False)
    suite = Suite(args, d["config"], Path(tempfile.gettempdir()))
    suite.rows, suite.limits = row_specs(d["config"]), d.get("limits") or {}
    suite.cpus = d["machine"].get("cpus") or suite.cpus
    suite.res.entries = d["results"]
    suite.sessions = d.get("sessions", [])
    print(render(suite, d["config"], d["machine"], d), flush=True)
    return 0


def parse_only(s: str) -> set:
    try:
        v = {int(x) for x in s.split(",") if x.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError("--only takes scenario numbers, e.g. 1,2,4") from None
    if not v or not v <= set(SCENARIOS):
        raise argparse.ArgumentTypeError(f"scenarios are {SCENARIOS[0]}-{SCENARIOS[-1]}")
    return v


def main() -> int:
    ap = argparse.ArgumentParser(description="Runnel vs Apache Kafka benchmark suite (bench/README.md)")
    ap.add_argument("--runs", type=int, help="runs per broker; the table shows the median (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes and 1 run, to smoke-test the suite")
    ap.add_argument("--only", type=parse_only, default=set(SCENARIOS), help="scenarios, e.g. 1,2,4")
    ap.add_argument("--out", help="also write the table to FILE and the raw results to FILE.json")
    ap.add_argument("--records-100", type=int, help="records for the 100 B scenarios (1, 1r, 1m)")
    ap.add_argument("--records-1k", type=int, help="records for the 1 KiB scenarios (2, 2r, 2m, 3)")
    ap.add_argument("--records-fsync", type=int, help="records for scenario 5")
    ap.add_argument("--no-limits", action="store_true", help="skip iperf3 / dd")
    ap.add_argument("--tcp-congestion", metavar="NAME", default="cubic",
                    help="TCP congestion control for every connection of the run, set for the run and put "
                         "back after (default cubic, Linux's default; 'machine' keeps the machine's)")
    ap.add_argument("--tmpdir", help="where broker data directories go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep data directories and logs")
    ap.add_argument("--report", metavar="FILE.json",
                    help="print the report of an earlier run from its raw JSON and exit (starts nothing)")
    args = ap.parse_args()
    if args.report:
        return rerender(args.report)

    cfg = dict(SIZES["quick" if args.quick else "default"])
    cfg.update(lat_rate=20.0, start_timeout=120, tcp_congestion=args.tcp_congestion)
    if args.runs is not None:
        if args.runs < 1:
            ap.error("--runs must be >= 1")
        cfg["runs"] = args.runs
    for opt, key in (("records_100", "n100"), ("records_1k", "n1k"), ("records_fsync", "n_fsync")):
        if getattr(args, opt):
            cfg[key] = getattr(args, opt)

    for p, what in ((RUNNEL, "the release binary (cargo build --release -p runnel)"),
                    (KAFKA_SH, "tests/interop/java/kafka-as-runnel.sh")):
        if not p.exists():
            print(f"missing {p}: {what}", file=sys.stderr)
            return 2
    if not list((JAVA_DIR / "lib").glob("kafka-tools-*.jar")):
        print("tests/interop/java/lib has no Kafka jars: run bash tests/interop/java/setup.sh", file=sys.stderr)
        return 2

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="runnel-bench-", dir=args.tmpdir))
    started = time.time()
    load0, steal0 = os.getloadavg(), cpu_steal()
    log(f"runnel bench: {'quick' if args.quick else 'default'} sizes, {cfg['runs']} run(s), scenarios "
        f"{','.join(map(str, sorted(args.only)))}, data in {tmp}; load average {load0[0]:.2f}")
    suite = Suite(args, cfg, tmp)
    interrupted = None
    try:
        suite.run()
    except (KeyboardInterrupt, SystemExit) as e:
        interrupted = e
        log(f"interrupted ({type(e).__name__}): stopping the brokers; the table has what was measured so far")
    finally:
        _cleanup()
        suite.page_reporting.release()
        suite.tcp_congestion.release()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    load1, steal1 = os.getloadavg(), cpu_steal()
    minfo = machine_info()
    summary = {"load_average": {"start": load0, "end": load1}, "steal_pct": round(steal_pct(steal0, steal1), 2),
               "seconds": round(time.time() - started, 1)}
    report = render(suite, cfg, minfo, summary)
    print(report, flush=True)
    if args.out:
        out = Path(args.out)
        out.write_text(report)
        jpath = out.with_suffix(".json") if out.suffix == ".md" else Path(str(out) + ".json")
        jpath.write_text(json.dumps({"config": cfg, "scenarios": sorted(args.only), "machine": minfo, **summary,
                                     "no_limits": bool(args.no_limits), "limits": suite.limits,
                                     "sessions": suite.sessions, "results": suite.res.entries},
                                    indent=1, default=str) + "\n")
        log(f"wrote {out} and {jpath}")
    if interrupted is not None:
        return interrupted.code if isinstance(interrupted, SystemExit) and isinstance(interrupted.code, int) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
