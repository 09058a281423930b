"""Bring-your-own files with dynamic inputs: one network per --input-size, refusals that
say what to do, and the shape fixed in the copy each network is built from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_service.cli.byo_cmd import input_sizes
from edge_service.compile.byo import inspect_onnx, plan_networks
from edge_service.errors import BuildError
from edge_service.onnx_tools.shapes import fix_input_size, input_dims

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def head(path: Path, dims: list[int | str], classes: int = 2) -> Path:
    """images dims -> a stride-32 YOLOv8-layout output (batch, 4 + nc, H/32 * W/32): a
    strided conv, then Reshape to (batch, channels, -1), as exporters write it."""
    ch = 4 + classes
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], strides=[32, 32], kernel_shape=[32, 32]),
        helper.make_node("Shape", ["c"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
        helper.make_node("Concat", ["nc", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["c", "shape"], ["output0"]),
    ]
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(ch, 3, 32, 32)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
    ]
    out_dims = [dims[0], ch, "anchors"]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_dims)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


DYNAMIC = ["batch", 3, "height", "width"]


def test_dynamic_file_is_accepted_and_makes_one_network_per_size_largest_first(
    tmp_path: Path,
) -> None:
    model = inspect_onnx(head(tmp_path / "YOLOv8-n.onnx", DYNAMIC))
    assert model.size is None and model.name == "yolov8n" and model.batch == "batch"
    nets = plan_networks([model], (320, 640, 416))
    assert [n.spec.id for n in nets] == ["yolov8n@fp32", "yolov8n-r416@fp32", "yolov8n-r320@fp32"]
    assert all(n.spec.native_size == 640 for n in nets)


def test_dynamic_file_without_input_size_is_refused_saying_pass_input_size(
    tmp_path: Path,
) -> None:
    model = inspect_onnx(head(tmp_path / "m.onnx", DYNAMIC))
    with pytest.raises(BuildError, match=r"dynamic height and width; pass --input-size 640"):
        plan_networks([model], ())


def test_fixed_file_keeps_working_and_refuses_other_sizes_saying_reexport(
    tmp_path: Path,
) -> None:
    model = inspect_onnx(head(tmp_path / "m.onnx", [1, 3, 64, 64]))
    assert [n.spec.id for n in plan_networks([model], ())] == ["m@fp32"]
    assert [n.spec.id for n in plan_networks([model], (64,))] == ["m@fp32"]
    with pytest.raises(BuildError, match=r"fixed at 64x64.*dynamic height and width"):
        plan_networks([model], (64, 32))


@pytest.mark.parametrize(
    ("dims", "says"),
    [
        ([1, 3, 64, 96], r"not square: export it at e\.g\. 640x640, or with dynamic"),
        ([1, 3, 64, "width"], r"fixes one of height and width only"),
        (["batch", "channels", 64, 64], r"expected images NCHW with 1 or 3 channels"),
    ],
)
def test_inputs_that_cannot_be_served_are_refused_with_what_to_do(
    tmp_path: Path, dims: list[int | str], says: str
) -> None:
    path = tmp_path / "m.onnx"
    if dims[1] == "channels":  # a conv needs fixed channels: a plain identity graph
        graph = helper.make_graph(
            [helper.make_node("Identity", ["images"], ["output0"])],
            "g",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info("output0", TensorProto.FLOAT, dims)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, str(path))
    else:
        head(path, dims)
    with pytest.raises(BuildError, match=says):
        inspect_onnx(path)


def test_fixed_copy_runs_at_its_size_with_its_shapes_inferred_again(tmp_path: Path) -> None:
    src = head(tmp_path / "m.onnx", DYNAMIC)
    dst = fix_input_size(src, tmp_path / "r320" / "fp32.onnx", 320)
    assert input_dims(dst).dims == ("batch", 3, 320, 320)
    fixed = onnx.load(str(dst))
    out = fixed.graph.output[0].type.tensor_type.shape.dim
    # the batch keeps its name; the rest is inferred again (a Reshape to -1 under a
    # dynamic batch stays unknown until run), never the dynamic file's stale names
    assert [d.dim_param or d.dim_value for d in out][:2] == ["batch", 6]
    assert out[2].dim_param != "anchors"
    session = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 3, 320, 320), np.float32)
    assert session.run(None, {"images": x})[0].shape == (2, 6, 100)
    assert input_dims(src).dynamic_size and not input_dims(dst).dynamic_size


def test_sizes_off_the_stride_are_refused_naming_the_stride(tmp_path: Path) -> None:
    src = head(tmp_path / "m.onnx", DYNAMIC)
    with pytest.raises(BuildError, match=r"--input-size 300: use multiples of 32"):
        fix_input_size(src, tmp_path / "x.onnx", 300)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    ("text", "sizes"), [("640,512, 416", (640, 512, 416)), ("", ()), ("320", (320,))]
)
def test_input_size_option_parses_comma_lists(text: str, sizes: tuple[int, ...]) -> None:
    assert input_sizes(text) == sizes


@pytest.mark.parametrize("text", ["640x640", "0", "-32", "six"])
def test_input_size_option_refuses_what_is_not_a_pixel_size(text: str) -> None:
    with pytest.raises(BuildError, match=r"--input-size"):
        input_sizes(text)


def test_detector_whose_output_does_not_fit_the_labels_is_refused_before_building(
    tmp_path: Path,
) -> None:
    from edge_service.compile.byo import check_detector_output

    model = inspect_onnx(head(tmp_path / "m.onnx", DYNAMIC, classes=2))  # [batch, 6, anchors]
    check_detector_output(model, 2)  # YOLOv8 layout, 2 classes: fits
    with pytest.raises(BuildError, match=r"does not fit 80 labels: expected YOLOv8 \[batch, 84"):
        check_detector_output(model, 80)


def _opts(tmp_path: Path, **changes: object):
    from edge_service.cli.byo_cmd import OnnxOptions

    fields: dict = {
        "models": (tmp_path / "m.onnx",),
        "task": "detection",
        "labels": None,
        "mean": "0",
        "std": "1",
        "calibration": tmp_path,
        "precisions": ("fp32",),
        "method": "minmax",
        "trt": None,
        "force": False,
    }
    return OnnxOptions(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"task": "classification", "eval_images": Path("f")}, r"score detection families only"),
        ({"coco_labels": Path("/nonexistent/l.json")}, r"--coco-labels .*: no such file"),
        ({"input_sizes": "640,abc"}, r"--input-size '640,abc': expected comma-separated"),
        ({"task": "segmentation"}, r"--task 'segmentation': use classification or detection"),
    ],
)
def test_bad_from_onnx_options_are_refused_naming_the_option(
    tmp_path: Path, changes: dict, says: str
) -> None:
    from edge_service.cli.byo_cmd import onnx_request
    from edge_service.config import Settings

    with pytest.raises(BuildError, match=says):
        onnx_request(Settings(engines_dir=tmp_path), _opts(tmp_path, **changes))


def test_detection_scores_on_the_calibration_frames_unless_told_otherwise(tmp_path: Path) -> None:
    from edge_service.cli.byo_cmd import onnx_request
    from edge_service.config import Settings

    req = onnx_request(Settings(engines_dir=tmp_path), _opts(tmp_path, input_sizes="640,320"))
    assert req.eval is not None and req.eval.folder == tmp_path and req.input_sizes == (640, 320)
    other = onnx_request(
        Settings(engines_dir=tmp_path), _opts(tmp_path, eval_images=tmp_path / "e", eval_limit=5)
    )
    assert other.eval is not None and other.eval.folder == tmp_path / "e" and other.eval.limit == 5
