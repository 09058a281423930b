"""The engine pool: one active engine, swapped atomically, the old one drained.

A request takes a *lease* on an engine when it starts and keeps it to the end, so a swap
never pulls an engine from under a running request: an engine leaving the pool (swapped
out, dropped from standby, evicted from the pinned cache, or replaced by a reload) closes
when its last lease ends.

Besides the active engine the pool keeps *standby* engines (preloaded around the active
one, so a swap needs no load) and a small LRU of *pinned* engines, loaded on demand for
requests that name a variant other than the active one.

A variant whose engine fails to load (a corrupt artifact, a backend error, out of memory)
is marked *unhealthy*: the controller leaves it alone, a request pinned to it gets a 503
that says why, and the engine already serving carries on. The mark is retried after
``retry_unhealthy_s`` (memory may have come free, the file may have been rebuilt).

The pool is a thin coordinator over three parts: `Leases` (who holds an engine),
`Residency` (which engines are loaded, in which role) and `Health` (which variants failed
to load). Leases and residency change together, under the pool's one lock; health has its
own. Loads run under a second lock (one at a time) with the first one released, so a
request never waits for a load it did not ask for.

A load or a swap is the server's own work on the cores its engines serve on: calls that
overlap one say so (`disturbed`, `edge_service.runtime.busy`). Standby engines may instead
load on a thread of the lowest priority (`preload_idle`, `runtime.idle_loader`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

from edge_service.errors import EdgeServiceError, EngineError, NotReadyError, error_reason
from edge_service.runtime.busy import OwnWork
from edge_service.runtime.engine import Engine
from edge_service.runtime.health import Health
from edge_service.runtime.idle_loader import IdleLoader
from edge_service.runtime.leases import Leases
from edge_service.runtime.residency import Residency

log = logging.getLogger(__name__)


class EnginePool:
    """Holds the active engine; ``loader(variant_id)`` returns a loaded engine."""

    def __init__(
        self,
        loader: Callable[[str], Engine],
        max_pinned: int = 2,
        *,
        retry_unhealthy_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        warm: Callable[[str, Engine], object] | None = None,
        idle_loads: bool = False,
    ) -> None:
        self._loader = loader
        self._loader_gen = 0  # `set_loader` calls: an idle load from an older loader is stale
        self.idle_loads = idle_loads  # `set_loader`
        self.idle = IdleLoader(self)  # its thread starts at the first `preload_idle`
        self._warm = warm  # runs an engine about to serve (`_ready`)
        self._lock = threading.Lock()  # guards _leases and _resident; never held while loading
        self._swap_lock = threading.Lock()  # one load/swap at a time
        self._leases = Leases()
        self._resident = Residency(max_pinned)
        self._health = Health(retry_unhealthy_s, clock=clock)
        self.last_swap_ms: float | None = None
        self.last_swap_preloaded: bool | None = None
        self.swaps = 0
        self.reloads = 0  # `reload` calls: each drops the standby engines
        self._own = OwnWork()  # loads and swaps under way, for `disturbed`

    def disturbed(self, started: float) -> bool:
        """True when an engine call that started at ``started`` (``time.perf_counter()``)
        overlapped a load or swap, or began within ``SETTLE_S`` after one ended."""
        return self._own.disturbed(started)

    @property
    def unhealthy(self) -> frozenset[str]:
        """Variants whose engine failed to load (tried again after ``retry_unhealthy_s``,
        or at once after ``forgive``)."""
        return self._health.unhealthy()

    def unhealthy_reason(self, variant_id: str) -> str | None:
        """Why ``variant_id`` is unhealthy, or None when it is not (any longer)."""
        return self._health.reason(variant_id)

    @property
    def standby(self) -> tuple[str, ...]:
        """Variants preloaded for a fast swap."""
        with self._lock:
            return tuple(self._resident.standby)

    @property
    def pinned(self) -> tuple[str, ...]:
        """Variants loaded for pinned requests, least recently used first."""
        with self._lock:
            return tuple(self._resident.pinned)

    @property
    def loaded(self) -> tuple[str, ...]:
        """Every variant with a loaded engine in the pool."""
        with self._lock:
            return self._resident.loaded()

    def measured_mb(self, variant_id: str) -> float | None:
        """What loading ``variant_id`` added to this process's resident memory, the most
        seen (None until it was loaded here)."""
        with self._lock:
            return self._resident.load_mb.get(variant_id)

    def load_ms(self, variant_id: str) -> float | None:
        """What loading ``variant_id`` took the last time (None until it was loaded
        here): the work a preload of it puts on the cores the engines serve on."""
        with self._lock:
            return self._resident.load_ms.get(variant_id)

    def forgive(self, variant_id: str) -> None:
        """Let a variant that failed to load be tried again."""
        self._health.forgive(variant_id)

    def set_loader(self, loader: Callable[[str], Engine], *, idle_loads: bool = False) -> None:
        """Load later engines with ``loader`` (e.g. at a new thread count); see ``reload``.
        ``idle_loads``: standby engines may be loaded on a thread of the lowest CPU
        priority (`preload_idle`; their worker threads get the serving priority back when
        they serve, `idle_loader.WorkerThreads`)."""
        with self._swap_lock, self._lock:
            self._loader, self.idle_loads = loader, idle_loads
            self._loader_gen += 1
        self.idle.cancel()  # what it had left to load was the old loader's

    def preload(self, variant_ids: list[str]) -> None:
        """Keep exactly these variants (bar the active one) on standby, loading the missing
        ones now; failures mark the variant unhealthy, not raised (best effort)."""
        with self._swap_lock:
            for vid in self.standby_gaps(variant_ids):
                try:
                    engine = self._load(vid)
                except EngineError:
                    continue  # preloading is best effort; _load logged why
                self._add_standby(vid, engine, None)

    def preload_idle(
        self, variant_ids: list[str], fits: Callable[[list[str]], list[str]] | None = None
    ) -> None:
        """`preload` on the pool's ``idle`` loader (lowest CPU priority), at once; a later
        call replaces what is left to load; ``fits`` trims the list before each load.
        Nothing happens unless the loader's engines allow it (``idle_loads``)."""
        if self.idle_loads:
            self.idle.want(variant_ids, fits)

    def standby_gaps(self, variant_ids: list[str]) -> list[str]:
        """Keep on standby only ``variant_ids`` (bar the active one and unhealthy ones),
        promoting pinned engines to standby; the wanted variants still to load, in order."""
        sick = self.unhealthy
        with self._lock:
            active = self._resident.active_id
            wanted = [v for v in variant_ids if v != active and v not in sick]
            dropped = self._resident.keep_standby(wanted)
            to_close = [e for e in map(self._leases.retire, dropped) if e is not None]
            missing = []
            for vid in wanted:
                found = self._resident.pinned.pop(vid, None)  # promote, no load
                if found is not None:
                    self._resident.standby[vid] = found
                elif vid not in self._resident.standby:
                    missing.append(vid)
        _close(to_close)
        return missing

    def load_idle(self, variant_id: str) -> None:
        """Load and warm ``variant_id`` onto standby on the caller's (the idle loader's)
        thread, no lock held, disturbing no served call, its time not recorded; closed
        instead if a new loader came meanwhile or the variant is loaded."""
        with self._lock:
            loader, gen = self._loader, self._loader_gen
            if not self.idle_loads:
                return  # the loader's engines may not load there (a TensorRT family)
        try:
            with self.idle.workers.started() as started:
                engine = self._load(variant_id, loader=loader)
                self._ready(variant_id, engine, own=False)
        except EngineError:
            return
        self.idle.workers.keep(engine, started)  # at nice 19 until it serves
        self._add_standby(variant_id, engine, gen)

    def _add_standby(self, variant_id: str, engine: Engine, gen: int | None) -> None:
        """Put ``engine`` on standby, unless the variant is loaded already (an idle load
        and a foreground one met) or ``gen`` is an older loader's: then close it."""
        with self._lock:
            stale = gen not in (None, self._loader_gen)
            stale = stale or variant_id in self._resident.loaded()
            if not stale:
                self._resident.standby[variant_id] = engine
        if stale:
            engine.close()

    @property
    def active_id(self) -> str | None:
        """The variant now served, or None before the first activation."""
        return self._resident.active_id

    @property
    def ready(self) -> bool:
        return self._resident.active is not None

    def activate(self, variant_id: str) -> None:
        """Load ``variant_id`` and make it active; the old engine drains, then closes.

        A preloaded (or pinned) engine swaps in without loading. If loading fails the old
        engine stays active, the variant is marked unhealthy and the error propagates.
        """
        with self._swap_lock:
            if variant_id == self._resident.active_id:
                return
            self._swap_in(variant_id, reuse=True)

    def reload(self, keep: Callable[[Engine], bool] | None = None) -> bool:
        """Replace the loaded engines by fresh ones from the loader (after the power mode
        changed the cores or threads an engine should use): every one, or those ``keep``
        rejects (an engine already at the new thread count can stay). The active engine is
        replaced atomically; standby and pinned engines are dropped (the loop preloads
        again). True, counted in ``reloads``, when any engine went."""
        with self._swap_lock:
            with self._lock:
                dropped = self._resident.drop_standby_and_pinned(keep)
                active, engine = self._resident.active_id, self._resident.active
                stale = engine is not None and (keep is None or not keep(engine))
                if not dropped and not stale:
                    return False
                self.reloads += 1
                to_close = [e for e in map(self._leases.retire, dropped) if e is not None]
            _close(to_close)
            if stale and active is not None:
                self._swap_in(active, reuse=False)
            return True

    def _swap_in(self, variant_id: str, *, reuse: bool) -> None:
        """Under the swap lock: make ``variant_id`` active (loaded unless ``reuse`` finds it)."""
        with self._own.working():
            self._swap_in_locked(variant_id, reuse=reuse)

    def _swap_in_locked(self, variant_id: str, *, reuse: bool) -> None:
        started = time.perf_counter()
        with self._lock:
            engine = self._resident.take(variant_id) if reuse else None
        preloaded = engine is not None
        if engine is None:
            engine = self._load(variant_id)
        self._ready(variant_id, engine)
        self.idle.workers.serve(engine)  # an idle load's worker threads: serving priority
        with self._lock:
            old, old_id = self._resident.make_active(variant_id, engine)
            keep = reuse and self._resident.max_pinned > 0 and old_id not in (None, variant_id)
            if keep and old is not None and old_id is not None:
                # keep it warm among the pinned few: a switch back (or the next preload)
                # takes it from there instead of loading it again; a reload drops it
                leaving = self._resident.remember(old_id, old)
            else:
                leaving = [old] if old is not None else []
            to_close = [e for e in map(self._leases.retire, leaving) if e is not None]
            self.swaps += 1
        self.last_swap_ms = (time.perf_counter() - started) * 1e3
        self.last_swap_preloaded = preloaded
        _close(to_close)
        log.info("active engine is now %s (swap %.2f ms)", variant_id, self.last_swap_ms)

    def _load(self, variant_id: str, loader: Callable[[str], Engine] | None = None) -> Engine:
        """The loader's engine, with what it cost in memory (and, but for an idle load
        from ``loader``, in time); any failure (MemoryError included) marks the variant
        unhealthy and is raised as an EngineError that says why and what to do."""
        rss, started = _rss(), time.perf_counter()
        try:
            with self._own.working(own=loader is None):  # the idle loader's disturbs none
                engine = (loader or self._loader)(variant_id)
        except EdgeServiceError as exc:
            error = EngineError(exc.message)
            cause: BaseException = exc
        except MemoryError as exc:
            error = EngineError(
                f"out of memory loading {variant_id}: free memory on the board, keep fewer "
                "engines on standby (EDGE_PRELOAD_MEMORY_MB) or serve a smaller variant"
            )
            cause = exc
        except Exception as exc:  # noqa: BLE001 - a backend's own error must not escape
            error = EngineError(f"loading {variant_id} failed: {type(exc).__name__}: {exc}")
            cause = exc
        else:
            grew = max(0.0, (_rss() - rss) / 2**20)
            with self._lock:
                seen = self._resident.load_mb
                seen[variant_id] = max(grew, seen.get(variant_id, 0.0))
                if loader is None:
                    self._resident.load_ms[variant_id] = (time.perf_counter() - started) * 1e3
            return engine
        self._health.mark(variant_id, error.message)
        log.warning("engine %s failed to load; marked unhealthy: %s", variant_id, error.message)
        raise error from cause

    def _ready(self, variant_id: str, engine: Engine, *, own: bool = True) -> None:
        """Warm ``engine`` (held by no role) before it serves, as the server's own work
        unless not ``own`` (the idle loader's); an engine that cannot run is closed once
        its leases end, its variant marked unhealthy, an EngineError raised."""
        if self._warm is None:
            return
        try:
            with self._own.working(own):
                self._warm(variant_id, engine)
        except Exception as exc:  # a backend's own error too
            with self._lock:
                leaving = self._leases.retire(engine)
            if leaving is not None:
                leaving.close()
            why = error_reason(exc)
            message = f"{variant_id} loaded but cannot run: {why}"
            self._health.mark(variant_id, message)
            log.warning("engine %s failed its first run; marked unhealthy: %s", variant_id, why)
            raise EngineError(message) from exc

    @contextmanager
    def lease(self, variant_id: str | None = None) -> Iterator[tuple[str, Engine]]:
        """Borrow an engine (and its variant id) for one request: the active one, or with
        ``variant_id`` that variant's (loaded on demand into the pinned cache)."""
        engine, vid = self._take(variant_id)
        try:
            yield vid, engine
        finally:
            with self._lock:
                drained = self._leases.release(engine)
            if drained is not None:
                drained.close()

    def _take(self, variant_id: str | None) -> tuple[Engine, str]:
        """Find (or load) the engine and count a lease on it."""
        with self._lock:
            found = self._find(variant_id)
            if found is not None:
                return found
        with self._swap_lock:  # load a pinned variant once, however many ask at once
            with self._lock:
                found = self._find(variant_id)
                if found is not None:
                    return found
            assert variant_id is not None  # the active engine is always found
            engine = self._load_pinned(variant_id)
            with self._lock:
                evicted = self._resident.remember(variant_id, engine)
                to_close = [e for e in map(self._leases.retire, evicted) if e is not None]
                self._leases.acquire(engine)
            _close(to_close)
            return engine, variant_id

    def _load_pinned(self, variant_id: str) -> Engine:
        """Load a variant a request named; a 503 that says why when it cannot be."""
        why = self.unhealthy_reason(variant_id)
        if why is None:
            try:
                engine = self._load(variant_id)
                self._ready(variant_id, engine)
                return engine
            except EngineError as exc:
                why = exc.message
        raise NotReadyError(
            f"variant {variant_id} is unhealthy: {why}. The other variants still serve "
            "(leave the variant out to let the controller choose)"
        )

    def _find(self, variant_id: str | None) -> tuple[Engine, str] | None:
        """Under the lock: a loaded engine for the request, with its lease counted."""
        found = self._resident.find(variant_id)
        if found is None:
            if variant_id is None or variant_id == self._resident.active_id:
                raise NotReadyError("no engine is loaded yet; retry when /v2/health/ready is 200")
            return None
        self._leases.acquire(found[0])
        return found

    def close(self) -> None:
        """Stop the idle loader; close every engine the pool holds."""
        self.idle.close()
        with self._lock:
            engines = [*self._resident.clear(), *self._leases.clear()]
        _close(engines)


def _close(engines: list[Engine]) -> None:
    for engine in engines:
        engine.close()


def _rss() -> int:
    """This process's resident memory in bytes."""
    return int(psutil.Process().memory_info().rss)
