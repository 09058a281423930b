"""The frame API: camera frames in (JPEG, PNG, raw gray, or multipart), labels out."""

from __future__ import annotations

import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Annotated

from fastapi import APIRouter, Query, Request

from edge_service.errors import BadInputError, EdgeServiceError, UnsupportedMediaError
from edge_service.runtime.batcher import BatchResult
from edge_service.runtime.detection import decode_detections
from edge_service.runtime.postprocess import top_k
from edge_service.server.deps import InferenceDep, ServiceDep, StreamDep, errors, read_body
from edge_service.server.inference import (
    FrameJob,
    check_pin,
    decode_frames,
    elapsed_ms,
    output_rows,
    run_job,
)
from edge_service.server.schemas import (
    BatchInferResponse,
    DetectionOut,
    FrameResult,
    InferResponse,
    PredictionOut,
    TimingsOut,
)
from edge_service.server.service import Service

router = APIRouter(tags=["inference"], dependencies=[InferenceDep])
MAX_DETECTIONS = 100  # per frame, unless ?k= says fewer (top_k is a classification setting)
FRAME_ERRORS = errors(400, 401, 404, 409, 413, 415, 503)
_IMAGE = {"schema": {"type": "string", "format": "binary"}}
_FORM = {
    "schema": {
        "type": "object",
        "properties": {"frame": {"type": "array", "items": {"type": "string", "format": "binary"}}},
    }
}
ONE_FRAME = {
    "requestBody": {
        "required": True,
        "content": {
            "image/png": _IMAGE,
            "image/jpeg": _IMAGE,
            "application/octet-stream": _IMAGE,
            "multipart/form-data": _FORM,
        },
    }
}
FRAMES = {"requestBody": {"required": True, "content": {"multipart/form-data": _FORM}}}

Width = Annotated[int | None, Query(gt=0, description="raw frames: width")]
Height = Annotated[int | None, Query(gt=0, description="raw frames: height")]
TopK = Annotated[
    int | None,
    Query(
        ge=1,
        le=100,
        description="how many classes (detection families: most detections per frame, "
        f"default {MAX_DETECTIONS})",
    ),
]
VariantQ = Annotated[
    str | None, Query(description="pin this request to one variant (e.g. base@int8)")
]


def multipart_frames(content_type: str, body: bytes) -> list[tuple[str | None, bytes]]:
    """The file parts of a multipart/form-data body: (filename, bytes), in order."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise BadInputError("the multipart body could not be parsed: check the boundary")
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload:
            parts.append((part.get_filename(), payload))
    if not parts:
        raise BadInputError("the multipart form has no file part: send the frame as a file")
    return parts


async def frame_bodies(request: Request, service: Service) -> list[tuple[str | None, bytes]]:
    """The request's frames: one raw body, or every file part of a multipart form."""
    body = await read_body(request, service.settings.max_body_bytes, multipart_ok=True)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/"):
        if not content_type.startswith("multipart/form-data"):
            raise UnsupportedMediaError(f"{content_type.split(';')[0]} is not supported")
        return multipart_frames(content_type, body)
    if not body:
        raise BadInputError("the request body is empty: send a JPEG, PNG or raw frame")
    return [(None, body)]


def default_k(service: Service) -> int:
    """Classes per frame (the top_k setting), or detections per frame (MAX_DETECTIONS)."""
    return MAX_DETECTIONS if service.catalog.task == "detection" else service.settings.top_k


def frame_results(
    service: Service, results: list[BatchResult], job: FrameJob, k: int
) -> list[FrameResult]:
    """Labels (or detections) per frame, from the batched outputs in row order."""
    labels = service.catalog.labels
    out = []
    rows = output_rows(results)
    for i, row in enumerate(rows):
        if service.catalog.task == "detection":
            found = decode_detections(row, labels, max_detections=k, letterbox=job.geometry[i])
            detections = [
                DetectionOut(label=d.label, index=d.index, score=d.score, box=list(d.box))
                for d in found
            ]
            out.append(FrameResult(predictions=[], detections=detections))
        else:
            preds = [
                PredictionOut(label=p.label, index=p.index, score=p.score)
                for p in top_k(row, labels, k)[0]
            ]
            out.append(FrameResult(predictions=preds))
    return out


def answered_labels(frames: list[FrameResult]) -> list[list[str]] | None:
    """The labels answered per frame for a detection family (what the stream statistics
    count), None for a classification family."""
    if not frames or frames[0].detections is None:
        return None
    return [[d.label for d in f.detections or []] for f in frames]


async def infer_frames(
    service: Service,
    bodies: list[bytes],
    *,
    width: int | None,
    height: int | None,
    variant: str | None,
) -> tuple[FrameJob, list[BatchResult], float]:
    """Decode and run frames; returns the job, its results and when decoding ended."""
    images = await decode_frames(service, bodies, width=width, height=height)
    decoded = time.perf_counter()
    job = FrameJob(service.preprocess, images)
    results = await run_job(service, job, len(images), variant)
    return job, results, decoded


@router.post(
    "/v1/infer", response_model=InferResponse, responses=FRAME_ERRORS, openapi_extra=ONE_FRAME
)
async def infer(
    request: Request,
    service: ServiceDep,
    stream: StreamDep,
    width: Width = None,
    height: Height = None,
    k: TopK = None,
    variant: VariantQ = None,
) -> InferResponse:
    """Classify one frame, or detect its objects (detection families): JPEG or PNG, raw
    8-bit grayscale bytes (with width/height), or a multipart form with the frame as its
    file part."""
    started = time.perf_counter()
    try:
        parts = await frame_bodies(request, service)
        if len(parts) != 1:
            raise BadInputError(f"/v1/infer takes one frame, got {len(parts)}: use /v1/infer/batch")
        job, results, decoded = await infer_frames(
            service,
            [parts[0][1]],
            width=width,
            height=height,
            variant=check_pin(service, variant),
        )
    except EdgeServiceError as exc:
        service.telemetry.record("v1_infer", "-", exc.code, elapsed_ms(started), stream=stream)
        raise
    r = results[0]
    frame = frame_results(service, results, job, k or default_k(service))[0]
    total = elapsed_ms(started)
    service.telemetry.record(
        "v1_infer",
        r.variant_id,
        "ok",
        total,
        stream=stream,
        engine_ms=r.engine_ms / r.batch_rows,
        detections=answered_labels([frame]),
    )
    return InferResponse(
        predictions=frame.predictions,
        detections=frame.detections,
        variant=r.variant_id,
        precision=r.info.precision,
        backend=r.info.backend,
        stream=stream,
        timings=TimingsOut(
            decode_ms=(decoded - started) * 1e3,
            queue_ms=r.queue_ms,
            engine_ms=r.engine_ms,
            batch=r.batch_rows,
            total_ms=total,
        ),
    )


@router.post(
    "/v1/infer/batch",
    response_model=BatchInferResponse,
    responses=FRAME_ERRORS,
    openapi_extra=FRAMES,
)
async def infer_batch(
    request: Request,
    service: ServiceDep,
    stream: StreamDep,
    k: TopK = None,
    variant: VariantQ = None,
) -> BatchInferResponse:
    """Classify (or detect objects in) several frames sent as the file parts of one
    multipart/form-data body (``curl -F frame=@a.png -F frame=@b.jpg``); results come back
    in part order."""
    started = time.perf_counter()
    try:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise UnsupportedMediaError(
                "send the frames as a multipart/form-data body, one file part per frame"
            )
        parts = await frame_bodies(request, service)
        cap = service.settings.max_batch_frames
        if len(parts) > cap:
            raise BadInputError(f"{len(parts)} frames is over the limit of {cap} per request")
        job, results, decoded = await infer_frames(
            service,
            [body for _, body in parts],
            width=None,
            height=None,
            variant=check_pin(service, variant),
        )
    except EdgeServiceError as exc:
        service.telemetry.record(
            "v1_infer_batch", "-", exc.code, elapsed_ms(started), stream=stream
        )
        raise
    frames = frame_results(service, results, job, k or default_k(service))
    for frame, (name, _) in zip(frames, parts, strict=True):
        frame.filename = name
    first = results[0]
    total = elapsed_ms(started)
    service.telemetry.record(
        "v1_infer_batch",
        first.variant_id,
        "ok",
        total,
        frames=len(frames),
        stream=stream,
        detections=answered_labels(frames),
    )
    return BatchInferResponse(
        results=frames,
        variants=sorted({r.variant_id for r in results}),
        precision=first.info.precision,
        backend=first.info.backend,
        stream=stream,
        timings=TimingsOut(
            decode_ms=(decoded - started) * 1e3,
            queue_ms=max(r.queue_ms for r in results),
            engine_ms=sum(r.engine_ms for r in results),
            batch=max(r.batch_rows for r in results),
            total_ms=total,
        ),
    )
