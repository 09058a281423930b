"""The adaptation loop's shadow runs: when one may start, one at a time, on a thread of
its own, and what it measured handed to the strategy.

A shadow run (``prober(variant_id)``: the engine times of calls the batcher makes on a
standby engine while no request waits) measures a variant before a voluntary move to it.
It runs beside the loop, not inside a tick: a detector's run of 26 calls of ~100 ms takes
2-3 s of one core, and a violation that came meanwhile used to wait for its end.

Runs take at most ``PROBE_DUTY`` of the time (the next may start once the last one's
engine time, divided by the duty, has passed), but the next is never more than
``PROBE_MAX_GAP_S`` away: a detector's run of 2.6 s kept the next one 52 s away, and a
variant the first run left short of verified was not measured again in that phase. A
competitor that left lifts the wait at once (`allow_now`): the runs that spaced it
measured a board that is gone.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge_service.errors import EdgeServiceError

if TYPE_CHECKING:
    from edge_service.control.strategy import Strategy

log = logging.getLogger(__name__)

PROBE_DUTY = 0.05  # at most this share of the time goes to shadow runs' engine calls
PROBE_MIN_GAP_S = 0.25  # between two shadow measurements
PROBE_FAILED_WAIT_S = 5.0  # after a shadow run that failed
PROBE_MAX_GAP_S = 8.0  # at most this between two (the strategy's longest retry, 8 s)

Prober = Callable[[str], list[float]]  # variant id -> engine ms of each shadow call


class ShadowRuns:
    """Starts one shadow run at a time through ``prober``; ``done()`` is called after each
    (the loop decides again with what it measured)."""

    def __init__(self, prober: Prober | None, done: Callable[[], None]) -> None:
        self.prober = prober  # None: no shadow runs
        self._done = done
        self._after = 0.0  # monotonic time before which no run starts
        self._thread: threading.Thread | None = None
        self.count = 0  # runs that measured

    @property
    def running(self) -> bool:
        """A run is under way."""
        return self._thread is not None and self._thread.is_alive()

    def due(self) -> bool:
        """A run may start now: a prober, no run under way, the duty cycle respected."""
        return self.prober is not None and not self.running and time.monotonic() >= self._after

    def next_in_s(self) -> float:
        """Seconds until the next run may start (inf while one runs)."""
        return max(0.0, self._after - time.monotonic())

    def allow_now(self) -> None:
        """The next run may start at once (a competitor left; see the module doc)."""
        self._after = 0.0

    def start(self, strategy: Strategy, target: str) -> None:
        """Measure ``target`` for ``strategy`` on a thread of its own."""
        prober = self.prober
        if prober is None:
            return
        self._after = math.inf  # until this run ends
        self._thread = threading.Thread(
            target=self._run, args=(prober, strategy, target), name="shadow-run", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the run under way (if any); True when none
        is left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def _run(self, prober: Prober, strategy: Strategy, target: str) -> None:
        """One run; a failed one is logged and waits longer, never stops the measuring."""
        wait_s = PROBE_FAILED_WAIT_S
        try:
            times = prober(target)
            wait_s = min(PROBE_MAX_GAP_S, max(PROBE_MIN_GAP_S, sum(times) / 1e3 / PROBE_DUTY))
            self.count += 1
            strategy.shadow(target, times)
        except EdgeServiceError as exc:
            log.warning("shadow run of %s failed: %s", target, exc.message)
        except Exception:  # a backend's own error must not end the measuring
            log.exception("shadow run of %s failed", target)
        finally:
            self._after = time.monotonic() + wait_s
        self._done()
