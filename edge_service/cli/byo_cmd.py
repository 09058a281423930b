"""``edge-service build --from-onnx``: the user's options checked and turned into a request.

Every refusal says what to pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_service.config import Settings
from edge_service.errors import BuildError

if TYPE_CHECKING:
    from edge_service.compile.byo import OnnxFamilyRequest


@dataclass(frozen=True)
class OnnxOptions:
    """What ``build --from-onnx`` was given (as typed: parsed by `onnx_request`)."""

    models: tuple[Path, ...]
    task: str
    labels: Path | None
    mean: str
    std: str
    calibration: Path | None
    precisions: tuple[str, ...]
    method: str
    trt: str | None
    force: bool
    int8_activations: str | None = None
    input_sizes: str = ""
    eval_images: Path | None = None
    coco_labels: Path | None = None
    eval_limit: int = 0
    max_precision_drop: float = 0.01  # fraction


def floats(text: str) -> tuple[float, ...]:
    """``"0.5,0.5"`` -> ``(0.5, 0.5)``."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise BuildError(f"expected comma-separated numbers, got {text!r}") from exc


def input_sizes(text: str) -> tuple[int, ...]:
    """``"640,512,416"`` -> ``(640, 512, 416)``; refused unless whole positive pixels."""
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise BuildError(
            f"--input-size {text!r}: expected comma-separated pixel sizes, e.g. 640,512,416,320"
        ) from exc
    if any(s <= 0 for s in sizes):
        raise BuildError(f"--input-size {text!r}: sizes must be positive, e.g. 640,416,320")
    return sizes


def _label_names(labels: Path | None) -> tuple[str, ...]:
    if labels is None:
        return ()
    try:
        return tuple(n.strip() for n in labels.read_text().splitlines() if n.strip())
    except OSError as exc:
        raise BuildError(f"cannot read --labels {labels}: {exc.strerror}") from exc


def onnx_request(settings: Settings, opts: OnnxOptions) -> OnnxFamilyRequest:
    """The build request for ``opts``; BuildError naming the option to fix."""
    from edge_service.compile.byo import OnnxFamilyRequest
    from edge_service.compile.byo_eval import EvalSet

    if not opts.models:
        raise BuildError(
            "--from-onnx needs ONNX files: edge-service build --from-onnx a.onnx "
            "b.onnx --family NAME --calibration-images DIR"
        )
    if opts.task not in ("classification", "detection"):
        raise BuildError(f"--task {opts.task!r}: use classification or detection")
    if opts.calibration is None and "int8" in opts.precisions:
        raise BuildError(
            "--from-onnx needs --calibration-images DIR (JPEG/PNG frames like "
            "the ones you will serve) for INT8"
        )
    if opts.task != "detection" and (opts.eval_images or opts.coco_labels):
        raise BuildError("--eval-images and --coco-labels score detection families only")
    if opts.coco_labels is not None and not opts.coco_labels.is_file():
        raise BuildError(f"--coco-labels {opts.coco_labels}: no such file")
    folder = opts.eval_images or (opts.calibration if opts.task == "detection" else None)
    return OnnxFamilyRequest(
        family_dir=settings.family_dir,
        models=opts.models,
        task=opts.task,  # type: ignore[arg-type]
        calibration_dir=opts.calibration or Path(),
        labels=_label_names(opts.labels),
        mean=floats(opts.mean),
        std=floats(opts.std),
        precisions=opts.precisions,
        method=opts.method,
        threads=settings.intra_op_threads,
        force=opts.force,
        calibration_cache=settings.calibration_cache,
        tensorrt=opts.trt,
        int8_activations=opts.int8_activations,
        input_sizes=input_sizes(opts.input_sizes),
        eval=None if folder is None else EvalSet(folder, opts.eval_limit, opts.coco_labels),
        max_precision_drop=opts.max_precision_drop,
    )
