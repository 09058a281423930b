"""What a build of ONNX Runtime engines (FP32 and INT8) is asked for, keyed by, and measures.

`edge_service.compile.family.build_family` runs it: export the base weights to ONNX,
quantize to INT8 Q/DQ on the calibration images, measure each engine's accuracy on the
test split and its latency here, and write ``catalog.json`` last (atomically), so a
half-finished build is never served. A build key (weights, calibration images, exporter
settings, library versions) makes a second run with the same inputs a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

import edge_service
from edge_service.compile.calibration import (
    CACHE_TAG,
    METHODS,
    calibration_hash,
    calibration_images,
    quantize_int8,
)
from edge_service.compile.int8_scheme import OnDevice
from edge_service.data.fashion import Split
from edge_service.data.preprocess import InputSpec
from edge_service.device import Fingerprint
from edge_service.device import current as current_device
from edge_service.errors import CatalogError
from edge_service.fsutil import sha256_file
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.profile.accuracy import engine_accuracy
from edge_service.profile.latency import latency_profile
from edge_service.repository import (
    Accuracy,
    Calibration,
    Variant,
    load_catalog,
    make_artifact,
    verified_artifact_path,
)
from edge_service.runtime.ort_engine import OrtEngine
from edge_service.variants import VariantSpec

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildRequest(OnDevice):
    """What to build and from what."""

    family_dir: Path
    weights: Path
    calibration_dir: Path
    test_split: Split
    precisions: tuple[str, ...] = ("fp32", "int8")
    profile_batches: tuple[int, ...] = (1, 8)
    profile_runs: int = 100
    threads: int = 0
    force: bool = False
    evolved: Path | None = None  # multi-branch weights: build their kept variants
    only: frozenset[str] = frozenset()  # build only these networks (ids without precision)
    calibration_methods: tuple[str, ...] = METHODS
    selection_split: Split | None = None  # where calibration methods are compared
    calibration_cache: Path | None = None  # tensor ranges keyed by model + data + method
    tensorrt: str | None = None  # the TensorRT target to add engines for (None: ORT only)
    int8_activations: str | None = None  # "s8" | "u8" override; None: chosen for the device
    front: str = "device"  # "device": fit the front here; "shipped": the one evolve kept
    first_only: bool = False  # stop after the first servable engine (base FP32)
    max_precision_drop: float = 0.01  # reduced precision further below FP32 is rejected
    max_kept: int = 12  # paths the on-device front keeps
    max_loss: float = 0.03  # ... predicted within this of the base's accuracy
    fit_runs: int = 200  # timing runs per branch in the on-device search
    fingerprint: Fingerprint = field(default_factory=current_device)


@dataclass(frozen=True)
class BuildReport:
    """What a build did."""

    catalog: Path
    built: tuple[str, ...]
    up_to_date: bool
    accuracy: dict[str, float]


def build_key(req: BuildRequest) -> str:
    """Hash of everything the engines depend on; equal keys mean nothing to rebuild."""
    from edge_service.onnx_tools.export import MAX_BATCH, OPSET

    evolved = req.evolved if req.evolved is not None and req.evolved.is_file() else None
    parts = {
        "weights": sha256_file(req.weights),
        "evolved": sha256_file(evolved) if evolved else None,
        "only": sorted(req.only),
        "calibration_methods": list(req.calibration_methods),
        "calibrator": CACHE_TAG,
        "selection_examples": len(req.selection_split) if req.selection_split else 0,
        "tensorrt": req.tensorrt,
        "int8_activations": req.activations,
        "int8_reduce_range": req.int8_scheme.reduce_range,
        "device": req.device_id,
        "front": req.front,
        "max_precision_drop": req.max_precision_drop,
        "max_kept": req.max_kept,
        "max_loss": req.max_loss,
        "fit_runs": req.fit_runs,
        "calibration": calibration_hash(calibration_images(req.calibration_dir)),
        "precisions": sorted(req.precisions),
        "opset": OPSET,
        "max_batch": MAX_BATCH,
        "onnxruntime": ort.__version__,
        "edge_service": edge_service.__version__,
        "test_examples": len(req.test_split),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def is_current(family_dir: Path, key: str) -> bool:
    """True when the catalog was built, completely, under ``key`` and every artifact
    verifies."""
    try:
        catalog = load_catalog(family_dir)
        for variant in catalog.variants:
            verified_artifact_path(family_dir, variant.artifact)
    except CatalogError:
        return False
    return catalog.build.get("key") == key and bool(catalog.build.get("complete", True))


def choose_int8(
    req: BuildRequest, fp32: Path, out_dir: Path, files: list[Path], spec: InputSpec
) -> tuple[Path, Calibration]:
    """Quantize with every calibration method, keep the one whose top-1 drops least.

    Drops are measured on ``req.selection_split`` (held out of the test split, so the
    choice does not peek at the figures the catalog reports); ties go to the earlier
    method in ``req.calibration_methods``.
    """
    sel = req.selection_split
    base = (
        _top1(fp32, "fp32", sel, spec)
        if sel is not None and len(req.calibration_methods) > 1
        else 0.0
    )
    drops: dict[str, float] = {}
    for method in req.calibration_methods:
        path = quantize_int8(
            fp32,
            out_dir / f"int8.{method}.onnx",
            files,
            spec,
            method,
            req.calibration_cache,
            req.activations,
            reduce_range=req.int8_scheme.reduce_range,
        )
        drops[method] = base - _top1(path, "int8", sel, spec) if base else 0.0
    best = min(req.calibration_methods, key=lambda m: drops[m])
    chosen = out_dir / "int8.onnx"
    (out_dir / f"int8.{best}.onnx").replace(chosen)
    for method in req.calibration_methods:
        (out_dir / f"int8.{method}.onnx").unlink(missing_ok=True)
    calib = Calibration(
        method=best,
        drop_by_method=drops,  # type: ignore[arg-type]
        examples=len(sel) if sel is not None and base else 0,
        data_sha256=calibration_hash(files),
        activations=req.activations,  # type: ignore[arg-type]
        reduce_range=req.int8_scheme.reduce_range,
        scheme_reason=req.int8_scheme.reason,
    )
    return chosen, calib


def _top1(path: Path, precision: str, split: Split | None, spec: InputSpec) -> float:
    if split is None:
        return 0.0
    with OrtEngine(path, variant_id=path.stem, precision=precision, threads=1) as engine:
        return engine_accuracy(engine, split, spec)


def _measure(
    req: BuildRequest,
    vspec: VariantSpec,
    path: Path,
    spec: InputSpec,
    progress: Progress,
    calibration: Calibration | None = None,
) -> Variant:
    progress(f"measuring {vspec.id}: accuracy on {len(req.test_split)} test images, latency")
    with OrtEngine(
        path, variant_id=vspec.id, precision=vspec.precision, threads=req.threads
    ) as engine:
        top1 = engine_accuracy(engine, req.test_split, spec)
        profile = latency_profile(
            engine, req.profile_batches, runs=req.profile_runs, threads=req.threads
        )
    progress(f"  {vspec.id}: top-1 {top1:.4f}, batch-1 p50 {profile.latency_ms(1):.3f} ms")
    return Variant(
        id=vspec.id,
        spec=vspec.to_dict(),
        backend="onnxruntime",
        artifact=make_artifact(req.family_dir, path),
        accuracy=Accuracy(value=top1, examples=len(req.test_split), split="test"),
        calibration=calibration,
        profiles={req.device_id: {DEFAULT_POWER_MODE: profile}},
    )
