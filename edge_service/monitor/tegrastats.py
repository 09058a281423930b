"""NVIDIA's ``tegrastats``: parse its lines, and a monitor source that runs it.

Two line formats exist. JetPack 4 writes rails without units (``POM_5V_IN 2167/2167``,
current/average mW) and plain clocks (``GR3D_FREQ 76%@921``, or ``0%`` while the GPU is
gated); JetPack 5/6 writes ``VDD_IN 5213mW/5213mW`` and, on Orin, one clock per GPC
(``GR3D_FREQ 0%@[305,305]``). Both carry ``RAM used/totalMB``, ``CPU [12%@102,off,...]``
and temperatures ``name@23.5C`` (-256C: sensor off). A line becomes a Context with
source ``"tegrastats"``; its available memory is total - used as tegrastats counts it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import subprocess
import threading
import time

from edge_service.errors import MonitorError
from edge_service.monitor.context import Context
from edge_service.monitor.nvpmodel import CachedPowerMode, PowerModeQuery
from edge_service.monitor.source import SourceBase
from edge_service.monitor.thermal import OFFLINE_BELOW_C

logger = logging.getLogger(__name__)

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB\b")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"^(\d+)%(?:@(\d+))?$")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b(\w+)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?![\w/])")


def parse_tegrastats(line: str, t: float | None = None) -> Context:
    """One tegrastats line as a Context at time `t` (default: now).

    MonitorError when the line has no ``RAM`` or ``CPU [...]`` field.
    """
    ram = _RAM.search(line)
    cpus = _CPU.search(line)
    if ram is None or cpus is None:
        raise MonitorError(f"not a tegrastats line (no RAM or CPU field): {line.strip()!r}")
    loads, freqs = _cores(cpus.group(1))
    used_mb, total_mb = float(ram.group(1)), float(ram.group(2))
    gpu_hz, gpu_load = _gpu(line)
    return Context(
        t=time.time() if t is None else t,
        source="tegrastats",
        gpu_freq_hz=gpu_hz,
        gpu_load=gpu_load,
        cpu_online=max(1, len(loads)),
        cpu_freqs_hz=freqs,
        cpu_load=sum(loads) / len(loads) if loads else 0.0,
        mem_total_mb=total_mb,
        mem_available_mb=max(0.0, total_mb - used_mb),
        temps_c=_temps(line),
        power_mw={m.group(1): float(m.group(2)) for m in _RAIL.finditer(line)},
    )


def _cores(text: str) -> tuple[list[float], tuple[int, ...]]:
    """Loads (0-1) of the online cores and their clocks in Hz; ``off`` cores left out."""
    loads, freqs = [], []
    for entry in text.split(","):
        match = _CORE.match(entry.strip())
        if match is None:
            continue  # "off", or a core tegrastats could not read
        loads.append(min(1.0, int(match.group(1)) / 100.0))
        if match.group(2):
            freqs.append(int(match.group(2)) * 1_000_000)
    return loads, tuple(freqs)


def _gpu(line: str) -> tuple[int | None, float | None]:
    """GPU clock in Hz (the fastest GPC on Orin) and load 0-1."""
    match = _GR3D.search(line)
    if match is None:
        return None, None
    clocks = [int(mhz) for mhz in (match.group(2) or "").split(",") if mhz]
    hz = max(clocks) * 1_000_000 if clocks else None
    return hz, min(1.0, int(match.group(1)) / 100.0)


def _temps(line: str) -> dict[str, float]:
    temps = {}
    for name, value in _TEMP.findall(line):
        if float(value) > OFFLINE_BELOW_C:
            temps[name] = float(value)
    return temps


class TegrastatsSource(SourceBase):
    """Runs ``tegrastats --interval <ms>`` and reports its newest line.

    The process starts on the first `sample()` and a reader thread keeps the latest line,
    so a sample never waits for tegrastats except for the very first line. `close()`
    stops the process. A process that exits raises MonitorError on the next sample.
    """

    name: str = "tegrastats"

    def __init__(
        self,
        binary: str = "tegrastats",
        interval_ms: int = 100,
        nvpmodel: PowerModeQuery | None = None,
        *,
        first_line_timeout_s: float = 5.0,
    ) -> None:
        if shutil.which(binary) is None:
            raise MonitorError(f"{binary} not found: it ships with L4T on a Jetson only")
        if interval_ms < 1:
            raise MonitorError(f"tegrastats interval must be >= 1 ms, got {interval_ms}")
        self._command = [binary, "--interval", str(interval_ms)]
        self._mode = CachedPowerMode(nvpmodel) if nvpmodel is not None else None
        self._timeout_s = first_line_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._line: str | None = None  # the newest line, written by the reader thread
        self._got_line = threading.Event()
        self._reader: threading.Thread | None = None

    def sample(self) -> Context:
        """The newest tegrastats line as a Context (with the power mode if given one)."""
        process = self._process or self._start()
        if not self._wait_first_line(process) or process.poll() is not None:
            raise MonitorError(self._failure(process))
        ctx = parse_tegrastats(self._line or "")
        if self._mode is None:
            return ctx
        return dataclasses.replace(ctx, power_mode=self._mode.current())

    def invalidate_power_mode(self) -> None:
        """Read the power mode afresh at the next sample (it was just switched)."""
        if self._mode is not None:
            self._mode.invalidate()

    def close(self) -> None:
        """Stop tegrastats and its reader; safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if process.stdout is not None:
            process.stdout.close()
        self._line = None  # a restarted process must not report the old one's last line
        self._got_line.clear()

    def _start(self) -> subprocess.Popen[str]:
        logger.info("starting %s", " ".join(self._command))
        try:
            process = subprocess.Popen(
                self._command,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        except OSError as exc:
            raise MonitorError(f"cannot start {self._command[0]}: {exc}") from exc
        self._process = process
        self._reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._reader.start()
        return process

    def _wait_first_line(self, process: subprocess.Popen[str]) -> bool:
        """Wait for the first line, but not for one a dead process will never print."""
        deadline = time.monotonic() + self._timeout_s
        while not self._got_line.wait(0.05):
            if process.poll() is not None or time.monotonic() > deadline:
                return False
        return True

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip():
                self._line = line
                self._got_line.set()

    def _failure(self, process: subprocess.Popen[str]) -> str:
        code = process.poll()
        if code is None:
            return f"{self._command[0]} printed nothing in {self._timeout_s:.0f} s"
        return f"{self._command[0]} exited with {code}; on some boards it needs root (sudo)"
