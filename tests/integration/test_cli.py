"""The CLI as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_service", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_the_verbs_when_run_without_arguments() -> None:
    out = _cli("--help").stdout
    for verb in ("train", "build", "serve", "monitor", "bench"):
        assert verb in out


def test_second_build_builds_nothing_when_inputs_unchanged(engines_dir) -> None:
    r = _cli(
        "build",
        "--engines-dir",
        str(engines_dir),
        "--eval-limit",
        "1000",
        "--only",
        "base",
        "--only",
        "dw-dw-dw",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["up_to_date"] is True


def test_build_says_what_to_do_when_weights_missing(tmp_path) -> None:
    r = _cli("build", "--engines-dir", str(tmp_path), "--weights", str(tmp_path / "no.pt"))
    assert r.returncode == 2
    assert "edge-service train" in r.stderr


def test_serve_refuses_with_advice_when_family_not_built(tmp_path) -> None:
    r = _cli("serve", "--engines-dir", str(tmp_path))
    assert r.returncode == 2
    assert "edge-service build" in r.stderr


def test_tiny_training_run_writes_loadable_weights_when_configured_small(tmp_path, fashion_dir):
    pytest.importorskip("torch")
    out = tmp_path / "tiny.pt"
    r = _cli(
        "train",
        "--tiny",
        "--epochs",
        "1",
        "--train-limit",
        "512",
        "--test-limit",
        "256",
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["epochs"] == 1 and 0.0 <= summary["test_top1"] <= 1.0
    from edge_service.evolve.train import load_weights

    _model, spec, meta = load_weights(out)
    assert spec.size == 28 and meta["params"] == summary["params"]


def _simulate_setup(tmp_path, mode: str = "MODE_15W"):
    """A catalog with profiles on this machine (MAXN) and on a board 'orin-test'
    (MODE_15W), and a 6-context trace of that board in ``mode``."""
    from support import PROFILED

    from edge_service.hostinfo import device_id
    from edge_service.monitor.context import Context, PowerMode
    from edge_service.repository import parse_catalog, save_catalog

    data = PROFILED.model_dump(mode="json")
    for variant in data["variants"]:
        maxn = variant["profiles"]["dev"]["MAXN"]
        variant["profiles"] = {device_id(): {"MAXN": maxn}, "orin-test": {"MODE_15W": maxn}}
    (tmp_path / "fashion").mkdir()
    save_catalog(tmp_path / "fashion", parse_catalog(data))
    trace = tmp_path / "trace.jsonl"
    ctx = {"source": "trace", "cpu_online": 4, "cpu_load": 0.2, "mem_total_mb": 8000}
    lines = [
        Context(t=float(t), mem_available_mb=4000, power_mode=PowerMode(2, mode), **ctx)
        for t in range(6)
    ]
    trace.write_text("".join(json.dumps(c.to_dict()) + "\n" for c in lines))
    return ["simulate", "--trace", str(trace), "--engines-dir", str(tmp_path)]


def _words(text: str) -> str:
    """``text`` with rich's line wrapping undone."""
    return " ".join(text.split())


def test_simulate_says_contexts_are_unpredictable_when_trace_mode_has_no_profile_here(tmp_path):
    r = _cli(*_simulate_setup(tmp_path), "--latency-budget", "2")
    assert r.returncode == 0, r.stderr
    out = _words(r.stdout)
    assert "unpredictable" in out and "100.0%" in out
    assert "power mode 'MODE_15W' has no profile on device" in out
    assert "6 of 6 contexts unpredictable" in out
    assert "edge-service profile --modes 2" in out and "--profiles-device" in out
    assert "orin-test" in out


def test_simulate_scores_the_trace_when_profiles_device_is_the_boards(tmp_path):
    args = _simulate_setup(tmp_path)
    here = json.loads(_cli(*args, "--json").stdout)
    assert [s["unpredictable_rate"] for s in here["strategies"]] == [1.0] * 4
    assert [s["slo_violation_rate"] for s in here["strategies"]] == [None] * 4
    assert here["unprofiled_modes"][0]["mode"] == "MODE_15W" and here["notes"]
    r = _cli(*args, "--profiles-device", "orin-test", "--latency-budget", "2", "--json")
    assert r.returncode == 0, r.stderr
    board = json.loads(r.stdout)
    assert board["device"] == "orin-test" and board["notes"] == []
    for s in board["strategies"]:
        assert s["unpredictable_rate"] == 0 and s["scored_contexts"] == 6
        assert s["slo_violation_rate"] == 0 and s["max_extrapolation"] == 1.0


def test_simulate_refuses_listing_known_devices_when_profiles_device_is_unknown(tmp_path):
    from edge_service.hostinfo import device_id

    r = _cli(*_simulate_setup(tmp_path), "--profiles-device", "xavier-nx")
    assert r.returncode == 2
    err = _words(r.stderr)
    assert "no variant of family 'fashion' has profiles on device 'xavier-nx'" in err
    assert "orin-test" in err and device_id() in err
