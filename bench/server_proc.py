"""Shared by the load benches (soak, overload): a real ``edge-service serve`` subprocess,
Fashion-MNIST test frames as PNG bodies, and a sampler of the server's RSS and open fds.

The server runs as ``python -m edge_service serve`` (an argument list, never a shell) on a
free loopback port, with its log in a file; psutil reads its resources from /proc.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import numpy as np
import psutil
from PIL import Image

from edge_service.config import Settings
from edge_service.data.fashion import load_split

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


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``edge-service serve`` in a subprocess: started and ready on ``__enter__``, stopped
    (SIGTERM, then SIGKILL after 15 s) on ``__exit__``."""

    def __init__(self, env: Mapping[str, str], log: Path, args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._env = dict(os.environ) | {"EDGE_PORT": str(self.port)} | dict(env)
        self._args = list(args)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        if self._proc is None:
            raise RuntimeError("the server is not started")
        return self._proc.pid

    def __enter__(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "edge_service", "serve", *self._args]
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env)
        try:
            self._wait_ready(timeout_s=120)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise SystemExit(f"the server exited with {self._proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the server was not ready in {timeout_s:.0f} s; see {self.log}")

    def stop(self) -> None:
        """Terminate the server and wait for it (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
