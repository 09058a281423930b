"""Who holds an engine: the lease counts of requests, and the engines retired while held.

A request leases an engine for its whole run, so an engine that leaves the pool (swapped
out, dropped from standby, evicted, replaced by a reload) is *retired* and closes when its
last lease ends, never under a running request.

`Leases` has no lock of its own: every method is called under the pool's lock
(`edge_service.runtime.pool.EnginePool`), which is the only owner of an instance.
"""

from __future__ import annotations

from edge_service.runtime.engine import Engine


class Leases:
    """Lease counts by engine identity, and the retired engines still leased."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._retired: dict[int, Engine] = {}

    def acquire(self, engine: Engine) -> None:
        """Count one more lease on ``engine``."""
        self._count[id(engine)] = self._count.get(id(engine), 0) + 1

    def release(self, engine: Engine) -> Engine | None:
        """Count one lease less; the engine to close now when it was retired and this was
        its last lease, else None."""
        key = id(engine)
        self._count[key] -= 1
        if key in self._retired and self._count[key] == 0:
            del self._count[key]
            return self._retired.pop(key)
        return None

    def retire(self, engine: Engine | None) -> Engine | None:
        """``engine`` leaves the pool: returned to close now when nobody leases it, else
        kept until its last lease ends (`release`) and None returned."""
        if engine is None:
            return None
        key = id(engine)
        if self._count.get(key, 0) == 0:
            self._count.pop(key, None)
            return engine
        self._retired[key] = engine
        return None

    def clear(self) -> list[Engine]:
        """Forget every lease; the retired engines (to close)."""
        retired = list(self._retired.values())
        self._retired.clear()
        self._count.clear()
        return retired
