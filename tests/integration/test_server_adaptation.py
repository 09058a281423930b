"""A server driven by a replayed board trace: its decisions follow the trace."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from support import run_server

pytestmark = pytest.mark.integration
WAIT_S = 60.0  # a bound on waiting for what the loop does, not an expected speed


def _trace(path, loads):
    lines = [
        json.dumps(
            {
                "t": float(i),
                "source": "trace",
                "cpu_online": 2,
                "cpu_load": load,
                "mem_available_mb": 3000,
                "mem_total_mb": 4000,
            }
        )
        for i, load in enumerate(loads)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_server_decisions_follow_replayed_cpu_load_when_monitor_is_a_trace(engines_dir, tmp_path):
    trace = _trace(tmp_path / "day.jsonl", [0.1, 0.1, 0.95, 0.95])
    reasons: set[str] = set()
    with run_server(
        engines_dir,
        tmp_path / "server.log",
        EDGE_MONITOR_SOURCE="replay",
        EDGE_MONITOR_TRACE=str(trace),
        EDGE_MONITOR_REPLAY_SPEED="4",
    ) as url:
        deadline = time.monotonic() + WAIT_S  # the trace repeats every second
        while time.monotonic() < deadline and len(reasons) < 2:
            status = httpx.get(f"{url}/v1/status", timeout=30).json()
            assert status["context"]["source"] == "trace"
            reasons.add(status["decision"]["reason"].split(" ")[0])
            time.sleep(0.1)
        # the fastest by the profiles the catalog measured, among the controller's own
        # targets (a build gate may set some aside on this machine)
        targets = [v for v in status["variants"] if v.get("status", "servable") == "servable"]
        fastest = min(targets, key=lambda v: v["latency_p50_ms"])["id"]
        while status["decision"]["constrained"] is False and time.monotonic() < deadline:
            time.sleep(0.05)
            status = httpx.get(f"{url}/v1/status", timeout=30).json()
        assert status["decision"]["constrained"] is True
        assert status["decision"]["variant_id"] == fastest
    assert reasons == {"no", "cpu"}  # "no pressure -> most accurate", "cpu load ... -> fastest"


def test_server_refuses_to_start_when_replay_trace_missing(engines_dir, tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "edge_service", "serve", "--engines-dir", str(engines_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"EDGE_MONITOR_SOURCE": "replay", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 2
    assert "EDGE_MONITOR_TRACE" in r.stderr


def test_server_runs_on_one_core_when_started_in_emulated_min_power_mode(engines_dir, tmp_path):
    import os

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs at least two usable cores to see the MIN mode pin one")
    with run_server(
        engines_dir, tmp_path / "server.log", EDGE_POWER_MODE="2", EDGE_MONITOR_SOURCE="linux"
    ) as url:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            ctx = httpx.get(f"{url}/v1/status", timeout=30).json()["context"]
            if ctx and ctx["power_mode"]:
                break
            time.sleep(0.2)
        assert ctx["power_mode"] == {"id": 2, "name": "MIN"}
        assert ctx["cpu_online"] == 1  # the process is pinned to the mode's single core
        r = httpx.post(f"{url}/v1/infer?width=28&height=28", content=bytes(784), timeout=30)
        assert r.status_code == 200


def test_server_follows_budget_policy_when_a_latency_budget_is_set(engines_dir, tmp_path):
    with run_server(
        engines_dir,
        tmp_path / "server.log",
        EDGE_LATENCY_BUDGET_MS="50",
        EDGE_MONITOR_SOURCE="linux",
    ) as url:
        r = httpx.post(f"{url}/v1/infer?width=28&height=28", content=bytes(784), timeout=30)
        assert r.status_code == 200
        status = httpx.get(f"{url}/v1/status", timeout=30).json()
    assert status["decision"]["constrained"] is False  # 50 ms fits every variant here
    assert status["active_variant"].startswith("base@")  # so the most accurate serves
    assert "feasible" in status["decision"]["reason"]


def test_status_judges_the_served_variant_on_its_own_calls(engines_dir, tmp_path):
    """After 100+ served calls the active variant has a verdict against the budget (a
    generous one here: every call fits, so it is compliant)."""
    with run_server(
        engines_dir,
        tmp_path / "server.log",
        EDGE_LATENCY_BUDGET_MS="200",
        EDGE_MONITOR_SOURCE="linux",
        EDGE_THREAD_FALLBACK="false",  # this test's own load must not change the regime
    ) as url:
        pin = httpx.post(f"{url}/v1/pin", json={"variant": "base@fp32"}, timeout=30)
        assert pin.status_code == 200, pin.text  # nothing moves: one variant's record
        before = httpx.get(f"{url}/v1/status", timeout=30).json()
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(130):
                r = client.post("/v1/infer?width=28&height=28", content=bytes(784))
                assert r.status_code == 200
        status = httpx.get(f"{url}/v1/status", timeout=30).json()
    assert before["served_slo"] is None  # nothing served yet
    slo = status["served_slo"]
    assert status["active_variant"] == "base@fp32"
    assert slo is not None and slo["calls"] >= 100, slo
    assert slo["verdict"] == "compliant" and slo["p99_ms"] <= 200
