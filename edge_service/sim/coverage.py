"""How far the catalog's profiles cover a trace: extrapolation factors and missing modes.

The predictor scales the nearest profile when there is none for the exact device and power
mode (`edge_service.control.predictor`); the factors here say by how much, and the mode
gaps say which of the trace's power modes were never profiled on the device.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence

from edge_service.control.predictor import Estimate
from edge_service.errors import NotFoundError
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.monitor.context import Context
from edge_service.repository import Catalog, Profile, Variant
from edge_service.sim.report import ModeGap

ModeKey = tuple[int | None, str]  # (nvpmodel id, name) of a context's power mode


def extrapolation(estimate: Estimate) -> float | None:
    """The factor by which ``estimate``'s latency was scaled from its profile: 1.0 when
    measured, None when unmeasured (infinite)."""
    factor = estimate.extrapolation
    return factor if math.isfinite(factor) and factor > 0 else None


def max_extrapolation(factors: Iterable[float | None]) -> float | None:
    """The factor furthest from 1 (largest |log|): 1.0 for none, None if any is unknown."""
    worst = 1.0
    for factor in factors:
        if factor is None or not (math.isfinite(factor) and factor > 0):
            return None
        if abs(math.log(factor)) > abs(math.log(worst)):
            worst = factor
    return worst


def mode_gaps(
    contexts: Sequence[Context], catalog: Catalog, device: str, targets: Collection[str]
) -> list[ModeGap]:
    """The trace's power modes (in order of first appearance) where some of ``targets``
    have no batch-1 profile on ``device``, with how many contexts are in each."""
    counts = Counter(mode_key(ctx) for ctx in contexts)
    variants = [v for v in catalog.variants if v.id in targets]
    gaps = []
    for (mode_id, mode), n in counts.items():
        missing = tuple(v.id for v in variants if _profile(v, device, mode) is None)
        if missing:
            gaps.append(ModeGap(mode=mode, mode_id=mode_id, contexts=n, missing=missing))
    return gaps


def mode_key(ctx: Context) -> ModeKey:
    """The context's power mode as profiles are keyed: its name, ``default`` when none."""
    mode = ctx.power_mode
    return (mode.id, mode.name) if mode is not None else (None, DEFAULT_POWER_MODE)


def profiled_devices(catalog: Catalog) -> list[str]:
    """Every device id some variant of ``catalog`` has a profile for, sorted."""
    return sorted({d for v in catalog.variants for d, modes in v.profiles.items() if modes})


def require_profiles(catalog: Catalog, device: str) -> None:
    """NotFoundError, listing the device ids there are, unless some variant of ``catalog``
    has a profile on ``device``."""
    known = profiled_devices(catalog)
    if device in known:
        return
    where = (
        f"it has profiles for: {', '.join(known)}; pass one of them as --profiles-device, "
        if known
        else "it has no profiles at all; "
    )
    raise NotFoundError(
        f"no variant of family {catalog.family!r} has profiles on device {device!r}: {where}"
        f"or run `edge-service profile` on that device first"
    )


def _profile(variant: Variant, device: str, mode: str) -> Profile | None:
    """The batch-1 profile the predictor would take as measured, if any."""
    profile = variant.profiles.get(device, {}).get(mode)
    return profile if profile is not None and profile.latency_ms(1) is not None else None
