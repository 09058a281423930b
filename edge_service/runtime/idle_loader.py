"""Standby engines loaded on a thread of the lowest CPU priority.

A load is CPU work on the cores the engines serve on: an ONNX Runtime session for a
roadside detector takes ~100-140 ms of CPU here, and on the one core HALF or MIN leaves,
the served call beside it ran up to 2x slower. Where the engines run one intra-op thread,
an engine's calls run on the thread that calls it (ONNX Runtime starts no worker threads
for one intra-op thread), so the thread that *loads* it can run at the lowest priority
without the engine inheriting it: the scheduler then gives the load only the time the
served calls leave (nice 19 weighs 15 against 1024 for a served thread at nice 0).

`IdleLoader` is that thread. `want` replaces the list still to load (the loop's latest
preload); each load is checked against the wish in force before it starts, so a switch
that moved on leaves no stale work queued. An engine whose load finished after the loader
changed (a new thread count) is closed, not put on standby (`EnginePool.load_idle`).

Engines of several threads load here too: their worker threads, which ONNX Runtime
starts at load and which take the loading thread's nice 19, are given the serving
priority when the engine is about to serve (`WorkerThreads`). Before, such loads ran in
front, within `EDGE_PRELOAD_LOAD_MS`, and at two threads per engine (MAXN) the first
calls of a new engine beside them ran 2-4x slower.

On Linux, ``setpriority(PRIO_PROCESS, tid)`` sets one thread's nice value; elsewhere the
thread runs at normal priority (logged once), which is still off the loop's thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
IDLE_NICE = 19  # the lowest priority a thread can ask for without privileges

Fits = Callable[[list[str]], list[str]]


class Standby(Protocol):
    """What the idle loader needs of the pool (`EnginePool`)."""

    def standby_gaps(self, variant_ids: list[str]) -> list[str]: ...

    def load_idle(self, variant_id: str) -> None: ...


def set_nice(thread_id: int, nice: int) -> None:
    """Give one thread (its native id) ``nice``: OSError where the platform has no
    per-thread nice value (Linux has) or the process may not lower it."""
    if sys.platform != "linux" or not hasattr(os, "setpriority"):
        raise OSError(f"no per-thread nice value on {sys.platform}")
    os.setpriority(os.PRIO_PROCESS, thread_id, nice)


def process_nice() -> int:
    """The nice value the process serves at: its main thread's (`edge_service.server.priority`
    may have raised it), 0 where the platform has none."""
    if not hasattr(os, "getpriority"):
        return 0
    return os.getpriority(os.PRIO_PROCESS, os.getpid())


@functools.cache
def may_restore_priority() -> bool:
    """True when a thread lowered to `IDLE_NICE` may be given the serving priority back:
    root with CAP_SYS_NICE, or an RLIMIT_NICE that allows it (tried once, on a thread of
    its own). Without it an idle-loaded engine would serve with its worker threads at 19."""
    allowed: list[bool] = []

    def attempt() -> None:
        try:
            set_nice(threading.get_native_id(), IDLE_NICE)
            set_nice(threading.get_native_id(), process_nice())
        except OSError:
            allowed.append(False)
        else:
            allowed.append(True)

    probe = threading.Thread(target=attempt, name="nice-probe", daemon=True)
    probe.start()
    probe.join()
    return allowed[0]


def lower_priority(nice: int = IDLE_NICE) -> bool:
    """Give the calling thread ``nice``; False (logged) where it cannot."""
    try:
        set_nice(threading.get_native_id(), nice)
    except OSError as exc:
        log.info("idle loads run at normal priority: %s", exc)
        return False
    return True


def thread_ids() -> set[int]:
    """The native ids of this process's threads (none where there is no /proc)."""
    try:
        return {int(t.name) for t in Path(f"/proc/{os.getpid()}/task").iterdir()}
    except OSError:
        return set()


class WorkerThreads:
    """The worker threads an idle load started, at its priority, until their engine serves.

    An ONNX Runtime session starts its intra-op worker threads when it loads, and a new
    thread takes the nice value of the thread that starts it: an engine of two threads
    loaded at nice 19 would serve with one of them at nice 19, which any other work
    preempts. So the threads that appear during an idle load are kept with its engine
    (`started`, `keep`), and given the serving priority (`process_nice`) when the engine
    is about to serve (`serve`). Threads another thread started in the same moment are
    at that priority already; raising them again changes nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_engine: weakref.WeakKeyDictionary[object, frozenset[int]] = (
            weakref.WeakKeyDictionary()
        )

    @contextlib.contextmanager
    def started(self) -> Iterator[set[int]]:
        """The threads started while the block runs (filled in when it ends)."""
        before, found = thread_ids(), set[int]()
        try:
            yield found
        finally:
            found |= thread_ids() - before

    def keep(self, engine: object, threads: set[int]) -> None:
        if threads:
            with self._lock:
                self._by_engine[engine] = frozenset(threads)

    def serve(self, engine: object) -> None:
        """Give ``engine``'s idle-started threads the serving priority (once)."""
        with self._lock:
            threads = self._by_engine.pop(engine, frozenset())
        nice = process_nice()
        for tid in threads:
            with contextlib.suppress(OSError):  # ended, or not permitted: it serves as is
                set_nice(tid, nice)


class IdleLoader:
    """One daemon thread that loads standby engines at the lowest priority (module doc)."""

    def __init__(self, pool: Standby, nice: int = IDLE_NICE) -> None:
        self._pool, self._nice = pool, nice
        self._cond = threading.Condition()
        self._wish: tuple[int, list[str], Fits | None] | None = None
        self._gen = 0  # `want` calls; a load checks it is still wanted before it starts
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.workers = WorkerThreads()

    def want(self, variant_ids: list[str], fits: Fits | None = None) -> None:
        """Keep ``variant_ids`` on standby, loading the missing ones in this order (trimmed
        by ``fits`` before each load); replaces what an earlier call left to load."""
        with self._cond:
            if self._closed:
                return
            self._gen += 1
            self._wish = (self._gen, list(variant_ids), fits)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="idle-loader", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self) -> None:
        """Drop what is left to load (the loader changed: it was for the old one's engines);
        the load under way finishes, and the pool decides whether its engine is stale."""
        with self._cond:
            self._gen += 1
            self._wish = None
            self._cond.notify_all()

    def done(self, timeout: float) -> bool:
        """Wait until nothing is left to load; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._wish is None and not self._busy, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the load under way (a session cannot be interrupted mid-load, nor
        the process exit safely while one runs). Under a CPU hog a nice-19 load gets no
        time at all, so the thread is first given the serving threads' priority back where
        the process may (root, or an RLIMIT_NICE that allows it)."""
        with self._cond:
            self._closed, self._wish = True, None
            self._cond.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        if thread.native_id is not None:
            with contextlib.suppress(OSError):  # not allowed: it finishes at its own pace
                set_nice(thread.native_id, process_nice())
        thread.join(timeout)

    def _run(self) -> None:
        lower_priority(self._nice)
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wish is not None)
                if self._closed:
                    return
                assert self._wish is not None
                gen, wanted, fits = self._wish
                self._wish, self._busy = None, True
            try:
                self._fulfil(gen, wanted, fits)
            except Exception:
                log.exception("idle preload failed")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _fulfil(self, gen: int, wanted: list[str], fits: Fits | None) -> None:
        with self._cond:
            if gen != self._gen:
                return  # cancelled (a new loader) or replaced since it was taken
        missing = self._pool.standby_gaps(wanted)
        for vid in missing:
            with self._cond:
                if self._closed or gen != self._gen:
                    return  # a newer wish (or close) took over
            if fits is not None:
                trimmed = fits(wanted)  # memory measured by the loads so far
                if vid not in trimmed:
                    self._pool.standby_gaps(trimmed)
                    return
            self._pool.load_idle(vid)
