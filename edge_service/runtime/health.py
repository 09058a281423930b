"""Which variants failed to load, why, and when: a variant marked unhealthy is left alone by
the controller and refused to requests that name it, until the mark lapses
(``retry_s``: memory may have come free, the file may have been rebuilt) or is forgiven.

Thread-safe: the pool's loaders, the controller and request handlers all read and write
it, so it holds its own lock (never held while anything else is).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Health:
    """Unhealthy marks by variant: (why, when)."""

    def __init__(
        self, retry_s: float = 300.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._retry_s, self._clock = retry_s, clock
        self._lock = threading.Lock()
        self._marks: dict[str, tuple[str, float]] = {}

    def mark(self, variant_id: str, why: str) -> None:
        with self._lock:
            self._marks[variant_id] = (why, self._clock())

    def forgive(self, variant_id: str) -> None:
        """Let ``variant_id`` be tried again now."""
        with self._lock:
            self._marks.pop(variant_id, None)

    def reason(self, variant_id: str) -> str | None:
        """Why ``variant_id`` is unhealthy, or None when it is not (any longer)."""
        with self._lock:
            found = self._marks.get(variant_id)
        if found is None or self._clock() - found[1] >= self._retry_s:
            return None
        return found[0]

    def unhealthy(self) -> frozenset[str]:
        """The variants marked now (lapsed marks excluded)."""
        with self._lock:
            marked = list(self._marks)
        return frozenset(v for v in marked if self.reason(v) is not None)
