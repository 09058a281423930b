"""The engine pool: one active engine, swapped atomically, the old one drained.

A request takes a *lease* on whatever engine is active when it starts and keeps it to the
end, so a swap never pulls an engine from under a running request; the old engine is
closed when its last lease ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from edge_service.errors import EdgeServiceError, NotReadyError
from edge_service.runtime.engine import Engine

log = logging.getLogger(__name__)


class EnginePool:
    """Holds the active engine; ``loader(variant_id)`` returns a loaded engine."""

    def __init__(self, loader: Callable[[str], Engine]) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._active: Engine | None = None
        self._active_id: str | None = None
        self._leases: dict[int, int] = {}
        self._retired: dict[int, Engine] = {}
        self._standby: dict[str, Engine] = {}  # preloaded, ready to swap in
        self._unhealthy: set[str] = set()
        self.last_swap_ms: float | None = None

    @property
    def unhealthy(self) -> frozenset[str]:
        """Variants whose engine failed to load (not tried again until ``forgive``)."""
        return frozenset(self._unhealthy)

    @property
    def standby(self) -> tuple[str, ...]:
        """Variants preloaded for a fast swap."""
        return tuple(self._standby)

    def forgive(self, variant_id: str) -> None:
        """Let a variant that failed to load be tried again."""
        self._unhealthy.discard(variant_id)

    def preload(self, variant_ids: list[str]) -> None:
        """Keep exactly these variants (bar the active one) loaded on standby; failures
        mark the variant unhealthy and are not raised (preloading is best effort)."""
        with self._swap_lock:
            wanted = [v for v in variant_ids if v != self._active_id and v not in self._unhealthy]
            for vid in [v for v in self._standby if v not in wanted]:
                self._standby.pop(vid).close()
            for vid in wanted:
                if vid not in self._standby:
                    try:
                        self._standby[vid] = self._loader(vid)
                    except EdgeServiceError as exc:
                        self._unhealthy.add(vid)
                        log.warning("preloading %s failed (%s); marked unhealthy", vid, exc.message)

    @property
    def active_id(self) -> str | None:
        """The variant now served, or None before the first activation."""
        return self._active_id

    @property
    def ready(self) -> bool:
        return self._active is not None

    def activate(self, variant_id: str) -> None:
        """Load ``variant_id`` and make it active; the old engine drains, then closes.

        A preloaded engine swaps in without loading. If loading fails the old engine stays
        active, the variant is marked unhealthy and the error propagates.
        """
        with self._swap_lock:
            if variant_id == self._active_id:
                return
            started = time.perf_counter()
            engine = self._standby.pop(variant_id, None)
            if engine is None:
                try:
                    engine = self._loader(variant_id)
                except EdgeServiceError:
                    self._unhealthy.add(variant_id)
                    raise
            with self._lock:
                old = self._active
                self._active, self._active_id = engine, variant_id
                self._leases.setdefault(id(engine), 0)
                to_close = self._retire(old)
            self.last_swap_ms = (time.perf_counter() - started) * 1e3
            if to_close is not None:
                to_close.close()
            log.info("active engine is now %s (swap %.2f ms)", variant_id, self.last_swap_ms)

    def _retire(self, old: Engine | None) -> Engine | None:
        """Under the lock: the old engine to close now, or None if leases still hold it."""
        if old is None:
            return None
        if self._leases.get(id(old), 0) == 0:
            self._leases.pop(id(old), None)
            return old
        self._retired[id(old)] = old
        return None

    @contextmanager
    def lease(self) -> Iterator[tuple[str, Engine]]:
        """Borrow the active engine (and its variant id) for one request."""
        with self._lock:
            engine, variant_id = self._active, self._active_id
            if engine is None or variant_id is None:
                raise NotReadyError("no engine is loaded yet; retry when /v2/health/ready is 200")
            self._leases[id(engine)] = self._leases.get(id(engine), 0) + 1
        try:
            yield variant_id, engine
        finally:
            with self._lock:
                self._leases[id(engine)] -= 1
                drained = id(engine) in self._retired and self._leases[id(engine)] == 0
                if drained:
                    self._retired.pop(id(engine))
                    self._leases.pop(id(engine))
            if drained:
                engine.close()

    def close(self) -> None:
        """Close the active engine (and any retired one still held)."""
        with self._lock:
            engines = [
                e
                for e in (self._active, *self._retired.values(), *self._standby.values())
                if e is not None
            ]
            self._active, self._active_id = None, None
            self._retired.clear()
            self._standby.clear()
            self._leases.clear()
        for engine in engines:
            engine.close()
