"""``edge-service evolve``: grow branches from the base model, train them, search, measure.

The output (``models/<family>/evolved.pt``) holds the multi-branch weights and the kept
variant specs; ``edge-service build`` turns every kept variant into engines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_service.data.fashion import Split
from edge_service.data.preprocess import InputSpec
from edge_service.evolve.distill import EvolveConfig, Progress, evolve_training
from edge_service.evolve.search import (
    BranchProfiles,
    Prediction,
    accuracy,
    accuracy_drops,
    at_size,
    latency_profiles,
    module_latency_ms,
    pareto_front,
    predict,
    thin,
)
from edge_service.evolve.supernet import MultiBranchNet, save_supernet
from edge_service.evolve.train import load_weights
from edge_service.fsutil import sha256_file
from edge_service.variants import IDENTITY

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


@dataclass(frozen=True)
class KeptVariant:
    """A kept path: predicted vs measured latency (ms, batch 1) and validation top-1."""

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


def _keep_base(kept: list[Prediction], preds: list[Prediction], native: int) -> list[Prediction]:
    """The kept set always holds the unchanged network at native resolution."""
    base = next(
        p for p in preds if set(p.spec.stages) == {IDENTITY} and p.spec.input_size == native
    )
    if base in kept:
        return kept
    return sorted(
        [*kept[:-1], base] if len(kept) >= 2 else [*kept, base], key=lambda p: p.latency_ms
    )


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
    base_acc, drops, res_drop = accuracy_drops(net, val, spec, cfg.resolutions)
    say("profiling each branch's latency on ONNX Runtime")
    overhead, stem, head, branch = latency_profiles(
        net, spec.size, req.profile_threads, req.profile_runs, say
    )
    profiles = BranchProfiles(overhead, stem, head, branch, base_acc, drops, res_drop, spec.size)
    preds = [predict(profiles, s) for s in net.specs(cfg.resolutions)]
    front = [p for p in pareto_front(preds) if p.accuracy >= base_acc - req.max_loss]
    kept = _keep_base(thin(front, req.max_kept), preds, spec.size)
    say(f"{len(preds)} combinations, {len(front)} on the predicted front, keeping {len(kept)}")
    measured = [_measure(net, p, val, spec, req) for p in kept]
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
    net: MultiBranchNet, pred: Prediction, val: Split, spec: InputSpec, req: EvolveRequest
) -> KeptVariant:
    s = pred.spec
    static = net.extract(s)
    ms = module_latency_ms(
        static, (1, 1, s.input_size, s.input_size), req.profile_threads, req.profile_runs
    )
    top1 = accuracy(static, val, at_size(spec, s.input_size))
    log.info(
        "kept %s: predicted %.4f ms / %.4f, measured %.4f ms / %.4f",
        s.id,
        pred.latency_ms,
        pred.accuracy,
        ms,
        top1,
    )
    return KeptVariant(s.id, pred.latency_ms, ms, pred.accuracy, top1)
