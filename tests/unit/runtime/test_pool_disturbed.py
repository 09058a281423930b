"""A load or swap is the server's own work on the engines' cores: the pool says which
engine calls overlapped one, so the controller does not learn the board from them."""

from __future__ import annotations

import threading
import time

from support import ConstantEngine

from edge_service.runtime.busy import SETTLE_S
from edge_service.runtime.pool import EnginePool


def test_a_call_is_disturbed_while_a_load_runs_and_just_after_it_but_not_later() -> None:
    loading, release = threading.Event(), threading.Event()

    def slow_loader(vid: str) -> ConstantEngine:
        if vid == "slow":
            loading.set()
            release.wait(30)
        return ConstantEngine(vid)

    pool = EnginePool(slow_loader)
    pool.activate("a")
    time.sleep(SETTLE_S + 0.05)
    quiet = time.perf_counter()
    assert not pool.disturbed(quiet)  # the swap of "a" ended long enough ago

    t = threading.Thread(target=pool.preload, args=(["slow"],))
    t.start()
    assert loading.wait(30)
    assert pool.disturbed(quiet)  # a call that started before and runs now overlaps it
    assert pool.disturbed(time.perf_counter())
    release.set()
    t.join(30)
    ended = time.perf_counter()
    assert pool.disturbed(ended)  # within the settle time after it
    time.sleep(SETTLE_S + 0.05)
    assert not pool.disturbed(time.perf_counter())
    assert pool.disturbed(ended - 0.5)  # a call started before the load ended overlapped it


def test_a_swap_of_a_preloaded_engine_disturbs_too() -> None:
    pool = EnginePool(ConstantEngine)
    pool.activate("a")
    pool.preload(["b"])
    time.sleep(SETTLE_S + 0.05)
    before = time.perf_counter()
    assert not pool.disturbed(before)
    pool.activate("b")  # no load: a swap (the new engine's threads are cold)
    assert pool.disturbed(time.perf_counter())
