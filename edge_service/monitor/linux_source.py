"""Monitor source for any Linux machine: psutil, cgroup limits, cpufreq and thermal zones.

It knows nothing of GPUs or power rails (those fields stay None / empty), and reports a
power mode only when given something to ask (an `EmulatedNvpModel` off-Jetson); it is
the source off-Jetson and the fallback on a Jetson without jtop or tegra sysfs access.
Inside a container the cgroup CPU quota and memory limit are the real budget, so they cap
what psutil reports for the host.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from edge_service.hostinfo import device_name
from edge_service.monitor.cgroup import CgroupLimits, own_cgroups, read_limits
from edge_service.monitor.context import Context
from edge_service.monitor.nvpmodel import CachedPowerMode, PowerModeQuery
from edge_service.monitor.source import SourceBase
from edge_service.monitor.sysfs import cpu_freqs_hz, thermal_temps_c

logger = logging.getLogger(__name__)

_MB = 1024 * 1024


class LinuxSource(SourceBase):
    """Reads this machine's state with psutil and the files under `root` (``/sys``, ``/proc``).

    `cgroup_root` is where the cgroup hierarchy is mounted; tests point it (and `root`) at
    fixture trees. CPU load is the busy fraction of the usable cores since the previous
    `sample()` (or since construction, for the first one), from per-core CPU times held by
    this instance: unlike `psutil.cpu_percent(interval=None)`, whose "since the last call"
    is shared by every caller in the process, another reader cannot shorten the window.

    `nvpmodel` (e.g. an `EmulatedNvpModel`) gives the power mode, asked at most every
    `mode_refresh_s` seconds (an `EmulatedNvpModel` answers for free: pass 0); without it
    ``power_mode`` is None.
    """

    name: str = "linux"

    def __init__(
        self,
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        root: Path = Path("/"),
        *,
        nvpmodel: PowerModeQuery | None = None,
        mode_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cgroup_root = cgroup_root
        self._mode = (
            CachedPowerMode(nvpmodel, mode_refresh_s, clock) if nvpmodel is not None else None
        )
        self._sys = root / "sys"
        self._own_cgroups = own_cgroups(root / "proc/self/cgroup")
        self._device = device_name(root)
        self._last_times = _cpu_times()
        self._last_load = 0.0
        logger.debug("linux source on %r, cgroups %s", self._device, self._own_cgroups)

    def sample(self) -> Context:
        """Read the state now (a few small file reads; does not block)."""
        limits = read_limits(self._cgroup_root, self._own_cgroups)
        cores = usable_cores()
        total_mb, available_mb = memory_mb(limits)
        return Context(
            t=time.time(),
            source=self.name,
            device=self._device,
            power_mode=self._mode.current() if self._mode else None,
            cpu_online=online_cores(cores, limits),
            cpu_freqs_hz=cpu_freqs_hz(self._sys),
            cpu_load=self._cpu_load(cores),
            mem_available_mb=available_mb,
            mem_total_mb=total_mb,
            temps_c=thermal_temps_c(self._sys),
        )

    def invalidate_power_mode(self) -> None:
        """Read the power mode afresh at the next sample (it was just switched)."""
        if self._mode is not None:
            self._mode.invalidate()

    def close(self) -> None:
        """Nothing to release; present for the MonitorSource protocol."""

    def _cpu_load(self, cores: Sequence[int]) -> float:
        now = _cpu_times()
        before, self._last_times = self._last_times, now
        load = busy_fraction(before, now, cores)
        if load is not None:  # None: too soon to tell, or CPUs came and went; keep the last
            self._last_load = load
        return self._last_load


def usable_cores() -> list[int]:
    """The CPU numbers this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def online_cores(cores: Sequence[int], limits: CgroupLimits) -> int:
    """Usable cores, capped by the cgroup CPU quota rounded up (1.5 cores of quota -> 2)."""
    count = len(cores)
    if limits.cpu_cores is not None:
        count = min(count, math.ceil(limits.cpu_cores))
    return max(1, count)


def memory_mb(limits: CgroupLimits) -> tuple[float, float]:
    """(total, available) memory in MiB: the host's, capped by the cgroup limit and usage."""
    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    if limits.mem_limit_bytes is not None:
        total = min(total, limits.mem_limit_bytes)
        room = limits.mem_limit_bytes - (limits.mem_used_bytes or 0)
        available = min(available, max(0, room))
    return total / _MB, available / _MB


def busy_fraction(before: Sequence[Any], now: Sequence[Any], cores: Sequence[int]) -> float | None:
    """Busy share of `cores` between two `psutil.cpu_times(percpu=True)` snapshots.

    psutil lists online CPUs in order; when the affinity mask covers them all every entry
    counts, otherwise CPU number i is taken as entry i. None when no time has passed or the
    number of CPUs changed between the snapshots.
    """
    if len(before) != len(now):
        return None
    picked = range(len(now)) if len(cores) >= len(now) else [c for c in cores if c < len(now)]
    total = idle = 0.0
    for i in picked:
        total += _total(now[i]) - _total(before[i])
        idle += _idle(now[i]) - _idle(before[i])
    if total <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - idle / total))


def _cpu_times() -> list[Any]:
    return list(psutil.cpu_times(percpu=True))


def _total(times: Any) -> float:
    # Linux counts guest time inside user time too; drop it so it is not counted twice.
    return float(sum(times)) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _idle(times: Any) -> float:
    return float(times.idle) + getattr(times, "iowait", 0.0)
