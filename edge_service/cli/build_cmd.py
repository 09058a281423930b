"""``edge-service build``: the default family from its weights, or a family from ONNX files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer

from edge_service.cli._common import (
    DEFAULT_WEIGHTS,
    EnginesOpt,
    FamilyOpt,
    JsonOpt,
    VerboseOpt,
    app,
    emit,
    fail,
    log,
    progress_bar,
    settings_from,
    setup_logging,
)
from edge_service.cli.byo_cmd import OnnxOptions, onnx_request
from edge_service.config import REPO_ROOT, Settings
from edge_service.errors import BuildError, EdgeServiceError
from edge_service.fsutil import exclusive_lock

Backend = Literal["auto", "onnxruntime", "tensorrt"]
BUILD_LOCK = ".build.lock"  # in the family folder


def resolve_backend(backend: str) -> str | None:
    """The TensorRT target to build for, or None for ONNX Runtime only (said why)."""
    from edge_service.runtime.trt_cache import detect_target

    if backend == "onnxruntime":
        return None
    try:
        return detect_target().describe()
    except BuildError as exc:
        if backend == "tensorrt":
            raise
        log.info("TensorRT is not available here: building ONNX Runtime engines only")
        log.debug(exc.message)
        return None


@contextmanager
def exclusive_build(family_dir: Path) -> Iterator[None]:
    """One build of a family at a time (a second one is refused with who holds it); the
    temp files of a build that was killed mid-write are swept first."""
    from edge_service.repository import remove_family_temp_files

    with exclusive_lock(family_dir / BUILD_LOCK, f"a build of {family_dir}"):
        remove_family_temp_files(family_dir)  # each one is logged
        yield


@app.command()
def build(
    models: Annotated[
        list[Path] | None,
        typer.Argument(help="with --from-onnx: the ONNX files", show_default=False),
    ] = None,
    from_onnx: Annotated[
        bool, typer.Option("--from-onnx", help="build a family from your own ONNX files")
    ] = False,
    task: Annotated[str, typer.Option(help="classification or detection (--from-onnx)")] = (
        "classification"
    ),
    labels: Annotated[Path | None, typer.Option(help="class names, one per line")] = None,
    input_size: Annotated[
        str,
        typer.Option(
            help="--from-onnx: one network per input size, e.g. 640,512,416,320 (files with "
            "dynamic height and width)"
        ),
    ] = "",
    eval_images: Annotated[
        Path | None,
        typer.Option(
            help="--from-onnx detection: frames that score each variant (mAP with YOLO txt "
            "labels beside them or --coco-labels, else agreement with the reference)"
        ),
    ] = None,
    coco_labels: Annotated[
        Path | None, typer.Option(help="COCO JSON labels of the --eval-images frames")
    ] = None,
    mean: Annotated[str, typer.Option(help="per-channel mean after /255 (--from-onnx)")] = "0",
    std: Annotated[str, typer.Option(help="per-channel std after /255 (--from-onnx)")] = "1",
    family: FamilyOpt = None,
    engines_dir: EnginesOpt = None,
    backend: Annotated[
        str,
        typer.Option(help="auto (TensorRT when present, else ONNX Runtime), onnxruntime, tensorrt"),
    ] = "auto",
    weights: Annotated[Path, typer.Option(help="trained base weights")] = DEFAULT_WEIGHTS,
    evolved: Annotated[
        Path | None,
        typer.Option(help="multi-branch weights (default models/<family>/evolved.pt if present)"),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="build only these networks, e.g. base (repeatable)")
    ] = None,
    calibration_images: Annotated[
        Path | None,
        typer.Option(
            "--calibration-images",
            "--calibration",
            help="INT8 calibration images (JPEG/PNG folder)",
        ),
    ] = None,
    precision: Annotated[list[str] | None, typer.Option(help="fp32 and/or int8")] = None,
    calibration_method: Annotated[
        list[str] | None,
        typer.Option(
            help="minmax, entropy, percentile (repeatable; default: try all, keep "
            "the one whose INT8 top-1 drops least; --from-onnx: minmax)"
        ),
    ] = None,
    eval_limit: Annotated[
        int,
        typer.Option(
            min=0, help="measure accuracy on N test images (0 = all 10k; --from-onnx: N frames)"
        ),
    ] = 0,
    int8_activations: Annotated[
        str,
        typer.Option(
            help="INT8 activations: s8 (symmetric, TensorRT's form), u8 (asymmetric, "
            "faster on ONNX Runtime x86), auto (s8 with TensorRT, else u8)"
        ),
    ] = "auto",
    front: Annotated[
        str,
        typer.Option(
            help="device: time the branches here and fit the front to this device; "
            "shipped: the front evolve kept where it ran"
        ),
    ] = "device",
    first_only: Annotated[
        bool,
        typer.Option(
            "--first-only",
            help="build the first servable engine (base FP32) and stop; a later build "
            "resumes from it",
        ),
    ] = False,
    max_precision_drop: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="points of top-1 a reduced-precision engine may lose against its FP32 "
            "sibling; further below, it is rejected (kept in the catalog, never served)",
        ),
    ] = 1.0,
    fit_runs: Annotated[
        int, typer.Option(min=1, help="timed calls per branch in the on-device search")
    ] = 200,
    max_kept: Annotated[
        int, typer.Option(min=1, help="paths the on-device front keeps (the base always)")
    ] = 12,
    max_loss: Annotated[
        float,
        typer.Option(min=0.0, help="points of predicted top-1 a front path may lose vs the base"),
    ] = 3.0,
    force: Annotated[bool, typer.Option(help="rebuild even if up to date")] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Build a family's engines: ONNX Runtime FP32/INT8, plus TensorRT FP16/INT8 on a Jetson.

    Default family: exports every kept variant of the evolved weights (else the base model).
    With --from-onnx: your ONNX files (e.g. yolov8n.onnx yolov8s.onnx), calibrated on your
    images. A second run with the same inputs builds nothing and says so.
    """
    setup_logging(verbose)
    try:
        from edge_service.compile.calibration import METHODS

        if backend not in ("auto", "onnxruntime", "tensorrt"):
            raise BuildError(f"--backend {backend!r}: use auto, onnxruntime or tensorrt")
        precisions = tuple(precision or ("fp32", "int8"))
        methods = tuple(calibration_method or METHODS)
        if set(precisions) - {"fp32", "int8"} or set(methods) - set(METHODS):
            raise BuildError(
                f"--precision takes fp32/int8 (TensorRT adds fp16 and int8 itself) "
                f"and --calibration-method {', '.join(METHODS)}"
            )
        if int8_activations not in ("auto", "s8", "u8"):
            raise BuildError(f"--int8-activations {int8_activations!r}: use auto, s8 or u8")
        trt = resolve_backend(backend)
        if trt and int8_activations == "u8":
            raise BuildError(
                "--int8-activations u8 cannot feed TensorRT (it takes symmetric s8 Q/DQ "
                "only): use s8 or auto, or --backend onnxruntime"
            )
        acts = None if int8_activations == "auto" else int8_activations
        if front not in ("device", "shipped"):
            raise BuildError(f"--front {front!r}: use device or shipped")
        settings = settings_from(family=family, engines_dir=engines_dir)
        if from_onnx:
            path = _build_onnx_family(
                settings,
                OnnxOptions(
                    models=tuple(models or ()),
                    task=task,
                    labels=labels,
                    mean=mean,
                    std=std,
                    calibration=calibration_images,
                    precisions=precisions,
                    method=methods[0],
                    trt=trt,
                    force=force,
                    int8_activations=acts,
                    input_sizes=input_size,
                    eval_images=eval_images,
                    coco_labels=coco_labels,
                    eval_limit=eval_limit,
                    max_precision_drop=max_precision_drop / 100,
                ),
            )
            payload: dict[str, object] = {"catalog": str(path), **_gate_report(path)}
        else:
            if models:
                raise BuildError("ONNX files are built with --from-onnx FILE...")
            payload = _build_default(
                settings,
                weights,
                evolved,
                only,
                calibration_images,
                precisions,
                methods,
                eval_limit,
                trt,
                force,
                acts,
                Staging(
                    front,
                    first_only,
                    max_precision_drop / 100,
                    fit_runs,
                    max_kept,
                    max_loss / 100,
                    as_json,
                ),
            )
    except EdgeServiceError as exc:
        raise fail(exc) from exc
    human = (
        "nothing to build: engines are up to date"
        if payload.get("up_to_date")
        else f"built {payload['catalog']}"
    )
    for vid, why in dict(payload.get("not_served") or {}).items():  # type: ignore[call-overload]
        human += f"\n  {why['status']}: {vid}: {why['reason']}"
    emit(payload, as_json, human)


def _build_default(
    settings: Settings,
    weights: Path,
    evolved: Path | None,
    only: list[str] | None,
    calibration: Path | None,
    precisions: tuple[str, ...],
    methods: tuple[str, ...],
    eval_limit: int,
    trt: str | None,
    force: bool,
    int8_activations: str | None = None,
    staging: Staging | None = None,
) -> dict[str, object]:
    from edge_service.compile.family import build_family
    from edge_service.compile.ort_builder import BuildRequest

    staging = staging or Staging()
    from edge_service.data.fashion import load_split, selection_split

    if not weights.is_file():
        raise BuildError(f"no weights at {weights}; train them: edge-service train")
    test = load_split(settings.data_dir, "test")
    train = load_split(settings.data_dir, "train")
    req = BuildRequest(
        family_dir=settings.family_dir,
        weights=weights,
        calibration_dir=calibration or REPO_ROOT / "calibration" / settings.family,
        test_split=test.subset(eval_limit) if eval_limit else test,
        precisions=precisions,
        threads=settings.intra_op_threads,
        force=force,
        evolved=evolved or REPO_ROOT / "models" / settings.family / "evolved.pt",
        only=frozenset(only or ()),
        calibration_methods=methods,
        selection_split=selection_split(train),
        calibration_cache=settings.calibration_cache,
        tensorrt=trt,
        int8_activations=int8_activations,
        front=staging.front,
        first_only=staging.first_only,
        max_precision_drop=staging.max_precision_drop,
        fit_runs=staging.fit_runs,
        max_kept=staging.max_kept,
        max_loss=staging.max_loss,
    )
    with exclusive_build(settings.family_dir), progress_bar(staging.quiet) as bar:
        report = build_family(req, progress=lambda msg: log.info(msg), on_progress=bar)
    return {
        "catalog": str(report.catalog),
        "built": list(report.built),
        "up_to_date": report.up_to_date,
        "accuracy": report.accuracy,
        **_gate_report(report.catalog),
    }


@dataclass(frozen=True)
class Staging:
    """How the default family's build is staged and gated."""

    front: str = "device"
    first_only: bool = False
    max_precision_drop: float = 0.01  # fraction
    fit_runs: int = 200
    max_kept: int = 12
    max_loss: float = 0.03  # fraction
    quiet: bool = False  # no progress bar (--json)


def _gate_report(catalog: Path) -> dict[str, object]:
    """What the build leaves out of serving, for the report."""
    from edge_service.repository import load_catalog

    try:
        variants = load_catalog(catalog.parent).variants
    except EdgeServiceError:
        return {}
    return {
        "not_served": {
            v.id: {"status": v.status, "reason": v.status_reason}
            for v in variants
            if v.status != "servable"
        },
        "servable": [v.id for v in variants if v.status == "servable"],
    }


def _build_onnx_family(settings: Settings, opts: OnnxOptions) -> Path:
    from edge_service.compile.byo import build_from_onnx

    req = onnx_request(settings, opts)
    with exclusive_build(settings.family_dir):
        return build_from_onnx(req, progress=lambda msg: log.info(msg))
