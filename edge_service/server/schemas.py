"""Response models of the HTTP API (what the OpenAPI page documents)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from edge_service.repository import AccuracyMetric

# JSON may escape half a surrogate pair ("\ud800"): Python keeps it, but it is no Unicode
# text, and a response that echoes it cannot be encoded (a 500, on every later read).
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class PredictionOut(BaseModel):
    label: str
    index: int
    score: float = Field(description="softmax probability")


class DetectionOut(BaseModel):
    label: str
    index: int
    score: float
    box: list[float] = Field(description="x1, y1, x2, y2 in the posted image's pixels")


class TimingsOut(BaseModel):
    decode_ms: float = Field(description="body read + image decode")
    queue_ms: float = Field(0.0, description="waiting in the micro-batch queue")
    engine_ms: float = Field(description="the engine call (of the whole micro-batch)")
    batch: int = Field(1, description="frames in the engine call this frame rode in")
    total_ms: float = Field(description="from request start to response built")


class InferResponse(BaseModel):
    predictions: list[PredictionOut] = Field(description="classification: top-k classes")
    detections: list[DetectionOut] | None = Field(None, description="detection families only")
    variant: str = Field(description="the variant that ran this frame")
    precision: str
    backend: str
    stream: str | None = Field(None, description="the camera/stream id the request named")
    timings: TimingsOut


class FrameResult(BaseModel):
    filename: str | None = Field(None, description="the multipart part's filename")
    predictions: list[PredictionOut]
    detections: list[DetectionOut] | None = None


class BatchInferResponse(BaseModel):
    results: list[FrameResult] = Field(description="one per frame, in the order sent")
    variants: list[str] = Field(description="variants that ran the frames (one, unless a swap)")
    precision: str
    backend: str
    stream: str | None = None
    timings: TimingsOut


class ErrorResponse(BaseModel):
    error: str = Field(description="a stable machine-readable code")
    detail: str = Field(description="what went wrong and what to do")


class V2ErrorResponse(BaseModel):
    """KServe v2 errors keep the protocol's shape (Triton clients print ``error``)."""

    error: str = Field(description="what went wrong and what to do")
    code: str = Field(description="a stable machine-readable code")


GateStatus = Literal["servable", "rejected", "dominated"]
STATUS_DOC = (
    "the build gate's verdict: servable; rejected (too inaccurate against its FP32 sibling: "
    "never served, a pin gets 409); dominated (slower and no more accurate than another on "
    "this device: never the controller's choice, but an operator may pin it)"
)
REASON_DOC = "why it is rejected or dominated (null when servable)"
DROP_DOC = "FP32 sibling's top-1 minus this engine's (a fraction); null for FP32 or unknown"
TASK_DOC = "classification or detection"


class VariantOut(BaseModel):
    id: str
    precision: str
    backend: str
    accuracy: float | None
    accuracy_metric: AccuracyMetric | None = Field(
        None, description="top1; map50 (labels); agreement_map50 (with the reference)"
    )
    latency_p50_ms: float | None
    status: GateStatus = Field("servable", description=STATUS_DOC)
    status_reason: str | None = Field(None, description=REASON_DOC)
    precision_drop: float | None = Field(None, description=DROP_DOC)
    prediction: dict[str, Any] | None = Field(
        None,
        description="the controller's latest prediction for it in the current context "
        "(budget policy): p50_ms, p99_ms, prior_p50_ms (the profile's), source (measured | "
        "scaled from <mode>[ on <device>] | unmeasured), extrapolated, extrapolation (the "
        "factor a profile of another mode or device was scaled by), confidence (0-1: the "
        "weight of observations), samples, age_s, contention, mode",
    )


class StatusResponse(BaseModel):
    family: str
    task: str = Field("classification", description=TASK_DOC)
    version: str
    device: str
    ready: bool
    active_variant: str | None
    uptime_s: float
    context: dict[str, Any] | None
    decision: dict[str, Any] | None
    ticks: int
    source_errors: int
    variants: list[VariantOut]
    events: list[dict[str, Any]]
    power_mode: dict[str, Any] | None = Field(None, description="{id, name}")
    power_emulated: bool
    policy: dict[str, Any]
    strategy: str
    standby: list[str]
    pinned_engines: list[str]
    unhealthy: list[str]
    queue_depth: int
    swaps: int
    last_swap_ms: float | None
    latency_ms: dict[str, Any] = Field(description="server-side p50/p99 over the last 5 s")
    device_name: str = Field("", description="this device, readable (device is its id)")
    shadow_runs: int = Field(0, description="variants measured on standby engines so far")
    served_slo: dict[str, Any] | None = Field(
        None,
        description="the active variant judged on its own engine times of the last 15 s: "
        "calls, over (the budget), share_over, p99_ms and verdict (compliant: at most 1% "
        "over, kept whatever its estimate says; over: more than 1% beyond doubt, left; "
        "undecided: the estimate decides); null while fewer than 100 calls were served "
        "since it came, the mode or the load changed, or without a latency budget",
    )
    build: dict[str, Any] | None = Field(
        None,
        description="the family's build: complete, front (device|shipped|only|base), "
        "catalog_device, foreign (measured on another device: not trusted), background "
        "(the serve --build phase: build, profile, done, failed) and progress {stage, "
        "done, total, current, fraction, servable, ...}",
    )


class VariantDetail(BaseModel):
    id: str
    network: str
    precision: str
    backend: str
    resolution: int
    accuracy: float | None
    accuracy_metric: AccuracyMetric | None = Field(
        None, description="top1; map50 (labels); agreement_map50 (with the reference)"
    )
    artifact_bytes: int
    loaded: str | None = Field(description="active, standby, pinned or null")
    healthy: bool
    predicted_latency_ms: float | None = Field(description="in the current context")
    profiles: dict[str, Any] = Field(description="device -> power mode -> profile")
    status: GateStatus = Field("servable", description=STATUS_DOC)
    status_reason: str | None = Field(None, description=REASON_DOC)
    precision_drop: float | None = Field(None, description=DROP_DOC)


class VariantsResponse(BaseModel):
    family: str
    task: str = Field("classification", description=TASK_DOC)
    active_variant: str | None
    variants: list[VariantDetail]


class RequestBody(BaseModel):
    """A JSON request body: no unknown field, no coercion (``true`` is no 1.0 and
    ``false`` no power mode 0), and text that is Unicode."""

    model_config = {"extra": "forbid", "strict": True}

    @model_validator(mode="before")
    @classmethod
    def _unicode_text(cls, data: Any) -> Any:
        stack = [data]
        while stack:
            item = stack.pop()
            if isinstance(item, str) and _LONE_SURROGATE.search(item):
                raise ValueError(f"{item!r} is not Unicode text (a lone surrogate escape)")
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
        return data


class PolicyBody(RequestBody):
    """A full policy (PUT replaces it; fields left out take their defaults)."""

    latency_budget_ms: float | None = Field(None, description="p99 budget, ms")
    min_accuracy: float | None = Field(None, description="top-1 floor, 0-1")
    max_power_mw: float | None = None
    memory_budget_mb: float | None = None
    objective: str = Field("accuracy", description="accuracy | latency | energy")
    upgrade_margin: float = 0.15
    cooldown_s: float = 5.0
    pins: dict[str, str] = Field(
        default_factory=dict, description='power mode name (or "*") -> variant id'
    )


class PolicyResponse(BaseModel):
    policy: dict[str, Any]
    strategy: str = Field(description="budget (any limit or pin set) or pressure")
    active_variant: str | None
    decision: dict[str, Any] | None


class PowerModeBody(RequestBody):
    mode: int | str = Field(description="mode id, or its name (e.g. 0 or MAXN)")


class PowerModeResponse(BaseModel):
    previous: dict[str, Any] | None
    current: dict[str, Any]
    emulated: bool
    threads: int = Field(description="inference threads engines now use (0: runtime picks)")
    cores: list[int] | None
    active_variant: str | None
    modes: list[dict[str, Any]]


class PinBody(RequestBody):
    variant: str | None = Field(description="variant id to serve; null removes the pin")
    power_mode: str = Field("*", description='the mode the pin holds in; "*" for every mode')


class StreamsResponse(BaseModel):
    task: str = Field("classification", description=TASK_DOC)
    streams: dict[str, dict[str, Any]] = Field(
        description="stream id -> requests, errors, frames, first_seen, last_seen, "
        "last_variant, latency_p50_ms, latency_p99_ms; detection families add detections "
        "(class label -> detections answered, most frequent first) and "
        "frames_with_detections (frames answered with at least one detection)"
    )
