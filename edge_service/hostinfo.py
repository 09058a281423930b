"""What machine this is, in the words profiles are keyed by."""

from __future__ import annotations

import platform
from pathlib import Path

DEFAULT_POWER_MODE = "default"


def device_name(root: Path = Path("/")) -> str:
    """A stable name for this device: the Jetson's device-tree model, else arch + CPU model.

    Profiles in the catalog are keyed by this, so engines measured on one board are not
    mistaken for another's.
    """
    model = _read(root / "proc/device-tree/model")
    if model:
        return model.strip("\x00 \n")
    cpu = ""
    for line in (_read(root / "proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{platform.machine()} {cpu}".strip()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
