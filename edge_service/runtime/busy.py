"""When the server itself works on the engines' cores.

A load (an ONNX Runtime session takes ~10 ms of CPU for a small classifier, ~100 ms for a
roadside detector) or a swap is work the server does on the cores its engines serve on:
an engine call that overlaps one runs slower than the board makes it. `OwnWork.disturbed`
says whether a call that started at a given time did (or ran within ``SETTLE_S`` after
one, while the new engine's threads wake), so the controller learns the board from the
other calls only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

SETTLE_S = 0.1  # after a load or swap, calls still run on cold threads and caches

__all__ = ["SETTLE_S", "OwnWork"]


class OwnWork:
    """Counts the loads and swaps under way and when the last one ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0
        self._end = -float("inf")  # time.perf_counter() when the last one ended

    @contextmanager
    def working(self, own: bool = True) -> Iterator[None]:
        """Mark a load or swap for as long as the block runs (not ``own``: the idle
        loader's, which takes only what the served calls leave: marks nothing)."""
        if not own:
            yield
            return
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                self._end = time.perf_counter()

    def disturbed(self, started: float) -> bool:
        """True when a call that started at ``started`` (``time.perf_counter()``) overlapped
        a load or swap, or began within ``SETTLE_S`` after one ended."""
        with self._lock:
            return self._busy > 0 or started <= self._end + SETTLE_S
