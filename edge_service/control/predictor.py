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
3. **Correct.** Latency and energy are multiplied by an online correction, an EWMA of
   observed / predicted latency clamped to [0.25, 20], fed by `Predictor.observe` with the
   active engine's times. The correction belongs to the processor, not the variant: what
   makes the active engine slower than its profile (other processes on the CPU, a busy
   GPU, throttling) slows every engine on that processor alike, so one correction learned
   on the active CPU engine applies to every CPU variant (and one for the GPU ones). A
   per-variant correction would make every variant the server has not run lately look
   uncontended, and the policy would hop between them. The p99 also learns the tail: once
   64 calls were observed, a variant's p99 is at least its corrected p50 plus the 99th
   percentile of the recent *stalls* (observed time minus corrected p50) on that
   processor. Stalls (preemption by other threads or processes) add time whatever the
   variant, so they carry over to variants that were not observed.

Energy is the profile's energy (or, without one, its mean power x latency) scaled by the
predicted / measured latency ratio: constant power, so energy follows time. Memory, power
and accuracy are taken from the profile and the catalog unscaled. A variant with no profile
for the requested batch size anywhere is "unmeasured": infinite latency, unknown rest.

Only the controller's *targets* are estimated for choosing (`Predictor.estimates`): the
variants the build's gate left servable (`controller_targets`). Rejected and dominated
ones never become the controller's choice; an operator's pin may add a dominated one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from edge_service.errors import ConfigError
from edge_service.hostinfo import DEFAULT_POWER_MODE
from edge_service.monitor.context import Context
from edge_service.repository import Catalog, Profile, Variant

log = logging.getLogger(__name__)

STALL_WINDOW = 512  # engine calls whose stalls are kept (a few seconds at serving rates)
STALL_MIN = 64  # observed calls before the observed tail is trusted
STALL_QUANTILE = 0.99
CORRECTION_MIN = 0.25
CORRECTION_MAX = 20.0
MEASURED = "measured"
UNMEASURED = "unmeasured"


@dataclass(frozen=True)
class Estimate:
    """What one variant is predicted to cost in one Context, at one batch size.

    ``p50_ms`` / ``p99_ms`` are per call at that batch, correction included (infinite when
    unmeasured); ``energy_mj`` is per call, None when neither energy nor power was profiled.
    ``source`` is ``"measured"``, ``"scaled from <mode>"`` (``"... on <device>"`` when the
    profile is another device's) or ``"unmeasured"``. ``correction`` is the online factor
    already applied, so ``model_p50_ms`` is what to pass to `Predictor.observe`.
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

    @property
    def model_p50_ms(self) -> float:
        """The p50 before the online correction: the ``predicted_ms`` `observe` wants."""
        return self.p50_ms / self.correction

    @property
    def measured(self) -> bool:
        """True when taken from a profile of this exact device and power mode."""
        return self.source == MEASURED


@dataclass(frozen=True)
class _Source:
    """The profile an estimate starts from, and where it was measured."""

    profile: Profile
    device: str
    mode: str


class Predictor:
    """Estimates for every variant of ``catalog`` on ``device``, with online correction.

    The correction state is the only mutable part and is guarded by a lock, so the loop
    thread can `observe` while request threads call `estimate`. Given that state,
    `estimate` is deterministic.
    """

    def __init__(self, catalog: Catalog, device: str, *, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(
                f"predictor alpha must be in (0, 1] (weight of the newest observation), "
                f"got {alpha}; 0.2 is a good default"
            )
        self._catalog, self._device, self._alpha = catalog, device, alpha
        self._targets = frozenset(v.id for v in controller_targets(catalog, device))
        self._corrections: dict[str, float] = {}
        self._stalls: dict[str, deque[float]] = {}  # observed minus corrected p50, per processor
        self._tail: dict[str, float] = {}  # cached STALL_QUANTILE of _stalls
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        """The device name profiles are looked up under."""
        return self._device

    @property
    def targets(self) -> frozenset[str]:
        """Ids of the variants the controller may choose (`controller_targets`)."""
        return self._targets

    def estimate(self, variant_id: str, ctx: Context, batch: int = 1) -> Estimate:
        """Predict ``variant_id`` in ``ctx`` at ``batch``; NotFoundError for an unknown id."""
        variant = self._catalog.variant(variant_id)
        accuracy = device_accuracy(variant, self._device)
        correction = self.correction(variant_id)
        found = self._find(variant, ctx, batch)
        if found is None:
            return _unmeasured(variant_id, accuracy, correction)
        stats = found.profile.latency[str(batch)]
        measured = found.device == self._device and found.mode == _mode_name(ctx)
        factor = 1.0 if measured else scale_factor(found.profile, variant, ctx)
        p50 = stats.p50_ms * factor * correction
        exact = measured and batch == 1 and correction == 1.0
        energy, energy_estimated = _energy(found.profile, p50, exact=exact)
        return Estimate(
            variant_id=variant_id,
            accuracy=accuracy,
            p50_ms=p50,
            p99_ms=self._p99(variant_id, stats.p99_ms * factor, stats.p50_ms * factor, correction),
            memory_mb=found.profile.memory_mb,
            power_mw=found.profile.power_mw,
            energy_mj=energy,
            energy_estimated=energy_estimated,
            source=MEASURED if measured else self._scaled_label(found),
            correction=correction,
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

    def observe(self, variant_id: str, observed_ms: float, predicted_ms: float) -> None:
        """Fold one observation into ``variant_id``'s correction.

        ``predicted_ms`` is the model's prediction *before* correction
        (`Estimate.model_p50_ms`): the correction is an EWMA of observed / model, so feeding
        it corrected predictions would compound. Each ratio is clamped to [0.25, 20] before
        averaging, so one outlier (a GC pause) cannot swing the estimate to the bound. A
        prediction that is not a positive finite number (an unmeasured variant) teaches
        nothing and is skipped.
        """
        key = self._key(variant_id)  # NotFoundError for a typo, not a silent entry
        if not (math.isfinite(observed_ms) and observed_ms >= 0):
            raise ValueError(f"observed_ms must be a finite latency >= 0, got {observed_ms}")
        if not (math.isfinite(predicted_ms) and predicted_ms > 0):
            log.debug("no correction for %s: prediction %s is not usable", variant_id, predicted_ms)
            return
        ratio = _clamp(observed_ms / predicted_ms)
        with self._lock:
            old = self._corrections.get(key, 1.0)
            new = self._corrections[key] = _clamp(old + self._alpha * (ratio - old))
            stalls = self._stalls.setdefault(key, deque(maxlen=STALL_WINDOW))
            stalls.append(observed_ms - predicted_ms * new)
            self._tail.pop(key, None)

    def correction(self, variant_id: str) -> float:
        """The factor now applied to ``variant_id``'s latency and energy: its processor's
        (1.0 until an engine on that processor was observed)."""
        key = self._key(variant_id)
        with self._lock:
            return self._corrections.get(key, 1.0)

    def reset(self, variant_id: str) -> None:
        """Forget the correction of ``variant_id``'s processor (e.g. after re-profiling)."""
        key = self._key(variant_id)
        with self._lock:
            self._corrections.pop(key, None)
            self._stalls.pop(key, None)
            self._tail.pop(key, None)

    def _p99(self, variant_id: str, model_p99: float, model_p50: float, correction: float) -> float:
        """The profile's p99 scaled by the correction, or, once enough engine calls were
        observed, the corrected p50 plus the observed tail of stalls (what the board adds
        on top of the engine's own time: preemption by other threads and processes),
        whichever is larger."""
        key = self._key(variant_id)
        with self._lock:
            tail = self._tail.get(key)
            stalls = self._stalls.get(key)
            if tail is None and stalls is not None and len(stalls) >= STALL_MIN:
                ordered = sorted(stalls)
                tail = self._tail[key] = ordered[int(STALL_QUANTILE * (len(ordered) - 1))]
        scaled = model_p99 * correction
        if tail is None:
            return scaled
        return max(scaled, model_p50 * correction + tail)

    def _key(self, variant_id: str) -> str:
        """``"gpu"`` or ``"cpu"``: which processor's correction applies to the variant."""
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


def is_gpu_backend(variant: Variant, profile: Profile) -> bool:
    """True for TensorRT engines and ONNX Runtime profiles run on the CUDA / TensorRT EP."""
    marker = profile.backend.lower()
    return variant.backend == "tensorrt" or "cuda" in marker or "tensorrt" in marker


def scale_factor(profile: Profile, variant: Variant, ctx: Context) -> float:
    """How much slower (>1) or faster (<1) ``profile``'s latency is in ``ctx`` (module doc)."""
    return math.prod(_ratios(profile, variant, ctx))


def _ratios(profile: Profile, variant: Variant, ctx: Context) -> list[float]:
    """The then / now resource ratios this backend depends on, where both sides are known."""
    pairs: list[tuple[float | None, float | None]]
    if is_gpu_backend(variant, profile):
        gpu_now = ctx.gpu_max_freq_hz or ctx.gpu_freq_hz
        pairs = [(profile.gpu_max_freq_hz, gpu_now)]
    else:
        cpu_now = max(ctx.cpu_freqs_hz, default=None)
        pairs = [
            (
                _parallelism(profile.threads, profile.cores),
                _parallelism(profile.threads, ctx.cpu_online),
            ),
            (profile.cpu_max_freq_hz, cpu_now),
        ]
    return [then / now for then, now in pairs if then and now and then > 0 and now > 0]


def _parallelism(threads: int, cores: int | None) -> int | None:
    """Cores an engine with ``threads`` threads (0: one per core) can use on ``cores``."""
    if cores is None:
        return None
    return min(threads, cores) if threads > 0 else cores


def _nearness(source: _Source, variant: Variant, ctx: Context) -> tuple[float, int, str, str]:
    """Sort key: least scaling, then most resources recorded, then names (deterministic)."""
    ratios = _ratios(source.profile, variant, ctx)
    return sum(abs(math.log(r)) for r in ratios), -len(ratios), source.device, source.mode


def _energy(profile: Profile, p50_ms: float, *, exact: bool) -> tuple[float | None, bool]:
    """(energy per call in mJ, whether estimated) for a call predicted to take ``p50_ms``.

    Constant power: energy follows time, from the profiled batch-1 energy, else from the
    profiled mean power. ``exact`` is True only for the profile's own mode, batch 1, and no
    correction: anything else is a model, so it counts as estimated.
    """
    base_ms = profile.latency_ms(1)
    if profile.energy_mj is not None and base_ms:
        return profile.energy_mj * p50_ms / base_ms, profile.energy_estimated or not exact
    if profile.power_mw is not None:
        return profile.power_mw * p50_ms / 1000.0, True  # mW x ms = uJ
    return None, True


def _unmeasured(variant_id: str, accuracy: float | None, correction: float) -> Estimate:
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
        correction=correction,
    )


def _clamp(correction: float) -> float:
    return min(CORRECTION_MAX, max(CORRECTION_MIN, correction))


def _mode_name(ctx: Context) -> str:
    """The power mode profiles are keyed by: the Context's, else ``default``."""
    return ctx.power_mode.name if ctx.power_mode is not None else DEFAULT_POWER_MODE


def _sources(variant: Variant, batch: int) -> Iterator[_Source]:
    """Every profile of ``variant`` that measured ``batch``."""
    for device, modes in variant.profiles.items():
        for mode, profile in modes.items():
            if str(batch) in profile.latency:
                yield _Source(profile, device, mode)
