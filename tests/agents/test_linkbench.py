"""The link bench: its statistics and report (fast), and — as root — real namespaces, real tbf shaping and a tiny
grid through the live bus (slow)."""

from __future__ import annotations

import doctest
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nairbus.agents.cli import bench as bench_cli
from nairbus.agents.tools import linkbench, netns
from nairbus.agents.tools.linkbench import (
    Cell,
    LinkBenchSettings,
    assemble_report,
    command_line,
    latency_trend,
    parse_counters,
    summarise,
    table_rows,
    usage_error,
    wilson,
)
from nairbus.agents.tools.readme import render

REPO = Path(__file__).resolve().parents[2]

# ----- fast: pure parts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [linkbench, netns, bench_cli])
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0


def test_wilson_interval() -> None:
    assert wilson(0, 0) is None
    lo, hi = wilson(50, 100) or (0.0, 0.0)
    assert lo == pytest.approx(0.4038, abs=1e-4)
    assert hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson(10, 10) or (0.0, 0.0)
    assert hi == pytest.approx(1.0)
    assert 0.69 < lo < 0.73  # 10/10 does not prove 100 %
    lo, hi = wilson(0, 10) or (1.0, 1.0)
    assert lo == pytest.approx(0.0)
    assert hi < 0.31


def test_latency_trend_compares_first_and_last_fifth_by_capture_time() -> None:
    capture = [4.0, 3.0, 2.0, 1.0, 0.0]  # out of order on purpose: sorted by capture time first
    latency = [500.0, 400.0, 300.0, 200.0, 100.0]
    trend = latency_trend(capture, latency)
    assert trend["first_p50_ms"] == 100.0
    assert trend["last_p50_ms"] == 500.0
    assert trend["ratio"] == 5.0
    assert latency_trend([1.0], [1.0])["ratio"] is None


def test_counters_come_from_the_bare_json_line_or_the_stopped_log_line() -> None:
    log_line = json.dumps({"event": "sensor_stopped", "logger": "nairbus.sensor", "level": "info",
                           "timestamp": "x", "sensor": "cam1", "frames": 9, "wire_bytes": 100})
    bare = json.dumps({"frames": 10, "frames_skipped": 1})
    assert parse_counters("noise\n" + log_line + "\n" + bare + "\n") == {"frames": 10, "frames_skipped": 1}
    assert parse_counters("Traceback\n" + log_line + "\nerror: boom\n") == {"frames": 9, "wire_bytes": 100}
    assert parse_counters("nothing here") is None


def test_usage_errors_are_recognised_without_box_drawing() -> None:
    text = "Usage: nairbus sensor [OPTIONS]\nTry 'nairbus sensor --help' for help.\n╭─ Error ──╮\n" \
           "│ No such option: --budget │\n╰──────────╯\n"
    assert usage_error(text) == "No such option: --budget"
    assert usage_error("error: invalid configuration: mode 'image' is not one of nair, vp") is not None
    assert usage_error("ConnectionError: broker unreachable") is None


def _result(frame_id: int, class_index: int, latency: float, **extra: Any) -> dict[str, Any]:
    return {"frame_id": frame_id, "class_index": class_index, "latency_ms": latency, "capture_ts": 1000.0 + frame_id,
            "fraction_received": 0.5, "bytes_received": 600, "fragments_received": 2, "complete": True, **extra}


def test_summary_and_report_hold_every_figure() -> None:
    settings = LinkBenchSettings(rates_bps=(1_000_000,), fps=(30.0,), modes={"nair-10": ("--budget-fraction", "0.1")},
                                 frames=10)
    cell = Cell(1_000_000, 30.0, "nair-10", ("--budget-fraction", "0.1"), 10)
    labels = np.arange(20) % 10
    records = [_result(i, i % 10 if i != 3 else 0, 10.0 + i) for i in range(8)]
    records.append(_result(2, 9, 1.0))  # a duplicate: the first result of a frame counts
    records.append(_result(15, 5, 1.0))  # outside the replayed frames: ignored
    offline = {i: i % 10 for i in range(8)}
    counters = {"frames": 10, "frames_sent": 10, "frames_skipped": 0, "wire_bytes": 10_000, "payload_bytes": 6000}
    qdisc = {"sent_bytes": 12_000, "sent_packets": 20, "dropped": 1, "overlimits": 3, "requeues": 0}
    row = summarise(cell, records, labels, offline, "components_received", counters, qdisc, settings)
    assert row["frames_sent"] == 10
    assert row["frames_decided"] == 8
    assert row["share_decided"] == pytest.approx(0.8)
    assert row["live_accuracy"] == pytest.approx(0.7)  # 7 right of 10 sent: undecided frames count as wrong
    assert row["live_accuracy_decided"] == pytest.approx(7 / 8)
    assert row["offline_accuracy"] == pytest.approx(1.0)
    assert row["agreement_with_offline"] == pytest.approx(7 / 8)
    lo, hi = row["live_accuracy_ci95"]
    assert lo < 0.7 < hi
    assert row["wire_bytes_per_frame"] == pytest.approx(1000.0)
    assert row["wire_bytes_source"].startswith("sensor counters")
    assert row["link_bytes_per_frame"] == pytest.approx(1200.0)
    assert row["fraction_received"] == pytest.approx(0.5)
    assert row["p50_ms"] == pytest.approx(13.5)
    assert row["frames_skipped"] == 0
    assert row["latency_trend"]["frames_per_part"] == 1
    skipping = summarise(cell, records, labels, offline, "x", {**counters, "frames": 12, "frames_skipped": 2}, None,
                         settings)
    assert skipping["frames_captured"] == 12
    assert skipping["share_decided_of_captured"] == pytest.approx(8 / 12)
    assert skipping["live_accuracy_of_captured"] == pytest.approx(7 / 12)
    assert skipping["frames_skipped"] == 2
    crashed = summarise(cell, records[:2], labels, offline, "x", {"frames": 3, "frames_sent": 2}, None, settings,
                        sensor_failed=True)
    assert crashed["share_decided"] == pytest.approx(0.2)  # of the 10 frames asked for, not of the 2 it sent
    assert crashed["live_accuracy"] == pytest.approx(0.2)
    # Without wire bytes from the sensor the figure is an estimate, and says so.
    estimate = summarise(cell, records, labels, offline, "x", {"frames": 10}, None, settings)
    assert estimate["wire_bytes_per_frame"] == pytest.approx(600 + 2 * linkbench.ENVELOPE_ESTIMATE_B)
    assert estimate["wire_bytes_source"].startswith("estimate")
    assert estimate["frames_skipped"] is None

    skipped = {"rate_bps": None, "rate": "unshaped", "fps": 30.0, "mode": "image", "sensor_args": ["--mode", "image"],
               "skipped": "sensor does not support --mode image: invalid configuration"}
    report = assemble_report(settings, command_line(settings), [row, skipped], None, time.time(), {"host": {}})
    assert report["command"] == "nairbus bench link --rates 1M --fps 30 --add-mode 'nair-10=--budget-fraction 0.1' " \
                                "--frames 10"
    assert report["settings"]["modes"] == {"nair-10": ["--budget-fraction", "0.1"]}
    json.dumps(report)  # the whole report is JSON
    head, rows = table_rows(report)
    assert len(rows) == 2
    assert rows[0][3] == "8/10 (80.0 %)"
    assert rows[1][3] == "skipped"
    assert "link" in head[0]


def test_readme_link_block_is_rendered_from_the_report(tmp_path: Path) -> None:
    settings = LinkBenchSettings(frames=10)
    cell = Cell(None, 10.0, "nair-fixed-100", ("--budget-fraction", "1.0"), 10)
    row = summarise(cell, [_result(i, i, 5.0) for i in range(10)], np.arange(10), {i: i for i in range(10)}, "x",
                    {"frames": 10, "wire_bytes": 5000}, None, settings)
    report = assemble_report(settings, "nairbus bench link --frames 10", [row], None, time.time(), {})
    (tmp_path / "link.json").write_text(json.dumps(report))
    out = render("<!-- nairbus:link -->\n<!-- /nairbus:link -->\n", tmp_path, required=())
    assert "| unshaped | 10 | nair-fixed-100 | 10/10 (100.0 %) | 100.0 %" in out
    assert "`nairbus bench link --frames 10`" in out
    missing = render("<!-- nairbus:link -->\n<!-- /nairbus:link -->\n", tmp_path / "none", required=())
    assert "run `nairbus bench link`" in missing


def test_plot_is_written(tmp_path: Path) -> None:
    settings = LinkBenchSettings(frames=10)
    rows = []
    for rate in (None, 1_000_000, 100_000):
        cell = Cell(rate, 30.0, "nair-10", ("--budget-fraction", "0.1"), 10)
        rows.append(summarise(cell, [_result(i, i, 5.0) for i in range(10)], np.arange(10),
                              {i: i for i in range(10)}, "x", {"frames": 10}, None, settings))
    rows.append({"rate_bps": None, "rate": "unshaped", "fps": 30.0, "mode": "image", "skipped": "no"})
    report = assemble_report(settings, "x", rows, None, time.time(), {})
    path = linkbench.plot_link(report, tmp_path / "link.png")
    assert path.stat().st_size > 10_000


def test_the_cli_refuses_without_root_or_with_bad_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from nairbus.agents.cli import app

    runner = CliRunner()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = runner.invoke(app, ["bench", "link", "--frames", "5"])
    assert result.exit_code == 2
    assert "needs root" in result.output
    with pytest.raises(Exception, match="not a rate"):
        bench_cli.parse_rate("fast")


# ----- slow: real namespaces, real shaping, the live bus ------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the link bench needs root (network namespaces and tc); "
                                                          "run the suite as root to include it")
needs_tools = pytest.mark.skipif(shutil.which("ip") is None or shutil.which("tc") is None,
                                 reason="iproute2 (ip, tc) is not installed")


def _lab_leftovers(prefix: str) -> list[str]:
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10,
                           check=True).stdout
    names = [ns for ns in netns.list_namespaces() if ns.startswith(prefix)]
    return names + [line for line in links.splitlines() if f" {prefix}" in line]


@pytest.mark.slow
@pytest.mark.broker
@needs_root
@needs_tools
def test_tbf_really_limits_the_uplink_and_the_lab_leaves_nothing_behind() -> None:
    with netns.NetLab(netns.LinkShape(1_000_000)) as lab:
        prefix = lab.prefix
        assert set(netns.list_namespaces()) >= {lab.hub, lab.dev}
        root_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10,
                                    check=True).stdout
        assert lab.hub_if not in root_links  # the veth exists only inside the lab
        assert lab.dev_if not in root_links
        shaped = netns.measure_uplink(lab, seconds=2.0)
        stats = lab.qdisc_stats()
        assert stats is not None
        assert stats["sent_bytes"] > 100_000  # the bytes went through the tbf
        lab.set_shape(netns.LinkShape(None))
        unshaped = netns.measure_uplink(lab, seconds=1.0)
    assert 0.5e6 < shaped < 1.3e6, f"1 Mbit/s tbf measured {shaped / 1e6:.2f} Mbit/s"
    assert unshaped > 5 * 1.3e6, f"unshaped veth measured only {unshaped / 1e6:.2f} Mbit/s"
    assert _lab_leftovers(prefix) == []


_MIN_RTT_PROBE = """
import socket, struct, sys, time
from nairbus.agents.runtime.linkprobe import tcp_min_rtt
s = socket.create_connection((sys.argv[1], 9999), timeout=10)
started = time.monotonic()
s.sendall(b"x" * 125_000)
while struct.unpack_from("Q", s.getsockopt(socket.IPPROTO_TCP, 11, 232), 120)[0] < 125_000:
    time.sleep(0.02)
print(tcp_min_rtt(s), time.monotonic() - started)
"""


@pytest.mark.slow
@pytest.mark.broker
@needs_root
@needs_tools
def test_a_delay_line_gives_the_tcp_connection_its_round_trip_end_to_end() -> None:
    # 50 ms each way through two TUN devices and the user-space line, 1 Mbit/s tbf on the device side.
    with netns.NetLab(netns.LinkShape(1_000_000, delay_ms=50.0)) as lab:
        prefix = lab.prefix
        serve = f"import socket\ns = socket.create_server(('{lab.hub_addr}', 9999))\n"
        sink = lab.popen(lab.hub, [sys.executable, "-c", serve + "c, _ = s.accept()\nwhile c.recv(65536): pass"])
        time.sleep(1.0)
        done = lab.run(lab.dev, [sys.executable, "-c", _MIN_RTT_PROBE, lab.hub_addr], timeout=60)
        lab.stop_process(sink)
        min_rtt, seconds = (float(x) for x in done.stdout.split())
    assert 0.095 <= min_rtt <= 0.150, f"min RTT {min_rtt * 1000:.0f} ms through a 2 × 50 ms line"
    assert 0.8 <= seconds <= 2.5, f"125 kB at 1 Mbit/s took {seconds:.2f} s"  # the tbf still shapes it
    assert _lab_leftovers(prefix) == []


def _read_prefix(stream: Any) -> str:
    for line in stream:  # the lab's own log lines come first (structlog prints to stdout unconfigured)
        if line.startswith("PREFIX="):
            return str(line.strip().removeprefix("PREFIX="))
    raise AssertionError("the lab process printed no prefix")


@pytest.mark.slow
@pytest.mark.broker
@needs_root
@needs_tools
def test_sigterm_removes_the_lab_and_a_crashed_run_is_swept() -> None:
    code = ("import time\nfrom nairbus.agents.tools.netns import NetLab, LinkShape\n"
            "with NetLab(LinkShape(250_000)) as lab:\n    print('PREFIX=' + lab.prefix, flush=True)\n"
            "    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        prefix = _read_prefix(proc.stdout)
        assert _lab_leftovers(prefix)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _lab_leftovers(prefix) == []
    # A run killed outright (SIGKILL) leaves its namespaces; the next lab sweeps them since their process is gone.
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    prefix = _read_prefix(proc.stdout)
    proc.kill()
    proc.wait(timeout=10)
    assert _lab_leftovers(prefix)
    with netns.NetLab():
        assert _lab_leftovers(prefix) == []


@pytest.mark.slow
@pytest.mark.broker
@needs_root
@needs_tools
@pytest.mark.timeout(240)
def test_a_tiny_grid_runs_end_to_end(tmp_path: Path) -> None:
    from rich.console import Console

    if shutil.which("mosquitto") is None and not os.access("/usr/sbin/mosquitto", os.X_OK):
        pytest.skip("Mosquitto is not installed")
    nair_10 = ("--mode", "nair", "--budget-fraction", "0.1", "--artifact", "models/weights/base.nair.npz")
    settings = LinkBenchSettings(rates_bps=(1_000_000,), fps=(30.0,), modes={"nair-10": nair_10},
                                 frames=100, start=200, report=tmp_path / "link.json", plot=tmp_path / "link.png",
                                 run_dir=tmp_path / "runs", broker_port=18831)
    started = time.monotonic()
    report = linkbench.run_bench(settings, Console(file=io.StringIO(), width=200))
    assert time.monotonic() - started < 120
    saved = json.loads((tmp_path / "link.json").read_text())
    assert saved["complete"] is True
    assert saved["command"].startswith("nairbus bench link --rates 1M --fps 30")
    assert (tmp_path / "link.png").stat().st_size > 10_000
    (row,) = report["runs"]
    assert "skipped" not in row, row
    for key in ("frames_sent", "frames_decided", "share_decided", "live_accuracy", "live_accuracy_ci95",
                "offline_accuracy", "fraction_received", "wire_bytes_per_frame", "p50_ms", "p99_ms",
                "frames_skipped", "latency_trend", "qdisc", "qdisc_text"):
        assert key in row, key
    assert row["frames_sent"] == 100
    assert row["share_decided"] >= 0.95
    assert row["first_frame"] == 200
    assert 0.7 < row["live_accuracy"] <= 1.0
    assert row["offline_accuracy"] is not None
    assert abs(row["live_accuracy_decided"] - row["offline_accuracy"]) <= 0.02
    assert 0.05 < row["fraction_received"] < 0.15
    assert row["qdisc"]["sent_bytes"] > 100 * 1000  # ~1.25 kB per frame went through the shaper
    assert "tbf" in row["qdisc_text"]
    assert row["p99_ms"] < 1000
    assert row["problems"] == []
    assert not [ns for ns in netns.list_namespaces() if ns.startswith(f"nb{os.getpid()}")]
