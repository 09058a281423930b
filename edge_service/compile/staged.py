"""The default family's build, in stages that each land in the catalog as they finish.

1. ``first``: the base network at FP32, the one engine that is correct everywhere, so a
   server can answer at once (``edge-service build --first-only`` stops here).
2. ``fit``: this device's front (:mod:`edge_service.compile.fit`), unless ``--front shipped``
   (the front evolve kept on the machine it ran on) or ``--only`` names the networks.
3. ``networks``: every kept network, fastest first, at FP32 (every reduced-precision
   engine's reference) and at the precision the front kept it at.

After every network the catalog is written again (atomically) with what is built so far,
each engine gated (:mod:`edge_service.compile.gate`), and marked ``complete: false`` until
the last one lands, so a server that reloads it serves each engine as it lands and never
reads half a file. A build that is stopped resumes: engines already in a partial catalog
of the same build key whose files verify are kept. ``<family>/build-progress.json`` says
where the build stands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnxruntime as ort

import edge_service
from edge_service.buildstate import BuildProgress, ProgressFile
from edge_service.compile.calibration import calibration_images
from edge_service.compile.gate import apply_gate, gate_summary
from edge_service.compile.ort_builder import (
    BuildReport,
    BuildRequest,
    Progress,
    _measure,
    build_key,
    choose_int8,
)
from edge_service.data.fashion import LABELS
from edge_service.data.preprocess import InputSpec
from edge_service.errors import CatalogError
from edge_service.repository import (
    Catalog,
    InputInfo,
    Variant,
    load_catalog,
    save_catalog,
    verified_artifact_path,
)
from edge_service.variants import IDENTITY, VariantSpec

log = logging.getLogger(__name__)
OnProgress = Callable[[BuildProgress], None]


@dataclass(frozen=True)
class Network:
    """One network to build: its spec (at FP32), the module, the precisions wanted."""

    spec: VariantSpec
    module: Any
    precisions: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """What the family is built from."""

    input: InputSpec
    base: Network
    extract: Callable[[VariantSpec], Any]  # a path of the weights as a plain module
    shipped: list[VariantSpec]  # the front stored with the weights (empty: base only)
    meta: dict[str, Any]
    evolved: Path | None


def load_source(req: BuildRequest) -> Source:
    """The multi-branch weights if present, else the base model alone."""
    from edge_service.evolve.train import load_weights

    if req.evolved is not None and req.evolved.is_file():
        from edge_service.evolve.supernet import load_supernet

        net, spec, kept, meta = load_supernet(req.evolved)
        base_spec = VariantSpec(
            (IDENTITY,) * net.num_stages, "fp32", spec.size, spec.size, "evolve"
        )
        base = Network(base_spec, net.extract(base_spec), ("fp32",))
        keep = ("base_sha256", "distill_s", "finetune_s")
        return Source(
            spec,
            base,
            net.extract,
            kept,
            {"source": req.evolved.name, **{k: meta[k] for k in keep if k in meta}},
            req.evolved,
        )
    model, spec, meta = load_weights(req.weights)
    base_spec = VariantSpec(
        (IDENTITY,) * len(model.stages), "fp32", spec.size, spec.size, req.weights.name
    )
    return Source(
        spec,
        Network(base_spec, model, ("fp32",)),
        lambda _s: model,
        [],
        {"source": req.weights.name, **meta},
        None,
    )


def plan_networks(
    req: BuildRequest, src: Source, tracker: ProgressFile, say: Progress
) -> tuple[list[Network], dict[str, Any]]:
    """The networks to build after the first engine, and how they were chosen."""
    wanted = tuple(req.precisions)
    if req.only:
        keys = sorted(req.only)
        specs = {s.family_key: s.with_precision("fp32") for s in [src.base.spec, *src.shipped]}
        missing = [k for k in keys if k not in specs]
        if missing:
            raise CatalogError(
                f"none of {missing} is among the networks of {src.meta['source']}: "
                f"known {sorted(specs)}"
            )
        nets = [Network(specs[k], src.extract(specs[k]), wanted) for k in keys]
        return nets, {"mode": "only", "networks": keys}
    if src.evolved is None:
        return [replace(src.base, precisions=wanted)], {"mode": "base"}
    if req.front == "shipped":
        order = list(dict.fromkeys(s.family_key for s in src.shipped))
        by_key = {s.family_key: s.with_precision("fp32") for s in src.shipped}
        nets = [Network(by_key[k], src.extract(by_key[k]), wanted) for k in order]
        return nets, {"mode": "shipped", "kept": [s.id for s in src.shipped]}
    return _fitted_networks(req, src, tracker, say)


def _fitted_networks(
    req: BuildRequest, src: Source, tracker: ProgressFile, say: Progress
) -> tuple[list[Network], dict[str, Any]]:
    from edge_service.compile.fit import FitRequest, fit_front

    assert src.evolved is not None
    scheme = req.int8_scheme
    tracker.update(stage="fit", done=0, total=1, current="branches", message="timing branches")
    fit = fit_front(
        FitRequest(
            src.evolved,
            req.device_id,
            precisions=tuple(p for p in ("fp32", "int8") if p in req.precisions),
            int8=(scheme.activations, scheme.reduce_range),
            max_kept=req.max_kept,
            max_loss=req.max_loss,
            runs=req.fit_runs,
        ),
        req.family_dir,
        say,
    )
    tracker.update(done=1, message=f"{len(fit.kept)} paths kept on this device")
    ms = {k["family_key"]: k["predicted_ms"] for k in fit.kept}
    specs = {k["family_key"]: VariantSpec.from_dict(k["spec"]) for k in fit.kept}
    nets = []
    for key, kept in sorted(fit.precisions_by_network().items(), key=lambda kv: ms[kv[0]]):
        spec = specs[key]
        precisions = tuple(p for p in ("fp32", *kept) if p in req.precisions)
        nets.append(Network(spec, src.extract(spec), tuple(dict.fromkeys(precisions))))
    info = {
        "mode": "device",
        "device": fit.device_id,
        "kept": [k["id"] for k in fit.kept],
        "predicted_ms": {k["id"]: k["predicted_ms"] for k in fit.kept},
        "combinations": fit.combinations,
        "front": fit.front,
        "fit_s": fit.seconds,
    }
    return nets, info


def resumable(req: BuildRequest, key: str) -> tuple[dict[str, Variant], dict[str, Any]]:
    """Engines of an unfinished build under ``key`` whose files still verify, and how it
    chose its networks (empty when there is none to resume)."""
    try:
        catalog = load_catalog(req.family_dir)
    except CatalogError:
        return {}, {}
    if catalog.build.get("key") != key:
        return {}, {}
    kept = {}
    for variant in catalog.variants:
        try:
            verified_artifact_path(req.family_dir, variant.artifact)
        except CatalogError:
            continue
        kept[variant.id] = variant
    return kept, dict(catalog.build.get("front") or {})


def build_staged(
    req: BuildRequest, progress: Progress = log.info, on_progress: OnProgress | None = None
) -> BuildReport:
    """Build the family stage by stage (see the module docstring)."""
    key = build_key(req)
    tracker = ProgressFile(
        req.family_dir, BuildProgress(stage="first", device=req.device_id), on_progress
    )
    # the same key means the same plan: what an unfinished build left is taken as built
    have, front = resumable(req, key) if not req.force else ({}, {})
    if have:
        progress(f"resuming an unfinished build: {len(have)} engine(s) already built")
    src = load_source(req)
    files = calibration_images(req.calibration_dir) if "int8" in req.precisions else []
    built: dict[str, Variant] = dict(have)
    tracker.update(stage="first", done=0, total=1, current=src.base.spec.id)
    if src.base.spec.id not in built:
        _network(req, src, src.base, built, files, progress)
        catalog = _save(req, src, key, built, front or {"mode": "pending"}, complete=False)
    else:
        catalog = load_catalog(req.family_dir)
    tracker.update(done=1, servable=_servable(catalog))
    if req.first_only:
        progress(
            f"first engine ready: {src.base.spec.id}; the rest builds with `edge-service build`"
        )
        return _report(catalog, req, built)
    try:
        nets, front = plan_networks(req, src, tracker, progress)
        tracker.update(stage="networks", done=0, total=len(nets), message="")
        for i, net in enumerate(nets, 1):
            tracker.update(current=net.spec.family_key, message=f"[{i}/{len(nets)}]")
            progress(f"[{i}/{len(nets)}] {net.spec.family_key}: {', '.join(net.precisions)}")
            _network(req, src, net, built, files, progress)
            catalog = _save(req, src, key, built, front, complete=False)
            tracker.update(done=i, servable=_servable(catalog))
        catalog = _save(req, src, key, built, front, complete=True)
    except BaseException as exc:
        tracker.update(stage="failed", message=str(exc) or type(exc).__name__)
        raise
    for line in gate_summary(catalog.variants):
        progress(f"  not served: {line}")
    tracker.update(stage="complete", current=None, servable=_servable(catalog), message="")
    return _report(catalog, req, built)


def _network(
    req: BuildRequest,
    src: Source,
    net: Network,
    built: dict[str, Variant],
    files: list[Path],
    progress: Progress,
) -> None:
    """Build ``net`` at each of its precisions not in ``built`` yet, into ``built``."""
    from edge_service.onnx_tools.export import export_onnx

    vspec = net.spec
    out_dir = req.family_dir / vspec.family_key
    vin = InputSpec(src.input.name, vspec.input_size, src.input.mean, src.input.std)
    fresh = [p for p in net.precisions if vspec.with_precision(p).id not in built]
    if not fresh:
        return
    fp32_id = vspec.with_precision("fp32").id
    fp32_file = out_dir / "fp32.onnx"
    if fp32_id not in built or not fp32_file.is_file():
        export_onnx(net.module, fp32_file, vspec.input_size)
    for p in fresh:
        calib = None
        path = fp32_file
        if p == "int8":
            path, calib = choose_int8(req, fp32_file, out_dir, files, vin)
            drops = ", ".join(f"{k} {v * 100:+.2f}" for k, v in calib.drop_by_method.items())
            progress(f"  int8 calibration: {calib.method} (top-1 drops, pts: {drops})")
        built[vspec.with_precision(p).id] = _measure(
            req, vspec.with_precision(p), path, vin, progress, calib
        )


def _save(
    req: BuildRequest,
    src: Source,
    key: str,
    built: dict[str, Variant],
    front: dict[str, Any],
    complete: bool,
) -> Catalog:
    """The catalog of what is built so far, gated, written atomically. A forced rebuild
    replaces a family someone may be serving: it writes the catalog once, at the end, so
    a rebuild stopped half way leaves the old catalog whole (never a smaller one)."""
    variants = apply_gate(list(built.values()), req.device_id, req.max_precision_drop)
    scheme = req.int8_scheme
    catalog = Catalog(
        schema_version=1,
        family=req.family_dir.name,
        task="classification",
        labels=list(LABELS),
        input=InputInfo(
            name=src.input.name,
            shape=["batch", 1, src.input.size, src.input.size],
            mean=src.input.mean,
            std=src.input.std,
        ),
        variants=variants,
        build={
            "key": key,
            "complete": complete,
            "device": req.device,
            "front": front,
            "int8": {
                "activations": scheme.activations,
                "reduce_range": scheme.reduce_range,
                "reason": scheme.reason,
            },
            "max_precision_drop": req.max_precision_drop,
            "networks": src.meta,
            "onnxruntime": ort.__version__,
            "edge_service": edge_service.__version__,
        },
    )
    if complete and req.tensorrt:
        from edge_service.compile.trt_family import build_tensorrt

        catalog = build_tensorrt(catalog, req.family_dir, log.info, test_split=req.test_split)
        catalog = catalog.model_copy(
            update={"variants": apply_gate(catalog.variants, req.device_id, req.max_precision_drop)}
        )
    if complete or not req.force:
        save_catalog(req.family_dir, catalog)
    return catalog


def _servable(catalog: Catalog) -> int:
    return sum(1 for v in catalog.variants if v.status == "servable")


def _report(catalog: Catalog, req: BuildRequest, built: dict[str, Variant]) -> BuildReport:
    accuracy = {v.id: v.accuracy.value for v in catalog.variants if v.accuracy}
    path = req.family_dir / "catalog.json"
    return BuildReport(path, tuple(built), False, accuracy)
