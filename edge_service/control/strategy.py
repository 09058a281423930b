"""Strategies the adaptation loop can follow: the pressure rule (here), or the budget
policy over predicted latencies (`edge_service.control.budget_strategy`).

Both answer the same questions for the loop: what to serve in this context, what is the
default when the board cannot be read, what latency a variant is expected to have, and
which variant to measure next. The budget strategy learns from observed engine times (the
predictor's learner) and explores: before a voluntary move to another variant it has it
measured by shadow runs on a standby engine (step-up), while a violation still moves at
once (step-down).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from edge_service.control.decision import Decision, most_accurate
from edge_service.control.evidence import Verdict
from edge_service.control.predictor import Estimate
from edge_service.control.pressure_rule import Candidate, PressureRule, decide, latency_of
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

    def observe(self, variant_id: str, observed_ms: float, *, learn: bool = True) -> bool:
        """One observed engine time of ``variant_id`` (may be ignored); True when it calls
        for a decision now (the served variant broke the budget beyond doubt). ``learn``
        False: the call ran while the server loaded or swapped engines, so it says how the
        request was served (the SLO) but not what the board costs (no latency learning)."""
        ...

    def probe_candidate(self, exclude: frozenset[str] = frozenset()) -> str | None:
        """A variant to measure by shadow runs before moving to it, or None."""
        ...

    def shadow(self, variant_id: str, times_ms: Sequence[float]) -> None:
        """The engine times shadow runs of ``variant_id`` measured just now."""
        ...

    def estimate_of(self, variant_id: str) -> Estimate | None:
        """The last prediction for ``variant_id`` (None when this strategy has none)."""
        ...

    def set_measuring(self, on: bool) -> None:
        """Whether shadow runs can measure variants now (the loop has a prober); without
        them a voluntary move trusts the prediction."""
        ...

    def new_regime(self) -> None:
        """The board changed under the same power mode (a competitor came or went): forget
        what described the board as it was (holds, backoff, recent stalls)."""
        ...

    def served_slo(self) -> Verdict | None:
        """The served variant judged on its own recent calls against the latency budget
        (`edge_service.control.evidence.Verdict`), or None (too few, or no budget rule)."""
        ...


class PressureStrategy:
    """Most accurate unless CPU or memory pressure is high, then the fastest."""

    name = "pressure"

    def __init__(self, candidates: list[Candidate], rule: PressureRule) -> None:
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
        return around([c.variant_id for c in order], variant_id)

    def default(self) -> str:
        return most_accurate(self._candidates.values(), latency_of).variant_id

    def predicted_ms(self, variant_id: str) -> float | None:
        c = self._candidates.get(variant_id)
        return c.latency_ms if c else None

    def observe(self, variant_id: str, observed_ms: float, *, learn: bool = True) -> bool:
        """The pressure rule does not learn."""
        return False

    def probe_candidate(self, exclude: frozenset[str] = frozenset()) -> str | None:
        """The pressure rule does not measure before moving."""
        return None

    def shadow(self, variant_id: str, times_ms: Sequence[float]) -> None:
        """The pressure rule does not learn."""

    def estimate_of(self, variant_id: str) -> Estimate | None:
        """The pressure rule predicts nothing beyond the profile (`predicted_ms`)."""
        return None

    def set_measuring(self, on: bool) -> None:
        """The pressure rule does not measure before moving."""

    def new_regime(self) -> None:
        """The pressure rule keeps no state about the board."""

    def served_slo(self) -> Verdict | None:
        """The pressure rule has no latency budget to judge the served calls against."""
        return None


def around(order: list[str], variant_id: str) -> list[str]:
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
