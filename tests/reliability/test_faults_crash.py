"""Fault: ``edge-service build`` and ``edge-service evolve`` killed with SIGKILL mid-run.

Each run is a real CLI subprocess killed at a point chosen in one of two ways: the moment
an artifact's temp file appears (in the middle of a write: ONNX export, INT8 quantization,
checkpoint), or at a random time. After every kill nothing half-written may be there to be
read: the catalog is absent, the old one or the new one, every ONNX file and calibration
cache that is visible is complete, the checkpoint and the evolved weights load, and only
hidden temp files (which nothing reads, and the next build sweeps) may be left over. Then
the next run must work, and the family must serve.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from fault_support import after, png_frame, record, run_killed, temp_files, writing

from edge_service.config import Settings
from edge_service.errors import CatalogError
from edge_service.monitor.context import Context
from edge_service.monitor.replay import ReplaySource
from edge_service.repository import Catalog, load_catalog, verified_artifact_path
from edge_service.server.service import start_service

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "edge_service"]
NETWORK = "dw-dw-dw"  # the committed family's fastest network: a build takes seconds


def _build_cmd(engines: Path, *extra: str) -> list[str]:
    return [
        *CLI,
        "build",
        "--engines-dir",
        str(engines),
        "--only",
        NETWORK,
        "--calibration-method",
        "minmax",
        "--eval-limit",
        "200",
        *extra,
    ]


def _catalog_or_none(family: Path) -> Catalog | None:
    if not (family / "catalog.json").exists():
        return None
    return load_catalog(family)  # a torn catalog would fail validation here


def _check_nothing_half_written(family: Path, cache: Path, old: Catalog | None) -> int:
    """The invariants after a kill (see the module docstring); returns the temp files left."""
    catalog = _catalog_or_none(family)
    if catalog is not None and old is not None:
        assert catalog == old or {v.id for v in catalog.variants} == {v.id for v in old.variants}
    for variant in catalog.variants if catalog else []:
        try:
            verified_artifact_path(family, variant.artifact)
        except CatalogError as exc:  # refused, never loaded; the next build repairs it
            assert "rebuild with `edge-service build`" in exc.message
    for model in family.rglob("*.onnx"):  # every visible ONNX file is a whole one
        if not model.name.startswith("."):
            onnx.checker.check_model(onnx.load(str(model)))
    for ranges in cache.glob("*.json"):  # and every calibration cache a whole one
        json.loads(ranges.read_text())
    return len(temp_files(family))


def _serves(engines: Path) -> None:
    """Start the service as `serve` does and run one frame through it."""
    calm = Context(
        t=0.0, source="replay", cpu_online=2, cpu_load=0.1, mem_available_mb=1e3, mem_total_mb=2e3
    )
    service = start_service(Settings(engines_dir=engines), source=ReplaySource([calm]))
    try:
        frame = png_frame()

        def prepare(variant_id: str) -> np.ndarray:
            return service.preprocess(variant_id).from_bytes(frame)

        result = service.batcher.submit(prepare, 1).result(timeout=60)
        assert result.output.shape == (1, 10)
    finally:
        service.close()


@pytest.mark.slow
def test_build_killed_at_any_point_leaves_old_or_new_catalog_and_the_next_build_serves(
    tmp_path: Path, fashion_dir: Path
) -> None:
    pytest.importorskip("torch")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    engines, log = tmp_path / "engines", tmp_path / "build.log"
    family, cache = engines / "fashion", tmp_path / "calibration-cache"
    env = os.environ | {"EDGE_CALIBRATION_CACHE": str(cache)}
    kills, temps = [], []  # when each run was killed; temp files left after it
    # a build here takes 4 s or more: the second file is written about 3 s in
    for trigger in (writing(family, 1), writing(family, 2), after(rng.uniform(1.5, 3.0))):
        kills.append(run_killed(_build_cmd(engines), log, trigger, env))
        temps.append(_check_nothing_half_written(family, cache, None))

    started = time.monotonic()
    done = subprocess.run(_build_cmd(engines, "--json"), capture_output=True, text=True, env=env)
    took = time.monotonic() - started
    assert done.returncode == 0, f"seed {seed}: {done.stderr[-2000:]}"
    built = load_catalog(family)
    assert temp_files(family) == []  # the interrupted writes' leftovers were swept
    _serves(engines)

    # a forced rebuild over the served family, killed: the catalog must stay whole
    # (killed somewhere inside it, however fast this machine builds)
    when = after(rng.uniform(0.3, 0.8) * took)
    kills.append(run_killed(_build_cmd(engines, "--force"), log, when, env))
    temps.append(_check_nothing_half_written(family, cache, built))
    final = subprocess.run(_build_cmd(engines, "--json"), capture_output=True, text=True, env=env)
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-2000:]}"
    for variant in load_catalog(family).variants:
        verified_artifact_path(family, variant.artifact)
    _serves(engines)
    killed = [k for k in kills if k is not None]
    record("build-kill-9", seed=seed, kills=len(killed), at_s=killed, temp_files_left=temps)
    assert len(killed) >= 3, f"seed {seed}: most runs must have been killed, got {kills}"


@pytest.mark.slow
def test_evolve_killed_mid_run_leaves_loadable_checkpoint_and_output_and_resumes(
    tmp_path: Path, tiny_weights: Path
) -> None:
    import torch

    from edge_service.evolve.supernet import load_supernet

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    work, log = tmp_path / "evolve", tmp_path / "evolve.log"
    work.mkdir()
    out, ckpt = work / "evolved.pt", work / "evolve.ckpt"
    cmd = [
        *CLI,
        "evolve",
        "--base-weights",
        str(tiny_weights),
        "--out",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--branches",
        "id,dw",
        "--resolutions",
        "28",
        "--precision",
        "fp32",
        "--distill-epochs",
        "2",
        "--finetune-epochs",
        "1",
        "--train-limit",
        "256",
        "--val-size",
        "100",
        "--max-kept",
        "2",
        "--profile-runs",
        "5",
        "--threads",
        "1",
    ]
    triggers = [writing(work, 1), writing(work, 2), after(rng.uniform(4.0, 9.0))]
    kills = []
    for trigger in triggers:
        kills.append(run_killed(cmd, log, trigger))
        if ckpt.exists():  # atomically replaced: always a whole checkpoint
            assert torch.load(ckpt, map_location="cpu", weights_only=False)["epochs_done"] >= 1
        if out.exists():
            load_supernet(out)
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, f"seed {seed}: {done.stderr[-2000:]}"
    assert "resuming evolve" in done.stderr  # the training the kills cut short was kept
    _, _, kept, _ = load_supernet(out)
    assert kept
    killed = [k for k in kills if k is not None]
    record("evolve-kill-9", seed=seed, kills=len(killed), at_s=killed)
    assert len(killed) >= 2, f"seed {seed}: most runs must have been killed, got {kills}"
