"""The protocol every monitor source (jtop, tegra sysfs, linux, replay) implements, and the
defaults of its optional parts (`SourceBase`)."""

from __future__ import annotations

from collections.abc import Mapping
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

    def invalidate_power_mode(self) -> None:
        """The power mode was just switched: read it afresh at the next sample (a source
        that caches none does nothing)."""
        ...

    @property
    def failures(self) -> Mapping[str, str]:
        """Why each source that a failover left behind failed, by name (empty for a
        single source)."""
        ...


class SourceBase:
    """The optional parts of `MonitorSource`, for sources that have nothing to say there."""

    def invalidate_power_mode(self) -> None:
        """Nothing cached: nothing to forget."""

    @property
    def failures(self) -> Mapping[str, str]:
        return {}
