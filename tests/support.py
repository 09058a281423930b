"""Test support: a trivial but real Engine, and a real server started in a subprocess.

Servers under test adapt on their own: a linux monitor on a busy machine sees CPU pressure
and the loop switches variants between any two requests. A test that compares the served
variant (or anything that follows it) before and after something holds the loop still
first: `calm_trace` (a replayed idle board, so the pressure rule keeps the most accurate
variant) or `hold_still` (an operator pin on a live board).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge_service.errors import EngineError
from edge_service.monitor.context import Context, PowerMode
from edge_service.repository import Catalog, parse_catalog
from edge_service.runtime.engine import EngineBase, EngineInfo
from edge_service.server.process import ServerProcess, ServerStartError
from edge_service.variants import VariantSpec


class ConstantEngine(EngineBase):
    """Returns ``value`` for every input; records ``close()``; fails once closed."""

    def __init__(self, variant_id: str, value: float = 0.0) -> None:
        self.variant_id, self.value, self.closed = variant_id, value, False

    def load(self) -> None:
        pass

    def info(self) -> EngineInfo:
        return EngineInfo(self.variant_id, "test", "fp32", "input", ("batch", 1, 4, 4), ("out",))

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        if self.closed:
            raise EngineError(f"{self.variant_id} is closed")
        return np.full((batch.shape[0], 2), self.value, dtype=np.float32)

    def close(self) -> None:
        self.closed = True


class ThreadedEngine(ConstantEngine):
    """A ConstantEngine that says it runs ``threads`` intra-op threads on ``backend``."""

    def __init__(self, variant_id: str, threads: int, backend: str = "onnxruntime") -> None:
        super().__init__(variant_id)
        self.threads, self.backend = threads, backend

    def info(self) -> EngineInfo:
        vid, backend = self.variant_id, self.backend
        return EngineInfo(vid, backend, "fp32", "x", (1,), ("y",), (), self.threads)


MAX_BODY = 65_536  # the body limit the integration server runs with
# Bounds on waits for a condition, never expectations of speed: generous enough for a
# machine 7x slower than this one, under load (a server starts in ~3 s here).
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
CALM = {
    "t": 0.0,
    "source": "trace",
    "cpu_online": 2,
    "cpu_load": 0.1,
    "mem_available_mb": 3000.0,
    "mem_total_mb": 4000.0,
}


def calm_trace(path: Path) -> Path:
    """A one-line replay trace of an idle board (10% CPU, memory to spare): served with
    ``EDGE_MONITOR_SOURCE=replay`` it keeps every tick's context the same, so the loop
    serves the most accurate variant and never switches on its own."""
    path.write_text(json.dumps(CALM) + "\n")
    return path


def servable(url: str, *preferred: str) -> str:
    """The first of ``preferred`` that the server may serve. The build's accuracy gate
    rejects an INT8 engine that loses too much against its FP32 sibling, which depends on
    the CPU (INT8 saturates on AVX2 without VNNI), and a rejected one is never served:
    a test that pins "some INT8 engine" names its FP32 sibling as the fallback."""
    variants = httpx.get(f"{url}/v1/variants", timeout=60).json()["variants"]
    status = {v["id"]: v.get("status", "servable") for v in variants}
    for variant in preferred:
        if status.get(variant, "rejected") != "rejected":
            return variant
    pytest.fail(f"none of {preferred} may be served here: {status}")


def hold_still(url: str, token: str | None = None) -> str:
    """Pin the most accurate variant in every power mode (``POST /v1/pin``), so a server
    reading a live board serves it whatever the board does; returns its id."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    variants = httpx.get(f"{url}/v1/variants", timeout=60).json()["variants"]
    # what the controller itself would serve on an idle board: healthy, and servable where
    # the catalog says (a build gate may reject or set aside some)
    usable = [v for v in variants if v["healthy"] and v.get("status", "servable") == "servable"]
    best = max(usable or variants, key=lambda v: v["accuracy"] if v["accuracy"] is not None else -1)
    r = httpx.post(
        f"{url}/v1/pin",
        json={"variant": best["id"], "power_mode": "*"},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["active_variant"] == best["id"], r.text
    return str(best["id"])


def start_server(
    engines_dir: Path, log: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
) -> ServerProcess:
    """Start ``edge-service serve --engines-dir ... [extra_args]`` on a free port
    (`edge_service.server.process.ServerProcess`), ready. A server that cannot start fails
    the test with its log."""
    server = ServerProcess(
        env or {},
        log,
        ["--engines-dir", str(engines_dir), *extra_args],
        ready_timeout_s=READY_TIMEOUT_S,
        stop_timeout_s=STOP_TIMEOUT_S,
    )
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(str(exc))
    return server


@contextmanager
def run_server(
    engines_dir: Path, log: Path, extra_args: Sequence[str] = (), **env: str
) -> Iterator[str]:
    """Start ``edge-service serve [extra_args]`` on a free port; yield its URL once ready;
    stop it."""
    full_env = {"EDGE_MONITOR_PERIOD_S": "0.2", "EDGE_MAX_BODY_BYTES": str(MAX_BODY)} | env
    server = start_server(engines_dir, log, extra_args, full_env)
    try:
        yield server.url
    finally:
        server.stop()


def onnx_classifier(path: Path, size: int, classes: int, seed: int, hidden: int = 0) -> Path:
    """images (batch, 3, size, size) -> [conv 3x3 to ``hidden``] -> conv 3x3 -> global pool
    -> logits (batch, classes); ``hidden`` makes a bigger network."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c_in, nodes, inits, x = 3, [], [], "images"
    if hidden:
        inits.append(
            numpy_helper.from_array(rng.normal(0, 0.5, (hidden, 3, 3, 3)).astype(np.float32), "w0")
        )
        nodes += [
            helper.make_node("Conv", ["images", "w0"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["hr"]),
        ]
        c_in, x = hidden, "hr"
    inits.append(
        numpy_helper.from_array(rng.normal(0, 0.5, (classes, c_in, 3, 3)).astype(np.float32), "w")
    )
    nodes += [
        helper.make_node("Conv", [x, "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["logits"]),
    ]
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    return save_onnx_graph(path, helper.make_graph(nodes, "g", [inp], [out], inits))


def save_onnx_graph(path: Path, graph: object) -> Path:
    """Save ``graph`` as a checked opset-17 model at ``path``."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_detector(
    path: Path,
    box: tuple[float, float, float, float],
    scores: tuple[float, ...],
    *,
    color_classes: bool = False,
) -> Path:
    """images (1, 3, 64, 64) -> every anchor (one per input pixel) predicts the same box
    (cx, cy, w, h) and class ``scores``: a YOLOv8-layout output (1, 4 + nc, 4096) whose
    decoding is known in advance. With ``color_classes``, class i's score at each anchor
    (i < 3) also adds the pixel's channel i (R, G, B as 0-1): a red part of a frame is
    class 0, a green part class 1, and a black frame has nothing (with zero ``scores``)."""
    from onnx import TensorProto, helper, numpy_helper

    bias = np.array([*box, *scores], dtype=np.float32)
    ch = len(bias)
    weights = np.zeros((ch, 3, 1, 1), np.float32)
    if color_classes:
        for i in range(min(3, len(scores))):
            weights[4 + i, i] = 1.0
    nodes = [
        helper.make_node("Conv", ["images", "w", "b"], ["c"]),
        helper.make_node("Reshape", ["c", "shape"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array([1, ch, 64 * 64], np.int64), "shape"),
    ]
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, ch, 64 * 64])
    return save_onnx_graph(path, helper.make_graph(nodes, "g", [inp], [out], inits))


DETECTOR_LABELS = ("person", "car")


def detector_family(folder: Path) -> Path:
    """The engines dir of a detection family ``street`` built with the CLI (``build
    --from-onnx --task detection``, FP32): an `onnx_detector` with ``color_classes``, labels
    `DETECTOR_LABELS`, so a frame's red is a person and its green a car, every one the box
    (32, 32, 20, 10) in the 64x64 input. Its input has a fixed batch of one."""
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx_detector(
        folder / "yolo-toy.onnx", (32.0, 32.0, 20.0, 10.0), (0.0, 0.0), color_classes=True
    )
    labels = folder / "labels.txt"
    labels.write_text("\n".join(DETECTOR_LABELS) + "\n")
    engines = folder / "engines"
    args = ["--from-onnx", str(model), "--family", "street", "--task", "detection"]
    args += ["--labels", str(labels), "--engines-dir", str(engines), "--precision", "fp32"]
    build = subprocess.run(
        [sys.executable, "-m", "edge_service", "build", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return engines


NOW = datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat()


def profiled_variant(stages, acc: float, ms: dict[str, float]) -> dict[str, Any]:
    spec = VariantSpec(stages, "fp32", 28, 28, "evolve")
    profile = {
        mode: {
            "backend": "onnxruntime",
            "threads": 0,
            "measured_at": NOW,
            "latency": {"1": {"p50_ms": v, "p99_ms": v * 1.2, "mean_ms": v, "runs": 10}},
        }
        for mode, v in ms.items()
    }
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "backend": "onnxruntime",
        "artifact": {"path": f"{spec.family_key}/fp32.onnx", "sha256": "0" * 64, "bytes": 1},
        "accuracy": {"top1": acc, "examples": 100},
        "profiles": {"dev": profile},
    }


def mode_context(t: float, mode: str) -> Context:
    """A calm 2-core board at time ``t`` in power mode ``mode`` (id 0 for MAXN, else 2),
    for the variants of `PROFILED`."""
    return Context(
        t=t,
        source="trace",
        cpu_online=2,
        cpu_load=0.1,
        mem_available_mb=1000,
        mem_total_mb=2000,
        power_mode=PowerMode(0 if mode == "MAXN" else 2, mode),
    )


def profiled_catalog(*variants: dict[str, Any]) -> Catalog:
    """A Fashion-shaped catalog of ``variants`` (`profiled_variant`, or any variant dict)."""
    return parse_catalog(
        {
            "schema_version": 1,
            "family": "fashion",
            "task": "classification",
            "labels": ["a"],
            "input": {"shape": ["batch", 1, 28, 28], "mean": 0.5, "std": 0.5},
            "variants": list(variants),
        }
    )


# two variants profiled in MAXN and MIN on device 'dev'
PROFILED = profiled_catalog(
    profiled_variant(("id",), 0.93, {"MAXN": 1.0, "MIN": 3.0}),
    profiled_variant(("dw",), 0.90, {"MAXN": 0.3, "MIN": 0.9}),
)


class Clock:
    """A clock a test moves by hand (``clock.t = ...``)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def serving_base(budget: float | None = 3.0) -> tuple[Any, Clock]:
    """A budget strategy (exploring) in MAXN serving base@fp32 of `PROFILED` (its profile
    fits a 3 ms budget well), learning on a hand-moved clock, with a long cooldown: only a
    violation can move it."""
    from edge_service.control.budget_strategy import BudgetStrategy, Exploration
    from edge_service.control.learner import LatencyLearner
    from edge_service.control.limits import Policy
    from edge_service.control.predictor import Predictor

    clock = Clock()
    predictor = Predictor(PROFILED, "dev", learner=LatencyLearner(clock=clock))
    policy = Policy(latency_budget_ms=budget, cooldown_s=60.0)
    s = BudgetStrategy(predictor, policy, Exploration(enabled=True))
    assert s.decide(mode_context(0.0, "MAXN"), None, None).variant_id == "base@fp32"
    return s, clock
