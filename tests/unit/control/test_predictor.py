"""The predictor: measured profiles as is, other modes scaled, online learning, energy."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from edge_service.control.learner import LatencyLearner, LearnerConfig
from edge_service.control.learner_stats import CONTENTION_MAX, CONTENTION_MIN
from edge_service.control.predictor import Predictor
from edge_service.errors import ConfigError, NotFoundError
from edge_service.monitor.context import Context, PowerMode
from edge_service.repository import Catalog, parse_catalog
from edge_service.variants import VariantSpec

DEVICE = "NVIDIA Jetson Orin Nano"
CPU = VariantSpec(("id", "id"), "fp32").id  # base@fp32
GPU = VariantSpec(("id", "id"), "fp16").id  # base@fp16
CUDA = VariantSpec(("p50", "id"), "fp32").id
BARE = VariantSpec(("p50", "id"), "int8").id  # never profiled


def profile(p50: float, **extra: Any) -> dict[str, Any]:
    """A profile dict measuring batch 1 (p99 = 1.5 x p50) and batch 8 (4 x batch 1)."""
    return {
        "backend": "onnxruntime[CPUExecutionProvider]",
        "threads": 0,
        "latency": {
            "1": {"p50_ms": p50, "p99_ms": 1.5 * p50, "mean_ms": p50, "runs": 100},
            "8": {"p50_ms": 4 * p50, "p99_ms": 6 * p50, "mean_ms": 4 * p50, "runs": 100},
        },
        "measured_at": "2026-01-01T00:00:00Z",
        **extra,
    }


def variant(spec_id: str, backend: str, profiles: dict[str, Any]) -> dict[str, Any]:
    stages, precision = spec_id.split("@")
    parts = ("id", "id") if stages == "base" else tuple(stages.split("-"))
    spec = VariantSpec(parts, precision)
    return {
        "id": spec.id,
        "spec": spec.to_dict(),
        "backend": backend,
        "artifact": {"path": f"{spec.id}.onnx", "sha256": "0" * 64, "bytes": 1},
        "accuracy": {"top1": 0.9, "examples": 100},
        "profiles": profiles,
    }


def catalog(*variants: dict[str, Any]) -> Catalog:
    return parse_catalog(
        {
            "schema_version": 1,
            "family": "fashion",
            "task": "classification",
            "labels": ["a", "b"],
            "input": {"name": "input", "shape": ["batch", 1, 28, 28], "mean": 0.5, "std": 0.5},
            "variants": list(variants),
        }
    )


CPU_MAXN = profile(
    2.0, cores=8, cpu_max_freq_hz=2_000_000_000, energy_mj=10.0, energy_estimated=False
)
GPU_MAXN = profile(1.0, backend="tensorrt", gpu_max_freq_hz=1_300_000_000, power_mw=8000.0)
GPU_15W = profile(2.0, backend="tensorrt", gpu_max_freq_hz=650_000_000)
CATALOG = catalog(
    variant(CPU, "onnxruntime", {DEVICE: {"MAXN": CPU_MAXN}}),
    variant(GPU, "tensorrt", {DEVICE: {"MAXN": GPU_MAXN, "15W": GPU_15W}}),
    variant(
        CUDA,
        "onnxruntime",
        {DEVICE: {"MAXN": profile(1.0, backend="onnxruntime[CUDAExecutionProvider]")}},
    ),
    variant(BARE, "onnxruntime", {}),
)


def ctx(mode: str | None = "MAXN", cores: int = 8, **extra: Any) -> Context:
    return Context(
        t=100.0,
        source="test",
        power_mode=PowerMode(0, mode) if mode else None,
        cpu_online=cores,
        cpu_load=0.1,
        mem_available_mb=4000,
        mem_total_mb=8000,
        **extra,
    )


def test_estimate_uses_profile_as_is_when_mode_was_measured() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(CPU, ctx("MAXN", cores=2))
    assert (e.p50_ms, e.p99_ms, e.source, e.accuracy) == (2.0, 3.0, "measured", 0.9)
    assert e.energy_mj == 10.0 and not e.energy_estimated and e.measured


def test_estimate_scales_by_cores_when_cpu_mode_is_missing() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(CPU, ctx("15W", cores=4))
    assert e.p50_ms == pytest.approx(4.0) and e.p99_ms == pytest.approx(6.0)
    assert e.source == "scaled from MAXN"


def test_estimate_scales_by_cpu_clock_too_when_both_clocks_are_known() -> None:
    c = ctx("15W", cores=4, cpu_freqs_hz=(500_000_000, 1_000_000_000))
    assert Predictor(CATALOG, DEVICE).estimate(CPU, c).p50_ms == pytest.approx(8.0)


def test_single_threaded_engine_is_not_slowed_when_cores_go_offline() -> None:
    one = profile(2.0, threads=1, cores=8)
    cat = catalog(variant(CPU, "onnxruntime", {DEVICE: {"MAXN": one}}))
    assert Predictor(cat, DEVICE).estimate(CPU, ctx("15W", cores=2)).p50_ms == 2.0


def test_estimate_scales_by_gpu_clock_when_tensorrt_mode_is_missing() -> None:
    c = ctx("30W", gpu_max_freq_hz=1_000_000_000)
    e = Predictor(CATALOG, DEVICE).estimate(GPU, c)
    assert e.source == "scaled from MAXN"  # 1.3x away, nearer than 15W's 0.65x
    assert e.p50_ms == pytest.approx(1.3)


def test_estimate_scales_from_nearest_mode_when_several_are_measured() -> None:
    c = ctx("10W", gpu_max_freq_hz=600_000_000)
    e = Predictor(CATALOG, DEVICE).estimate(GPU, c)
    assert e.source == "scaled from 15W" and e.p50_ms == pytest.approx(2.0 * 650 / 600)


def test_gpu_scaling_ignores_cores_when_backend_is_tensorrt() -> None:
    c = ctx("30W", cores=1, gpu_max_freq_hz=1_300_000_000)
    assert Predictor(CATALOG, DEVICE).estimate(GPU, c).p50_ms == pytest.approx(1.0)


def test_gpu_scaling_uses_mode_max_clock_when_idle_gpu_runs_slow() -> None:
    c = ctx("30W", gpu_freq_hz=114_000_000, gpu_max_freq_hz=1_300_000_000)
    assert Predictor(CATALOG, DEVICE).estimate(GPU, c).p50_ms == pytest.approx(1.0)


def test_gpu_scaling_uses_current_clock_when_max_is_unknown() -> None:
    c = ctx("30W", gpu_freq_hz=650_000_000)
    assert Predictor(CATALOG, DEVICE).estimate(GPU, c).p50_ms == pytest.approx(2.0)


def test_onnxruntime_cuda_profile_scales_by_gpu_clock_when_mode_is_missing() -> None:
    cuda = profile(1.0, backend="onnxruntime[CUDAExecutionProvider]", cores=8)
    cuda["gpu_max_freq_hz"] = 1_000_000_000
    cat = catalog(variant(CUDA, "onnxruntime", {DEVICE: {"MAXN": cuda}}))
    c = ctx("15W", cores=2, gpu_max_freq_hz=500_000_000)
    assert Predictor(cat, DEVICE).estimate(CUDA, c).p50_ms == pytest.approx(2.0)


def test_estimate_is_unscaled_when_resources_are_unknown() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(CUDA, ctx("15W", cores=1))
    assert e.p50_ms == 1.0 and e.source == "scaled from MAXN"


def test_estimate_scales_another_devices_profile_when_this_one_has_none() -> None:
    cat = catalog(variant(CPU, "onnxruntime", {"xavier": {"MAXN": CPU_MAXN}}))
    e = Predictor(cat, DEVICE).estimate(CPU, ctx("MAXN", cores=4))
    assert e.source == "scaled from MAXN on xavier" and e.p50_ms == pytest.approx(4.0)


def test_estimate_prefers_this_device_when_another_is_closer() -> None:
    far = profile(9.0, cores=2)
    cat = catalog(variant(CPU, "onnxruntime", {DEVICE: {"10W": far}, "xavier": {"15W": CPU_MAXN}}))
    e = Predictor(cat, DEVICE).estimate(CPU, ctx("15W", cores=8))
    assert e.source == "scaled from 10W" and e.p50_ms == pytest.approx(9.0 * 2 / 8)


def test_estimate_uses_default_mode_when_context_has_no_power_mode() -> None:
    cat = catalog(variant(CPU, "onnxruntime", {DEVICE: {"default": CPU_MAXN}}))
    assert Predictor(cat, DEVICE).estimate(CPU, ctx(None)).source == "measured"


def test_estimate_is_unmeasured_when_variant_has_no_profile() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(BARE, ctx())
    assert e.source == "unmeasured" and math.isinf(e.p50_ms) and math.isinf(e.p99_ms)
    assert e.energy_mj is None and e.memory_mb is None and e.accuracy == 0.9


def test_estimate_is_unmeasured_when_batch_was_never_profiled() -> None:
    assert Predictor(CATALOG, DEVICE).estimate(CPU, ctx(), batch=4).source == "unmeasured"


def test_estimate_reads_batch_latency_when_batch_is_profiled() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(CPU, ctx(), batch=8)
    assert e.p50_ms == 8.0 and e.energy_mj == pytest.approx(40.0) and e.energy_estimated


def test_estimate_refuses_when_variant_is_unknown() -> None:
    with pytest.raises(NotFoundError, match=r"base@fp32"):
        Predictor(CATALOG, DEVICE).estimate("nope@fp32", ctx())


def test_estimates_cover_every_variant_in_catalog_order() -> None:
    ids = [e.variant_id for e in Predictor(CATALOG, DEVICE).estimates(ctx())]
    assert ids == [v.id for v in CATALOG.variants]


def test_energy_scales_with_latency_when_mode_is_scaled() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(CPU, ctx("15W", cores=4))
    assert e.energy_mj == pytest.approx(20.0) and e.energy_estimated


def test_energy_comes_from_power_when_only_power_was_profiled() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(GPU, ctx("MAXN"))
    assert e.energy_mj == pytest.approx(8.0) and e.energy_estimated  # 8 W x 1 ms
    assert e.power_mw == 8000.0


def test_energy_is_none_when_neither_energy_nor_power_was_profiled() -> None:
    e = Predictor(CATALOG, DEVICE).estimate(CUDA, ctx("MAXN"))
    assert e.energy_mj is None and e.energy_estimated


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def learning(**config: Any) -> tuple[Predictor, Clock]:
    clock = Clock()
    learner = LatencyLearner(LearnerConfig(**config), clock=clock)
    return Predictor(CATALOG, DEVICE, learner=learner), clock


CPU2 = VariantSpec(("p25", "id"), "fp32").id
TWO_CPU = catalog(
    variant(CPU, "onnxruntime", {DEVICE: {"MAXN": CPU_MAXN}}),
    variant(CPU2, "onnxruntime", {DEVICE: {"MAXN": profile(1.0, cores=8)}}),
)


def serve(p: Predictor, vid: str, ms: float, n: int, mode: str = "MAXN") -> None:
    """``n`` served calls of ``vid`` taking ``ms`` each."""
    for _ in range(n):
        p.observe(p.estimate(vid, ctx(mode)), ms)


def test_contention_holds_while_the_served_variant_is_being_learned() -> None:
    p, _ = learning(anchor_n=8)
    serve(p, CPU, 4.0, 7)  # profile 2.0 ms: its own cost is 2x, not contention
    assert p.correction(CPU, "MAXN") == 1.0
    assert p.estimate(CPU, ctx()).p50_ms > 2.0  # what it learned is its own


def test_contention_moves_one_step_when_a_learned_variant_runs_slower() -> None:
    p, _ = learning(anchor_n=8, step=0.05)
    serve(p, CPU, 2.0, 8)
    p.observe(p.estimate(CPU, ctx()), 4.0)  # twice its learned 2.0 ms
    assert p.correction(CPU, "MAXN") == pytest.approx(math.exp(0.05))
    assert p.correction(GPU, "MAXN") == 1.0


def test_contention_follows_a_competitor_within_a_few_dozen_calls() -> None:
    p, _ = learning()
    serve(p, CPU, 2.0, 20)
    serve(p, CPU, 6.0, 30)  # a competitor triples the served engine's time
    assert p.correction(CPU, "MAXN") == pytest.approx(3.0, rel=0.1)
    serve(p, CPU, 2.0, 30)  # it left
    assert p.correction(CPU, "MAXN") == pytest.approx(1.0, rel=0.1)


def test_contention_does_not_drift_when_latencies_are_skewed_but_steady() -> None:
    p, _ = learning()
    for i in range(2000):  # a long right tail: one call in five takes 4x
        p.observe(p.estimate(CPU, ctx()), 8.0 if i % 5 == 0 else 2.0)
    assert p.correction(CPU, "MAXN") == pytest.approx(1.0, abs=0.2)
    assert p.estimate(CPU, ctx()).p50_ms == pytest.approx(2.0, rel=0.1)


def test_contention_seen_on_the_served_engine_applies_to_every_cpu_variant() -> None:
    p, _ = learning()
    serve(p, CPU, 2.0, 8)
    p.observe(p.estimate(CPU, ctx()), 4.0)
    cpu_variants = [v.id for v in CATALOG.variants if p._key(v.id) == "cpu"]
    assert len(cpu_variants) >= 2
    assert all(p.correction(v, "MAXN") > 1.0 for v in cpu_variants)
    assert p.estimate(GPU, ctx()).p50_ms == 1.0  # on the GPU: untouched


def test_served_observations_win_over_the_profile_once_confident() -> None:
    p, _ = learning()
    serve(p, CPU, 3.0, 300)
    e = p.estimate(CPU, ctx())
    assert e.p50_ms == pytest.approx(3.0, rel=0.05)
    assert e.confidence > 0.9 and e.samples == pytest.approx(256)
    assert e.prior_p50_ms == 2.0 and e.model_p50_ms == 2.0


def test_shadow_runs_teach_their_variant_and_leave_the_contention_alone() -> None:
    p, _ = learning()
    p2 = Predictor(TWO_CPU, DEVICE, learner=p.learner)
    for _ in range(200):
        p2.observe(p2.estimate(CPU2, ctx()), 1.5, shadow=True)  # profile 1.0 ms
    assert p2.correction(CPU, "MAXN") == 1.0
    assert p2.estimate(CPU2, ctx()).p50_ms == pytest.approx(1.5, rel=0.05)
    assert p2.estimate(CPU, ctx()).p50_ms == 2.0  # the other variant learned nothing
    assert p2.learner.last_shadow(CPU2, "MAXN") is not None


def test_each_variant_keeps_its_own_latency_when_another_one_is_served() -> None:
    """The served variant runs 2x its profile (its own overhead, not contention); a shadow
    run shows the other at 1.2x. Each is then predicted at what it really costs, not the
    served one's ratio applied to all."""
    p = Predictor(TWO_CPU, DEVICE, learner=LatencyLearner(clock=Clock()))
    for _ in range(300):
        p.observe(p.estimate(CPU, ctx()), 4.0)  # served: profile 2.0
    for _ in range(24):  # one shadow run
        p.observe(p.estimate(CPU2, ctx()), 1.2, shadow=True)  # shadow: profile 1.0
        p.observe(p.estimate(CPU, ctx()), 4.0)
    assert p.correction(CPU, "MAXN") == pytest.approx(1.0)
    assert p.estimate(CPU, ctx()).p50_ms == pytest.approx(4.0, rel=0.05)
    assert 1.0 < p.estimate(CPU2, ctx()).p50_ms <= 1.2  # between its profile and the truth


def test_contention_on_the_served_engine_raises_a_measured_variant_alike() -> None:
    p = Predictor(TWO_CPU, DEVICE, learner=LatencyLearner(clock=Clock()))
    serve(p, CPU, 2.0, 100)
    for _ in range(60):
        p.observe(p.estimate(CPU2, ctx()), 1.0, shadow=True)
    serve(p, CPU, 6.0, 60)  # a competitor triples the served engine's time
    assert p.estimate(CPU2, ctx()).p50_ms == pytest.approx(3.0, rel=0.1)


def test_confidence_decays_back_to_the_profile_when_observations_age() -> None:
    p, clock = learning(half_life_s=10.0)
    serve(p, CPU, 3.0, 100)
    young = p.estimate(CPU, ctx())
    clock.t += 200.0  # twenty half-lives
    old = p.estimate(CPU, ctx())
    assert young.confidence > 0.7 and old.confidence < 0.01
    assert old.age_s == pytest.approx(200.0)
    assert old.p50_ms == pytest.approx(2.0 * old.correction, rel=0.01)


def test_learning_is_kept_per_power_mode_when_the_mode_changes() -> None:
    p, _ = learning()
    serve(p, CPU, 3.0, 100, mode="MAXN")
    assert p.estimate(CPU, ctx("15W", cores=4)).samples == 0
    assert p.estimate(CPU, ctx("MAXN")).samples > 50


def test_a_new_mode_starts_from_the_processors_last_contention() -> None:
    p, _ = learning()
    serve(p, CPU, 4.0, 100, mode="MAXN")
    assert p.correction(CPU, "15W") == pytest.approx(p.correction(CPU, "MAXN"))


@pytest.mark.parametrize(("observed", "bound"), [(1e6, 20.0), (0.0, 0.25)])
def test_contention_stays_within_its_bounds_when_observations_are_extreme(
    observed: float, bound: float
) -> None:
    p, _ = learning()
    serve(p, CPU, 2.0, 8)
    for _ in range(200):
        p.learner.observe(CPU, "MAXN", "cpu", observed)
        c = p.correction(CPU, "MAXN")
        assert CONTENTION_MIN <= c <= CONTENTION_MAX
    assert math.log(c) * math.log(bound) > 0  # it moved towards that bound


def test_one_outlier_moves_contention_by_one_step_only() -> None:
    p, _ = learning(step=0.05)
    serve(p, CPU, 2.0, 8)
    p.observe(p.estimate(CPU, ctx()), 1e6)
    assert p.correction(CPU, "MAXN") == pytest.approx(math.exp(0.05))


def test_observe_moves_no_contention_when_the_variant_is_unmeasured() -> None:
    p, _ = learning()
    p.observe(p.estimate(BARE, ctx()), 5.0)
    assert p.correction(BARE, "MAXN") == 1.0


def test_observe_refuses_when_observed_latency_is_negative() -> None:
    p, _ = learning()
    with pytest.raises(ValueError, match="observed_ms"):
        p.observe(p.estimate(CPU, ctx()), -1.0)


def test_observe_refuses_when_variant_is_unknown() -> None:
    p, _ = learning()
    e = dataclasses.replace(p.estimate(CPU, ctx()), variant_id="nope@fp32")
    with pytest.raises(NotFoundError):
        p.observe(e, 1.0)


@pytest.mark.parametrize("step", [0.0, -0.1, 1.5])
def test_learner_refuses_when_step_is_outside_unit_interval(step: float) -> None:
    with pytest.raises(ConfigError, match="step"):
        LearnerConfig(step=step)


def test_observed_stalls_raise_every_cpu_variants_p99_once_enough_calls_are_seen() -> None:
    clock = Clock()
    p = Predictor(TWO_CPU, DEVICE, learner=LatencyLearner(clock=clock))
    before = p.estimate(CPU2, ctx()).p99_ms
    for i in range(38):  # 8 to learn the variant, then too few calls for the stall tail
        p.observe(p.estimate(CPU, ctx()), 2.0 + (5.0 if i % 10 == 9 else 0.0))
    other = p.estimate(CPU2, ctx())
    assert other.p99_ms == pytest.approx(before * other.correction)
    for i in range(200):  # one call in ten stalls by 5 ms
        p.observe(p.estimate(CPU, ctx()), 2.0 + (5.0 if i % 10 == 0 else 0.0))
    for vid in (CPU, CPU2):
        e = p.estimate(vid, ctx())
        assert e.p99_ms >= e.p50_ms + 3.0, vid  # the stalls carry over to every CPU variant
    clock.t += 10.0  # the competitor left: the stall window (4 s) holds none any more
    assert p.estimate(CPU2, ctx()).p99_ms < 2 * before


def test_estimate_says_how_far_it_was_extrapolated_when_no_profile_of_this_mode_exists() -> None:
    p, _ = learning()
    scaled = p.estimate(CPU, ctx("15W", cores=4))
    assert scaled.extrapolated and scaled.extrapolation == pytest.approx(2.0)
    measured = p.estimate(CPU, ctx("MAXN"))
    assert not measured.extrapolated and measured.extrapolation == 1.0
    doc = p.estimate(BARE, ctx()).to_dict()
    assert doc["extrapolated"] is True and doc["extrapolation"] is None and doc["p99_ms"] is None
    json.dumps(doc, allow_nan=False)


def test_a_longer_variant_takes_the_stalls_of_the_served_one_in_proportion() -> None:
    p = Predictor(TWO_CPU, DEVICE, learner=LatencyLearner(clock=Clock()))
    for i in range(200):  # the served 1 ms variant: one call in ten doubles
        p.observe(p.estimate(CPU2, ctx()), 2.0 if i % 10 == 0 else 1.0)
    short, long = p.estimate(CPU2, ctx()), p.estimate(CPU, ctx())
    assert short.p99_ms == pytest.approx(2.0, rel=0.1)
    assert long.p99_ms >= 2 * long.p50_ms * 0.95  # a 2 ms call stalls by 2 ms, not by 1


def test_what_is_learned_at_fewer_threads_is_kept_apart_and_found_again() -> None:
    p, _ = learning()
    serve(p, CPU, 2.0, 40)  # at the mode's threads
    at_mode = p.estimate(CPU, ctx()).p50_ms
    p.learner.set_regime(1)  # the thread fallback: one thread per engine
    serve(p, CPU, 5.0, 300)
    assert p.estimate(CPU, ctx()).p50_ms > 4.0
    p.learner.set_regime(None)  # the mode's threads are back
    assert p.estimate(CPU, ctx()).p50_ms == pytest.approx(at_mode)


def test_a_reset_takes_the_contention_back_to_none() -> None:
    p, _ = learning()
    serve(p, CPU, 2.0, 20)
    serve(p, CPU, 6.0, 30)
    assert p.correction(CPU, "MAXN") > 2.0
    p.learner.reset_contention()  # the competitor left
    assert p.correction(CPU, "MAXN") == 1.0


def test_two_lone_stalls_in_the_window_raise_no_tail_and_a_third_does() -> None:
    clock = Clock()
    p = Predictor(TWO_CPU, DEVICE, learner=LatencyLearner(clock=clock))
    before = p.estimate(CPU2, ctx()).p99_ms
    # 2 in 60 calls (a low rate: the 99th percentile of 52 is the second largest), noise
    # a tail must not rest on
    stalls = {20, 40}
    for i in range(60):
        clock.t += 0.02
        p.observe(p.estimate(CPU, ctx()), 2.0 + (5.0 if i in stalls else 0.0))
    other = p.estimate(CPU2, ctx())
    assert other.p99_ms == pytest.approx(before * other.correction)
    clock.t += 0.02
    p.observe(p.estimate(CPU, ctx()), 7.0)  # the third
    raised = p.estimate(CPU2, ctx())
    assert raised.p99_ms >= raised.p50_ms + 4.0
