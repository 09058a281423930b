"""The adaptation loop: sample the monitor, ask the policy, swap engines, log events, and
measure the variant the strategy wants to know better (shadow runs through ``prober``, on
a thread of their own, one at a time).

A background thread ticks every ``period_s``. A failing source or a failing engine load
is logged and recorded; the loop and the engine already serving carry on. Events of kind
``monitor`` say when the board's reading moves to another source (a failover), is lost,
and comes back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_service.control.decision import Decision
from edge_service.control.events import AdaptationEvent, EventLog
from edge_service.control.shadow_runs import Prober, ShadowRuns
from edge_service.control.strategy import Strategy
from edge_service.errors import EdgeServiceError, error_reason
from edge_service.monitor.context import Context
from edge_service.monitor.source import MonitorSource
from edge_service.runtime.pool import EnginePool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopState:
    """A snapshot for the status endpoint."""

    context: Context | None
    decision: Decision | None
    ticks: int
    source_errors: int


class AdaptationLoop:
    """Drives ``pool`` from ``source`` through the policy."""

    def __init__(
        self,
        *,
        source: MonitorSource,
        pool: EnginePool,
        strategy: Strategy,
        events: EventLog,
        period_s: float = 0.5,
        preload_memory_mb: float = 0.0,
        preload_load_ms: float = math.inf,
        engine_memory_mb: Callable[[str], float | None] | None = None,
        prober: Prober | None = None,
    ) -> None:
        self._source, self._pool, self.strategy = source, pool, strategy
        self.shadow_runs = ShadowRuns(prober, self.wake)
        self.strategy.set_measuring(prober is not None)
        self._preload_mb = preload_memory_mb
        self._preload_ms = preload_load_ms
        self._preloaded_at = -1  # the pool's reload count when the loop last preloaded
        self._engine_mb = engine_memory_mb or (lambda _: 0.0)
        self.events = events
        self._period = period_s
        self._stop = threading.Event()
        self._wake = threading.Event()  # tick now, not at the end of the period
        self._thread: threading.Thread | None = None
        self._context: Context | None = None
        self._decision: Decision | None = None
        self._last_change_t: float | None = None
        self._ticks = 0
        self._source_errors = 0
        self._source_ok: bool | None = None  # None until the first sample
        self._tick_lock = threading.Lock()
        self._acted = threading.Condition()  # a tick acted on its decision (`wake`)
        self._acted_tick = 0  # the last tick that did
        self._listeners: list[Callable[[Context, Decision], None]] = []

    def listen(self, callback: Callable[[Context, Decision], None]) -> None:
        """Call ``callback(context, decision)`` after every tick that read the board."""
        self._listeners.append(callback)

    def set_strategy(self, strategy: Strategy) -> Decision | None:
        """Follow ``strategy`` from now on, and decide with it at once (an operator's
        policy change or pin applies now, not at the next tick)."""
        with self._tick_lock:
            self.strategy = strategy
            strategy.set_measuring(self.shadow_runs.prober is not None)
            self._last_change_t = None  # a new policy is not held back by the old cooldown
        return self.tick()

    def start(self) -> None:
        """Decide now (so an engine is active on return), then tick in the background.

        If the monitor cannot be read at start, the most accurate variant is served until
        it can: an unreadable board must not keep the service from starting. If the chosen
        variant's engine fails to load it is unhealthy, and the next best is tried.
        """
        decision, tried = self.tick(), set[str]()
        while self._pool.active_id is None and decision is not None:
            if decision.variant_id in tried:
                break
            tried.add(decision.variant_id)
            decision = self.tick()
        self._thread = threading.Thread(target=self._run, name="adaptation-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking and wait for the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.shadow_runs.wait(timeout)  # a run ends within its own time limit

    def wake(self, wait_s: float = 0.0) -> None:
        """Tick now rather than at the end of the period (a served call just showed a
        violation): safe from any thread, and cheap. With ``wait_s``, also wait at most that
        long until a tick that starts after this call has acted on its decision (swapped to
        another engine, or chosen to stay): the batcher's worker waits so, and a step down
        to an engine on standby then serves the next request in the queue, where it would
        otherwise have gone to the engine just proven too slow."""
        with self._acted:
            after = self._ticks
        self._wake.set()
        if wait_s > 0:
            with self._acted:
                self._acted.wait_for(lambda: self._acted_tick > after, wait_s)

    def new_regime(self, *, improved: bool = False) -> None:
        """A competitor came or went under the same power mode: the strategy forgets what
        described the board as it was (`Strategy.new_regime`); where one left
        (``improved``), a shadow run may start at once (`ShadowRuns.allow_now`)."""
        self.strategy.new_regime()
        if improved:
            self.shadow_runs.allow_now()

    def _acted_now(self) -> None:
        """The tick under way has acted on its decision: release `wake`'s waiters."""
        with self._acted:
            self._acted_tick = self._ticks
            self._acted.notify_all()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._period)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.tick()
            except Exception:  # the loop must outlive any one bad tick
                log.exception("adaptation tick failed; the loop carries on")

    def tick(self) -> Decision | None:
        """One round: sample, decide, act. Never raises for source or engine faults."""
        with self._tick_lock:  # the loop thread and operator calls never interleave
            decision = self._tick()
            self._acted_now()  # whatever it did (a failed sample, a failed swap)
        if decision is not None and self._context is not None:
            for callback in self._listeners:
                try:
                    callback(self._context, decision)
                except Exception:
                    log.exception("tick listener failed")
        return decision

    def refit(self, reload: Callable[[], object]) -> Decision | None:
        """The engines are to run at another thread count (the thread fallback, a power
        mode), the loader already set for it: decide first, with what the strategy now
        predicts, then ``reload`` what is left at the old count. A step down the change
        calls for then loads its target once, at the new count, where reloading first
        loaded the served variant again and only then the target (0.6-2.2 s of a
        detector's calls under a CPU hog, each over the budget)."""
        with self._tick_lock:
            try:
                decision = self._tick()
            finally:
                reload()
                self._acted_now()
        return decision

    def _tick(self) -> Decision | None:
        self._ticks += 1
        try:
            ctx = self._source.sample()
        except Exception as exc:  # noqa: BLE001 - any source failure keeps the engine serving
            self._source_failed(exc)
            return None
        self._source_read(ctx)
        current = self._pool.active_id
        decision = self.strategy.decide(ctx, current, self._last_change_t, self._pool.unhealthy)
        self._context, self._decision = ctx, decision
        if current is None or decision.changed:
            self._switch(ctx.t, ctx, current, decision)
        else:
            self._acted_now()
            if self._pool.reloads != self._preloaded_at:
                self._preload(current)  # a reload (new thread count) dropped the standby ones
        self._explore()
        return decision

    def _explore(self) -> None:
        """Start measuring the variant the strategy names (if any) by a shadow run, when
        one is due (`ShadowRuns`): the loop goes on deciding while it runs."""
        if not self.shadow_runs.due():
            return
        target = self.strategy.probe_candidate(self._pool.unhealthy)
        if target is not None:
            self.shadow_runs.start(self.strategy, target)

    @property
    def probes(self) -> int:
        """Shadow runs that measured."""
        return self.shadow_runs.count

    def _source_failed(self, exc: Exception) -> None:
        """Count and report a failed sample: logged (and recorded as an event when the
        board was being read) once, not on every tick, until the source works again."""
        self._source_errors += 1
        name = getattr(self._source, "name", "?")
        why = error_reason(exc)
        if self._source_ok is not False:
            log.warning("monitor source %s failed (%s); keeping the current engine", name, why)
            if not isinstance(exc, EdgeServiceError):
                log.debug("monitor failure", exc_info=exc)
            if self._source_ok:
                self._monitor_event(f"monitor lost: {name} cannot be read", why)
        self._source_ok = False
        if self._pool.active_id is None:
            self._activate_default()

    def _source_read(self, ctx: Context) -> None:
        """Report a source that works again, or a move to another source (a failover)."""
        previous = self._context.source if self._context is not None else None
        if self._source_ok is False:
            log.info("monitor reads the board again (%s)", ctx.source)
            self._monitor_event(f"monitor back: reading {ctx.source}", None)
        elif previous is not None and previous != ctx.source:
            failures = self._source.failures
            self._monitor_event(
                f"monitor failover: {previous} -> {ctx.source}", failures.get(previous)
            )
        self._source_ok = True

    def _monitor_event(self, reason: str, error: str | None) -> None:
        self.events.append(AdaptationEvent.note("monitor", reason, self._pool.active_id, error))

    def _activate_default(self) -> None:
        """With the board unreadable: serve the most accurate variant that loads."""
        first = self.strategy.default()
        for vid in (first, *self.strategy.neighbours(first)):
            if vid in self._pool.unhealthy:
                continue
            suffix = "" if vid == first else " that loads"
            reason = f"monitor unavailable -> most accurate{suffix}"
            decision = Decision(variant_id=vid, reason=reason, changed=True)
            self._switch(time.time(), None, None, decision)
            if self._pool.active_id is not None:
                return

    def _switch(
        self, t: float, ctx: Context | None, current: str | None, decision: Decision
    ) -> None:
        error, swap_ms, preloaded = None, None, None
        try:
            self._pool.activate(decision.variant_id)
            swap_ms, preloaded = self._pool.last_swap_ms, self._pool.last_swap_preloaded
            self._last_change_t = t
            self._acted_now()  # before the preloads: the batcher may go on
            self._preload(decision.variant_id)
        except EdgeServiceError as exc:
            error = exc.message
            log.error("could not activate %s: %s", decision.variant_id, exc.message)
        summary = (
            {}
            if ctx is None
            else {
                "cpu_load": round(ctx.cpu_load, 3),
                "mem_pressure": round(ctx.mem_pressure, 3),
                "cpu_online": ctx.cpu_online,
                "source": ctx.source,
            }
        )
        self.events.append(
            AdaptationEvent(
                t=t,
                from_variant=current,
                to_variant=decision.variant_id,
                reason=decision.reason,
                context=summary,
                predicted_latency_ms=self.strategy.predicted_ms(decision.variant_id),
                prediction=self._prediction(decision.variant_id),
                swap_ms=swap_ms,
                preloaded=preloaded,
                error=error,
            )
        )
        log.info(
            "adapt %s -> %s (%s)%s",
            current,
            decision.variant_id,
            decision.reason,
            f" FAILED: {error}" if error else "",
        )

    def _prediction(self, variant_id: str) -> dict[str, object] | None:
        """How the strategy predicted ``variant_id``: measured or extrapolated (and how
        far), and how much of it is observation."""
        estimate = self.strategy.estimate_of(variant_id)
        return estimate.to_dict() if estimate is not None else None

    def set_prober(self, prober: Prober | None) -> None:
        """Measure through ``prober`` from now on (None: no shadow runs, and the strategy
        moves on its predictions)."""
        with self._tick_lock:
            self.shadow_runs.prober = prober
            self.strategy.set_measuring(prober is not None)

    def _preload(self, active: str) -> None:
        """Load the active variant's neighbours on standby, nearest first, within budget:
        ``preload_memory_mb`` of memory, and ``preload_load_ms`` of loading now (a load
        runs on the cores the engines serve on, so it slows the served calls: a detector
        takes ~100 ms per load here, a small classifier ~10 ms). Engines already loaded
        cost no time.

        Also after the pool reloaded (a power mode or the thread fallback changed the
        engines' threads), with no switch: the standby engines went with the old threads,
        and the step down a violation needs next should not wait for a load.

        A variant whose memory nobody measured yet is loaded while the budget has room
        (its load measures it), and then the standby set is trimmed to the memory budget
        with the figures measured; one whose load time is unknown is loaded while time is
        left, and then the time is deemed spent.

        Where the pool loads on its idle thread (engines at one thread: `preload_idle`),
        a load takes only the time served calls leave, so only memory bounds it."""
        self._preloaded_at = self._pool.reloads
        if self._preload_mb <= 0 or self._preload_ms <= 0:
            return
        neighbours = self.strategy.neighbours(active)
        if self._pool.idle_loads:
            memory: list[Budget] = [(self._engine_mb, self._preload_mb, 0.0)]
            self._pool.preload_idle(
                _prefix(neighbours, memory), fits=lambda ids: _prefix(ids, memory)
            )
            return
        loaded = set(self._pool.loaded)

        def load_ms(vid: str) -> float | None:
            return 0.0 if vid in loaded else self._pool.load_ms(vid)

        budgets: list[Budget] = [(self._engine_mb, self._preload_mb, 0.0)]
        if math.isfinite(self._preload_ms):
            budgets.append((load_ms, self._preload_ms, self._preload_ms))
        chosen = _prefix(neighbours, budgets)
        self._pool.preload(chosen)
        measured = _prefix(chosen, [(self._engine_mb, self._preload_mb, None)])
        if measured != chosen:
            self._pool.preload(measured)

    def state(self) -> LoopState:
        return LoopState(self._context, self._decision, self._ticks, self._source_errors)


# a cost, its limit, and what an unknown cost (None) counts as while room is left (None:
# an unknown cost ends the list)
Budget = tuple[Callable[[str], "float | None"], float, "float | None"]


def _prefix(order: list[str], budgets: list[Budget]) -> list[str]:
    """The longest prefix of ``order`` that fits every budget in ``budgets``."""
    used = [0.0] * len(budgets)
    for n, vid in enumerate(order):
        for i, (cost_of, limit, unknown) in enumerate(budgets):
            cost = cost_of(vid)
            if cost is None:
                if unknown is None or used[i] >= limit:
                    return order[:n]
                cost = unknown
            elif used[i] + cost > limit:
                return order[:n]
            used[i] += cost
    return list(order)
