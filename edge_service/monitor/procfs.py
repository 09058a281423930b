"""Readers for /proc/meminfo and /proc/stat, so sources need no psutil to read them.

Like the sysfs readers, each takes the file's path so tests point it at a fixture tree,
and an unreadable file gives an empty result rather than an exception.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path

from edge_service.monitor.sysfs import read_text

logger = logging.getLogger(__name__)

# /proc/stat per-CPU columns: user nice system idle iowait irq softirq steal guest guest_nice
_IDLE, _IOWAIT, _GUEST = 3, 4, 8

# CPU number -> (total jiffies, idle jiffies), from one read of /proc/stat.
CpuTimes = Mapping[int, tuple[int, int]]


def meminfo_kb(path: Path) -> dict[str, int]:
    """Every ``Key: value kB`` line of /proc/meminfo as {key: kB}; lines without kB too."""
    info: dict[str, int] = {}
    for line in (read_text(path) or "").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            info[key.strip()] = int(fields[0])
    return info


def memory_mb(info: Mapping[str, int]) -> tuple[float, float] | None:
    """(total, available) MiB from a meminfo dict; None when MemTotal is missing.

    Kernels older than 3.14 lack MemAvailable; there free + buffers + page cache stands in.
    """
    total = info.get("MemTotal")
    if not total:
        return None
    available = info.get("MemAvailable")
    if available is None:
        available = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    return total / 1024, min(available, total) / 1024


def cpu_times(path: Path) -> dict[int, tuple[int, int]]:
    """Per-CPU (total, idle) jiffies from /proc/stat; offline CPUs have no line there.

    Guest time is already counted in user time, so it is left out of the total; iowait
    counts as idle.
    """
    times: dict[int, tuple[int, int]] = {}
    for line in (read_text(path) or "").splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        values = [int(v) for v in rest.split() if v.isdigit()]
        if len(values) > _IOWAIT:
            total = sum(values[:_GUEST])
            times[int(name[3:])] = (total, values[_IDLE] + values[_IOWAIT])
    return times


def busy_share(before: CpuTimes, now: CpuTimes, cores: Collection[int]) -> float | None:
    """Busy fraction of `cores` between two `cpu_times` reads; None when no time passed."""
    total = idle = 0
    for cpu in cores:
        if cpu in before and cpu in now:
            total += now[cpu][0] - before[cpu][0]
            idle += now[cpu][1] - before[cpu][1]
    if total <= 0:
        return None
    return min(1.0, max(0.0, 1.0 - idle / total))
