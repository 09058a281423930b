"""The thread fallback in a running service: while other processes hold the cores, the
ONNX Runtime engines are reloaded at one thread (shadow runs become safe), requests keep
being answered, and once the cores are free for a while the mode's threads come back."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_service.config import Settings
from edge_service.control.threads import ThreadGuardConfig
from edge_service.monitor.context import Context
from edge_service.monitor.source import SourceBase
from edge_service.runtime.idle_loader import IDLE_NICE, may_restore_priority
from edge_service.server.service import Service, start_service

WAIT_S = 60.0  # a bound on waiting for the loop thread, never an expected speed


class Board(SourceBase):
    """A 2-core board whose CPU load the test sets."""

    name = "board"

    def __init__(self) -> None:
        self.load = 0.05

    def sample(self) -> Context:
        return Context(
            t=time.time(), source=self.name, cpu_online=2, cpu_load=self.load,
            mem_available_mb=3000.0, mem_total_mb=4000.0,
        )  # fmt: skip

    def close(self) -> None:
        pass


@pytest.fixture
def board_service(engines_dir: Path) -> Iterator[tuple[Service, Board]]:
    board = Board()
    settings = Settings(
        engines_dir=engines_dir, monitor_period_s=0.05, intra_op_threads=2, preload_memory_mb=0
    )
    service = start_service(settings, source=board)
    assert service.fallback is not None
    service.fallback.guard.config = ThreadGuardConfig(smooth_s=0.1, restore_s=0.5)
    yield service, board
    service.close()


def _engine_threads(service: Service) -> int:
    with service.pool.lease() as (_, engine):
        return int(engine.threads)  # type: ignore[attr-defined]


def _wait(what: str, ok: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ok():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"waited {WAIT_S} s for {what}"
        time.sleep(0.02)


def _answers(service: Service) -> bool:
    with service.pool.lease() as (variant_id, engine):
        x = service.preprocess(variant_id).from_bytes(_png())
        return bool(np.isfinite(engine.infer(x)[0]).all())


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.integration
def test_engines_drop_to_one_thread_while_the_cores_are_taken_and_get_them_back(
    board_service: tuple[Service, Board],
) -> None:
    service, board = board_service
    assert service.engine_threads == 2 and _engine_threads(service) == 2
    assert service.loop.shadow_runs.prober is None  # two threads per engine: no shadow runs

    ticks = service.loop.state().ticks
    _wait("the calm board read", lambda: service.loop.state().ticks >= ticks + 3)
    board.load = 1.0  # every core busy, and not with this process's work
    _wait("the engines at one thread", lambda: service.engine_threads == 1)
    _wait("the reloaded engine", lambda: _engine_threads(service) == 1)
    assert service.loop.shadow_runs.prober is not None  # one thread per engine: they are safe
    assert _answers(service)
    taken = [e for e in service.events.recent() if e.kind == "threads"]
    assert len(taken) == 1 and "-> engines at 1 thread" in taken[0].reason
    assert "other processes use" in taken[0].reason
    seen = [e for e in service.events.recent() if e.kind == "contention"]
    assert seen and "other processes now use" in seen[-1].reason  # holds and stalls forgotten

    board.load = 0.05  # the competitor left
    _wait("the mode's threads back", lambda: service.engine_threads == 2)
    _wait("the reloaded engine", lambda: _engine_threads(service) == 2)
    assert service.loop.shadow_runs.prober is None
    assert _answers(service)
    back = [e for e in service.events.recent() if e.kind == "threads"]
    assert len(back) == 2 and "back to the mode's 2 threads" in back[-1].reason


@pytest.mark.integration
def test_without_the_fallback_the_engines_keep_the_modes_threads(engines_dir: Path) -> None:
    board = Board()
    board.load = 1.0
    settings = Settings(
        engines_dir=engines_dir, monitor_period_s=0.05, intra_op_threads=2,
        preload_memory_mb=0, thread_fallback=False,
    )  # fmt: skip
    service = start_service(settings, source=board)
    try:
        ticks = service.loop.state().ticks
        _wait("ten ticks", lambda: service.loop.state().ticks >= ticks + 10)
        assert service.fallback is None and service.engine_threads == 2
        assert _engine_threads(service) == 2
    finally:
        service.close()


@pytest.mark.integration
def test_a_mode_at_the_same_thread_count_keeps_the_engines_and_standby_loads_idle(
    engines_dir: Path,
) -> None:
    settings = Settings(
        engines_dir=engines_dir, monitor_period_s=0.05, power_mode=1, preload_memory_mb=1000,
        thread_fallback=False,
    )  # fmt: skip
    service = start_service(settings, source=Board())  # emulated HALF: one core, one thread
    try:
        assert service.engine_threads == 1 and service.pool.idle_loads
        _wait("standby engines", lambda: service.pool.standby)
        assert service.pool.idle.done(WAIT_S)
        idle = [t for t in threading.enumerate() if t.name == "idle-loader"]
        assert len(idle) == 1 and idle[0].native_id is not None
        if sys.platform == "linux":
            assert os.getpriority(os.PRIO_PROCESS, idle[0].native_id) == IDLE_NICE
        service.loop.stop()  # no more decisions: the engines below stay what they are
        assert service.pool.idle.done(WAIT_S)
        with service.pool.lease() as (active, engine):
            pass
        standby, reloads = service.pool.standby, service.pool.reloads

        service.set_power_mode("MIN")  # one core, one thread: nothing to reload
        assert service.pool.reloads == reloads and service.pool.standby == standby
        with service.pool.lease() as (still, same):
            assert still == active and same is engine
        assert _answers(service)

        # two threads: reloaded; standby loads stay idle where the engines' worker threads
        # can be given the serving priority back when they serve, else they go in front
        service.set_power_mode("MAXN")
        assert service.pool.reloads == reloads + 1
        assert service.pool.idle_loads == may_restore_priority()
        assert _engine_threads(service) == 2 and _answers(service)
    finally:
        service.close()
