"""``edge-service serve`` as a child process, started on a free port and ready, or a clear
error: the one way the tests, the benches and scripts start a real server.

A free port is only free when it is picked: another process (a client's ephemeral port,
another test session's server) may take it before the server binds it, seconds later.
The server then exits, and it is started again on another port; and readiness counts
only when the listening socket is this process's own, never another server's.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import psutil

BIND_ATTEMPTS = 3


class ServerStartError(RuntimeError):
    """The server exited, or was not ready in time; the message ends with its log."""


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m edge_service serve --port P [args]`` with ``env`` over this process's
    environment and its output in ``log``: started and ready on `start` (or ``with``),
    stopped by `stop` (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        args: Sequence[str] = (),
        *,
        ready_timeout_s: float = 180.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        self.log = log
        self.port = 0
        self.url = ""
        self._env = dict(os.environ) | dict(env)
        self._args = list(args)
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The running server process (to signal it, or read its exit status)."""
        if self._proc is None:
            raise RuntimeError("the server is not started")
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> ServerProcess:
        """Start the server and return once it answers ready on its own socket."""
        for _ in range(BIND_ATTEMPTS):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            cmd = [sys.executable, "-m", "edge_service", "serve", "--port", str(self.port)]
            with self.log.open("wb") as out:
                self._proc = subprocess.Popen(
                    [*cmd, *self._args], stdout=out, stderr=subprocess.STDOUT, env=self._env
                )
            try:
                if self._wait_ready():
                    return self
            except BaseException:
                self.stop()
                raise
        raise ServerStartError(f"no free port held in {BIND_ATTEMPTS} attempts:\n{self._tail()}")

    def stop(self) -> int | None:
        """Terminate the server and wait for it (idempotent); its exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> bool:
        """True once the server listens and answers ready; False when it exited because
        its port was taken meanwhile; ServerStartError on any other exit or a timeout."""
        proc = self.proc
        deadline = time.monotonic() + self._ready_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if "address already in use" in self._tail().lower():
                    self._proc = None
                    return False
                raise ServerStartError(f"the server exited with {proc.returncode}:\n{self._tail()}")
            if self._ready() and _listens(proc.pid, self.port):
                return True
            time.sleep(0.2)
        raise ServerStartError(
            f"the server was not ready in {self._ready_timeout_s:.0f} s:\n{self._tail()}"
        )

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/v2/health/ready")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _tail(self, chars: int = 8000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds a listening TCP socket on ``port``."""
    try:
        process = psutil.Process(pid)
        if hasattr(process, "net_connections"):  # psutil >= 6
            conns = process.net_connections("tcp")
        else:
            conns = process.connections("tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)
