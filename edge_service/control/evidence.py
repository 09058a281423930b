"""What the served calls themselves prove about the variant being served.

A prediction needs dozens of samples to see a tail; a few served calls can already prove
that the served variant breaks a p99 budget. Two rules, each about as unlikely as one in
10^4 windows for a variant that meets its p99 (none fired in ~17,000 windows of calls of
variants measured at most 1% over, while they fired in 10-50% of the windows of variants
3% over or more, in the oracle sweeps of bench/served_learning.py):

- ``OVER_STREAK`` calls in a row over the budget (a step: a competitor arrived, the mode
  slowed);
- ``OVER_IN_WINDOW`` of the last ``OVER_WINDOW`` calls over the budget (a competitor that
  preempts one call in ten: no two in a row, but far more than 1%).

`ServedRecord` keeps the last calls of the variant served now and says when they prove a
violation; the budget strategy steps down on that at once, whatever its estimate says.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

OVER_STREAK = 2
OVER_WINDOW = 20
OVER_IN_WINDOW = 3
EVIDENCE_STALE_S = 5.0  # calls older than this prove nothing about now


@dataclass(frozen=True)
class Evidence:
    """Served calls over the budget that prove a violation: their engine times (ms) and
    the rule they met, as the switch event's reason says it."""

    times_ms: tuple[float, ...]
    rule: str

    def describe(self) -> str:
        slow = ", ".join(f"{ms:.3g}" for ms in self.times_ms)
        return f"{self.rule} ({slow} ms)"


class ServedRecord:
    """The last served calls of one variant (the one served now); not thread-safe (the
    budget strategy holds its lock around it)."""

    def __init__(self) -> None:
        self._variant: str | None = None
        self._calls: deque[tuple[float, float, bool]] = deque(maxlen=OVER_WINDOW)

    def add(self, variant_id: str, t: float, ms: float, over: bool) -> bool:
        """Record one served call; True when it completes evidence (decide now)."""
        if variant_id != self._variant:
            self._variant = variant_id
            self._calls.clear()
        self._calls.append((t, ms, over))
        return over and self._evidence() is not None

    def take(self, variant_id: str | None, now: float) -> Evidence | None:
        """The evidence against ``variant_id`` if the recent calls hold some, once: the
        record starts afresh, so the next decision needs new calls."""
        if variant_id is None or variant_id != self._variant or not self._calls:
            return None
        if now - self._calls[-1][0] > EVIDENCE_STALE_S:
            return None
        found = self._evidence()
        if found is not None:
            self._calls.clear()
        return found

    def clear(self) -> None:
        self._variant = None
        self._calls.clear()

    def _evidence(self) -> Evidence | None:
        calls = list(self._calls)
        last = calls[-OVER_STREAK:]
        if len(last) == OVER_STREAK and all(over for _, _, over in last):
            rule = f"{OVER_STREAK} served calls in a row over the budget"
            return Evidence(tuple(ms for _, ms, _ in last), rule)
        over = [ms for _, ms, o in calls if o]
        if len(over) >= OVER_IN_WINDOW:
            rule = f"{len(over)} of the last {len(calls)} served calls over the budget"
            return Evidence(tuple(over), rule)
        return None
