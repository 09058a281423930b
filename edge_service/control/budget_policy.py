"""The budget policy, a pure function: (context, estimates, policy, state) -> Decision.

The rules, in order:

1. **Pins.** An operator pin for the Context's power mode (``default`` when the source
   reports none), else a pin for every mode (``"*"``), wins, whatever it costs. A pin
   naming no variant among the estimates (unknown, or rejected by the build's gate, which
   the predictor never estimates for choosing) is ignored, and the reason says so.
2. **Feasibility.** An estimate is feasible when its p99 is within the latency budget, its
   memory within the memory budget and the memory available (plus its own, for the engine
   already loaded), its power within the maximum, and its accuracy at least the minimum.
   Unknown memory and power pass (most profiles do not measure them); unknown latency (an
   unmeasured variant) and unknown accuracy fail a budget or minimum set on them, since
   the policy cannot promise what nobody measured.
3. **Objective.** Among the feasible: most accurate (ties to the lower p99), lowest p99, or
   least energy (unknown energy last; ties to the lower p99).
4. **Nothing feasible.** The fastest (lowest p50) is served with ``feasible=False``, and
   the reason counts which constraints failed; a current variant within 10% of the
   fastest stays (near-equal variants would otherwise swap on noise). The p50, not the
   p99: when nothing fits, the tails are what other processes' preemptions add to every
   variant alike, and the served variant's is observed while the others' is predicted,
   so ranking by p99 stepped "down" to a variant slower than the one served, then to the
   next one (four moves in 1.3 s under a CPU hog, each to a slower engine).
5. **Hysteresis.** A current variant that violates a constraint is left at once, for the
   best feasible one that leaves ``upgrade_margin`` of the budget free (else the best
   feasible). Any other
   move waits for ``cooldown_s`` since the last change, so near-ties cannot make engines
   flap, and a move to a slower variant (an upgrade) also needs its p99 to leave
   ``upgrade_margin`` of the latency budget free; if the best one does not, the best that
   does is taken, else the current one stays.

No I/O, no clock, no randomness: time comes in with the Context (``ctx.t``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# the policy's fields live in limits.py; re-exported, callers import them from here
from edge_service.control.decision import Decision, fastest
from edge_service.control.limits import ANY_MODE, Policy
from edge_service.control.predictor import Estimate
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.monitor.context import Context


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between calls: the served variant and when it changed."""

    current: str | None = None
    last_change_t: float | None = None


@dataclass(frozen=True)
class Violation:
    """One constraint an estimate breaks: its kind (``"latency budget"``, ...) and why."""

    kind: str
    text: str


def choose(
    ctx: Context, estimates: Sequence[Estimate], policy: Policy, state: PolicyState
) -> Decision:
    """Pick the variant to serve in ``ctx`` (rules in the module doc)."""
    if not estimates:
        raise ValueError("choose() needs at least one estimate; the catalog has no variants")
    by_id = {e.variant_id: e for e in estimates}
    broken = {e.variant_id: violations(e, ctx, policy, state.current) for e in estimates}
    current = by_id.get(state.current) if state.current is not None else None
    now_broken = tuple(v.text for v in broken[current.variant_id]) if current else ()
    mode = ctx.power_mode.name if ctx.power_mode is not None else DEFAULT_POWER_MODE
    pin = policy.pins.get(mode, policy.pins.get(ANY_MODE))
    if pin in by_id:
        return _pinned(by_id[pin], mode, broken, state, now_broken)
    note = (
        f"pin {pin!r} for power mode {mode!r} is not a known variant (or the build's gate "
        "rejected it), ignored; "
        if pin
        else ""
    )
    feasible = [e for e in estimates if not broken[e.variant_id]]
    if not feasible:
        pick, reason = _fastest_or_current(estimates, current, broken)
    else:
        pick, reason = _settle(ctx, feasible, policy, state, current, now_broken)
    return Decision(
        variant_id=pick.variant_id,
        reason=note + reason,
        feasible=bool(feasible),
        changed=pick.variant_id != state.current,
        violations=now_broken,
    )


def violations(
    e: Estimate, ctx: Context, policy: Policy, current: str | None = None
) -> list[Violation]:
    """The constraints ``e`` breaks in ``ctx``; ``current`` is the variant loaded now."""
    out = []
    budget = policy.latency_budget_ms
    if budget is not None and not e.p99_ms <= budget:
        p99 = "unmeasured" if math.isinf(e.p99_ms) else f"{e.p99_ms:.3g} ms"
        out.append(Violation("latency budget", f"p99 {p99} > budget {budget:g} ms"))
    memory = _memory_violation(e, ctx, policy, current)
    if memory is not None:
        out.append(memory)
    cap = policy.max_power_mw
    if cap is not None and e.power_mw is not None and e.power_mw > cap:
        out.append(Violation("max power", f"power {e.power_mw:.0f} mW > max {cap:g} mW"))
    floor = policy.min_accuracy
    if floor is not None and (e.accuracy is None or e.accuracy < floor):
        acc = "unknown" if e.accuracy is None else f"{e.accuracy:.4f}"
        out.append(Violation("min accuracy", f"accuracy {acc} < min {floor:g}"))
    return out


def memory_limit_mb(e: Estimate, ctx: Context, policy: Policy, current: str | None) -> float:
    """The memory ``e`` may use: the budget, and what is free (its own counts if loaded)."""
    own = e.memory_mb if e.variant_id == current and e.memory_mb is not None else 0.0
    free = ctx.mem_available_mb + own
    return free if policy.memory_budget_mb is None else min(policy.memory_budget_mb, free)


def _memory_violation(
    e: Estimate, ctx: Context, policy: Policy, current: str | None
) -> Violation | None:
    if e.memory_mb is None:
        return None
    limit = memory_limit_mb(e, ctx, policy, current)
    if e.memory_mb <= limit:
        return None
    what = "budget" if limit == policy.memory_budget_mb else "available"
    return Violation("memory", f"memory {e.memory_mb:.0f} MB > {limit:.0f} MB {what}")


def rank_key(e: Estimate, objective: str, prefer: str | None = None) -> tuple[Any, ...]:
    """Sort key, best first, for ``objective``; full ties go to ``prefer``, then by id."""
    accuracy = -e.accuracy if e.accuracy is not None else math.inf
    energy = e.energy_mj if e.energy_mj is not None else math.inf
    keys = {
        "accuracy": (accuracy, e.p99_ms),
        "latency": (e.p99_ms, accuracy),
        "energy": (energy, e.p99_ms, accuracy),
    }
    return (*keys[objective], e.variant_id != prefer, e.variant_id)


def best(estimates: Sequence[Estimate], objective: str, prefer: str | None = None) -> Estimate:
    """The best of ``estimates`` by ``objective``."""
    return min(estimates, key=lambda e: rank_key(e, objective, prefer))


def p99_of(e: Estimate) -> float:
    """What the budget policy ranks speed by among feasible variants: the predicted p99."""
    return e.p99_ms


def p50_of(e: Estimate) -> float:
    """What it ranks speed by when nothing is feasible: the variant's own cost, the p50."""
    return e.p50_ms


NEAR_FASTEST = 1.1  # with nothing feasible, a current within this of the fastest stays


def _fastest_or_current(
    estimates: Sequence[Estimate], current: Estimate | None, broken: Mapping[str, list[Violation]]
) -> tuple[Estimate, str]:
    """With nothing feasible: the fastest by p50 (module doc, rule 4), unless the current
    one is within 10% of it (near-equal fastest variants must not swap on every tick of
    noise)."""
    pick = fastest(estimates, p50_of)
    if current is not None and current.p50_ms <= pick.p50_ms * NEAR_FASTEST:
        return current, (
            f"{_failures(broken)} -> staying on {current.variant_id}, within "
            f"{NEAR_FASTEST - 1:.0%} of the fastest"
        )
    return pick, f"{_failures(broken)} -> serving the fastest, {pick.variant_id}"


def _pinned(
    pick: Estimate,
    mode: str,
    broken: Mapping[str, list[Violation]],
    state: PolicyState,
    now_broken: tuple[str, ...],
) -> Decision:
    problems = [v.text for v in broken[pick.variant_id]]
    reason = f"operator pin for power mode {mode!r}: {pick.variant_id}"
    if problems:
        reason += f" (it breaks the policy: {'; '.join(problems)})"
    return Decision(
        variant_id=pick.variant_id,
        reason=reason,
        feasible=not problems,
        changed=pick.variant_id != state.current,
        violations=now_broken,
        pinned=True,
    )


def _failures(broken: Mapping[str, list[Violation]]) -> str:
    """E.g. ``no variant meets the policy (latency budget: 3 of 3 fail; memory: 1 of 3 fail)``."""
    counts = Counter(kind for vs in broken.values() for kind in {v.kind for v in vs})
    parts = [f"{kind}: {n} of {len(broken)} fail" for kind, n in sorted(counts.items())]
    return f"no variant meets the policy ({'; '.join(parts)})"


def _settle(
    ctx: Context,
    feasible: Sequence[Estimate],
    policy: Policy,
    state: PolicyState,
    current: Estimate | None,
    now_broken: tuple[str, ...],
) -> tuple[Estimate, str]:
    """Apply hysteresis to the best feasible estimate: (pick, reason)."""
    top = best(feasible, policy.objective, prefer=state.current)
    by = f"best feasible by {policy.objective}"
    if current is None:
        was = "nothing served yet" if state.current is None else f"{state.current} is unknown"
        return top, f"{was} -> {by}, {top.variant_id}"
    if now_broken:
        return _step_down(feasible, policy, current, top, now_broken)
    if top.variant_id == current.variant_id:
        return current, f"{current.variant_id} is still the {by}"
    return _voluntary_move(ctx, feasible, policy, state, current, top)


def _step_down(
    feasible: Sequence[Estimate],
    policy: Policy,
    current: Estimate,
    top: Estimate,
    now_broken: tuple[str, ...],
) -> tuple[Estimate, str]:
    """Leave a variant that breaks the policy, for the best feasible one that also leaves
    the upgrade margin free when there is one: a step down lands where the next breath of
    contention does not force another step (one switch, not a walk down the ladder)."""
    safe = [e for e in feasible if _within_margin(e, policy)]
    pick = best(safe, policy.objective) if safe else top
    why = f"{current.variant_id} breaks {'; '.join(now_broken)} -> "
    if pick.variant_id == top.variant_id:
        return pick, why + f"best feasible by {policy.objective}, {pick.variant_id}"
    return pick, why + (
        f"the best that leaves {policy.upgrade_margin:.0%} of the budget free, {pick.variant_id}"
    )


def _within_margin(e: Estimate, policy: Policy) -> bool:
    budget = policy.latency_budget_ms
    return budget is None or e.p99_ms <= budget * (1.0 - policy.upgrade_margin)


def _voluntary_move(
    ctx: Context,
    feasible: Sequence[Estimate],
    policy: Policy,
    state: PolicyState,
    current: Estimate,
    top: Estimate,
) -> tuple[Estimate, str]:
    """A move no violation forces: after the cooldown, and slower only with the margin."""
    by = f"best feasible by {policy.objective}"
    if _cooling(ctx, policy, state):
        waited = ctx.t - (state.last_change_t or 0.0)
        return current, (
            f"staying on {current.variant_id}: {top.variant_id} is the {by} but the last "
            f"change was {waited:.1f} s ago (cooldown {policy.cooldown_s:g} s)"
        )
    movable = [e for e in feasible if _keeps_margin(e, current, policy)]
    pick = best(movable, policy.objective, prefer=current.variant_id)
    if pick.variant_id == current.variant_id:
        return current, (
            f"staying on {current.variant_id}: {top.variant_id} is the {by} but slower, and "
            f"its p99 {top.p99_ms:.3g} ms leaves less than {policy.upgrade_margin:.0%} of "
            f"the {policy.latency_budget_ms} ms budget free"
        )
    if pick.variant_id == top.variant_id:
        return pick, f"{by} -> {pick.variant_id}"
    return pick, (
        f"{top.variant_id} is the {by} but leaves too little budget margin -> the best that "
        f"leaves {policy.upgrade_margin:.0%} free, {pick.variant_id}"
    )


def _cooling(ctx: Context, policy: Policy, state: PolicyState) -> bool:
    """True inside the cooldown after the last change (a clock step back counts as inside)."""
    if state.last_change_t is None:
        return False
    return ctx.t - state.last_change_t < policy.cooldown_s


def _keeps_margin(e: Estimate, current: Estimate, policy: Policy) -> bool:
    """A move to ``e`` is allowed by the margin: not slower, or leaving the margin free."""
    budget = policy.latency_budget_ms
    if e.p99_ms <= current.p99_ms or budget is None:
        return True
    return e.p99_ms <= budget * (1.0 - policy.upgrade_margin)
