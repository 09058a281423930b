"""Admission control: a cap on the inference requests inside the server at once.

The engine queue (EDGE_QUEUE_MAX) bounds the frames waiting for the engine, but a request
holds its body, and then its decoded frames, from the moment it is read: well before it
reaches that queue. With enough clients posting big frames at once, memory would follow
the number of clients (bench/overload.py, --frame-side). This ASGI middleware counts the
inference requests in the server (being read, decoded, queued, run or answered) and
answers the next one with 503 ``overloaded`` and Retry-After without keeping its body, so
memory stays under about ``max_inflight`` x (``max_body_bytes`` + a decoded frame)
whatever the load. The refused request's body is read and dropped chunk by chunk first,
so the client reads the answer on a connection that stays usable (answering mid-upload
and closing would reset the connection under the client's feet).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# the inference routes, and the endpoint label their requests carry in /metrics
_LIMITED = (
    (re.compile(r"/v1/infer"), "v1_infer"),
    (re.compile(r"/v1/infer/batch"), "v1_infer_batch"),
    (re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/infer"), "v2_infer"),
)
RETRY_AFTER_S = 1

ErrorBody = Callable[[str, str, str], dict[str, str]]


def inference_endpoint(method: str, path: str) -> str | None:
    """The metrics label of an inference request, None for any other request."""
    if method != "POST":
        return None
    return next((label for pattern, label in _LIMITED if pattern.fullmatch(path)), None)


class AdmissionLimit:
    """Lets at most ``max_inflight`` inference requests in at once; 503 for the rest."""

    def __init__(self, app: ASGIApp, max_inflight: int, error_body: ErrorBody) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be >= 1")
        self.app, self.max_inflight, self.error_body = app, max_inflight, error_body
        self.inflight = 0  # only touched on the event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            inference_endpoint(scope["method"], scope["path"]) if scope["type"] == "http" else None
        )
        if endpoint is None:
            await self.app(scope, receive, send)
        elif self.inflight >= self.max_inflight:
            await self._refuse(scope, receive, send, endpoint)
        else:
            self.inflight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.inflight -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        await _drain(receive)
        service = getattr(scope["app"].state, "service", None) if "app" in scope else None
        if service is not None:
            service.telemetry.record(endpoint, "-", "overloaded", 0.0)
        message = (
            f"{self.max_inflight} inference requests are in the server already "
            "(EDGE_MAX_INFLIGHT); retry shortly"
        )
        body = self.error_body(scope["path"], "overloaded", message)
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        await JSONResponse(body, status_code=503, headers=headers)(scope, receive, send)


async def _drain(receive: Receive) -> None:
    """Read the request body to its end, keeping none of it."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
