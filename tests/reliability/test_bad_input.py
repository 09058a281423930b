"""Hostile input against a real server: every case gets a 4xx with a JSON reason in its API's
error shape, never a 5xx, and the server stays healthy and correct afterwards.

The cases are the issue's list, written out one by one (truncated, empty, huge and bomb
images; wrong dtypes, shapes and byte counts in KServe v2, in JSON and in the binary
extension with a lying Inference-Header-Content-Length; malformed JSON; unknown models and
variants; path traversal in every name the API takes), then two hypothesis runs that post
generated frames and v2 requests.

Requests go through ``http.client``, which sends the path as written: an HTTP library that
normalises ``../`` would test the library, not the server.
"""

from __future__ import annotations

import http.client
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from hostile_inputs import bomb_png, family_requests, mutated, v2_bodies
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import MAX_BODY, run_server

pytestmark = pytest.mark.integration
CONTROL = "bad-input-control-token-0123"
AUTH = {"Authorization": f"Bearer {CONTROL}"}
RNG = np.random.default_rng(9)
FRAME = RNG.integers(0, 256, (28, 28), dtype=np.uint8)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Raw:
    """A client that sends the request line exactly as given."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def send(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Reply:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def raw(engines_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Raw]:
    log = tmp_path_factory.mktemp("bad-input") / "server.log"
    env = {"EDGE_CONTROL_TOKEN": CONTROL, "EDGE_MONITOR_SOURCE": "linux"}
    with run_server(engines_dir, log, **env) as url:
        yield Raw(url)
    assert "Traceback" not in log.read_text(), log.read_text()[-5000:]


def _encode(img: np.ndarray, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **options)
    return buf.getvalue()


PNG = _encode(FRAME, "PNG")
JPEG = _encode(FRAME, "JPEG", quality=90)
BIG_PNG = _encode(np.zeros((3000, 3000), np.uint8), "PNG")  # 9 Mpx in ~9 KB: decodes (200)
OVER_LIMIT_PNG = _encode(np.zeros((4001, 4000), np.uint8), "PNG")  # just over 16 Mpx
X = ((FRAME.astype(np.float32) / 255 - 0.286) / 0.353)[None, None]  # (1, 1, 28, 28)


def assert_refused(reply: Reply, path: str, status: int | None = None) -> None:
    """A 4xx (``status`` if given) with a JSON reason in the error shape of the path's API."""
    assert 400 <= reply.status < 500, (reply.status, reply.body[:500])
    if status is not None:
        assert reply.status == status, (reply.status, reply.body[:500])
    body = reply.json()
    assert set(body) == {"error", "code"} if path.startswith("/v2") else {"error", "detail"}, body
    reason = body["error"] if path.startswith("/v2") else body["detail"]
    assert isinstance(reason, str) and len(reason) > 10, body


def multipart(
    *parts: tuple[str, str | None, bytes], boundary: str = "b0undary"
) -> tuple[bytes, dict[str, str]]:
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        chunks.append(data + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def v2(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def tensor(
    data: Any = None, shape: Any = (1, 1, 28, 28), datatype: str = "FP32", **kw: Any
) -> dict[str, Any]:
    out = {"name": "input", "shape": list(shape), "datatype": datatype, **kw}
    if data is not None:
        out["data"] = data
    return out


def binary(
    header: dict[str, Any], blob: bytes, claimed: int | str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body; ``claimed`` overrides the true JSON length (a lie)."""
    text = json.dumps(header).encode()
    length = str(len(text)) if claimed is None else str(claimed)
    return text + blob, {"Inference-Header-Content-Length": length}


@dataclass(frozen=True)
class Case:
    """One hostile request and the 4xx it must get (None: any 4xx)."""

    id: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None


def frame(id: str, body: bytes, status: int | None, query: str = "", **headers: str) -> Case:
    return Case(id, "POST", f"/v1/infer{query}", body, headers, status)


def batch(id: str, status: int, *parts: tuple[str, str | None, bytes], query: str = "") -> Case:
    return Case(id, "POST", f"/v1/infer/batch{query}", *multipart(*parts), status)


def infer2(
    id: str, body: bytes | tuple[bytes, dict[str, str]], status: int, path: str = ""
) -> Case:
    body, headers = body if isinstance(body, tuple) else (body, {})
    return Case(id, "POST", path or INFER2, body, headers, status)


def one(id: str, status: int, **fields: Any) -> Case:
    """A v2 request whose one input is ``tensor(**fields)``."""
    return infer2(id, v2([tensor(**fields)]), status)


def sized(id: str, status: int, blob: bytes, size: Any, **fields: Any) -> Case:
    """A binary-extension request that says its input has ``size`` bytes."""
    header = {"inputs": [tensor(parameters={"binary_data_size": size}, **fields)]}
    return infer2(id, binary(header, blob), status)


def control(
    id: str, method: str, path: str, body: bytes, status: int, token: str = CONTROL
) -> Case:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Case(id, method, path, body, headers | {"Content-Type": "application/json"}, status)


def get(id: str, path: str, status: int) -> Case:
    return Case(id, "GET", path, status=status)


FLOATS = X.reshape(-1).tolist()
BLOB = X.tobytes()
B_HEADER = {"inputs": [tensor(parameters={"binary_data_size": len(BLOB)})]}
INFER2 = "/v2/models/fashion/infer"
BOMB = bomb_png(50_000, 50_000)
BOMB_ITEM = len(BOMB).to_bytes(4, "little") + BOMB  # one BYTES element
TRAVERSAL = "../../etc/passwd"
IMAGES = [
    frame("zero-byte body", b"", 400),
    frame("truncated png", PNG[: len(PNG) // 2], 400),
    frame("truncated jpeg", JPEG[: len(JPEG) // 2], 400),
    frame("png magic only", PNG[:8], 400),
    frame("png header only", PNG[:33], 400),
    frame("jpeg magic only", b"\xff\xd8\xff", 400),
    frame("bomb 50000x50000 (PIL refuses)", BOMB, 400),
    frame("bomb 10000x10000 (PIL warns)", bomb_png(10_000, 10_000), 400),
    frame("bomb 5000x5000 (over our limit)", bomb_png(5_000, 5_000), 400),
    frame("image 4001x4000 over the pixel limit", OVER_LIMIT_PNG, 400),
    frame("zero-width png", bomb_png(0, 10), 400),
    frame("body over the size limit", bytes(MAX_BODY + 1), 413),
    frame("raw frame not square", bytes(783), 400),
    frame("raw frame size lies", bytes(784), 400, "?width=30&height=30"),
    frame("raw frame width only", bytes(784), 400, "?width=28"),
    frame("width zero", bytes(784), 422, "?width=0&height=28"),
    frame("width not a number", bytes(784), 422, "?width=abc"),
    frame("width of 5000 digits", bytes(784), None, "?width=" + "9" * 5000),
    frame("k zero", PNG, 422, "?k=0"),
    frame("gzip body", PNG, 415, **{"Content-Encoding": "gzip"}),
    frame("multipart/mixed", PNG, 415, **{"Content-Type": "multipart/mixed; boundary=x"}),
    frame("multipart without boundary", PNG, 400, **{"Content-Type": "multipart/form-data"}),
    Case("multipart without a file part", "POST", "/v1/infer", *multipart(("a", None, b"")), 400),
    Case("two frames", "POST", "/v1/infer", *multipart(("f", "a", PNG), ("f", "b", PNG)), 400),
    Case("batch not multipart", "POST", "/v1/infer/batch", PNG, {}, 415),
    batch("batch with a truncated frame", 400, ("f", "a.png", PNG), ("f", "b.png", PNG[:40])),
    batch("batch with a bomb", 400, ("f", "a.png", PNG), ("f", "b.png", BOMB)),
]
V1_NAMES = [
    frame("unknown variant", PNG, 404, "?variant=nosuch@fp32"),
    frame("variant traversal", PNG, 404, f"?variant={TRAVERSAL}"),
    frame("variant traversal encoded", PNG, 404, "?variant=%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
    frame("stream traversal", PNG, 400, f"?stream={TRAVERSAL}"),
    frame("stream traversal encoded", PNG, 400, "?stream=%2e%2e%2fetc"),
    frame("stream traversal header", PNG, 400, **{"X-Stream-Id": "..%2f..%2fetc%2fpasswd"}),
    frame("stream id with a newline", PNG, 400, "?stream=cam1%0A"),
    frame("stream id of 65 characters", PNG, 400, "?stream=" + "c" * 65),
    batch("batch variant traversal", 404, ("f", "a.png", PNG), query="?variant=..%2F..%2Fetc"),
    get("unknown /v1 endpoint", "/v1/nosuch", 404),
    get("traversal out of /v1", f"/v1/{TRAVERSAL}", 404),
    get("encoded traversal out of /v1", "/v1/%2e%2e/%2e%2e/etc/passwd", 404),
    get("dashboard asset traversal", "/dashboard/static/..%2f..%2fapp.py", 404),
    get("dashboard asset traversal raw", "/dashboard/static/../../app.py", 404),
    get("wrong method", "/v1/infer", 405),
]
V2_JSON = [
    infer2("v2 empty body", b"", 400),
    infer2("v2 malformed json", b'{"inputs": [', 400),
    infer2("v2 json not an object", b"[1, 2]", 400),
    infer2("v2 json not utf-8", b'{"inputs": "\xff\xfe"}', 400),
    infer2("v2 deeply nested json", b"[" * 60_000, 400),
    infer2("v2 integer of 5000 digits", b'{"id": ' + b"9" * 5000 + b"}", 400),
    infer2("v2 no inputs", v2([]), 400),
    infer2("v2 wrong input name", v2([{**tensor(FLOATS), "name": "x"}]), 400),
    infer2("v2 two inputs", v2([tensor(FLOATS), tensor(FLOATS)]), 400),
    one("v2 unknown datatype", 400, data=FLOATS, datatype="FP8"),
    one("v2 int32 datatype", 400, data=[1] * 784, datatype="INT32"),
    one("v2 bool datatype", 400, data=[True] * 784, datatype="BOOL"),
    one("v2 uint8 out of range", 400, data=[300] * 784, datatype="UINT8"),
    one("v2 int data over int64", 400, data=[2**70] * 784, datatype="INT64"),
    one("v2 string data in fp32", 400, data=["a"] * 784),
    one("v2 nan data", 400, data=[float("nan")] * 784),
    one("v2 fp16 overflow to inf", 400, data=[1e6] * 784, datatype="FP16"),
    one("v2 783 elements", 400, data=FLOATS[:-1]),
    one("v2 ragged data", 400, data=[[1.0], [1.0, 2.0]]),
    one("v2 shape rank 3", 400, data=FLOATS, shape=(1, 28, 28)),
    one("v2 shape 3 channels", 400, data=FLOATS * 3, shape=(1, 3, 28, 28)),
    one("v2 shape 27 wide", 400, data=FLOATS[:756], shape=(1, 1, 28, 27)),
    one("v2 empty batch", 400, data=[], shape=(0, 1, 28, 28)),
    one("v2 negative dim", 400, data=FLOATS, shape=(-1, 1, 28, 28)),
    one("v2 huge dims", 400, data=[], shape=(2**32, 2**32, 0)),
    one("v2 dims over int64", 400, data=[], shape=(0, 2**70)),
    one("v2 rank 100", 400, data=[1.0], shape=(1,) * 100),
    one("v2 shape not a list", 400, data=FLOATS, shape="1x784"),
    infer2("v2 unknown output", v2([tensor(FLOATS)], outputs=[{"name": "nope"}]), 404),
    infer2("v2 output traversal", v2([tensor(FLOATS)], outputs=[{"name": TRAVERSAL}]), 404),
    infer2(
        "v2 negative classification",
        v2([tensor(FLOATS)], outputs=[{"name": "logits", "parameters": {"classification": -1}}]),
        400,
    ),
    one("v2 bytes with no element", 400, data=[], shape=(0,), datatype="BYTES"),
    one("v2 bytes not an image", 400, data=["hello"], shape=(1,), datatype="BYTES"),
    one("v2 bytes bad shape", 400, data=["a", "b"], shape=(1, 2), datatype="BYTES"),
    one("v2 bytes not strings", 400, data=[1, 2], shape=(2,), datatype="BYTES"),
    one("v2 bytes lone surrogate", 400, data=["\udc80"], shape=(1,), datatype="BYTES"),
]
V2_BINARY = [
    infer2("v2 header length longer than body", binary(B_HEADER, BLOB, claimed=10**6), 400),
    infer2("v2 header length cuts the json", binary(B_HEADER, BLOB, claimed=10), 400),
    infer2("v2 header length past the json", binary(B_HEADER, BLOB, claimed=100), 400),
    infer2("v2 header length zero", binary(B_HEADER, BLOB, claimed=0), 400),
    infer2("v2 header length negative", binary(B_HEADER, BLOB, claimed=-5), 400),
    infer2("v2 header length not a number", binary(B_HEADER, BLOB, claimed="abc"), 400),
    infer2("v2 header length superscript digit", binary(B_HEADER, BLOB, claimed="\u00b2"), 400),
    infer2("v2 header length of 5000 digits", binary(B_HEADER, BLOB, claimed="9" * 5000), 400),
    infer2("v2 binary data short", binary(B_HEADER, BLOB[:-4]), 400),
    infer2("v2 binary data long", binary(B_HEADER, BLOB + bytes(4)), 400),
    sized("v2 binary size lies low", 400, BLOB, 3000),
    sized("v2 binary size lies high", 400, BLOB, 4000),
    sized("v2 binary size negative", 400, BLOB, -1),
    sized("v2 binary size not a number", 400, BLOB, "3136"),
    sized("v2 binary size of wrong dtype", 400, BLOB, 3136, datatype="FP64"),
    sized("v2 binary nan", 400, np.full(784, np.nan, np.float32).tobytes(), 3136),
    sized("v2 bytes length prefix lies", 400, b"\xff\xff\0\0abcd", 8, shape=(1,), datatype="BYTES"),
    sized("v2 bytes truncated prefix", 400, b"\x01\0", 2, shape=(1,), datatype="BYTES"),
    sized("v2 bytes bomb", 400, BOMB_ITEM, len(BOMB_ITEM), shape=(1,), datatype="BYTES"),
]
V2_NAMES = [
    infer2("v2 unknown model", v2([tensor(FLOATS)]), 404, "/v2/models/nosuch/infer"),
    infer2(
        "v2 unknown version", v2([tensor(FLOATS)]), 404, "/v2/models/fashion/versions/x@y/infer"
    ),
    infer2("v2 model traversal", v2([]), 404, f"/v2/models/{TRAVERSAL}/infer"),
    infer2("v2 model traversal encoded", v2([]), 404, "/v2/models/%2e%2e%2f%2e%2e%2fetc/infer"),
    infer2("v2 version traversal", v2([]), 404, f"/v2/models/fashion/versions/{TRAVERSAL}/infer"),
    infer2("v2 version encoded", v2([]), 404, "/v2/models/fashion/versions/..%2F..%2Fetc/infer"),
    get("v2 model dot-dot", "/v2/models/..", 404),
    get("v2 model dot-dot ready", "/v2/models/../ready", 404),
    get("v2 model encoded dot-dot ready", "/v2/models/%2e%2e/ready", 404),
    get("v2 version dot-dot config", "/v2/models/fashion/versions/../config", 404),
    get("v2 version encoded dot-dot stats", "/v2/models/fashion/versions/%2e%2e/stats", 404),
    get("v2 unknown model metadata", "/v2/models/nosuch", 404),
    get("v2 unknown version ready", "/v2/models/fashion/versions/x@y/ready", 404),
    get("v2 unknown endpoint", "/v2/nosuch", 404),
    get("v2 wrong method", INFER2, 405),
]
CONTROL_CASES = [
    control("policy malformed json", "PUT", "/v1/policy", b'{"min_accuracy": ', 422),
    control("policy not utf-8", "PUT", "/v1/policy", b'{"objective": "\xff"}', 400),
    control("policy unknown field", "PUT", "/v1/policy", b'{"latency": 1}', 422),
    control("policy bool as a number", "PUT", "/v1/policy", b'{"latency_budget_ms": true}', 422),
    control("policy infinite budget", "PUT", "/v1/policy", b'{"latency_budget_ms": 1e999}', 400),
    control("policy pin traversal", "PUT", "/v1/policy", b'{"pins": {"*": "../../x"}}', 404),
    control(
        "policy lone surrogate", "PUT", "/v1/policy", b'{"pins": {"\\ud800": "base@int8"}}', 422
    ),
    control("pin unknown variant", "POST", "/v1/pin", b'{"variant": "../../etc/passwd"}', 404),
    control(
        "pin unknown mode", "POST", "/v1/pin", b'{"variant": "base@int8", "power_mode": ".."}', 400
    ),
    control("power mode traversal", "POST", "/v1/power-mode", b'{"mode": "../../etc"}', 400),
    control("power mode huge id", "POST", "/v1/power-mode", b'{"mode": ' + b"9" * 40 + b"}", 400),
    control("power mode negative", "POST", "/v1/power-mode", b'{"mode": -1}', 400),
    control("power mode false", "POST", "/v1/power-mode", b'{"mode": false}', 422),
    control("power mode without token", "POST", "/v1/power-mode", b'{"mode": 0}', 401, token=""),
    control("policy with a wrong token", "PUT", "/v1/policy", b"{}", 401, token=TRAVERSAL),
]
CASES = IMAGES + V1_NAMES + V2_JSON + V2_BINARY + V2_NAMES + CONTROL_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_gets_a_4xx_with_a_json_reason_never_a_5xx(raw, case):
    reply = raw.send(case.method, case.path, case.body, case.headers)
    assert_refused(reply, case.path, case.status)
    if reply.status == 405:
        assert reply.headers.get("allow"), reply.headers


def test_huge_but_allowed_image_is_decoded_and_classified(raw):
    """9 Mpx (a 9 KB PNG) is under the pixel limit: it is decoded, resized and classified."""
    reply = raw.send("POST", "/v1/infer", BIG_PNG)
    assert reply.status == 200, reply.body[:300]
    assert len(reply.json()["predictions"]) == 5


# --- generated requests -----------------------------------------------------------------

LIVE = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
frames = mutated(st.sampled_from([PNG, JPEG, bomb_png(50_000, 50_000), bomb_png(3_000, 9_000)]))
queries = st.fixed_dictionaries(
    {},
    optional={
        "width": st.integers(-1, 40).map(str) | st.text(max_size=3),
        "height": st.integers(-1, 40).map(str),
        "k": st.integers(-1, 200).map(str),
        "variant": st.sampled_from(["base@int8", "dw-dw-dw@fp32", "x", "../..", "%2e%2e%2f"]),
        "stream": st.text(max_size=8),
    },
)


def test_generated_frames_are_classified_or_refused_with_a_4xx(raw):
    statuses: Counter[int] = Counter()

    @LIVE
    @given(frame=frames, params=queries)
    def post(frame: bytes, params: dict[str, str]) -> None:
        path = "/v1/infer" + ("?" + urlencode(params) if params else "")
        reply = raw.send("POST", path, frame)
        statuses[reply.status] += 1
        if reply.status != 200:
            assert_refused(reply, path)

    post()
    print(f"GENERATED POST /v1/infer: {sum(statuses.values())} cases, {json.dumps(statuses)}")


v2_requests = family_requests() | v2_bodies().map(
    lambda b: (b[0], {} if b[1] is None else {"Inference-Header-Content-Length": b[1]})
)


def test_generated_v2_requests_are_answered_or_refused_with_a_4xx(raw):
    statuses: Counter[int] = Counter()

    @LIVE
    @given(request=v2_requests.filter(lambda r: len(r[0]) <= MAX_BODY))
    def post(request: tuple[bytes, dict[str, str]]) -> None:
        reply = raw.send("POST", INFER2, *request)
        statuses[reply.status] += 1
        if reply.status != 200:
            assert_refused(reply, INFER2)

    post()
    print(f"GENERATED POST {INFER2}: {sum(statuses.values())} cases, {json.dumps(statuses)}")


def test_server_is_healthy_and_correct_after_every_hostile_request(raw):
    """Runs last in this module: ready, and a good frame and tensor still classify."""
    assert raw.send("GET", "/v2/health/ready").status == 200
    assert raw.send("GET", "/v2/models/fashion/ready").status == 200
    expected = raw.send("POST", "/v1/infer?variant=base@fp32", PNG)
    assert expected.status == 200, expected.body[:300]
    label = expected.json()["predictions"][0]["index"]
    reply = raw.send("POST", "/v2/models/fashion/versions/base@fp32/infer", v2([tensor(FLOATS)]))
    assert reply.status == 200, reply.body[:300]
    logits = reply.json()["outputs"][0]["data"]
    assert int(np.argmax(logits)) == label
    blob_body, headers = binary(B_HEADER, BLOB)
    assert raw.send("POST", INFER2, blob_body, headers).status == 200
