"""INT8 quantization schemes: s8 (symmetric, TensorRT's form) and u8 (asymmetric, ORT x86)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_service.compile.calibration import (  # noqa: E402
    calibration_cache_path,
    quantize_int8,
    write_calibration_sample,
)
from edge_service.compile.int8_scheme import choose_int8_scheme  # noqa: E402
from edge_service.compile.trt_family import TrtJob, check_trt_source  # noqa: E402
from edge_service.data.preprocess import InputSpec  # noqa: E402
from edge_service.device import current as current_device  # noqa: E402
from edge_service.errors import BuildError  # noqa: E402
from edge_service.repository import Calibration  # noqa: E402

SPEC = InputSpec("input", 8, (0.5,), (0.25,))


def _conv_model(path: Path) -> Path:
    """A real 2-layer conv net (8x8 input, 3 classes) with fixed random weights."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.5, (3, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10)
    return write_calibration_sample(pixels, labels, tmp_path / "calib", per_class=5)


def _zero_points(path: Path) -> list[np.ndarray]:
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [
        inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"
    ]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"input": x})[0])


def test_s8_quantizes_activations_symmetric_signed_when_asked(
    tmp_path: Path, images: list[Path]
) -> None:
    fp32 = _conv_model(tmp_path / "fp32.onnx")
    out = quantize_int8(fp32, tmp_path / "s8.onnx", images, SPEC, activations="s8")
    zps = _zero_points(out)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)


def test_u8_quantizes_activations_asymmetric_unsigned_when_asked(
    tmp_path: Path, images: list[Path]
) -> None:
    fp32 = _conv_model(tmp_path / "fp32.onnx")
    out = quantize_int8(fp32, tmp_path / "u8.onnx", images, SPEC, activations="u8")
    zps = _zero_points(out)
    assert zps and all(z.dtype == np.uint8 for z in zps)
    assert any(z.any() for z in zps)  # asymmetric: some zero point is not 0


@pytest.mark.parametrize("scheme", ["s8", "u8"])
def test_both_schemes_stay_close_to_fp32_when_run(
    tmp_path: Path, images: list[Path], scheme: str
) -> None:
    fp32 = _conv_model(tmp_path / "fp32.onnx")
    # the weights' range this CPU needs (7 bits without VNNI: its int16 sums saturate)
    reduce_range = choose_int8_scheme(current_device(), tensorrt=False).reduce_range
    out = quantize_int8(
        fp32, tmp_path / f"{scheme}.onnx", images, SPEC, activations=scheme,
        reduce_range=reduce_range,
    )  # fmt: skip
    x = np.random.default_rng(2).normal(0, 1, (16, 1, 8, 8)).astype(np.float32)
    ref, got = _run(fp32, x), _run(out, x)
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_unknown_scheme_is_refused_with_the_choices_when_asked(
    tmp_path: Path, images: list[Path]
) -> None:
    fp32 = _conv_model(tmp_path / "fp32.onnx")
    with pytest.raises(BuildError, match=r"s8.*u8"):
        quantize_int8(fp32, tmp_path / "x.onnx", images, SPEC, activations="u4")
    assert not (tmp_path / "x.onnx").exists()


def test_cached_ranges_are_kept_apart_per_scheme_when_cached(tmp_path: Path) -> None:
    fp32 = _conv_model(tmp_path / "fp32.onnx")
    s8 = calibration_cache_path(tmp_path, fp32, "ab" * 32, "minmax", "s8")
    u8 = calibration_cache_path(tmp_path, fp32, "ab" * 32, "minmax", "u8")
    assert s8 != u8


def _job(activations: str) -> TrtJob:
    from edge_service.repository import Variant

    calib = Calibration(
        method="minmax",
        drop_by_method={},
        examples=0,
        data_sha256="0" * 64,
        activations=activations,  # type: ignore[arg-type]
    )
    source = Variant.model_construct(id="base@int8", calibration=calib)
    return TrtJob("base", "int8", source)


def test_tensorrt_refuses_an_u8_int8_source_with_what_to_do() -> None:
    with pytest.raises(BuildError, match="--int8-activations s8"):
        check_trt_source(_job("u8"))
    check_trt_source(_job("s8"))  # accepted
