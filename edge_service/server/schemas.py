"""Response models of the HTTP API (what the OpenAPI page documents)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
    decode_ms: float = Field(description="decode + preprocess")
    engine_ms: float = Field(description="engine.infer alone")
    total_ms: float = Field(description="from body received to response built")


class InferResponse(BaseModel):
    predictions: list[PredictionOut] = Field(description="classification: top-k classes")
    detections: list[DetectionOut] | None = Field(None, description="detection families only")
    variant: str
    precision: str
    backend: str
    timings: TimingsOut


class ErrorResponse(BaseModel):
    error: str = Field(description="a stable machine-readable code")
    detail: str = Field(description="what went wrong and what to do")


class VariantOut(BaseModel):
    id: str
    precision: str
    backend: str
    accuracy: float | None
    latency_p50_ms: float | None


class StatusResponse(BaseModel):
    family: str
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
