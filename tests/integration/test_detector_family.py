"""A detector built in torch, exported with dynamic axes (YOLOv8- and YOLOv5-style heads),
through build -> catalog -> serve -> boxes: one network per --input-size, each scored
(agreement with the reference without labels, mAP with YOLO txt labels), gated, served
with boxes in the posted image's pixels."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from support import run_server

from edge_service.repository import load_catalog

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
from edge_service.evolve.detector import YoloV8, export_detector  # noqa: E402

pytestmark = pytest.mark.integration
LABELS = ("person", "car", "bike")
CONTROL = "control-token-0123456789"


def _detector(path: Path, head: str, logit: float = 6.0) -> Path:
    """A tiny YOLOv8 whose class ``car`` scores high everywhere (and, for the v5 head,
    objectness too): every frame gets boxes, whatever the random weights say."""
    torch.manual_seed(0)
    model = YoloV8(len(LABELS), width=0.0625, depth=0.33, head=head, labels=LABELS)  # type: ignore[arg-type]
    with torch.no_grad():
        for cls in model.cls_head:
            bias = cls[-1].bias
            bias[1 if head == "v8" else 2] = logit  # v5: objectness is channel 0
            if head == "v5":
                bias[0] = logit
    return export_detector(model.eval(), path, size=128)


def _frames(folder: Path, n: int = 6) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"f{i}.jpg", "JPEG")
    return folder


def _build(model: Path, engines: Path, frames: Path, *extra: str) -> dict:
    labels = model.parent / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    args = [
        *("--from-onnx", str(model), "--family", "street", "--task", "detection"),
        *("--labels", str(labels), "--engines-dir", str(engines)),
        *("--calibration-images", str(frames), "--input-size", "128,96,64", "--json"),
        *extra,
    ]
    done = subprocess.run(
        [sys.executable, "-m", "edge_service", "build", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def _jpeg(shape: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    img = np.random.default_rng(2).integers(0, 255, (*shape, 3), dtype=np.uint8)
    Image.fromarray(img).save(buf, "JPEG")
    return buf.getvalue()


def test_dynamic_v8_detector_becomes_sized_variants_scored_by_agreement_and_serves_boxes(
    tmp_path: Path,
) -> None:
    model = _detector(tmp_path / "yolo-toy.onnx", "v8")
    engines, frames = tmp_path / "engines", _frames(tmp_path / "frames")
    report = _build(model, engines, frames)
    catalog = load_catalog(engines / "street")
    sizes = {"yolotoy": 128, "yolotoy-r96": 96, "yolotoy-r64": 64}
    ids = {f"{net}@{p}" for net in sizes for p in ("fp32", "int8")}
    assert {v.id for v in catalog.variants} == ids
    assert catalog.input.shape == ["batch", 3, 128, 128]
    for v in catalog.variants:
        assert v.variant_spec.input_size == sizes[v.variant_spec.family_key]
        assert v.accuracy is not None and v.accuracy.metric == "agreement_map50"
        assert v.accuracy.is_agreement and v.accuracy.examples == 6
    assert catalog.variant("yolotoy@fp32").accuracy.value == pytest.approx(1.0, abs=1e-6)
    # the INT8 engine keeps its decode in FP32: one scale over pixels and scores would
    # round every score to zero, and agreement to nothing
    assert catalog.variant("yolotoy@int8").accuracy.value > 0.5
    assert catalog.build["evaluation"]["reference"] == "yolotoy@fp32"
    assert set(report["servable"]) | set(report.get("not_served", {})) == ids

    with run_server(
        engines, tmp_path / "s.log", EDGE_FAMILY="street", EDGE_CONTROL_TOKEN=CONTROL
    ) as url:
        body = httpx.post(
            f"{url}/v1/infer?stream=cam1", content=_jpeg((120, 200)), timeout=30
        ).json()
        assert body["detections"], body
        for hit in body["detections"]:
            x1, y1, x2, y2 = hit["box"]
            assert 0 <= x1 <= x2 <= 200 and 0 <= y1 <= y2 <= 120  # the posted image's pixels
            assert hit["label"] == "car" and hit["score"] > 0.9
        small = sorted(
            report["servable"], key=lambda i: catalog.variant(i).variant_spec.input_size
        )[0]
        auth = {"authorization": f"Bearer {CONTROL}"}
        httpx.post(
            f"{url}/v1/pin", json={"variant": small}, headers=auth, timeout=30
        ).raise_for_status()
        pinned = httpx.post(f"{url}/v1/infer", content=_jpeg((120, 200)), timeout=30).json()
        assert pinned["variant"] == small and pinned["detections"]
        variants = httpx.get(f"{url}/v1/variants", timeout=30).json()
    metrics = {v["accuracy_metric"] for v in variants["variants"]}
    assert metrics == {"agreement_map50"}


def test_v5_detector_with_yolo_labels_is_scored_by_map_not_agreement(tmp_path: Path) -> None:
    model = _detector(tmp_path / "y5.onnx", "v5")
    engines, frames = tmp_path / "engines", _frames(tmp_path / "frames", 4)
    for i, frame in enumerate(sorted(frames.glob("*.jpg"))):  # one car per frame
        frame.with_suffix(".txt").write_text(f"1 0.5 0.5 {0.2 + 0.1 * i} 0.4\n")
    _build(model, engines, frames, "--precision", "fp32")
    catalog = load_catalog(engines / "street")
    assert {v.id for v in catalog.variants} == {"y5@fp32", "y5-r96@fp32", "y5-r64@fp32"}
    for v in catalog.variants:
        assert v.accuracy is not None and v.accuracy.metric == "map50"
        assert v.accuracy.map50_95 is not None and 0.0 <= v.accuracy.value <= 1.0
    assert catalog.build["evaluation"]["labels"] == "yolo"


def test_int8_detector_keeps_its_scores_because_its_decode_stays_fp32(tmp_path: Path) -> None:
    import onnxruntime as ort

    from edge_service.compile.calibration import quantize_int8
    from edge_service.data.pipeline import Preprocess
    from edge_service.onnx_tools.shapes import fix_input_size

    fp32 = fix_input_size(_detector(tmp_path / "d.onnx", "v8", logit=0.4), tmp_path / "f.onnx", 128)
    files = sorted(_frames(tmp_path / "frames").glob("*.jpg"))
    prep = Preprocess("rgb", "letterbox", 128, (0.0,), (1.0,), "images")
    x = prep.from_bytes(files[0].read_bytes())

    def scores(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {"images": x})[0])[0, 5]  # the car scores

    want = scores(fp32)
    assert 0.5 < want.mean() < 0.8  # scores spread over 0..1, boxes over 0..128 px
    for head, close in ((True, True), (False, False)):
        int8 = quantize_int8(fp32, tmp_path / f"int8-{head}.onnx", files, prep, fp32_head=head)
        error = float(np.abs(scores(int8) - want).max())
        assert (error < 0.1) is close, f"fp32_head={head}: worst score error {error:.3f}"
