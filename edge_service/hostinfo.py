"""What machine this is, in the words profiles are keyed by."""

from __future__ import annotations

import platform
from pathlib import Path

DEFAULT_POWER_MODE = "default"


def device_id() -> str:
    """The id profiles, fronts and catalogs are keyed by: this device's fingerprint
    (:func:`edge_service.device.current`), which tells apart two CPUs of one model name."""
    from edge_service.device import current

    return current().id


def device_name(root: Path = Path("/")) -> str:
    """A readable name for this device: the Jetson's device-tree model, else arch + CPU
    model (what a Context says; two machines may share it, so nothing is keyed by it)."""
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
