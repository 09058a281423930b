"""The names of the monitor sources: the one list that the settings, the CLI and the
monitor's registry (`edge_service.monitor.select.REGISTRY`) all read.

Kept at the bottom of the package so the settings can validate a name without importing
the monitor.
"""

from __future__ import annotations

from typing import Literal, get_args

MonitorSourceName = Literal["auto", "jtop", "tegra", "tegrastats", "linux", "replay"]
SOURCE_NAMES: tuple[str, ...] = get_args(MonitorSourceName)
