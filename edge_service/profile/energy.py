"""Energy per inference: measured from power rails or RAPL where a machine has them, else
estimated from CPU time, and always labelled which.

Three meters share one small protocol (``start()``, then ``stop() -> EnergyReading``):

- `RailEnergyMeter` (a Jetson): a background thread samples a `MonitorSource` every
  ``period_s`` and integrates `Context.power_total_mw` over the window (trapezoids). It is
  the whole module's power (the input rail where the board has one), idle share included,
  as NVIDIA's own tools report it. Measured: ``estimated=False``.
- `RaplEnergyMeter` (an Intel/AMD box with powercap): the difference of
  ``/sys/class/powercap/intel-rapl:0/energy_uj`` over the window, wrap-around handled. It is
  the whole CPU package, other processes included. Measured: ``estimated=False``.
- `CpuTimeEnergyMeter` (anywhere else, e.g. a VM): **an estimate**, the CPU time this
  process consumed in the window (every thread, the runtime's workers and their spin-waits
  included) times an assumed active power per core, `DEFAULT_CORE_ACTIVE_W` (2.5 W, a
  mid-range figure for one busy ARM/x86 core; pass another with ``core_active_w``). It
  says nothing about this machine's real draw; it ranks variants by CPU work done.
  ``estimated=True``.

`default_meter` picks the best of these the machine has.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_service.errors import ConfigError, MonitorError
from edge_service.monitor.source import MonitorSource
from edge_service.monitor.sysfs import read_int

log = logging.getLogger(__name__)

DEFAULT_CORE_ACTIVE_W = 2.5  # assumed draw of one fully busy CPU core, watts (estimate only)
RAPL_DIR = Path("sys/class/powercap/intel-rapl:0")  # under the root, like the monitor's paths


@dataclass(frozen=True)
class EnergyReading:
    """Energy used over one measuring window, and how it was obtained."""

    energy_mj: float
    seconds: float
    estimated: bool
    method: str  # "rails", "rapl" or "cpu-time x <W> W/core"

    @property
    def mean_power_mw(self) -> float | None:
        """Mean power over the window (mJ / s = mW); None for an empty window."""
        return self.energy_mj / self.seconds if self.seconds > 0 else None

    def per_inference_mj(self, inferences: int) -> float:
        """Energy of one inference, when ``inferences`` ran in the window."""
        if inferences < 1:
            raise ConfigError(f"energy per inference needs >= 1 inference, got {inferences}")
        return self.energy_mj / inferences


class EnergyMeter(Protocol):
    """Measures the energy used between ``start()`` and ``stop()``."""

    @property
    def estimated(self) -> bool:
        """True when the meter estimates rather than measures."""
        ...

    def start(self) -> None:
        """Open a window."""
        ...

    def stop(self) -> EnergyReading:
        """Close the window and return its energy."""
        ...


def integrate_mw(samples: Sequence[tuple[float, float]]) -> float:
    """Energy in mJ of ``(seconds, mW)`` samples, by the trapezoid rule (mW x s = mJ)."""
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(samples))


def cpu_energy_mj(cpu_seconds: float, core_active_w: float = DEFAULT_CORE_ACTIVE_W) -> float:
    """The estimate: ``cpu_seconds`` of busy core time at ``core_active_w`` watts, in mJ."""
    if cpu_seconds < 0 or core_active_w <= 0:
        raise ConfigError(
            f"CPU energy needs cpu_seconds >= 0 and core_active_w > 0, "
            f"got {cpu_seconds} and {core_active_w}"
        )
    return cpu_seconds * core_active_w * 1e3


def counter_delta(before: int, after: int, max_range: int | None) -> int:
    """The increase of a wrapping counter (RAPL's ``energy_uj`` wraps at ``max_range``)."""
    if after >= before:
        return after - before
    if max_range is None:
        raise MonitorError("the RAPL energy counter went backwards and its range is unknown")
    return max_range - before + after


class CpuTimeEnergyMeter:
    """The estimate: CPU time consumed by this process x an assumed per-core power."""

    estimated = True

    def __init__(
        self,
        core_active_w: float = DEFAULT_CORE_ACTIVE_W,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        cpu_energy_mj(0.0, core_active_w)  # validates the wattage
        self.core_active_w = core_active_w
        self._cpu_clock, self._wall_clock = cpu_clock, wall_clock
        self._start: tuple[float, float] | None = None

    def start(self) -> None:
        """Note the process CPU time and the wall time now."""
        self._start = (self._cpu_clock(), self._wall_clock())

    def stop(self) -> EnergyReading:
        """Estimated energy since ``start()``."""
        cpu0, wall0 = _started(self._start)
        cpu_s = max(0.0, self._cpu_clock() - cpu0)
        return EnergyReading(
            energy_mj=cpu_energy_mj(cpu_s, self.core_active_w),
            seconds=self._wall_clock() - wall0,
            estimated=True,
            method=f"cpu-time x {self.core_active_w:g} W/core",
        )


class RaplEnergyMeter:
    """Intel RAPL package energy from powercap (measured, whole package)."""

    estimated = False

    def __init__(self, root: Path = Path("/")) -> None:
        self._dir = root / RAPL_DIR
        if read_int(self._dir / "energy_uj") is None:
            raise MonitorError(f"no readable RAPL counter at {self._dir / 'energy_uj'}")
        self._max = read_int(self._dir / "max_energy_range_uj")
        self._start: tuple[int, float] | None = None

    def start(self) -> None:
        """Read the counter now."""
        self._start = (self._read(), time.perf_counter())

    def stop(self) -> EnergyReading:
        """Package energy since ``start()``."""
        if self._start is None:
            raise MonitorError("energy meter stopped before it was started")
        uj0, t0 = self._start
        delta = counter_delta(uj0, self._read(), self._max)
        return EnergyReading(delta / 1e3, time.perf_counter() - t0, False, "rapl")

    def _read(self) -> int:
        value = read_int(self._dir / "energy_uj")
        if value is None:
            raise MonitorError(f"the RAPL counter {self._dir / 'energy_uj'} became unreadable")
        return value


class RailEnergyMeter:
    """Integrates a monitor source's rail power, sampled in a background thread (measured)."""

    estimated = False

    def __init__(self, source: MonitorSource, period_s: float = 0.05) -> None:
        if period_s <= 0:
            raise ConfigError(f"rail sampling period must be > 0 s, got {period_s}")
        self._source, self._period_s = source, period_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take a first sample and keep sampling until ``stop()``."""
        self._samples = []
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="rail-energy", daemon=True)
        self._thread.start()

    def stop(self) -> EnergyReading:
        """Stop sampling, take a last sample, integrate."""
        if self._thread is None:
            raise MonitorError("energy meter stopped before it was started")
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()
        if len(self._samples) < 2:
            raise MonitorError(
                f"source {self._source.name} gave no power rail readings while measuring; "
                "is the INA3221 driver loaded?"
            )
        seconds = self._samples[-1][0] - self._samples[0][0]
        return EnergyReading(integrate_mw(self._samples), seconds, False, "rails")

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self._sample()

    def _sample(self) -> None:
        try:
            mw = self._source.sample().power_total_mw
        except MonitorError as exc:
            log.debug("rail sample failed: %s", exc.message)
            return
        if mw is not None:
            self._samples.append((time.perf_counter(), mw))


def default_meter(
    source: MonitorSource | None = None,
    *,
    root: Path = Path("/"),
    core_active_w: float = DEFAULT_CORE_ACTIVE_W,
) -> EnergyMeter:
    """Rails when `source` reads power, else RAPL under `root`, else the CPU-time estimate."""
    if source is not None and _reads_power(source):
        return RailEnergyMeter(source)
    try:
        return RaplEnergyMeter(root)
    except MonitorError:
        pass
    log.info(
        "no power rails or RAPL here: energy is ESTIMATED from CPU time at %g W per busy core",
        core_active_w,
    )
    return CpuTimeEnergyMeter(core_active_w)


def _reads_power(source: MonitorSource) -> bool:
    try:
        return source.sample().power_total_mw is not None
    except MonitorError:
        return False


def _started(start: tuple[float, float] | None) -> tuple[float, float]:
    if start is None:
        raise MonitorError("energy meter stopped before it was started")
    return start
