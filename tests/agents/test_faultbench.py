"""The fault bench, short: hostile messages and a flood against a real bus, and what the legitimate sensors got.

The full run (`nairbus bench faults`, reports/faults.json) attacks harder and longer; this keeps the harness and the
guarantees honest in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nairbus.agents.tools.faultbench import (
    Expected,
    FaultSettings,
    scenario_exhaustion,
    scenario_flood,
    scenario_fusion_kill,
    scenario_fuzz,
    scenario_takeover,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def expected() -> Expected:
    return Expected(None)


def test_fuzz_ends_nothing_and_costs_the_others_nothing(tmp_path: Path, expected: Expected) -> None:
    settings = FaultSettings(fuzz_messages=15_000, fuzz_seconds=8.0, run_dir=tmp_path)
    out = scenario_fuzz(settings, expected)
    # How many go out in the 8 s bound depends on how busy the shared 2-CPU machine is (the full bench sends 100 000
    # within its time bound: reports/faults.json); a few thousand of every kind is what this short run needs.
    assert out["hostile_messages"] >= 4_000
    assert len(out["kinds"]) == 8  # every kind of hostile message was sent
    assert out["fusion_alive"]
    legit = out["legit"]
    assert legit["labels_identical_to_offline"]
    assert legit["frames_lost"] == 0
    assert legit["frames_decided"] == legit["frames_sent"] > 0


def test_a_flooding_sensor_costs_the_others_no_frames(tmp_path: Path, expected: Expected) -> None:
    out = scenario_flood(FaultSettings(flood_seconds=3.0, run_dir=tmp_path), expected)
    assert out["flood_messages"] > 500
    legit = out["legit"]
    assert legit["frames_lost"] == 0
    assert legit["labels_identical_to_offline"]
    # In this short run the attacker shares the test process and the 2 CPUs with everything else, so the tail of
    # the latency is noisy; most frames still make the deadline (the full bench reports p99: reports/faults.json).
    assert legit["within_deadline"] >= 0.75


def test_a_killed_fusion_answers_again_within_seconds(tmp_path: Path, expected: Expected) -> None:
    # The bar of the full bench is 5 s (reports/faults.json has its figure); a restart here shares the CPUs with the
    # rest of the suite and loads torch and the model from cold, so this short check allows 10 s.
    out = scenario_fusion_kill(FaultSettings(kill_runs=1, run_dir=tmp_path, recover_s=10.0), expected)
    assert out["all_within_bar"], out["first_result_s"]
    assert out["legit"]["labels_identical_to_offline"]


def test_no_account_can_take_over_another_clients_connection(tmp_path: Path, expected: Expected) -> None:
    # Production config: the attacker's account connects with the fusion agent's and the sensors' client ids (and,
    # over TLS, their user names): every attempt is accepted as the attacker itself, no victim is disconnected.
    out = scenario_takeover(FaultSettings(run_dir=tmp_path), expected, repeats=1, run_s=16.0)
    assert out["attempts"] == out["accepted"] == 2 * len(out["client_ids_tried"])
    assert out["victim_offline_events"] == 0
    assert out["victim_connections_closed_by_broker"] == 0
    assert out["legit"]["frames_lost"] == 0
    assert out["legit"]["labels_identical_to_offline"]


def test_one_accounts_connections_cannot_exhaust_the_listeners(tmp_path: Path, expected: Expected) -> None:
    # 600 TLS and 80 loopback connections from one device's credentials (the listeners allow 512 and 64): each new
    # one replaces the account's previous one, so one is left, a device that was not connected yet still joins, and
    # the running agents are untouched.
    out = scenario_exhaustion(FaultSettings(run_dir=tmp_path), expected, run_s=30.0)
    assert out["accepted"] == out["connections_attempted"] == 680
    assert out["attacker_connections_still_open"] == 1
    assert out["newcomer_joined"]
    assert out["victim_offline_events"] == 0
    assert out["legit"]["frames_lost"] == 0
