"""Static INT8 Q/DQ quantization with ONNX Runtime: the fixed choices every INT8 engine here
is made with, and quantization from ready-made feeds.

Weights are INT8 per channel and symmetric (7-bit with ``reduce_range``, for x86 CPUs
without VNNI); activations are ``s8`` (symmetric, what TensorRT takes) or ``u8``
(asymmetric, faster in ONNX Runtime's x86 kernels). The compiler calibrates on image
folders (``edge_service.compile.calibration``); the evolve search quantizes candidate
branches on feature tensors (`quantize_feeds`). ``onnxruntime.quantization`` is imported
inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_service.errors import BuildError
from edge_service.fsutil import atomic_write_with

ACTIVATIONS: tuple[str, ...] = ("s8", "u8")
# layers with weights: where a network's post-processing head ends, walking back from its
# outputs (see `head_nodes`)
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def head_nodes(model_path: Path) -> list[str]:
    """The nodes between a network's last weighted layers and its outputs: a detector's
    decode (DFL softmax, anchor arithmetic, sigmoid, and the Concat that joins box
    coordinates in pixels with scores in 0..1). They stay FP32 in an INT8 engine: one
    quantization scale over 0..640 and 0..1 at once rounds every score to zero. A
    classifier ending in its Gemm has none."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    weights = {init.name for init in graph.initializer}
    head: dict[str, None] = {}  # ordered set
    todo = [o.name for o in graph.output]
    seen: set[str] = set()
    while todo:
        tensor = todo.pop()
        node = producer.get(tensor)
        if tensor in seen or node is None or node.op_type in WEIGHTED_OPS:
            continue
        seen.add(tensor)
        head[node.name] = None
        todo += [t for t in node.input if t and t not in weights]
    return list(head)


class FeedReader:
    """Adapter from an iterator of feeds to ORT's CalibrationDataReader interface."""

    def __init__(self, feeds: Iterator[dict[str, np.ndarray]]) -> None:
        self._feeds = feeds

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_feeds(
    fp32: Path,
    out: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    activations: str = "u8",
    reduce_range: bool = False,
) -> Path:
    """Min-max static INT8 Q/DQ of ``fp32`` calibrated on ready-made ``feeds``.

    For tensors that are not images (a branch's input features in the evolve search) and
    for quick probes; ``edge_service.compile.calibration.quantize_int8`` is the build's path
    from image files.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if activations not in ACTIVATIONS:
        raise BuildError(f"INT8 activation scheme {activations!r} is not one of {ACTIVATIONS}")
    symmetric = activations == "s8"

    def write(tmp: Path) -> None:
        prepped = tmp.with_suffix(".pre.onnx")
        try:
            quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
            reader = FeedReader(iter(feeds))
            static_qdq(prepped, tmp, reader, CalibrationMethod.MinMax, symmetric, reduce_range)
        finally:
            prepped.unlink(missing_ok=True)

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print
            atomic_write_with(out, write)
    except Exception as exc:
        raise BuildError(f"INT8 quantization of {fp32} failed: {exc}") from exc
    return out


def static_qdq(
    prepped: Path,
    out: Path,
    reader: FeedReader | None,
    method: Any,
    symmetric: bool,
    reduce_range: bool = False,
    **more: Any,
) -> None:
    """ONNX Runtime's static Q/DQ with the fixed choices of every INT8 engine here: INT8 weights per
    channel, symmetric, 7-bit with ``reduce_range``; activations s8 symmetric or u8
    asymmetric (``reduce_range`` leaves activations at 8 bits)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(prepped),
        str(out),
        reader,  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=reduce_range,
        calibrate_method=method,
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
        **more,
    )
