"""Peak memory an engine adds: RSS before loading vs the kernel's high-water mark after.

Freed heap goes back to the OS first (glibc malloc_trim) and the high-water mark (VmHWM) is
reset via /proc/self/clear_refs; where it cannot be reset, the largest RSS seen is used
(a lower bound). TensorRT's GPU buffers are not in RSS and are not counted.
"""

import contextlib
import ctypes
import ctypes.util
import logging
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


class PeakMemory:
    """Peak RSS added between ``start()`` and ``stop()``, in MB (see the module docstring)."""

    def __init__(self, proc_self: Path = Path("/proc/self")) -> None:
        self._proc = proc_self
        self._exact = False
        self._base = self._peak = 0

    def start(self) -> None:
        """Return freed heap to the OS, reset the high-water mark (where allowed), note RSS."""
        _trim_heap()
        self._exact = _reset_hwm(self._proc)
        self._base = self._peak = _rss_bytes()

    def sample(self) -> None:
        """Note the RSS now (what the fallback method sees)."""
        self._peak = max(self._peak, _rss_bytes())

    def stop(self) -> float:
        """MB above the RSS at ``start()`` at the peak."""
        self.sample()
        hwm_kb = _status_kb(self._proc / "status", "VmHWM") if self._exact else None
        peak = max(self._peak, hwm_kb * 1024) if hwm_kb is not None else self._peak
        return max(0, peak - self._base) / 2**20


def _trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: hand memory freed by earlier engines back to the OS, so
    that the next engine's allocations show as RSS growth instead of silent reuse."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure without it
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _reset_hwm(proc_self: Path) -> bool:
    try:
        (proc_self / "clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def _rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def _status_kb(path: Path, key: str) -> int | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None
