"""The controller honours the build gate: rejected and dominated variants are never its
target, under the pressure rule or the budget policy; an operator pin may name a
dominated one."""

from __future__ import annotations

from typing import Any

import pytest
from support import NOW, ConstantEngine

from edge_service.control.budget_strategy import BudgetStrategy
from edge_service.control.events import EventLog
from edge_service.control.factory import candidates
from edge_service.control.limits import Policy
from edge_service.control.loop import AdaptationLoop
from edge_service.control.predictor import Predictor, controller_targets
from edge_service.control.pressure_rule import PressureRule
from edge_service.control.strategy import PressureStrategy
from edge_service.monitor.context import Context
from edge_service.monitor.replay import ReplaySource
from edge_service.repository import Catalog, parse_catalog
from edge_service.runtime.pool import EnginePool
from edge_service.variants import VariantSpec

DEVICE = "dev"
BASE = "base@fp32"
INT8 = "base@int8"  # rejected, yet on paper the fastest and the most accurate
DOMINATED = "dw-id@fp32"
SMALL = "dw-dw@fp32"  # the fastest servable


def _variant(
    stages: tuple[str, ...], precision: str, top1: float, ms: float, status: str = "servable"
) -> dict[str, Any]:
    spec = VariantSpec(stages, precision)
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "backend": "onnxruntime",
        "artifact": {"path": f"{spec.id}.onnx", "sha256": "0" * 64, "bytes": 1},
        "accuracy": {"top1": top1, "examples": 100},
        "profiles": {
            DEVICE: {
                "default": {
                    "backend": "onnxruntime",
                    "threads": 0,
                    "measured_at": NOW,
                    "latency": {"1": {"p50_ms": ms, "p99_ms": ms, "mean_ms": ms, "runs": 10}},
                }
            }
        },
        "status": status,
        "status_reason": None if status == "servable" else f"{status} by the test",
    }


def _catalog(*variants: dict[str, Any]) -> Catalog:
    return parse_catalog(
        {
            "schema_version": 1,
            "family": "fashion",
            "task": "classification",
            "labels": ["a", "b"],
            "input": {"shape": ["batch", 1, 28, 28], "mean": 0.5, "std": 0.5},
            "variants": list(variants),
        }
    )


GATED = _catalog(
    _variant(("id", "id"), "fp32", 0.90, 2.0),
    _variant(("id", "id"), "int8", 0.95, 0.5, "rejected"),
    _variant(("dw", "id"), "fp32", 0.85, 3.0, "dominated"),
    _variant(("dw", "dw"), "fp32", 0.80, 1.0),
)
CALM = Context(
    t=0.0, source="test", cpu_online=2, cpu_load=0.1, mem_available_mb=1e3, mem_total_mb=2e3
)
BUSY = Context(
    t=0.0, source="test", cpu_online=2, cpu_load=0.99, mem_available_mb=1e3, mem_total_mb=2e3
)


def test_controller_targets_are_the_servable_variants_in_catalog_order():
    assert [v.id for v in controller_targets(GATED, DEVICE)] == [BASE, SMALL]
    assert Predictor(GATED, DEVICE).targets == frozenset({BASE, SMALL})


def test_targets_fall_back_to_the_fastest_when_nothing_is_servable():
    held = _catalog(
        _variant(("id", "id"), "fp32", 0.90, 2.0, "dominated"),
        _variant(("dw", "dw"), "fp32", 0.80, 1.0, "dominated"),
    )
    assert [v.id for v in controller_targets(held, DEVICE)] == [SMALL]


def test_old_catalogs_without_a_status_have_every_variant_as_a_target():
    old = _catalog(
        _variant(("id", "id"), "fp32", 0.9, 2.0), _variant(("dw", "dw"), "fp32", 0.8, 1.0)
    )
    assert all(v.status == "servable" and v.status_reason is None for v in old.variants)
    assert len(controller_targets(old, DEVICE)) == 2


def test_pressure_candidates_leave_out_rejected_and_dominated_variants():
    ids = [c.variant_id for c in candidates(GATED, DEVICE, "default")]
    assert ids == [BASE, SMALL]
    pressure = PressureStrategy(candidates(GATED, DEVICE, "default"), PressureRule())
    assert pressure.decide(CALM, None, None).variant_id == BASE  # not the "more accurate" int8
    assert pressure.decide(BUSY, None, None).variant_id == SMALL  # not the "faster" int8


def test_predictor_estimates_only_targets_plus_pins_that_are_not_rejected():
    p = Predictor(GATED, DEVICE)
    assert [e.variant_id for e in p.estimates(CALM)] == [BASE, SMALL]
    also = {DOMINATED, INT8, "nope@fp32"}
    assert [e.variant_id for e in p.estimates(CALM, also=also)] == [BASE, DOMINATED, SMALL]
    assert p.estimate(INT8, CALM).p50_ms == 0.5  # still estimable on its own


@pytest.mark.parametrize(
    ("objective", "expected"), [("accuracy", BASE), ("latency", SMALL), ("energy", SMALL)]
)
def test_budget_policy_never_picks_the_rejected_variant_whatever_the_objective(objective, expected):
    strategy = BudgetStrategy(
        Predictor(GATED, DEVICE), Policy(latency_budget_ms=10.0, objective=objective)
    )
    assert strategy.decide(CALM, None, None).variant_id == expected
    assert strategy.default() in (BASE, SMALL)
    assert strategy.predicted_ms(INT8) is None


def test_budget_policy_serves_a_dominated_variant_an_operator_pinned():
    strategy = BudgetStrategy(Predictor(GATED, DEVICE), Policy(pins={"*": DOMINATED}))
    decision = strategy.decide(CALM, BASE, None)
    assert decision.variant_id == DOMINATED and "operator pin" in decision.reason


def test_budget_policy_ignores_a_pin_to_a_rejected_variant_that_slipped_in():
    # set_policy refuses such a pin; a catalog reloaded under an old pin must not serve it
    strategy = BudgetStrategy(Predictor(GATED, DEVICE), Policy(pins={"*": INT8}))
    decision = strategy.decide(CALM, None, None)
    assert decision.variant_id == BASE and "ignored" in decision.reason


def test_loop_never_loads_or_preloads_a_rejected_variant_when_it_runs():
    loaded: list[str] = []

    def load(vid: str) -> ConstantEngine:
        loaded.append(vid)
        return ConstantEngine(vid)

    strategy = BudgetStrategy(Predictor(GATED, DEVICE), Policy(latency_budget_ms=10.0))
    pool = EnginePool(load)
    loop = AdaptationLoop(
        source=ReplaySource([CALM], loop=True),
        pool=pool,
        strategy=strategy,
        events=EventLog(16),
        preload_memory_mb=1e6,  # room to preload every neighbour
        engine_memory_mb=lambda _vid: 1.0,
    )
    for _ in range(3):
        loop.tick()
    assert pool.active_id == BASE
    assert INT8 not in loaded and DOMINATED not in loaded
