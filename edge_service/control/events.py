"""Adaptation events: what changed, when and why, kept in a bounded ring buffer.

Besides variant switches (``kind="adaptation"``) the log records what an operator reading
the event stream should know about the board: the monitor failing over to another source
or losing the board altogether (``kind="monitor"``), and power mode switches, failed ones
included (``kind="power_mode"``), a new catalog taken while serving (``kind="catalog"``),
engines reloaded at fewer threads while other processes hold the cores, or back at the
mode's count (``kind="threads"``), and a CPU competitor that came or went, after which the
controller forgets its holds and recent stalls (``kind="contention"``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)
EventKind = Literal["adaptation", "monitor", "power_mode", "catalog", "threads", "contention"]


@dataclass(frozen=True, kw_only=True)
class AdaptationEvent:
    """One decision that changed (or failed to change) the served variant, or (``kind``
    ``monitor`` / ``power_mode``) a change of the board's reading, ``to_variant`` then
    being the variant served through it."""

    t: float
    from_variant: str | None
    to_variant: str
    reason: str
    context: dict[str, Any] = field(default_factory=dict)
    predicted_latency_ms: float | None = None
    observed_latency_ms: float | None = None
    prediction: dict[str, Any] | None = None  # how the target's latency was predicted
    swap_ms: float | None = None  # how long the swap took (None: it failed)
    preloaded: bool | None = None  # whether the new engine was already loaded
    error: str | None = None
    kind: EventKind = "adaptation"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def note(
        cls, kind: EventKind, reason: str, active: str | None, error: str | None = None
    ) -> AdaptationEvent:
        """A board event (``monitor``, ``power_mode``): the served variant stays ``active``."""
        return cls(
            t=time.time(),
            from_variant=active,
            to_variant=active or "",
            reason=reason,
            error=error,
            kind=kind,
        )


class EventLog:
    """Thread-safe ring buffer of the last ``maxlen`` events."""

    def __init__(self, maxlen: int = 256) -> None:
        self._events: deque[AdaptationEvent] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._total = 0
        self._listeners: list[Callable[[AdaptationEvent], None]] = []

    def listen(self, callback: Callable[[AdaptationEvent], None]) -> None:
        """Call ``callback(event)`` on every append (from the appending thread)."""
        self._listeners.append(callback)

    def append(self, event: AdaptationEvent) -> None:
        with self._lock:
            self._events.append(event)
            self._total += 1
        for callback in self._listeners:
            try:
                callback(event)
            except Exception:  # a listener must never break the loop that appends
                log.exception("event listener failed")

    def recent(self, n: int | None = None) -> list[AdaptationEvent]:
        """The last ``n`` events (all kept ones if None), oldest first."""
        with self._lock:
            items = list(self._events)
        return items if n is None else items[-n:] if n > 0 else []

    @property
    def total(self) -> int:
        """Events ever appended (including ones the ring has dropped)."""
        return self._total
