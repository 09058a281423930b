"""Faults: an engine file corrupted on disk; an engine that fails to load or runs out of
memory.

The corrupted file is served by a real ``edge-service serve`` and repaired by a real
``edge-service build``. The load failures are injected at the one place a backend can
fail, the engine loader: the real ONNX Runtime loader, wrapped so that one variant's load
raises what a backend raises (MemoryError from an allocation, EngineError, a backend's own
RuntimeError); the pool, the controller, the batcher and the engines are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fault_support import (
    background_traffic,
    copy_family,
    family_catalog,
    flip_byte,
    http_sender,
    most_accurate,
    png_frame,
    record,
    serve,
    wait_for,
)
from support import calm_trace

from edge_service.config import Settings
from edge_service.control.limits import Policy
from edge_service.errors import EngineError, NotReadyError
from edge_service.monitor.context import Context
from edge_service.monitor.replay import ReplaySource
from edge_service.repository import Catalog, load_catalog, verified_artifact_path
from edge_service.runtime.engine import Engine
from edge_service.server.engines import engine_loader
from edge_service.server.service import Service, start_service

# --- an engine file corrupted on disk -------------------------------------------------------


def _v2_body(catalog: Catalog) -> dict[str, object]:
    shape = [1, *(int(d) for d in catalog.input.shape[1:])]
    size = shape[1] * shape[2] * shape[3]
    return {
        "inputs": [
            {"name": catalog.input.name, "shape": shape, "datatype": "FP32", "data": [0.0] * size}
        ]
    }


def _health(client: httpx.Client) -> dict[str, bool]:
    return {v["id"]: v["healthy"] for v in client.get("/v1/variants").json()["variants"]}


def _build(engines: Path, catalog: Catalog) -> subprocess.CompletedProcess[str]:
    """``edge-service build`` as the session fixture built the family (same build key)."""
    networks = sorted({v.variant_spec.family_key for v in catalog.variants})
    examples = next(v.accuracy.examples for v in catalog.variants if v.accuracy)
    cmd = [sys.executable, "-m", "edge_service", "build", "--engines-dir", str(engines)]
    cmd += [a for n in networks for a in ("--only", n)]
    cmd += ["--eval-limit", str(examples), "--json"]
    env = os.environ | {"EDGE_CALIBRATION_CACHE": str(engines / "calibration-cache")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.integration
def test_corrupt_engine_is_unhealthy_while_others_serve_and_build_rebuilds_only_that_file(
    engines_dir: Path, tmp_path: Path
) -> None:
    engines = copy_family(engines_dir, tmp_path / "engines")
    catalog = family_catalog(engines)
    bad = most_accurate(catalog)  # what the controller serves first on an idle board
    flip_byte(engines / "fashion" / catalog.variant(bad).artifact.path)
    good = [v.id for v in catalog.variants if v.id != bad]

    # an idle board (replayed): the controller tries the most accurate, the corrupt one,
    # first. On a live busy board it would start on the fastest and meet the corrupt file
    # only when preloading it on standby, which records no switch event.
    idle = {"EDGE_MONITOR_SOURCE": "replay", "EDGE_MONITOR_TRACE": str(calm_trace(tmp_path / "c"))}
    with serve(engines, tmp_path / "corrupt.log", **idle) as served:
        client = httpx.Client(base_url=served.url, timeout=60)
        with background_traffic(http_sender(served.url)) as traffic:
            assert client.get("/v1/status").json()["active_variant"] in good
            pin = client.post("/v1/pin", json={"variant": bad, "power_mode": "*"})
            assert pin.status_code == 200, pin.text  # the operator drives the controller to it
            health = _health(client)
            ready = {
                v.id: client.get(f"/v2/models/fashion/versions/{v.id}/ready").status_code
                for v in catalog.variants
            }
            body = _v2_body(catalog)
            pinned_v2 = client.post(f"/v2/models/fashion/versions/{bad}/infer", json=body)
            pinned_v1 = client.post(f"/v1/infer?variant={bad}", content=png_frame())
            events = client.get("/v1/status?events=1000").json()["events"]
            wait_for(lambda: traffic.ok >= 50, what="50 frames served")
        assert served.proc.poll() is None  # no crash
    record("corrupt-engine", requests=traffic.sent, failed=len(traffic.failed), faults=1)
    assert health == {v: v != bad for v in health}
    assert ready == {v: 503 if v == bad else 200 for v in ready}
    for response in (pinned_v2, pinned_v1):
        assert response.status_code == 503
        assert f"{bad} is unhealthy" in response.text and "checksum" in response.text
    assert any(e["to_variant"] == bad and "checksum" in (e["error"] or "") for e in events)
    assert traffic.failed == [], traffic.failed[:3]

    built = _build(engines, catalog)
    assert built.returncode == 0, built.stderr[-2000:]
    assert json.loads(built.stdout)["built"] == [bad]  # that file only, not the family
    assert load_catalog(engines / "fashion") == catalog  # byte for byte: every entry stands
    verified_artifact_path(engines / "fashion", catalog.variant(bad).artifact)

    with serve(engines, tmp_path / "rebuilt.log") as served:  # the restart after the repair
        client = httpx.Client(base_url=served.url, timeout=60)
        assert all(_health(client).values())
        assert client.get(f"/v2/models/fashion/versions/{bad}/ready").status_code == 200
        r = client.post(f"/v2/models/fashion/versions/{bad}/infer", json=_v2_body(catalog))
        assert r.status_code == 200, r.text


# --- an engine that fails to load or runs out of memory --------------------------------------


Loader = Callable[[str], Engine]


def _failing(loader: Loader, variant: str, exc: BaseException) -> Loader:
    """The real loader, except that loading ``variant`` raises ``exc``."""

    def load(variant_id: str) -> Engine:
        if variant_id == variant:
            raise exc
        return loader(variant_id)

    return load


@pytest.fixture
def calm_service(engines_dir: Path) -> Iterator[Service]:
    """The service on a calm board (a replayed context: 10% CPU, memory to spare); no
    engines on standby, so that a switch has to load."""
    calm = Context(
        t=0.0,
        source="replay",
        cpu_online=4,
        cpu_load=0.1,
        mem_available_mb=3000.0,
        mem_total_mb=4000.0,
    )
    settings = Settings(
        engines_dir=engines_dir, monitor_period_s=0.05, intra_op_threads=1, preload_memory_mb=0
    )
    service = start_service(settings, source=ReplaySource([calm], loop=True))
    yield service
    service.close()


@pytest.mark.parametrize(
    "fault",
    [
        MemoryError(),  # an allocation failed while creating the session
        EngineError("ONNX Runtime cannot load it: bad graph"),
        RuntimeError("CUDA error: out of memory"),  # a backend's own exception type
    ],
    ids=["memory-error", "engine-error", "backend-runtime-error"],
)
def test_current_engine_keeps_serving_and_variant_is_unhealthy_when_a_load_fails(
    calm_service: Service, fault: BaseException
) -> None:
    service = calm_service
    active = service.pool.active_id
    # a variant an operator may pin (the build gate may reject an INT8 one on some CPUs)
    pinnable = [v for v in service.catalog.variants if getattr(v, "status", None) != "rejected"]
    target = next(v.id for v in pinnable if v.id != active)
    real = engine_loader(service.catalog, service.settings.family_dir, 1)
    service.pool.set_loader(_failing(real, target, fault))
    frame = png_frame(3)

    def prepare(variant_id: str) -> np.ndarray:
        return service.preprocess(variant_id).from_bytes(frame)

    def send(_: int, variant: str | None = None) -> None:
        service.batcher.submit(prepare, 1, variant).result(timeout=60)

    with background_traffic(send) as traffic:
        service.set_policy(Policy(pins={"*": target}))  # the controller is told to switch
        ticks = service.loop.state().ticks
        wait_for(lambda: service.loop.state().ticks >= ticks + 5, what="5 more ticks")
        with pytest.raises(NotReadyError, match=f"{target} is unhealthy") as pinned:
            send(0, target)
        wait_for(lambda: traffic.ok >= 30, what="30 frames served")
    record(f"load-{type(fault).__name__}", requests=traffic.sent, failed=len(traffic.failed))
    assert service.pool.active_id == active
    assert target in service.pool.unhealthy
    failed = [e for e in service.events.recent() if e.to_variant == target]
    assert len(failed) == 1 and failed[0].error  # tried once, not on every tick
    if isinstance(fault, MemoryError):
        assert failed[0].error.startswith(f"out of memory loading {target}")
        assert "out of memory" in pinned.value.message
    assert service.loop._thread is not None and service.loop._thread.is_alive()
    assert traffic.failed == [], traffic.failed[:3]
