"""Online latency learning: what each variant really costs, in each power mode, on this board.

The model of one engine call of variant ``v`` in power mode ``m`` on a processor:

    observed = ref(v, m) x contention(processor, m) + stall

- ``ref(v, m)``, the variant's own latency in the mode with the shared contention divided
  out, is learned from that variant's calls: the ones it served and the shadow runs the
  explorer made on a standby engine. Samples are weighted by age (``half_life_s``), so the
  confidence ``n / (n + confident_n)`` grows with samples and decays with time. The
  profile's latency is the prior: the estimate is ``confidence x learned + (1 -
  confidence) x prior``, so observations win once they are many and recent.
- ``contention(processor, m)`` is shared by every variant on the processor: it tracks the
  median of observed / learned ref over the *served* engine's calls, one multiplicative
  step per call (a competitor that doubles the time is followed within ~15 calls). Other
  processes, throttling or a busy GPU slow every engine on the processor alike, so what
  the active engine shows applies to the variants it does not run. It starts at 1 and
  holds while the observed variant's own ref rests on too few samples, so a variant's own
  cost (its overhead against its profile) is learned as that variant's, not as contention
  for all: 1 means "as when the variants were learned". Shadow runs do not move it: they
  teach their own variant only, so a variant whose cost was misjudged is corrected
  without shifting every other prediction. A mode seen for the first time starts from
  the processor's last contention.
- ``stall``: what preemption adds on top. The 99th percentile of (observed - predicted
  p50) over the served calls of the last ``stall_window_s`` seconds, in ms and relative
  to the expected time, bounds every variant's p99 once ``stall_min`` calls were seen: a
  variant's p50 plus the larger of the two (the ms for a shorter call, which waits as
  long when preempted; the share for a longer one, which is preempted more often).
  The window is in seconds, so a competitor that left stops counting soon after (and a
  competitor the server sees leave is forgotten at once: `forget_stalls`). The tail is
  at most the ``STALL_SEEN``-th largest stall: below 100 calls in the window (under
  25 requests/s) the 99th percentile is the second largest, and two lone preemptions
  (3-5 ms each, which a variant that keeps its SLO shows) made every variant look over
  the budget. (A 10 s window instead kept the loop at the bottom for 10 s after a
  competitor's stalls, in the served bench.)
- A variant's own tail (its p99 beyond the shared stalls) is learned from its shadow runs
  only; for a variant never measured that way it is the profile's.

Every sample is divided by the contention in force when it was taken, so a competitor
that came and went raises the contention while it lasts and leaves the refs as they were.

Engines running fewer threads than the mode gives them (the thread fallback under a CPU
competitor, `edge_service.control.threads`) are another machine: what is learned there
is kept apart (`set_regime`), so a variant's cost at one thread never overwrites what it
costs at the mode's threads, and the engines find that again when their threads come back.

The learner holds the only mutable state of the prediction, under one lock; the clock is
injected, so tests are deterministic.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge_service.control.learner_stats import blend, clamp, quantile, top, weighted
from edge_service.errors import ConfigError

WINDOW = 256  # samples kept per variant and mode
REF_REFRESH = 8  # request path: statistics recomputed every this many samples
STATS_REFRESH_S = 1.0  # ... or when this old (sample ages changed)
STALL_REFRESH_S = 0.1
STALL_SEEN = 3  # the stall tail is at most the third largest stall in the window
STALL_KEEP = 2048  # served calls whose stalls are kept (trimmed to the window in seconds)


@dataclass(frozen=True, kw_only=True)
class LearnerConfig:
    """How fast the learner trusts and forgets.

    ``half_life_s``: age at which a sample of the median weighs half (the tail uses
    ``tail_half_life_s``, shorter, so a burst of slow calls fades sooner);
    ``confident_n`` / ``tail_confident_n``: effective samples at which observations weigh as
    much as the profile; ``step``: how far (in log) one served call moves the contention;
    ``anchor_n``: effective samples of a variant before its served calls move the
    contention.
    """

    half_life_s: float = 120.0
    tail_half_life_s: float = 20.0
    confident_n: float = 16.0
    tail_confident_n: float = 30.0
    step: float = 0.05
    anchor_n: float = 8.0
    stall_window_s: float = 4.0
    stall_min: int = 32
    stall_quantile: float = 0.99

    def __post_init__(self) -> None:
        if not 0.0 < self.step <= 1.0:
            raise ConfigError(
                f"learner step must be in (0, 1] (log change of the contention per served "
                f"call), got {self.step}; 0.05 is a good default"
            )
        for name in ("half_life_s", "tail_half_life_s", "confident_n", "tail_confident_n"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"learner {name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Learned:
    """The learned latency of one variant in one mode, blended with its prior.

    ``p50_ms`` / ``p99_ms`` include the contention now (``contention``) and the shared
    stall tail (``stall_ms``, None until enough served calls were seen); ``confidence`` is
    the weight observations have in the median (0: the profile alone); ``samples`` the
    age-weighted number of observations; ``age_s`` the age of the newest (None: never).
    """

    p50_ms: float
    p99_ms: float
    confidence: float
    samples: float
    contention: float
    stall_ms: float | None
    age_s: float | None


@dataclass
class _Series:
    """The samples of one (variant, mode): (time, ms with the contention divided out)."""

    # (time, ms with the contention divided out, from a shadow run)
    samples: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    last_shadow_t: float | None = None
    added: int = 0  # samples ever added (the deque forgets, this does not)
    stats: _Stats | None = None  # computed at some `added` and time


@dataclass(frozen=True)
class _Tail:
    """The stall tail of the served calls: in ms, and relative to the expected time."""

    ms: float
    relative: float

    def for_call(self, p50_ms: float) -> float:
        """What the tail adds to a call of ``p50_ms``: at least the stall seen in ms (a
        preempted short call waits as long), and for a longer call the same share of it
        (a longer call is preempted more often and longer)."""
        return max(self.ms, self.relative * p50_ms)


@dataclass(frozen=True)
class _Stats:
    """What one series' samples say, computed at ``added`` samples and time ``t``:
    weighted median and age-weighted count (median half-life), and the weighted 99th
    percentile of the shadow samples with their count (tail half-life)."""

    added: int
    t: float
    p50: float
    n: float
    p99: float | None
    n99: float


class LatencyLearner:
    """Per-variant, per-mode latency from what the server observes (module doc)."""

    def __init__(
        self, config: LearnerConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or LearnerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._contention: dict[tuple[str, str], float] = {}
        self._last_contention: dict[str, float] = {}  # processor -> last value, any mode
        # (time, observed - expected ms, the same relative to expected), served calls
        self._stalls: dict[tuple[str, str], deque[tuple[float, float, float]]] = {}
        self._tail_cache: dict[tuple[str, str], tuple[float, int, _Tail | None]] = {}
        self._stall_added: dict[tuple[str, str], int] = {}
        self._regime = ""  # "" at the mode's engine threads, else e.g. "1t"

    def set_regime(self, threads: int | None) -> None:
        """Learn with engines at ``threads`` threads from now on (fewer than the mode gives
        them: the thread fallback; None: the mode's own): each regime keeps its own
        latencies, contention and stalls per mode; a regime seen for the first time starts
        from the processor's last contention, like a new mode."""
        self._regime = "" if threads is None else f"{threads}t"

    def _keyed(self, mode: str) -> str:
        regime = self._regime
        return f"{mode}|{regime}" if regime else mode

    def reset_contention(self) -> None:
        """Back to no contention on every processor (a CPU competitor left: the refs are
        what each variant costs without one); the served calls take it from there."""
        with self._lock:
            self._contention.clear()
            self._last_contention.clear()

    def now(self) -> float:
        """The learner's clock (monotonic seconds unless injected)."""
        return self._clock()

    def observe(
        self,
        variant_id: str,
        mode: str,
        processor: str,
        observed_ms: float,
        *,
        shadow: bool = False,
    ) -> None:
        """Fold one engine call of ``variant_id`` in ``mode`` into what is learned.

        A served call (``shadow=False``) also moves the processor's contention and stall
        tail, once the variant's own latency rests on ``anchor_n`` samples: until then the
        contention holds, so what is new about a variant goes to that variant and not to
        every other one. The contention compares with learned latencies only, so the
        profile plays no part here (it is the prior of `learned`).
        """
        if not (math.isfinite(observed_ms) and observed_ms >= 0):
            raise ValueError(f"observed_ms must be a finite latency >= 0, got {observed_ms}")
        now = self._clock()
        mode = self._keyed(mode)
        with self._lock:
            series = self._series.setdefault((variant_id, mode), _Series())
            c = self._contention_locked(processor, mode)
            ref = self._ref_locked(series, now)
            series.samples.append((now, observed_ms / c, shadow))
            series.added += 1
            if shadow:
                series.last_shadow_t = now
            elif ref is not None and ref > 0:
                # a step up or down, by whether the call ran slower than ref x contention:
                # this tracks the median (no drift in steady state, unlike a mean of
                # ratios against a median, which skewed latencies push up forever), and
                # one outlier moves it by one step only
                c = clamp(
                    c * math.exp(self.config.step if observed_ms > ref * c else -self.config.step)
                )
                self._contention[(processor, mode)] = self._last_contention[processor] = c
                stalls = self._stalls.setdefault((processor, mode), deque(maxlen=STALL_KEEP))
                expected = ref * c
                stalls.append((now, observed_ms - expected, observed_ms / expected - 1.0))
                key = (processor, mode)
                self._stall_added[key] = self._stall_added.get(key, 0) + 1

    def learned(
        self, variant_id: str, mode: str, processor: str, prior_p50_ms: float, prior_p99_ms: float
    ) -> Learned:
        """The prediction for ``variant_id`` in ``mode``: learned samples blended with the
        prior (the profile's p50 / p99 in this context), times the contention, with the
        stall tail."""
        now = self._clock()
        mode = self._keyed(mode)
        with self._lock:
            c = self._contention_locked(processor, mode)
            series = self._series.get((variant_id, mode))
            tail = self._stall_tail_locked(processor, mode, now)
            if series is None or not series.samples:
                return _learned(prior_p50_ms, prior_p99_ms, 0.0, 0.0, c, tail, None)
            stats = self._stats_locked(series, now, exact=True)
            age = now - series.samples[-1][0]
        ref50, conf = blend(stats.p50, stats.n, prior_p50_ms, self.config.confident_n)
        ref99 = prior_p99_ms
        if stats.p99 is not None:
            ref99, _ = blend(stats.p99, stats.n99, prior_p99_ms, self.config.tail_confident_n)
        return _learned(ref50, max(ref99, ref50), conf, stats.n, c, tail, age)

    def last_shadow(self, variant_id: str, mode: str) -> float | None:
        """When ``variant_id`` was last measured by a shadow run in ``mode`` (clock time)."""
        mode = self._keyed(mode)
        with self._lock:
            series = self._series.get((variant_id, mode))
            return series.last_shadow_t if series is not None else None

    def contention(self, processor: str, mode: str) -> float:
        """The processor's contention factor in ``mode`` (1.0 until anything was served)."""
        mode = self._keyed(mode)
        with self._lock:
            return self._contention_locked(processor, mode)

    def raise_contention(self, processor: str, mode: str, at_least: float) -> float:
        """Raise the processor's contention in ``mode`` to ``at_least`` at once (never
        lower it), and return it: served calls that broke the budget back to back are
        evidence enough that every engine on the processor slowed, before the one step
        per call gets there. The served calls bring it down again if it overshot."""
        if not (math.isfinite(at_least) and at_least > 0):
            raise ValueError(f"contention must be a finite factor > 0, got {at_least}")
        mode = self._keyed(mode)
        with self._lock:
            c = max(self._contention_locked(processor, mode), clamp(at_least))
            self._contention[(processor, mode)] = self._last_contention[processor] = c
            return c

    def forget_stalls(self) -> None:
        """Drop the recorded stalls (a competitor came or went, the engines' threads
        changed): they describe the board as it was; new served calls rebuild the tail."""
        with self._lock:
            self._stalls.clear()
            self._tail_cache.clear()

    def forget(self, variant_ids: Iterable[str]) -> None:
        """Drop what was learned of these variants (their engine was rebuilt)."""
        gone = set(variant_ids)
        with self._lock:
            for key in [k for k in self._series if k[0] in gone]:
                del self._series[key]

    def reset(self) -> None:
        """Forget everything learned (every variant, contention and stall)."""
        with self._lock:
            self._series.clear()
            self._contention.clear()
            self._last_contention.clear()
            self._stalls.clear()
            self._tail_cache.clear()

    def _contention_locked(self, processor: str, mode: str) -> float:
        found = self._contention.get((processor, mode))
        return found if found is not None else self._last_contention.get(processor, 1.0)

    def _ref_locked(self, series: _Series, now: float) -> float | None:
        """The variant's learned contention-free p50 that a served call is compared with,
        or None while it rests on fewer than ``anchor_n`` samples."""
        stats = self._stats_locked(series, now, exact=False)
        return stats.p50 if stats.n >= self.config.anchor_n else None

    def _stats_locked(self, series: _Series, now: float, *, exact: bool) -> _Stats:
        """The series' statistics, recomputed when samples came (``exact``: any; else
        every ``REF_REFRESH``: the request path) or a second passed (ages changed).
        Sorting a few hundred samples holds the GIL, which delays every other thread, so
        the tick and the request path do it only when something changed."""
        old = series.stats
        if old is not None and now - old.t < STATS_REFRESH_S:
            fresh = old.added == series.added if exact else series.added - old.added < REF_REFRESH
            if fresh:
                return old
        values, weights = weighted(series.samples, now, self.config.half_life_s)
        shadow = [sample for sample in series.samples if sample[2]]
        tail_values, tail_weights = weighted(shadow, now, self.config.tail_half_life_s)
        series.stats = _Stats(
            added=series.added,
            t=now,
            p50=quantile(values, weights, 0.5),
            n=sum(weights),
            p99=quantile(tail_values, tail_weights, 0.99) if tail_values else None,
            n99=sum(tail_weights),
        )
        return series.stats

    def _stall_tail_locked(self, processor: str, mode: str, now: float) -> _Tail | None:
        """The stall tail, recomputed when stalls came, at most every ``STALL_REFRESH_S``
        (a sort); a window that aged is trimmed at the next recomputation."""
        key = (processor, mode)
        cached = self._tail_cache.get(key)
        stalls = self._stalls.get(key)
        added = self._stall_added.get(key, 0)
        if cached is not None and 0 <= now - cached[0] < STALL_REFRESH_S and cached[1] == added:
            return cached[2]
        value = None
        if stalls is not None:
            while stalls and now - stalls[0][0] > self.config.stall_window_s:
                stalls.popleft()
            if len(stalls) >= self.config.stall_min:
                q = self.config.stall_quantile
                value = _Tail(
                    top([a for _, a, _ in stalls], q, STALL_SEEN),
                    top([r for _, _, r in stalls], q, STALL_SEEN),
                )
        self._tail_cache[key] = (now, added, value)
        return value


def _learned(
    ref50: float,
    ref99: float,
    conf: float,
    n: float,
    c: float,
    tail: _Tail | None,
    age: float | None,
) -> Learned:
    p50 = ref50 * c
    if tail is None:
        return Learned(p50, ref99 * c, conf, n, c, None, age)
    stall = tail.for_call(p50)
    return Learned(p50, max(ref99 * c, p50 + stall), conf, n, c, stall, age)
