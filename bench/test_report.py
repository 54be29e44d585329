"""Checks of the benchmark suite that need no broker (run by .ci/run): every stored run's raw
data still renders with the current report, and the disk probe that scenario 5's ceiling
comes from measures something and leaves nothing behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
RUNS = sorted(BENCH.glob("results-*.json"))


def report(path: Path) -> str:
    p = subprocess.run([sys.executable, str(BENCH / "suite.py"), "--report", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"--report {path.name} failed: {p.stderr[-2000:]}"
    return p.stdout


def test_there_are_stored_runs_to_render():
    assert RUNS, "bench/results-*.json: the stored runs the README quotes are missing"


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.name)
def test_a_stored_run_renders_with_the_current_report(path):
    out = report(path)
    data = json.loads(path.read_text())
    assert out.startswith("| scenario | metric | Runnel | Kafka |"), out[:300]
    # Every row the run measured is in the table, and no row it did not measure.
    rows = {e["row"] for e in data["results"]}
    for prefix in ("4z.", "3m.", "5r."):
        has = any(r.startswith(prefix) for r in rows)
        shown = f"| {prefix[:-1]}. " in out
        assert has == shown, f"{path.name}: row {prefix[:-1]} measured={has} but shown={shown}"
    assert f"Median of {data['config']['runs']} run(s) per broker" in out


def test_the_latest_run_checks_every_target_it_measured():
    latest = BENCH / "results-2026-12-04b.json"
    out = report(latest)
    targets = out.split("Against the performance issue's targets", 1)
    assert len(targets) == 2, "the report lost its targets section"
    lines = [ln for ln in targets[1].splitlines() if ln.startswith("- ")]
    assert any(ln.startswith("- met: p99 with the C client at linger.ms=0") for ln in lines), lines
    assert any("6 writers" in ln for ln in lines if "fsync per batch" in ln), \
        "an unmet fsync target no longer cites the disk's 6-writer ceiling"
    assert "6 writers, each appending 64 KiB" in out


@pytest.mark.parametrize("mode", [[], ["--overwrite"]], ids=["append", "overwrite"])
def test_the_fsync_probe_measures_the_disk_and_cleans_up(tmp_path, mode):
    p = subprocess.run([sys.executable, str(BENCH / "clients.py"), "fsync-writers", "--dir", str(tmp_path),
                        "--writers", "2", "--size", "4096", "--seconds", "0.3", *mode],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout.strip().splitlines()[-1])
    assert d["writers"] == 2 and d["size"] == 4096
    assert d["mb_per_sec"] > 0 and d["fsyncs_per_sec"] > 0, d
    assert list(tmp_path.iterdir()) == [], "the probe left its files behind"


def test_the_busiest_window_finds_the_span_the_client_worked_in():
    sys.path.insert(0, str(BENCH))
    from suite import busiest_window
    # A client idle for 3 s (a JVM starting, a group join), then 1 s at 1.8 of 2 CPUs
    # beside a broker at 0.2: its own 1 s figure, not the 4 s run, is what it worked in.
    samples = [(t / 10, 0.0, 0.0) for t in range(31)]
    samples += [(3 + t / 10, 0.18 * t, 0.02 * t) for t in range(1, 11)]
    client, broker = busiest_window(samples, 1.0, 2)
    assert abs(client - 0.9) < 1e-9 and abs(broker - 0.1) < 1e-9, (client, broker)
    whole = samples[-1][1] / (samples[-1][0] * 2)
    assert whole < 0.25  # the whole run's share would have hidden a saturated client
    # A span longer than the run: the whole run; too few samples: no figure.
    assert busiest_window(samples, 10.0, 2)[0] == whole
    assert busiest_window(samples[:1], 1.0, 2) == (None, None)


def test_a_run_that_sampled_cpu_quotes_the_clients_share_while_they_worked():
    out = report(BENCH / "results-2026-12-05h.json")
    lines = [ln for ln in out.splitlines() if ln.startswith("- not met: scenario")]
    assert lines and all("while it moved the records" in ln for ln in lines), lines
    mock = [ln for ln in out.splitlines() if ln.startswith("- not met: 1 KiB with runnel perf produce")]
    assert mock and "writing a GiB into the page cache alone took dd" in mock[0], mock


def test_the_report_gives_each_brokers_first_and_last_warm_up_pass():
    path = BENCH / "results-2026-12-05i.json"
    data = json.loads(path.read_text())
    out = report(path)
    n_passes, n = data["config"]["warm_produce"]
    assert f"untimed warm-up: {n_passes} × {n:,} × 100 B with runnel perf produce" in out
    for kind, label in (("runnel", "Runnel"), ("kafka", "Kafka")):
        runs = [s["warmup"] for s in data["sessions"] if s["kind"] == kind and s.get("warmup")]
        assert len(runs) == data["config"]["runs"], f"{kind}: a run without warm-up passes"
        produce = [[p for p in w if p["what"] == "produce"] for w in runs]
        first = sorted(w[0]["broker_cpu_s"] for w in produce)[len(runs) // 2]
        last = sorted(w[-1]["broker_cpu_s"] for w in produce)[len(runs) // 2]
        assert f"{label} produce" in out
        assert f"(broker CPU {first:.2f} → {last:.2f} s)" in out, (kind, first, last)


def test_ratios_run_by_run_pair_each_runs_two_brokers_and_skip_failures():
    sys.path.insert(0, str(BENCH))
    from suite import Results
    res = Results()
    for run, (r, k) in enumerate([(300.0, 100.0), (200.0, 200.0), (500.0, None), (90.0, 60.0)], 1):
        res.ok("1r.rps", "runnel", run, r)
        if k is None:
            res.fail(["1r.rps"], "kafka", run, "broker died")
        else:
            res.ok("1r.rps", "kafka", run, k)
    res.ok("1r.rps", "mock", 1, 1000.0)  # not a pair
    assert res.run_ratios("1r.rps") == [3.0, 1.0, 1.5]
    assert res.run_ratios("2r.rps") == []


def test_the_table_shows_each_rows_lowest_and_highest_run_ratio():
    path = BENCH / "results-2026-12-05i.json"
    data = json.loads(path.read_text())
    out = report(path)

    def run_values(kind):
        return {e["run"]: e["value"] for e in data["results"]
                if e["row"] == "3r.mbs" and e["kind"] == kind and e["error"] is None}
    r, k = run_values("runnel"), run_values("kafka")
    ratios = [r[i] / k[i] for i in r]
    row = next(ln for ln in out.splitlines() if ln.startswith("| 3r. "))
    assert f"| {min(ratios):.2f}–{max(ratios):.2f} |" in row, row


def test_free_page_reporting_is_held_off_above_the_largest_order_and_put_back(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCH))
    import suite
    assert suite.buddy_max_order("Node 0, zone      DMA      0      0      1\n"
                                 "Node 0, zone   Normal    101    209    292    416\n") == 3
    assert suite.buddy_max_order("") is None
    param = tmp_path / "page_reporting_order"
    monkeypatch.setattr(suite, "PAGE_REPORTING", param)
    assert suite.PageReportingHold().hold() == {"present": False}
    param.write_text("9\n")
    monkeypatch.setattr(suite, "buddy_max_order", lambda _: 10)
    hold = suite.PageReportingHold()
    info = hold.hold()
    assert info == {"present": True, "order_was": 9, "order": 11, "held": True}, info
    assert param.read_text().strip() == "11"
    line = suite.memory_text({**info, "touched": {"gib": 20.0, "seconds": 50.0}})
    assert "held off for the run (page_reporting_order 9 → 11" in line, line
    assert "20.0 GiB of free memory was touched once" in line and "(0.43 GB/s)" in line, line
    hold.release()
    assert param.read_text().strip() == "9"
    hold.release()  # a second call (atexit after main's own) changes nothing
    assert param.read_text().strip() == "9"
    # Where it cannot be held off, the report says the figures carry it.
    monkeypatch.setattr(suite, "buddy_max_order", lambda _: None)
    info = suite.PageReportingHold().hold()
    assert info["held"] is False and "buddyinfo" in info["error"], info
    assert param.read_text().strip() == "9"
    assert "could not be held off" in suite.memory_text(info)


def test_tcp_congestion_control_is_set_for_the_run_and_put_back(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCH))
    import suite
    knob = tmp_path / "tcp_congestion_control"
    monkeypatch.setattr(suite, "TCP_CONGESTION", knob)
    assert suite.TcpCongestionHold().hold("cubic") == {"present": False}
    assert "unknown" in suite.tcp_congestion_text({"present": False})
    knob.write_text("bbr\n")
    hold = suite.TcpCongestionHold()
    info = hold.hold("cubic")
    assert info == {"present": True, "was": "bbr", "want": "cubic", "now": "cubic"}, info
    assert knob.read_text().strip() == "cubic"
    line = suite.tcp_congestion_text(info)
    assert "cubic, set for the run (the machine's is bbr, put back after" in line, line
    hold.release()
    assert knob.read_text().strip() == "bbr"
    hold.release()  # a second call (atexit after main's own) changes nothing
    assert knob.read_text().strip() == "bbr"
    # Already the machine's: nothing is written, and nothing is put back.
    knob.write_text("cubic\n")
    hold = suite.TcpCongestionHold()
    assert hold.hold("cubic")["now"] == "cubic" and hold.old is None
    assert "cubic, the machine's own" in suite.tcp_congestion_text(hold.hold("cubic"))
    # --tcp-congestion machine: nothing is written, and the report says it was asked for.
    knob.write_text("bbr\n")
    hold = suite.TcpCongestionHold()
    info = hold.hold("machine")
    assert info["now"] == "bbr" and info["kept"] and hold.old is None, info
    assert "bbr, the machine's (--tcp-congestion machine)" in suite.tcp_congestion_text(info)
    # Where it cannot be set, the report says the figures carry the machine's.
    knob.write_text("bbr\n")
    knob.chmod(0o444)
    if os.access(knob, os.W_OK):  # root writes read-only files: make the write fail another way
        monkeypatch.setattr(suite.SettingHold, "set", lambda self, v, was: (_ for _ in ()).throw(PermissionError("denied")))
    info = suite.TcpCongestionHold().hold("cubic")
    assert info["now"] == "bbr" and "denied" in info["error"].lower(), info
    assert knob.read_text().strip() == "bbr"
    assert "bbr, the machine's; cubic could not be set" in suite.tcp_congestion_text(info)
