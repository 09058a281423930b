"""The admission limit: at most N inference requests in the server; the next one is
answered 503 + Retry-After in the API's error shape after its body is read and dropped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from edge_service.server.admission import AdmissionLimit, inference_endpoint
from edge_service.server.app import _error_body

Message = dict[str, Any]


class Inner:
    """An app that holds every request until released, and counts the ones it saw."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen = 0

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.seen += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _scope(path: str, method: str = "POST") -> Message:
    return {"type": "http", "method": method, "path": path, "headers": []}


class Exchange:
    """One request through the middleware: its body in chunks, what came back."""

    def __init__(self, chunks: int = 3) -> None:
        self.body = [
            {"type": "http.request", "body": b"x" * 10, "more_body": i < chunks - 1}
            for i in range(chunks)
        ]
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return self.body.pop(0) if self.body else {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    def header(self, name: str) -> str:
        return dict(self.sent[0]["headers"])[name.encode()].decode()

    def json(self) -> Any:
        return json.loads(self.sent[1]["body"])


async def _fill_then_one_more(path: str, limit: int) -> tuple[AdmissionLimit, Inner, Exchange]:
    inner = Inner()
    mw = AdmissionLimit(inner, max_inflight=limit, error_body=_error_body)
    held = [
        asyncio.create_task(mw(_scope(path), Exchange().receive, Exchange().send))
        for _ in range(limit)
    ]
    await asyncio.sleep(0)
    extra = Exchange()
    await mw(_scope(path), extra.receive, extra.send)
    inner.release.set()
    await asyncio.gather(*held)
    return mw, inner, extra


def test_the_request_over_the_limit_gets_503_retry_after_and_its_body_is_drained() -> None:
    mw, inner, extra = asyncio.run(_fill_then_one_more("/v1/infer", limit=2))
    assert inner.seen == 2 and extra.status == 503
    assert int(extra.header("retry-after")) >= 1
    doc = extra.json()
    assert doc["error"] == "overloaded" and "EDGE_MAX_INFLIGHT" in doc["detail"]
    assert extra.body == []  # every chunk read, none kept
    assert mw.inflight == 0


def test_a_refused_v2_request_keeps_the_kserve_error_shape() -> None:
    _, _, extra = asyncio.run(_fill_then_one_more("/v2/models/fashion/infer", limit=1))
    doc = extra.json()
    assert extra.status == 503 and doc["code"] == "overloaded" and "INFLIGHT" in doc["error"]


async def _fails(scope: Message, receive: Any, send: Any) -> None:
    raise RuntimeError("boom")


def test_a_request_that_fails_gives_its_place_back() -> None:
    mw = AdmissionLimit(_fails, max_inflight=1, error_body=_error_body)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            asyncio.run(mw(_scope("/v1/infer"), Exchange().receive, Exchange().send))
    assert mw.inflight == 0


@pytest.mark.parametrize(
    ("method", "path", "label"),
    [
        ("POST", "/v1/infer", "v1_infer"),
        ("POST", "/v1/infer/batch", "v1_infer_batch"),
        ("POST", "/v2/models/fashion/infer", "v2_infer"),
        ("POST", "/v2/models/fashion/versions/base@int8/infer", "v2_infer"),
        ("POST", "/v1/pin", None),
        ("PUT", "/v1/policy", None),
        ("GET", "/v1/infer", None),
        ("GET", "/v1/status", None),
        ("POST", "/v1/infer/other", None),
    ],
)
def test_only_inference_requests_count_against_the_limit(
    method: str, path: str, label: str | None
) -> None:
    assert inference_endpoint(method, path) == label
