"""Bring your own model family: ONNX files in, the same engine repository out.

    edge-service build --from-onnx yolov8n.onnx --family street --task detection \\
        --labels coco.txt --input-size 640,512,416,320 --calibration-images frames/

Each file becomes one network of the family per input size (its id is the file's stem,
e.g. ``yolov8n``, plus ``-r416`` below the largest size). A file with a fixed input is
copied; one with dynamic height and width (an Ultralytics ``dynamic=True`` export) is
fixed to each ``--input-size`` (`onnx_tools.shapes`). Each network is quantized to INT8
Q/DQ on the user's JPEG/PNG images through the same preprocessing the server applies (RGB
letterbox for detection, RGB or gray stretch for classification), profiled, and scored
(`compile.byo_eval`: detection mAP against labels, or agreement with the reference
without them). The accuracy gate then rejects INT8 engines that lost too much against
their FP32 sibling and marks the ones another variant beats on this device, as for the
default family. A family without scores is ranked by network size (`control.factory`).
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
from edge_service.compile.byo_eval import EvalSet
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
from edge_service.errors import BuildError, EngineError
from edge_service.fsutil import atomic_write_with, sha256_file
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.onnx_tools.shapes import fix_input_size
from edge_service.profile.latency import latency_profile
from edge_service.repository import (
    Calibration,
    Catalog,
    InputInfo,
    Variant,
    make_artifact,
    save_catalog,
)
from edge_service.runtime.detection import detect_layout
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
    input_sizes: tuple[int, ...] = ()  # one network per size (dynamic-size files)
    eval: EvalSet | None = None  # frames (and labels) that score detection variants
    max_precision_drop: float = 0.01  # INT8 further below its FP32 sibling is rejected


@dataclass(frozen=True)
class OnnxModel:
    """What the server needs to know of one ONNX file (``size`` None: dynamic)."""

    path: Path
    name: str
    input_name: str
    batch: int | str
    channels: int
    size: int | None
    output_shape: tuple[int | str, ...]


@dataclass(frozen=True)
class Network:
    """One network of the family: a file at one input size."""

    model: OnnxModel
    spec: VariantSpec  # at FP32

    @property
    def size(self) -> int:
        return self.spec.input_size


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
    """Input name, batch, channels and (square, or dynamic) size, and the first output."""
    if not path.is_file():
        raise BuildError(f"no ONNX file at {path}")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BuildError(f"{path} is not a model ONNX Runtime can load: {exc}") from exc
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else str(d) for d in inp.shape]
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise BuildError(
            f"{path.name}: input {inp.name} has shape {shape}; expected images NCHW with 1 "
            "or 3 channels: re-export it with a fixed channel count"
        )
    _, c, h, w = shape
    size: int | None = None
    if isinstance(h, int) and isinstance(w, int):
        if h != w:
            raise BuildError(
                f"{path.name}: input {shape} is not square: export it at e.g. 640x640, or "
                "with dynamic height and width and pass --input-size"
            )
        size = h
    elif isinstance(h, int) or isinstance(w, int):
        raise BuildError(
            f"{path.name}: input {shape} fixes one of height and width only: export both "
            "fixed, or both dynamic and pass --input-size"
        )
    out = tuple(d if isinstance(d, int) else str(d) for d in session.get_outputs()[0].shape)
    batch = shape[0] if isinstance(shape[0], int) else "batch"
    return OnnxModel(path, network_name(path), inp.name, batch, int(c), size, out)


def check_detector_output(model: OnnxModel, classes: int) -> None:
    """Refuse, before anything is built, a detector whose output does not fit ``classes``
    labels in either YOLO layout (`runtime.detection.detect_layout`; a dynamic batch or
    anchor axis matches no class count)."""
    shape = tuple(d if isinstance(d, int) else -1 for d in model.output_shape)
    try:
        detect_layout((1, *shape[1:]) if len(shape) == 3 else shape, classes)
    except EngineError as exc:
        raise BuildError(
            f"{model.path.name}: output {list(model.output_shape)} does not fit {classes} "
            f"labels: expected YOLOv8 [batch, {4 + classes}, anchors] or YOLOv5 [batch, "
            f"anchors, {5 + classes}]; pass the --labels file the model was trained with "
            "(one class per line)"
        ) from exc


def plan_networks(models: list[OnnxModel], sizes: tuple[int, ...]) -> list[Network]:
    """One network per model and input size, largest first; refusals say what to do."""
    out = []
    for model in models:
        if model.size is None and not sizes:
            raise BuildError(
                f"{model.path.name}: input {model.input_name} has dynamic height and width; "
                "pass --input-size 640 (or several, one network each: --input-size "
                "640,512,416,320)"
            )
        if model.size is not None and sizes and set(sizes) != {model.size}:
            raise BuildError(
                f"{model.path.name}: input fixed at {model.size}x{model.size}, so "
                f"--input-size {','.join(map(str, sizes))} cannot apply: re-export it with "
                "dynamic height and width (Ultralytics: dynamic=True), or leave "
                "--input-size out"
            )
        mine = sorted(set(sizes) if model.size is None else {model.size}, reverse=True)
        out += [
            Network(model, VariantSpec((model.name,), "fp32", s, mine[0], "onnx")) for s in mine
        ]
    return out


def _labels(req: OnnxFamilyRequest, models: list[OnnxModel]) -> list[str]:
    if req.task == "detection" and not req.labels:
        raise BuildError("detection families need --labels FILE (one class name per line)")
    if req.task == "detection":
        for model in models:
            check_detector_output(model, len(req.labels))
    if req.labels:
        return list(req.labels)
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
        "input_sizes": sorted(req.input_sizes),
        "eval": req.eval.key() if req.eval is not None else None,
        "max_precision_drop": req.max_precision_drop,
        "int8_head": "fp32" if req.task == "detection" else "int8",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_from_onnx(req: OnnxFamilyRequest, progress: Callable[[str], None] = log.info) -> Path:
    """Fix, copy, quantize, profile, score, gate and catalogue the user's ONNX models;
    returns the catalog."""
    from edge_service.compile.byo_eval import score_family
    from edge_service.compile.gate import apply_gate, gate_summary
    from edge_service.compile.ort_builder import is_current

    key = family_key(req)
    if not req.force and is_current(req.family_dir, key):
        progress(f"{req.family_dir}: up to date (build key {key[:12]}), nothing to build")
        return req.family_dir / "catalog.json"
    models = [inspect_onnx(p) for p in req.models]
    names = [m.name for m in models]
    if len(set(names)) != len(names) or len({m.channels for m in models}) != 1:
        raise BuildError(f"models need distinct names and the same channel count: {names}")
    labels = _labels(req, models)  # refused before anything is built
    networks = plan_networks(models, req.input_sizes)
    files = calibration_images(req.calibration_dir) if "int8" in req.precisions else []
    variants: list[Variant] = []
    for i, net in enumerate(networks, 1):
        progress(f"[{i}/{len(networks)}] {net.spec.family_key}: fix, calibrate, profile")
        variants += _build_one(req, net, files)
    first = models[0]
    catalog = Catalog(
        schema_version=1,
        family=req.family_dir.name,
        task=req.task,
        labels=labels,
        input=InputInfo(
            name=first.input_name,
            shape=[first.batch, first.channels, *[max(n.size for n in networks)] * 2],
            color="gray" if first.channels == 1 else "rgb",
            resize="letterbox" if req.task == "detection" else "stretch",
            mean=list(req.mean),
            std=list(req.std),
        ),
        variants=variants,
        build={
            "key": key,
            "networks": {
                "source": "onnx",
                "files": [p.name for p in req.models],
                "input_sizes": sorted({n.size for n in networks}, reverse=True),
            },
            "device": req.device,
            "onnxruntime": ort.__version__,
            "edge_service": edge_service.__version__,
        },
    )
    if req.eval is not None and req.task == "detection":
        catalog = score_family(catalog, req.family_dir, req.eval, req.threads, progress)
    if req.tensorrt:
        from edge_service.compile.trt_family import build_tensorrt

        catalog = build_tensorrt(catalog, req.family_dir, progress)
    gated = apply_gate(catalog.variants, req.device_id, req.max_precision_drop)
    catalog = catalog.model_copy(update={"variants": gated})
    for line in gate_summary(gated):
        progress(line)
    path = save_catalog(req.family_dir, catalog)
    progress(f"wrote {path} with {len(catalog.variants)} variants")
    return path


def _preprocess(req: OnnxFamilyRequest, model: OnnxModel, size: int) -> Preprocess:
    color: Color = "gray" if model.channels == 1 else "rgb"
    resize: Resize = "letterbox" if req.task == "detection" else "stretch"
    return Preprocess(color, resize, size, req.mean, req.std, model.input_name)


def _build_one(req: OnnxFamilyRequest, net: Network, files: list[Path]) -> list[Variant]:
    model = net.model
    out_dir = req.family_dir / net.spec.family_key
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "fp32.onnx"
    if model.size is None:
        fix_input_size(model.path, fp32, net.size)
    else:
        atomic_write_with(fp32, lambda tmp: shutil.copyfile(model.path, tmp))
    paths = {"fp32": fp32}
    calib = None
    if "int8" in req.precisions:
        prep = _preprocess(req, model, net.size)
        paths["int8"] = quantize_int8(
            fp32,
            out_dir / "int8.onnx",
            files,
            prep,
            req.method,
            req.calibration_cache,
            req.activations,
            reduce_range=req.int8_scheme.reduce_range,
            fp32_head=req.task == "detection",
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
    return [
        _variant(req, model, net.spec.with_precision(p), paths[p], calib if p == "int8" else None)
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
