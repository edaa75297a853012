"""The committed fault report (``nairbus bench faults`` -> reports/faults.json) is complete and meets the reliability
bars: this reads what the full bench measured (the short CI version of each attack is tests/agents/test_faultbench.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPORT = Path(__file__).resolve().parents[1] / "reports" / "faults.json"


@pytest.fixture(scope="module")
def faults() -> dict[str, Any]:
    report = json.loads(REPORT.read_text())
    assert report["complete"], "the fault bench did not finish: rerun 'nairbus bench faults'"
    return report


def _scenario(faults: dict[str, Any], name: str) -> Any:
    return faults["scenarios"][name]["result"]


def _legit_untouched(legit: dict[str, Any]) -> None:
    assert legit["labels_identical_to_offline"]
    assert legit["frames_sent"] > 0


def test_every_device_ran_in_its_own_cpu_group(faults: dict[str, Any]) -> None:
    for name in ("fuzz", "flood", "takeover", "exhaustion"):
        isolation = _scenario(faults, name)["legit"]["cpu_isolation"]
        assert isolation["kind"].startswith("cgroup"), isolation
        assert all(group["cpus"] for label, group in isolation["groups"].items() if label.startswith("device-"))


def test_fuzz_crashes_nothing_and_costs_the_stream_nothing(faults: dict[str, Any]) -> None:
    fuzz = _scenario(faults, "fuzz")
    assert fuzz["hostile_messages"] >= 100_000
    assert {"byte_flips", "extreme_fields", "oversize", "seq_jump"} <= set(fuzz["kinds"])
    assert fuzz["fusion_alive"]
    assert fuzz["fusion_restarts"] == 0
    assert fuzz["legit_rate_ratio"] >= 0.9
    assert fuzz["fusion_rss_growth"] <= 1.10
    _legit_untouched(fuzz["legit"])
    assert fuzz["legit"]["frames_lost"] == 0


def test_a_flooding_device_costs_the_others_no_frames_and_no_deadline(faults: dict[str, Any]) -> None:
    flood = _scenario(faults, "flood")
    legit = flood["legit"]
    _legit_untouched(legit)
    assert legit["frames_lost"] == 0
    assert legit["frames_decided"] == legit["frames_sent"]
    assert legit["p99_ms"] <= faults["settings"]["deadline_ms"]


def test_broker_kills_recover_within_5_s_and_lose_nothing_captured_while_it_was_up(faults: dict[str, Any]) -> None:
    runs = _scenario(faults, "broker-kill")
    assert {(run["persistence"], run["outage_s"]) for run in runs} == {(p, s) for p in (False, True)
                                                                       for s in (2.0, 20.0)}
    for run in runs:
        assert run["every_sensor_known_again"]
        assert run["fusion_alive"]
        assert max(run["first_result_after_return_s"].values()) <= 5.0
        _legit_untouched(run["legit"])
        assert run["legit"]["frames_lost"] == 0
        assert run["legit"]["frames_decided"] == run["legit"]["frames_sent"]


@pytest.mark.parametrize("name", ["fusion-kill", "fusion-stop"])
def test_a_killed_or_frozen_fusion_answers_within_5_s_every_time(faults: dict[str, Any], name: str) -> None:
    out = _scenario(faults, name)
    assert out["runs"] >= 10
    assert len(out["first_result_s"]) == out["runs"]
    assert out["max_first_result_s"] <= 5.0
    assert out["all_within_bar"]
    _legit_untouched(out["legit"])


@pytest.mark.parametrize("name", ["takeover", "exhaustion"])
def test_one_devices_credentials_disconnect_no_victim(faults: dict[str, Any], name: str) -> None:
    out = _scenario(faults, name)
    assert out["victim_offline_events"] == 0
    assert out["victim_connections_closed_by_broker"] == 0
    assert out["fusion_alive"]
    _legit_untouched(out["legit"])
    assert out["legit"]["frames_lost"] == 0
