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


BACKOFF_MAX_S = 60.0


class BudgetStrategy:
    """The budget policy (latency, memory, power, accuracy) over the predictor's estimates,
    corrected online by the engine times the server observes.

    Backoff: a variant the policy had to leave because it broke a constraint is not taken
    back by a voluntary move (an upgrade) for a while: twice the cooldown the first time,
    doubling each time it is left again (at most a minute), so near the budget the server
    does not oscillate between a variant that just fits on paper and one that really fits.
    A variant that then serves a whole backoff period without breaking anything is
    forgiven. A power-mode change clears every hold (the board is a different one now)."""

    name = "budget"

    def __init__(self, predictor: Predictor, policy: Policy) -> None:
        self._predictor, self._policy = predictor, policy
        self._lock = threading.Lock()
        self._last: dict[str, Estimate] = {}
        self._backoff_s: dict[str, float] = {}  # variant -> its current backoff period
        self._held_until: dict[str, float] = {}  # variant -> no voluntary move to it before
        self._since: tuple[str, float] | None = None  # (current variant, when it came)
        self._mode: str | None = None  # the power mode the holds were earned in

    def decide(
        self,
        ctx: Context,
        current: str | None,
        last_change_t: float | None,
        exclude: frozenset[str] = frozenset(),
    ) -> Decision:
        # the gate's targets, plus what the operator pinned (a dominated variant may be)
        estimates = self._predictor.estimates(ctx, also=frozenset(self._policy.pins.values()))
        with self._lock:
            self._last = {e.variant_id: e for e in estimates}
        usable = [e for e in estimates if e.variant_id not in exclude] or estimates
        state = PolicyState(current, last_change_t)
        choice = choose(ctx, usable, self._policy, state)
        mode = ctx.power_mode.name if ctx.power_mode is not None else None
        if mode != self._mode:  # a new power mode is a new situation: no old holds
            self._mode = mode
            self._held_until.clear()
            self._backoff_s.clear()
        held = self._held(ctx.t, current)
        if choice.changed and not choice.violations and choice.variant_id in held:
            # a voluntary move back to a variant recently left on a violation: wait
            kept = [e for e in usable if e.variant_id not in held]
            if kept:
                choice = choose(ctx, kept, self._policy, state)
        self._account(ctx.t, current, choice.variant_id, bool(choice.violations))
        return Decision(
            variant_id=choice.variant_id,
            reason=choice.reason,
            constrained=not choice.feasible,
            changed=choice.changed,
        )

    def _held(self, now: float, current: str | None) -> set[str]:
        return {v for v, until in self._held_until.items() if until > now and v != current}

    def _account(self, now: float, current: str | None, chosen: str, forced: bool) -> None:
        """Update the backoff: leaving ``current`` on a violation holds it off; serving a
        variant for its whole backoff period without a violation forgives it."""
        if current is not None and chosen != current and forced:
            period = min(
                BACKOFF_MAX_S,
                max(2 * self._policy.cooldown_s, 2 * self._backoff_s.get(current, 0.0), 1.0),
            )
            self._backoff_s[current] = period
            self._held_until[current] = now + period
        if chosen != (self._since[0] if self._since else None):
            self._since = (chosen, now)
        elif self._since is not None and now - self._since[1] >= self._backoff_s.get(chosen, 0):
            self._backoff_s.pop(chosen, None)  # it has served a whole period: forgiven

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
