"""Test support: a trivial but real Engine, and a real server started in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge_service.errors import EngineError
from edge_service.repository import parse_catalog
from edge_service.runtime.engine import EngineBase, EngineInfo
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


MAX_BODY = 65_536  # the body limit the integration server runs with


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def run_server(
    engines_dir: Path, log: Path, extra_args: Sequence[str] = (), **env: str
) -> Iterator[str]:
    """Start ``edge-service serve [extra_args]`` on a free port; yield its URL once ready;
    stop it."""
    port = _free_port()
    full_env = os.environ | {"EDGE_MONITOR_PERIOD_S": "0.2", "EDGE_MAX_BODY_BYTES": str(MAX_BODY)}
    cmd = [
        sys.executable,
        "-m",
        "edge_service",
        "serve",
        "--port",
        str(port),
        "--engines-dir",
        str(engines_dir),
        *extra_args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env | env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server not ready in 60 s:\n{log.read_text()}")


def onnx_classifier(path: Path, size: int, classes: int, seed: int, hidden: int = 0) -> Path:
    """images (batch, 3, size, size) -> [conv 3x3 to ``hidden``] -> conv 3x3 -> global pool
    -> logits (batch, classes); ``hidden`` makes a bigger network."""
    import onnx
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
    graph = helper.make_graph(nodes, "g", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


NOW = datetime(2026, 1, 1, tzinfo=timezone.utc).isoformat()


def _profiled_variant(stages, acc: float, ms: dict[str, float]) -> dict[str, Any]:
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


# two variants profiled in MAXN and MIN on device 'dev'
PROFILED = parse_catalog(
    {
        "schema_version": 1,
        "family": "fashion",
        "task": "classification",
        "labels": ["a"],
        "input": {"shape": ["batch", 1, 28, 28], "mean": 0.5, "std": 0.5},
        "variants": [
            _profiled_variant(("id",), 0.93, {"MAXN": 1.0, "MIN": 3.0}),
            _profiled_variant(("dw",), 0.90, {"MAXN": 0.3, "MIN": 0.9}),
        ],
    }
)
