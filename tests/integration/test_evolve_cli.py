"""A tiny end-to-end evolve run, then a build of its kept variants, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge_service.repository import load_catalog, verified_artifact_path
from edge_service.runtime.ort_engine import OrtEngine

pytestmark = [pytest.mark.integration, pytest.mark.slow]
_EVOLVED: dict[str, object] = {}  # the tiny evolve run's output, reused across tests


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
    _EVOLVED["path"] = evolved  # the next test fits a front from it
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
        "--front",
        "shipped",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    catalog = load_catalog(engines / "fashion")
    ids = {v.id for v in catalog.variants}
    assert ids == {f"{n}@{p}" for n in networks for p in ("fp32", "int8")}  # once each
    assert catalog.build["front"]["mode"] == "shipped" and catalog.build["complete"]
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


def test_build_fits_the_front_to_this_device_when_front_is_device(tiny_weights, tmp_path):
    evolved = _EVOLVED.get("path")
    if evolved is None:
        pytest.skip("needs the tiny evolve run of the test above")
    engines = tmp_path / "engines"
    args = [
        "build", "--engines-dir", str(engines), "--weights", str(tiny_weights),
        "--evolved", str(evolved), "--eval-limit", "200", "--fit-runs", "5",
        "--max-kept", "3", "--json",
    ]  # fmt: skip
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    family = engines / "fashion"
    catalog = load_catalog(family)
    front = json.loads((family / "front.json").read_text())
    from edge_service.device import current

    assert catalog.build["complete"] and catalog.build["front"]["mode"] == "device"
    assert front["device"] == current().id == catalog.build["device"]["id"]
    kept = catalog.build["front"]["kept"]
    assert kept == [k["id"] for k in front["kept"]] and 1 <= len(kept) <= 3
    ids = {v.id for v in catalog.variants}
    assert "base@fp32" in ids
    for k in kept:  # each kept path is built at its precision, with its FP32 reference
        assert k in ids and k.split("@")[0] + "@fp32" in ids
    for v in catalog.variants:
        assert current().id in v.profiles  # measured here, keyed by this device
        assert v.status in ("servable", "rejected", "dominated")
    progress = json.loads((family / "build-progress.json").read_text())
    assert progress["stage"] == "complete" and progress["device"] == current().id

    again = _cli(*args)  # complete and current: nothing to build, no search again
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["up_to_date"] is True
