"""The predictor: measured profiles as is, other modes scaled, online correction, energy."""

from __future__ import annotations

import math
from typing import Any

import pytest

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


def test_correction_moves_by_alpha_when_one_observation_comes_in() -> None:
    p = Predictor(CATALOG, DEVICE)
    p.observe(CPU, observed_ms=4.0, predicted_ms=2.0)
    assert p.correction(CPU) == pytest.approx(1.2)
    assert p.correction(GPU) == 1.0


def test_correction_learned_on_one_cpu_engine_applies_to_every_cpu_variant() -> None:
    p = Predictor(CATALOG, DEVICE)
    p.observe(CPU, observed_ms=4.0, predicted_ms=2.0)  # contention seen on the active engine
    cpu_variants = [v.id for v in CATALOG.variants if p._key(v.id) == "cpu"]
    assert len(cpu_variants) >= 2
    assert all(p.correction(v) == pytest.approx(1.2) for v in cpu_variants)
    assert p.correction(GPU) == 1.0


def test_correction_converges_to_observed_over_predicted_when_fed_repeatedly() -> None:
    p = Predictor(CATALOG, DEVICE, alpha=0.3)
    for _ in range(60):
        e = p.estimate(CPU, ctx())
        p.observe(CPU, observed_ms=3.0, predicted_ms=e.model_p50_ms)
    e = p.estimate(CPU, ctx())
    assert p.correction(CPU) == pytest.approx(1.5, rel=1e-6)
    assert e.p50_ms == pytest.approx(3.0, rel=1e-6) and e.model_p50_ms == pytest.approx(2.0)


def test_correction_applies_to_energy_when_observed_latency_differs() -> None:
    p = Predictor(CATALOG, DEVICE, alpha=1.0)
    p.observe(CPU, observed_ms=4.0, predicted_ms=2.0)
    e = p.estimate(CPU, ctx())
    assert e.p50_ms == 4.0 and e.energy_mj == pytest.approx(20.0) and e.energy_estimated


@pytest.mark.parametrize(("observed", "bound"), [(1e6, 20.0), (0.0, 0.25)])
def test_correction_is_clamped_when_observations_are_extreme(observed: float, bound: float) -> None:
    p = Predictor(CATALOG, DEVICE)
    for _ in range(200):
        p.observe(CPU, observed_ms=observed, predicted_ms=1.0)
    assert p.correction(CPU) == pytest.approx(bound)


def test_one_outlier_moves_correction_at_most_alpha_times_bound_when_clamped() -> None:
    p = Predictor(CATALOG, DEVICE)
    p.observe(CPU, observed_ms=1e6, predicted_ms=1.0)
    assert p.correction(CPU) == pytest.approx(0.8 + 0.2 * 20.0)


def test_reset_restores_unit_correction_when_called() -> None:
    p = Predictor(CATALOG, DEVICE)
    p.observe(CPU, 5.0, 1.0)
    p.reset(CPU)
    assert p.correction(CPU) == 1.0


def test_observe_skips_when_prediction_is_unmeasured() -> None:
    p = Predictor(CATALOG, DEVICE)
    p.observe(BARE, 5.0, math.inf)
    assert p.correction(BARE) == 1.0


def test_observe_refuses_when_observed_latency_is_negative() -> None:
    with pytest.raises(ValueError, match="observed_ms"):
        Predictor(CATALOG, DEVICE).observe(CPU, -1.0, 1.0)


def test_observe_refuses_when_variant_is_unknown() -> None:
    with pytest.raises(NotFoundError):
        Predictor(CATALOG, DEVICE).observe("nope@fp32", 1.0, 1.0)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_predictor_refuses_when_alpha_is_outside_unit_interval(alpha: float) -> None:
    with pytest.raises(ConfigError, match="alpha"):
        Predictor(CATALOG, DEVICE, alpha=alpha)


def test_observed_stalls_raise_every_cpu_variants_p99_once_enough_calls_are_seen() -> None:
    p = Predictor(CATALOG, DEVICE, alpha=0.2)
    others = [v.id for v in CATALOG.variants if v.id != CPU and p._key(v.id) == "cpu"]
    before = {v: p.estimate(v, ctx()).p99_ms for v in [CPU, *others]}
    model = p.estimate(CPU, ctx()).model_p50_ms
    for i in range(63):  # too few calls: the tail is not trusted yet
        p.observe(CPU, observed_ms=model + (5.0 if i % 10 == 0 else 0.0), predicted_ms=model)
    assert p.estimate(CPU, ctx()).p99_ms == pytest.approx(before[CPU] * p.correction(CPU))
    for i in range(200):  # one call in ten stalls by 5 ms
        p.observe(CPU, observed_ms=model + (5.0 if i % 10 == 0 else 0.0), predicted_ms=model)
    for vid in [CPU, *others]:
        e = p.estimate(vid, ctx())
        if math.isfinite(e.p99_ms):
            assert e.p99_ms >= e.p50_ms + 3.0, vid  # the stalls carry over to every CPU variant
    p.reset(CPU)
    assert p.estimate(CPU, ctx()).p99_ms == pytest.approx(before[CPU])


def test_accuracy_measured_on_this_device_wins_over_the_catalogs() -> None:
    from edge_service.control.predictor import device_accuracy

    v = CATALOG.variant(GPU)
    prof = next(iter(v.profiles[DEVICE].values()))
    measured = prof.model_copy(update={"accuracy": 0.5})
    v2 = v.model_copy(update={"profiles": {DEVICE: {"MAXN": measured}}})
    assert device_accuracy(v2, DEVICE) == 0.5
    assert device_accuracy(v2, "another-board") == (v.accuracy.top1 if v.accuracy else None)
