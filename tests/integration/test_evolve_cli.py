"""A tiny end-to-end evolve run, then a build of its kept variants, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_service.repository import load_catalog, verified_artifact_path
from edge_service.runtime.ort_engine import OrtEngine

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_service", *args], capture_output=True, text=True, timeout=600
    )


def test_tiny_evolve_then_build_gives_a_family_of_kept_variants_when_run_end_to_end(
    tiny_weights, tmp_path, test_split
):
    evolved = tmp_path / "evolved.pt"
    r = _cli(
        "evolve",
        "--base-weights",
        str(tiny_weights),
        "--out",
        str(evolved),
        "--branches",
        "id,p50,dw,mdw",
        "--resolutions",
        "28,20",
        "--distill-epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--train-limit",
        "384",
        "--val-size",
        "200",
        "--max-kept",
        "4",
        "--profile-runs",
        "10",
        "--threads",
        "1",
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    kept = [k["id"] for k in report["kept"]]
    networks = {k.split("@")[0] for k in kept}
    assert 2 <= len(kept) <= 4 and "base" in networks
    assert report["combinations"] == 4**3 * 2 * 2  # stages x resolutions x precisions
    for k in report["kept"]:
        assert k["measured_ms"] > 0 and 0 <= k["measured_top1"] <= 1
        assert k["id"].endswith(("@fp32", "@int8"))
    assert report["latency_error_pct"] >= 0

    engines = tmp_path / "engines"
    r = _cli(
        "build",
        "--engines-dir",
        str(engines),
        "--weights",
        str(tiny_weights),
        "--evolved",
        str(evolved),
        "--eval-limit",
        "200",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    catalog = load_catalog(engines / "fashion")
    ids = {v.id for v in catalog.variants}
    assert ids == {f"{n}@{p}" for n in networks for p in ("fp32", "int8")}  # once each
    for v in catalog.variants:  # each engine takes its own input resolution
        size = v.variant_spec.input_size
        from edge_service.data.preprocess import preprocess

        x = preprocess(test_split.images[:3], catalog.input.spec(size))
        with OrtEngine(
            verified_artifact_path(engines / "fashion", v.artifact),
            variant_id=v.id,
            precision=v.precision,
        ) as eng:
            assert eng.infer(x).shape == (3, 10)
