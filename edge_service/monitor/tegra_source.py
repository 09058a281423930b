"""Monitor source for NVIDIA Jetson boards that reads sysfs and procfs directly.

It needs neither jtop nor root: GPU clock and load (devfreq), power rails (INA3221),
thermal zones and throttling, online cores and their clocks, memory (/proc/meminfo; the
GPU shares it, so ``mem_*`` is the whole pool, and GPU (nvmap) memory goes into
``extra["gpu_shared_mb"]`` where readable), CPU load from /proc/stat, the board's name
from the device tree and the power mode (see `TegraSource`). Files are found once; a
sample reads a few dozen small files and starts no process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from edge_service.errors import MonitorError
from edge_service.hostinfo import device_name
from edge_service.monitor.context import Context
from edge_service.monitor.nvpmodel import CachedPowerMode, PowerModeQuery, StatusFilePowerMode
from edge_service.monitor.procfs import busy_share, cpu_times, meminfo_kb, memory_mb
from edge_service.monitor.source import SourceBase
from edge_service.monitor.sysfs import online_cpus, read_int
from edge_service.monitor.tegra_hw import (
    find_gpu,
    find_rails,
    find_shared_gpu_memory,
    read_gpu,
    read_rails,
    read_shared_gpu_mb,
)
from edge_service.monitor.thermal import find_throttle_devices, find_zones, is_throttled, read_temps

logger = logging.getLogger(__name__)

TEGRA_RELEASE = "etc/nv_tegra_release"


def is_jetson(root: Path = Path("/")) -> bool:
    """True when `root` looks like a Jetson: an L4T release file or a GPU devfreq node."""
    return (root / TEGRA_RELEASE).exists() or find_gpu(root / "sys") is not None


class TegraSource(SourceBase):
    """Reads a Jetson's state from the files under `root` (tests point it at a fixture tree).

    The power mode comes from `nvpmodel` (an `NvpModel`, or an `EmulatedNvpModel`) when
    given, else from nvpmodel's status file; either way it is asked at most every
    `mode_refresh_s` seconds. CPU load is the busy share of the online cores since the
    previous sample (or construction). Raises MonitorError when `root` is not a Jetson.
    """

    name: str = "tegra"

    def __init__(
        self,
        root: Path = Path("/"),
        nvpmodel: PowerModeQuery | None = None,
        *,
        mode_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not is_jetson(root):
            raise MonitorError(
                f"not a Jetson: no {root / TEGRA_RELEASE} and no GPU under "
                f"{root / 'sys/class/devfreq'}; use the linux source"
            )
        self._root, self._sys, self._proc = root, root / "sys", root / "proc"
        self._device = device_name(root)
        self._gpu = find_gpu(self._sys)
        self._rails = find_rails(self._sys)
        self._zones = find_zones(self._sys)
        self._throttle_devices = find_throttle_devices(self._sys)
        self._shared = find_shared_gpu_memory(root)
        modes = nvpmodel if nvpmodel is not None else StatusFilePowerMode(root)
        self._mode = CachedPowerMode(modes, mode_refresh_s, clock)
        self._last_times = cpu_times(self._proc / "stat")
        self._last_load = 0.0
        logger.info("tegra source on %r: %s", self._device, self._found())

    def sample(self) -> Context:
        """Read the state now; MonitorError when memory cannot be read."""
        cores = online_cpus(self._sys)
        meminfo = meminfo_kb(self._proc / "meminfo")
        memory = memory_mb(meminfo)
        if memory is None:
            raise MonitorError(f"cannot read MemTotal from {self._proc / 'meminfo'}")
        gpu_hz, gpu_max_hz, gpu_load = read_gpu(self._gpu) if self._gpu else (None, None, None)
        temps = read_temps(self._zones)
        return Context(
            t=time.time(),
            source=self.name,
            device=self._device,
            power_mode=self._mode.current(),
            gpu_freq_hz=gpu_hz,
            gpu_max_freq_hz=gpu_max_hz,
            gpu_load=gpu_load,
            cpu_online=max(1, len(cores)),
            cpu_freqs_hz=self._cpu_freqs_hz(cores),
            cpu_load=self._cpu_load(cores),
            mem_total_mb=memory[0],
            mem_available_mb=memory[1],
            temps_c=temps,
            throttled=is_throttled(self._zones, temps, self._throttle_devices),
            power_mw=read_rails(self._rails),
            extra=self._extra(meminfo),
        )

    def invalidate_power_mode(self) -> None:
        """Read the power mode afresh at the next sample (it was just switched)."""
        if self._mode is not None:
            self._mode.invalidate()

    def close(self) -> None:
        """Nothing to release; present for the MonitorSource protocol."""

    def _cpu_freqs_hz(self, cores: list[int]) -> tuple[int, ...]:
        cpu_dir = self._sys / "devices/system/cpu"
        khz = (read_int(cpu_dir / f"cpu{c}/cpufreq/scaling_cur_freq") for c in cores)
        return tuple(k * 1000 for k in khz if k is not None)

    def _cpu_load(self, cores: list[int]) -> float:
        now = cpu_times(self._proc / "stat")
        before, self._last_times = self._last_times, now
        load = busy_share(before, now, cores)
        if load is not None:  # None: no time passed; keep the last value
            self._last_load = load
        return self._last_load

    def _extra(self, meminfo: dict[str, int]) -> dict[str, object]:
        if self._shared is None:
            return {}
        shared = read_shared_gpu_mb(self._shared, meminfo)
        return {"gpu_shared_mb": shared} if shared is not None else {}

    def _found(self) -> str:
        gpu = self._gpu.name if self._gpu else "no GPU devfreq"
        rails = ", ".join(r.name for r in self._rails) or "no power rails"
        return f"{gpu}; {rails}; {len(self._zones)} thermal zones"
