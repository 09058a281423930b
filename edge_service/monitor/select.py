"""Choosing the monitor source from settings.

``linux`` (the default here) reads psutil and cgroups; ``replay`` plays a recorded JSONL
trace (looping), so a whole server can be driven through a scripted day of board states.
The Jetson sources (jtop, tegra sysfs) and the automatic order come with the monitor issue.
"""

from __future__ import annotations

from pathlib import Path

from edge_service.errors import ConfigError
from edge_service.monitor.linux_source import LinuxSource
from edge_service.monitor.replay import ReplaySource
from edge_service.monitor.source import MonitorSource

SOURCES = ("linux", "replay")


def open_source(kind: str, trace: Path | None = None, speed: float = 1.0) -> MonitorSource:
    """The monitor source named ``kind``; ``replay`` needs ``trace``."""
    if kind == "linux":
        return LinuxSource()
    if kind == "replay":
        if trace is None:
            raise ConfigError("EDGE_MONITOR_SOURCE=replay needs EDGE_MONITOR_TRACE=<trace.jsonl>")
        return ReplaySource(trace, speed=speed, loop=True)
    raise ConfigError(f"EDGE_MONITOR_SOURCE={kind!r} is not one of {SOURCES}")
