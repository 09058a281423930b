"""The engine repository on disk: ``engines/<family>/catalog.json`` plus artifacts.

The catalog is validated on load (a bad one is refused with a message naming the field),
written atomically, and every artifact's SHA-256 is checked before an engine is loaded.
Field reference: docs/catalog.md.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_service.data.pipeline import Preprocess
from edge_service.data.preprocess import InputSpec
from edge_service.errors import CatalogError, NotFoundError, RejectedVariantError
from edge_service.fsutil import (
    TEMP_NAME,
    atomic_write_text,
    remove_temp_files,
    sha256_file,
    waiting_lock,
)
from edge_service.variants import VariantSpec

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
CATALOG_NAME = "catalog.json"
CATALOG_LOCK = ".catalog.lock"  # held while the catalog is written or its temp files swept


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputInfo(_Model):
    """The engine input: name, NCHW shape (batch is ``"batch"``), normalisation."""

    name: str = "input"
    shape: list[int | str]
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["gray", "rgb"] = "gray"
    resize: Literal["stretch", "letterbox"] = "stretch"
    mean: float | list[float]
    std: float | list[float]

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: float | list[float]) -> float | list[float]:
        if min(value if isinstance(value, list) else [value]) <= 0:
            raise ValueError("must be > 0")
        return value

    def spec(self, size: int | None = None) -> InputSpec:
        """The grayscale training/eval spec (default family) at ``size``."""
        mean = self.mean if isinstance(self.mean, float) else self.mean[0]
        std = self.std if isinstance(self.std, float) else self.std[0]
        return InputSpec(name=self.name, size=size or int(self.shape[-1]), mean=mean, std=std)

    def preprocess(self, size: int | None = None) -> Preprocess:
        """How a request becomes this input (at ``size`` if the variant resizes)."""
        return Preprocess(
            self.color,
            self.resize,
            size or int(self.shape[-1]),
            _as_tuple(self.mean),
            _as_tuple(self.std),
            self.name,
        )


def _as_tuple(value: float | list[float]) -> tuple[float, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


class Artifact(_Model):
    """One file of a variant, relative to the family folder, with its checksum."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        p = PurePosixPath(value)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise ValueError("must be a relative path inside the family folder")
        return value


AccuracyMetric = Literal["top1", "map50", "agreement_map50"]


class Accuracy(_Model):
    """How good a variant is, on a named split, by one metric (the one the controller ranks):

    * ``top1``: a classifier's top-1 on labelled images;
    * ``map50``: a detector's mAP@0.5 against labels (``map50_95`` beside it);
    * ``agreement_map50``: a detector's mAP@0.5 against the family's reference (its
      largest input at FP32) on unlabelled frames: agreement, not accuracy.

    Catalogs written before the metric was named (``{"top1": x}``) load as ``top1``.
    """

    metric: AccuracyMetric = "top1"
    value: float = Field(ge=0.0, le=1.0)
    examples: int = Field(ge=1)
    split: str = "test"
    map50_95: float | None = Field(None, ge=0.0, le=1.0)  # with labels (detection)

    @model_validator(mode="before")
    @classmethod
    def _legacy_top1(cls, data: Any) -> Any:
        if isinstance(data, dict) and "top1" in data and "value" not in data:
            data = dict(data)
            data["value"] = data.pop("top1")
            data.setdefault("metric", "top1")
        return data

    @property
    def is_agreement(self) -> bool:
        """True when the figure is agreement with the reference, not accuracy on labels."""
        return self.metric == "agreement_map50"


class LatencyStats(_Model):
    """Latency of one batch size, milliseconds."""

    p50_ms: float = Field(ge=0)
    p99_ms: float = Field(ge=0)
    mean_ms: float = Field(ge=0)
    runs: int = Field(ge=1)


class Profile(_Model):
    """How one engine performs on one device in one power mode."""

    backend: str
    threads: int = Field(ge=0)
    latency: dict[str, LatencyStats]  # key: batch size as a string ("1", "8")
    memory_mb: float | None = None  # peak resident memory the engine added
    energy_mj: float | None = None  # per inference at batch 1
    energy_estimated: bool = True  # True unless integrated from power rails
    power_mw: float | None = None  # mean power while measuring (rails or estimate)
    # the resources of the power mode it was measured in, for scaling to other modes
    cores: int | None = None
    cpu_max_freq_hz: int | None = None
    gpu_max_freq_hz: int | None = None
    # top-1 of this engine on this device (TensorRT engines are built per device), on the
    # profiler's held-out split; None where the catalog's accuracy applies (ONNX Runtime)
    accuracy: float | None = Field(None, ge=0, le=1)
    measured_at: datetime

    def latency_ms(self, batch: int = 1) -> float | None:
        """p50 latency at ``batch``, if measured."""
        stats = self.latency.get(str(batch))
        return stats.p50_ms if stats else None


class Calibration(_Model):
    """How an INT8 engine was calibrated, and why that method was chosen."""

    method: Literal["minmax", "entropy", "percentile"]
    drop_by_method: dict[str, float]  # FP32 top-1 minus INT8 top-1, per method tried
    examples: int = Field(ge=0)  # images the drops were measured on
    data_sha256: str  # hash of the calibration images
    activations: Literal["s8", "u8"] = "s8"  # symmetric signed (TensorRT) or asymmetric unsigned
    reduce_range: bool = False  # 7-bit weights: no int16 saturation on x86 without VNNI
    scheme_reason: str | None = None  # why this device got this scheme


VariantStatus = Literal["servable", "rejected", "dominated"]


class Variant(_Model):
    """A variant in the catalog: spec, engine artifact, accuracy, profiles, gate status.

    ``status`` is set by the build's accuracy and dominance gate (`compile.gate`):
    *rejected* engines lost more top-1 than allowed against their FP32 sibling and are
    never served; *dominated* ones are slower and no more accurate than another variant
    on the build device, so the controller never targets them (an operator may still pin
    one). Catalogs written before the gate load as servable.
    """

    id: str
    spec: dict[str, Any]
    backend: Literal["onnxruntime", "tensorrt"]
    artifact: Artifact
    accuracy: Accuracy | None = None
    calibration: Calibration | None = None  # INT8 engines only
    # device -> power mode -> profile
    profiles: dict[str, dict[str, Profile]] = Field(default_factory=dict)
    status: VariantStatus = "servable"
    status_reason: str | None = None  # why it is rejected or dominated
    # FP32 sibling's top-1 minus this engine's (a fraction); None for FP32, no sibling or
    # no accuracy
    precision_drop: float | None = None

    @model_validator(mode="after")
    def _spec_matches_id(self) -> Variant:
        try:
            spec = VariantSpec.from_dict(self.spec)
        except CatalogError as exc:
            raise ValueError(exc.message) from exc
        if spec.id != self.id:
            raise ValueError(f"id {self.id!r} does not match its spec ({spec.id!r})")
        return self

    @property
    def variant_spec(self) -> VariantSpec:
        return VariantSpec.from_dict(self.spec)

    @property
    def precision(self) -> str:
        return str(self.spec["precision"])

    @property
    def servable(self) -> bool:
        """True unless the gate rejected it or found it dominated."""
        return self.status == "servable"

    def top1_on(self, device: str) -> float | None:
        """The ranking figure on ``device`` (top-1, or a detector's mAP or agreement):
        measured there (a TensorRT profile's), else the catalog's."""
        for profile in self.profiles.get(device, {}).values():
            if profile.accuracy is not None:
                return profile.accuracy
        return self.accuracy.value if self.accuracy is not None else None

    def profile_for(self, device: str, power_mode: str) -> Profile | None:
        """The profile on ``device`` in ``power_mode``, else on ``device``, else any."""
        by_mode = self.profiles.get(device)
        if by_mode:
            return by_mode.get(power_mode) or next(iter(by_mode.values()))
        for modes in self.profiles.values():
            for profile in modes.values():
                return profile
        return None


class Catalog(_Model):
    """``engines/<family>/catalog.json``."""

    schema_version: int
    family: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    task: Literal["classification", "detection"]
    labels: list[str] = Field(min_length=1)
    input: InputInfo
    variants: list[Variant] = Field(min_length=1)
    build: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is not supported (this edge-service reads "
                f"{SCHEMA_VERSION}); rebuild with `edge-service build`"
            )
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        ids = [v.id for v in self.variants]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"variant ids must be unique; repeated: {dupes}")
        return self

    def variant(self, variant_id: str) -> Variant:
        """The variant named ``variant_id``; NotFoundError lists the ones there are."""
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise NotFoundError(
            f"variant {variant_id!r} is not in family {self.family!r}; "
            f"known: {[v.id for v in self.variants]}"
        )

    def pinnable(self, variant_id: str) -> Variant:
        """The variant an operator or a request may pin: NotFoundError for an unknown id,
        RejectedVariantError (409) for one the accuracy gate rejected. A dominated variant
        may be pinned: it is valid, just never the controller's own choice."""
        variant = self.variant(variant_id)
        if variant.status == "rejected":
            others = [v.id for v in self.variants if v.status != "rejected"]
            raise RejectedVariantError(
                f"variant {variant_id!r} is rejected and cannot be served: "
                f"{variant.status_reason or 'rejected by the build gate'}; pin one of "
                f"{others}, or rebuild with a larger --max-precision-drop"
            )
        return variant


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def parse_catalog(data: Any, origin: str = "catalog") -> Catalog:
    """Validate a decoded catalog; CatalogError names the first offending field."""
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CatalogError(
            f"{origin}: field {_field_path(tuple(err['loc']))}: {err['msg']} "
            f"({exc.error_count()} error(s) in all); rebuild with `edge-service build`"
        ) from exc


def catalog_path(family_dir: Path) -> Path:
    return family_dir / CATALOG_NAME


def load_catalog(family_dir: Path) -> Catalog:
    """Read and validate ``<family_dir>/catalog.json``."""
    path = catalog_path(family_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CatalogError(
            f"no catalog at {path}; build the family first: edge-service build "
            f"--family {family_dir.name}"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path} is not valid JSON: {exc}") from exc
    return parse_catalog(data, str(path))


def save_catalog(family_dir: Path, catalog: Catalog) -> Path:
    """Write the catalog atomically, under the family's catalog lock; returns its path."""
    path = catalog_path(family_dir)
    with waiting_lock(family_dir / CATALOG_LOCK):
        atomic_write_text(path, catalog.model_dump_json(indent=2) + "\n")
    return path


def _catalog_temp(name: str) -> bool:
    return name.startswith(f".{CATALOG_NAME}.")


def remove_family_temp_files(family_dir: Path) -> list[Path]:
    """Sweep what killed writers left in a family: the build's temp files (call this holding
    the build lock), then the catalog's, under the catalog lock so that a catalog write in
    progress (``edge-service profile`` runs without the build lock) keeps its temp file."""
    stale = remove_temp_files(family_dir, keep=_catalog_temp)
    with waiting_lock(family_dir / CATALOG_LOCK):
        catalogs = [p for p in family_dir.glob(f".{CATALOG_NAME}.*") if TEMP_NAME.match(p.name)]
        for path in catalogs:
            path.unlink(missing_ok=True)
            log.info("removed %s, left by a catalog write that was cut short", path)
    return stale + catalogs


def make_artifact(family_dir: Path, path: Path) -> Artifact:
    """Describe a built file (relative path, checksum, size) for the catalog."""
    rel = path.resolve().relative_to(family_dir.resolve()).as_posix()
    return Artifact(path=rel, sha256=sha256_file(path), bytes=path.stat().st_size)


def verified_artifact_path(family_dir: Path, artifact: Artifact) -> Path:
    """The artifact's absolute path, after checking that it exists and matches its checksum."""
    path = family_dir / artifact.path
    if not path.is_file():
        raise CatalogError(f"artifact {path} is missing; rebuild with `edge-service build`")
    actual = sha256_file(path)
    if actual != artifact.sha256:
        raise CatalogError(
            f"artifact {path} fails its checksum (catalog {artifact.sha256[:12]}…, file "
            f"{actual[:12]}…); it was changed or half-written: rebuild with `edge-service build`"
        )
    return path
