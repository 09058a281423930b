"""reduce_range: 7-bit INT8 weights for x86 CPUs without VNNI, and its own calibration cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402
from support import onnx_classifier  # noqa: E402

from edge_service.compile.calibration import (  # noqa: E402
    calibration_cache_path,
    quantize_int8,
    write_calibration_sample,
)
from edge_service.data.pipeline import Preprocess  # noqa: E402
from edge_service.onnx_tools.quantize import quantize_feeds  # noqa: E402

PREP = Preprocess("rgb", "stretch", 8, (0.5,), (0.25,), "images")


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    return write_calibration_sample(pixels, np.repeat(np.arange(4), 10), tmp_path / "calib", 5)


def _weights(path: Path) -> list[np.ndarray]:
    """The quantized conv weights: int8 initializers that a DequantizeLinear feeds to a Conv."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq_out = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    weights = [inits[dq_out[c.input[1]]] for c in convs if dq_out.get(c.input[1]) in inits]
    assert weights and all(w.dtype == np.int8 for w in weights)
    return weights


@pytest.mark.parametrize("activations", ["u8", "s8"])
def test_reduce_range_keeps_weights_within_7_bits_when_asked(
    tmp_path: Path, images: list[Path], activations: str
) -> None:
    fp32 = onnx_classifier(tmp_path / "fp32.onnx", size=8, classes=3, seed=0, hidden=4)
    full = quantize_int8(fp32, tmp_path / "full.onnx", images, PREP, activations=activations)
    reduced = quantize_int8(
        fp32, tmp_path / "rr.onnx", images, PREP, activations=activations, reduce_range=True
    )
    # per-channel symmetric: each channel's largest weight lands on the range's edge
    assert max(int(np.abs(w).max()) for w in _weights(full)) == 127
    assert max(int(np.abs(w).max()) for w in _weights(reduced)) == 64


def test_quantize_feeds_passes_reduce_range_when_asked(tmp_path: Path) -> None:
    fp32 = onnx_classifier(tmp_path / "fp32.onnx", size=8, classes=3, seed=0)
    rng = np.random.default_rng(0)
    feeds = [{"images": rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    out = quantize_feeds(fp32, tmp_path / "rr.onnx", feeds, "u8", reduce_range=True)
    assert max(int(np.abs(w).max()) for w in _weights(out)) == 64


def test_cache_paths_differ_with_reduce_range_and_keep_old_names_without(tmp_path: Path) -> None:
    fp32 = onnx_classifier(tmp_path / "fp32.onnx", size=8, classes=3, seed=0)
    args = (tmp_path, fp32, "ab" * 32, "minmax")
    for activations in ("s8", "u8"):
        plain = calibration_cache_path(*args, activations)
        assert calibration_cache_path(*args, activations, reduce_range=False) == plain
        assert calibration_cache_path(*args, activations, reduce_range=True) != plain
    assert "-minmax-b" in calibration_cache_path(*args, "s8").name  # the pre-reduce_range name
    assert "-minmax-u8-b" in calibration_cache_path(*args, "u8").name
    assert "-minmax-u8-rr-b" in calibration_cache_path(*args, "u8", True).name


def test_reduce_range_gets_its_own_cache_file_when_cached(
    tmp_path: Path, images: list[Path]
) -> None:
    fp32 = onnx_classifier(tmp_path / "fp32.onnx", size=8, classes=3, seed=0)
    cache = tmp_path / "cache"
    quantize_int8(fp32, tmp_path / "a.onnx", images, PREP, cache_dir=cache)
    quantize_int8(fp32, tmp_path / "b.onnx", images, PREP, cache_dir=cache, reduce_range=True)
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 2 and sum("-rr-" in n for n in names) == 1
