"""The protocol every monitor source (jtop, tegra sysfs, linux, replay) implements."""

from __future__ import annotations

from typing import Protocol

from edge_service.monitor.context import Context


class MonitorSource(Protocol):
    """Something that reads the board's state on demand.

    `sample()` is called by the monitor loop (about 10 Hz) and should return quickly; it
    raises MonitorError when the state cannot be read at all. `close()` releases whatever
    the source holds (a jtop connection, an open trace) and may be called more than once.
    """

    name: str

    def sample(self) -> Context:
        """Read the state now."""
        ...

    def close(self) -> None:
        """Release the source's resources."""
        ...
