"""JtopSource: failing opens carry jtop's advice; a jtop 4.x reading maps to a Context.

jetson-stats is not installed here (and is AGPL: the package never depends on it), so the
``jtop`` module is replaced in sys.modules by a stand-in that raises jtop's own messages
or serves a reading shaped like jetson-stats 4.x (the fields its ``jtop/jtop.py``
documents), recorded for an Orin Nano in 7W mode.
"""

from __future__ import annotations

import copy
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from edge_service.errors import MonitorError
from edge_service.monitor import JtopSource, PowerMode, open_source


class JtopException(Exception):  # noqa: N818 - jetson-stats' own name
    """jetson-stats' exception class (jtop.core.exceptions.JtopException)."""


def core(online: bool, idle: float = 0.0, khz: int = 1510400) -> dict[str, Any]:
    freq = {"min": 115200, "max": 1510400, "cur": khz}
    if not online:
        return {"online": False, "governor": "schedutil", "freq": freq}
    usage = {"user": 100 - idle, "nice": 0.0, "system": 0.0, "idle": idle}
    return {"online": True, "governor": "schedutil", "freq": freq, **usage, "model": "ARMv8"}


ORIN_NANO_7W: dict[str, Any] = {
    "board": {"hardware": {"Model": "NVIDIA Jetson Orin Nano Developer Kit", "L4T": "36.3.0"}},
    "cpu": {
        "total": {"user": 50.0, "nice": 0.0, "system": 0.0, "idle": 50.0},
        "cpu": [
            core(True, 20.0),
            core(True, 40.0),
            core(True, 60.0),
            core(True, 80.0),
            core(False),
            core(False),
        ],
    },
    "gpu": {
        "gpu": {
            "type": "integrated",
            "status": {"railgate": False, "tpc_pg_mask": False, "3d_scaling": True, "load": 73.2},
            "freq": {"governor": "nvhost_podgov", "cur": 408000, "max": 408000, "min": 306000},
        }
    },
    "memory": {
        "RAM": {
            "tot": 7802880,
            "used": 1865368,
            "free": 5312044,
            "buffers": 30212,
            "cached": 892456,
            "shared": 181236,
            "lfb": 6,
        },
        "SWAP": {"tot": 3901424, "used": 0, "cached": 0},
    },
    "temperature": {
        "cpu": {"online": True, "temp": 48.312, "max": 99.0, "crit": 104.5},
        "cv0": {"online": False, "temp": -256},
        "gpu": {"online": True, "temp": 47.125, "max": 99.0, "crit": 104.5},
        "tj": {"online": True, "temp": 48.312, "max": 99.0, "crit": 104.5},
    },
    "power": {
        "rail": {
            "VDD_CPU_GPU_CV": {
                "online": True,
                "type": "INA3221",
                "status": "ok",
                "volt": 5088,
                "curr": 311,
                "warn": 32760,
                "crit": 32760,
                "power": 1582,
                "avg": 1032,
            },
            "VDD_SOC": {
                "online": True,
                "type": "INA3221",
                "status": "ok",
                "volt": 5088,
                "curr": 264,
                "warn": 32760,
                "crit": 32760,
                "power": 1343,
                "avg": 1355,
            },
        },
        # jetson-stats 4.x moves the input rail out of "rail" into "tot", with its name.
        "tot": {
            "online": True,
            "type": "INA3221",
            "status": "ok",
            "volt": 5096,
            "curr": 1003,
            "power": 5111,
            "avg": 4812,
            "name": "VDD_IN",
        },
    },
    "nvpmodel": SimpleNamespace(id=1, name="7W"),
}


def install_jtop(
    monkeypatch: pytest.MonkeyPatch,
    reading: dict[str, Any] | None = None,
    start_error: Exception | None = None,
) -> ModuleType:
    """Put a stand-in ``jtop`` module in sys.modules."""
    module = ModuleType("jtop")

    class Jtop:
        def __init__(self, interval: float = 1.0) -> None:
            self.interval, self.running, self.error = interval, True, None
            for name, value in copy.deepcopy(reading or ORIN_NANO_7W).items():
                setattr(self, name, value)

        def start(self) -> None:
            if start_error is not None:
                raise start_error

        def ok(self, spin: bool = False) -> bool:
            if self.error is not None:
                raise self.error
            return self.running

        def close(self) -> None:
            self.running = False

    module.jtop = Jtop  # type: ignore[attr-defined]
    module.JtopException = JtopException  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jtop", module)
    return module


def test_jtop_source_says_how_to_install_when_jetson_stats_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "jtop", None)  # import jtop -> ImportError
    with pytest.raises(MonitorError, match=r"sudo pip3 install -U jetson-stats"):
        JtopSource()


@pytest.mark.parametrize(
    ("message", "advice"),
    [
        (  # jtop 4.x when /run/jtop.sock is missing or refuses
            "The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service",
            "Please run: sudo systemctl restart jtop.service",
        ),
        (  # jtop 4.x when client and service versions differ
            "Mismatch version jtop service: [4.2.1] and client: [4.3.0]. Please run:\n\n"
            "sudo systemctl restart jtop.service",
            "client: [4.3.0]. Please run: sudo systemctl restart jtop.service",
        ),
        (  # a message without advice gets ours
            "Authentication with jetson-stats server failed",
            "sudo pip3 install -U jetson-stats",
        ),
    ],
)
def test_jtop_source_carries_jtops_advice_on_one_line_when_the_service_cannot_be_opened(
    monkeypatch: pytest.MonkeyPatch, message: str, advice: str
) -> None:
    install_jtop(monkeypatch, start_error=JtopException(message))
    with pytest.raises(MonitorError) as caught:
        JtopSource()
    assert advice in caught.value.message
    assert "\n" not in caught.value.message


def test_jtop_source_maps_a_jtop4_reading_when_an_orin_nano_runs_7w(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_jtop(monkeypatch)
    ctx = JtopSource().sample()
    assert ctx.source == "jtop"
    assert ctx.device == "NVIDIA Jetson Orin Nano Developer Kit"
    assert ctx.power_mode == PowerMode(1, "7W")
    assert ctx.cpu_online == 4
    assert ctx.cpu_load == pytest.approx(0.5)
    assert ctx.cpu_freqs_hz == (1_510_400_000,) * 4
    assert (ctx.gpu_freq_hz, ctx.gpu_max_freq_hz) == (408_000_000, 408_000_000)
    assert ctx.gpu_load == pytest.approx(0.732)
    assert ctx.mem_total_mb == pytest.approx(7620.0)
    assert ctx.mem_available_mb == pytest.approx((7802880 - 1865368) / 1024)
    assert ctx.temps_c == {"cpu": 48.312, "gpu": 47.125, "tj": 48.312}
    assert ctx.power_mw == {"VDD_CPU_GPU_CV": 1582.0, "VDD_SOC": 1343.0, "VDD_IN": 5111.0}
    assert ctx.power_total_mw == 5111.0
    assert ctx.extra["gpu_shared_mb"] == pytest.approx(181236 / 1024)


def test_jtop_source_raises_monitor_error_when_the_connection_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_jtop(monkeypatch)
    source = JtopSource()
    source._jetson.error = JtopException("Lost connection with jtop server")
    with pytest.raises(MonitorError, match="Lost connection"):
        source.sample()
    source._jetson.error = None
    source.close()
    with pytest.raises(MonitorError, match=r"restart jtop\.service"):
        source.sample()


def test_open_source_jtop_raises_monitor_error_when_jtop_cannot_be_used_here(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "jtop", None)
    with pytest.raises(MonitorError, match="jetson-stats"):
        open_source("jtop")
