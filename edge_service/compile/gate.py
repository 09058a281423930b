"""The accuracy and dominance gate: which built engines may be served on a device.

A pure function over catalog variants (no I/O, no clock), run by the build after every
engine is measured, and re-run from scratch each time (a variant rejected by an old build
can become servable again).

1. **Rejected.** A reduced-precision engine (FP16, INT8) whose top-1 is more than
   ``max_precision_drop`` (a fraction: 0.01 is one point) below its FP32 sibling's (the
   same network, `VariantSpec.family_key`) is not servable. Top-1 is the one measured on
   the device where a TensorRT profile carries it, else the catalog's. A drop exactly at
   the limit passes. Variants without accuracy (bring-your-own families) are never
   rejected by this rule.
2. **Dominated.** Among the variants not rejected, one that another variant beats on
   this device is dominated: the other is at least as accurate and at least as fast in
   every power mode both were profiled in on this device, and strictly better in one of
   them (accuracy, or batch-1 p50 in some mode). Equal on every count is a tie, not
   dominance. Every mode counts because the controller serves in every mode: a GPU
   engine faster at full clocks may lose to a CPU one in a low-power mode, and then it
   is not dominated. Variants without accuracy or without a profile on this device are
   never dominated and dominate nothing. The latency comparison is strict and exact
   (no noise margin): simple and deterministic, and a near-tie only costs a variant the
   controller would barely have preferred.

A dominated variant stays pinnable by an operator; a rejected one is never served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from edge_service.errors import ConfigError
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.repository import Variant

FP32 = "fp32"
METRIC_NAMES = {"top1": "top-1", "map50": "mAP@0.5", "agreement_map50": "agreement mAP@0.5"}
# A drop compares with the limit after rounding away float noise (0.9313 - 0.9213 is
# 0.01000000000000001, which is exactly one point).
_DROP_DIGITS = 9


def apply_gate(
    variants: Sequence[Variant],
    device: str,
    max_precision_drop: float = 0.01,
    *,
    power_mode: str = DEFAULT_POWER_MODE,
) -> list[Variant]:
    """Copies of ``variants`` (same order) with ``status``, ``status_reason`` and
    ``precision_drop`` computed afresh for ``device`` (rules in the module doc).

    ``power_mode`` is the mode a dominance reason quotes latencies in, where both
    variants were profiled in it.
    """
    if not (math.isfinite(max_precision_drop) and 0.0 <= max_precision_drop <= 1.0):
        raise ConfigError(
            f"max precision drop must be a top-1 fraction in [0, 1] (0.01 is one point), "
            f"got {max_precision_drop!r}"
        )
    top1 = {v.id: v.top1_on(device) for v in variants}
    fp32 = {v.variant_spec.family_key: v for v in variants if v.precision == FP32}
    gated = [_precision_gate(v, fp32, top1, max_precision_drop) for v in variants]
    kept = [v for v in gated if v.status != "rejected"]
    out = []
    for v in gated:
        if v.status != "rejected":
            reason = _dominated_reason(v, kept, top1, device, power_mode)
            if reason is not None:
                v = v.model_copy(update={"status": "dominated", "status_reason": reason})
        out.append(v)
    return out


def metric_name(v: Variant) -> str:
    """What ``v``'s score measures, for the reasons: top-1, mAP@0.5 or agreement."""
    return METRIC_NAMES[v.accuracy.metric if v.accuracy else "top1"]


def gate_summary(variants: Sequence[Variant]) -> list[str]:
    """One line per variant that is not servable, for the build's printout."""
    return [f"{v.id}: {v.status}: {v.status_reason}" for v in variants if not v.servable]


def _precision_gate(
    v: Variant, fp32: Mapping[str, Variant], top1: Mapping[str, float | None], limit: float
) -> Variant:
    """``v`` reset to servable, with its drop against its FP32 sibling, rejected if over."""
    reset: dict[str, object] = {"status": "servable", "status_reason": None}
    sibling = fp32.get(v.variant_spec.family_key)
    mine = top1[v.id]
    ref = top1[sibling.id] if sibling is not None else None
    if v.precision == FP32 or sibling is None or mine is None or ref is None:
        return v.model_copy(update=reset | {"precision_drop": None})
    drop = round(ref - mine, _DROP_DIGITS)
    if drop <= limit:
        return v.model_copy(update=reset | {"precision_drop": drop})
    metric = metric_name(v)
    reason = (
        f"{v.precision} {metric} {mine:.4f} is {drop * 100:.2f} points below {FP32} "
        f"{ref:.4f} (limit {limit * 100:.2f}): rejected on this device"
    )
    return v.model_copy(
        update={"status": "rejected", "status_reason": reason, "precision_drop": drop}
    )


def _latencies(v: Variant, device: str) -> dict[str, float]:
    """Batch-1 p50 per power mode profiled on ``device``."""
    out = {}
    for mode, profile in v.profiles.get(device, {}).items():
        ms = profile.latency_ms(1)
        if ms is not None:
            out[mode] = ms
    return out


def _dominated_reason(
    v: Variant,
    others: Sequence[Variant],
    top1: Mapping[str, float | None],
    device: str,
    power_mode: str,
) -> str | None:
    """Why ``v`` is dominated by one of ``others`` (the first, by id), or None."""
    acc, lat = top1[v.id], _latencies(v, device)
    if acc is None or not lat:
        return None
    for o in sorted(others, key=lambda x: x.id):
        o_acc, o_lat = top1[o.id], _latencies(o, device)
        common = sorted(set(lat) & set(o_lat))
        if o.id == v.id or o_acc is None or not common or o_acc < acc:
            continue
        if any(o_lat[m] > lat[m] for m in common):
            continue
        if o_acc > acc or any(o_lat[m] < lat[m] for m in common):
            mode = power_mode if power_mode in common else common[0]
            return (
                f"dominated by {o.id} on this device: {metric_name(v)} {o_acc:.4f} vs {acc:.4f}, "
                f"p50 {o_lat[mode]:.3g} ms vs {lat[mode]:.3g} ms ({mode})"
            )
    return None
