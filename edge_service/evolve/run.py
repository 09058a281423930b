"""``edge-service evolve``: grow branches from the base model, train them, search, measure.

The output (``models/<family>/evolved.pt``) holds the multi-branch weights and the kept
variant specs; ``edge-service build`` turns every kept variant into engines.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_service.data.fashion import Split
from edge_service.data.preprocess import InputSpec, preprocess
from edge_service.device import current as current_device
from edge_service.evolve.distill import EvolveConfig, Progress, evolve_training
from edge_service.evolve.search import (
    BranchProfiles,
    Int8Choice,
    Prediction,
    accuracy,
    accuracy_drops,
    at_size,
    device_tables,
    export_at,
    select_front,
)
from edge_service.evolve.supernet import MultiBranchNet, save_supernet
from edge_service.evolve.train import load_weights
from edge_service.fsutil import sha256_file
from edge_service.onnx_tools.export import INPUT_NAME
from edge_service.profile.accuracy import engine_accuracy
from edge_service.profile.latency import measure_latency
from edge_service.runtime.ort_engine import OrtEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvolveRequest:
    """One evolve run: inputs, output, and knobs."""

    base_weights: Path
    out: Path
    train: Split
    cfg: EvolveConfig = field(default_factory=EvolveConfig)
    val_size: int = 5000
    max_kept: int = 12
    max_loss: float = 0.04  # keep only paths predicted within this of the base's accuracy
    checkpoint: Path | None = None
    profile_threads: int = 1
    profile_runs: int = 200
    precisions: tuple[str, ...] = ("fp32", "int8")  # searched jointly: the front mixes them
    calibration_size: int = 256  # training images the kept INT8 paths are calibrated on
    int8: Int8Choice = ("u8", False)  # the INT8 scheme (activations, reduce_range) probed


@dataclass(frozen=True)
class KeptVariant:
    """A kept path: predicted vs measured latency (ms, batch 1) and validation top-1.

    Measured on ONNX Runtime at the path's precision (INT8: u8 Q/DQ, min-max ranges from
    ``calibration_size`` training images), as the build will serve it.
    """

    id: str
    predicted_ms: float
    measured_ms: float
    predicted_top1: float
    measured_top1: float


@dataclass(frozen=True)
class EvolveReport:
    out: Path
    combinations: int
    front: int
    kept: list[KeptVariant]
    distill_s: float
    finetune_s: float
    search_s: float
    base_val_top1: float
    teacher_val_top1: float
    latency_error_pct: float  # mean |measured - predicted| / measured
    accuracy_error_pts: float  # mean |measured - predicted| in points

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def split_train_val(train: Split, val_size: int, limit: int, seed: int) -> tuple[Split, Split]:
    """A validation split held out from the end of train, and the (limited) rest."""
    n = len(train)
    val = train.tail(val_size)
    rest = Split(train.images[: n - val_size], train.labels[: n - val_size])
    return (rest.subset(limit, seed) if limit else rest), val


def run_evolve(
    req: EvolveRequest, progress: Progress | None = None, say: Callable[[str], None] = log.info
) -> EvolveReport:
    """Train the multi-branch network, search it, measure the kept variants, save."""
    cfg = req.cfg
    teacher, spec, meta = load_weights(req.base_weights)
    data, val = split_train_val(req.train, req.val_size, cfg.train_limit, cfg.seed)
    net = MultiBranchNet(teacher, cfg.branches)
    say(
        f"evolving {len(cfg.branches) - 1} branches x {net.num_stages} stages on "
        f"{len(data)} images (validation {len(val)})"
    )
    times, history = evolve_training(net, teacher, data, spec, cfg, req.checkpoint, progress)
    started = time.perf_counter()
    say("estimating each branch's accuracy contribution")
    branch_acc = accuracy_drops(net, val, spec, cfg.resolutions)
    base_acc = branch_acc.base
    tables = device_tables(
        net, spec.size, req.precisions, req.profile_threads, req.profile_runs, say, req.int8
    )
    profiles = BranchProfiles.of(tables, branch_acc, spec.size)
    specs = [s for p in req.precisions for s in net.specs(cfg.resolutions, p)]
    sel = select_front(profiles, specs, req.max_loss, req.max_kept)
    preds, front, kept = sel.predictions, sel.front, sel.kept
    say(f"{len(preds)} combinations, {len(front)} on the predicted front, keeping {len(kept)}")
    calib = data.subset(req.calibration_size, cfg.seed)
    measured = [_measure(net, p, val, calib, spec, req) for p in kept]
    search_s = time.perf_counter() - started
    teacher_acc = accuracy(teacher, val, spec)
    meta_out = {
        "base_weights": req.base_weights.name,
        "base_sha256": sha256_file(req.base_weights),
        "config": asdict(cfg),
        "history": history,
        "distill_s": times.distill_s,
        "finetune_s": times.finetune_s,
        "search_s": search_s,
        "base_meta": meta,
        "kept": [asdict(k) for k in measured],
        "teacher_val_top1": teacher_acc,
        "branch_accuracy": branch_acc.to_dict(),  # reused by every device's on-device search
        "search_device": current_device().to_dict(),
    }
    save_supernet(req.out, net, spec, [p.spec for p in kept], meta_out)
    lat_err = [abs(k.measured_ms - k.predicted_ms) / k.measured_ms for k in measured]
    acc_err = [abs(k.measured_top1 - k.predicted_top1) * 100 for k in measured]
    return EvolveReport(
        out=req.out,
        combinations=len(preds),
        front=len(front),
        kept=measured,
        distill_s=times.distill_s,
        finetune_s=times.finetune_s,
        search_s=search_s,
        base_val_top1=base_acc,
        teacher_val_top1=teacher_acc,
        latency_error_pct=float(np.mean(lat_err)) * 100,
        accuracy_error_pts=float(np.mean(acc_err)),
    )


def _measure(
    net: MultiBranchNet,
    pred: Prediction,
    val: Split,
    calib: Split,
    spec: InputSpec,
    req: EvolveRequest,
) -> KeptVariant:
    """Export the kept path at its precision and measure it on ONNX Runtime."""
    s = pred.spec
    at = at_size(spec, s.input_size)
    feeds = (
        [{INPUT_NAME: preprocess(calib.images[i : i + 32], at)} for i in range(0, len(calib), 32)]
        if s.precision == "int8"
        else None  # FP32 needs no calibration
    )
    with tempfile.TemporaryDirectory() as tmp:
        shape = (1, net.config.in_channels, s.input_size, s.input_size)
        path = export_at(
            net.extract(s), shape, Path(tmp), s.precision, feeds, dynamic_batch=True, int8=req.int8
        )
        with OrtEngine(
            path, variant_id=s.id, precision=s.precision, threads=req.profile_threads
        ) as engine:
            ms = measure_latency(engine, 1, warmup=20, runs=req.profile_runs)["p50_ms"]
            top1 = engine_accuracy(engine, val, at)
    log.info(
        "kept %s: predicted %.4f ms / %.4f, measured %.4f ms / %.4f",
        s.id,
        pred.latency_ms,
        pred.accuracy,
        ms,
        top1,
    )
    return KeptVariant(s.id, pred.latency_ms, ms, pred.accuracy, top1)
