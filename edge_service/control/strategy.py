"""Strategies the adaptation loop can follow: the foundation's pressure rule, or the budget
policy over predicted latencies.

Both answer the same three questions for the loop: what to serve in this context, what is
the default when the board cannot be read, and what latency a variant is expected to
have; the budget strategy also learns from observed engine times (the predictor's online
correction).
"""

from __future__ import annotations

import math
import threading
from typing import Protocol

from edge_service.control.budget import Policy, PolicyState, best, choose
from edge_service.control.policy import Candidate, Decision, SimpleRule, decide, most_accurate
from edge_service.control.predictor import Estimate, Predictor
from edge_service.monitor.context import Context


class Strategy(Protocol):
    """What the adaptation loop asks of a policy."""

    name: str

    def decide(
        self,
        ctx: Context,
        current: str | None,
        last_change_t: float | None,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        """The variant to serve in ``ctx``, never one of ``exclude`` (unhealthy ones)
        unless nothing else is left."""
        ...

    def neighbours(self, variant_id: str) -> list[str]:
        """Variants next to ``variant_id`` in expected latency, nearest first (what a
        switch is likeliest to need next)."""
        ...

    def default(self) -> str:
        """The variant to serve when the board cannot be read."""
        ...

    def predicted_ms(self, variant_id: str) -> float | None:
        """The latency expected of ``variant_id`` (last context), if known."""
        ...

    def observe(self, variant_id: str, observed_ms: float) -> None:
        """One observed engine time of ``variant_id`` (may be ignored)."""
        ...


class PressureStrategy:
    """Most accurate unless CPU or memory pressure is high, then the fastest."""

    name = "pressure"

    def __init__(self, candidates: list[Candidate], rule: SimpleRule) -> None:
        if not candidates:
            raise ValueError("the adaptation loop needs at least one candidate variant")
        self._candidates = {c.variant_id: c for c in candidates}
        self._rule = rule

    def decide(
        self,
        ctx: Context,
        current: str | None,
        last_change_t: float | None,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        pool = [c for c in self._candidates.values() if c.variant_id not in exclude]
        return decide(
            ctx, pool or list(self._candidates.values()), self._rule, current, last_change_t
        )

    def neighbours(self, variant_id: str) -> list[str]:
        order = sorted(
            self._candidates.values(),
            key=lambda c: c.latency_ms if c.latency_ms is not None else math.inf,
        )
        return _around([c.variant_id for c in order], variant_id)

    def default(self) -> str:
        return most_accurate(list(self._candidates.values())).variant_id

    def predicted_ms(self, variant_id: str) -> float | None:
        c = self._candidates.get(variant_id)
        return c.latency_ms if c else None

    def observe(self, variant_id: str, observed_ms: float) -> None:
        """The pressure rule does not learn."""


class BudgetStrategy:
    """The budget policy (latency, memory, power, accuracy) over the predictor's estimates,
    corrected online by the engine times the server observes."""

    name = "budget"

    def __init__(self, predictor: Predictor, policy: Policy) -> None:
        self._predictor, self._policy = predictor, policy
        self._lock = threading.Lock()
        self._last: dict[str, Estimate] = {}

    def decide(
        self,
        ctx: Context,
        current: str | None,
        last_change_t: float | None,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        estimates = self._predictor.estimates(ctx)
        with self._lock:
            self._last = {e.variant_id: e for e in estimates}
        usable = [e for e in estimates if e.variant_id not in exclude] or estimates
        choice = choose(ctx, usable, self._policy, PolicyState(current, last_change_t))
        return Decision(
            variant_id=choice.variant_id,
            reason=choice.reason,
            constrained=not choice.feasible,
            changed=choice.changed,
        )

    def neighbours(self, variant_id: str) -> list[str]:
        with self._lock:
            order = sorted(self._last.values(), key=lambda e: e.p50_ms)
        return _around([e.variant_id for e in order], variant_id)

    def default(self) -> str:
        ctx = Context(
            t=0.0, source="none", cpu_online=1, cpu_load=0.0, mem_available_mb=1.0, mem_total_mb=1.0
        )
        return best(self._predictor.estimates(ctx), self._policy.objective).variant_id

    def predicted_ms(self, variant_id: str) -> float | None:
        with self._lock:
            e = self._last.get(variant_id)
        return e.p50_ms if e is not None and math.isfinite(e.p50_ms) else None

    def observe(self, variant_id: str, observed_ms: float) -> None:
        """Feed the predictor's correction (against the uncorrected model, never the
        corrected figure, which would compound)."""
        with self._lock:
            e = self._last.get(variant_id)
        if e is not None and math.isfinite(e.model_p50_ms) and e.model_p50_ms > 0:
            self._predictor.observe(variant_id, observed_ms, e.model_p50_ms)


def _around(order: list[str], variant_id: str) -> list[str]:
    """The ids next to ``variant_id`` in ``order``, nearest first, alternating sides."""
    if variant_id not in order:
        return []
    i = order.index(variant_id)
    out = []
    for step in range(1, len(order)):
        for j in (i - step, i + step):
            if 0 <= j < len(order):
                out.append(order[j])
    return out
