"""Thermal zones with their trip points, and whether the board is being throttled.

Zones and their trip points are found once (`find_zones`); each sample then reads one
``temp`` file per zone. Throttling is judged two ways, either one enough:

- a zone is at or above one of its *passive*, *hot* or *critical* trip points (the kernel
  caps clocks at those; *active* trips only start a fan, so they do not count);
- a clock-throttling cooling device is engaged: Tegra's soctherm exposes ``*-balanced``
  devices (``cpu-balanced``, ``gpu-balanced``, ``emergency-balanced``) and some kernels
  ``*throttle*`` ones, whose ``cur_state`` is non-zero while they hold clocks down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_service.monitor.sysfs import numbered, read_int, read_text

logger = logging.getLogger(__name__)

THROTTLING_TRIPS = ("passive", "hot", "critical")
THROTTLING_DEVICES = ("balanced", "throttle")
# Tegra zones whose sensor is powered off (e.g. the CV / DLA zones of an Orin Nano, which
# has no DLA) read -256 C; anything this cold is "no reading".
OFFLINE_BELOW_C = -255.0


@dataclass(frozen=True)
class ThermalZone:
    """One thermal zone: its name (the zone type), ``temp`` file and throttling trips in C."""

    name: str
    temp_file: Path
    trips_c: tuple[float, ...] = ()


def find_zones(sys_root: Path) -> list[ThermalZone]:
    """Every ``class/thermal/thermal_zone*``, named by type (the directory on a repeat)."""
    zones: list[ThermalZone] = []
    seen: set[str] = set()
    for zone in numbered(sys_root / "class/thermal", "thermal_zone*"):
        kind = read_text(zone / "type") or zone.name
        name = zone.name if kind in seen else kind
        seen.add(name)
        zones.append(ThermalZone(name, zone / "temp", _trips_c(zone)))
    return zones


def _trips_c(zone: Path) -> tuple[float, ...]:
    trips = []
    for kind_file in zone.glob("trip_point_*_type"):
        if read_text(kind_file) in THROTTLING_TRIPS:
            milli = read_int(zone / kind_file.name.replace("_type", "_temp"))
            if milli is not None and milli > 0:
                trips.append(milli / 1000.0)
    return tuple(sorted(trips))


def read_temps(zones: Sequence[ThermalZone]) -> dict[str, float]:
    """Current temperature of each zone in C; unreadable and powered-off zones left out."""
    temps: dict[str, float] = {}
    for zone in zones:
        milli = read_int(zone.temp_file)
        if milli is not None and milli / 1000.0 > OFFLINE_BELOW_C:
            temps[zone.name] = milli / 1000.0
    return temps


def find_throttle_devices(sys_root: Path) -> list[Path]:
    """``cur_state`` files of the clock-throttling cooling devices (see module docstring)."""
    found = []
    for device in numbered(sys_root / "class/thermal", "cooling_device*"):
        kind = (read_text(device / "type") or "").lower()
        if any(word in kind for word in THROTTLING_DEVICES):
            found.append(device / "cur_state")
    return found


def is_throttled(
    zones: Sequence[ThermalZone], temps: dict[str, float], devices: Sequence[Path]
) -> bool | None:
    """True when a zone is past a throttling trip or a throttle device is engaged.

    None when there is nothing to judge by (no trip points and no throttle devices).
    """
    if not devices and not any(zone.trips_c for zone in zones):
        return None
    for zone in zones:
        temp = temps.get(zone.name)
        if temp is not None and zone.trips_c and temp >= zone.trips_c[0]:
            return True
    return any((read_int(state) or 0) > 0 for state in devices)
