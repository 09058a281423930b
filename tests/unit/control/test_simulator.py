"""The simulator: the budget policy against static baselines and an oracle, on profiles.

Contexts whose chosen variant has no profile on the device in that power mode are
unpredictable: counted, and left out of the scores (a user replayed another board's day on
this machine's profiles and got a perfect score for the policy).
"""

from __future__ import annotations

import json

import pytest
from support import PROFILED as CATALOG

from edge_service.control.limits import Policy
from edge_service.control.predictor import Predictor
from edge_service.errors import NotFoundError
from edge_service.monitor.context import Context, PowerMode
from edge_service.repository import Catalog, parse_catalog
from edge_service.sim.coverage import require_profiles
from edge_service.sim.replay import simulate
from edge_service.sim.report import ModeGap, SimulationReport, notes

MODE_IDS = {"MAXN": 0, "MIN": 2, "MODE_15W": 2}
BUDGET = Policy(latency_budget_ms=2.0, cooldown_s=2.0)


def _trace(modes: list[str]) -> list[Context]:
    return [
        Context(
            t=float(i),
            source="trace",
            cpu_online=2,
            cpu_load=0.1,
            mem_available_mb=1000,
            mem_total_mb=2000,
            power_mode=PowerMode(MODE_IDS[m], m),
        )
        for i, m in enumerate(modes)
    ]


def _catalog(layout: dict[str, list[str]], *, cores: int | None = None) -> Catalog:
    """CATALOG with each variant's profiles laid out as ``{device: [mode, ...]}``: a mode
    takes the variant's 'dev' profile of that name, else its MAXN one."""
    data = CATALOG.model_dump(mode="json")
    for variant in data["variants"]:
        dev = variant["profiles"]["dev"]
        variant["profiles"] = {
            device: {mode: {**dev.get(mode, dev["MAXN"]), "cores": cores} for mode in modes}
            for device, modes in layout.items()
        }
    return parse_catalog(data)


def _run(
    modes: list[str], catalog: Catalog = CATALOG, device: str = "dev", policy: Policy = BUDGET
) -> SimulationReport:
    return simulate(_trace(modes), Predictor(catalog, device), policy, catalog=catalog)


def test_policy_beats_static_baselines_when_power_mode_drops_mid_trace() -> None:
    report = _run(["MAXN"] * 10 + ["MIN"] * 10 + ["MAXN"] * 10)
    largest, smallest = report.strategy("static-largest"), report.strategy("static-smallest")
    assert largest.slo_violation_rate == pytest.approx(10 / 30)  # id is 3.6 ms p99 in MIN
    assert smallest.slo_violation_rate == 0 and smallest.mean_accuracy == pytest.approx(0.90)
    ours, oracle = report.strategy("policy"), report.strategy("oracle")
    assert ours.slo_violation_rate == 0  # downgrades at once
    assert ours.mean_accuracy is not None and smallest.mean_accuracy is not None
    assert ours.mean_accuracy > smallest.mean_accuracy
    assert oracle.mean_accuracy is not None and oracle.mean_accuracy >= ours.mean_accuracy
    assert (
        ours.switches == 2 and ours.timeline[10] == "dw@fp32" and ours.timeline[-1] == "base@fp32"
    )


def test_every_context_is_scored_when_trace_modes_all_have_profiles() -> None:
    report = _run(["MAXN"] * 5 + ["MIN"] * 5)
    assert report.unmeasured_context_rate == 0 and report.unprofiled_modes == ()
    assert notes(report) == []
    for result in report.strategies:
        assert result.unpredictable_rate == 0 and result.scored_contexts == 10
        assert result.max_extrapolation == 1.0


def test_upgrade_waits_for_cooldown_when_mode_recovers() -> None:
    report = _run(["MIN"] * 3 + ["MAXN"] * 6, policy=Policy(latency_budget_ms=2.0, cooldown_s=4.0))
    timeline = report.strategy("policy").timeline
    assert timeline[3] == "dw@fp32"  # MAXN again, but inside the cooldown
    assert timeline[-1] == "base@fp32"


def test_scores_are_none_not_perfect_when_trace_mode_has_no_profile_on_device() -> None:
    report = _run(["MODE_15W"] * 10)
    for result in report.strategies:
        assert result.unpredictable_rate == 1.0 and result.scored_contexts == 0
        assert result.slo_violation_rate is None and result.mean_accuracy is None
        assert result.mean_energy_mj is None
    assert report.unmeasured_context_rate == 1.0
    assert report.unprofiled_modes == (
        ModeGap(mode="MODE_15W", mode_id=2, contexts=10, missing=("base@fp32", "dw@fp32")),
    )
    (line,) = notes(report)
    assert "power mode 'MODE_15W' has no profile on device dev: 10 of 10 contexts" in line
    assert "edge-service profile --modes 2" in line and "--profiles-device" in line


def test_only_the_predictable_stretch_is_scored_when_trace_leaves_the_profiled_modes() -> None:
    report = _run(["MIN"] * 10 + ["MODE_15W"] * 10)
    largest = report.strategy("static-largest")
    # 3.6 ms p99 > 2 ms in every MIN context; the MODE_15W guesses (scaled from MAXN,
    # 1.2 ms) would have halved this to 0.5
    assert largest.slo_violation_rate == 1.0 and largest.scored_contexts == 10
    assert largest.unpredictable_rate == 0.5
    assert report.strategy("policy").mean_accuracy == pytest.approx(0.90)  # dw in MIN
    assert report.unmeasured_context_rate == 0.5
    assert [g.mode for g in report.unprofiled_modes] == ["MODE_15W"]


def test_trace_becomes_predictable_when_profiles_of_its_board_are_used() -> None:
    catalog = _catalog({"dev": ["MAXN", "MIN"], "orin": ["MODE_15W"]})
    here = _run(["MODE_15W"] * 10, catalog, "dev")
    assert all(r.unpredictable_rate == 1.0 for r in here.strategies)
    assert "(the catalog has profiles for: orin)" in notes(here)[0]
    board = _run(["MODE_15W"] * 10, catalog, "orin")
    assert board.device == "orin" and board.unprofiled_modes == () and notes(board) == []
    for result in board.strategies:
        assert result.unpredictable_rate == 0 and result.scored_contexts == 10
        assert result.slo_violation_rate == 0
    assert board.strategy("static-largest").mean_accuracy == pytest.approx(0.93)


def test_max_extrapolation_is_the_scale_factor_when_mode_is_scaled_from_another() -> None:
    catalog = _catalog({"dev": ["MAXN"]}, cores=4)  # MAXN measured on 4 cores
    report = _run(["MIN"] * 3, catalog)  # the trace has 2 cores online
    for result in report.strategies:
        assert result.max_extrapolation == pytest.approx(2.0)
        assert result.unpredictable_rate == 1.0


def test_max_extrapolation_is_none_and_json_finite_when_chosen_variant_is_unmeasured() -> None:
    data = CATALOG.model_dump(mode="json")
    data["variants"][0]["profiles"] = {}  # base: never profiled anywhere
    catalog = parse_catalog(data)
    report = _run(["MAXN"] * 4, catalog)
    largest = report.strategy("static-largest")
    assert largest.timeline[0] == "base@fp32" and largest.max_extrapolation is None
    assert largest.unpredictable_rate == 1.0 and largest.slo_violation_rate is None
    assert report.strategy("static-smallest").max_extrapolation == 1.0
    json.dumps(report.to_dict(), allow_nan=False)


def test_partly_profiled_mode_is_explained_when_a_strategy_chose_its_unprofiled_variant() -> None:
    data = _catalog({"dev": ["MAXN", "MIN"]}).model_dump(mode="json")
    del data["variants"][0]["profiles"]["dev"]["MIN"]  # base: MAXN only
    catalog = parse_catalog(data)
    report = _run(["MIN"] * 4, catalog)
    assert report.unprofiled_modes == ()
    assert report.partly_profiled_modes[0].missing == ("base@fp32",)
    assert report.strategy("static-largest").unpredictable_rate == 1.0
    assert report.strategy("static-smallest").unpredictable_rate == 0
    (line,) = notes(report)
    assert "only some variants (missing: base@fp32)" in line
    assert "edge-service profile --modes 2" in line


def test_require_profiles_refuses_listing_known_ids_when_device_has_none() -> None:
    catalog = _catalog({"dev": ["MAXN"], "orin": ["MODE_15W"]})
    require_profiles(catalog, "orin")
    with pytest.raises(NotFoundError, match=r"'xavier'.*profiles for: dev, orin"):
        require_profiles(catalog, "xavier")


def test_simulate_refuses_when_trace_is_empty() -> None:
    with pytest.raises(ValueError, match="at least one"):
        simulate([], Predictor(CATALOG, "dev"), Policy(), catalog=CATALOG)
