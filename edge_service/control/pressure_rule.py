"""The pressure rule, a pure function: (context, candidates, rule, state) -> Decision.

The simplest policy, for a family without a latency budget: serve the most accurate
variant unless the CPU or memory is under pressure, then the fastest. Moving to a *less*
constrained choice waits for a cooldown, so a load hovering at the threshold does not
make engines flap. No I/O, no clock: time comes in with the Context.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_service.control.decision import Decision, fastest, most_accurate
from edge_service.monitor.context import Context


@dataclass(frozen=True)
class Candidate:
    """What the policy knows of one variant."""

    variant_id: str
    accuracy: float
    latency_ms: float | None  # batch-1 p50 on this device; None if never measured


@dataclass(frozen=True, kw_only=True)
class PressureRule:
    """When the board counts as under pressure, and how long an upgrade waits."""

    cpu_high: float = 0.85
    mem_high: float = 0.90
    upgrade_cooldown_s: float = 5.0


def pressure_reasons(ctx: Context, rule: PressureRule) -> list[str]:
    """Why the board counts as under pressure (empty when it does not)."""
    reasons = []
    if ctx.cpu_load >= rule.cpu_high:
        reasons.append(f"cpu load {ctx.cpu_load:.2f} >= {rule.cpu_high:.2f}")
    if ctx.mem_pressure >= rule.mem_high:
        reasons.append(f"memory pressure {ctx.mem_pressure:.2f} >= {rule.mem_high:.2f}")
    return reasons


def latency_of(c: Candidate) -> float | None:
    """What the pressure rule ranks by: the profile's batch-1 p50."""
    return c.latency_ms


def decide(
    ctx: Context,
    candidates: list[Candidate],
    rule: PressureRule,
    current: str | None,
    last_change_t: float | None = None,
) -> Decision:
    """Pick the variant to serve in ``ctx``; ``current`` is the one served now."""
    if not candidates:
        raise ValueError("decide() needs at least one candidate")
    reasons = pressure_reasons(ctx, rule)
    rank = fastest if reasons else most_accurate
    pick = rank(candidates, latency_of)
    why = ("; ".join(reasons) + " -> fastest") if reasons else "no pressure -> most accurate"
    known = {c.variant_id for c in candidates}
    if current in known and pick.variant_id != current and not reasons:
        cooling = last_change_t is not None and ctx.t - last_change_t < rule.upgrade_cooldown_s
        if cooling:
            return Decision(
                variant_id=str(current), reason=f"{why}, but cooling down", changed=False
            )
    return Decision(
        variant_id=pick.variant_id,
        reason=why,
        feasible=not reasons,
        changed=pick.variant_id != current,
    )
