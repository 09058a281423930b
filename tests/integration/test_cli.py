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
