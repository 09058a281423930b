"""Power modes for profiling: real nvpmodel modes on a Jetson, emulated core sets elsewhere.

A switcher sets a mode (and on a Jetson waits for clocks and hot-plugged cores to settle,
then checks the mode took) and says which resources the mode has (cores, max clocks), so
profiles record what they were measured on.
"""

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge_service.errors import ConfigError, MonitorError
from edge_service.monitor.emulated import EmulatedNvpModel, apply_affinity, usable_cores
from edge_service.monitor.nvpmodel import NvpModel, check_mode_id
from edge_service.monitor.sysfs import online_cpus, read_int
from edge_service.monitor.tegra_hw import find_gpu
from edge_service.monitor.tegra_source import is_jetson

log = logging.getLogger(__name__)

JETSON_SETTLE_S = 2.0  # after nvpmodel -m, let clocks and hotplugged cores settle


@dataclass(frozen=True)
class ModeSetting:
    """A power mode as set: its name, the engines' thread count, its resources."""

    id: int
    name: str
    threads: int  # ONNX Runtime intra-op threads (0: the runtime's default)
    cores: int | None
    cpu_max_freq_hz: int | None
    gpu_max_freq_hz: int | None


class ModeSwitcher(Protocol):
    def enter(self, mode_id: int) -> ModeSetting: ...

    def restore(self) -> None: ...


def default_nvpmodel(root: Path = Path("/")) -> NvpModel | EmulatedNvpModel:
    """``nvpmodel`` on a Jetson, else the emulated modes (0 MAXN, 1 HALF, 2 MIN)."""
    return NvpModel() if is_jetson(root) else EmulatedNvpModel()


def mode_ids(nvp: NvpModel | EmulatedNvpModel, modes: Sequence[int] | None) -> list[int]:
    """The mode ids to profile: ``modes`` checked against the known ones, or all of them."""
    try:
        known = [m.id for m in nvp.modes()]
    except MonitorError:
        known = []  # no nvpmodel.conf to check against: nvpmodel itself will refuse
    if modes is None:
        if not known:
            raise ConfigError("cannot list this board's power modes; name them: --modes 0,1")
        return known
    ids = list(dict.fromkeys(check_mode_id(m) for m in modes))
    unknown = sorted(set(ids) - set(known)) if known else []
    if unknown or not ids:
        raise ConfigError(f"power modes {unknown or '[]'} unknown; this machine has {known}")
    return ids


def cpu_max_freq_hz(cores: Iterable[int], sys_root: Path = Path("/sys")) -> int | None:
    """The highest ``scaling_max_freq`` of ``cores`` in Hz; None where cpufreq is absent."""
    cpu_dir = sys_root / "devices/system/cpu"
    khz = [read_int(cpu_dir / f"cpu{c}/cpufreq/scaling_max_freq") for c in cores]
    readable = [k for k in khz if k is not None]
    return max(readable) * 1000 if readable else None


class _EmulatedModes:
    """Emulated modes: pins the process to each mode's cores; restores the original mask."""

    def __init__(self, nvp: EmulatedNvpModel, sys_root: Path) -> None:
        self._nvp, self._sys = nvp, sys_root
        self._original = usable_cores()

    def enter(self, mode_id: int) -> ModeSetting:
        self._nvp.set_mode(mode_id)
        mode = self._nvp.current
        freq = cpu_max_freq_hz(mode.cores, self._sys)
        return ModeSetting(mode.id, mode.name, mode.threads, len(mode.cores), freq, None)

    def restore(self) -> None:
        apply_affinity(self._original, allowed=self._original)


class _NvpModes:
    """Real nvpmodel modes (needs root); restores the mode the board was in."""

    def __init__(self, nvp: NvpModel, sys_root: Path) -> None:
        self._nvp, self._sys = nvp, sys_root
        self._original = nvp.query()

    def enter(self, mode_id: int) -> ModeSetting:
        self._nvp.set_mode(mode_id)
        time.sleep(JETSON_SETTLE_S)
        now = self._nvp.query()
        if now.id != mode_id:
            raise MonitorError(
                f"asked nvpmodel for mode {mode_id}, it reports {now.id} {now.name}; "
                f"some modes need a reboot: sudo nvpmodel -m {mode_id}, reboot, profile again"
            )
        cores = online_cpus(self._sys)
        gpu = find_gpu(self._sys)
        gpu_max = read_int(gpu.max_freq) if gpu else None
        return ModeSetting(
            now.id, now.name, 0, len(cores) or None, cpu_max_freq_hz(cores, self._sys), gpu_max
        )

    def restore(self) -> None:
        self._nvp.set_mode(self._original.id)


def switcher_for(nvp: NvpModel | EmulatedNvpModel, sys_root: Path) -> ModeSwitcher:
    if isinstance(nvp, EmulatedNvpModel):
        return _EmulatedModes(nvp, sys_root)
    return _NvpModes(nvp, sys_root)
