"""NVIDIA's nvpmodel power modes: query, set and list them, and a cache for the monitor.

``nvpmodel -q`` prints the mode's name and id on two lines::

    NV Power Mode: MAXN
    0

possibly after warnings (``NVPM WARN: fan mode is not set!``), before verbose lines
(``--verbose``) or with the name repeated in a ``Current mode:`` line; the parser takes
the last ``NV Power Mode:`` line and the first bare integer after it. The modes are the
``< POWER_MODEL ID=0 NAME=MAXN >`` lines of /etc/nvpmodel.conf, and the mode last set is
also kept in /var/lib/nvpmodel/status (``pmode:0002``), which `StatusFilePowerMode` reads
without running anything.

The monitor asks for the mode every sample, so sources wrap their query in
`CachedPowerMode`, which asks at most every few seconds.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from edge_service.errors import ConfigError, HostCommandError, MonitorError
from edge_service.monitor.context import PowerMode
from edge_service.monitor.sysfs import read_text

logger = logging.getLogger(__name__)

Runner = Callable[..., "subprocess.CompletedProcess[str]"]

DEFAULT_CONF = Path("/etc/nvpmodel.conf")
STATUS_FILE = "var/lib/nvpmodel/status"
_QUERY_NAME = re.compile(r"NV Power Mode:\s*(\S+)")
_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>")
_DEFAULT = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>")
_PMODE = re.compile(r"pmode:(\d+)")


class PowerModeQuery(Protocol):
    """Anything that tells the current power mode: `NvpModel`, `EmulatedNvpModel`, ..."""

    def query(self) -> PowerMode:
        """The current power mode; MonitorError when it cannot be told."""
        ...


def parse_query(text: str) -> PowerMode:
    """The mode in ``nvpmodel -q`` output (see the module docstring for the variants)."""
    lines = text.splitlines()
    named = [i for i, line in enumerate(lines) if _QUERY_NAME.search(line)]
    if not named:
        raise MonitorError(f"no 'NV Power Mode:' line in nvpmodel output: {text.strip()!r}")
    match = _QUERY_NAME.search(lines[named[-1]])
    assert match is not None
    ids = [line.strip() for line in lines[named[-1] + 1 :] if line.strip().isdigit()]
    if not ids:
        raise MonitorError(f"no mode id after 'NV Power Mode:' in nvpmodel output: {text!r}")
    return PowerMode(id=int(ids[0]), name=match.group(1))


def parse_conf(text: str) -> list[PowerMode]:
    """The ``< POWER_MODEL ID=n NAME=x >`` modes of an nvpmodel.conf, in file order."""
    return [PowerMode(id=int(m.group(1)), name=m.group(2)) for m in _MODEL.finditer(text)]


def parse_default(text: str) -> int | None:
    """The ``< PM_CONFIG DEFAULT=n >`` mode id of an nvpmodel.conf, if it names one."""
    match = _DEFAULT.search(text)
    return int(match.group(1)) if match else None


def check_mode_id(mode_id: object) -> int:
    """`mode_id` as a non-negative int; anything else (bool, str, -1) raises ConfigError."""
    if isinstance(mode_id, bool) or not isinstance(mode_id, int) or mode_id < 0:
        raise ConfigError(f"a power mode id is a non-negative integer, got {mode_id!r}")
    return mode_id


class NvpModel:
    """Runs NVIDIA's ``nvpmodel`` (never through a shell).

    `runner` has `subprocess.run`'s signature; tests pass one that returns recorded
    output. Setting a mode needs root (the service's unit grants it, or run with sudo).
    """

    def __init__(
        self,
        binary: str = "nvpmodel",
        runner: Runner = subprocess.run,
        conf: Path = DEFAULT_CONF,
        timeout_s: float = 10.0,
    ) -> None:
        self.binary, self.conf = binary, conf
        self._runner, self._timeout_s = runner, timeout_s

    def query(self) -> PowerMode:
        """The current mode, from ``nvpmodel -q``."""
        return parse_query(self._run("-q"))

    def set_mode(self, mode_id: int) -> None:
        """Switch to mode `mode_id` (``nvpmodel -m <id>``); ConfigError for an unknown id."""
        mode_id = check_mode_id(mode_id)
        known = self._known_ids()
        if known and mode_id not in known:
            raise ConfigError(f"power mode {mode_id} is not in {self.conf}: {self._listing()}")
        self._run("-m", str(mode_id))
        logger.info("power mode set to %d", mode_id)

    def modes(self) -> list[PowerMode]:
        """Every mode defined in the nvpmodel.conf; MonitorError when it cannot be read."""
        text = read_text(self.conf)
        if text is None:
            raise MonitorError(f"cannot read {self.conf}; is this a Jetson with nvpmodel?")
        return parse_conf(text)

    def _known_ids(self) -> set[int]:
        try:
            return {mode.id for mode in self.modes()}
        except MonitorError:
            return set()  # nvpmodel itself will say what is wrong

    def _listing(self) -> str:
        return ", ".join(f"{m.id} {m.name}" for m in self.modes())

    def _run(self, *args: str) -> str:
        command = [self.binary, *args]
        try:
            done = self._runner(
                command, capture_output=True, text=True, timeout=self._timeout_s, input=""
            )
        except FileNotFoundError as exc:
            raise HostCommandError(
                f"{self.binary} not found: not a Jetson? Use EmulatedNvpModel off-Jetson"
            ) from exc
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostCommandError(f"{' '.join(command)} failed: {exc}") from exc
        if done.returncode != 0:
            detail = " ".join((done.stderr or done.stdout or "").split())
            raise HostCommandError(
                f"{' '.join(command)} exited with {done.returncode}: {detail or 'no output'} "
                "(setting a mode needs root: see deploy/systemd/power-control.conf)"
            )
        return done.stdout or ""


class StatusFilePowerMode:
    """The mode nvpmodel last set, from /var/lib/nvpmodel/status and the mode names in
    /etc/nvpmodel.conf (read once), under `root`; no process is started."""

    def __init__(self, root: Path = Path("/")) -> None:
        self._status = root / STATUS_FILE
        self._names = {
            m.id: m.name for m in parse_conf(read_text(root / "etc/nvpmodel.conf") or "")
        }

    def query(self) -> PowerMode:
        """The mode in the status file; MonitorError when there is none."""
        match = _PMODE.search(read_text(self._status) or "")
        if match is None:
            raise MonitorError(f"no 'pmode:' in {self._status}; has nvpmodel ever run?")
        mode_id = int(match.group(1))
        return PowerMode(id=mode_id, name=self._names.get(mode_id, f"mode{mode_id}"))


class CachedPowerMode:
    """Asks `source` for the mode at most every `refresh_s` seconds and keeps the answer.

    A failing query logs once (until it works again) and keeps the last known mode, so a
    flaky nvpmodel never fails a sample.
    """

    def __init__(
        self,
        source: PowerModeQuery,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source, self._refresh_s, self._clock = source, refresh_s, clock
        self._mode: PowerMode | None = None
        self._asked_at: float | None = None
        self._failing = False

    def current(self) -> PowerMode | None:
        """The mode as of at most `refresh_s` ago; None until one query has worked."""
        now = self._clock()
        if self._asked_at is None or now - self._asked_at >= self._refresh_s:
            self._asked_at = now
            self._ask()
        return self._mode

    def invalidate(self) -> None:
        """Ask again on the next `current()` (after a mode change)."""
        self._asked_at = None

    def _ask(self) -> None:
        try:
            self._mode = self._source.query()
        except MonitorError as exc:
            if not self._failing:
                logger.warning("power mode unavailable: %s", exc.message)
            self._failing = True
            return
        if self._failing:
            logger.info("power mode readable again: %s", self._mode)
        self._failing = False
