"""The control side a server is built from: the operator's policy as the settings give it,
the strategy that follows it, and the pressure rule's view of the catalog.

Kept apart from the server so the choice of strategy is one function the server, the
tests and a simulator can all call.
"""

from __future__ import annotations

from edge_service.config import Settings
from edge_service.control.budget import Policy
from edge_service.control.budget_strategy import BudgetStrategy, Exploration
from edge_service.control.learner import LatencyLearner
from edge_service.control.policy import Candidate, SimpleRule
from edge_service.control.predictor import Predictor, controller_targets
from edge_service.control.strategy import PressureStrategy, Strategy
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.repository import Catalog


def policy_from(settings: Settings) -> Policy:
    """The operator's policy as the settings give it at start."""
    return Policy(
        latency_budget_ms=settings.latency_budget_ms,
        min_accuracy=settings.min_accuracy,
        memory_budget_mb=settings.memory_budget_mb,
        max_power_mw=settings.max_power_mw,
        cooldown_s=settings.cooldown_s,
    )


def strategy_for(
    policy: Policy,
    settings: Settings,
    catalog: Catalog,
    device: str,
    learner: LatencyLearner | None = None,
) -> Strategy:
    """The budget policy when the operator set any budget or pin, else the pressure rule.
    The budget policy learns into ``learner`` (kept by the service across policies) and
    measures before it moves when ``settings.explore``."""
    budgets = (
        policy.latency_budget_ms,
        policy.min_accuracy,
        policy.memory_budget_mb,
        policy.max_power_mw,
    )
    if policy.pins or any(b is not None for b in budgets) or policy.objective != "accuracy":
        predictor = Predictor(catalog, device, learner=learner)
        return BudgetStrategy(predictor, policy, Exploration(enabled=settings.explore))
    rule = SimpleRule(
        cpu_high=settings.cpu_pressure_high,
        mem_high=settings.mem_pressure_high,
        upgrade_cooldown_s=policy.cooldown_s,
    )
    return PressureStrategy(candidates(catalog, device, DEFAULT_POWER_MODE), rule)


def candidates(catalog: Catalog, device: str, power_mode: str) -> list[Candidate]:
    """The policy's view of the catalog on this device: its controller targets (the
    variants the build's gate left servable; `controller_targets`).

    A family built from the user's ONNX files has no measured accuracy; its networks are
    then ranked by the size of their FP32 artifact (bigger is taken as more accurate), a
    proxy kept below any measured accuracy.
    """
    fp32_bytes = {
        v.variant_spec.family_key: v.artifact.bytes
        for v in catalog.variants
        if v.precision == "fp32"
    }
    largest = max(fp32_bytes.values(), default=1) or 1
    out = []
    for v in controller_targets(catalog, device):
        profile = v.profile_for(device, power_mode)
        if v.accuracy is not None:
            accuracy = v.accuracy.top1
        else:
            size = fp32_bytes.get(v.variant_spec.family_key, v.artifact.bytes)
            accuracy = -1.0 + size / largest / 2  # in [-1, -0.5]: below any measured top-1
        out.append(
            Candidate(
                variant_id=v.id,
                accuracy=accuracy,
                latency_ms=profile.latency_ms(1) if profile else None,
            )
        )
    return out
