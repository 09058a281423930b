"""The server as a user meets it: real uvicorn, real ONNX Runtime engines, real images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support import MAX_BODY

from edge_service.data.fashion import LABELS

pytestmark = pytest.mark.integration


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def test_posted_test_pngs_come_back_correctly_classified_when_server_runs(client, test_split):
    sample = test_split.subset(200, seed=1)
    correct = 0
    for img, label in zip(sample.images, sample.labels, strict=True):
        r = client.post("/v1/infer", content=_png(img), headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        correct += r.json()["predictions"][0]["label"] == LABELS[label]
    assert correct / len(sample) >= 0.90


def test_infer_reports_variant_precision_and_timings_when_frame_classified(client, test_split):
    r = client.post("/v1/infer?k=3", content=_png(test_split.images[0]))
    body = r.json()
    assert r.status_code == 200
    assert len(body["predictions"]) == 3
    assert body["variant"] in {f"{n}@{p}" for n in ("base", "dw-dw-dw") for p in ("fp32", "int8")}
    assert body["precision"] in {"fp32", "int8"} and body["backend"] == "onnxruntime"
    t = body["timings"]
    assert 0 < t["engine_ms"] <= t["total_ms"]


def test_raw_frame_classified_like_png_when_width_and_height_given(client, test_split):
    img = test_split.images[11]
    raw = client.post("/v1/infer?width=28&height=28", content=img.tobytes()).json()
    png = client.post("/v1/infer", content=_png(img)).json()
    assert raw["predictions"][0]["label"] == png["predictions"][0]["label"]


def test_large_camera_frame_is_resized_when_bigger_than_input(client, test_split):
    big = np.asarray(Image.fromarray(test_split.images[2]).resize((112, 112)))
    r = client.post("/v1/infer", content=_png(big))
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"", {}, 400, "bad_input"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, {}, 400, "bad_input"),
        (b"\x01" * 1000, {}, 400, "bad_input"),
        (b"x" * (MAX_BODY + 1), {}, 413, "payload_too_large"),
        (
            b"--b\r\n\r\n",
            {"content-type": "multipart/form-data; boundary=b"},
            400,
            "bad_input",
        ),
    ],
)
def test_bad_body_gets_json_reason_and_server_keeps_serving_when_posted(
    client, test_split, body, headers, status, code
):
    r = client.post("/v1/infer", content=body, headers=headers)
    assert r.status_code == status
    assert r.json()["error"] == code and r.json()["detail"]
    ok = client.post("/v1/infer", content=_png(test_split.images[0]))
    assert ok.status_code == 200


def test_bad_query_gets_422_when_width_is_negative(client):
    assert client.post("/v1/infer?width=-1", content=b"x").status_code == 422


def test_health_endpoints_say_live_and_ready_when_engine_loaded(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json() == {"ready": True}


def test_status_shows_context_active_variant_and_decisions_when_running(client):
    body = client.get("/v1/status?events=1000").json()  # every event kept, the first too
    assert body["family"] == "fashion" and body["ready"]
    assert body["active_variant"] in {v["id"] for v in body["variants"]}
    assert body["context"]["source"] == "linux"
    assert 0.0 <= body["context"]["cpu_load"] <= 1.0
    assert body["ticks"] >= 1
    first = body["events"][0]  # the start-up activation
    assert first["from_variant"] is None
    assert first["to_variant"] in {v["id"] for v in body["variants"]}
    assert first["reason"]
    assert body["decision"]["variant_id"] == body["active_variant"]
