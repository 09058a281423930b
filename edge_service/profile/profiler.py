"""Profile a family's engines in each power mode and write the results into its catalog.

For each power mode (real nvpmodel modes on a Jetson, `EmulatedNvpModel` modes elsewhere:
the process pinned to the mode's cores and ONNX Runtime engines made with its thread
count), for each variant: load the engine, time it at each batch size (p50/p99), then
meter back-to-back batch-1 calls for at least ``runs`` calls and ``energy_seconds``
(see `edge_service.profile.energy`: measured from rails or RAPL, else an estimate marked
``energy_estimated``), take the peak memory it added, note the mode's resources, and store
a `Profile` under ``variant.profiles[device][mode name]``.

Memory: the peak resident memory (RSS) the engine added while loading and running: freed
heap is first handed back to the OS (glibc ``malloc_trim``) and the kernel's high-water
mark ``VmHWM`` reset (``/proc/self/clear_refs``); the figure is ``VmHWM`` after the runs
minus the RSS before the load. Where the mark cannot be reset it is the largest RSS seen
after the load and after each batch size (a lower bound). The runtime's one-time set-up
is absorbed by loading one engine unmeasured first (`prime_runtime`). On a Jetson the
GPU's nvmap buffers of a TensorRT engine are not in RSS, so they are not counted.

Accuracy (``accuracy_split``) is measured once per run for TensorRT variants only, in the
first mode they are measured in, reported through ``on_progress`` and stored in the
profile of every mode measured in the run (``Profile.accuracy``): a TensorRT engine is
built for its device, so its accuracy is a property of the device; a power mode changes
clocks and cores, not arithmetic. ONNX Runtime runs the same file the builder measured,
so its profiles carry no accuracy and the catalog's `Accuracy` applies.

Resume: the catalog is saved atomically after every variant. With ``resume`` a (variant,
mode) pair is skipped when ``profiles[device][mode]`` already holds a profile written by
this profiler (one with an energy figure; the builder's have none) measured after the
artifact file was last written; a rebuilt artifact is measured again. Changing ``runs`` or
``batches`` does not invalidate a profile: use ``resume=False`` for that.

A variant that cannot be loaded or run (missing or corrupt artifact, engine error) is
skipped with a warning and a ``failed`` event, so one bad file does not waste the other
measurements; anything else (a mode that cannot be set, an interrupt) stops the run. The
original power mode and CPU affinity are restored at the end either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from edge_service.data.fashion import Split
from edge_service.errors import BadInputError, CatalogError, ConfigError, EngineError
from edge_service.monitor.emulated import EmulatedNvpModel
from edge_service.monitor.nvpmodel import NvpModel
from edge_service.monitor.tegra_source import TegraSource, is_jetson
from edge_service.profile.accuracy import engine_accuracy
from edge_service.profile.energy import (
    DEFAULT_CORE_ACTIVE_W,
    EnergyMeter,
    EnergyReading,
    default_meter,
)
from edge_service.profile.latency import measure_latency
from edge_service.profile.memory import PeakMemory
from edge_service.profile.modes import (
    ModeSetting,
    ModeSwitcher,
    default_nvpmodel,
    mode_ids,
    switcher_for,
)
from edge_service.repository import (
    Catalog,
    InputInfo,
    LatencyStats,
    Profile,
    Variant,
    save_catalog,
)
from edge_service.runtime.engine import Engine
from edge_service.runtime.loader import open_engine

log = logging.getLogger(__name__)

# Errors that mean "this variant's engine is unusable": skipped, the run goes on.
VARIANT_ERRORS = (CatalogError, EngineError, BadInputError)

Status = Literal["measured", "skipped", "failed"]


@dataclass(frozen=True)
class ProfileEvent:
    """One (variant, mode) pair done: measured, skipped (resume) or failed (why)."""

    variant_id: str
    mode: str
    step: int
    total: int
    status: Status
    profile: Profile | None = None
    accuracy: float | None = None  # top-1 on ``accuracy_split`` (TensorRT variants only)
    error: str | None = None


ProgressFn = Callable[[ProfileEvent], None]


@dataclass(frozen=True)
class _Plan:
    family_dir: Path
    device: str
    batches: tuple[int, ...]
    runs: int
    warmup: int
    meter: EnergyMeter
    energy_seconds: float
    accuracy_split: Split | None
    input: InputInfo


def profile_family(
    catalog: Catalog,
    family_dir: Path,
    *,
    device: str,
    modes: Sequence[int] | None = None,
    batches: Sequence[int] = (1, 8),
    runs: int = 200,
    warmup: int = 10,
    energy_seconds: float = 1.0,
    accuracy_split: Split | None = None,
    resume: bool = True,
    on_progress: ProgressFn | None = None,
    nvpmodel: NvpModel | EmulatedNvpModel | None = None,
    meter: EnergyMeter | None = None,
    root: Path = Path("/"),
) -> Catalog:
    """Profile every variant in each of ``modes`` (ids; default: all) on ``device``.

    ``nvpmodel`` defaults to `default_nvpmodel()`, ``meter`` to `profiling_meter()` (rails
    on a Jetson); `root` is where /sys is read (tests point it at a board's fixture tree).
    Saves the catalog after every variant; returns the updated catalog. See the module
    docstring for the memory, accuracy, resume and failure rules.
    """
    if runs < 1 or warmup < 0 or energy_seconds < 0 or not batches or min(batches) < 1:
        raise ConfigError(
            f"need runs >= 1, warmup >= 0, energy_seconds >= 0 and batches >= 1; got "
            f"{runs}, {warmup}, {energy_seconds}, {list(batches)}"
        )
    nvp = nvpmodel if nvpmodel is not None else default_nvpmodel(root)
    ids = mode_ids(nvp, modes)
    plan = _Plan(
        family_dir,
        device,
        tuple(dict.fromkeys(batches)),
        runs,
        warmup,
        meter or profiling_meter(root=root),
        energy_seconds,
        accuracy_split,
        catalog.input,
    )
    notify = on_progress or (lambda event: None)
    switcher = switcher_for(nvp, root / "sys")
    try:
        return _run(catalog, plan, ids, switcher, resume, notify)
    finally:
        switcher.restore()


def _run(
    catalog: Catalog,
    plan: _Plan,
    ids: list[int],
    switcher: ModeSwitcher,
    resume: bool,
    notify: ProgressFn,
) -> Catalog:
    total, step = len(ids) * len(catalog.variants), 0
    accuracy_done: dict[str, float] = {}
    primed = False
    for mode_id in ids:
        setting = switcher.enter(mode_id)
        for variant in list(catalog.variants):
            step += 1
            if resume and is_fresh(variant, plan.family_dir, plan.device, setting.name):
                log.debug("%s in %s: measured already, skipped", variant.id, setting.name)
                notify(ProfileEvent(variant.id, setting.name, step, total, "skipped"))
                continue
            primed = primed or prime_runtime(catalog.variants, plan.family_dir)
            event = _profile_one(variant, setting, plan, accuracy_done, step, total)
            if event.profile is not None:
                catalog = with_profile(
                    catalog, variant.id, plan.device, setting.name, event.profile
                )
                save_catalog(plan.family_dir, catalog)
            notify(event)
    return catalog


def _profile_one(
    variant: Variant,
    setting: ModeSetting,
    plan: _Plan,
    accuracy_done: dict[str, float],
    step: int,
    total: int,
) -> ProfileEvent:
    want_accuracy = (
        plan.accuracy_split is not None
        and variant.backend == "tensorrt"
        and variant.id not in accuracy_done
    )
    try:
        profile, top1 = _measure_variant(variant, setting, plan, want_accuracy)
    except VARIANT_ERRORS as exc:
        log.warning("%s in %s: skipped, %s", variant.id, setting.name, exc.message)
        return ProfileEvent(variant.id, setting.name, step, total, "failed", error=exc.message)
    if top1 is not None:
        accuracy_done[variant.id] = top1
    if variant.id in accuracy_done:
        profile = profile.model_copy(update={"accuracy": accuracy_done[variant.id]})
    return ProfileEvent(variant.id, setting.name, step, total, "measured", profile, top1)


def _measure_variant(
    variant: Variant, setting: ModeSetting, plan: _Plan, with_accuracy: bool = False
) -> tuple[Profile, float | None]:
    """Load, time, meter and (optionally) score one variant in the current mode."""
    memory = PeakMemory()
    memory.start()
    engine = open_engine(variant, plan.family_dir, setting.threads)
    try:
        memory.sample()
        latency, energy, inferences = _timed(engine, plan, memory)
        memory_mb = memory.stop()
        top1 = None
        if with_accuracy and plan.accuracy_split is not None:
            spec = plan.input.spec(variant.variant_spec.input_size)
            top1 = engine_accuracy(engine, plan.accuracy_split, spec)
        providers = engine.info().providers
    finally:
        engine.close()
    backend = "tensorrt" if variant.backend == "tensorrt" else f"onnxruntime[{','.join(providers)}]"
    profile = Profile(
        backend=backend,
        threads=setting.threads,
        latency=latency,
        memory_mb=round(memory_mb, 3),
        energy_mj=energy.per_inference_mj(inferences),
        energy_estimated=energy.estimated,
        power_mw=energy.mean_power_mw,
        cores=setting.cores,
        cpu_max_freq_hz=setting.cpu_max_freq_hz,
        gpu_max_freq_hz=setting.gpu_max_freq_hz,
        measured_at=datetime.now(timezone.utc),
    )
    return profile, top1


def _timed(
    engine: Engine, plan: _Plan, memory: PeakMemory
) -> tuple[dict[str, LatencyStats], EnergyReading, int]:
    """Latency at each batch the engine takes, then energy at the smallest (batch 1)."""
    usable = usable_batches(engine, plan.batches)
    latency: dict[str, LatencyStats] = {}
    for batch in usable:
        stats = measure_latency(engine, batch, warmup=plan.warmup, runs=plan.runs)
        latency[str(batch)] = LatencyStats(**stats)  # type: ignore[arg-type]
        memory.sample()
    reading, inferences = _metered_runs(engine, min(usable), plan)
    return latency, reading, inferences


def _metered_runs(engine: Engine, batch: int, plan: _Plan) -> tuple[EnergyReading, int]:
    """Energy of back-to-back calls on a warm engine: at least ``plan.runs`` of them and
    ``plan.energy_seconds`` long (rails are sampled at ~20 Hz); returns the reading and the
    number of inferences (images) it covers. Nothing but ``infer`` runs in the window."""
    x = sample_input(engine, batch)
    calls = 0
    plan.meter.start()
    try:
        start = time.perf_counter()
        while calls < plan.runs or time.perf_counter() - start < plan.energy_seconds:
            engine.infer(x)
            calls += 1
    finally:
        reading = plan.meter.stop()
    return reading, calls * batch


def usable_batches(engine: Engine, batches: Iterable[int]) -> tuple[int, ...]:
    """The ``batches`` the engine takes: all for a dynamic batch, else its fixed one."""
    fixed = engine.info().input_shape[0]
    wanted = sorted(set(batches))
    if not isinstance(fixed, int):
        return tuple(wanted)
    if fixed in wanted:
        return (fixed,)
    raise EngineError(
        f"{engine.info().variant_id} takes batch {fixed} only; profile with --batches {fixed}"
    )


def sample_input(engine: Engine, batch: int | None = None, seed: int = 0) -> np.ndarray:
    """A random float32 batch the engine takes (``batch`` None: its fixed batch, or 1)."""
    shape = engine.info().input_shape
    if batch is None:
        batch = shape[0] if isinstance(shape[0], int) else 1
    dims = [batch, *(d if isinstance(d, int) else 1 for d in shape[1:])]
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


def prime_runtime(variants: Iterable[Variant], family_dir: Path) -> bool:
    """Load, run and close the first usable engine once, unmeasured, so the runtime's
    one-time set-up (libraries paged in, global state) is not counted as the memory of
    whichever variant happens to be measured first. True once done (or nothing loads)."""
    for variant in variants:
        try:
            engine = open_engine(variant, family_dir, threads=1)
        except VARIANT_ERRORS:
            continue
        try:
            engine.infer(sample_input(engine))
        except VARIANT_ERRORS:
            continue
        finally:
            engine.close()
        break
    return True


def is_fresh(variant: Variant, family_dir: Path, device: str, mode: str) -> bool:
    """Whether the profile under (device, mode) is this profiler's and newer than the artifact."""
    profile = variant.profiles.get(device, {}).get(mode)
    if profile is None or profile.energy_mj is None:
        return False
    try:
        mtime = (family_dir / variant.artifact.path).stat().st_mtime
    except OSError:
        return False
    return profile.measured_at >= datetime.fromtimestamp(mtime, timezone.utc)


def with_profile(
    catalog: Catalog, variant_id: str, device: str, mode: str, profile: Profile
) -> Catalog:
    """A copy of ``catalog`` with ``profile`` under the variant's ``profiles[device][mode]``."""

    def update(v: Variant) -> Variant:
        if v.id != variant_id:
            return v
        by_mode = {**v.profiles.get(device, {}), mode: profile}
        return v.model_copy(update={"profiles": {**v.profiles, device: by_mode}})

    return catalog.model_copy(update={"variants": [update(v) for v in catalog.variants]})


def profiling_meter(
    core_active_w: float = DEFAULT_CORE_ACTIVE_W, root: Path = Path("/")
) -> EnergyMeter:
    """Rails through the tegra sysfs source on a Jetson; elsewhere RAPL, else the estimate
    at ``core_active_w`` watts per busy core."""
    source = TegraSource(root) if is_jetson(root) else None
    return default_meter(source, root=root, core_active_w=core_active_w)
