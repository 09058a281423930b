"""Monitor source that reads jetson-stats' ``jtop`` service (the optional ``jetson`` extra).

jetson-stats is AGPL-3.0, so it is imported here only, and lazily: nothing else in the
package needs it. The jtop client talks to ``jtop.service`` over /run/jtop.sock; when it
cannot (package missing, service down, client and service versions differ) opening fails
with a MonitorError carrying jtop's own advice.

Fields used (jetson-stats 4.x, see its ``jtop/jtop.py`` docstrings): ``cpu["cpu"]`` (per
core ``online``, ``idle`` %, ``freq["cur"]`` kHz), ``gpu`` ({name: {``status["load"]`` %,
``freq["cur"|"max"]`` kHz}}), ``memory["RAM"]`` (``tot``, ``used``, ``shared`` in KB),
``temperature`` ({name: {``online``, ``temp`` C}}), ``power`` (``rail`` {name:
{``power`` mW}}; ``tot`` with a ``name`` when the board has an input rail, which 4.x
moves out of ``rail``), ``nvpmodel`` (``id``, ``name``) and ``board["hardware"]["Model"]``.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from edge_service.errors import MonitorError
from edge_service.monitor.context import Context, PowerMode
from edge_service.monitor.source import SourceBase
from edge_service.monitor.thermal import OFFLINE_BELOW_C

logger = logging.getLogger(__name__)

INSTALL_ADVICE = (
    "jetson-stats (jtop) is not installed: sudo pip3 install -U jetson-stats, then reboot "
    "or run: sudo systemctl restart jtop.service"
)
SERVICE_ADVICE = (
    "check the service (sudo systemctl restart jtop.service) and that client and service "
    "are the same jetson-stats version (sudo pip3 install -U jetson-stats)"
)


class JtopSource(SourceBase):
    """Samples a running jtop client; the connection is opened on construction."""

    name: str = "jtop"

    def __init__(self, interval: float = 0.5) -> None:
        module = _import_jtop()
        self._error_type: type[Exception] = module.JtopException
        self._jetson = _start(module, interval)
        self._device = _device(self._jetson)

    def sample(self) -> Context:
        """The jtop client's latest reading; MonitorError when the service went away."""
        try:
            if not self._jetson.ok(spin=True):
                raise MonitorError(f"jtop stopped; {SERVICE_ADVICE}")
            return context_from_jtop(self._jetson, self._device)
        except self._error_type as exc:
            raise MonitorError(f"jtop: {_one_line(exc)}") from exc

    def close(self) -> None:
        """Close the jtop client; safe to call twice."""
        try:
            self._jetson.close()
        except self._error_type as exc:
            logger.debug("closing jtop: %s", exc)


def _import_jtop() -> Any:
    try:
        return importlib.import_module("jtop")
    except ImportError as exc:
        raise MonitorError(INSTALL_ADVICE) from exc


def _start(module: Any, interval: float) -> Any:
    jetson = module.jtop(interval=interval)
    try:
        jetson.start()
    except module.JtopException as exc:
        raise MonitorError(f"jtop: {_with_advice(_one_line(exc))}") from exc
    except OSError as exc:
        raise MonitorError(f"jtop: cannot reach jtop.service ({exc}); {SERVICE_ADVICE}") from exc
    return jetson


def _with_advice(message: str) -> str:
    """jtop's message, plus what to do when it does not already say."""
    return message if "sudo" in message else f"{message}; {SERVICE_ADVICE}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _device(jetson: Any) -> str | None:
    try:
        model = jetson.board["hardware"]["Model"]
    except (KeyError, TypeError):
        return None
    return str(model) if model else None


def context_from_jtop(jetson: Any, device: str | None = None) -> Context:
    """A Context from a started jtop client's (4.x) properties; see the module docstring."""
    cores = [c for c in jetson.cpu["cpu"] if c.get("online")]
    total_kb, available_kb = _ram_kb(jetson.memory["RAM"])
    gpu_hz, gpu_max_hz, gpu_load = _gpu(jetson.gpu)
    shared_kb = jetson.memory["RAM"].get("shared")
    return Context(
        t=time.time(),
        source="jtop",
        device=device,
        power_mode=_power_mode(jetson.nvpmodel),
        gpu_freq_hz=gpu_hz,
        gpu_max_freq_hz=gpu_max_hz,
        gpu_load=gpu_load,
        cpu_online=max(1, len(cores)),
        cpu_freqs_hz=tuple(int(c["freq"]["cur"]) * 1000 for c in cores if "freq" in c),
        cpu_load=_cpu_load(cores),
        mem_total_mb=total_kb / 1024,
        mem_available_mb=available_kb / 1024,
        temps_c=_temps(jetson.temperature),
        power_mw=_power(jetson.power),
        extra={"gpu_shared_mb": shared_kb / 1024} if shared_kb else {},
    )


def _ram_kb(ram: Mapping[str, Any]) -> tuple[float, float]:
    total = float(ram["tot"])
    if total <= 0:
        raise MonitorError("jtop reported no RAM; restart jtop.service")
    return total, max(0.0, total - float(ram["used"]))


def _cpu_load(cores: list[Mapping[str, Any]]) -> float:
    idle = [float(c["idle"]) for c in cores if "idle" in c]
    return min(1.0, max(0.0, 1.0 - sum(idle) / len(idle) / 100.0)) if idle else 0.0


def _gpu(gpus: Any) -> tuple[int | None, int | None, float | None]:
    """The first (integrated) GPU's clock, max clock (kHz -> Hz) and load (% -> 0-1)."""
    for gpu in gpus.values():
        freq, status = gpu.get("freq", {}), gpu.get("status", {})
        cur, top, load = freq.get("cur"), freq.get("max"), status.get("load")
        return (
            int(cur) * 1000 if cur is not None else None,
            int(top) * 1000 if top is not None else None,
            min(1.0, max(0.0, float(load) / 100.0)) if load is not None else None,
        )
    return None, None, None


def _temps(temperature: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    return {
        name: float(zone["temp"])
        for name, zone in temperature.items()
        if zone.get("online", True) and float(zone.get("temp", -256)) > OFFLINE_BELOW_C
    }


def _power(power: Mapping[str, Any]) -> dict[str, float]:
    """Rail powers in mW, with the input rail (VDD_IN, ...) jtop 4.x keeps in ``tot``."""
    if not power:
        return {}
    rails = {name: float(rail["power"]) for name, rail in power.get("rail", {}).items()}
    total = power.get("tot", {})
    if total.get("name"):
        rails[str(total["name"])] = float(total["power"])
    return rails


def _power_mode(nvpmodel: Any) -> PowerMode | None:
    if nvpmodel is None:
        return None
    return PowerMode(id=int(nvpmodel.id), name=str(nvpmodel.name))
