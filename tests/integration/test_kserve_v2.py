"""KServe v2 over a real server, driven by Triton's own Python client (JSON and binary)."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from support import servable

from edge_service.data.fashion import LABELS

tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.integration
MEAN, STD = 0.286, 0.353


@pytest.fixture
def triton(server: str):
    client = tritonhttp.InferenceServerClient(server.removeprefix("http://"))
    yield client
    client.close()


def _normalised(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _infer(triton, x: np.ndarray, *, binary: bool, version: str = "", **out_kw):
    inp = tritonhttp.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = tritonhttp.InferRequestedOutput("logits", binary_data=binary, **out_kw)
    return triton.infer("fashion", [inp], outputs=[out], model_version=version)


def test_triton_client_sees_a_live_ready_server_and_model_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("fashion")
    meta = triton.get_model_metadata("fashion")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"][0]["name"] == "logits" and meta["outputs"][0]["shape"] == [-1, 10]
    assert "base@fp32" in meta["versions"]
    config = triton.get_model_config("fashion")
    assert config["max_batch_size"] >= 1
    assert config["input"][0]["dims"] == [1, 28, 28]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [False, True])
def test_triton_client_classifies_test_images_as_json_or_binary_tensors(triton, test_split, binary):
    n = 16 if binary else 3  # JSON floats are ~20 bytes each: the test server takes 64 KB
    sample = test_split.subset(n, seed=3)
    result = _infer(triton, _normalised(sample.images), binary=binary)
    logits = result.as_numpy("logits")
    assert logits.shape == (n, 10)
    assert (logits.argmax(1) == sample.labels).mean() >= 0.8
    assert result.get_response()["model_version"].split("@")[0] in {"base", "dw-dw-dw"}


def test_binary_and_json_answers_agree(triton, test_split):
    x = _normalised(test_split.images[:4])
    a = _infer(triton, x, binary=False, version="base@fp32").as_numpy("logits")
    b = _infer(triton, x, binary=True, version="base@fp32").as_numpy("logits")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_versions_path_pins_the_variant(server, triton, test_split):
    x = _normalised(test_split.images[:2])
    for version in ("base@fp32", servable(server, "dw-dw-dw@int8", "dw-dw-dw@fp32")):
        result = _infer(triton, x, binary=True, version=version)
        assert result.get_response()["model_version"] == version


def test_classification_extension_returns_score_index_label(triton, test_split):
    x = _normalised(test_split.images[:3])
    result = _infer(triton, x, binary=True, version="base@fp32", class_count=2)
    classes = result.as_numpy("logits")
    assert classes.shape == (3, 2)
    score, index, label = classes[0, 0].decode().split(":")
    assert LABELS[int(index)] == label and 0.0 < float(score) <= 1.0
    assert int(index) == test_split.labels[0]


def test_uint8_pixels_and_encoded_png_bytes_inputs_are_accepted(triton, test_split):
    images = test_split.images[:4]
    pixels = tritonhttp.InferInput("input", [4, 1, 28, 28], "UINT8")
    pixels.set_data_from_numpy(images[:, None, :, :].copy(), binary_data=True)
    by_pixels = triton.infer("fashion", [pixels], model_version="base@fp32").as_numpy("logits")
    pngs = tritonhttp.InferInput("input", [4], "BYTES")
    pngs.set_data_from_numpy(np.array([_png(i) for i in images], dtype=np.object_))
    by_png = triton.infer("fashion", [pngs], model_version="base@fp32").as_numpy("logits")
    floats = _infer(triton, _normalised(images), binary=True, version="base@fp32")
    np.testing.assert_allclose(by_pixels, floats.as_numpy("logits"), atol=1e-4)
    np.testing.assert_allclose(by_png, by_pixels, atol=1e-4)


def test_bad_requests_fail_with_the_protocols_error_message(triton, test_split):
    x = _normalised(test_split.images[:1])
    inp = tritonhttp.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="not served here"):
        triton.infer("nosuch", [inp])
    with pytest.raises(InferenceServerException, match="not in family"):
        triton.infer("fashion", [inp], model_version="nosuch@fp32")
    wrong = tritonhttp.InferInput("input", [1, 1, 20, 20], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 1, 20, 20), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape must be \[N, 1, 28, 28\]"):
        triton.infer("fashion", [wrong])
    assert triton.is_server_ready()


def test_json_body_with_inference_header_length_is_served(server, test_split):
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                     "data": _normalised(test_split.images[:1]).ravel().tolist()}]}
    ).encode()  # fmt: skip
    r = httpx.post(
        f"{server}/v2/models/fashion/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(body))},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 10]
    bad = httpx.post(f"{server}/v2/models/fashion/infer", content=b"{")
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]


def test_statistics_count_inferences_per_version(server, triton, test_split):
    version = servable(server, "base@int8", "dw-dw-dw@fp32")
    _infer(triton, _normalised(test_split.images[:5]), binary=True, version=version)
    stats = httpx.get(f"{server}/v2/models/fashion/versions/{version}/stats").json()
    (entry,) = stats["model_stats"]
    assert entry["inference_count"] >= 5
    assert entry["inference_stats"]["success"]["count"] >= 1
    assert entry["inference_stats"]["compute_infer"]["ns"] > 0
