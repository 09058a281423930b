"""A detection family served for real: per-stream detection counts at /v1/streams, batches
and KServe v2 on a detector exported with a fixed batch of one.

The tiny detector (tests/support.py `detector_family`) predicts one box for every anchor;
a pixel's red makes it a "person", its green a "car", so a frame's colours decide what is
answered: black nothing, red a person, green a car, half and half both.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from support import DETECTOR_LABELS, calm_trace, detector_family, run_server

from edge_service.runtime.detection import decode_detections

pytest.importorskip("onnx")
tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.integration
BOX = [44.0, 54.0, 84.0, 74.0]  # (32, 32, 20, 10) in a 64x64 input, in a 128x128 frame
INPUT_BOX = [22.0, 27.0, 42.0, 37.0]  # the same box in model-input pixels (KServe: raw)


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def _frame(top: tuple[int, int, int], bottom: tuple[int, int, int] | None = None) -> np.ndarray:
    """A square 128x128 frame (the letterbox adds no padding): ``top`` colour over the
    upper half, ``bottom`` (default: the same) over the lower."""
    img = np.zeros((128, 128, 3), dtype=np.uint8)
    img[:64] = top
    img[64:] = bottom if bottom is not None else top
    return img


BLACK, RED, GREEN = _frame((0, 0, 0)), _frame((255, 0, 0)), _frame((0, 255, 0))
SPLIT = _frame((255, 0, 0), (0, 255, 0))


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("detection")
    with run_server(
        detector_family(tmp),
        tmp / "server.log",
        EDGE_FAMILY="street",
        EDGE_MONITOR_SOURCE="replay",
        EDGE_MONITOR_TRACE=str(calm_trace(tmp / "calm.jsonl")),
    ) as url:
        yield url


def _batch(url: str, frames: list[np.ndarray], query: str = "") -> httpx.Response:
    files = [("frame", (f"f{i}.png", _png(f), "image/png")) for i, f in enumerate(frames)]
    return httpx.post(f"{url}/v1/infer/batch{query}", files=files, timeout=60)


def _labels(detections: list[dict]) -> list[str]:
    return [d["label"] for d in detections]


def test_streams_count_the_detections_answered_per_class_over_infer_and_batch(street):
    answered: Counter[str] = Counter()
    single = [httpx.post(f"{street}/v1/infer?stream=cam1", content=_png(f), timeout=60)
              for f in (GREEN, BLACK)]  # fmt: skip
    assert [r.status_code for r in single] == [200, 200]
    assert [_labels(r.json()["detections"]) for r in single] == [["car"], []]
    batch = _batch(street, [RED, SPLIT, BLACK], "?stream=cam1")
    assert batch.status_code == 200, batch.text
    per_frame = [_labels(f["detections"]) for f in batch.json()["results"]]
    assert [sorted(labels) for labels in per_frame] == [["person"], ["car", "person"], []]
    for labels in [*(_labels(r.json()["detections"]) for r in single), *per_frame]:
        answered.update(labels)
    bad = httpx.post(f"{street}/v1/infer?stream=cam1", content=b"not an image", timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]
    # ?k=1 answers one detection of the two: the count follows what was answered
    one = httpx.post(f"{street}/v1/infer?stream=cam2&k=1", content=_png(SPLIT), timeout=60)
    [only] = one.json()["detections"]
    httpx.post(f"{street}/v1/infer?stream=idle", content=b"junk", timeout=60)

    body = httpx.get(f"{street}/v1/streams", timeout=60).json()
    assert body["task"] == "detection"
    cam1, cam2, idle = (body["streams"][s] for s in ("cam1", "cam2", "idle"))
    assert cam1["detections"] == dict(answered) == {"person": 2, "car": 2}
    assert cam1["frames_with_detections"] == 3
    assert cam1["frames"] == 5 and cam1["requests"] == 4 and cam1["errors"] == 1
    assert cam2["detections"] == {only["label"]: 1} and cam2["frames_with_detections"] == 1
    assert idle["detections"] == {} and idle["frames_with_detections"] == 0
    metrics = httpx.get(f"{street}/metrics", timeout=60).text
    assert 'edge_detections_total{label="person"}' in metrics
    assert 'edge_detections_total{label="car"}' in metrics


def test_batches_and_concurrent_frames_get_boxes_per_frame_from_a_fixed_batch_detector(street):
    frames = [RED, GREEN, SPLIT, BLACK, GREEN]
    r = _batch(street, frames)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [f["filename"] for f in results] == [f"f{i}.png" for i in range(5)]
    assert [sorted(_labels(f["detections"])) for f in results] == [
        ["person"], ["car"], ["car", "person"], [], ["car"]
    ]  # fmt: skip
    for f in results:
        for d in f["detections"]:
            assert d["box"] == pytest.approx(BOX, abs=1e-3)
    # concurrent single frames ride in the same micro-batch unless the batcher keeps to
    # the engine's fixed batch of one
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(
            lambda _: client.post(f"{street}/v1/infer", content=_png(GREEN)), range(16)
        ))  # fmt: skip
    assert {x.status_code for x in replies} == {200}
    assert all(_labels(x.json()["detections"]) == ["car"] for x in replies)


def test_kserve_v2_answers_the_raw_head_and_decoded_boxes_per_frame_of_a_detection_family(
    street,
):
    triton = tritonhttp.InferenceServerClient(street.removeprefix("http://"))
    try:
        meta = triton.get_model_metadata("street")
        assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
        assert triton.get_model_config("street")["max_batch_size"] == 1  # the fixed batch
        pngs = tritonhttp.InferInput("images", [3], "BYTES")
        pngs.set_data_from_numpy(np.array([_png(f) for f in (RED, GREEN, BLACK)], np.object_))
        answer = triton.infer("street", [pngs])
        by_png = answer.as_numpy("output0")
        decoded_outputs = [
            tritonhttp.InferRequestedOutput(name, binary_data=name != "num_detections")
            for name in ("num_detections", "detection_boxes", "detection_classes")
        ]
        boxed = triton.infer("street", [pngs], outputs=decoded_outputs)
        pixels = np.stack([f[::2, ::2].transpose(2, 0, 1) for f in (RED, GREEN, BLACK)])
        raw = tritonhttp.InferInput("images", list(pixels.shape), "UINT8")
        raw.set_data_from_numpy(np.ascontiguousarray(pixels), binary_data=True)
        by_pixels = triton.infer("street", [raw]).as_numpy("output0")
        asked = tritonhttp.InferRequestedOutput("output0", class_count=2)
        with pytest.raises(InferenceServerException, match="classification families"):
            triton.infer("street", [pngs], outputs=[asked])
    finally:
        triton.close()
    assert by_png.shape == by_pixels.shape == (3, 6, 64 * 64)
    np.testing.assert_allclose(by_png, by_pixels, atol=1e-4)
    decoded = [decode_detections(by_png[i : i + 1], list(DETECTOR_LABELS)) for i in range(3)]
    assert [[d.label for d in frame] for frame in decoded] == [["person"], ["car"], []]
    assert list(decoded[0][0].box) == pytest.approx(INPUT_BOX, abs=1e-3)
    # the decoded outputs (EfficientNMS-style), boxes in the posted image's pixels
    names = [o["name"] for o in meta["outputs"]]
    assert names == ["output0", "num_detections", "detection_boxes", "detection_scores",
                     "detection_classes"]  # fmt: skip
    assert answer.as_numpy("detection_scores").shape == (3, 100)  # all outputs by default
    assert boxed.as_numpy("num_detections").tolist() == [[1], [1], [0]]
    assert boxed.as_numpy("detection_classes")[:2, 0].tolist() == [0, 1]  # person, car
    assert boxed.as_numpy("detection_boxes")[0, 0].tolist() == pytest.approx(BOX, abs=1e-3)
    assert not boxed.as_numpy("detection_boxes")[2].any()  # padding
