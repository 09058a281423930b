"""Request dependencies shared by the routers: the Service, tokens, bodies, stream ids."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from pydantic import SecretStr

from edge_service.config import LOOPBACK
from edge_service.errors import (
    ForbiddenError,
    NotReadyError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from edge_service.server.schemas import ErrorResponse
from edge_service.server.service import Service
from edge_service.server.telemetry import check_stream_id
from edge_service.server.views import Operator, StatusView


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all share ErrorResponse)."""
    return {code: {"model": ErrorResponse} for code in codes}


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReadyError("the service is starting; retry when /v2/health/ready is 200")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_status_view(service: ServiceDep) -> StatusView:
    return StatusView(service)


def get_operator(service: ServiceDep) -> Operator:
    return Operator(service)


StatusDep = Annotated[StatusView, Depends(get_status_view)]  # the read side, for routers
OperatorDep = Annotated[Operator, Depends(get_operator)]  # the operator's commands


def _check_bearer(request: Request, token: SecretStr, what: str) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError(f"{what} need a bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise UnauthorizedError(f"the bearer token for {what} is wrong")


def require_control(request: Request, service: ServiceDep) -> None:
    """Control endpoints: on, and either a valid token or (with none set) loopback only."""
    settings = service.settings
    if not settings.control_enabled:
        raise ForbiddenError(
            "control endpoints are turned off on this server (EDGE_CONTROL_ENABLED=false)"
        )
    if settings.control_token is not None:
        _check_bearer(request, settings.control_token, "control endpoints")
        return
    client = request.client.host if request.client else None
    if client not in LOOPBACK:
        raise UnauthorizedError(
            "control endpoints without EDGE_CONTROL_TOKEN answer loopback clients only"
        )


def require_inference(request: Request, service: ServiceDep) -> None:
    """Inference endpoints: open unless EDGE_INFERENCE_TOKEN is set."""
    token = service.settings.inference_token
    if token is not None:
        _check_bearer(request, token, "inference endpoints")


ControlDep = Depends(require_control)
InferenceDep = Depends(require_inference)


def stream_id(
    stream: Annotated[
        str | None, Query(description="camera/stream id for per-stream statistics")
    ] = None,
    x_stream_id: Annotated[str | None, Header(description="same as ?stream=")] = None,
) -> str | None:
    return check_stream_id(stream or x_stream_id)


StreamDep = Annotated[str | None, Depends(stream_id)]


async def read_body(request: Request, limit: int, *, multipart_ok: bool = False) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", ""):
        raise UnsupportedMediaError(
            f"Content-Encoding {encoding!r} is not supported: send the body uncompressed"
        )
    if not multipart_ok and request.headers.get("content-type", "").startswith("multipart/"):
        raise UnsupportedMediaError(
            "this endpoint takes the raw request body (curl --data-binary @frame.png), "
            "not a multipart form"
        )
    declared = request.headers.get("content-length", "")
    # ASCII digits only (str.isdigit() takes '²'), and no int() of thousands of digits
    too_long = len(declared) > 18
    if declared.isascii() and declared.isdigit() and (too_long or int(declared) > limit):
        raise PayloadTooLargeError(f"body of {declared[:20]} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
