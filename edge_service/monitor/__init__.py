"""Monitor: what state the board is in (power mode, clocks, temperatures, memory, load).

A `MonitorSource` returns a `Context` on demand. Sources: `JtopSource` (jetson-stats'
service), `TegraSource` (a Jetson's sysfs), `TegrastatsSource` (NVIDIA's tegrastats),
`LinuxSource` (any Linux box, cgroup-aware) and `ReplaySource` (a recorded JSONL trace);
`FailoverSource` falls from one to the next and `open_source` picks them by name
(``auto`` for the best available). `NvpModel` queries and sets nvpmodel power modes,
`EmulatedNvpModel` emulates them with CPU affinity off-Jetson. `TraceRecorder` writes
traces and `read_trace` reads them.
"""

from __future__ import annotations

from edge_service.monitor.context import Context, PowerMode
from edge_service.monitor.emulated import EmulatedNvpModel, EmulatedPowerMode, default_modes
from edge_service.monitor.failover import FailoverSource
from edge_service.monitor.jtop_source import JtopSource
from edge_service.monitor.linux_source import LinuxSource
from edge_service.monitor.nvpmodel import NvpModel, PowerModeQuery
from edge_service.monitor.replay import ReplaySource, TraceRecorder, read_trace
from edge_service.monitor.select import SOURCES, open_source
from edge_service.monitor.source import MonitorSource
from edge_service.monitor.tegra_source import TegraSource
from edge_service.monitor.tegrastats import TegrastatsSource, parse_tegrastats

__all__ = [
    "SOURCES",
    "Context",
    "EmulatedNvpModel",
    "EmulatedPowerMode",
    "FailoverSource",
    "JtopSource",
    "LinuxSource",
    "MonitorSource",
    "NvpModel",
    "PowerMode",
    "PowerModeQuery",
    "ReplaySource",
    "TegraSource",
    "TegrastatsSource",
    "TraceRecorder",
    "default_modes",
    "open_source",
    "parse_tegrastats",
    "read_trace",
]
