"""Rebuild only the artifacts of a built family that are missing or fail their checksum.

``edge-service build`` on a family whose catalog was built with the same inputs (same build
key) but whose files were damaged since (a bad sector, a copy cut short, an edit) rebuilds
just those files, not the family: the other variants keep their artifacts and everything
measured about them since (profiles per power mode from ``edge-service profile``).

A rebuilt artifact is made as the original was (FP32: exported from the same network; INT8:
quantized from the FP32 file with the calibration method and activation scheme the catalog
records, ranges from the calibration cache). The export and the quantization are
deterministic, so the file usually comes back byte for byte and its catalog entry stands
unchanged; if it does not, the variant is measured again and its entry replaced.

What this cannot rebuild alone (a TensorRT engine, which replaced its ONNX source in the
catalog) makes :func:`repair_family` return None, and the caller builds the whole family
(TensorRT engines whose cached files still verify are reused, so that costs little).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_service.compile.calibration import calibration_images, quantize_int8
from edge_service.compile.ort_builder import (
    BuildReport,
    BuildRequest,
    Progress,
    _measure,
)
from edge_service.data.preprocess import InputSpec
from edge_service.errors import CatalogError
from edge_service.fsutil import sha256_file
from edge_service.repository import (
    Catalog,
    Variant,
    load_catalog,
    save_catalog,
    verified_artifact_path,
)

log = logging.getLogger(__name__)


def stale_variants(family_dir: Path, key: str) -> tuple[Catalog, list[Variant]] | None:
    """The catalog and its variants whose artifact is missing or fails its checksum, when
    the catalog was built under ``key``; None when the whole family must be built (no
    catalog, an unreadable one, or one built from other inputs)."""
    try:
        catalog = load_catalog(family_dir)
    except CatalogError:
        return None
    if catalog.build.get("key") != key or not catalog.build.get("complete", True):
        return None  # another build's, or an unfinished one (the staged build resumes it)
    stale = []
    for variant in catalog.variants:
        try:
            verified_artifact_path(family_dir, variant.artifact)
        except CatalogError as exc:
            log.warning("%s: %s", variant.id, exc.message)
            stale.append(variant)
    return catalog, stale


def repair_family(
    req: BuildRequest, catalog: Catalog, stale: list[Variant], progress: Progress
) -> BuildReport | None:
    """Rebuild the artifacts of ``stale`` and save the catalog; None when one of them is
    not an ONNX Runtime FP32/INT8 artifact this module can rebuild alone."""
    if not all(_rebuildable(v) for v in stale):
        return None
    from edge_service.compile.staged import load_source

    src = load_source(req)
    input_spec = src.input
    ids = {v.id for v in catalog.variants}
    modules = {}
    for v in stale:
        fp32 = v.variant_spec.with_precision("fp32")  # an INT8 file is made from it
        if fp32.id not in ids:
            return None
        modules[v.variant_spec.family_key] = src.extract(fp32)
    replaced: dict[str, Variant] = {}
    for variant in sorted(stale, key=lambda v: v.precision != "fp32"):  # INT8 reads FP32
        progress(f"{variant.id}: {variant.artifact.path} fails its checksum; rebuilding it")
        vin = InputSpec(
            input_spec.name,
            variant.variant_spec.input_size,
            input_spec.mean,
            input_spec.std,
        )
        path = _rebuild(req, catalog, variant, modules[variant.variant_spec.family_key], vin)
        if sha256_file(path) == variant.artifact.sha256:
            progress(f"  {variant.id}: rebuilt byte for byte; its measurements stand")
            continue
        replaced[variant.id] = _measure(
            req, variant.variant_spec, path, vin, progress, variant.calibration
        )
    from edge_service.compile.gate import apply_gate

    variants = apply_gate(
        [replaced.get(v.id, v) for v in catalog.variants], req.device_id, req.max_precision_drop
    )
    path = save_catalog(req.family_dir, catalog.model_copy(update={"variants": variants}))
    progress(f"wrote {path}: rebuilt {len(stale)} artifact(s), kept the other variants")
    accuracy = {v.id: v.accuracy.value for v in variants if v.accuracy}
    return BuildReport(path, tuple(v.id for v in stale), False, accuracy)


def _rebuildable(variant: Variant) -> bool:
    if variant.backend != "onnxruntime":
        return False
    return variant.precision == "fp32" or (
        variant.precision == "int8" and variant.calibration is not None
    )


def _rebuild(
    req: BuildRequest, catalog: Catalog, variant: Variant, module: Any, spec: InputSpec
) -> Path:
    """Write ``variant``'s artifact again, as the full build made it; returns its path."""
    from edge_service.onnx_tools.export import export_onnx

    out = req.family_dir / variant.artifact.path
    if variant.precision == "fp32":
        return export_onnx(module, out, variant.variant_spec.input_size)
    calib = variant.calibration
    assert calib is not None  # _rebuildable checked it
    fp32 = catalog.variant(variant.variant_spec.with_precision("fp32").id)
    return quantize_int8(
        req.family_dir / fp32.artifact.path,
        out,
        calibration_images(req.calibration_dir),
        spec,
        calib.method,
        req.calibration_cache,
        calib.activations,
        reduce_range=calib.reduce_range,
    )
