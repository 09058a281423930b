"""Predicts each variant's latency, memory, power and energy in the board's current Context.

The model has three steps.

1. **Look up.** The variant's profile on this device in the Context's power mode (the
   ``default`` mode when the source reports none) is used as measured.
2. **Scale.** Otherwise the nearest measured profile (this device first, then any device) is
   scaled by the compute the board has now against what it had when measured:

   - CPU backends (ONNX Runtime without CUDA): latency x (cores then / cores now) x
     (CPU clock then / CPU clock now). "Cores" is the parallelism the engine can use: its
     thread count capped by the cores online (0 threads means all of them), so a
     single-threaded engine does not slow down when cores go offline. The CPU clock now is
     the fastest online core's current clock (the Context has no per-mode CPU maximum).
   - GPU backends (TensorRT, or ONNX Runtime with the CUDA / TensorRT provider): latency x
     (GPU max clock then / GPU clock now), the clock now being the mode's GPU maximum where
     the source reads it, else the current clock. The maximum comes first because devfreq
     drops an idle GPU to its lowest clock, which would make every engine look up to ten
     times slower whenever the service is quiet.

   A ratio whose either side is unknown or not positive is 1: no information, no scaling.
   "Nearest" is the profile needing the least scaling (smallest sum of |log ratio|), ties
   to the one recording more resources, then by name. Linear scaling is a first-order
   model (kernels scale sub-linearly with cores, memory-bound ones barely with clocks);
   step 3 absorbs what it gets wrong.
3. **Learn.** At batch 1 the scaled (or measured) profile is only the prior. What the server
   observes refines it (`edge_service.control.learner`): each variant's own latency in each
   power mode, learned from the calls it served and from shadow runs on a standby engine,
   with a confidence that grows with samples and decays with age; times the contention
   shared by every variant on the processor (learned on the served engine: other
   processes, a busy GPU or throttling slow every engine on it alike); plus the recent
   stall tail of the served calls, which bounds every variant's p99 (preemption adds time
   whatever the variant). Observations win once they are confident.

Each estimate says how it was made: ``source`` (measured, scaled from which mode and
device, or unmeasured), ``extrapolation`` (the factor a profile of another mode or device
was scaled by; 1.0 when measured here), ``confidence`` and ``samples`` (how much of it is
observation).

Energy is the profile's energy (or, without one, its mean power x latency) scaled by the
predicted / profiled latency ratio: constant power, so energy follows time. Memory, power
and accuracy are taken from the profile and the catalog unscaled. A variant with no profile
for the requested batch size anywhere is "unmeasured": infinite latency, unknown rest.

Only the controller's *targets* are estimated for choosing (`Predictor.estimates`): the
variants the build's gate left servable (`controller_targets`). Rejected and dominated
ones never become the controller's choice; an operator's pin may add a dominated one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from edge_service.control.learner import LatencyLearner, Learned
from edge_service.control.scaling import is_gpu_backend, ratios, scale_factor
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.monitor.context import Context
from edge_service.repository import Catalog, Profile, Variant

log = logging.getLogger(__name__)

MEASURED = "measured"
UNMEASURED = "unmeasured"


@dataclass(frozen=True)
class Estimate:
    """What one variant is predicted to cost in one Context, at one batch size.

    ``p50_ms`` / ``p99_ms`` are per call at that batch, learning included (infinite when
    unmeasured); ``energy_mj`` is per call, None when neither energy nor power was profiled.
    ``source`` is ``"measured"``, ``"scaled from <mode>"`` (``"... on <device>"`` when the
    profile is another device's) or ``"unmeasured"``; ``extrapolation`` the factor that
    profile was scaled by (1.0 when measured, infinite when unmeasured). ``prior_p50_ms``
    is the profile's figure before learning, ``correction`` the processor's contention
    factor applied, ``confidence`` the weight observations have in ``p50_ms`` and
    ``samples`` the age-weighted number of them, ``age_s`` the age of the newest (None:
    never observed); ``mode`` the power mode it is for.
    """

    variant_id: str
    accuracy: float | None
    p50_ms: float
    p99_ms: float
    memory_mb: float | None
    power_mw: float | None
    energy_mj: float | None
    energy_estimated: bool
    source: str
    correction: float = 1.0
    prior_p50_ms: float | None = None
    extrapolation: float = 1.0
    confidence: float = 0.0
    samples: float = 0.0
    age_s: float | None = None
    mode: str = DEFAULT_POWER_MODE

    @property
    def model_p50_ms(self) -> float:
        """The profile's p50 in this context before anything was learned."""
        return self.prior_p50_ms if self.prior_p50_ms is not None else self.p50_ms

    @property
    def measured(self) -> bool:
        """True when taken from a profile of this exact device and power mode."""
        return self.source == MEASURED

    @property
    def extrapolated(self) -> bool:
        """True when no profile of this device and mode exists (scaled or unmeasured)."""
        return self.source != MEASURED

    def to_dict(self) -> dict[str, object]:
        """The prediction as JSON (infinite figures as None) for the status and events."""
        return {
            "variant": self.variant_id,
            "p50_ms": _finite(self.p50_ms),
            "p99_ms": _finite(self.p99_ms),
            "prior_p50_ms": _finite(self.prior_p50_ms),
            "source": self.source,
            "extrapolated": self.extrapolated,
            "extrapolation": _finite(self.extrapolation),
            "confidence": round(self.confidence, 3),
            "samples": round(self.samples, 1),
            "age_s": None if self.age_s is None else round(self.age_s, 1),
            "contention": round(self.correction, 3),
            "mode": self.mode,
        }


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class _Source:
    """The profile an estimate starts from, and where it was measured."""

    profile: Profile
    device: str
    mode: str


class Predictor:
    """Estimates for every variant of ``catalog`` on ``device``, refined by ``learner``.

    The learner is the only mutable state; it is shared by reference, so a new Predictor
    (a new policy, a reloaded catalog) keeps what the server has learned. Given the
    learner's state, `estimate` is deterministic.
    """

    def __init__(
        self, catalog: Catalog, device: str, *, learner: LatencyLearner | None = None
    ) -> None:
        self._catalog, self._device = catalog, device
        self._learner = learner if learner is not None else LatencyLearner()
        self._targets = frozenset(v.id for v in controller_targets(catalog, device))

    @property
    def device(self) -> str:
        """The device id profiles are looked up under."""
        return self._device

    @property
    def learner(self) -> LatencyLearner:
        """What the server has learned of the variants' latencies."""
        return self._learner

    @property
    def targets(self) -> frozenset[str]:
        """Ids of the variants the controller may choose (`controller_targets`)."""
        return self._targets

    def estimate(self, variant_id: str, ctx: Context, batch: int = 1) -> Estimate:
        """Predict ``variant_id`` in ``ctx`` at ``batch``; NotFoundError for an unknown id."""
        variant = self._catalog.variant(variant_id)
        accuracy = device_accuracy(variant, self._device)
        mode = _mode_name(ctx)
        found = self._find(variant, ctx, batch)
        if found is None:
            return _unmeasured(variant_id, accuracy, mode)
        stats = found.profile.latency[str(batch)]
        measured = found.device == self._device and found.mode == mode
        factor = 1.0 if measured else scale_factor(found.profile, variant, ctx)
        prior50, prior99 = stats.p50_ms * factor, stats.p99_ms * factor
        learned = self._learned(variant_id, mode, prior50, prior99, batch)
        untouched = learned.samples == 0 and learned.contention == 1.0
        exact = measured and batch == 1 and untouched
        energy, energy_estimated = _energy(found.profile, learned.p50_ms, exact=exact)
        return Estimate(
            variant_id=variant_id,
            accuracy=accuracy,
            p50_ms=learned.p50_ms,
            p99_ms=learned.p99_ms,
            memory_mb=found.profile.memory_mb,
            power_mw=found.profile.power_mw,
            energy_mj=energy,
            energy_estimated=energy_estimated,
            source=MEASURED if measured else self._scaled_label(found),
            correction=learned.contention,
            prior_p50_ms=prior50,
            extrapolation=factor,
            confidence=learned.confidence,
            samples=learned.samples,
            age_s=learned.age_s,
            mode=mode,
        )

    def estimates(
        self, ctx: Context, batch: int = 1, *, also: Collection[str] = ()
    ) -> list[Estimate]:
        """`estimate` for every controller target (`controller_targets`), plus the
        variants named in ``also`` (operator pins) unless rejected, in catalog order;
        unknown ids in ``also`` are skipped (the policy reports an unknown pin)."""
        wanted = [
            v.id
            for v in self._catalog.variants
            if v.id in self._targets or (v.id in also and v.status != "rejected")
        ]
        return [self.estimate(vid, ctx, batch) for vid in wanted]

    def observe(self, estimate: Estimate, observed_ms: float, *, shadow: bool = False) -> None:
        """Fold one batch-1 engine call of ``estimate``'s variant, in ``estimate``'s mode,
        into what is learned: ``shadow`` for a measuring run beside the served load (it
        teaches that variant only), else a served call (it also moves the processor's
        contention and stall tail). NotFoundError for an unknown variant; ValueError for
        a negative or non-finite time."""
        processor = self._key(estimate.variant_id)  # NotFoundError for a typo
        self._learner.observe(
            estimate.variant_id, estimate.mode, processor, observed_ms, shadow=shadow
        )

    def raise_contention(self, estimate: Estimate, factor: float) -> float:
        """Raise the contention on ``estimate``'s processor, in its mode, to ``factor``
        times what ``estimate`` was made with (never lower it); the contention now."""
        processor = self._key(estimate.variant_id)
        return self._learner.raise_contention(
            processor, estimate.mode, estimate.correction * factor
        )

    def correction(self, variant_id: str, mode: str = DEFAULT_POWER_MODE) -> float:
        """The contention factor now applied to ``variant_id``'s processor in ``mode``."""
        return self._learner.contention(self._key(variant_id), mode)

    def _learned(
        self, variant_id: str, mode: str, prior50: float, prior99: float, batch: int
    ) -> Learned:
        """Batch 1 is learned per variant; other batch sizes (never observed one by one)
        take the profile times the processor's contention."""
        processor = self._key(variant_id)
        if batch == 1:
            return self._learner.learned(variant_id, mode, processor, prior50, prior99)
        c = self._learner.contention(processor, mode)
        return Learned(prior50 * c, prior99 * c, 0.0, 0.0, c, None, None)

    def _key(self, variant_id: str) -> str:
        """``"gpu"`` or ``"cpu"``: which processor's contention applies to the variant."""
        variant = self._catalog.variant(variant_id)
        profiles = [p for modes in variant.profiles.values() for p in modes.values()]
        on_gpu = variant.backend == "tensorrt" or any(is_gpu_backend(variant, p) for p in profiles)
        return "gpu" if on_gpu else "cpu"

    def _find(self, variant: Variant, ctx: Context, batch: int) -> _Source | None:
        """The exact profile if measured, else the nearest: this device first, then any."""
        mode = _mode_name(ctx)
        exact = variant.profiles.get(self._device, {}).get(mode)
        if exact is not None and str(batch) in exact.latency:
            return _Source(exact, self._device, mode)
        every = list(_sources(variant, batch))
        ours = [s for s in every if s.device == self._device]
        return min(ours or every, key=lambda s: _nearness(s, variant, ctx), default=None)

    def _scaled_label(self, source: _Source) -> str:
        where = "" if source.device == self._device else f" on {source.device}"
        return f"scaled from {source.mode}{where}"


def device_accuracy(variant: Variant, device: str) -> float | None:
    """The variant's top-1 on ``device``: measured there (a TensorRT profile's), else the
    catalog's."""
    return variant.top1_on(device)


def controller_targets(catalog: Catalog, device: str) -> list[Variant]:
    """The variants the controller may choose, in catalog order: the servable ones.

    Should a catalog have none (every variant rejected or dominated, which the gate never
    leaves: FP32 engines are never rejected and some variant is always undominated), the
    fastest on ``device`` is the one target, so the server still serves.
    """
    servable = [v for v in catalog.variants if v.servable]
    if servable:
        return servable
    fallback = min(catalog.variants, key=lambda v: (_batch1_ms(v, device), v.id))
    log.warning(
        "no variant of %s is servable on %s (all rejected or dominated); serving the "
        "fastest, %s: rebuild with `edge-service build`",
        catalog.family,
        device,
        fallback.id,
    )
    return [fallback]


def _batch1_ms(variant: Variant, device: str) -> float:
    profile = variant.profile_for(device, DEFAULT_POWER_MODE)
    ms = profile.latency_ms(1) if profile is not None else None
    return ms if ms is not None else math.inf


def _nearness(source: _Source, variant: Variant, ctx: Context) -> tuple[float, int, str, str]:
    """Sort key: least scaling, then most resources recorded, then names (deterministic)."""
    found = ratios(source.profile, variant, ctx)
    return sum(abs(math.log(r)) for r in found), -len(found), source.device, source.mode


def _energy(profile: Profile, p50_ms: float, *, exact: bool) -> tuple[float | None, bool]:
    """(energy per call in mJ, whether estimated) for a call predicted to take ``p50_ms``.

    Constant power: energy follows time, from the profiled batch-1 energy, else from the
    profiled mean power. ``exact`` is True only for the profile's own mode, batch 1, and
    nothing learned: anything else is a model, so it counts as estimated.
    """
    base_ms = profile.latency_ms(1)
    if profile.energy_mj is not None and base_ms:
        return profile.energy_mj * p50_ms / base_ms, profile.energy_estimated or not exact
    if profile.power_mw is not None:
        return profile.power_mw * p50_ms / 1000.0, True  # mW x ms = uJ
    return None, True


def _unmeasured(variant_id: str, accuracy: float | None, mode: str) -> Estimate:
    return Estimate(
        variant_id=variant_id,
        accuracy=accuracy,
        p50_ms=math.inf,
        p99_ms=math.inf,
        memory_mb=None,
        power_mw=None,
        energy_mj=None,
        energy_estimated=True,
        source=UNMEASURED,
        prior_p50_ms=math.inf,
        extrapolation=math.inf,
        mode=mode,
    )


def _mode_name(ctx: Context) -> str:
    """The power mode profiles are keyed by: the Context's, else ``default``."""
    return ctx.power_mode.name if ctx.power_mode is not None else DEFAULT_POWER_MODE


def _sources(variant: Variant, batch: int) -> Iterator[_Source]:
    """Every profile of ``variant`` that measured ``batch``."""
    for device, modes in variant.profiles.items():
        for mode, profile in modes.items():
            if str(batch) in profile.latency:
                yield _Source(profile, device, mode)
