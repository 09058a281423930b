"""On a Jetson: FP16 and INT8 TensorRT engines built from a tiny ONNX agree with ONNX Runtime.

Guards the TensorRT 10 build path (flags, profile, timing cache, sidecar) and the pycuda
buffers of TrtEngine on real hardware; skipped wherever TensorRT or pycuda is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorrt")
pytest.importorskip("pycuda.driver")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_service.compile.trt_builder import build_or_reuse, plan_build  # noqa: E402
from edge_service.runtime.ort_engine import OrtEngine  # noqa: E402
from edge_service.runtime.trt_cache import (  # noqa: E402
    EngineCache,
    detect_target,
    read_sidecar,
    tensorrt_available,
)
from edge_service.runtime.trt_engine import TrtEngine  # noqa: E402

CHW = (1, 28, 28)
CLASSES = 10
MAX_BATCH = 8


def _fp32_model(path: Path) -> Path:
    """Conv(1->8, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->10), batch N."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 1, 3, 3)).astype(np.float32), "cw"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "cb"),
        numpy_helper.from_array(rng.normal(0, 0.5, (CLASSES, 8)).astype(np.float32), "gw"),
        numpy_helper.from_array(np.zeros(CLASSES, np.float32), "gb"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *CHW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _qdq_model(fp32: Path, path: Path, calib: np.ndarray) -> Path:
    """Symmetric INT8 Q/DQ (zero points 0), the form TensorRT's explicit quantization reads."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    class Reader:
        def __init__(self) -> None:
            self._it = iter([{"input": calib[i : i + 4]} for i in range(0, len(calib), 4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quantize_static(
        str(fp32),
        str(path),
        Reader(),  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trt")
    calib = np.random.default_rng(1).random((32, *CHW), dtype=np.float32)
    fp32 = _fp32_model(root / "fp32.onnx")
    return {"fp16": fp32, "int8": _qdq_model(fp32, root / "int8.onnx", calib), "root": root}


def _build(models: dict[str, Path], precision: str) -> Path:
    plan = plan_build(
        models[precision],
        precision,
        detect_target(),
        input_name="input",
        chw=CHW,
        max_batch=MAX_BATCH,
        opt_batch=4,
        workspace_mb=256,
        timing_cache_dir=models["root"] / "timing",
    )
    return build_or_reuse(plan, models[precision], EngineCache(models["root"] / "engines"))


def _ort(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    with OrtEngine(onnx_path, variant_id="ref", precision="fp32") as ref:
        return ref.infer(batch)


def test_target_names_the_gpu_when_on_a_jetson() -> None:
    assert tensorrt_available()
    target = detect_target()
    assert target.trt_version.startswith("10.")
    assert target.compute_capability in {"7.2", "8.7"}  # Xavier, Orin


@pytest.mark.parametrize(
    ("precision", "tolerance"), [("fp16", 0.02), ("int8", 0.05)], ids=["fp16", "int8"]
)
def test_engine_matches_onnx_runtime_when_built_on_this_board(
    models: dict[str, Path], precision: str, tolerance: float
) -> None:
    batch = np.random.default_rng(2).random((11, *CHW), dtype=np.float32)  # > MAX_BATCH
    reference = _ort(models[precision], batch)  # int8: ORT runs the same Q/DQ graph
    with TrtEngine(_build(models, precision), variant_id="tiny", precision=precision) as engine:
        out = engine.infer(batch)
    assert out.shape == (11, CLASSES)
    scale = float(np.abs(reference).max())
    assert float(np.abs(out - reference).max()) <= tolerance * scale + 1e-3
    assert (out.argmax(1) == reference.argmax(1)).mean() >= 0.8


def test_second_build_reuses_cached_engine_when_nothing_changed(
    models: dict[str, Path],
) -> None:
    first = _build(models, "fp16")
    built_at = read_sidecar(first)["built_at"]
    assert _build(models, "fp16") == first
    assert read_sidecar(first)["built_at"] == built_at
    assert any((models["root"] / "timing").iterdir()), "timing cache saved after the build"
