"""Operator endpoints: health, status, variants, policy, power mode, pins, live events,
per-stream statistics and Prometheus metrics.

Reads are open; changes (PUT /v1/policy, POST /v1/power-mode, POST /v1/pin) need the
control token (see `deps.require_control`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import edge_service
from edge_service.control.budget import Policy
from edge_service.device import current as current_device
from edge_service.errors import BadInputError, ConfigError, OverloadedError
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.server.broadcast import sse
from edge_service.server.deps import ControlDep, ServiceDep, errors
from edge_service.server.power import ModeChange
from edge_service.server.schemas import (
    ErrorResponse,
    PinBody,
    PolicyBody,
    PolicyResponse,
    PowerModeBody,
    PowerModeResponse,
    StatusResponse,
    StreamsResponse,
    VariantDetail,
    VariantOut,
    VariantsResponse,
)
from edge_service.server.service import Service

router = APIRouter()


@contextmanager
def _request_error() -> Iterator[None]:
    """A ConfigError raised by what a request asked for is the client's mistake (400)."""
    try:
        yield
    except ConfigError as exc:
        raise BadInputError(exc.message) from exc


CONTROL_ERRORS = errors(400, 401, 403, 404, 409, 503)


@router.get("/v2/health/live", tags=["health"])
async def live() -> dict[str, bool]:
    """The process is up (KServe v2 liveness)."""
    return {"live": True}


@router.get("/v2/health/ready", tags=["health"], responses={503: {"model": ErrorResponse}})
async def ready(request: Request) -> JSONResponse:
    """Ready once an engine is loaded (KServe v2 readiness)."""
    service: Service | None = getattr(request.app.state, "service", None)
    ok = service is not None and service.pool.ready
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/v1/status", response_model=StatusResponse, tags=["operators"], responses=errors(503))
async def status(
    service: ServiceDep, events: Annotated[int, Query(ge=0, le=1000)] = 20
) -> StatusResponse:
    """The board's context, the active variant, the policy and recent adaptation events."""
    state = service.loop.state()
    live = service.live_state()
    variants = []
    mode = state.context.power_mode if state.context else None
    mode_name = mode.name if mode else DEFAULT_POWER_MODE
    for v in service.catalog.variants:
        profile = v.profile_for(service.device, mode_name) or v.profile_for(
            service.device, DEFAULT_POWER_MODE
        )
        variants.append(
            VariantOut(
                id=v.id,
                precision=v.precision,
                backend=v.backend,
                accuracy=v.accuracy.top1 if v.accuracy else None,
                latency_p50_ms=profile.latency_ms(1) if profile else None,
                status=v.status,
                status_reason=v.status_reason,
                precision_drop=v.precision_drop,
                prediction=_prediction(service, v.id),
            )
        )
    return StatusResponse(
        family=service.catalog.family,
        version=edge_service.__version__,
        device=service.device,
        ready=service.pool.ready,
        active_variant=service.pool.active_id,
        uptime_s=time.time() - service.started_at,
        context=state.context.to_dict() if state.context else None,
        decision=asdict(state.decision) if state.decision else None,
        ticks=state.ticks,
        source_errors=state.source_errors,
        variants=variants,
        events=[e.to_dict() for e in service.events.recent(events)],
        power_mode=live["power_mode"],  # type: ignore[arg-type]
        power_emulated=service.power.emulated,
        policy=service.policy.to_dict(),
        strategy=service.loop.strategy.name,
        standby=list(service.pool.standby),
        pinned_engines=list(service.pool.pinned),
        unhealthy=sorted(service.pool.unhealthy),
        queue_depth=service.batcher.depth,
        swaps=service.pool.swaps,
        last_swap_ms=service.pool.last_swap_ms,
        latency_ms=service.telemetry.window(),
        device_name=current_device().name,
        build=service.build_state(),
        shadow_runs=service.loop.probes,
    )


def _prediction(service: Service, variant_id: str) -> dict[str, object] | None:
    estimate = service.loop.strategy.estimate_of(variant_id)
    return estimate.to_dict() if estimate is not None else None


@router.get(
    "/v1/variants", response_model=VariantsResponse, tags=["operators"], responses=errors(503)
)
async def variants(service: ServiceDep) -> VariantsResponse:
    """Every variant of the family: its profiles, accuracy, load state, health and gate
    status (servable, rejected or dominated, with the reason)."""
    pool = service.pool
    roles = {
        **dict.fromkeys(pool.pinned, "pinned"),
        **dict.fromkeys(pool.standby, "standby"),
        **({pool.active_id: "active"} if pool.active_id else {}),
    }
    out = []
    for v in service.catalog.variants:
        loaded = roles.get(v.id)
        out.append(
            VariantDetail(
                id=v.id,
                network=v.variant_spec.family_key,
                precision=v.precision,
                backend=v.backend,
                resolution=v.variant_spec.input_size,
                accuracy=v.accuracy.top1 if v.accuracy else None,
                artifact_bytes=v.artifact.bytes,
                loaded=loaded,
                healthy=v.id not in pool.unhealthy,
                predicted_latency_ms=service.loop.strategy.predicted_ms(v.id),
                status=v.status,
                status_reason=v.status_reason,
                precision_drop=v.precision_drop,
                profiles={
                    dev: {mode: p.model_dump(mode="json") for mode, p in modes.items()}
                    for dev, modes in v.profiles.items()
                },
            )
        )
    return VariantsResponse(
        family=service.catalog.family, active_variant=pool.active_id, variants=out
    )


def _policy_response(service: Service) -> PolicyResponse:
    decision = service.loop.state().decision
    return PolicyResponse(
        policy=service.policy.to_dict(),
        strategy=service.loop.strategy.name,
        active_variant=service.pool.active_id,
        decision=asdict(decision) if decision else None,
    )


@router.get("/v1/policy", response_model=PolicyResponse, tags=["operators"], responses=errors(503))
async def get_policy(service: ServiceDep) -> PolicyResponse:
    """The policy the controller follows now."""
    return _policy_response(service)


@router.put(
    "/v1/policy",
    response_model=PolicyResponse,
    tags=["operators"],
    responses=CONTROL_ERRORS,
    dependencies=[ControlDep],
)
async def put_policy(body: PolicyBody, service: ServiceDep) -> PolicyResponse:
    """Replace the policy (validated; a bad one changes nothing) and decide with it now."""
    for mode, variant in body.model_dump().get("pins", {}).items():
        _check_pin(service, mode, variant)
    with _request_error():
        policy = Policy.from_dict(body.model_dump())
    await run_in_threadpool(service.set_policy, policy)
    return _policy_response(service)


def _check_pin(service: Service, mode: str, variant: str | None) -> None:
    """400 for a power mode this board does not have, 404 for an unknown variant, 409 for
    one the build's accuracy gate rejected (a dominated one may be pinned)."""
    known = {"*", DEFAULT_POWER_MODE, *(str(m["name"]) for m in service.power.modes())}
    if mode not in known:
        raise BadInputError(f"power mode {mode!r} is not known here; use one of {sorted(known)}")
    if variant is not None:
        service.catalog.pinnable(variant)  # 404 / 409, nothing changed


@router.post(
    "/v1/pin",
    response_model=PolicyResponse,
    tags=["operators"],
    responses=CONTROL_ERRORS,
    dependencies=[ControlDep],
)
async def pin(body: PinBody, service: ServiceDep) -> PolicyResponse:
    """Pin a variant (in one power mode, or ``"*"`` for all); ``variant: null`` unpins."""
    _check_pin(service, body.power_mode, body.variant)
    pins = dict(service.policy.pins)
    if body.variant is None:
        pins.pop(body.power_mode, None)
    else:
        pins[body.power_mode] = body.variant
    with _request_error():
        policy = Policy.from_dict(service.policy.to_dict() | {"pins": pins})
    await run_in_threadpool(service.set_policy, policy)
    return _policy_response(service)


def _power_response(service: Service, change: ModeChange | None = None) -> PowerModeResponse:
    current = service.power.current()
    return PowerModeResponse(
        previous=change.previous.to_dict() if change and change.previous else None,
        current=current.to_dict() if current else {},
        emulated=service.power.emulated,
        threads=service.power.threads,
        cores=list(change.cores) if change and change.cores else None,
        active_variant=service.pool.active_id,
        modes=service.power.modes(),
    )


@router.get(
    "/v1/power-mode", response_model=PowerModeResponse, tags=["operators"], responses=errors(503)
)
async def get_power_mode(service: ServiceDep) -> PowerModeResponse:
    """The power mode now and the modes there are."""
    return await run_in_threadpool(_power_response, service)


@router.post(
    "/v1/power-mode",
    response_model=PowerModeResponse,
    tags=["operators"],
    responses={**CONTROL_ERRORS, **errors(502)},  # 502: nvpmodel failed on the board
    dependencies=[ControlDep],
)
async def set_power_mode(body: PowerModeBody, service: ServiceDep) -> PowerModeResponse:
    """Switch the power mode (nvpmodel on a Jetson, emulated elsewhere); engines reload at
    the mode's thread count with no request dropped, and the controller decides again."""
    with _request_error():
        change = await run_in_threadpool(service.set_power_mode, body.mode)
    return await run_in_threadpool(_power_response, service, change)


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
    service: ServiceDep,
    history: Annotated[int, Query(ge=0, le=1000, description="past events sent first")] = 20,
) -> StreamingResponse:
    """A live stream (SSE) of ``adaptation`` events and ``context`` samples (one per
    monitor tick); the last ``history`` adaptation events come first."""
    queue = service.broadcaster.subscribe()
    if queue is None:
        raise OverloadedError(
            f"{service.broadcaster.max_subscribers} event streams are open already", 10.0
        )
    first = [sse("adaptation", e.to_dict()) for e in service.events.recent(history)]
    return StreamingResponse(
        service.broadcaster.stream(queue, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/v1/streams", response_model=StreamsResponse, tags=["operators"], responses=errors(503)
)
async def streams(service: ServiceDep) -> StreamsResponse:
    """Per camera/stream statistics (requests named with ``?stream=`` or X-Stream-Id)."""
    return StreamsResponse(streams=service.telemetry.streams())


@router.get(
    "/metrics",
    tags=["operators"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **errors(503)},
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics: requests and latency per variant, queue depth, swaps, active
    variant, power mode, rail power, temperatures."""
    return Response(generate_latest(service.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
