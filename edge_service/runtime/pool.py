"""The engine pool: one active engine, swapped atomically, the old one drained.

A request takes a *lease* on whatever engine is active when it starts and keeps it to the
end, so a swap never pulls an engine from under a running request; the old engine is
closed when its last lease ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from edge_service.errors import NotReadyError
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

    @property
    def active_id(self) -> str | None:
        """The variant now served, or None before the first activation."""
        return self._active_id

    @property
    def ready(self) -> bool:
        return self._active is not None

    def activate(self, variant_id: str) -> None:
        """Load ``variant_id`` and make it active; the old engine drains, then closes.

        If loading fails the old engine stays active and the error propagates.
        """
        with self._swap_lock:
            if variant_id == self._active_id:
                return
            engine = self._loader(variant_id)
            with self._lock:
                old = self._active
                self._active, self._active_id = engine, variant_id
                self._leases.setdefault(id(engine), 0)
                to_close = self._retire(old)
            if to_close is not None:
                to_close.close()
            log.info("active engine is now %s", variant_id)

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
            engines = [e for e in (self._active, *self._retired.values()) if e is not None]
            self._active, self._active_id = None, None
            self._retired.clear()
            self._leases.clear()
        for engine in engines:
            engine.close()
