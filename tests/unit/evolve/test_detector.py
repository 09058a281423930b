"""The YOLOv8-style detector: output layouts, dynamic-shape ONNX export, a loss that trains."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from edge_service.evolve.detector import (  # noqa: E402
    STRIDES,
    YoloV8,
    anchors,
    export_detector,
    num_anchors,
)
from edge_service.evolve.detector_train import (  # noqa: E402
    assign,
    box_iou_xyxy,
    detection_loss,
    giou_loss,
    train_detector,
)
from edge_service.runtime.detection import detect_layout  # noqa: E402

TINY = {"width": 0.0625, "depth": 0.33}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_default_scale_is_yolov8n() -> None:
    # Ultralytics' yolov8n (80 classes) has 3,157,200 parameters; 16 of them are its
    # fixed DFL projection, a buffer here.
    assert sum(p.numel() for p in YoloV8(80).parameters()) == 3_157_184


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 128)])
def test_v8_head_gives_ultralytics_layout(height: int, width: int) -> None:
    model = YoloV8(3, **TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, height, width))
    n = num_anchors(height, width)
    assert out.shape == (2, 4 + 3, n)
    assert detect_layout(tuple(out[:1].shape), 3) == "v8"
    scores = out[:, 4:]
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1
    assert float(out[:, 2:4].min()) > 0  # widths and heights


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 128)])
def test_v5_head_gives_objectness_layout(height: int, width: int) -> None:
    model = YoloV8(2, head="v5", **TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, height, width))
    assert out.shape == (1, num_anchors(height, width), 5 + 2)
    assert detect_layout(tuple(out.shape), 2) == "v5"


def test_training_mode_returns_raw_maps_and_bad_sizes_fail() -> None:
    model = YoloV8(1, **TINY).train()
    raw = model(torch.rand(1, 3, 64, 96))
    assert [tuple(r.shape[2:]) for r in raw] == [(64 // s, 96 // s) for s in STRIDES]
    centres, strides = anchors(raw)
    assert centres.shape == (1, 2, num_anchors(64, 96))
    assert centres[0, :, 0].tolist() == [4.0, 4.0] and float(strides[0, 0, -1]) == 32.0
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 64, 70))
    with pytest.raises(ValueError, match="num_classes"):
        YoloV8(0)


def _check_export(model: YoloV8, path: Path, sizes: list[tuple[int, int]]) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    proto = onnx.load(str(path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("images", "output0")
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 3, "height", "width"]
    assert out_dims == ["batch", 6, "anchors"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for height, width in sizes:
        x = torch.rand(1, 3, height, width)
        (got,) = session.run(["output0"], {"images": x.numpy()})
        with torch.no_grad():
            want = model(x).numpy()
        assert got.shape == (1, 6, num_anchors(height, width))
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    assert not list(path.parent.glob(".*.tmp"))


def test_export_keeps_height_and_width_dynamic(tmp_path: Path) -> None:
    model = YoloV8(2, **TINY).eval()
    path = export_detector(model, tmp_path / "det.onnx", size=64)
    _check_export(model, path, [(64, 64), (128, 96), (320, 320)])


def test_v5_export_has_anchors_second(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = YoloV8(1, head="v5", **TINY).eval()
    proto = onnx.load(str(export_detector(model, tmp_path / "v5.onnx", size=64)))
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "anchors", 6]


@pytest.mark.slow
def test_dynamo_export_matches_too(tmp_path: Path) -> None:
    model = YoloV8(2, **TINY).eval()
    path = export_detector(model, tmp_path / "det.onnx", size=64, dynamo=True)
    _check_export(model, path, [(64, 64), (96, 160)])


def test_assignment_picks_level_by_size_and_cells_near_the_centre() -> None:
    raw = [torch.zeros(1, 1, 128 // s, 128 // s) for s in STRIDES]
    centres, strides = anchors(raw)
    centres, strides = centres[0].T, strides[0, 0]
    gt = torch.tensor([[0, 10.0, 10.0, 30.0, 40.0], [0, 20.0, 0.0, 120.0, 100.0]])
    mask, idx = assign(centres, strides, gt)
    small = mask & (idx == 0)
    large = mask & (idx == 1)
    assert set(strides[small].tolist()) == {8.0}
    assert set(strides[large].tolist()) == {16.0}
    assert small.sum() >= 4 and large.sum() >= 4
    assert ((centres[small] > gt[0, 1:3]) & (centres[small] < gt[0, 3:])).all()
    empty, _ = assign(centres, strides, torch.zeros(0, 5))
    assert not empty.any()


def test_giou_is_zero_for_identical_boxes_and_grows_apart() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert float(giou_loss(a, a)) == pytest.approx(0.0, abs=1e-5)
    far = torch.tensor([[20.0, 20.0, 30.0, 30.0]])
    assert float(giou_loss(a, far)) > 1.0
    assert float(box_iou_xyxy(a, torch.tensor([[5.0, 0.0, 15.0, 10.0]]))) == pytest.approx(1 / 3)


def _rectangles(count: int, size: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    frames, boxes = [], []
    for _ in range(count):
        img = np.full((size, size, 3), 30, np.uint8)
        x1, y1 = rng.integers(4, size // 2, 2)
        w, h = rng.integers(12, 28, 2)
        img[y1 : y1 + h, x1 : x1 + w] = 230
        frames.append(img)
        boxes.append(np.array([[x1, y1, x1 + w, y1 + h]], np.float64))
    return frames, boxes


@pytest.mark.parametrize("head", ["v8", "v5"])
def test_training_lowers_the_loss_and_finds_the_rectangle(head: str) -> None:
    torch.manual_seed(0)
    frames, boxes = _rectangles(8)
    model = YoloV8(1, head=head, **TINY)  # type: ignore[arg-type]
    result = train_detector(
        model, frames, boxes, [64], 60, batch_size=4, lr=5e-3, augment=False, ema_decay=0
    )
    assert result.steps == 60
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.5 * first, (first, last)
    assert not model.training
    x = torch.from_numpy(np.stack(frames[:2])).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        out = model(x)
    for i in range(2):
        rows = out[i].T if head == "v8" else out[i]
        score = rows[:, 4] if head == "v8" else rows[:, 4] * rows[:, 5]
        cx, cy, w, h = rows[int(score.argmax()), :4].tolist()
        pred = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
        iou = float(box_iou_xyxy(pred, torch.as_tensor(boxes[i], dtype=torch.float32)))
        assert iou > 0.5, (head, i, pred, boxes[i])
        assert float(score.max()) > 0.3


def test_loss_with_no_objects_is_finite() -> None:
    model = YoloV8(1, **TINY).train()
    raw = model(torch.rand(2, 3, 64, 64))
    loss, parts = detection_loss(model, raw, [torch.zeros(0, 5), torch.zeros(0, 5)])
    assert torch.isfinite(loss) and parts["positives"] == 0
    loss.backward()
