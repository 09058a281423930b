"""The engine pool: one active engine, swapped atomically, the old one drained.

A request takes a *lease* on an engine when it starts and keeps it to the end, so a swap
never pulls an engine from under a running request: an engine leaving the pool (swapped
out, dropped from standby, evicted from the pinned cache, or replaced by a reload) closes
when its last lease ends.

Besides the active engine the pool keeps *standby* engines (preloaded around the active
one, so a swap needs no load) and a small LRU of *pinned* engines, loaded on demand for
requests that name a variant other than the active one.

A variant whose engine fails to load (a corrupt artifact, a backend error, out of memory)
is marked *unhealthy*: the controller leaves it alone, a request pinned to it gets a 503
that says why, and the engine already serving carries on. The mark is retried after
``retry_unhealthy_s`` (memory may have come free, the file may have been rebuilt).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from edge_service.errors import EdgeServiceError, EngineError, NotReadyError
from edge_service.runtime.engine import Engine

log = logging.getLogger(__name__)


class EnginePool:
    """Holds the active engine; ``loader(variant_id)`` returns a loaded engine."""

    def __init__(
        self,
        loader: Callable[[str], Engine],
        max_pinned: int = 2,
        *,
        retry_unhealthy_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._max_pinned = max_pinned
        self._retry_unhealthy_s, self._clock = retry_unhealthy_s, clock
        self._lock = threading.Lock()  # guards the maps below; never held while loading
        self._swap_lock = threading.Lock()  # one load/swap at a time
        self._active: Engine | None = None
        self._active_id: str | None = None
        self._leases: dict[int, int] = {}
        self._retired: dict[int, Engine] = {}
        self._standby: dict[str, Engine] = {}  # preloaded, ready to swap in
        self._pinned: OrderedDict[str, Engine] = OrderedDict()  # for pinned requests
        self._unhealthy: dict[str, tuple[str, float]] = {}  # id -> (why, when)
        self.last_swap_ms: float | None = None
        self.last_swap_preloaded: bool | None = None
        self.swaps = 0

    @property
    def unhealthy(self) -> frozenset[str]:
        """Variants whose engine failed to load (tried again after ``retry_unhealthy_s``,
        or at once after ``forgive``)."""
        return frozenset(v for v in list(self._unhealthy) if self.unhealthy_reason(v))

    def unhealthy_reason(self, variant_id: str) -> str | None:
        """Why ``variant_id`` is unhealthy, or None when it is not (any longer)."""
        found = self._unhealthy.get(variant_id)
        if found is None or self._clock() - found[1] >= self._retry_unhealthy_s:
            return None
        return found[0]

    @property
    def standby(self) -> tuple[str, ...]:
        """Variants preloaded for a fast swap."""
        return tuple(self._standby)

    @property
    def pinned(self) -> tuple[str, ...]:
        """Variants loaded for pinned requests, least recently used first."""
        return tuple(self._pinned)

    @property
    def loaded(self) -> tuple[str, ...]:
        """Every variant with a loaded engine in the pool."""
        active = (self._active_id,) if self._active_id is not None else ()
        return (*active, *self._standby, *self._pinned)

    def forgive(self, variant_id: str) -> None:
        """Let a variant that failed to load be tried again."""
        self._unhealthy.pop(variant_id, None)

    def set_loader(self, loader: Callable[[str], Engine]) -> None:
        """Load later engines with ``loader`` (e.g. at a new thread count); see ``reload``."""
        with self._swap_lock:
            self._loader = loader

    def preload(self, variant_ids: list[str]) -> None:
        """Keep exactly these variants (bar the active one) loaded on standby; failures
        mark the variant unhealthy and are not raised (preloading is best effort)."""
        with self._swap_lock:
            sick = self.unhealthy
            wanted = [v for v in variant_ids if v != self._active_id and v not in sick]
            with self._lock:
                dropped = [self._standby.pop(v) for v in list(self._standby) if v not in wanted]
                to_close = [e for e in map(self._retire, dropped) if e is not None]
            for engine in to_close:
                engine.close()
            for vid in wanted:
                if vid in self._standby:
                    continue
                with self._lock:
                    found: Engine | None = self._pinned.pop(vid, None)  # promote, no load
                if found is not None:
                    engine = found
                else:
                    try:
                        engine = self._load(vid)
                    except EngineError:
                        continue  # preloading is best effort; _load logged why
                with self._lock:
                    self._standby[vid] = engine

    @property
    def active_id(self) -> str | None:
        """The variant now served, or None before the first activation."""
        return self._active_id

    @property
    def ready(self) -> bool:
        return self._active is not None

    def activate(self, variant_id: str) -> None:
        """Load ``variant_id`` and make it active; the old engine drains, then closes.

        A preloaded (or pinned) engine swaps in without loading. If loading fails the old
        engine stays active, the variant is marked unhealthy and the error propagates.
        """
        with self._swap_lock:
            if variant_id == self._active_id:
                return
            self._swap_in(variant_id, reuse=True)

    def reload(self) -> None:
        """Replace every loaded engine by a fresh one from the loader (after the power mode
        changed the cores or threads an engine should use). The active engine is replaced
        atomically; standby and pinned engines are dropped (the loop preloads again)."""
        with self._swap_lock:
            with self._lock:
                dropped = [*self._standby.values(), *self._pinned.values()]
                self._standby.clear()
                self._pinned.clear()
                to_close = [e for e in map(self._retire, dropped) if e is not None]
            for engine in to_close:
                engine.close()
            if self._active_id is not None:
                self._swap_in(self._active_id, reuse=False)

    def _swap_in(self, variant_id: str, *, reuse: bool) -> None:
        """Under the swap lock: make ``variant_id`` active (loaded unless ``reuse`` finds it)."""
        started = time.perf_counter()
        with self._lock:
            engine = (
                self._standby.pop(variant_id, None) or self._pinned.pop(variant_id, None)
                if reuse
                else None
            )
        preloaded = engine is not None
        if engine is None:
            engine = self._load(variant_id)
        with self._lock:
            old, old_id = self._active, self._active_id
            self._active, self._active_id = engine, variant_id
            self._leases.setdefault(id(engine), 0)
            keep = reuse and self._max_pinned > 0 and old_id not in (None, variant_id)
            if keep and old is not None and old_id is not None:
                # keep it warm among the pinned few: a switch back (or the next preload)
                # takes it from there instead of loading it again; a reload drops it
                to_close = self._cache_recent(old_id, old)
            else:
                to_close = [e for e in [self._retire(old)] if e is not None]
            self.swaps += 1
        self.last_swap_ms = (time.perf_counter() - started) * 1e3
        self.last_swap_preloaded = preloaded
        for stale in to_close:
            stale.close()
        log.info("active engine is now %s (swap %.2f ms)", variant_id, self.last_swap_ms)

    def _load(self, variant_id: str) -> Engine:
        """The loader's engine; any failure (MemoryError included) marks the variant
        unhealthy and is raised as an EngineError that says why and what to do."""
        try:
            return self._loader(variant_id)
        except EdgeServiceError as exc:
            error = EngineError(exc.message)
            cause: BaseException = exc
        except MemoryError as exc:
            error = EngineError(
                f"out of memory loading {variant_id}: free memory on the board, keep fewer "
                "engines on standby (EDGE_PRELOAD_MEMORY_MB) or serve a smaller variant"
            )
            cause = exc
        except Exception as exc:  # noqa: BLE001 - a backend's own error must not escape
            error = EngineError(f"loading {variant_id} failed: {type(exc).__name__}: {exc}")
            cause = exc
        self._unhealthy[variant_id] = (error.message, self._clock())
        log.warning("engine %s failed to load; marked unhealthy: %s", variant_id, error.message)
        raise error from cause

    def _cache_recent(self, variant_id: str, engine: Engine) -> list[Engine]:
        """Under the lock: put ``engine`` in the pinned LRU; the evicted engines to close."""
        self._pinned[variant_id] = engine
        self._pinned.move_to_end(variant_id)
        evicted = []
        while len(self._pinned) > max(self._max_pinned, 1):
            _, lru = self._pinned.popitem(last=False)
            evicted.append(lru)
        return [e for e in map(self._retire, evicted) if e is not None]

    def _retire(self, old: Engine | None) -> Engine | None:
        """Under the lock: the engine to close now, or None if leases still hold it (it
        closes when the last one ends)."""
        if old is None:
            return None
        if self._leases.get(id(old), 0) == 0:
            self._leases.pop(id(old), None)
            return old
        self._retired[id(old)] = old
        return None

    @contextmanager
    def lease(self, variant_id: str | None = None) -> Iterator[tuple[str, Engine]]:
        """Borrow an engine (and its variant id) for one request: the active one, or with
        ``variant_id`` that variant's (loaded on demand into the pinned cache)."""
        engine, vid = self._take(variant_id)
        try:
            yield vid, engine
        finally:
            with self._lock:
                self._leases[id(engine)] -= 1
                drained = id(engine) in self._retired and self._leases[id(engine)] == 0
                if drained:
                    self._retired.pop(id(engine))
                    self._leases.pop(id(engine))
            if drained:
                engine.close()

    def _take(self, variant_id: str | None) -> tuple[Engine, str]:
        """Find (or load) the engine and count a lease on it."""
        with self._lock:
            found = self._find(variant_id)
            if found is not None:
                return found
        with self._swap_lock:  # load a pinned variant once, however many ask at once
            with self._lock:
                found = self._find(variant_id)
                if found is not None:
                    return found
            assert variant_id is not None  # the active engine is always found
            engine = self._load_pinned(variant_id)
            with self._lock:
                self._leases.setdefault(id(engine), 0)
                to_close = self._cache_recent(variant_id, engine)
                self._leases[id(engine)] += 1
            for old in to_close:
                old.close()
            return engine, variant_id

    def _load_pinned(self, variant_id: str) -> Engine:
        """Load a variant a request named; a 503 that says why when it cannot be."""
        why = self.unhealthy_reason(variant_id)
        if why is None:
            try:
                return self._load(variant_id)
            except EngineError as exc:
                why = exc.message
        raise NotReadyError(
            f"variant {variant_id} is unhealthy: {why}. The other variants still serve "
            "(leave the variant out to let the controller choose)"
        )

    def _find(self, variant_id: str | None) -> tuple[Engine, str] | None:
        """Under the lock: a loaded engine for the request, with its lease counted."""
        if variant_id is None or variant_id == self._active_id:
            engine, vid = self._active, self._active_id
            if engine is None or vid is None:
                raise NotReadyError("no engine is loaded yet; retry when /v2/health/ready is 200")
        elif variant_id in self._standby:
            engine, vid = self._standby[variant_id], variant_id
        elif variant_id in self._pinned:
            self._pinned.move_to_end(variant_id)
            engine, vid = self._pinned[variant_id], variant_id
        else:
            return None
        self._leases[id(engine)] = self._leases.get(id(engine), 0) + 1
        return engine, vid

    def close(self) -> None:
        """Close every engine the pool holds."""
        with self._lock:
            engines = [
                e
                for e in (
                    self._active,
                    *self._retired.values(),
                    *self._standby.values(),
                    *self._pinned.values(),
                )
                if e is not None
            ]
            self._active, self._active_id = None, None
            self._retired.clear()
            self._standby.clear()
            self._pinned.clear()
            self._leases.clear()
        for engine in engines:
            engine.close()
