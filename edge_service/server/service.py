"""The resources one server process holds: catalog, engine pool, monitor, adaptation loop.

Built in the app's lifespan from Settings (never at import time) and torn down with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_service.config import Settings
from edge_service.control.budget import Policy
from edge_service.control.events import EventLog
from edge_service.control.loop import AdaptationLoop
from edge_service.control.policy import Candidate, SimpleRule
from edge_service.control.predictor import Predictor
from edge_service.control.strategy import BudgetStrategy, PressureStrategy, Strategy
from edge_service.data.pipeline import Preprocess
from edge_service.hostinfo import DEFAULT_POWER_MODE, device_name
from edge_service.monitor.emulated import EmulatedNvpModel
from edge_service.monitor.select import open_source
from edge_service.monitor.source import MonitorSource
from edge_service.repository import Catalog, Variant, load_catalog
from edge_service.runtime.engine import Engine
from edge_service.runtime.loader import open_engine
from edge_service.runtime.pool import EnginePool

log = logging.getLogger(__name__)


@dataclass
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
    _preprocess: dict[str | None, Preprocess] = field(default_factory=dict)

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
        import io

        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buf, "PNG")
        with self.pool.lease() as (variant_id, engine):
            engine.infer(self.preprocess(variant_id).from_bytes(buf.getvalue()))

    def close(self) -> None:
        self.loop.stop()
        self.pool.close()
        self.source.close()


def candidates(catalog: Catalog, device: str, power_mode: str) -> list[Candidate]:
    """The policy's view of the catalog on this device.

    A family built from the user's ONNX files has no measured accuracy; its networks are
    then ranked by the size of their FP32 artifact (bigger is taken as more accurate), a
    proxy kept below any measured accuracy.
    """
    fp32_bytes = {
        v.variant_spec.family_key: v.artifact.bytes
        for v in catalog.variants
        if v.precision == "fp32"
    }
    largest = max(fp32_bytes.values(), default=1) or 1
    out = []
    for v in catalog.variants:
        profile = v.profile_for(device, power_mode)
        if v.accuracy is not None:
            accuracy = v.accuracy.top1
        else:
            size = fp32_bytes.get(v.variant_spec.family_key, v.artifact.bytes)
            accuracy = -1.0 + size / largest / 2  # in [-1, -0.5]: below any measured top-1
        out.append(
            Candidate(
                variant_id=v.id,
                accuracy=accuracy,
                latency_ms=profile.latency_ms(1) if profile else None,
            )
        )
    return out


def engine_loader(catalog: Catalog, family_dir: Path, threads: int) -> Callable[[str], Engine]:
    """A ``variant_id -> loaded Engine`` function over the repository (checksums verified)."""

    def load(variant_id: str) -> Engine:
        return open_engine(catalog.variant(variant_id), family_dir, threads)

    return load


def engine_memory_mb(variant: Variant) -> float:
    """What loading a variant costs: its profiled peak memory, else a guess from its size
    (weights plus the runtime's working set, a few MB for these models)."""
    measured = [
        p.memory_mb
        for modes in variant.profiles.values()
        for p in modes.values()
        if p.memory_mb is not None
    ]
    return max(measured) if measured else 3 * variant.artifact.bytes / 1e6 + 4.0


def make_strategy(settings: Settings, catalog: Catalog, device: str) -> Strategy:
    """The budget policy when the operator set any budget, else the pressure rule."""
    policy = Policy(
        latency_budget_ms=settings.latency_budget_ms,
        min_accuracy=settings.min_accuracy,
        memory_budget_mb=settings.memory_budget_mb,
        max_power_mw=settings.max_power_mw,
        cooldown_s=settings.cooldown_s,
    )
    budgets = (
        policy.latency_budget_ms,
        policy.min_accuracy,
        policy.memory_budget_mb,
        policy.max_power_mw,
    )
    if any(b is not None for b in budgets):
        return BudgetStrategy(Predictor(catalog, device), policy)
    rule = SimpleRule(
        cpu_high=settings.cpu_pressure_high,
        mem_high=settings.mem_pressure_high,
        upgrade_cooldown_s=settings.cooldown_s,
    )
    return PressureStrategy(candidates(catalog, device, DEFAULT_POWER_MODE), rule)


def _emulated_power_mode(settings: Settings) -> tuple[EmulatedNvpModel | None, int]:
    """With EDGE_POWER_MODE set (off-Jetson), pin the process to that emulated mode's cores
    and size the inference threads to it; returns the mode keeper and the thread count."""
    if settings.power_mode is None:
        return None, settings.intra_op_threads
    nvp = EmulatedNvpModel()
    nvp.set_mode(settings.power_mode)
    mode = nvp.current
    log.info(
        "emulated power mode %d %s: cores %s, %d threads",
        mode.id,
        mode.name,
        list(mode.cores),
        mode.threads,
    )
    return nvp, settings.intra_op_threads or mode.threads


def start_service(settings: Settings, source: MonitorSource | None = None) -> Service:
    """Load the catalog, start the monitor and the loop; an engine is active on return."""
    catalog = load_catalog(settings.family_dir)
    device = device_name()
    nvp, threads = _emulated_power_mode(settings)  # before any engine thread starts
    pool = EnginePool(engine_loader(catalog, settings.family_dir, threads))
    events = EventLog(settings.events_kept)
    src = source or open_source(
        settings.monitor_source,
        settings.monitor_trace,
        settings.monitor_replay_speed,
        nvpmodel=nvp,
    )
    loop = AdaptationLoop(
        source=src,
        pool=pool,
        strategy=make_strategy(settings, catalog, device),
        events=events,
        period_s=settings.monitor_period_s,
        preload_memory_mb=settings.preload_memory_mb,
        engine_memory_mb=lambda vid: engine_memory_mb(catalog.variant(vid)),
    )
    loop.start()
    log.info(
        "serving family %s from %s; active %s", catalog.family, settings.family_dir, pool.active_id
    )
    service = Service(settings, catalog, pool, loop, events, src, device, time.time())
    if pool.ready:
        service.warm_up()
    return service
