"""The thread fallback of a running server: on every adaptation tick, how many cores other
processes hold (the board's CPU load less this process's own CPU time), and the engines
reloaded at fewer threads while they hold them (`edge_service.control.threads`).

Only ONNX Runtime CPU engines are concerned (a TensorRT engine's threads do not split its
calls), and only where the power mode gives them more than one thread. The engines swap
atomically (requests in flight finish on the old ones), each change is an event of kind
``threads``, and with one thread per engine shadow runs become safe, so the controller
measures the variants it could move to under the competitor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edge_service.control.threads import ThreadGuard
from edge_service.monitor.context import Context

log = logging.getLogger(__name__)


class ThreadFallback:
    """Feeds a `ThreadGuard` from the loop's ticks and asks ``apply`` to reload the engines
    when the count it wants differs from the one in force.

    ``apply(threads, reason)`` returns False when it could not act now (an operator call
    holds the service); the next tick asks again. ``mode_threads()`` is the power mode's
    count; ``cpu_engines()`` whether any servable engine runs on ONNX Runtime's CPU
    threads; ``shift(cores)`` is called when a competitor came or went (a new regime for
    the controller; ``cores`` < 0 when it left), the thread count moving or not."""

    def __init__(
        self,
        apply: Callable[[int | None, str], bool],
        mode_threads: Callable[[], int],
        cpu_engines: Callable[[], bool],
        guard: ThreadGuard | None = None,
        *,
        shift: Callable[[float], None] = lambda _cores: None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._apply, self._mode_threads, self._cpu_engines = apply, mode_threads, cpu_engines
        self._shift = shift
        self.guard = guard or ThreadGuard()
        self._clock, self._cpu_clock = clock, cpu_clock
        self._last: tuple[float, float] | None = None  # (wall, this process's CPU seconds)
        self.cap: int | None = None  # the count in force below the mode's (None: the mode's)

    def on_tick(self, ctx: Context, _decision: Any = None) -> None:
        """One reading of the board: fold it in, and reload the engines if the count moves."""
        now, cpu = self._clock(), self._cpu_clock()
        last, self._last = self._last, (now, cpu)
        if last is None or now <= last[0]:
            return
        own = (cpu - last[1]) / (now - last[0])
        mode = self._mode_threads()
        cores = max(1, ctx.cpu_online)
        busy = ctx.cpu_load * cores
        if not self._cpu_engines():
            return
        wanted = self.guard.update(now, busy, own, cores, mode)
        if self.guard.shifted:
            self._shift(self.guard.shift_by)
        cap = None if wanted >= mode else wanted
        if cap == self.cap:
            return
        others = self.guard.others
        if cap is None:
            reason = f"cores free again (other processes use {others:.1f} of {cores}) -> "
            reason += f"engines back to the mode's {mode} threads"
        else:
            reason = f"other processes use {others:.1f} of {cores} cores -> engines at "
            reason += f"{cap} thread{'s' if cap > 1 else ''} (the mode's {mode} would wait "
            reason += "on preempted threads)"
        before, self.cap = self.cap, cap  # what the engines load with from now on
        if not self._apply(cap, reason):
            self.cap = before
            return
        log.info("thread fallback: %s", reason)
