"""The board's power mode as the server controls it: nvpmodel on a Jetson, emulated
(CPU affinity + inference thread count) anywhere else.

Switching the mode changes the cores an engine can use, so the engine pool is reloaded at
the new thread count (an atomic swap: requests in flight finish on the old engine).
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from edge_service.config import Settings
from edge_service.errors import ConfigError, MonitorError
from edge_service.monitor.context import PowerMode
from edge_service.monitor.emulated import EmulatedNvpModel
from edge_service.monitor.nvpmodel import DEFAULT_CONF, NvpModel, check_mode_id

log = logging.getLogger(__name__)


def on_jetson(conf: Path = DEFAULT_CONF) -> bool:
    """True where NVIDIA's nvpmodel and its configuration are installed."""
    return shutil.which("nvpmodel") is not None and conf.exists()


@dataclass(frozen=True)
class ModeChange:
    """What a switch did."""

    previous: PowerMode | None
    current: PowerMode
    emulated: bool
    threads: int
    cores: tuple[int, ...] | None


class PowerControl:
    """Reads and sets the power mode; the thread count engines should use in it."""

    def __init__(self, settings: Settings, nvp: NvpModel | EmulatedNvpModel) -> None:
        self._settings = settings
        self.nvp = nvp
        self.emulated = isinstance(nvp, EmulatedNvpModel)
        self._applied = settings.power_mode is not None
        self._lock = threading.Lock()

    @classmethod
    def create(cls, settings: Settings) -> PowerControl:
        """nvpmodel on a Jetson, else emulated modes (applied at once if EDGE_POWER_MODE
        is set, so engine threads start on the right cores)."""
        if on_jetson(settings.nvpmodel_conf):
            control = cls(settings, NvpModel(conf=settings.nvpmodel_conf))
            if settings.power_mode is not None:
                control.nvp.set_mode(settings.power_mode)
            return control
        initial = settings.power_mode if settings.power_mode is not None else 0
        nvp = EmulatedNvpModel(initial=initial)
        if settings.power_mode is not None:
            nvp.set_mode(settings.power_mode)
            mode = nvp.current
            log.info(
                "emulated power mode %d %s: cores %s, %d threads",
                mode.id,
                mode.name,
                list(mode.cores),
                mode.threads,
            )
        return cls(settings, nvp)

    @property
    def threads(self) -> int:
        """Intra-op threads for engines loaded now (0: the runtime picks)."""
        if self._settings.intra_op_threads:
            return self._settings.intra_op_threads
        if isinstance(self.nvp, EmulatedNvpModel) and self._applied:
            return self.nvp.current.threads
        return 0

    def current(self) -> PowerMode | None:
        """The mode now, or None when nvpmodel cannot be read."""
        try:
            return self.nvp.query()
        except MonitorError as exc:
            log.warning("cannot read the power mode: %s", exc.message)
            return None

    def modes(self) -> list[dict[str, object]]:
        """Every mode with its id and name (and, emulated, its cores and threads)."""
        if isinstance(self.nvp, EmulatedNvpModel):
            return [
                {"id": m.id, "name": m.name, "cores": list(m.cores), "threads": m.threads}
                for m in self.nvp.emulated_modes()
            ]
        return [m.to_dict() for m in self.nvp.modes()]

    def set(self, mode: int | str) -> ModeChange:
        """Switch to ``mode`` (an id, or a name from ``modes()``); ConfigError if unknown."""
        with self._lock:
            mode_id = self._resolve(mode)
            previous = self.current()
            self.nvp.set_mode(mode_id)
            self._applied = True
            now = self.nvp.query()
            cores = self.nvp.current.cores if isinstance(self.nvp, EmulatedNvpModel) else None
        return ModeChange(previous, now, self.emulated, self.threads, cores)

    def _resolve(self, mode: int | str) -> int:
        if isinstance(mode, str):
            named = {m.name.lower(): m.id for m in self._known()}
            if mode.lower() not in named:
                listing = ", ".join(f"{m.id} {m.name}" for m in self._known())
                raise ConfigError(f"power mode {mode!r} does not exist; modes: {listing}")
            return named[mode.lower()]
        return check_mode_id(mode)

    def _known(self) -> list[PowerMode]:
        try:
            return self.nvp.modes()
        except MonitorError as exc:
            raise ConfigError(f"cannot list power modes: {exc.message}") from exc
