"""CPU and memory limits from cgroups (v2 and v1): the real budget inside a container.

A container sees the host's cores and memory through psutil, but the kernel holds it to
its cgroup's CPU quota and memory limit. Limits are read along this process's own cgroup
(from /proc/self/cgroup) and every ancestor up to the mount root, and the tightest one wins;
where the own cgroup is not visible (a container without a cgroup namespace sees its own
cgroup at the mount root) the root alone is read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edge_service.monitor.sysfs import read_int, read_text

logger = logging.getLogger(__name__)

# cgroup v1 reports "no limit" as a huge page-rounded number (2**63 - 4096 and the like).
UNLIMITED_BYTES = 2**60

_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class CgroupLimits:
    """What the cgroups allow; None means unlimited or unknown."""

    cpu_cores: float | None = None
    mem_limit_bytes: int | None = None
    mem_used_bytes: int | None = None  # usage less inactive page cache (the "working set")


def own_cgroups(proc_self_cgroup: Path) -> dict[str, str]:
    """Controller -> cgroup path of this process, from /proc/self/cgroup.

    The v2 unified hierarchy is keyed by ``""``. An unreadable file gives an empty dict.
    """
    paths: dict[str, str] = {}
    for line in (read_text(proc_self_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def read_limits(cgroup_root: Path, own: Mapping[str, str] | None = None) -> CgroupLimits:
    """CPU quota and memory limit/usage under `cgroup_root` (v2 if cgroup.controllers exists)."""
    own = own or {}
    if (cgroup_root / "cgroup.controllers").exists():
        chain = _chain(cgroup_root, own.get("", "/"))
        return _read_v2(chain)
    cpu_chain = _chain(cgroup_root / "cpu", own.get("cpu", "/"))
    mem_chain = _chain(cgroup_root / "memory", own.get("memory", "/"))
    return _read_v1(cpu_chain, mem_chain)


def _chain(base: Path, own: str) -> list[Path]:
    """Existing cgroup directories from the process's own up to `base`, deepest first."""
    deepest = base / own.strip("/")
    candidates = [deepest, *(p for p in deepest.parents if p.is_relative_to(base))]
    return [d for d in candidates if d.is_dir()]


def _read_v2(chain: list[Path]) -> CgroupLimits:
    return CgroupLimits(
        cpu_cores=_tightest(_v2_cpu(d / "cpu.max") for d in chain),
        mem_limit_bytes=_tightest(_bytes_limit(d / "memory.max") for d in chain),
        mem_used_bytes=_working_set(chain, "memory.current", "inactive_file"),
    )


def _read_v1(cpu_chain: list[Path], mem_chain: list[Path]) -> CgroupLimits:
    return CgroupLimits(
        cpu_cores=_tightest(_v1_cpu(d) for d in cpu_chain),
        mem_limit_bytes=_tightest(_bytes_limit(d / "memory.limit_in_bytes") for d in mem_chain),
        mem_used_bytes=_working_set(mem_chain, "memory.usage_in_bytes", "total_inactive_file"),
    )


def _v2_cpu(cpu_max: Path) -> float | None:
    """Cores allowed by a v2 ``cpu.max`` ("150000 100000" -> 1.5; "max 100000" -> None)."""
    fields = (read_text(cpu_max) or "max").split()
    if len(fields) != 2 or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    return _quota_cores(int(fields[0]), int(fields[1]))


def _v1_cpu(cpu_dir: Path) -> float | None:
    """Cores allowed by v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: None)."""
    quota = read_int(cpu_dir / "cpu.cfs_quota_us")
    period = read_int(cpu_dir / "cpu.cfs_period_us")
    if quota is None or period is None:
        return None
    return _quota_cores(quota, period)


def _quota_cores(quota: int, period: int) -> float | None:
    """quota / period, or None for "no quota" (v1 writes -1) and nonsense periods."""
    return quota / period if quota > 0 and period > 0 else None


def _bytes_limit(path: Path) -> int | None:
    """A memory limit in bytes; "max", absent or absurdly large (>= 2**60) mean None."""
    text = read_text(path)
    if text is None or text == "max":
        return None
    try:
        limit = int(text)
    except ValueError:
        return None
    return limit if limit < UNLIMITED_BYTES else None


def _working_set(chain: list[Path], usage_file: str, inactive_key: str) -> int | None:
    """Memory in use by the deepest cgroup that reports it, less reclaimable page cache.

    Usage counts the page cache, which the kernel drops before it kills anything, so
    (like the kubelet) the inactive file cache is subtracted.
    """
    for d in chain:
        usage = read_int(d / usage_file)
        if usage is not None:
            return max(0, usage - _stat(d / "memory.stat", inactive_key))
    return None


def _stat(memory_stat: Path, key: str) -> int:
    for line in (read_text(memory_stat) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def _tightest(values: Iterable[_Number | None]) -> _Number | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None
