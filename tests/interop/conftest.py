"""Shared fixtures for the interop suite: each test module gets a real `runnel server`
process on a free loopback port with its own data directory."""

import os
import pathlib
import signal
import socket
import subprocess
import time

import pytest

pytest.register_assert_rewrite("interop_util")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def runnel_bin() -> str:
    """The broker binary under test: $RUNNEL_BIN, else the workspace's debug build."""
    env = os.environ.get("RUNNEL_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "runnel"
        if p.exists():
            return str(p)
    raise RuntimeError("runnel binary not found: run `cargo build -p runnel` or set RUNNEL_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_BROKERS: list = []


class Broker:
    """A `runnel server` child process. `kill9()` and `start()` let crash tests restart it
    on the same port and data directory."""

    def __init__(self, data_dir: pathlib.Path, overrides: dict | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.overrides = dict(overrides or {})
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"runnel-{self.port}.log"
        _BROKERS.append(self)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        cmd = [
            runnel_bin(), "server",
            "--listeners", f"PLAINTEXT://127.0.0.1:{self.port}",
            "--log-dirs", str(self.data_dir),
        ]
        for k, v in self.overrides.items():
            cmd += ["--override", f"{k}={v}"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runnel exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"runnel did not listen on {self.port} within {timeout}s")

    def stop(self) -> int | None:
        """Graceful stop (SIGTERM), waiting for a clean shutdown."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("runnel") / "data")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path):
    """A broker of the test's own, for tests that restart or kill it."""
    b = Broker(tmp_path / "data")
    yield b
    b.stop()


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid()}-{time.time_ns() % 10**12}"


# ---------------------------------------------------------------- additions (helpers)

def log_tail(b: "Broker", lines: int = 60, since: int = 0) -> str:
    """The last `lines` lines of the broker's log written after byte offset `since`."""
    try:
        with open(b.log_path, "rb") as f:
            f.seek(since)
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _log_size(b: "Broker") -> int:
    try:
        return b.log_path.stat().st_size
    except OSError:
        return 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    item._runnel_log_marks = {id(b): _log_size(b) for b in _BROKERS}
    item._runnel_dead_before = {id(b) for b in _BROKERS if b.proc is not None and b.proc.poll() is not None}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach what every broker process of this run logged during the test,
    and whether it is still alive, so a report shows the broker's side next to the client's."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        marks = getattr(item, "_runnel_log_marks", {})
        dead_before = getattr(item, "_runnel_dead_before", set())
        for b in _BROKERS:
            if b.proc is None or id(b) in dead_before:
                continue
            alive = "alive" if b.proc.poll() is None else f"EXITED rc={b.proc.returncode}"
            rep.sections.append((f"runnel {b.bootstrap} ({alive}) log during test",
                                 log_tail(b, 80, marks.get(id(b), 0))))
