"""The HTTP API honours the build gate, in process (the app's real lifespan, real ONNX
Runtime engines of a tiny network): a rejected variant is listed as such, never served,
and every way of pinning it gets 409 with the gate's reason; a dominated one is never the
controller's choice but an operator may pin it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from support import NOW

from edge_service.config import Settings
from edge_service.hostinfo import device_id
from edge_service.monitor.context import Context
from edge_service.monitor.replay import ReplaySource
from edge_service.repository import Catalog, make_artifact, parse_catalog, save_catalog
from edge_service.server.app import create_app
from edge_service.variants import VariantSpec

TOKEN = "gate-test-control-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE, INT8, DOMINATED = "base@fp32", "base@int8", "dw-id@fp32"
REASON = "int8 top-1 0.8504 is 8.09 points below fp32 0.9313 (limit 1.00): rejected on this device"


def _onnx(path: Path) -> Path:
    """input (batch, 1, 28, 28) -> flatten -> matmul -> logits (batch, 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((784, 2), 0.01, dtype=np.float32), "w")
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    model = helper.make_model(
        helper.make_graph(nodes, "g", [inp], [out], [w]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _variant(
    family: Path, stages: tuple[str, ...], precision: str, top1: float, ms: float, **gate: Any
) -> dict[str, Any]:
    spec = VariantSpec(stages, precision)
    artifact = make_artifact(family, _onnx(family / f"{spec.family_key}-{precision}.onnx"))
    latency = {"1": {"p50_ms": ms, "p99_ms": ms, "mean_ms": ms, "runs": 10}}
    profile = {"backend": "onnxruntime", "threads": 0, "measured_at": NOW, "latency": latency}
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "backend": "onnxruntime",
        "artifact": artifact.model_dump(),
        "accuracy": {"top1": top1, "examples": 1000},
        "profiles": {device_id(): {"default": profile}},
        **gate,
    }


def _family(family: Path) -> Catalog:
    """base@fp32 servable; base@int8 rejected (yet on paper the most accurate and the
    fastest: the serving side must follow the status, not redo the gate); dw-id@fp32
    dominated."""
    family.mkdir(parents=True)
    catalog = parse_catalog(
        {
            "schema_version": 1,
            "family": "fashion",
            "task": "classification",
            "labels": ["a", "b"],
            "input": {"shape": ["batch", 1, 28, 28], "mean": 0.5, "std": 0.5},
            "variants": [
                _variant(family, ("id", "id"), "fp32", 0.9313, 2.0),
                _variant(
                    family,
                    ("id", "id"),
                    "int8",
                    0.99,
                    0.1,
                    status="rejected",
                    status_reason=REASON,
                    precision_drop=0.0809,
                ),
                _variant(
                    family,
                    ("dw", "id"),
                    "fp32",
                    0.90,
                    3.0,
                    status="dominated",
                    status_reason=f"dominated by {BASE} on this device",
                ),
            ],
        }
    )
    save_catalog(family, catalog)
    return catalog


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    engines = tmp_path_factory.mktemp("engines")
    _family(engines / "fashion")
    calm = Context(
        t=0.0, source="replay", cpu_online=2, cpu_load=0.1, mem_available_mb=1e3, mem_total_mb=2e3
    )
    settings = Settings(
        engines_dir=engines,
        control_token=TOKEN,
        monitor_period_s=0.05,
        preload_memory_mb=1000.0,  # room to preload every neighbour: none may be rejected
        cooldown_s=0.0,
    )
    app = create_app(settings, source=ReplaySource([calm], loop=True))
    with TestClient(app) as c:
        yield c


@pytest.fixture(autouse=True)
def _unpinned(client: TestClient) -> Iterator[None]:
    yield
    assert client.put("/v1/policy", json={}, headers=AUTH).status_code == 200


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _v2_body() -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "data": [0.0] * 784}]}  # fmt: skip


def _assert_rejected(r: Any, v2: bool = False) -> None:
    assert r.status_code == 409, r.text
    body = r.json()
    code, detail = (body["code"], body["error"]) if v2 else (body["error"], body["detail"])
    assert code == "variant_rejected"
    assert INT8 in detail and REASON in detail


def test_variants_lists_each_variants_gate_status_reason_and_drop(client):
    out = {v["id"]: v for v in client.get("/v1/variants").json()["variants"]}
    assert out[BASE]["status"] == "servable" and out[BASE]["status_reason"] is None
    assert out[INT8]["status"] == "rejected" and out[INT8]["status_reason"] == REASON
    assert out[INT8]["precision_drop"] == pytest.approx(0.0809)
    assert out[DOMINATED]["status"] == "dominated"
    status = {v["id"]: v for v in client.get("/v1/status").json()["variants"]}
    assert status[INT8]["status"] == "rejected" and status[INT8]["status_reason"] == REASON


def test_controller_serves_neither_the_rejected_nor_the_dominated_variant(client):
    status = client.get("/v1/status").json()
    assert status["active_variant"] == BASE
    assert INT8 not in status["standby"] and INT8 not in status["pinned_engines"]
    budget = client.put(
        "/v1/policy", json={"latency_budget_ms": 50.0, "objective": "latency"}, headers=AUTH
    )
    assert budget.status_code == 200, budget.text
    assert budget.json()["active_variant"] == BASE  # the fastest on paper is the rejected one
    assert INT8 not in client.get("/v1/status").json()["standby"]


def test_pin_to_a_rejected_variant_is_refused_with_409_and_the_reason(client):
    before = client.get("/v1/policy").json()
    _assert_rejected(client.post("/v1/pin", json={"variant": INT8}, headers=AUTH))
    _assert_rejected(
        client.post("/v1/pin", json={"variant": INT8, "power_mode": "default"}, headers=AUTH)
    )
    _assert_rejected(client.put("/v1/policy", json={"pins": {"*": INT8}}, headers=AUTH))
    assert client.get("/v1/policy").json() == before  # nothing changed


def test_requests_pinned_to_a_rejected_variant_get_409_in_the_shape_of_their_api(client):
    _assert_rejected(client.post(f"/v1/infer?variant={INT8}", content=_png()))
    files = [("frame", ("a.png", _png(), "image/png"))]
    _assert_rejected(client.post(f"/v1/infer/batch?variant={INT8}", files=files))
    r = client.post(f"/v2/models/fashion/versions/{INT8}/infer", json=_v2_body())
    _assert_rejected(r, v2=True)
    ready = client.get(f"/v2/models/fashion/versions/{INT8}/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert client.get(f"/v2/models/fashion/versions/{INT8}").status_code == 200  # still listed


def test_a_dominated_variant_may_be_pinned_by_an_operator_and_by_a_request(client):
    r = client.post("/v1/pin", json={"variant": DOMINATED}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["active_variant"] == DOMINATED
    one = client.post(f"/v1/infer?variant={DOMINATED}", content=_png())
    assert one.status_code == 200 and one.json()["variant"] == DOMINATED
    v2 = client.post(f"/v2/models/fashion/versions/{DOMINATED}/infer", json=_v2_body())
    assert v2.status_code == 200, v2.text
    assert client.get(f"/v2/models/fashion/versions/{DOMINATED}/ready").status_code == 200


def test_an_unknown_variant_is_still_404_not_409(client):
    r = client.post("/v1/pin", json={"variant": "nope@fp32"}, headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
