"""The resources one server process holds: catalog, engine pool, monitor, adaptation loop.

Built in the app's lifespan from Settings (never at import time) and torn down with it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from edge_service.config import Settings
from edge_service.control.decision import Decision
from edge_service.control.events import AdaptationEvent, EventLog
from edge_service.control.factory import (
    EngineMemory,
    policy_from,
    shadow_runs_are_safe,
    strategy_for,
)
from edge_service.control.learner import LatencyLearner
from edge_service.control.limits import Policy
from edge_service.control.loop import AdaptationLoop
from edge_service.data.pipeline import Preprocess
from edge_service.errors import MonitorError
from edge_service.hostinfo import device_id
from edge_service.monitor.emulated import usable_cores
from edge_service.monitor.select import open_source
from edge_service.monitor.source import MonitorSource
from edge_service.repository import Catalog, load_catalog
from edge_service.runtime.batcher import MicroBatcher
from edge_service.runtime.pool import EnginePool
from edge_service.server.background import BackgroundBuild, CatalogWatcher
from edge_service.server.broadcast import Broadcaster
from edge_service.server.engines import (
    Warmer,
    at_threads,
    batch_limit,
    blank_png,
    engine_loader,
    idle_loads_allowed,
    shadow_run,
)
from edge_service.server.power import ModeChange, PowerControl
from edge_service.server.telemetry import StateCollector, Telemetry
from edge_service.server.threads import ThreadFallback

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Service:
    """Everything a request handler needs, owned by the app's lifespan."""

    settings: Settings
    catalog: Catalog
    pool: EnginePool
    loop: AdaptationLoop
    events: EventLog
    source: MonitorSource
    device: str
    started_at: float
    power: PowerControl
    batcher: MicroBatcher
    telemetry: Telemetry
    broadcaster: Broadcaster
    policy: Policy
    _preprocess: dict[str | None, Preprocess] = field(default_factory=dict)
    _ops_lock: threading.Lock = field(default_factory=threading.Lock)
    background: BackgroundBuild | None = None  # EDGE_BACKGROUND_BUILD: the rest of the family
    watcher: CatalogWatcher | None = None
    engine_memory: EngineMemory  # the preloader's costs, by the catalog served now
    learner: LatencyLearner = field(default_factory=LatencyLearner)  # outlives strategies
    warmer: Warmer = field(default_factory=Warmer)  # the pool's, measured per variant
    fallback: ThreadFallback | None = None  # fewer engine threads under a CPU competitor

    def preprocess(self, variant_id: str | None = None) -> Preprocess:
        """How a request becomes one variant's input (its own resolution); without a
        variant, the family's native input (enough for decoding)."""
        cached = self._preprocess.get(variant_id)
        if cached is None:  # once per variant: the hot path of /v1/infer reads the cache
            size = (
                None
                if variant_id is None
                else (self.catalog.variant(variant_id).variant_spec.input_size)
            )
            cached = self._preprocess[variant_id] = self.catalog.input.preprocess(size)
        return cached

    def warm_up(self) -> None:
        """One request's path end to end (PNG decode, preprocess, engine), so the first
        real request does not pay for lazy imports and allocations."""
        with self.pool.lease() as (variant_id, engine):
            engine.infer(self.preprocess(variant_id).from_bytes(blank_png()))

    def set_policy(self, policy: Policy) -> Decision | None:
        """Follow ``policy`` from now on; the loop decides with it at once."""
        for vid in policy.pins.values():
            self.catalog.pinnable(vid)  # NotFoundError (unknown), RejectedVariantError (gate)
        with self._ops_lock:
            self.policy = policy
            return self.loop.set_strategy(
                strategy_for(policy, self.settings, self.catalog, self.device, self.learner)
            )

    def set_power_mode(self, mode: int | str) -> ModeChange:
        """Switch the power mode, decide again, reload the engines at its thread count.

        Each switch is an event (``kind="power_mode"``), a failed one too: when nvpmodel
        fails (HostCommandError, 502) the mode and the engines stay as they were.
        """
        with self._ops_lock:
            try:
                change = self.power.set(mode)
            except MonitorError as exc:
                self._power_event(f"power mode -> {mode} failed; nothing changed", exc.message)
                raise
            before = change.previous.name if change.previous else "?"
            self._power_event(f"power mode {before} -> {change.current.name}", None)
            self.source.invalidate_power_mode()
            self.explore_if_safe()  # the shadow runs the new thread count allows
            self._load_at_threads(self.catalog)
        return change

    def reload_catalog(self, catalog: Catalog) -> None:
        """Serve from ``catalog`` from now on (a build or profile run wrote a new one).

        Engines already loaded stay (a request keeps the engine it started on); one whose
        artifact changed is reloaded; the strategy is rebuilt over the new variants and
        profiles and decides at once, so an engine that landed can be chosen now.
        """
        with self._ops_lock:
            before = {v.id: v.artifact.sha256 for v in self.catalog.variants}
            self.catalog = catalog
            self._preprocess = {}
            self.engine_memory.catalog = catalog
            self._load_at_threads(catalog, reload=False)
            now = {v.id: v.artifact.sha256 for v in catalog.variants}
            changed = [v for v, sha in now.items() if before.get(v) not in (None, sha)]
            self.learner.forget(changed)
            self.warmer.forget(changed)
            active = self.pool.active_id
            if active in now and before.get(active) not in (None, now[active]):
                self.pool.reload()
            added = sorted(set(now) - set(before))
            servable = sum(1 for v in catalog.variants if v.status == "servable")
            reason = f"catalog: {len(now)} variants, {servable} servable" + (
                f" (new: {', '.join(added)})" if added else ""
            )
            self.events.append(AdaptationEvent.note("catalog", reason, active))
            strategy = strategy_for(self.policy, self.settings, catalog, self.device, self.learner)
        self.loop.set_strategy(strategy)
        self.explore_if_safe()

    def explore_if_safe(self) -> None:
        """Let the loop measure standby variants by shadow runs where that does not slow
        the served engine (`shadow_runs_are_safe`), at the engines' thread count now."""
        threads = self.engine_threads or len(usable_cores())
        safe = shadow_runs_are_safe(threads, self._servable_backends())
        self.loop.set_prober(self.shadow_run if safe else None)
        if not safe:
            log.info(
                "no shadow runs at %d threads per engine (they would slow the served engine); "
                "the controller moves on predictions and what it serves",
                threads,
            )

    @property
    def engine_threads(self) -> int:
        """Intra-op threads engines load with now (0: the runtime picks): the power mode's,
        or fewer while other processes hold the cores (`edge_service.server.threads`)."""
        cap = self.fallback.cap if self.fallback is not None else None
        return self.power.threads if cap is None else min(cap, self.mode_threads())

    def mode_threads(self) -> int:
        """The threads the power mode gives each engine (every usable core for 0)."""
        return self.power.threads or len(usable_cores())

    def cpu_engines(self) -> bool:
        """True when a servable engine runs on ONNX Runtime's CPU threads."""
        return any(backend != "tensorrt" for backend in self._servable_backends())

    def _servable_backends(self) -> set[str]:
        return {v.backend for v in self.catalog.variants if v.status == "servable"}

    def set_engine_threads(self, cap: int | None, reason: str) -> bool:
        """Reload the engines at ``cap`` threads (None: the mode's), as the thread fallback
        asks; False, changing nothing, while an operator call holds the service (the next
        tick asks again)."""
        if not self._ops_lock.acquire(blocking=False):
            return False
        try:
            self.learner.set_regime(cap)  # learned apart
            self.explore_if_safe()  # one thread per engine: shadow runs are safe now
            self.events.append(AdaptationEvent.note("threads", reason, self.pool.active_id))
            self._load_at_threads(self.catalog)
        finally:
            self._ops_lock.release()
        return True

    def _load_at_threads(self, catalog: Catalog, *, reload: bool = True) -> None:
        """Engines load from ``catalog`` at the thread count in force from now on (standby
        ones on the idle loader, `idle_loads_allowed`); with ``reload``, the loop decides
        first (a step down loads its target at the new count, `AdaptationLoop.refit`),
        then those loaded at another count are replaced (`at_threads`: the others stay,
        standby ones too)."""
        threads = self.engine_threads
        loader = engine_loader(catalog, self.settings.family_dir, threads)
        self.pool.set_loader(loader, idle_loads=idle_loads_allowed(catalog, threads))
        if reload:
            self.loop.refit(lambda: self.pool.reload(keep=at_threads(threads)))

    def new_regime(self, cores: float) -> None:
        """A competitor came (``cores`` > 0) or went: the controller forgets what described
        the board as it was (`AdaptationLoop.new_regime`), and when one went, the contention
        it caused, and measures at once; the event says so."""
        self.loop.new_regime(improved=cores < 0)
        if cores < 0:
            self.learner.reset_contention()
        others = self.fallback.guard.others if self.fallback is not None else 0.0
        reason = f"CPU competition changed: other processes now use {others:.1f} cores"
        self.events.append(AdaptationEvent.note("contention", reason, self.pool.active_id))

    def on_batch(self, variant_id: str, rows: int, engine_ms: float) -> None:
        """The batcher's hook after each engine call: telemetry, and a one-row call for
        the controller to learn from unless the server's own loads overlapped it
        (`EnginePool.disturbed`). A call that proves a violation holds the worker until the
        loop acts, at most one more call of this engine (`AdaptationLoop.wake`)."""
        self.telemetry.on_batch(variant_id, rows, engine_ms)
        if rows != 1:
            return
        learn = not self.pool.disturbed(time.perf_counter() - engine_ms / 1e3)
        if self.loop.strategy.observe(variant_id, engine_ms, learn=learn):
            self.loop.wake(wait_s=min(engine_ms / 1e3, REACT_WAIT_MAX_S))

    def ready_for(self, variant_id: str | None = None) -> bool:
        """An engine is loaded, and ``variant_id`` (if named) is not marked unhealthy."""
        return self.pool.ready and (variant_id is None or variant_id not in self.pool.unhealthy)

    def output_name(self) -> str:
        """The name of the served engines' first output."""
        with self.pool.lease() as (_, engine):
            return engine.info().output_names[0]

    def shadow_run(self, variant_id: str) -> list[float]:
        """The loop's prober (`engines.shadow_run`): the engine loaded here first (standby
        or the pinned cache), so the batcher's worker never waits for a load."""
        with self.pool.lease(variant_id):
            pass
        expect_ms = self.loop.strategy.predicted_ms(variant_id)
        return shadow_run(
            self.batcher, self.preprocess(variant_id), variant_id, self.settings.probe_runs,
            expect_ms,
        )  # fmt: skip

    def _power_event(self, reason: str, error: str | None) -> None:
        self.events.append(AdaptationEvent.note("power_mode", reason, self.pool.active_id, error))
        if error is not None:
            log.error("%s: %s", reason, error)

    def live_state(self) -> dict[str, object]:
        """What /metrics and the live views read: queue, swaps, active variant, board."""
        ctx = self.loop.state().context
        mode = ctx.power_mode if ctx is not None and ctx.power_mode else self.power.current()
        return {
            "queue_depth": self.batcher.depth,
            "ready": 1 if self.pool.ready else 0,
            "swaps": self.pool.swaps,
            "last_swap_ms": self.pool.last_swap_ms,
            "active_variant": self.pool.active_id,
            "power_mode": mode.to_dict() if mode else None,
            "power_mw": dict(ctx.power_mw) if ctx else {},
            "temps_c": dict(ctx.temps_c) if ctx else {},
            "cpu_load": ctx.cpu_load if ctx else None,
            "mem_available_mb": ctx.mem_available_mb if ctx else None,
        }

    def close(self) -> None:
        if self.background is not None:
            self.background.stop()
        if self.watcher is not None:
            self.watcher.stop()
        self.loop.stop()
        self.batcher.close()
        self.pool.close()
        self.source.close()


REACT_WAIT_MAX_S = 0.5  # the longest the batcher waits for the loop to act on a violation


def start_service(
    settings: Settings, source: MonitorSource | None = None, broadcaster: Broadcaster | None = None
) -> Service:
    """Load the catalog, start the monitor, the loop and the batcher; an engine is active
    on return."""
    catalog = load_catalog(settings.family_dir)
    device = device_id()
    power = PowerControl.create(settings)  # before any engine thread starts
    warmer = Warmer()
    pool = EnginePool(
        engine_loader(catalog, settings.family_dir, power.threads),
        max_pinned=settings.max_pinned_engines,
        warm=warmer,
        idle_loads=idle_loads_allowed(catalog, power.threads),
    )
    events = EventLog(settings.events_kept)
    src = source or open_source(
        settings.monitor_source,
        settings.monitor_trace,
        settings.monitor_replay_speed,
        nvpmodel=power.nvp,
    )
    policy = policy_from(settings)
    learner = LatencyLearner()
    engine_memory = EngineMemory(catalog, pool.measured_mb)
    loop = AdaptationLoop(
        source=src,
        pool=pool,
        strategy=strategy_for(policy, settings, catalog, device, learner),
        events=events,
        period_s=settings.monitor_period_s,
        preload_memory_mb=settings.preload_memory_mb,
        preload_load_ms=settings.preload_load_ms,
        engine_memory_mb=engine_memory,
    )
    telemetry = Telemetry(settings.streams_kept)
    hub = broadcaster or Broadcaster()
    loop.start()
    batcher = MicroBatcher(
        pool,
        max_batch=batch_limit(settings.batch_max_size, catalog.input.shape[0]),
        max_delay_ms=settings.batch_max_delay_ms,
        max_queue=settings.queue_max,
        on_batch=telemetry.on_batch,
    )
    log.info(
        "serving family %s from %s; active %s", catalog.family, settings.family_dir, pool.active_id
    )
    service = Service(
        settings=settings,
        catalog=catalog,
        pool=pool,
        loop=loop,
        events=events,
        source=src,
        device=device,
        started_at=time.time(),
        power=power,
        batcher=batcher,
        telemetry=telemetry,
        broadcaster=hub,
        policy=policy,
        learner=learner,
        warmer=warmer,
        engine_memory=engine_memory,
    )
    batcher.on_batch = service.on_batch  # the controller learns from the served calls
    telemetry.registry.register(StateCollector(service.live_state))
    _warn_if_foreign(service)
    if pool.ready:
        service.warm_up()
    service.explore_if_safe()
    if settings.thread_fallback:
        service.fallback = ThreadFallback(
            service.set_engine_threads, service.mode_threads, service.cpu_engines,
            shift=service.new_regime,
        )  # fmt: skip
        loop.listen(service.fallback.on_tick)
    service.watcher = CatalogWatcher(
        settings.family_dir, service.reload_catalog, settings.catalog_poll_s
    )
    service.watcher.start()
    if settings.background_build:
        # on a Jetson only the current nvpmodel mode: the others would switch the board
        modes = None if service.power.emulated else _current_mode_id(service.power)
        service.background = BackgroundBuild(settings, profile_modes=modes)
        service.background.start()
    return service


def _warn_if_foreign(service: Service) -> None:
    """A catalog measured on another device: its latencies say nothing about this one."""
    built_on = (service.catalog.build.get("device") or {}).get("id")
    if built_on == service.device:
        return
    why = (
        f"catalog of {service.catalog.family} was measured on device {built_on or 'unknown'}, "
        f"not this one ({service.device}): its profiles are not trusted here; "
        "`edge-service serve --build` (or `edge-service build`) fits the family to this device"
    )
    log.warning(why)
    service.events.append(AdaptationEvent.note("catalog", why, service.pool.active_id))


def _current_mode_id(power: PowerControl) -> str | None:
    mode = power.current()
    return str(mode.id) if mode is not None else None
