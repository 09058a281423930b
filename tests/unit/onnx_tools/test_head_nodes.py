"""The nodes an INT8 detector keeps in FP32: its decode after the last weighted layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_service.onnx_tools.quantize import head_nodes

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _save(path: Path, nodes, out_shape, inits) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_a_detector_keeps_everything_after_its_last_convs_but_not_the_convs(
    tmp_path: Path,
) -> None:
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    v = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "v")
    shape = numpy_helper.from_array(np.array([1, 4, -1], np.int64), "shape")
    shape1 = numpy_helper.from_array(np.array([1, 1, -1], np.int64), "shape1")
    stride = numpy_helper.from_array(np.array(8.0, np.float32), "stride")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="backbone"),
        helper.make_node("Conv", ["r", "w"], ["box_raw"], name="box_conv"),
        helper.make_node("Conv", ["r", "v"], ["cls_raw"], name="cls_conv"),
        helper.make_node("Reshape", ["box_raw", "shape"], ["box_flat"], name="box_flat"),
        helper.make_node("Mul", ["box_flat", "stride"], ["box_px"], name="box_px"),
        helper.make_node("Reshape", ["cls_raw", "shape1"], ["cls_flat"], name="cls_flat"),
        helper.make_node("Sigmoid", ["cls_flat"], ["score"], name="score"),
        helper.make_node("Concat", ["box_px", "score"], ["y"], axis=1, name="join"),
    ]
    path = _save(tmp_path / "det.onnx", nodes, [1, 5, 64], [w, v, shape, shape1, stride])
    assert set(head_nodes(path)) == {"join", "box_px", "box_flat", "score", "cls_flat"}


def test_a_classifier_ending_in_its_gemm_keeps_nothing_in_fp32(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((192, 10), np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 192], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w"], ["y"], name="fc"),
    ]
    path = _save(tmp_path / "cls.onnx", nodes, [1, 10], [w, shape])
    assert head_nodes(path) == []
