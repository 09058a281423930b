"""Choosing the monitor source from settings.

``auto`` picks the best source this machine has, in the order jtop -> tegra -> linux:
jtop only where jetson-stats is installed, tegra only on a Jetson (an L4T release file or
a GPU devfreq node), linux always; each one left out is logged once with the reason. With
more than one candidate the result is a `FailoverSource` over them; with linux alone
(any non-Jetson machine) it is the `LinuxSource` itself.

``linux`` reads psutil and cgroups; ``tegra`` a Jetson's sysfs; ``jtop`` the jetson-stats
service; ``tegrastats`` runs NVIDIA's tegrastats; ``replay`` plays a recorded JSONL trace
(looping), so a whole server can be driven through a scripted day of board states.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from edge_service.errors import ConfigError
from edge_service.monitor.failover import FailoverSource, SourceFactory
from edge_service.monitor.jtop_source import INSTALL_ADVICE, JtopSource
from edge_service.monitor.linux_source import LinuxSource
from edge_service.monitor.nvpmodel import PowerModeQuery
from edge_service.monitor.replay import ReplaySource
from edge_service.monitor.source import MonitorSource
from edge_service.monitor.tegra_source import TegraSource, is_jetson
from edge_service.monitor.tegrastats import TegrastatsSource

logger = logging.getLogger(__name__)

SOURCES = ("auto", "jtop", "tegra", "tegrastats", "linux", "replay")


def open_source(
    kind: str,
    trace: Path | None = None,
    speed: float = 1.0,
    *,
    root: Path = Path("/"),
    nvpmodel: PowerModeQuery | None = None,
    retry_s: float = 30.0,
) -> MonitorSource:
    """The monitor source named ``kind`` (one of `SOURCES`); ``replay`` needs ``trace``.

    `root` is where /sys, /proc and /etc are read (tests point it at a fixture tree);
    `nvpmodel` (an `NvpModel` or `EmulatedNvpModel`) gives the linux and tegra sources a
    power mode; `retry_s` is how often ``auto`` tries a better source again.
    """
    if kind == "auto":
        return _auto(root, nvpmodel, retry_s)
    if kind == "replay":
        if trace is None:
            raise ConfigError("EDGE_MONITOR_SOURCE=replay needs EDGE_MONITOR_TRACE=<trace.jsonl>")
        return ReplaySource(trace, speed=speed, loop=True)
    factory = _factories(root, nvpmodel).get(kind)
    if factory is None:
        raise ConfigError(f"EDGE_MONITOR_SOURCE={kind!r} is not one of {SOURCES}")
    return factory()


def _factories(root: Path, nvpmodel: PowerModeQuery | None) -> dict[str, SourceFactory]:
    def jtop() -> MonitorSource:
        return JtopSource()

    def tegra() -> MonitorSource:
        return TegraSource(root, nvpmodel)

    def tegrastats() -> MonitorSource:
        return TegrastatsSource(nvpmodel=nvpmodel)

    def linux() -> MonitorSource:
        return LinuxSource(root=root, nvpmodel=nvpmodel)

    return {"jtop": jtop, "tegra": tegra, "tegrastats": tegrastats, "linux": linux}


def _auto(root: Path, nvpmodel: PowerModeQuery | None, retry_s: float) -> MonitorSource:
    factories = _factories(root, nvpmodel)
    chain = [factories[kind] for kind in ("jtop", "tegra") if _usable(kind, root)]
    if not chain:
        return factories["linux"]()
    return FailoverSource([*chain, factories["linux"]], retry_s=retry_s)


def _usable(kind: str, root: Path) -> bool:
    """Whether ``auto`` should try `kind` here; logs the reason when not."""
    if kind == "jtop" and not _jtop_installed():
        logger.info("monitor source jtop skipped: %s", INSTALL_ADVICE)
        return False
    if kind == "tegra" and not is_jetson(root):
        logger.info(
            "monitor source tegra skipped: no %s and no GPU under %s (not a Jetson)",
            root / "etc/nv_tegra_release",
            root / "sys/class/devfreq",
        )
        return False
    return True


def _jtop_installed() -> bool:
    try:
        return importlib.util.find_spec("jtop") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds a None for it
        return False
