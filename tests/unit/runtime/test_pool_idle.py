"""Standby engines loaded on the pool's idle loader (one thread at the lowest CPU priority),
and reloads that keep the engines a new thread count does not change."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from support import ConstantEngine, ThreadedEngine

from edge_service.errors import EngineError
from edge_service.runtime.idle_loader import IDLE_NICE, may_restore_priority, process_nice
from edge_service.runtime.pool import EnginePool

WAIT_S = 30.0  # a bound on waiting for the idle thread, never an expected speed


def _nice() -> int:
    """The calling thread's nice value (0 where threads have none of their own)."""
    if sys.platform != "linux":
        return 0
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


class Loader:
    """Makes ConstantEngines; records on which thread, at which nice value; can block."""

    def __init__(self) -> None:
        self.made: dict[str, list[ConstantEngine]] = {}
        self.nice: dict[str, int] = {}
        self.threads: dict[str, str] = {}
        self.hold: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}

    def block(self, vid: str) -> threading.Event:
        self.entered[vid] = threading.Event()
        self.hold[vid] = threading.Event()
        return self.hold[vid]

    def __call__(self, vid: str) -> ConstantEngine:
        if vid == "broken":
            raise EngineError("cannot load broken")
        self.threads[vid] = threading.current_thread().name
        self.nice[vid] = _nice()
        if vid in self.hold:
            self.entered[vid].set()
            assert self.hold[vid].wait(WAIT_S)
            self.nice[vid + " after"] = _nice()
        engine = ConstantEngine(vid)
        self.made.setdefault(vid, []).append(engine)
        return engine


def _pool() -> tuple[EnginePool, Loader]:
    loader = Loader()
    pool = EnginePool(loader, idle_loads=True)
    pool.activate("a")
    return pool, loader


def _loading(wish: list[str]) -> tuple[EnginePool, Loader, threading.Event]:
    """A pool whose idle loader took ``wish`` and is held inside the load of "b" (the
    first of it) until the event returned is set."""
    pool, loader = _pool()
    release = loader.block("b")
    pool.preload_idle(wish)
    assert loader.entered["b"].wait(WAIT_S)
    return pool, loader, release


def test_idle_preloads_load_on_their_own_thread_at_the_lowest_priority() -> None:
    pool, loader = _pool()
    pool.preload_idle(["b", "c"])
    assert pool.idle.done(WAIT_S)
    assert pool.standby == ("b", "c")
    assert loader.threads["b"] == loader.threads["c"] == "idle-loader"
    assert loader.threads["a"] != "idle-loader"  # a swap's load is the caller's
    if sys.platform == "linux":
        assert loader.nice["b"] == IDLE_NICE
        assert loader.nice["a"] == _nice()  # the serving side keeps its priority
    pool.close()
    assert all(e.closed for engines in loader.made.values() for e in engines)


def test_the_caller_does_not_wait_and_served_calls_are_not_disturbed_by_an_idle_load() -> None:
    pool, loader = _pool()
    release = loader.block("b")
    time.sleep(0.2)  # past the settle time of the swap that made "a" active
    pool.preload_idle(["b"])  # returns while "b" is still loading
    assert loader.entered["b"].wait(WAIT_S)
    assert pool.standby == ()
    assert not pool.disturbed(time.perf_counter())  # the idle load is not the server's own work
    with pool.lease() as (vid, _):
        assert vid == "a"  # requests go on meanwhile
    release.set()
    assert pool.idle.done(WAIT_S)
    assert pool.standby == ("b",)
    assert pool.load_ms("b") is None  # its time says nothing of a foreground load's
    assert pool.measured_mb("b") is not None
    pool.close()


def test_an_idle_load_is_warmed_on_the_idle_thread_and_one_that_cannot_run_is_dropped() -> None:
    warmed: list[tuple[str, str, int]] = []

    def warm(vid: str, engine: object) -> None:
        warmed.append((vid, threading.current_thread().name, _nice()))
        if vid == "bad":
            raise EngineError("bad failed to run: broken kernel")

    loader = Loader()
    pool = EnginePool(loader, idle_loads=True, warm=warm)
    pool.activate("a")
    time.sleep(0.2)  # past the settle time of the swap that made "a" active
    pool.preload_idle(["bad", "b"])
    assert pool.idle.done(WAIT_S)
    assert [w[:2] for w in warmed[1:]] == [("bad", "idle-loader"), ("b", "idle-loader")]
    if sys.platform == "linux":
        assert warmed[2][2] == IDLE_NICE  # the warm run takes only what serving leaves
    assert not pool.disturbed(time.perf_counter())
    assert pool.standby == ("b",) and "bad" in pool.unhealthy
    assert loader.made["bad"][0].closed  # it cannot run: never on standby
    pool.close()


@pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="only root may take a nice value back"
)
def test_closing_gives_the_load_under_way_its_priority_back_and_waits_for_it() -> None:
    pool, loader, release = _loading(["b"])
    closing = threading.Thread(target=pool.close)
    closing.start()  # a hog would starve a nice-19 load: the process could not exit
    time.sleep(0.2)
    assert closing.is_alive()  # it waits for the load: a session cannot be cut off
    release.set()
    closing.join(WAIT_S)
    assert not closing.is_alive()
    assert loader.nice["b"] == IDLE_NICE and loader.nice["b after"] == 0
    assert loader.made["b"][0].closed  # loaded after the pool closed: never on standby


def test_a_newer_wish_replaces_what_is_left_to_load() -> None:
    pool, loader, release = _loading(["b", "c", "d"])
    pool.preload_idle(["e"])  # the loop switched meanwhile
    release.set()
    assert pool.idle.done(WAIT_S)
    assert pool.standby == ("e",)
    assert "c" not in loader.made and "d" not in loader.made  # never loaded
    assert loader.made["b"][0].closed  # loaded, then dropped: not wanted any more
    pool.close()


def test_an_engine_from_an_older_loader_never_goes_on_standby() -> None:
    pool, loader, release = _loading(["b"])
    pool.set_loader(loader, idle_loads=True)  # a new thread count while "b" loads
    release.set()
    assert pool.idle.done(WAIT_S)
    assert pool.standby == () and loader.made["b"][0].closed
    pool.close()


def test_a_variant_that_became_active_meanwhile_is_not_loaded_twice_on_standby() -> None:
    pool, loader, release = _loading(["b"])
    del loader.hold["b"]  # the switch's own load does not block
    pool.activate("b")  # a switch needs "b" now: it loads it at once, in the foreground
    release.set()
    assert pool.idle.done(WAIT_S)
    assert pool.active_id == "b" and pool.standby == ()
    idle_copy = loader.made["b"][-1]
    assert idle_copy.closed and not loader.made["b"][0].closed  # the serving one stays
    pool.close()


def test_a_loader_with_worker_threads_stops_what_the_idle_loader_had_left() -> None:
    pool, loader, release = _loading(["b", "c", "d"])
    pool.set_loader(loader, idle_loads=False)  # two threads per engine from now on
    pool.preload(["e"])  # the loop's front loads, at the new count
    release.set()
    assert pool.idle.done(WAIT_S)
    assert pool.standby == ("e",)  # the old wish neither loaded more nor dropped "e"
    assert "c" not in loader.made and loader.made["b"][0].closed
    pool.preload_idle(["f"])  # a stray call: nothing loads at nice 19 with worker threads
    assert pool.idle.done(WAIT_S)
    assert "f" not in loader.made and pool.standby == ("e",)
    pool.close()


def test_an_idle_load_that_fails_marks_the_variant_and_the_rest_still_load() -> None:
    pool, _ = _pool()
    pool.preload_idle(["broken", "c"])
    assert pool.idle.done(WAIT_S)
    assert pool.standby == ("c",) and "broken" in pool.unhealthy
    pool.close()


def test_fits_trims_the_list_before_each_load() -> None:
    pool, loader = _pool()
    pool.preload_idle(["b", "c", "d"], fits=lambda ids: ids[:2])
    assert pool.idle.done(WAIT_S)
    assert pool.standby == ("b", "c") and "d" not in loader.made
    pool.close()


def test_a_reload_keeps_the_engines_its_keep_accepts_and_replaces_the_rest() -> None:
    threads = {"n": 1}
    made: list[ThreadedEngine] = []

    def loader(vid: str) -> ThreadedEngine:
        made.append(ThreadedEngine(vid, threads["n"]))
        return made[-1]

    pool = EnginePool(loader)
    pool.activate("a")
    pool.preload(["b"])
    active, standby = made[0], made[1]
    same = lambda e: e.info().threads == threads["n"]  # noqa: E731
    assert pool.reload(keep=same) is False  # nothing changes: nothing loads, nothing counts
    assert pool.reloads == 0 and len(made) == 2 and not active.closed
    with pool.lease() as (_, engine):
        assert engine is active
    assert pool.standby == ("b",)

    threads["n"] = 2
    assert pool.reload(keep=same) is True
    assert pool.reloads == 1 and active.closed and standby.closed
    with pool.lease() as (vid, engine):
        assert vid == "a" and engine.info().threads == 2
    assert pool.standby == ()
    pool.close()


class WorkerLoader(Loader):
    """Each engine it loads starts a worker thread, as an ONNX Runtime session of two
    intra-op threads does when it loads; the thread waits until the test ends."""

    def __init__(self) -> None:
        super().__init__()
        self.workers: dict[str, int] = {}
        self.stop = threading.Event()

    def __call__(self, vid: str) -> ConstantEngine:
        started = threading.Event()

        def work() -> None:
            self.workers[vid] = threading.get_native_id()
            started.set()
            self.stop.wait(WAIT_S)

        threading.Thread(target=work, daemon=True).start()
        assert started.wait(WAIT_S)
        return super().__call__(vid)


def _thread_nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(
    sys.platform != "linux" or not may_restore_priority(),
    reason="the serving priority cannot be given back here (no CAP_SYS_NICE, RLIMIT_NICE)",
)
def test_an_idle_loaded_engine_s_worker_threads_get_the_serving_priority_when_it_serves() -> None:
    loader = WorkerLoader()
    pool = EnginePool(loader, idle_loads=True)
    try:
        pool.activate("a")
        pool.preload_idle(["b", "c"])
        assert pool.idle.done(WAIT_S)
        assert _thread_nice(loader.workers["b"]) == IDLE_NICE  # while on standby
        assert _thread_nice(loader.workers["a"]) == _nice()  # a load in front: as started
        pool.activate("b")
        assert _thread_nice(loader.workers["b"]) == process_nice()
        assert _thread_nice(loader.workers["c"]) == IDLE_NICE  # still on standby
    finally:
        loader.stop.set()
        pool.close()


def test_the_priority_probe_says_whether_a_lowered_thread_may_be_raised_back() -> None:
    if sys.platform != "linux":
        assert not may_restore_priority()
        return
    seen: list[bool] = []

    def attempt() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IDLE_NICE)
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), process_nice())
        except OSError:
            seen.append(False)
        else:
            seen.append(True)

    t = threading.Thread(target=attempt)
    t.start()
    t.join()
    assert may_restore_priority() == seen[0]
