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
from collections.abc import Callable
from dataclasses import dataclass
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
from edge_service.source_names import SOURCE_NAMES

logger = logging.getLogger(__name__)

SOURCES = SOURCE_NAMES  # the one list (edge_service.source_names), re-exported


@dataclass(frozen=True)
class Where:
    """What opening a source may need: the root /sys, /proc and /etc are read under, the
    power-mode reader, the trace to replay and its speed, how often ``auto`` retries."""

    root: Path = Path("/")
    nvpmodel: PowerModeQuery | None = None
    trace: Path | None = None
    speed: float = 1.0
    retry_s: float = 30.0


@dataclass(frozen=True)
class SourceKind:
    """One entry of the registry: what the source reads, and how to open it."""

    help: str
    open: Callable[[Where], MonitorSource]


def _replay(where: Where) -> MonitorSource:
    if where.trace is None:
        raise ConfigError("EDGE_MONITOR_SOURCE=replay needs EDGE_MONITOR_TRACE=<trace.jsonl>")
    return ReplaySource(where.trace, speed=where.speed, loop=True)


def _auto(where: Where) -> MonitorSource:
    def factory(kind: str) -> SourceFactory:
        def open_kind() -> MonitorSource:
            return REGISTRY[kind].open(where)

        open_kind.__name__ = kind  # the failover's name for it, in logs and events
        return open_kind

    chain = [factory(kind) for kind in ("jtop", "tegra") if _usable(kind, where.root)]
    if not chain:
        return REGISTRY["linux"].open(where)
    return FailoverSource([*chain, factory("linux")], retry_s=where.retry_s)


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


REGISTRY: dict[str, SourceKind] = {
    "auto": SourceKind("the best this machine has: jtop, then tegra, then linux", _auto),
    "jtop": SourceKind("the jetson-stats service (optional extra)", lambda w: JtopSource()),
    "tegra": SourceKind(
        "a Jetson's sysfs: rails, clocks, thermal zones",
        lambda w: TegraSource(w.root, w.nvpmodel),
    ),
    "tegrastats": SourceKind(
        "NVIDIA's tegrastats, parsed", lambda w: TegrastatsSource(nvpmodel=w.nvpmodel)
    ),
    "linux": SourceKind(
        "psutil and cgroups, on any Linux",
        lambda w: LinuxSource(root=w.root, nvpmodel=w.nvpmodel),
    ),
    "replay": SourceKind("a recorded JSONL trace, looping", _replay),
}


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
    entry = REGISTRY.get(kind)
    if entry is None:
        raise ConfigError(f"EDGE_MONITOR_SOURCE={kind!r} is not one of {', '.join(SOURCES)}")
    return entry.open(Where(root, nvpmodel, trace, speed, retry_s))
