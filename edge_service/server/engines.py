"""Engines as the service loads them: the loader over the repository, the warm run before
an engine serves, the blank frame warm-up and shadow runs feed, and how many rows one
engine call may take."""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

from edge_service.data.pipeline import Preprocess
from edge_service.repository import Catalog
from edge_service.runtime.batcher import MicroBatcher
from edge_service.runtime.engine import Engine
from edge_service.runtime.idle_loader import may_restore_priority
from edge_service.runtime.loader import open_engine


def engine_loader(catalog: Catalog, family_dir: Path, threads: int) -> Callable[[str], Engine]:
    """A ``variant_id -> loaded Engine`` function over the repository (checksums verified).
    Engines come back cold: the pool warms one (`Warmer`) when it is about to serve."""

    def load(variant_id: str) -> Engine:
        return open_engine(catalog.variant(variant_id), family_dir, threads)

    return load


def idle_loads_allowed(catalog: Catalog, threads: int) -> bool:
    """Standby engines may load on the pool's idle thread (nice 19): at one thread per
    engine (no worker threads), or ONNX Runtime CPU engines whose worker threads can be
    given the serving priority back when they serve (`idle_loader.WorkerThreads`, where
    `may_restore_priority`); not a family with TensorRT engines, whose loads start CUDA's
    own threads."""
    if threads == 1:
        return True
    cpu_only = all(v.backend != "tensorrt" for v in catalog.variants if v.status == "servable")
    return cpu_only and may_restore_priority()


def at_threads(threads: int) -> Callable[[Engine], bool]:
    """Whether a loaded engine may stay when engines are to run ``threads`` intra-op
    threads: a TensorRT engine has no CPU threads to change, an ONNX Runtime one loaded at
    that same count may (not at 0: the runtime picked from the cores online then, and the
    new mode may have changed them)."""

    def keep(engine: Engine) -> bool:
        info = engine.info()
        return info.backend == "tensorrt" or (threads > 0 and info.threads == threads)

    return keep


COLD_PENALTY = 1.5  # a first call this much slower than the second is worth a warm run


class Warmer:
    """Runs an engine once on zeros before it serves, where that pays.

    ONNX Runtime's first call on a small classifier costs 2-3x a warm one (first-run
    allocations), and a served call that pays it goes over a tight budget; a detector's
    first call costs what the next does (50-130 ms on one core here), and running it would
    only slow the engine already serving. So the first time a variant is warmed it runs
    twice and remembers whether the first call was ``COLD_PENALTY`` slower; later engines
    of that variant are warmed only if it was. The pool calls this for an engine about to
    be served (swapped in, or loaded for a pinned request), and for one its idle loader
    put on standby: that run takes only the CPU the served calls leave, and the swap to
    the engine then runs none (an engine is warmed once). Not for one preloaded in front:
    an engine that may never serve costs no run there, and a shadow run does its own
    warm-up. An engine that cannot run fails here, before any request reaches it.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._lock = threading.Lock()
        self._pays: dict[str, bool] = {}
        self._warmed: weakref.WeakSet[Engine] = weakref.WeakSet()  # ran once already
        self._clock = clock

    def __call__(self, variant_id: str, engine: Engine) -> None:
        with self._lock:
            pays = self._pays.get(variant_id)
            if pays is False or engine in self._warmed:
                return
        first = _timed_run(engine, self._clock)
        if first is None:
            return
        second = _timed_run(engine, self._clock) if pays is None else None
        with self._lock:
            self._warmed.add(engine)
            if second is not None:
                self._pays[variant_id] = first > COLD_PENALTY * second

    def pays(self, variant_id: str) -> bool | None:
        """Whether warming ``variant_id`` pays (None: not measured yet)."""
        with self._lock:
            return self._pays.get(variant_id)

    def forget(self, variant_ids: Iterable[str]) -> None:
        """Measure these variants again (their artifacts changed)."""
        with self._lock:
            for vid in variant_ids:
                self._pays.pop(vid, None)


def _timed_run(engine: Engine, clock: Callable[[], float]) -> float | None:
    """Seconds one call on zeros of one row took; None (nothing run) when a dimension other
    than the batch is not fixed (no shape to feed)."""
    import numpy as np

    rest = engine.info().input_shape[1:]
    dims = [d for d in rest if isinstance(d, int) and d >= 1]
    if len(dims) != len(rest):
        return None
    batch = np.zeros((1, *dims), dtype=np.float32)
    started = clock()
    engine.infer(batch)
    return clock() - started


SHADOW_WARMUP = 2  # calls of a shadow run not counted (caches, lazy allocations)
# Shadow calls are spaced like a served stream: back to back, an engine runs warmer (hot
# caches, its threads still spinning) than it will when serving, and the measurement
# would promise a latency it then does not keep.
SHADOW_GAP_S = 0.015


def shadow_run(
    batcher: MicroBatcher, pre: Preprocess, variant_id: str, calls: int, expect_ms: float | None
) -> list[float]:
    """Time ``calls`` engine calls of ``variant_id`` on a blank frame in the batcher's idle
    time, spaced like a served stream, after ``SHADOW_WARMUP`` not counted."""
    runs = calls + SHADOW_WARMUP
    timeout_s = shadow_timeout_s(runs, SHADOW_GAP_S, expect_ms)
    x = pre.from_bytes(blank_png())
    times = batcher.shadow(variant_id, x, runs, gap_s=SHADOW_GAP_S, timeout_s=timeout_s)
    return times[SHADOW_WARMUP:]


def shadow_timeout_s(runs: int, gap_s: float, expect_ms: float | None) -> float:
    """How long a shadow run of ``runs`` calls ``gap_s`` apart may take: each call twice
    what is expected of it (served requests run between them; a competitor may come),
    and 2 s more. A detector's run of 26 calls of 100 ms got 2.4 s when this did not
    count the calls, and ended with too few of them to verify the variant."""
    return runs * (gap_s + 2 * max(0.0, expect_ms or 0.0) / 1e3) + 2.0


@functools.cache
def blank_png() -> bytes:
    """A small black PNG: what warm-up and shadow runs feed (latency does not depend on
    the pixels); made once."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def batch_limit(setting: int, batch_dim: int | str) -> int:
    """Most rows per engine call: the setting, or the engines' fixed batch where their input
    has one (a detector exported without dynamic axes takes one frame per call, and a
    micro-batch of two would fail the engine)."""
    return min(setting, batch_dim) if isinstance(batch_dim, int) and batch_dim >= 1 else setting
