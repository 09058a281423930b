"""Search: predict every combination from per-branch profiles, keep the Pareto front.

- Latency: every branch (and the stem and head) is exported alone and timed with the
  engine backend (ONNX Runtime, batch 1, fixed threads), once per precision: FP32 as
  exported, INT8 after static Q/DQ quantization in the build's ONNX Runtime scheme (u8
  activations; ranges from random feeds, which set scales, not speed). A path's latency is
  predicted as one call's overhead plus the sum of its pieces' own time at its precision,
  scaled by the pixel count of its input resolution. Precision is searched, not assumed:
  on a CPU, INT8 speeds up wide convolutions and slows small depthwise ones (its
  quantize/dequantize steps cost more than they save), so the front mixes both.
- Accuracy: each branch's contribution is estimated as the drop it causes when it alone
  replaces the teacher's stage (and each resolution's drop with all stages unchanged), on
  a validation split held out of the training data; a path's accuracy is the base's minus
  the sum of its drops, at either precision (the build measures INT8 within +-0.2 points
  of FP32 on every network here; the kept paths are measured for real at their precision).
- Selection: the predicted Pareto front (no other path both faster and more accurate),
  less the paths predicted to lose more than the allowed accuracy (4 points by default),
  thinned to at most ``max_kept`` paths spread over the latency range (log-spaced), always
  keeping the fastest and the most accurate.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_service.data.fashion import Split
from edge_service.data.preprocess import InputSpec
from edge_service.evolve.supernet import MultiBranchNet
from edge_service.evolve.train import evaluate
from edge_service.onnx_tools.export import INPUT_NAME, export_onnx
from edge_service.onnx_tools.quantize import quantize_feeds
from edge_service.profile.latency import measure_latency
from edge_service.runtime.ort_engine import OrtEngine
from edge_service.variants import IDENTITY, VariantSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatencyTable:
    """One precision's per-piece latencies (milliseconds, batch 1)."""

    overhead_ms: float
    stem_ms: float
    head_ms: float
    branch_ms: dict[tuple[int, str], float]


Int8Choice = tuple[str, bool]  # (activations "s8" | "u8", reduce_range)


@dataclass(frozen=True)
class BranchProfiles:
    """What the search predicts from (milliseconds per precision, accuracy fractions)."""

    latency: dict[str, LatencyTable]
    base_accuracy: float
    branch_drop: dict[tuple[int, str], float]
    resolution_drop: dict[int, float]
    native: int

    @classmethod
    def of(
        cls, latency: dict[str, LatencyTable], acc: BranchAccuracy, native: int
    ) -> BranchProfiles:
        return cls(latency, acc.base, acc.branch_drop, acc.resolution_drop, native)


@dataclass(frozen=True)
class Prediction:
    spec: VariantSpec
    latency_ms: float
    accuracy: float


@dataclass(frozen=True)
class BranchAccuracy:
    """What each branch and resolution costs in accuracy, measured once on the weights.

    Device-independent (the FP32 network's top-1 on a held-out validation split), so
    evolve stores it in the multi-branch weights and every device's search reuses it;
    only the latency tables are measured on the device.
    """

    base: float
    branch_drop: dict[tuple[int, str], float]
    resolution_drop: dict[int, float]
    examples: int

    def to_dict(self) -> dict[str, object]:
        return {
            "base": self.base,
            "branch_drop": {f"{s}:{b}": d for (s, b), d in sorted(self.branch_drop.items())},
            "resolution_drop": {str(r): d for r, d in sorted(self.resolution_drop.items())},
            "examples": self.examples,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BranchAccuracy:
        drops = {}
        for key, drop in dict(data["branch_drop"]).items():
            stage, branch = str(key).split(":", 1)
            drops[(int(stage), branch)] = float(drop)
        res = {int(r): float(d) for r, d in dict(data["resolution_drop"]).items()}
        return cls(float(data["base"]), drops, res, int(data["examples"]))


def accuracy(net: nn.Module, split: Split, spec: InputSpec, batch: int = 500) -> float:
    """Top-1 of ``net`` (in its current routing) on ``split``."""
    return evaluate(net, split, spec, batch)


def at_size(spec: InputSpec, size: int) -> InputSpec:
    """The same normalisation at another input resolution."""
    return InputSpec(spec.name, size, spec.mean, spec.std)


def accuracy_drops(
    net: MultiBranchNet, val: Split, spec: InputSpec, resolutions: Sequence[int]
) -> BranchAccuracy:
    """Base accuracy, each branch's drop alone, each resolution's drop alone."""
    base_path = (IDENTITY,) * net.num_stages
    net.set_active(base_path)
    base = accuracy(net, val, spec)
    drops: dict[tuple[int, str], float] = {}
    for s in range(net.num_stages):
        for b in net.branches:
            if b == IDENTITY:
                drops[(s, b)] = 0.0
                continue
            path = list(base_path)
            path[s] = b
            net.set_active(path)
            drops[(s, b)] = base - accuracy(net, val, spec)
    net.set_active(base_path)
    res_drop = {
        r: base - accuracy(net, val, at_size(spec, r)) if r != spec.size else 0.0
        for r in resolutions
    }
    return BranchAccuracy(base, drops, res_drop, len(val))


def probe_feeds(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random ``input`` feeds of ``shape``: calibration for latency probes (scales only)."""
    rng = np.random.default_rng(seed)
    return [{INPUT_NAME: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def export_at(
    module: nn.Module,
    shape: tuple[int, ...],
    folder: Path,
    precision: str,
    feeds: Sequence[dict[str, np.ndarray]] | None = None,
    dynamic_batch: bool = False,
    int8: Int8Choice = ("u8", False),
) -> Path:
    """``module`` as an ONNX file at ``precision`` (INT8: Q/DQ in the ``int8`` scheme,
    (activations, reduce_range), calibrated on ``feeds``)."""
    fp32 = folder / "fp32.onnx"
    export_onnx(module.eval(), fp32, shape[-1], shape[1], dynamic_batch=dynamic_batch)
    if precision == "fp32":
        return fp32
    acts, reduce_range = int8
    return quantize_feeds(
        fp32, folder / "int8.onnx", feeds or probe_feeds(shape), acts, reduce_range=reduce_range
    )


def module_latency_ms(
    module: nn.Module,
    shape: tuple[int, ...],
    threads: int,
    runs: int,
    precision: str = "fp32",
    int8: Int8Choice = ("u8", False),
) -> float:
    """p50 batch-1 latency of ``module`` alone at ``precision`` on ONNX Runtime."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_at(module, shape, Path(tmp), precision, int8=int8)
        with OrtEngine(path, variant_id="probe", precision=precision, threads=threads) as eng:
            return measure_latency(eng, 1, warmup=20, runs=runs)["p50_ms"]


def _feature_shapes(net: MultiBranchNet, native: int) -> list[tuple[int, ...]]:
    """The input shape of the stem, each stage and the head at the native resolution."""
    shapes: list[tuple[int, ...]] = [(1, net.config.in_channels, native, native)]
    x = torch.zeros(shapes[0])
    with torch.no_grad():
        out = net.stem(x)
        for s in range(net.num_stages):
            shapes.append(tuple(out.shape))
            out = net.branch(s, IDENTITY)(out)
    shapes.append(tuple(out.shape))
    return shapes


def piece_latency_ms(
    module: nn.Module,
    shape: tuple[int, ...],
    precisions: Sequence[str],
    threads: int,
    runs: int,
    int8: Int8Choice = ("u8", False),
) -> dict[str, float]:
    """p50 batch-1 latency of ``module`` alone at each precision, from one export (INT8:
    quantized from it in the ``int8`` scheme, ranges from random feeds)."""
    acts, reduce_range = int8
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(module.eval(), fp32, shape[-1], shape[1], dynamic_batch=False)
        for precision in precisions:
            path = fp32
            if precision == "int8":
                path = quantize_feeds(
                    fp32, Path(tmp) / "int8.onnx", probe_feeds(shape), acts, reduce_range
                )
            with OrtEngine(path, variant_id="probe", precision=precision, threads=threads) as e:
                out[precision] = measure_latency(e, 1, warmup=20, runs=runs)["p50_ms"]
    return out


def device_tables(
    net: MultiBranchNet,
    native: int,
    precisions: Sequence[str],
    threads: int = 1,
    runs: int = 200,
    progress: Callable[[str], None] | None = None,
    int8: Int8Choice = ("u8", False),
) -> dict[str, LatencyTable]:
    """Per-call overhead, stem, head and every branch's own latency (ms) at each
    precision, measured on this device (INT8 in the scheme the build will use here).
    Each piece is exported once and timed at every precision."""
    shapes = _feature_shapes(net, native)
    # an empty graph has nothing to quantize: one call's overhead is the same at all
    base = module_latency_ms(nn.Identity(), (1, 1, 4, 4), threads, runs)

    def own(module: nn.Module, shape: tuple[int, ...]) -> dict[str, float]:
        ms = piece_latency_ms(module, shape, precisions, threads, runs, int8)
        return {p: max(v - base, 0.0) for p, v in ms.items()}

    if progress:
        progress(f"timing every branch at {', '.join(precisions)} on ONNX Runtime")
    stem, head = own(net.stem, shapes[0]), own(net.head, shapes[-1])
    branch: dict[tuple[int, str], dict[str, float]] = {}
    for s in range(net.num_stages):
        for b in net.branches:
            branch[(s, b)] = own(net.branch(s, b), shapes[s + 1])
            if progress:
                times = ", ".join(f"{p} {v:.4f}" for p, v in branch[(s, b)].items())
                progress(f"stage {s + 1} branch {b}: {times} ms")
    return {
        p: LatencyTable(base, stem[p], head[p], {k: v[p] for k, v in branch.items()})
        for p in precisions
    }


def predict(p: BranchProfiles, spec: VariantSpec) -> Prediction:
    """Predicted latency and accuracy of one path (at its precision)."""
    t = p.latency[spec.precision]
    scale = (spec.input_size / p.native) ** 2
    compute = t.stem_ms + t.head_ms + sum(t.branch_ms[(s, b)] for s, b in enumerate(spec.stages))
    drop = sum(p.branch_drop[(s, b)] for s, b in enumerate(spec.stages))
    drop += p.resolution_drop[spec.input_size]
    return Prediction(spec, t.overhead_ms + compute * scale, p.base_accuracy - drop)


def pareto_front(preds: Sequence[Prediction]) -> list[Prediction]:
    """Predictions no other is both faster-or-equal and more accurate than, fastest first."""
    front: list[Prediction] = []
    for pred in sorted(preds, key=lambda q: (q.latency_ms, -q.accuracy)):
        if not front or pred.accuracy > front[-1].accuracy:
            front.append(pred)
    return front


def thin(front: Sequence[Prediction], max_kept: int) -> list[Prediction]:
    """At most ``max_kept`` front points, log-spaced in latency, ends always kept."""
    if len(front) <= max_kept:
        return list(front)
    lo, hi = math.log(front[0].latency_ms), math.log(front[-1].latency_ms)
    targets = np.linspace(lo, hi, max_kept)
    kept: list[Prediction] = []
    for target in targets:
        best = min(front, key=lambda q: abs(math.log(q.latency_ms) - target))
        if best not in kept:
            kept.append(best)
    return sorted(kept, key=lambda q: q.latency_ms)


def keep_base(
    kept: list[Prediction], preds: list[Prediction], native: int, max_kept: int = 12
) -> list[Prediction]:
    """The kept set always holds the unchanged network at native resolution.

    At its fastest precision (both precisions predict the same accuracy). Added to a full
    set, it takes the place of the interior point nearest another in log latency, so the
    ends of the front and the spread of the rest stay.
    """
    bases = [p for p in preds if set(p.spec.stages) == {IDENTITY} and p.spec.input_size == native]
    base = min(bases, key=lambda p: p.latency_ms)
    if any(p.spec.family_key == base.spec.family_key for p in kept):
        return kept
    out = sorted([*kept, base], key=lambda p: p.latency_ms)
    while len(out) > max(max_kept, 2):
        interior = [i for i in range(1, len(out) - 1) if out[i] is not base]
        if not interior:
            break
        gap = {i: math.log(out[i].latency_ms / out[i - 1].latency_ms) for i in interior}
        out.pop(min(interior, key=lambda i: gap[i]))
    return out


@dataclass(frozen=True)
class Selection:
    """One search: every prediction, the front within the allowed loss, the kept set."""

    predictions: list[Prediction]
    front: list[Prediction]
    kept: list[Prediction]


def select_front(
    profiles: BranchProfiles, specs: Sequence[VariantSpec], max_loss: float, max_kept: int
) -> Selection:
    """Predict every path, keep the Pareto front within ``max_loss`` of the base, thinned
    to ``max_kept`` with the base always in: evolve's search and the build's on-device
    search both run this."""
    preds = [predict(profiles, s) for s in specs]
    front = [p for p in pareto_front(preds) if p.accuracy >= profiles.base_accuracy - max_loss]
    kept = keep_base(thin(front, max_kept), preds, profiles.native, max_kept)
    return Selection(preds, front, kept)
