"""Bring your own model family: ONNX files in, the same engine repository out.

    edge-service build --from-onnx yolov8n.onnx yolov8s.onnx --family street \\
        --task detection --labels coco.txt --calibration-images frames/

Each file becomes one network of the family (its id is the file's stem, e.g. ``yolov8n``),
copied as the FP32 engine and quantized to INT8 Q/DQ on the user's JPEG/PNG images through
the same preprocessing the server applies (RGB letterbox for detection, RGB or gray
stretch for classification). No labelled data comes with such a family, so the catalog
has no accuracy; the policy then ranks networks by size (see server/service.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import onnxruntime as ort

import edge_service
from edge_service.compile.calibration import (
    CACHE_TAG,
    calibration_hash,
    calibration_images,
    quantize_int8,
)
from edge_service.compile.int8_scheme import OnDevice
from edge_service.data.pipeline import Color, Preprocess, Resize
from edge_service.device import Fingerprint
from edge_service.device import current as current_device
from edge_service.errors import BuildError
from edge_service.fsutil import atomic_write_with, sha256_file
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.profile.latency import latency_profile
from edge_service.repository import (
    Calibration,
    Catalog,
    InputInfo,
    Variant,
    make_artifact,
    save_catalog,
)
from edge_service.runtime.ort_engine import OrtEngine
from edge_service.variants import VariantSpec

log = logging.getLogger(__name__)
Task = Literal["classification", "detection"]


@dataclass(frozen=True)
class OnnxFamilyRequest(OnDevice):
    """A family from the user's ONNX files."""

    family_dir: Path
    models: tuple[Path, ...]
    task: Task
    calibration_dir: Path
    labels: tuple[str, ...] = ()
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    precisions: tuple[str, ...] = ("fp32", "int8")
    method: str = "minmax"
    threads: int = 0
    force: bool = False
    calibration_cache: Path | None = None
    tensorrt: str | None = None  # the TensorRT target to add engines for (None: ORT only)
    int8_activations: str | None = None  # "s8" | "u8" override; None: chosen for the device
    fingerprint: Fingerprint = field(default_factory=current_device)


@dataclass(frozen=True)
class OnnxModel:
    """What the server needs to know of one ONNX file."""

    path: Path
    name: str
    input_name: str
    batch: int | str
    channels: int
    size: int
    output_shape: tuple[int | str, ...]


def network_name(path: Path) -> str:
    """The variant id stem from a file name: ``YOLOv8-n.onnx`` -> ``yolov8n``."""
    name = re.sub(r"[^a-z0-9]", "", path.stem.lower())
    if not name or not name[0].isalpha():
        raise BuildError(
            f"cannot make a network name from {path.name}: rename it to start "
            "with a letter (e.g. yolov8n.onnx)"
        )
    return name


def inspect_onnx(path: Path) -> OnnxModel:
    """Input name, batch, channels and (square) size, and the first output's shape."""
    if not path.is_file():
        raise BuildError(f"no ONNX file at {path}")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BuildError(f"{path} is not a model ONNX Runtime can load: {exc}") from exc
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise BuildError(
            f"{path.name}: input {inp.name} has shape {shape}; expected NCHW with "
            "fixed channels, height and width"
        )
    _, c, h, w = shape
    if c not in (1, 3) or h != w:
        raise BuildError(
            f"{path.name}: input {shape} must have 1 or 3 channels and a square "
            "size (export it at e.g. 640x640)"
        )
    out = tuple(d if isinstance(d, int) else str(d) for d in session.get_outputs()[0].shape)
    batch = shape[0] if isinstance(shape[0], int) else "batch"
    return OnnxModel(path, network_name(path), inp.name, batch, c, h, out)


def _labels(req: OnnxFamilyRequest, models: list[OnnxModel]) -> list[str]:
    if req.labels:
        return list(req.labels)
    if req.task == "detection":
        raise BuildError("detection families need --labels FILE (one class name per line)")
    classes = models[0].output_shape[-1]
    if not isinstance(classes, int):
        raise BuildError("cannot tell the number of classes; pass --labels FILE")
    return [f"class{i}" for i in range(classes)]


def family_key(req: OnnxFamilyRequest) -> str:
    """Hash of everything the engines depend on."""
    parts = {
        "models": [sha256_file(p) for p in req.models],
        "calibration": calibration_hash(calibration_images(req.calibration_dir))
        if "int8" in req.precisions
        else None,
        "task": req.task,
        "labels": list(req.labels),
        "mean": list(req.mean),
        "std": list(req.std),
        "precisions": list(req.precisions),
        "method": req.method,
        "calibrator": CACHE_TAG,
        "onnxruntime": ort.__version__,
        "edge_service": edge_service.__version__,
        "tensorrt": req.tensorrt,
        "int8_activations": req.activations,
        "int8_reduce_range": req.int8_scheme.reduce_range,
        "device": req.device_id,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_from_onnx(req: OnnxFamilyRequest, progress: Callable[[str], None] = log.info) -> Path:
    """Copy, quantize, profile and catalogue the user's ONNX models; returns the catalog."""
    from edge_service.compile.ort_builder import is_current

    key = family_key(req)
    if not req.force and is_current(req.family_dir, key):
        progress(f"{req.family_dir}: up to date (build key {key[:12]}), nothing to build")
        return req.family_dir / "catalog.json"
    models = [inspect_onnx(p) for p in req.models]
    names = [m.name for m in models]
    if len(set(names)) != len(names) or len({m.channels for m in models}) != 1:
        raise BuildError(f"models need distinct names and the same channel count: {names}")
    files = calibration_images(req.calibration_dir) if "int8" in req.precisions else []
    variants: list[Variant] = []
    for i, model in enumerate(models, 1):
        progress(f"[{i}/{len(models)}] {model.name}: copy, calibrate, profile")
        variants += _build_one(req, model, files)
    native = max(m.size for m in models)
    first = models[0]
    catalog = Catalog(
        schema_version=1,
        family=req.family_dir.name,
        task=req.task,
        labels=_labels(req, models),
        input=InputInfo(
            name=first.input_name,
            shape=[first.batch, first.channels, native, native],
            color="gray" if first.channels == 1 else "rgb",
            resize="letterbox" if req.task == "detection" else "stretch",
            mean=list(req.mean),
            std=list(req.std),
        ),
        variants=variants,
        build={
            "key": key,
            "networks": {"source": "onnx", "files": [p.name for p in req.models]},
            "device": req.device,
            "onnxruntime": ort.__version__,
            "edge_service": edge_service.__version__,
        },
    )
    if req.tensorrt:
        from edge_service.compile.trt_family import build_tensorrt

        catalog = build_tensorrt(catalog, req.family_dir, progress)
    path = save_catalog(req.family_dir, catalog)
    progress(f"wrote {path} with {len(catalog.variants)} variants")
    return path


def _preprocess(req: OnnxFamilyRequest, model: OnnxModel) -> Preprocess:
    color: Color = "gray" if model.channels == 1 else "rgb"
    resize: Resize = "letterbox" if req.task == "detection" else "stretch"
    return Preprocess(color, resize, model.size, req.mean, req.std, model.input_name)


def _build_one(req: OnnxFamilyRequest, model: OnnxModel, files: list[Path]) -> list[Variant]:
    out_dir = req.family_dir / model.name
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "fp32.onnx"
    atomic_write_with(fp32, lambda tmp: shutil.copyfile(model.path, tmp))
    paths = {"fp32": fp32}
    calib = None
    if "int8" in req.precisions:
        prep = _preprocess(req, model)
        paths["int8"] = quantize_int8(
            fp32,
            out_dir / "int8.onnx",
            files,
            prep,
            req.method,
            req.calibration_cache,
            req.activations,
            reduce_range=req.int8_scheme.reduce_range,
        )
        calib = Calibration(
            method=req.method,
            drop_by_method={},
            examples=0,  # type: ignore[arg-type]
            data_sha256=calibration_hash(files),
            activations=req.activations,  # type: ignore[arg-type]
            reduce_range=req.int8_scheme.reduce_range,
            scheme_reason=req.int8_scheme.reason,
        )
    spec = VariantSpec((model.name,), "fp32", model.size, model.size, "onnx")
    return [
        _variant(req, model, spec.with_precision(p), paths[p], calib if p == "int8" else None)
        for p in req.precisions
    ]


def _variant(
    req: OnnxFamilyRequest,
    model: OnnxModel,
    spec: VariantSpec,
    path: Path,
    calib: Calibration | None,
) -> Variant:
    batches = (1, 8) if model.batch == "batch" else (1,)
    with OrtEngine(
        path, variant_id=spec.id, precision=spec.precision, threads=req.threads
    ) as engine:
        profile = latency_profile(engine, batches, runs=30, threads=req.threads)
    return Variant(
        id=spec.id,
        spec=spec.to_dict(),
        backend="onnxruntime",
        artifact=make_artifact(req.family_dir, path),
        calibration=calib,
        profiles={req.device_id: {DEFAULT_POWER_MODE: profile}},
    )
