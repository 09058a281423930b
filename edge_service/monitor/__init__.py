"""Monitor: what state the board is in (power mode, clocks, temperatures, memory, load).

A `MonitorSource` returns a `Context` on demand. Sources: `LinuxSource` (any Linux box,
cgroup-aware) and `ReplaySource` (a recorded JSONL trace); `TraceRecorder` writes such
traces and `read_trace` reads them.
"""

from __future__ import annotations

from edge_service.monitor.context import Context, PowerMode
from edge_service.monitor.linux_source import LinuxSource
from edge_service.monitor.replay import ReplaySource, TraceRecorder, read_trace
from edge_service.monitor.source import MonitorSource

__all__ = [
    "Context",
    "LinuxSource",
    "MonitorSource",
    "PowerMode",
    "ReplaySource",
    "TraceRecorder",
    "read_trace",
]
