"""Bring your own ONNX models: build a family with the CLI and serve it, end to end."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from support import onnx_classifier as classifier
from support import onnx_detector as detector
from support import run_server

from edge_service.repository import load_catalog

pytest.importorskip("onnx")

pytestmark = pytest.mark.integration


def _frames(folder: Path, n: int = 12) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"f{i}.jpg", "JPEG")
    return folder


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_service", "build", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_onnx_classifiers_become_a_served_family_when_built_from_onnx(tmp_path):
    a = classifier(tmp_path / "toy-small.onnx", 32, 4, seed=1)
    b = classifier(tmp_path / "ToyLarge.onnx", 48, 4, seed=2, hidden=16)
    engines = tmp_path / "engines"
    args = [
        "--from-onnx",
        str(a),
        str(b),
        "--family",
        "toys",
        "--engines-dir",
        str(engines),
        "--calibration-images",
        str(_frames(tmp_path / "frames")),
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25,0.25,0.25",
        "--json",
    ]
    r = _build(*args)
    assert r.returncode == 0, r.stderr
    catalog = load_catalog(engines / "toys")
    assert {v.id for v in catalog.variants} == {
        "toysmall@fp32",
        "toysmall@int8",
        "toylarge@fp32",
        "toylarge@int8",
    }
    assert catalog.input.color == "rgb" and catalog.labels == [
        "class0",
        "class1",
        "class2",
        "class3",
    ]
    assert all(v.calibration for v in catalog.variants if v.precision == "int8")
    again = _build(*args)
    assert again.returncode == 0 and "nothing to build" in again.stderr
    calm = tmp_path / "calm.jsonl"  # a quiet board, so the policy's choice is deterministic
    calm.write_text(
        '{"t": 0, "source": "trace", "cpu_online": 2, "cpu_load": 0.1, '
        '"mem_available_mb": 3000, "mem_total_mb": 4000}\n'
    )
    with run_server(
        engines,
        tmp_path / "s.log",
        EDGE_FAMILY="toys",
        EDGE_MONITOR_SOURCE="replay",
        EDGE_MONITOR_TRACE=str(calm),
    ) as url:
        ramp = np.linspace(0, 255, 320, dtype=np.uint8)
        frame = np.stack([np.tile(ramp, (240, 1))] * 3, axis=-1)  # compresses well
        body = httpx.post(f"{url}/v1/infer?k=2", content=_png(frame), timeout=10).json()
        assert len(body["predictions"]) == 2 and body["detections"] is None
        assert body["variant"].startswith("toylarge@")  # no accuracy: bigger network first


def test_onnx_detector_serves_boxes_in_posted_image_pixels_when_family_is_detection(tmp_path):
    det = detector(tmp_path / "yolo-toy.onnx", (32.0, 32.0, 20.0, 10.0), (0.9, 0.1))
    labels = tmp_path / "labels.txt"
    labels.write_text("car\nperson\n")
    engines = tmp_path / "engines"
    r = _build(
        "--from-onnx",
        str(det),
        "--family",
        "street",
        "--task",
        "detection",
        "--labels",
        str(labels),
        "--engines-dir",
        str(engines),
        "--precision",
        "fp32",
    )
    assert r.returncode == 0, r.stderr
    with run_server(engines, tmp_path / "s.log", EDGE_FAMILY="street") as url:
        frame = np.zeros((128, 128, 3), dtype=np.uint8)  # letterbox scale 0.5, no padding
        body = httpx.post(f"{url}/v1/infer", content=_png(frame), timeout=10).json()
    assert body["predictions"] == []
    [hit] = body["detections"]  # 4096 identical anchors, one box after NMS
    assert hit["label"] == "car" and hit["score"] == pytest.approx(0.9, abs=1e-4)
    assert hit["box"] == pytest.approx([44.0, 54.0, 84.0, 74.0], abs=1e-3)


def test_detection_build_refused_with_advice_when_labels_missing(tmp_path):
    det = detector(tmp_path / "d.onnx", (1, 1, 1, 1), (0.5,))
    r = _build(
        "--from-onnx",
        str(det),
        "--family",
        "x",
        "--task",
        "detection",
        "--engines-dir",
        str(tmp_path / "e"),
        "--precision",
        "fp32",
    )
    assert r.returncode == 2 and "--labels" in r.stderr
