"""Replay a Context trace through the budget policy and through baselines, on profiles only.

For every context of the trace each strategy picks a variant; its predicted p99 (from the
:class:`~edge_service.control.predictor.Predictor`) is compared with the latency budget.
Strategies:

- ``policy``: :func:`edge_service.control.budget.choose` with its hysteresis and state;
- ``static-largest``: always the most accurate variant;
- ``static-smallest``: always the fastest (lowest p99 in the first context);
- ``oracle``: in each context the best feasible variant, with no hysteresis and no switch
  cost (an upper bound on what any policy could do with the same predictions).

The metrics are per strategy: SLO violation rate (share of contexts whose chosen variant's
predicted p99 exceeds the budget), mean accuracy, mean energy per inference (when
profiled; estimated off-Jetson, and marked so), and number of switches.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from edge_service.control.budget import Policy, PolicyState, best, choose, fastest, violations
from edge_service.control.predictor import Estimate, Predictor
from edge_service.monitor.context import Context

Strategy = Callable[[Context, list[Estimate], str | None], str]


@dataclass(frozen=True)
class StrategyResult:
    """How one strategy did over the trace."""

    name: str
    slo_violation_rate: float
    mean_accuracy: float | None
    mean_energy_mj: float | None
    energy_estimated: bool
    switches: int
    timeline: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["timeline"] = list(self.timeline)
        return d


def simulate(
    contexts: Sequence[Context], predictor: Predictor, policy: Policy
) -> list[StrategyResult]:
    """Every strategy over ``contexts`` (which must not be empty)."""
    if not contexts:
        raise ValueError("simulate() needs at least one context")
    first = predictor.estimates(contexts[0])
    largest = best(first, "accuracy").variant_id
    smallest = fastest(first).variant_id
    state = {"policy": PolicyState()}

    def run_policy(ctx: Context, ests: list[Estimate], current: str | None) -> str:
        choice = choose(ctx, ests, policy, state["policy"])
        if choice.changed or state["policy"].current is None:
            state["policy"] = PolicyState(choice.variant_id, ctx.t)
        return choice.variant_id

    def oracle(ctx: Context, ests: list[Estimate], current: str | None) -> str:
        ok = [e for e in ests if not violations(e, ctx, policy, None)]
        return best(ok, policy.objective).variant_id if ok else fastest(ests).variant_id

    strategies: dict[str, Strategy] = {
        "policy": run_policy,
        "static-largest": lambda *_: largest,
        "static-smallest": lambda *_: smallest,
        "oracle": oracle,
    }
    return [_run(name, fn, contexts, predictor, policy) for name, fn in strategies.items()]


def _run(
    name: str, strategy: Strategy, contexts: Sequence[Context], predictor: Predictor, policy: Policy
) -> StrategyResult:
    timeline: list[str] = []
    over, accs, energies, estimated = 0, [], [], False
    current: str | None = None
    for ctx in contexts:
        ests = predictor.estimates(ctx)
        chosen = strategy(ctx, ests, current)
        e = next(x for x in ests if x.variant_id == chosen)
        budget = policy.latency_budget_ms
        over += int(budget is not None and e.p99_ms > budget)
        if e.accuracy is not None:
            accs.append(e.accuracy)
        if e.energy_mj is not None and math.isfinite(e.energy_mj):
            energies.append(e.energy_mj)
            estimated = estimated or e.energy_estimated
        timeline.append(chosen)
        current = chosen
    switches = sum(1 for a, b in itertools.pairwise(timeline) if a != b)
    return StrategyResult(
        name=name,
        slo_violation_rate=over / len(contexts),
        mean_accuracy=sum(accs) / len(accs) if accs else None,
        mean_energy_mj=sum(energies) / len(energies) if energies else None,
        energy_estimated=estimated,
        switches=switches,
        timeline=tuple(timeline),
    )
