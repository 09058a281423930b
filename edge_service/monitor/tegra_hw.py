"""Jetson-specific sysfs: the integrated GPU's devfreq node and the INA3221 power monitors.

Paths move between boards and JetPack releases, so everything is found by globbing once
(`find_gpu`, `find_rails`) and only the value files are read per sample.

GPU: ``/sys/class/devfreq/<addr>.<name>`` links to the GPU's devfreq node, named
``57000000.gpu`` (Nano, L4T 32), ``17000000.gv11b`` (Xavier), ``17000000.ga10b`` (Orin,
L4T 35) or ``17000000.gpu`` (Orin, L4T 36); ``cur_freq`` / ``max_freq`` are in Hz. The
load, in per-mille, is the GPU device's ``load`` file, reached through the devfreq node's
``device`` link or the ``gpu.0`` alias (``/sys/devices/gpu.0``, on L4T 36
``/sys/devices/platform/gpu.0``).

Power: the INA3221 driver is ``ina3221x`` with an IIO device on JetPack 4
(``iio:device0/rail_name_N`` + ``in_power N_input`` in mW) and ``ina3221`` with hwmon on
JetPack 5/6 (``hwmon/hwmonK/inN_label`` + ``inN_input`` in mV and ``currN_input`` in mA);
the hwmon index K differs between boards and boots. Channels labelled ``NC`` (not
connected) and the "sum of shunt voltages" channel are skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_service.monitor.sysfs import numbered, read_int, read_text

logger = logging.getLogger(__name__)

GPU_DEVFREQ = re.compile(r"\.(gpu|gv11b|ga10b|gp10b|gm20b)$")
GPU_ALIASES = ("devices/gpu.0/load", "devices/platform/gpu.0/load")
SKIPPED_LABELS = ("NC", "sum of shunt voltages")
_CHANNEL = re.compile(r"^in(\d+)_label$")
_RAIL_NAME = re.compile(r"^rail_name_(\d+)$")


@dataclass(frozen=True)
class GpuFiles:
    """Where the integrated GPU's clock and load are read from."""

    name: str
    cur_freq: Path
    max_freq: Path
    load: Path | None


def find_gpu(sys_root: Path) -> GpuFiles | None:
    """The integrated GPU's devfreq files, or None when there is no GPU devfreq node."""
    devfreq = sys_root / "class/devfreq"
    nodes = sorted(p for p in devfreq.glob("*") if GPU_DEVFREQ.search(p.name))
    if not nodes:
        return None
    node = nodes[0]
    loads = [node / "device/load", *(sys_root / alias for alias in GPU_ALIASES)]
    load = next((p for p in loads if read_int(p) is not None), None)
    logger.debug("GPU %s, load from %s", node.name, load)
    return GpuFiles(node.name, node / "cur_freq", node / "max_freq", load)


def read_gpu(gpu: GpuFiles) -> tuple[int | None, int | None, float | None]:
    """(current Hz, max Hz, load 0-1) of the GPU; None for what cannot be read."""
    load = read_int(gpu.load) if gpu.load is not None else None
    fraction = min(1.0, max(0.0, load / 1000.0)) if load is not None else None
    return read_int(gpu.cur_freq), read_int(gpu.max_freq), fraction


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: its power file (mW), or its voltage (mV) and current (mA)."""

    name: str
    power: Path | None = None
    volt: Path | None = None
    curr: Path | None = None


def find_rails(sys_root: Path) -> list[Rail]:
    """Every connected INA3221 channel, JetPack 4 (IIO) and JetPack 5/6 (hwmon) layouts."""
    drivers = sys_root / "bus/i2c/drivers"
    rails = [r for d in drivers.glob("ina3221*/*/hwmon/hwmon*") for r in _hwmon_rails(d)]
    rails += [r for d in drivers.glob("ina3221*/*/iio:device*") for r in _iio_rails(d)]
    logger.debug("power rails: %s", [r.name for r in rails])
    return rails


def _hwmon_rails(hwmon: Path) -> list[Rail]:
    labels = (_CHANNEL.match(p.name) for p in hwmon.glob("in*_label"))
    channels = sorted(int(m.group(1)) for m in labels if m)
    rails = []
    for n in channels:
        name = read_text(hwmon / f"in{n}_label")
        if name and name not in SKIPPED_LABELS:
            rails.append(Rail(name, volt=hwmon / f"in{n}_input", curr=hwmon / f"curr{n}_input"))
    return rails


def _iio_rails(iio: Path) -> list[Rail]:
    rails = []
    for label in numbered(iio, "rail_name_*"):
        match, name = _RAIL_NAME.match(label.name), read_text(label)
        if match and name and name not in SKIPPED_LABELS:
            n = match.group(1)
            rails.append(
                Rail(
                    name,
                    power=iio / f"in_power{n}_input",
                    volt=iio / f"in_voltage{n}_input",
                    curr=iio / f"in_current{n}_input",
                )
            )
    return rails


def read_rails(rails: Sequence[Rail]) -> dict[str, float]:
    """Power of each rail in mW; rails that cannot be read are left out."""
    power: dict[str, float] = {}
    for rail in rails:
        mw = _rail_mw(rail)
        if mw is not None:
            power[rail.name] = mw
    return power


def _rail_mw(rail: Rail) -> float | None:
    if rail.power is not None:
        mw = read_int(rail.power)
        if mw is not None:
            return float(mw)
    if rail.volt is None or rail.curr is None:
        return None
    mv, ma = read_int(rail.volt), read_int(rail.curr)
    return mv * ma / 1000.0 if mv is not None and ma is not None else None


NVMAP_CLIENTS = "kernel/debug/nvmap/iovmm/clients"


def find_shared_gpu_memory(root: Path) -> Path | None:
    """The file that tells GPU (nvmap) memory, if this process can read one.

    The debugfs client table (root only) is exact; JetPack 4/5 kernels also put
    ``NvMapMemUsed`` in /proc/meminfo. None when neither is readable.
    """
    clients = root / "sys" / NVMAP_CLIENTS
    if read_text(clients):
        return clients
    meminfo = read_text(root / "proc/meminfo") or ""
    return root / "proc/meminfo" if "NvMapMemUsed:" in meminfo else None


def read_shared_gpu_mb(path: Path, meminfo: dict[str, int] | None = None) -> float | None:
    """GPU memory in MiB from the nvmap client table's ``total`` line or NvMapMemUsed."""
    if path.name == "meminfo":
        used = (meminfo or {}).get("NvMapMemUsed")
        return used / 1024 if used is not None else None
    for line in (read_text(path) or "").splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == "total":
            return _size_mb(fields[-1])
    return None


_UNITS_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}


def _size_mb(size: str) -> float | None:
    """``"812544K"`` -> MiB; the table writes sizes with a K (or M, G) suffix, bare is bytes."""
    if size.isdigit():
        return int(size) / 1024**2
    number, unit = size[:-1], size[-1:].upper()
    return int(number) * _UNITS_MB[unit] if number.isdigit() and unit in _UNITS_MB else None
