"""Add TensorRT engines to a family the ONNX Runtime builder has written.

On a Jetson, each network gets a TensorRT FP16 engine (from its FP32 ONNX) and a TensorRT
INT8 engine (from its Q/DQ INT8 ONNX, the explicit-quantization route). The TensorRT INT8
engine replaces the ONNX Runtime INT8 one under the same variant id; ONNX Runtime FP32 stays
as the reference. Engines live in ``engines/<family>/<network>/trt/`` under their cache key
(TensorRT version + GPU + ONNX hash + precision + calibration hash), so a second build on the
same board reuses them and a board of another kind rebuilds.

Why this route and not ONNX Runtime's TensorRT execution provider: the engines, their keys
and their profiles are then ours to cache, check and measure per power mode; the execution
provider builds lazily on the first request and hides which engine it made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_service.data.fashion import Split
from edge_service.errors import BuildError
from edge_service.repository import (
    Accuracy,
    Catalog,
    Variant,
    make_artifact,
    verified_artifact_path,
)
from edge_service.variants import VariantSpec

log = logging.getLogger(__name__)
SOURCE_OF = {"fp16": "fp32", "int8": "int8"}  # TensorRT precision -> ONNX it is built from


@dataclass(frozen=True)
class TrtJob:
    """One TensorRT engine to build: from which ONNX variant, at which precision."""

    network: str  # the variant id without precision
    precision: str
    source: Variant


def tensorrt_jobs(catalog: Catalog) -> list[TrtJob]:
    """Which TensorRT engines a family needs: FP16 from each FP32 ONNX, INT8 from each INT8."""
    by_id = {v.id: v for v in catalog.variants if v.backend == "onnxruntime"}
    jobs = []
    for v in by_id.values():
        spec = v.variant_spec
        for trt_precision, onnx_precision in SOURCE_OF.items():
            if spec.precision == onnx_precision:
                jobs.append(TrtJob(spec.family_key, trt_precision, v))
    return sorted(jobs, key=lambda j: (j.network, j.precision))


def check_trt_source(job: TrtJob) -> None:
    """Refuse an INT8 source TensorRT cannot read: its explicit Q/DQ must be symmetric s8."""
    calib = job.source.calibration
    if job.precision == "int8" and calib is not None and calib.activations != "s8":
        raise BuildError(
            f"{job.source.id} was quantized with {calib.activations} activations; TensorRT "
            "takes symmetric s8 only: rebuild with --int8-activations s8 (or auto)"
        )


def merge_tensorrt(catalog: Catalog, built: list[Variant]) -> Catalog:
    """The catalog with TensorRT variants added; same-id ONNX Runtime variants replaced."""
    new_ids = {v.id for v in built}
    kept = [v for v in catalog.variants if v.id not in new_ids]
    return catalog.model_copy(update={"variants": [*kept, *built]})


def build_tensorrt(
    catalog: Catalog,
    family_dir: Path,
    progress: Callable[[str], None] = log.info,
    max_batch: int = 16,
    runs: int = 100,
    test_split: Split | None = None,
) -> Catalog:
    """Build (or reuse) every TensorRT engine of the family and return the new catalog."""
    from edge_service.compile.trt_builder import build_or_reuse, plan_build
    from edge_service.runtime.trt_cache import EngineCache, detect_target

    target = detect_target()
    built = []
    for job in tensorrt_jobs(catalog):
        check_trt_source(job)
        onnx = verified_artifact_path(family_dir, job.source.artifact)
        size = job.source.variant_spec.input_size
        chw = (
            len(catalog.input.preprocess().mean) if catalog.input.color == "rgb" else 1,
            size,
            size,
        )
        calib = job.source.calibration.data_sha256 if job.source.calibration else None
        plan = plan_build(
            onnx,
            job.precision,
            target,
            input_name=catalog.input.name,
            chw=chw,
            timing_cache_dir=family_dir / ".trt",
            max_batch=max_batch,
            calibration_hash=calib,
        )
        progress(f"TensorRT {job.precision} engine for {job.network} on {target.describe()}")
        engine = build_or_reuse(plan, onnx, EngineCache(family_dir / job.network / "trt"))
        built.append(_variant(family_dir, job, engine, runs, catalog, test_split))
    return merge_tensorrt(catalog, built)


def _variant(
    family_dir: Path,
    job: TrtJob,
    engine: Path,
    runs: int,
    catalog: Catalog,
    test_split: Split | None,
) -> Variant:
    from edge_service.hostinfo import DEFAULT_POWER_MODE, device_id
    from edge_service.profile.accuracy import engine_accuracy
    from edge_service.profile.latency import latency_profile
    from edge_service.runtime.trt_engine import TrtEngine

    spec: VariantSpec = job.source.variant_spec.with_precision(job.precision)
    accuracy = job.source.accuracy  # FP16 ~ FP32; replaced by a measurement when data is given
    with TrtEngine(engine, variant_id=spec.id, precision=job.precision) as trt:
        profile = latency_profile(trt, (1, 8), runs=runs)
        if test_split is not None:
            top1 = engine_accuracy(trt, test_split, catalog.input.spec(spec.input_size))
            accuracy = Accuracy(value=top1, examples=len(test_split), split="test")
    return Variant(
        id=spec.id,
        spec=spec.to_dict(),
        backend="tensorrt",
        artifact=make_artifact(family_dir, engine),
        accuracy=accuracy,
        calibration=job.source.calibration if job.precision == "int8" else None,
        profiles={device_id(): {DEFAULT_POWER_MODE: profile}},
    )
