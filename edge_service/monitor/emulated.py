"""Emulated power modes for machines without nvpmodel: CPU affinity stands in for a mode.

A Jetson power mode caps clocks and turns cores off; off-Jetson the nearest honest knob
is which cores this process may run on (and how many threads the runtime should use).
`EmulatedNvpModel` has `NvpModel`'s ``query()`` / ``set_mode()`` / ``modes()``, so the
controller, the ops API and the monitor sources treat both alike. Clocks are not
emulated: a profile measured in an emulated mode says so by its mode name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_service.errors import ConfigError
from edge_service.monitor.context import PowerMode
from edge_service.monitor.nvpmodel import check_mode_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmulatedPowerMode:
    """One emulated mode: its id and name, the CPU cores it runs on, its thread count."""

    id: int
    name: str
    cores: tuple[int, ...]
    threads: int

    def __post_init__(self) -> None:
        check_mode_id(self.id)
        if not self.cores:
            raise ConfigError(f"emulated power mode {self.name!r} needs at least one core")
        if self.threads < 1:
            raise ConfigError(f"emulated power mode {self.name!r} needs threads >= 1")

    @property
    def power_mode(self) -> PowerMode:
        """The mode as the monitor reports it."""
        return PowerMode(id=self.id, name=self.name)


def usable_cores(pid: int = 0) -> tuple[int, ...]:
    """The cores `pid` (0: this process) may run on, or all CPUs where there is no affinity."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(pid)))
    return tuple(range(os.cpu_count() or 1))


def default_modes(cores: Sequence[int] | None = None) -> tuple[EmulatedPowerMode, ...]:
    """0 ``MAXN`` (every core), 1 ``HALF`` (the first half), 2 ``MIN`` (the first core).

    `cores` defaults to the cores this process may use now.
    """
    every = tuple(sorted(cores if cores is not None else usable_cores()))
    if not every:
        raise ConfigError("emulated power modes need at least one CPU core")
    half = every[: max(1, len(every) // 2)]
    return (
        EmulatedPowerMode(0, "MAXN", every, len(every)),
        EmulatedPowerMode(1, "HALF", half, len(half)),
        EmulatedPowerMode(2, "MIN", every[:1], 1),
    )


def apply_affinity(
    cores: Collection[int], pid: int = 0, allowed: Collection[int] | None = None
) -> None:
    """Pin `pid` to `cores`; `pid` 0 pins every thread of this process (the inference
    runtime's worker threads included; threads started later inherit the mask).

    Cores outside `allowed` (default: the cores it may use now) are refused with a
    ConfigError naming them, as is a platform without CPU affinity.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("this platform has no CPU affinity; emulated power modes need Linux")
    allowed = set(allowed if allowed is not None else usable_cores(pid))
    foreign = sorted(set(cores) - allowed)
    if foreign or not cores:
        raise ConfigError(
            f"cannot run on cores {foreign or '[]'}: this process may use {sorted(allowed)} "
            "(its cpuset or affinity mask); pick modes within those"
        )
    try:
        for tid in _threads() if pid == 0 else [pid]:
            try:
                os.sched_setaffinity(tid, set(cores))
            except ProcessLookupError:  # the thread ended between listing and pinning
                continue
    except OSError as exc:
        raise ConfigError(f"cannot pin to cores {sorted(cores)}: {exc.strerror or exc}") from exc
    logger.info("CPU affinity set to %s", sorted(cores))


def _threads() -> list[int]:
    """Every thread id of this process (sched_setaffinity(0) would pin only the caller)."""
    try:
        return sorted(int(t.name) for t in Path("/proc/self/task").iterdir())
    except OSError:
        return [0]


class EmulatedNvpModel:
    """Records the current emulated mode and, with `apply`, pins this process to its cores.

    The cores this process may use are taken once, at construction, so switching from a
    small mode back to ``MAXN`` is allowed again. The initial mode is recorded, not applied.
    """

    def __init__(
        self,
        modes: Sequence[EmulatedPowerMode] | None = None,
        initial: int = 0,
        apply: bool = True,
        pid: int = 0,
    ) -> None:
        self._allowed = usable_cores(pid) if hasattr(os, "sched_getaffinity") else ()
        self._modes = {m.id: m for m in (modes if modes is not None else default_modes())}
        self._apply, self._pid = apply, pid
        self._current = self._mode(initial)

    @property
    def current(self) -> EmulatedPowerMode:
        """The current mode, with its cores and thread count."""
        return self._current

    def query(self) -> PowerMode:
        """The current mode (never fails)."""
        return self._current.power_mode

    def set_mode(self, mode_id: int) -> None:
        """Switch to mode `mode_id`: pin the cores (with `apply`), then record it."""
        mode = self._mode(mode_id)
        if self._apply:
            apply_affinity(mode.cores, self._pid, self._allowed or None)
        self._current = mode
        logger.info("emulated power mode %d %s: cores %s", mode.id, mode.name, mode.cores)

    def modes(self) -> list[PowerMode]:
        """Every emulated mode, by id."""
        return [self._modes[i].power_mode for i in sorted(self._modes)]

    def emulated_modes(self) -> list[EmulatedPowerMode]:
        """Every emulated mode with its cores and thread count, by id."""
        return [self._modes[i] for i in sorted(self._modes)]

    def _mode(self, mode_id: int) -> EmulatedPowerMode:
        mode_id = check_mode_id(mode_id)
        if mode_id not in self._modes:
            listing = ", ".join(f"{m.id} {m.name}" for m in self.modes())
            raise ConfigError(f"emulated power mode {mode_id} does not exist; modes: {listing}")
        return self._modes[mode_id]
