"""Shared by the load benches (soak, overload): a real ``edge-service serve`` subprocess,
Fashion-MNIST test frames as PNG bodies, and a sampler of the server's RSS and open fds.

The server is `edge_service.server.process.ServerProcess` (``python -m edge_service serve``
on a free loopback port, its log in a file), the same helper the tests start servers
with; psutil reads its resources from /proc.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psutil
from PIL import Image

from edge_service.config import Settings
from edge_service.data.fashion import load_split
from edge_service.server.process import ServerProcess as ServerProcess
from edge_service.server.process import free_port as free_port

CONTROL_TOKEN = "bench-control-token-0123456789"


def png_frames(n: int = 500) -> list[bytes]:
    """The first ``n`` Fashion-MNIST test images as PNG request bodies."""
    split = load_split(Settings().data_dir, "test").subset(n)
    out = []
    for img in split.images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (NaN when there are none)."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


@dataclass(frozen=True)
class ResourceSample:
    """One reading of the server process's resources."""

    t: float  # time.monotonic() of the reading
    rss_mb: float
    fds: int
    threads: int


def read_resources(proc: psutil.Process) -> ResourceSample:
    """RSS, open file descriptors and threads of ``proc`` now."""
    with proc.oneshot():
        return ResourceSample(
            time.monotonic(), proc.memory_info().rss / 2**20, proc.num_fds(), proc.num_threads()
        )


class ResourceSampler:
    """Reads a process's resources every ``period_s`` in a background thread."""

    def __init__(self, pid: int, period_s: float) -> None:
        self.proc = psutil.Process(pid)
        self.period_s = period_s
        self.samples: list[ResourceSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)

    def start(self) -> None:
        """Start sampling (the first reading is taken at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=self.period_s + 5)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(read_resources(self.proc))
            except psutil.Error:
                return  # the server is gone: nothing more to read
            if self._stop.wait(self.period_s):
                return

    def between(self, start: float, end: float) -> list[ResourceSample]:
        """The readings taken in ``[start, end)`` (monotonic seconds)."""
        return [s for s in self.samples if start <= s.t < end]


def wait_for_fds(proc: psutil.Process, at_most: int, timeout_s: float = 10.0) -> int:
    """Poll the open-fd count until it is ``<= at_most`` (closed sockets take a moment to
    go) or ``timeout_s`` passes; the last count."""
    deadline = time.monotonic() + timeout_s
    fds = int(proc.num_fds())
    while fds > at_most and time.monotonic() < deadline:
        time.sleep(0.2)
        fds = int(proc.num_fds())
    return fds
