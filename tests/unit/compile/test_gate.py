"""The accuracy and dominance gate: rejected by precision drop, dominated on the device."""

from __future__ import annotations

from typing import Any

import pytest

from edge_service.compile.gate import apply_gate, gate_summary
from edge_service.errors import ConfigError
from edge_service.repository import Variant
from edge_service.variants import VariantSpec

DEVICE = "NVIDIA Jetson Orin Nano"
OTHER = "x86_64 Intel Xeon"


def profile(p50: float, accuracy: float | None = None, backend: str = "onnxruntime") -> dict:
    return {
        "backend": backend,
        "threads": 0,
        "latency": {"1": {"p50_ms": p50, "p99_ms": 1.5 * p50, "mean_ms": p50, "runs": 10}},
        "accuracy": accuracy,
        "measured_at": "2026-01-01T00:00:00Z",
    }


def variant(
    stages: tuple[str, ...],
    precision: str,
    top1: float | None,
    ms: float | dict[str, float] | None = None,
    *,
    device: str = DEVICE,
    backend: str = "onnxruntime",
    device_top1: float | None = None,
    **extra: Any,
) -> Variant:
    """A catalog variant; ``ms`` is the batch-1 p50 in the ``default`` mode, or per mode."""
    spec = VariantSpec(stages, precision)
    modes = {} if ms is None else ms if isinstance(ms, dict) else {"default": ms}
    return Variant.model_validate(
        {
            "id": spec.id,
            "spec": spec.to_dict(),
            "backend": backend,
            "artifact": {"path": f"{spec.id}.onnx", "sha256": "0" * 64, "bytes": 1},
            "accuracy": None if top1 is None else {"top1": top1, "examples": 1000},
            "profiles": {device: {m: profile(v, device_top1, backend) for m, v in modes.items()}}
            if modes
            else {},
            **extra,
        }
    )


BASE = ("id", "id")
SMALL = ("dw", "id")


def by_id(variants: list[Variant]) -> dict[str, Variant]:
    return {v.id: v for v in variants}


# ---------------------------------------------------------------- rejection


def test_int8_far_below_its_fp32_sibling_is_rejected_with_drop_and_reason():
    out = by_id(
        apply_gate([variant(BASE, "fp32", 0.9313, 2.0), variant(BASE, "int8", 0.8504, 1.0)], DEVICE)
    )
    int8 = out["base@int8"]
    assert int8.status == "rejected" and not int8.servable
    assert int8.precision_drop == pytest.approx(0.0809)
    assert int8.status_reason == (
        "int8 top-1 0.8504 is 8.09 points below fp32 0.9313 (limit 1.00): rejected on this device"
    )
    assert out["base@fp32"].servable and out["base@fp32"].precision_drop is None


@pytest.mark.parametrize(
    ("int8_top1", "status"),
    [(0.9213, "servable"), (0.9263, "servable"), (0.9212, "rejected")],
    ids=["exactly-at-the-limit", "below-the-limit", "just-above-the-limit"],
)
def test_rejection_happens_only_when_the_drop_is_over_the_limit(int8_top1, status):
    # 0.9313 - 0.9213 is 0.01000000000000001 in floats: exactly one point still passes
    out = by_id(
        apply_gate(
            [variant(BASE, "fp32", 0.9313, 2.0), variant(BASE, "int8", int8_top1, 1.0)],
            DEVICE,
            max_precision_drop=0.01,
        )
    )
    assert out["base@int8"].status == status


def test_fp16_is_gated_like_int8_and_a_looser_limit_lets_it_pass():
    vs = [variant(BASE, "fp32", 0.93, 2.0), variant(BASE, "fp16", 0.90, 1.5)]
    assert by_id(apply_gate(vs, DEVICE))["base@fp16"].status == "rejected"
    loose = by_id(apply_gate(vs, DEVICE, max_precision_drop=0.05))["base@fp16"]
    assert loose.status == "servable" and loose.precision_drop == pytest.approx(0.03)


def test_tensorrt_accuracy_measured_on_this_device_is_preferred_to_the_catalogs():
    fp32 = variant(BASE, "fp32", 0.93, 2.0)
    trt = variant(BASE, "int8", 0.93, 0.5, backend="tensorrt", device_top1=0.85)
    out = by_id(apply_gate([fp32, trt], DEVICE))["base@int8"]
    assert out.status == "rejected" and out.precision_drop == pytest.approx(0.08)
    assert "top-1 0.8500" in (out.status_reason or "")


def test_on_device_accuracy_of_another_device_is_not_used():
    fp32 = variant(BASE, "fp32", 0.93, 2.0, device=OTHER)
    trt = variant(BASE, "int8", 0.93, 0.5, device=OTHER, backend="tensorrt", device_top1=0.5)
    assert by_id(apply_gate([fp32, trt], DEVICE))["base@int8"].servable


def test_a_better_int8_has_a_negative_drop_and_stays_servable():
    out = by_id(
        apply_gate([variant(BASE, "fp32", 0.90, 2.0), variant(BASE, "int8", 0.91, 1.0)], DEVICE)
    )
    assert out["base@int8"].precision_drop == pytest.approx(-0.01)
    assert out["base@int8"].servable


def test_byo_variants_without_accuracy_are_never_rejected_nor_dominated():
    vs = [variant(BASE, "fp32", None, 2.0), variant(BASE, "int8", None, 3.0)]
    out = apply_gate(vs, DEVICE)
    assert [v.status for v in out] == ["servable", "servable"]
    assert all(v.precision_drop is None for v in out)


def test_a_reduced_precision_network_without_an_fp32_sibling_is_not_rejected():
    out = apply_gate([variant(SMALL, "int8", 0.5, 1.0), variant(BASE, "fp32", 0.93, 2.0)], DEVICE)
    assert by_id(out)["dw-id@int8"].servable and by_id(out)["dw-id@int8"].precision_drop is None


# ---------------------------------------------------------------- dominance


def test_slower_and_less_accurate_variant_is_dominated_with_both_numbers_in_the_reason():
    fast_good = variant(SMALL, "fp32", 0.92, 1.0)
    slow_bad = variant(BASE, "fp32", 0.91, 2.0)
    out = by_id(apply_gate([slow_bad, fast_good], DEVICE))
    assert out["dw-id@fp32"].servable
    dominated = out["base@fp32"]
    assert dominated.status == "dominated"
    assert dominated.status_reason == (
        "dominated by dw-id@fp32 on this device: top-1 0.9200 vs 0.9100, p50 1 ms vs 2 ms (default)"
    )


@pytest.mark.parametrize(
    ("other_top1", "other_ms", "dominated"),
    [
        (0.91, 1.0, True),  # as accurate, faster
        (0.92, 2.0, True),  # more accurate, as fast
        (0.91, 2.0, False),  # a full tie
        (0.92, 2.5, False),  # more accurate but slower: a trade-off
        (0.90, 1.0, False),  # faster but less accurate: a trade-off
    ],
)
def test_dominance_needs_no_worse_on_both_and_better_on_one(other_top1, other_ms, dominated):
    mine = variant(BASE, "fp32", 0.91, 2.0)
    other = variant(SMALL, "fp32", other_top1, other_ms)
    out = by_id(apply_gate([mine, other], DEVICE))
    assert (out["base@fp32"].status == "dominated") is dominated
    assert out["dw-id@fp32"].status == "servable"


def test_dominance_counts_every_power_mode_profiled_on_the_device():
    # the GPU engine is faster at full clocks but slower in the low-power mode: a trade-off
    gpu = variant(SMALL, "fp16", 0.92, {"MAXN": 0.5, "7W": 3.0}, backend="tensorrt")
    cpu = variant(BASE, "fp32", 0.91, {"MAXN": 1.0, "7W": 2.0})
    out = by_id(apply_gate([gpu, cpu], DEVICE, power_mode="MAXN"))
    assert out["base@fp32"].servable and out["dw-id@fp16"].servable
    faster_everywhere = variant(SMALL, "fp16", 0.92, {"MAXN": 0.5, "7W": 1.5}, backend="tensorrt")
    out = by_id(apply_gate([faster_everywhere, cpu], DEVICE, power_mode="MAXN"))
    assert out["base@fp32"].status == "dominated"
    assert "p50 0.5 ms vs 1 ms (MAXN)" in (out["base@fp32"].status_reason or "")


def test_variants_without_a_latency_on_this_device_are_never_dominated():
    unprofiled = variant(BASE, "fp32", 0.80, None)
    elsewhere = variant(("p50", "id"), "fp32", 0.80, 9.0, device=OTHER)
    best = variant(SMALL, "fp32", 0.95, 0.1)
    out = by_id(apply_gate([unprofiled, elsewhere, best], DEVICE))
    assert out["base@fp32"].servable and out["p50-id@fp32"].servable


def test_a_rejected_variant_dominates_nothing():
    fp32 = variant(BASE, "fp32", 0.93, 2.0)
    int8 = variant(BASE, "int8", 0.80, 0.5)  # rejected, and fastest
    small = variant(SMALL, "fp32", 0.79, 1.0)  # would be dominated by the int8 one
    out = by_id(apply_gate([fp32, int8, small], DEVICE))
    assert out["base@int8"].status == "rejected"
    assert out["dw-id@fp32"].servable and out["base@fp32"].servable


# ---------------------------------------------------------------- the whole


def test_gate_is_recomputed_from_scratch_so_a_rejected_variant_can_come_back():
    fp32 = variant(BASE, "fp32", 0.93, 2.0)
    stale = {"status": "rejected", "status_reason": "an older build", "precision_drop": 0.2}
    rebuilt = variant(BASE, "int8", 0.929, 1.0, **stale)  # recalibrated since
    again = by_id(apply_gate([fp32, rebuilt], DEVICE))["base@int8"]
    assert again.status == "servable" and again.status_reason is None
    assert again.precision_drop == pytest.approx(0.001)
    was_dominated = variant(SMALL, "fp32", 0.95, 0.5, status="dominated", status_reason="old")
    assert by_id(apply_gate([fp32, was_dominated], DEVICE))["dw-id@fp32"].servable


def test_gate_keeps_order_and_leaves_its_input_untouched():
    vs = [variant(BASE, "int8", 0.80, 1.0), variant(BASE, "fp32", 0.93, 2.0)]
    out = apply_gate(vs, DEVICE)
    assert [v.id for v in out] == [v.id for v in vs]
    assert all(v.status == "servable" for v in vs)


def test_summary_has_one_line_per_variant_that_is_not_servable():
    out = apply_gate(
        [
            variant(BASE, "fp32", 0.93, 2.0),
            variant(BASE, "int8", 0.80, 1.0),
            variant(SMALL, "fp32", 0.90, 3.0),
        ],
        DEVICE,
    )
    lines = gate_summary(out)
    assert len(lines) == 2
    assert lines[0].startswith("base@int8: rejected: int8 top-1 0.8000 is 13.00 points below")
    assert lines[1].startswith("dw-id@fp32: dominated: dominated by base@fp32")
    assert gate_summary([variant(BASE, "fp32", 0.93, 2.0)]) == []


@pytest.mark.parametrize("limit", [-0.01, 1.5, float("nan")])
def test_a_limit_that_is_no_top1_fraction_is_refused(limit):
    with pytest.raises(ConfigError, match="max precision drop"):
        apply_gate([variant(BASE, "fp32", 0.93, 2.0)], DEVICE, max_precision_drop=limit)
