"""Routes: thin handlers over the Service; the work happens in the runtime."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edge_service.errors import NotReadyError, PayloadTooLargeError, UnsupportedMediaError
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.runtime.detection import decode_detections
from edge_service.runtime.postprocess import top_k
from edge_service.server.schemas import (
    DetectionOut,
    ErrorResponse,
    InferResponse,
    PredictionOut,
    StatusResponse,
    TimingsOut,
    VariantOut,
)
from edge_service.server.service import Service

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 503)
}


def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReadyError("the service is starting; retry when /v2/health/ready is 200")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        raise UnsupportedMediaError(
            "send the frame as the raw request body (curl --data-binary @frame.png), "
            "not as a multipart form"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/infer", response_model=InferResponse, responses=ERRORS, tags=["inference"])
async def infer(
    request: Request,
    service: ServiceDep,
    width: Annotated[int | None, Query(gt=0, description="raw frames: width")] = None,
    height: Annotated[int | None, Query(gt=0, description="raw frames: height")] = None,
    k: Annotated[int | None, Query(ge=1, le=100, description="how many classes")] = None,
) -> InferResponse:
    """Classify one frame: a JPEG or PNG, or raw 8-bit grayscale bytes (with width/height)."""
    started = time.perf_counter()
    settings = service.settings
    body = await read_body(request, settings.max_body_bytes)
    image = service.preprocess().decode(
        body, width=width, height=height, max_pixels=settings.max_image_pixels
    )
    return await run_in_threadpool(_infer_sync, service, image, k or settings.top_k, started)


def _infer_sync(service: Service, image: np.ndarray, k: int, started: float) -> InferResponse:
    with service.pool.lease() as (variant_id, engine):
        batch, geometry = service.preprocess(variant_id).to_batch(image)
        decoded = time.perf_counter()
        output = engine.infer(batch)
        ran = time.perf_counter()
        info = engine.info()
    service.loop.strategy.observe(variant_id, (ran - decoded) * 1e3)
    labels = service.catalog.labels
    predictions, detections = [], None
    if service.catalog.task == "detection":
        found = decode_detections(output, labels, max_detections=k, letterbox=geometry)
        detections = [
            DetectionOut(label=d.label, index=d.index, score=d.score, box=list(d.box))
            for d in found
        ]
    else:
        predictions = [
            PredictionOut(label=p.label, index=p.index, score=p.score)
            for p in top_k(output, labels, k)[0]
        ]
    return InferResponse(
        predictions=predictions,
        detections=detections,
        variant=variant_id,
        precision=info.precision,
        backend=info.backend,
        timings=TimingsOut(
            decode_ms=(decoded - started) * 1e3,
            engine_ms=(ran - decoded) * 1e3,
            total_ms=(time.perf_counter() - started) * 1e3,
        ),
    )


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


@router.get("/v1/status", response_model=StatusResponse, tags=["operators"])
async def status(
    service: ServiceDep, events: Annotated[int, Query(ge=0, le=1000)] = 20
) -> StatusResponse:
    """The board's context, the active variant, and recent adaptation decisions."""
    state = service.loop.state()
    variants = []
    for v in service.catalog.variants:
        profile = v.profile_for(service.device, DEFAULT_POWER_MODE)
        variants.append(
            VariantOut(
                id=v.id,
                precision=v.precision,
                backend=v.backend,
                accuracy=v.accuracy.top1 if v.accuracy else None,
                latency_p50_ms=profile.latency_ms(1) if profile else None,
            )
        )
    return StatusResponse(
        family=service.catalog.family,
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
    )
