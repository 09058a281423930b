"""Fewer engine threads while other processes hold the cores.

An ONNX Runtime CPU engine splits each call over its intra-op threads and waits for the
slowest. With every core busy with other work, one of those threads is preempted now and
then and the whole call waits for it: on 2 cores with a 2-process competitor, 3-6% of
sub-millisecond calls at 2 threads took 3-8 ms (the oracle sweeps of bench/served_learning.py),
whatever the variant, so no variant met a tight budget; at one thread the same competitor
cost a few tenths of a percent. So while other processes use the cores the engines'
threads would need, the engines run fewer threads, and get their threads back once the
cores have been free for a while.

How many: other processes' share of the cores is what the board's CPU load says is busy
minus what this process used itself (`others = load x cores - own`, smoothed over
``smooth_s``). Each thread needs a core of its own, so the engines run
``round(cores - others)`` threads, at least one and at most the power mode's count. Fewer
threads are taken at once; more only after ``restore_s`` of the cores being free, so a
competitor that pauses for a moment does not make the engines reload twice. Fewer are
taken only while the reading of the moment agrees with the smoothed one: a competitor that
just left (a CPU hog stopped as the power mode went MIN -> MAXN) still weighs in the
smoothed load for a few tenths of a second, and took the engines to one thread, and back
3 s later, two reloads for nothing (the learning bench, "random" MAXN phase).

A competitor that comes or goes (the others' load moves by ``shift_cores`` since the last
such move, or by a quarter of the cores where that is less) is also a new regime for the
controller (`shifted`): the stalls it recorded and the variants it backed off from
describe the board as it was. On one core a busy competitor takes about half of it from
the served thread (the scheduler's fair share), and the others' load, smoothed, only
approaches that: a 0.5-core threshold was never crossed there, so in emulated MIN the
controller never saw a hog come or go, and stayed on the variant it had stepped down to
after the hog left (the roadside bench's "competitor comes and goes", its last phase).

Pure logic with the time passed in; `edge_service.server.threads` feeds it and reloads
the engines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_service.errors import ConfigError

SHIFT_SHARE = 0.25  # of the cores: a competitor's move that is a new regime on few cores


@dataclass(frozen=True, kw_only=True)
class ThreadGuardConfig:
    """``smooth_s``: time constant of the others' load (one busy sample is not a
    competitor); ``restore_s``: how long the cores must be free before threads come back."""

    smooth_s: float = 0.5
    restore_s: float = 3.0
    shift_cores: float = 0.5  # at most; a quarter of the cores where that is less

    def __post_init__(self) -> None:
        for name in ("smooth_s", "restore_s", "shift_cores"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"thread guard {name} must be a finite number >= 0, got {value}")


class ThreadGuard:
    """The engines' thread count under competition for the cores (module doc)."""

    def __init__(self, config: ThreadGuardConfig | None = None) -> None:
        self.config = config or ThreadGuardConfig()
        self._others: float | None = None  # cores other processes use, smoothed
        self._t: float | None = None
        self._cap: int | None = None  # None: the mode's own count
        self._free_since: float | None = None  # since when the cores would allow more
        self._regime: float | None = None  # the others' load at the last shift
        self.shifted = False  # the last update moved the others' load by shift_cores
        self.shift_by = 0.0  # ... by this many cores (< 0: a competitor left)

    @property
    def others(self) -> float:
        """The cores other processes use, smoothed (0 before the first update)."""
        return self._others or 0.0

    def update(
        self, t: float, busy_cores: float, own_cores: float, cores: int, mode_threads: int
    ) -> int:
        """Fold one reading in (at time ``t``: ``busy_cores`` of the ``cores`` busy, of which
        ``own_cores`` were this process) and return the threads engines should run, at
        most ``mode_threads``."""
        now_others = max(0.0, busy_cores - own_cores)
        others = self._smooth(t, now_others)
        if self._regime is None:
            self._regime = others
        threshold = min(self.config.shift_cores, SHIFT_SHARE * max(1, cores))
        self.shifted = abs(others - self._regime) >= threshold
        self.shift_by = others - self._regime if self.shifted else 0.0
        if self.shifted:
            self._regime = others
        if mode_threads <= 1 or cores <= 1:
            self._cap, self._free_since = None, None
            return max(1, mode_threads)
        fit = _fit(cores, others, mode_threads)
        now = mode_threads if self._cap is None else min(self._cap, mode_threads)
        # fewer only as far as this reading agrees: one that left is not smoothed into a stay
        fewer = _fit(cores, min(others, now_others), mode_threads)
        if fewer < now:
            self._cap, self._free_since = fewer, None
        elif fit > now:
            if self._free_since is None:
                self._free_since = t
            if t - self._free_since >= self.config.restore_s:
                self._cap = None if fit >= mode_threads else fit
                self._free_since = None
        else:
            self._free_since = None
        return mode_threads if self._cap is None else min(self._cap, mode_threads)

    def _smooth(self, t: float, value: float) -> float:
        if self._others is None or self._t is None or self.config.smooth_s == 0:
            self._others = value
        else:
            alpha = 1.0 - math.exp(-max(0.0, t - self._t) / self.config.smooth_s)
            self._others += alpha * (value - self._others)
        self._t = t
        return self._others


def _fit(cores: int, others: float, mode_threads: int) -> int:
    """Threads that each get a free core beside ``others`` busy ones: at least one, at
    most the mode's."""
    return min(mode_threads, max(1, math.floor(cores - others + 0.5)))
