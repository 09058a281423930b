"""The front for this device: evolve's search, run again on the device that will serve.

The multi-branch weights carry each branch's accuracy drop (measured once: it depends on
the weights, not the device). What depends on the device is latency, and precision:
INT8 is 2-3x faster than FP32 on a CPU with VNNI and no faster on an AVX2-only one. So
the build times every branch here, at every precision this device's backend offers, in
the INT8 scheme this device will be served with, and runs the same prediction, Pareto
front and thinning as evolve (:func:`edge_service.evolve.search.select_front`).

The result is cached beside the catalog (``front.json``), keyed by the weights, the
device id and the scheme, so a rebuild on the same device does not profile again, and a
front fitted on another device is never reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_service.errors import BuildError
from edge_service.fsutil import atomic_write_text, sha256_file

log = logging.getLogger(__name__)
FRONT_NAME = "front.json"
FIT_VERSION = 1  # bump when the search changes what it keeps


@dataclass(frozen=True)
class FitRequest:
    """One on-device search over a multi-branch weights file."""

    evolved: Path
    device_id: str
    precisions: tuple[str, ...] = ("fp32", "int8")
    int8: tuple[str, bool] = ("u8", False)  # (activations, reduce_range) served here
    max_loss: float = 0.03
    max_kept: int = 12
    threads: int = 1
    runs: int = 200


@dataclass(frozen=True)
class FittedFront:
    """The kept paths on this device, fastest first, with what the search predicted."""

    key: str
    device_id: str
    kept: list[
        dict[str, Any]
    ]  # {"id", "family_key", "precision", "predicted_ms", "predicted_top1"}
    combinations: int
    front: int
    seconds: float
    tables: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FIT_VERSION,
            "key": self.key,
            "device": self.device_id,
            "kept": self.kept,
            "combinations": self.combinations,
            "front": self.front,
            "seconds": self.seconds,
            "tables": self.tables,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FittedFront:
        return cls(
            data["key"],
            data["device"],
            list(data["kept"]),
            int(data["combinations"]),
            int(data["front"]),
            float(data["seconds"]),
            dict(data.get("tables", {})),
        )

    def precisions_by_network(self) -> dict[str, tuple[str, ...]]:
        """Each kept network (id without precision) and the precisions kept for it."""
        out: dict[str, list[str]] = {}
        for k in self.kept:
            out.setdefault(k["family_key"], []).append(k["precision"])
        return {key: tuple(v) for key, v in out.items()}


def fit_key(req: FitRequest) -> str:
    """Equal keys: the same search on the same device, so the cached front stands."""
    import onnxruntime as ort

    parts = {
        "version": FIT_VERSION,
        "evolved": sha256_file(req.evolved),
        "device": req.device_id,
        "precisions": sorted(req.precisions),
        "int8": list(req.int8),
        "max_loss": req.max_loss,
        "max_kept": req.max_kept,
        "threads": req.threads,
        "onnxruntime": ort.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached_front(family_dir: Path, key: str) -> FittedFront | None:
    """The front fitted earlier under ``key``, if one is stored beside the catalog."""
    try:
        front = FittedFront.from_dict(json.loads((family_dir / FRONT_NAME).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return front if front.key == key else None


def fit_front(
    req: FitRequest, family_dir: Path, say: Callable[[str], None] = log.info
) -> FittedFront:
    """Profile the branches here, search, and store the front (or reuse a stored one)."""
    key = fit_key(req)
    cached = cached_front(family_dir, key)
    if cached is not None:
        say(f"front for device {req.device_id}: fitted before ({len(cached.kept)} paths)")
        return cached
    front = _search(req, key, say)
    atomic_write_text(family_dir / FRONT_NAME, json.dumps(front.to_dict(), indent=1) + "\n")
    return front


def _search(req: FitRequest, key: str, say: Callable[[str], None]) -> FittedFront:
    from edge_service.evolve.search import (
        BranchAccuracy,
        BranchProfiles,
        device_tables,
        select_front,
    )
    from edge_service.evolve.supernet import load_supernet

    started = time.perf_counter()
    net, spec, _, meta = load_supernet(req.evolved)
    if "branch_accuracy" not in meta:
        raise BuildError(
            f"{req.evolved} has no branch accuracy table, which the on-device search "
            f"needs: run `python -m edge_service.evolve.annotate {req.evolved}`, or build "
            "the front it ships with: edge-service build --front shipped"
        )
    accuracy = BranchAccuracy.from_dict(meta["branch_accuracy"])
    resolutions = sorted(accuracy.resolution_drop)
    tables = device_tables(net, spec.size, req.precisions, req.threads, req.runs, say, req.int8)
    profiles = BranchProfiles.of(tables, accuracy, spec.size)
    specs = [s for p in req.precisions for s in net.specs(resolutions, p)]
    sel = select_front(profiles, specs, req.max_loss, req.max_kept)
    kept = [
        {
            "id": p.spec.id,
            "family_key": p.spec.family_key,
            "precision": p.spec.precision,
            "predicted_ms": p.latency_ms,
            "predicted_top1": p.accuracy,
            "spec": p.spec.with_precision("fp32").to_dict(),
        }
        for p in sel.kept
    ]
    seconds = time.perf_counter() - started
    say(
        f"searched {len(sel.predictions)} paths on this device in {seconds:.0f} s: "
        f"{len(sel.front)} on the front, keeping {len(kept)}: "
        + ", ".join(str(k["id"]) for k in kept)
    )
    return FittedFront(
        key,
        req.device_id,
        kept,
        len(sel.predictions),
        len(sel.front),
        seconds,
        {p: _table_dict(t) for p, t in tables.items()},
    )


def _table_dict(table: Any) -> dict[str, Any]:
    return {
        "overhead_ms": table.overhead_ms,
        "stem_ms": table.stem_ms,
        "head_ms": table.head_ms,
        "branch_ms": {f"{s}:{b}": ms for (s, b), ms in sorted(table.branch_ms.items())},
    }
