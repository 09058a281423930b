"""The adaptation loop over a replayed trace: decisions become swaps and events."""

from __future__ import annotations

import dataclasses
import time

from support import ConstantEngine, ThreadedEngine

from edge_service.control.events import EventLog
from edge_service.control.loop import AdaptationLoop
from edge_service.control.pressure_rule import Candidate, PressureRule
from edge_service.control.strategy import PressureStrategy
from edge_service.errors import EngineError, MonitorError
from edge_service.monitor.context import Context
from edge_service.monitor.replay import ReplaySource
from edge_service.monitor.source import SourceBase
from edge_service.runtime.pool import EnginePool

CANDIDATES = [Candidate("base@fp32", 0.93, 0.4), Candidate("base@int8", 0.92, 0.2)]
RULE = PressureRule(upgrade_cooldown_s=0.0)
WAIT_S = 30.0  # a bound on waiting for the loop thread, never an expected speed


def _wait_for_ticks(loop: AdaptationLoop, at_least: int) -> None:
    """Poll until the background thread has ticked ``at_least`` times (a busy machine
    may not schedule it for a while); fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while loop.state().ticks < at_least:
        assert time.monotonic() < deadline, f"{loop.state().ticks} ticks in {WAIT_S} s"
        time.sleep(0.005)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _trace(*loads: float) -> list[Context]:
    return [
        Context(
            t=float(i),
            source="trace",
            cpu_online=2,
            cpu_load=load,
            mem_available_mb=800,
            mem_total_mb=1000,
        )
        for i, load in enumerate(loads)
    ]


def _loop(source, loader=ConstantEngine, events=None) -> tuple[AdaptationLoop, EnginePool]:
    pool = EnginePool(loader)
    loop = AdaptationLoop(
        source=source,
        pool=pool,
        strategy=PressureStrategy(CANDIDATES, RULE),
        events=events or EventLog(16),
        period_s=0.01,
    )
    return loop, pool


def test_loop_follows_trace_when_cpu_load_rises_and_falls() -> None:
    clock = Clock()
    loop, pool = _loop(ReplaySource(_trace(0.1, 0.95, 0.2), clock=clock))
    served = []
    for now in (0.0, 1.0, 2.0):
        clock.now = now
        loop.tick()
        served.append(pool.active_id)
    assert served == ["base@fp32", "base@int8", "base@fp32"]
    events = loop.events.recent()
    assert [(e.from_variant, e.to_variant) for e in events] == [
        (None, "base@fp32"),
        ("base@fp32", "base@int8"),
        ("base@int8", "base@fp32"),
    ]
    assert "cpu load 0.95" in events[1].reason
    assert events[1].predicted_latency_ms == 0.2


def test_no_event_logged_when_decision_keeps_the_same_variant() -> None:
    clock = Clock()
    loop, _ = _loop(ReplaySource(_trace(0.1, 0.2, 0.3), clock=clock))
    for now in (0.0, 1.0, 2.0):
        clock.now = now
        loop.tick()
    assert len(loop.events.recent()) == 1
    assert loop.state().ticks == 3


class FailingSource(SourceBase):
    name = "broken"

    def sample(self) -> Context:
        raise MonitorError("sensor gone")

    def close(self) -> None:
        pass


def test_engine_keeps_serving_when_monitor_source_fails() -> None:
    clock = Clock()
    loop, pool = _loop(ReplaySource(_trace(0.1), clock=clock))
    loop.tick()
    loop._source = FailingSource()  # the board's sensor dies mid-run
    assert loop.tick() is None
    assert pool.active_id == "base@fp32" and loop.state().source_errors == 1


def test_start_activates_most_accurate_when_monitor_fails_from_the_start() -> None:
    loop, pool = _loop(FailingSource())
    loop.start()
    try:
        assert pool.active_id == "base@fp32"
        assert "monitor unavailable" in loop.events.recent()[0].reason
    finally:
        loop.stop()


def test_failed_swap_is_logged_and_old_engine_kept_when_new_engine_cannot_load() -> None:
    clock = Clock()

    def loader(vid: str) -> ConstantEngine:
        if vid == "base@int8":
            raise EngineError("int8 artifact corrupt")
        return ConstantEngine(vid)

    loop, pool = _loop(ReplaySource(_trace(0.1, 0.99), clock=clock), loader=loader)
    loop.tick()
    clock.now = 1.0
    loop.tick()
    assert pool.active_id == "base@fp32"
    assert loop.events.recent()[-1].error == "int8 artifact corrupt"


def test_background_thread_ticks_and_stops_when_started() -> None:
    loop, pool = _loop(ReplaySource(_trace(0.1), loop=True))
    loop.start()
    _wait_for_ticks(loop, 3)
    loop.stop(timeout=WAIT_S)
    assert loop._thread is not None and not loop._thread.is_alive()
    ticks = loop.state().ticks
    assert ticks >= 3 and pool.ready
    time.sleep(0.05)  # several periods: a thread still ticking would have ticked again
    assert loop.state().ticks == ticks


def _sick(*broken: str):
    """A loader that fails for ``broken`` ids the way a corrupt artifact does."""

    def load(vid: str) -> ConstantEngine:
        if vid in broken:
            raise EngineError(f"{vid} fails its checksum")
        return ConstantEngine(vid)

    return load


def test_start_serves_the_next_best_at_once_when_the_most_accurate_fails_to_load() -> None:
    loop, pool = _loop(ReplaySource(_trace(0.1), loop=True), loader=_sick("base@fp32"))
    loop.start()
    try:
        assert pool.active_id == "base@int8"  # on return: no tick's wait with nothing served
        assert pool.unhealthy == {"base@fp32"}
    finally:
        loop.stop()


def test_start_falls_back_past_a_broken_variant_when_monitor_and_most_accurate_both_fail() -> None:
    loop, pool = _loop(FailingSource(), loader=_sick("base@fp32"))
    loop.start()
    try:
        assert pool.active_id == "base@int8"
        assert loop.events.recent()[-1].reason == "monitor unavailable -> most accurate that loads"
    finally:
        loop.stop()


class FlakySource(SourceBase):
    """A trace whose reads fail while ``broken`` is set; contexts name ``source``."""

    name = "flaky"

    def __init__(self) -> None:
        self.broken, self.source, self.t = False, "tegra", 0.0

    def sample(self) -> Context:
        if self.broken:
            raise MonitorError("sysfs gone")
        self.t += 1.0
        return dataclasses.replace(_trace(0.1)[0], t=self.t, source=self.source)

    def close(self) -> None:
        pass


def test_monitor_events_say_failover_lost_and_back_once_each_when_the_source_changes() -> None:
    source = FlakySource()
    loop, _ = _loop(source)
    loop.tick()
    source.source = "linux"  # what a FailoverSource returns after its first source died
    loop.tick()
    source.broken = True
    for _ in range(3):
        assert loop.tick() is None
    source.broken = False
    loop.tick()
    monitor = [(e.reason, e.error) for e in loop.events.recent() if e.kind == "monitor"]
    assert monitor == [
        ("monitor failover: tegra -> linux", None),
        ("monitor lost: flaky cannot be read", "sysfs gone"),
        ("monitor back: reading linux", None),
    ]
    assert loop.state().source_errors == 3


def test_loop_thread_lives_on_when_a_tick_raises_something_unexpected() -> None:
    loop, _ = _loop(ReplaySource(_trace(0.1), loop=True))
    loop.start()
    try:
        loop.strategy = None  # type: ignore[assignment]  # every tick now raises
        ticks = loop.state().ticks
        _wait_for_ticks(loop, ticks + 3)
        assert loop._thread is not None and loop._thread.is_alive()
    finally:
        loop.stop()


def _threads_loader(threads: int, loads: list[tuple[str, int]]):
    def load(variant_id: str) -> ThreadedEngine:
        loads.append((variant_id, threads))
        return ThreadedEngine(variant_id, threads)

    return load


def _refit(*loads_: float) -> tuple[AdaptationLoop, EnginePool, Clock, list[tuple[str, int]]]:
    """A loop serving base@fp32 at two threads; the loader then moves to one thread."""
    clock, loads = Clock(), []
    loop, pool = _loop(ReplaySource(_trace(*loads_), clock=clock), _threads_loader(2, loads))
    loop.tick()
    assert pool.active_id == "base@fp32"
    pool.set_loader(_threads_loader(1, loads))
    clock.now = 1.0
    return loop, pool, clock, loads


def _at_one_thread(engine: object) -> bool:
    return getattr(engine, "threads", None) == 1


def test_refit_loads_a_step_down_target_at_the_new_count_and_never_the_served_again() -> None:
    loop, pool, _, loads = _refit(0.1, 0.95)
    decision = loop.refit(lambda: pool.reload(keep=_at_one_thread))
    assert decision is not None and decision.variant_id == "base@int8"
    assert pool.active_id == "base@int8"
    assert loads == [("base@fp32", 2), ("base@int8", 1)]  # no base@fp32 at one thread
    with pool.lease() as (_, engine):
        assert _at_one_thread(engine)


def test_refit_reloads_the_served_variant_when_it_stays() -> None:
    loop, pool, _, loads = _refit(0.1, 0.1)
    decision = loop.refit(lambda: pool.reload(keep=_at_one_thread))
    assert decision is not None and not decision.changed
    assert loads == [("base@fp32", 2), ("base@fp32", 1)]
    with pool.lease() as (_, engine):
        assert _at_one_thread(engine)


def test_refit_reloads_even_when_the_board_cannot_be_read() -> None:
    loads: list[tuple[str, int]] = []
    loop, pool = _loop(FailingSource(), _threads_loader(2, loads))
    loop.start()
    loop.stop()
    pool.set_loader(_threads_loader(1, loads))
    assert loop.refit(lambda: pool.reload(keep=_at_one_thread)) is None
    assert loads[-1] == ("base@fp32", 1)
