"""The control side a server is built from: the operator's policy as the settings give it,
the strategy that follows it, the pressure rule's view of the catalog, and what an engine
costs in memory.

Kept apart from the server so the choice of strategy is one function the server, the
tests and a simulator can all call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge_service.config import Settings
from edge_service.control.budget_strategy import BudgetStrategy, Exploration
from edge_service.control.learner import LatencyLearner
from edge_service.control.limits import Policy
from edge_service.control.predictor import Predictor, controller_targets
from edge_service.control.pressure_rule import Candidate, PressureRule
from edge_service.control.strategy import PressureStrategy, Strategy
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.repository import Catalog, Variant


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
    rule = PressureRule(
        cpu_high=settings.cpu_pressure_high,
        mem_high=settings.mem_pressure_high,
        upgrade_cooldown_s=policy.cooldown_s,
    )
    return PressureStrategy(candidates(catalog, device, DEFAULT_POWER_MODE), rule)


def candidates(catalog: Catalog, device: str, power_mode: str) -> list[Candidate]:
    """The policy's view of the catalog on this device: its controller targets (the
    variants the build's gate left servable; `controller_targets`).

    A family built from the user's ONNX files without evaluation frames has no measured
    accuracy; its networks are then ranked by the size of their FP32 artifact times their
    input area (a bigger network, or the same one at a larger input, is taken as more
    accurate), a proxy kept below any measured accuracy.
    """
    work = {
        v.variant_spec.family_key: v.artifact.bytes * v.variant_spec.input_size**2
        for v in catalog.variants
        if v.precision == "fp32"
    }
    largest = max(work.values(), default=1) or 1
    out = []
    for v in controller_targets(catalog, device):
        profile = v.profile_for(device, power_mode)
        if v.accuracy is not None:
            accuracy = v.accuracy.value
        else:
            spec = v.variant_spec
            size = work.get(spec.family_key, v.artifact.bytes * spec.input_size**2)
            accuracy = -1.0 + size / largest / 2  # in [-1, -0.5]: below any measured score
        out.append(
            Candidate(
                variant_id=v.id,
                accuracy=accuracy,
                latency_ms=profile.latency_ms(1) if profile else None,
            )
        )
    return out


@dataclass
class EngineMemory:
    """What loading each variant costs in memory (`engine_memory_mb`), by the catalog
    served now: the server replaces ``catalog`` when it reloads one."""

    catalog: Catalog
    measured_mb: Callable[[str], float | None]  # the engine pool's measurement

    def __call__(self, variant_id: str) -> float | None:
        variant = self.catalog.variant(variant_id)
        return engine_memory_mb(variant, self.measured_mb(variant_id))


def engine_memory_mb(variant: Variant, measured_mb: float | None) -> float | None:
    """What loading ``variant`` costs in memory: its profiled peak, else what loading it
    added to this process (``measured_mb``, from the engine pool), else None (unknown:
    the preloader loads it to find out)."""
    profiled = [
        p.memory_mb
        for modes in variant.profiles.values()
        for p in modes.values()
        if p.memory_mb is not None
    ]
    return max(profiled) if profiled else measured_mb


def shadow_runs_are_safe(threads: int, backends: Iterable[str]) -> bool:
    """Whether measuring a standby engine (a shadow run) leaves the served one alone.

    An ONNX Runtime CPU engine with more than one intra-op thread keeps its worker threads
    spinning after a call, and a second such engine run between served calls competes
    with the served engine's threads for the cores: measured on 2 cores, 12-16% of the
    served calls went over a budget that 0.3% went over without the shadow runs (and none
    did with one thread per engine). So shadow runs are made only where every engine runs
    one intra-op thread (``threads``: the engines' count, 0 for the runtime's choice, which
    is every core), or where no engine runs on ONNX Runtime's CPU threads (TensorRT).
    """
    if threads == 1:
        return True
    return all(backend == "tensorrt" for backend in backends)
