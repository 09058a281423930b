"""Operator endpoints: health, status, variants, policy, power mode, pins, live events,
per-stream statistics and Prometheus metrics.

Reads are open; changes (PUT /v1/policy, POST /v1/power-mode, POST /v1/pin) need the
control token (see `deps.require_control`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST

from edge_service.server.deps import ControlDep, OperatorDep, StatusDep, errors
from edge_service.server.schemas import (
    ErrorResponse,
    PinBody,
    PolicyBody,
    PolicyResponse,
    PowerModeBody,
    PowerModeResponse,
    StatusResponse,
    StreamsResponse,
    VariantsResponse,
)
from edge_service.server.service import Service

router = APIRouter()


CONTROL_ERRORS = errors(400, 401, 403, 404, 409, 503)


@router.get("/v2/health/live", tags=["health"])
async def live() -> dict[str, bool]:
    """The process is up (KServe v2 liveness)."""
    return {"live": True}


@router.get("/v2/health/ready", tags=["health"], responses={503: {"model": ErrorResponse}})
async def ready(request: Request) -> JSONResponse:
    """Ready once an engine is loaded (KServe v2 readiness)."""
    service: Service | None = getattr(request.app.state, "service", None)
    ok = service is not None and service.ready_for()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/v1/status", response_model=StatusResponse, tags=["operators"], responses=errors(503))
async def status(
    view: StatusDep, events: Annotated[int, Query(ge=0, le=1000)] = 20
) -> StatusResponse:
    """The board's context, the active variant, the policy and recent adaptation events."""
    return view.status(events)


@router.get(
    "/v1/variants", response_model=VariantsResponse, tags=["operators"], responses=errors(503)
)
async def variants(view: StatusDep) -> VariantsResponse:
    """Every variant of the family: its profiles, accuracy, load state, health and gate
    status (servable, rejected or dominated, with the reason)."""
    return view.variants()


@router.get("/v1/policy", response_model=PolicyResponse, tags=["operators"], responses=errors(503))
async def get_policy(view: StatusDep) -> PolicyResponse:
    """The policy the controller follows now."""
    return view.policy()


@router.put(
    "/v1/policy",
    response_model=PolicyResponse,
    tags=["operators"],
    responses=CONTROL_ERRORS,
    dependencies=[ControlDep],
)
async def put_policy(body: PolicyBody, operator: OperatorDep, view: StatusDep) -> PolicyResponse:
    """Replace the policy (validated; a bad one changes nothing) and decide with it now."""
    await run_in_threadpool(operator.put_policy, body)
    return view.policy()


@router.post(
    "/v1/pin",
    response_model=PolicyResponse,
    tags=["operators"],
    responses=CONTROL_ERRORS,
    dependencies=[ControlDep],
)
async def pin(body: PinBody, operator: OperatorDep, view: StatusDep) -> PolicyResponse:
    """Pin a variant (in one power mode, or ``"*"`` for all); ``variant: null`` unpins."""
    await run_in_threadpool(operator.pin, body)
    return view.policy()


@router.get(
    "/v1/power-mode", response_model=PowerModeResponse, tags=["operators"], responses=errors(503)
)
async def get_power_mode(view: StatusDep) -> PowerModeResponse:
    """The power mode now and the modes there are."""
    return await run_in_threadpool(view.power)


@router.post(
    "/v1/power-mode",
    response_model=PowerModeResponse,
    tags=["operators"],
    responses={**CONTROL_ERRORS, **errors(502)},  # 502: nvpmodel failed on the board
    dependencies=[ControlDep],
)
async def set_power_mode(
    body: PowerModeBody, operator: OperatorDep, view: StatusDep
) -> PowerModeResponse:
    """Switch the power mode (nvpmodel on a Jetson, emulated elsewhere); engines reload at
    the mode's thread count with no request dropped, and the controller decides again."""
    change = await run_in_threadpool(operator.set_power_mode, body.mode)
    return await run_in_threadpool(view.power, change)


@router.get(
    "/v1/events",
    tags=["operators"],
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
        **errors(503),
    },
    response_class=StreamingResponse,
)
async def events(
    view: StatusDep,
    history: Annotated[int, Query(ge=0, le=1000, description="past events sent first")] = 20,
) -> StreamingResponse:
    """A live stream (SSE) of ``adaptation`` events and ``context`` samples (one per
    monitor tick); the last ``history`` adaptation events come first."""
    return StreamingResponse(
        view.event_stream(history),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/v1/streams", response_model=StreamsResponse, tags=["operators"], responses=errors(503)
)
async def streams(view: StatusDep) -> StreamsResponse:
    """Per camera/stream statistics (requests named with ``?stream=`` or X-Stream-Id)."""
    return view.streams()


@router.get(
    "/metrics",
    tags=["operators"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **errors(503)},
)
async def metrics(view: StatusDep) -> Response:
    """Prometheus metrics: requests and latency per variant, queue depth, swaps, active
    variant, power mode, rail power, temperatures."""
    return Response(view.metrics(), media_type=CONTENT_TYPE_LATEST)
