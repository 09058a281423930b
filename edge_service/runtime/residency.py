"""Which engines are loaded, and in what role.

- *active*: the one engine the controller serves;
- *standby*: preloaded around the active one, so a swap needs no load;
- *pinned*: a small LRU of engines loaded for requests that name another variant (and the
  last active ones, so a switch back needs no load).

It also keeps what loading each variant cost (the process's resident memory before and
after the load, and the time it took), so the preloader budgets with measured figures.

`Residency` has no lock of its own: every method is called under the pool's lock
(`edge_service.runtime.pool.EnginePool`), which is the only owner of an instance.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from edge_service.runtime.engine import Engine


class Residency:
    """The loaded engines by role (module doc)."""

    def __init__(self, max_pinned: int = 2) -> None:
        self.max_pinned = max_pinned
        self.active: Engine | None = None
        self.active_id: str | None = None
        self.standby: dict[str, Engine] = {}
        self.pinned: OrderedDict[str, Engine] = OrderedDict()
        self.load_mb: dict[str, float] = {}  # measured when loaded, the most seen
        self.load_ms: dict[str, float] = {}  # how long the last load took

    def find(self, variant_id: str | None) -> tuple[Engine, str] | None:
        """The loaded engine for a request (None: the active one), or None when that
        variant is not loaded; a pinned hit counts as its latest use."""
        if variant_id is None or variant_id == self.active_id:
            if self.active is None or self.active_id is None:
                return None
            return self.active, self.active_id
        if variant_id in self.standby:
            return self.standby[variant_id], variant_id
        if variant_id in self.pinned:
            self.pinned.move_to_end(variant_id)
            return self.pinned[variant_id], variant_id
        return None

    def take(self, variant_id: str) -> Engine | None:
        """Remove and return a loaded standby or pinned engine of ``variant_id``."""
        return self.standby.pop(variant_id, None) or self.pinned.pop(variant_id, None)

    def make_active(self, variant_id: str, engine: Engine) -> tuple[Engine | None, str | None]:
        """``engine`` is served now; the one it replaces, with its id."""
        old = self.active, self.active_id
        self.active, self.active_id = engine, variant_id
        return old

    def remember(self, variant_id: str, engine: Engine) -> list[Engine]:
        """Keep ``engine`` among the pinned few, as the latest used; the engines evicted."""
        self.pinned[variant_id] = engine
        self.pinned.move_to_end(variant_id)
        evicted = []
        while len(self.pinned) > max(self.max_pinned, 1):
            evicted.append(self.pinned.popitem(last=False)[1])
        return evicted

    def keep_standby(self, wanted: list[str]) -> list[Engine]:
        """Drop the standby engines not ``wanted``; the engines dropped."""
        return [self.standby.pop(v) for v in list(self.standby) if v not in wanted]

    def drop_standby_and_pinned(self, keep: Callable[[Engine], bool] | None = None) -> list[Engine]:
        """Drop the standby and pinned engines (those ``keep`` rejects); the engines dropped."""
        dropped = []
        for role in (self.standby, self.pinned):
            for vid, engine in list(role.items()):
                if keep is None or not keep(engine):
                    dropped.append(role.pop(vid))
        return dropped

    def clear(self) -> list[Engine]:
        """Forget every engine; those that were loaded."""
        engines = [e for e in (self.active, *self.drop_standby_and_pinned()) if e is not None]
        self.active, self.active_id = None, None
        return engines

    def loaded(self) -> tuple[str, ...]:
        active = (self.active_id,) if self.active_id is not None else ()
        return (*active, *self.standby, *self.pinned)
