"""Replay a Context trace through the budget policy and through baselines, on profiles only.

For every context of the trace each strategy picks a variant; its predicted p99 (from the
:class:`~edge_service.control.predictor.Predictor`) is compared with the latency budget.
Strategies:

- ``policy``: :func:`edge_service.control.budget_policy.choose` with its hysteresis and state;
- ``static-largest``: always the most accurate variant;
- ``static-smallest``: always the fastest (lowest p99 in the first context);
- ``oracle``: in each context the best feasible variant, with no hysteresis and no switch
  cost (an upper bound on what any policy could do with the same predictions).

The metrics are per strategy: SLO violation rate (share of contexts whose chosen variant's
predicted p99 exceeds the budget), mean accuracy, mean energy per inference (when
profiled; estimated off-Jetson, and marked so), and number of switches.

Only *predictable* contexts are scored: those where the chosen variant was profiled on the
predictor's device in the context's power mode. Elsewhere the prediction is an
extrapolation (or nothing), and scoring it would grade the guess, not the strategy: a
trace of another board replayed on this machine's profiles would score every strategy as
perfect. Each result says how much was left out (`edge_service.sim.report`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

from edge_service.control.budget_policy import PolicyState, best, choose, p99_of, violations
from edge_service.control.decision import fastest
from edge_service.control.limits import Policy
from edge_service.control.predictor import Estimate, Predictor
from edge_service.monitor.context import Context
from edge_service.repository import Catalog
from edge_service.sim.coverage import extrapolation, max_extrapolation, mode_gaps, profiled_devices
from edge_service.sim.report import SimulationReport, StrategyResult

__all__ = ["SimulationReport", "StrategyResult", "simulate"]

Strategy = Callable[[Context, list[Estimate], str | None], str]


def simulate(
    contexts: Sequence[Context], predictor: Predictor, policy: Policy, *, catalog: Catalog
) -> SimulationReport:
    """Every strategy over ``contexts`` (which must not be empty); ``catalog`` is the one
    ``predictor`` estimates from (to tell which of the trace's modes it has no profiles of)."""
    if not contexts:
        raise ValueError("simulate() needs at least one context")
    estimates = [predictor.estimates(ctx) for ctx in contexts]  # no observe(): fixed
    strategies = _strategies(estimates[0], policy)
    device = predictor.device
    gaps = mode_gaps(contexts, catalog, device, predictor.targets)
    return SimulationReport(
        device=device,
        contexts=len(contexts),
        unmeasured_context_rate=sum(not any(e.measured for e in ests) for ests in estimates)
        / len(contexts),
        unprofiled_modes=tuple(g for g in gaps if len(g.missing) == len(predictor.targets)),
        partly_profiled_modes=tuple(g for g in gaps if len(g.missing) < len(predictor.targets)),
        profiled_devices=tuple(profiled_devices(catalog)),
        strategies=tuple(
            _score(name, _replay(fn, contexts, estimates), policy)
            for name, fn in strategies.items()
        ),
    )


def _strategies(first: list[Estimate], policy: Policy) -> dict[str, Strategy]:
    """The four strategies; the static ones pick from the first context's estimates."""
    largest = best(first, "accuracy").variant_id
    smallest = fastest(first, p99_of).variant_id
    state = {"policy": PolicyState()}

    def run_policy(ctx: Context, ests: list[Estimate], current: str | None) -> str:
        choice = choose(ctx, ests, policy, state["policy"])
        if choice.changed or state["policy"].current is None:
            state["policy"] = PolicyState(choice.variant_id, ctx.t)
        return choice.variant_id

    def oracle(ctx: Context, ests: list[Estimate], current: str | None) -> str:
        ok = [e for e in ests if not violations(e, ctx, policy, None)]
        return best(ok, policy.objective).variant_id if ok else fastest(ests, p99_of).variant_id

    return {
        "policy": run_policy,
        "static-largest": lambda *_: largest,
        "static-smallest": lambda *_: smallest,
        "oracle": oracle,
    }


def _replay(
    strategy: Strategy, contexts: Sequence[Context], estimates: list[list[Estimate]]
) -> list[Estimate]:
    """The estimate of the variant ``strategy`` chose in each context."""
    chosen: list[Estimate] = []
    current: str | None = None
    for ctx, ests in zip(contexts, estimates, strict=True):
        current = strategy(ctx, ests, current)
        chosen.append(next(e for e in ests if e.variant_id == current))
    return chosen


def _score(name: str, chosen: list[Estimate], policy: Policy) -> StrategyResult:
    """The strategy's metrics over its predictable contexts (module doc)."""
    scored = [e for e in chosen if e.measured]
    budget = policy.latency_budget_ms
    over = sum(1 for e in scored if budget is not None and e.p99_ms > budget)
    with_energy = [e for e in scored if e.energy_mj is not None and math.isfinite(e.energy_mj)]
    timeline = tuple(e.variant_id for e in chosen)
    return StrategyResult(
        name=name,
        slo_violation_rate=over / len(scored) if scored else None,
        mean_accuracy=_mean([e.accuracy for e in scored if e.accuracy is not None]),
        mean_energy_mj=_mean([e.energy_mj for e in with_energy if e.energy_mj is not None]),
        energy_estimated=any(e.energy_estimated for e in with_energy),
        switches=sum(1 for a, b in pairwise(timeline) if a != b),
        unpredictable_rate=(len(chosen) - len(scored)) / len(chosen),
        scored_contexts=len(scored),
        max_extrapolation=max_extrapolation(extrapolation(e) for e in chosen),
        timeline=timeline,
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
