"""Small readers for Linux sysfs files (cpufreq, thermal zones), shared by the sources.

Every reader takes the sysfs root as a parameter so tests point it at a fixture tree, and
returns empty results where the files are absent (VMs, containers without /sys mounted).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

logger = logging.getLogger(__name__)

_NUMBERED = re.compile(r"(\d+)$")


def read_text(path: Path) -> str | None:
    """The stripped content of `path`, or None when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip("\x00 \n")
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    """The integer in `path`, or None when it is absent or not an integer."""
    text = read_text(path)
    try:
        return int(text) if text else None
    except ValueError:
        logger.debug("not an integer in %s: %r", path, text)
        return None


def numbered(parent: Path, pattern: str) -> list[Path]:
    """Entries of `parent` matching `pattern` (e.g. ``cpu[0-9]*``), sorted by trailing number."""

    def number(p: Path) -> int:
        match = _NUMBERED.search(p.name)
        return int(match.group(1)) if match else -1

    return sorted(parent.glob(pattern), key=number)


def cpu_freqs_hz(sys_root: Path) -> tuple[int, ...]:
    """Current clock of each CPU with cpufreq, in Hz (sysfs gives kHz), by CPU number."""
    cpus = numbered(sys_root / "devices/system/cpu", "cpu[0-9]*")
    khz = (read_int(cpu / "cpufreq/scaling_cur_freq") for cpu in cpus)
    return tuple(k * 1000 for k in khz if k is not None)


def thermal_temps_c(sys_root: Path) -> dict[str, float]:
    """Temperature of each thermal zone in degrees C, keyed by zone type.

    Zones whose temperature cannot be read (some report an error while powered down) are
    left out; a type seen twice is keyed by the zone's directory name the second time.
    """
    temps: dict[str, float] = {}
    for zone in numbered(sys_root / "class/thermal", "thermal_zone*"):
        milli = read_int(zone / "temp")
        if milli is None:
            continue
        kind = read_text(zone / "type") or zone.name
        temps[zone.name if kind in temps else kind] = milli / 1000.0
    return temps


def parse_cpu_list(text: str | None) -> list[int]:
    """CPU numbers in a kernel CPU list such as ``"0-3,5"`` (-> [0, 1, 2, 3, 5]).

    Malformed parts are skipped with a debug log; None or "" gives an empty list.
    """
    cpus: set[int] = set()
    for part in (text or "").replace("\n", ",").split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            if part.strip():
                logger.debug("not a CPU range: %r", part)
            continue
        cpus.update(range(int(first), int(last or first) + 1))
    return sorted(cpus)


def online_cpus(sys_root: Path) -> list[int]:
    """The online CPUs from ``devices/system/cpu/online`` (empty when it cannot be read)."""
    return parse_cpu_list(read_text(sys_root / "devices/system/cpu/online"))
