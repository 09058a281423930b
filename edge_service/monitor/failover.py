"""A monitor source that falls through an ordered list of sources, and climbs back.

`FailoverSource` holds factories, best first (e.g. jtop, tegra sysfs, linux). It opens
the first that works; when the current source raises, the same `sample()` call goes on
to the next one, so the monitor loses no period. Every `retry_s` seconds it tries the
better sources again and returns to the best that works. Each source's failure is logged
once when it happens and once when it recovers, not on every retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from edge_service.errors import MonitorError
from edge_service.monitor.context import Context
from edge_service.monitor.source import MonitorSource, SourceBase

logger = logging.getLogger(__name__)

SourceFactory = Callable[[], MonitorSource]


def factory_name(factory: SourceFactory) -> str:
    """A label for logs: the factory's ``name`` (source classes have one) or its __name__."""
    for candidate in (factory, getattr(factory, "func", None)):
        label = getattr(candidate, "name", None) or getattr(candidate, "__name__", None)
        if isinstance(label, str):
            return label
    return repr(factory)


class FailoverSource(SourceBase):
    """Samples the best working source of `factories` (best first); see the module docstring.

    Raises MonitorError on construction when no source opens, and from `sample()` when
    every source fails in that call; `clock` (monotonic seconds) is injectable for tests.
    """

    name: str = "auto"

    def __init__(
        self,
        factories: Sequence[SourceFactory],
        retry_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not factories:
            raise MonitorError("FailoverSource needs at least one source factory")
        self._factories = list(factories)
        self._names = [factory_name(f) for f in factories]
        self._sources: list[MonitorSource | None] = [None] * len(factories)
        self._errors: dict[int, str] = {}  # index -> why it last failed, while it fails
        self._retry_s, self._clock = retry_s, clock
        self._current = self._open_first()
        self._retry_at = clock() + retry_s

    @property
    def current(self) -> str:
        """The name of the source now sampled."""
        return self._names[self._current]

    @property
    def failures(self) -> dict[str, str]:
        """Why each source that fails now failed (by name); the adaptation loop puts the
        reason into its failover event."""
        return {self._names[i]: why for i, why in sorted(self._errors.items())}

    def sample(self) -> Context:
        """A Context from the best source that works now."""
        if self._current > 0 and self._clock() >= self._retry_at:
            self._retry_at = self._clock() + self._retry_s
            ctx = self._first_context(range(self._current))
            if ctx is not None:
                return ctx
        ctx = self._first_context(range(self._current, len(self._factories)))
        if ctx is None:
            raise MonitorError(f"every monitor source failed: {self._reasons()}")
        return ctx

    def invalidate_power_mode(self) -> None:
        """Pass a power mode change on to every open source."""
        for source in self._sources:
            if source is not None:
                source.invalidate_power_mode()

    def close(self) -> None:
        """Close every open source; safe to call twice."""
        for i in range(len(self._sources)):
            self._drop(i)

    def _open_first(self) -> int:
        for i in range(len(self._factories)):
            if self._open(i) is not None:
                return i
        raise MonitorError(f"no monitor source could be opened: {self._reasons()}")

    def _first_context(self, indices: range) -> Context | None:
        for i in indices:
            source = self._sources[i] or self._open(i)
            if source is None:
                continue
            try:
                ctx = source.sample()
            except Exception as exc:  # noqa: BLE001 - any failure of a source falls through
                self._failed(i, exc)
                self._drop(i)
                continue
            self._switch_to(i)
            return ctx
        return None

    def _open(self, i: int) -> MonitorSource | None:
        try:
            self._sources[i] = self._factories[i]()
        except Exception as exc:  # noqa: BLE001 - a source that cannot open is skipped
            self._failed(i, exc)
            return None
        return self._sources[i]

    def _switch_to(self, i: int) -> None:
        if i in self._errors:
            logger.info("monitor source %s works again", self._names[i])
            del self._errors[i]
        if i == self._current:
            return
        if i < self._current:
            self._drop(self._current)  # back on a better source: release the worse one
        else:
            self._retry_at = self._clock() + self._retry_s
        logger.warning("monitor now reads %s (was %s)", self._names[i], self.current)
        self._current = i

    def _failed(self, i: int, exc: Exception) -> None:
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if i not in self._errors:
            logger.warning("monitor source %s failed: %s", self._names[i], reason)
        else:
            logger.debug("monitor source %s still failing: %s", self._names[i], reason)
        self._errors[i] = reason

    def _drop(self, i: int) -> None:
        source, self._sources[i] = self._sources[i], None
        if source is None:
            return
        try:
            source.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken source must not fail us
            logger.debug("closing monitor source %s: %s", self._names[i], exc)

    def _reasons(self) -> str:
        return "; ".join(f"{self._names[i]}: {why}" for i, why in sorted(self._errors.items()))
