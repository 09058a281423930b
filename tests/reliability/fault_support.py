"""Helpers of the fault-injection tests (tests/reliability/test_faults_*.py).

Every fault is injected into real components: engines built by ``edge-service build``, a
real ``edge-service serve`` subprocess, real monitor sources over a recorded board tree,
real files damaged on disk, real processes killed. Nothing of edge-service is mocked.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from support import STOP_TIMEOUT_S, start_server

from edge_service.repository import Catalog, load_catalog

# How long to wait for a condition before failing: a bound, never an expected speed (a
# machine 7x slower than this one, under load, gets there well within it).
WAIT_S = 60.0


def png_frame(seed: int = 0, size: int = 28) -> bytes:
    """A random gray PNG, the kind of frame a camera sends."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def flip_byte(path: Path) -> None:
    """Damage a file the way a bad sector or a cut-short copy would: one byte changed."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def copy_family(engines_dir: Path, dest: Path) -> Path:
    """A private copy of a built engines folder (the session's one is shared)."""
    shutil.copytree(engines_dir, dest)
    return dest


def most_accurate(catalog: Catalog) -> str:
    """The variant the controller serves first on an idle board: the most accurate of the
    ones the build gate left servable (it may reject or set aside some on this CPU)."""
    servable = [v for v in catalog.variants if getattr(v, "status", "servable") == "servable"]
    best = max(servable or catalog.variants, key=lambda v: v.accuracy.value if v.accuracy else -1)
    return best.id


def family_catalog(engines_dir: Path) -> Catalog:
    return load_catalog(engines_dir / "fashion")


@dataclass
class Traffic:
    """Requests sent in the background while a fault is injected, and how they ended."""

    ok: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def sent(self) -> int:
        return self.ok + len(self.failed)


@contextmanager
def background_traffic(
    send: Callable[[int], None], threads: int = 2, pause_s: float = 0.005
) -> Iterator[Traffic]:
    """Call ``send(i)`` in a loop on ``threads`` threads until the block ends; an
    exception counts as a failed request (its text kept)."""
    traffic = Traffic()
    lock = threading.Lock()

    def run(worker: int) -> None:
        i = worker
        while not traffic.stop.is_set():
            try:
                send(i)
            except Exception as exc:  # noqa: BLE001 - every failure is what we count
                with lock:
                    traffic.failed.append(f"{type(exc).__name__}: {exc}")
            else:
                with lock:
                    traffic.ok += 1
            i += threads
            time.sleep(pause_s)

    workers = [threading.Thread(target=run, args=(w,), daemon=True) for w in range(threads)]
    for t in workers:
        t.start()
    try:
        yield traffic
    finally:
        traffic.stop.set()
        for t in workers:
            t.join(WAIT_S)


def http_sender(url: str, path: str = "/v1/infer") -> Callable[[int], None]:
    """``send(i)`` for `background_traffic`: POST one PNG frame; non-200 raises."""
    client = httpx.Client(base_url=url, timeout=WAIT_S)
    frames = [png_frame(i) for i in range(8)]

    def send(i: int) -> None:
        r = client.post(
            path, content=frames[i % len(frames)], headers={"content-type": "image/png"}
        )
        if r.status_code != 200:
            raise AssertionError(f"{r.status_code} {r.text[:200]}")

    return send


def wait_for(check: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Served:
    """A started ``edge-service serve`` process."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def sigterm(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Send SIGTERM and wait; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)


@contextmanager
def serve(engines_dir: Path, log: Path, **env: str) -> Iterator[Served]:
    """Like support.run_server, but hands the process over (to signal it and read its exit
    status); kills it at the end if the test did not stop it."""
    server = start_server(engines_dir, log, env={"EDGE_MONITOR_PERIOD_S": "0.2"} | env)
    proc = server.proc
    served = Served(server.url, proc, log)
    try:
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def run_killed(
    cmd: list[str], log: Path, trigger: Callable[[float], bool], env: dict[str, str] | None = None
) -> float | None:
    """Run ``cmd`` and kill -9 it as soon as ``trigger(seconds since start)`` is true;
    returns when it was killed, or None when it finished first."""
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            if trigger(elapsed):
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                return elapsed
            time.sleep(0.003)
        return None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def temp_files(folder: Path) -> list[Path]:
    """The hidden temp files of interrupted atomic writes under ``folder``."""
    from edge_service.fsutil import TEMP_NAME

    if not folder.is_dir():
        return []
    return [p for p in folder.rglob(".*") if p.is_file() and TEMP_NAME.match(p.name)]


def writing(folder: Path, nth: int = 1) -> Callable[[float], bool]:
    """A `run_killed` trigger: true while the ``nth`` new temp file under ``folder`` exists,
    i.e. in the middle of a write (leftovers of an earlier run, there at the first poll,
    do not count)."""
    old: set[str] | None = None
    seen: set[str] = set()

    def trigger(_: float) -> bool:
        nonlocal old
        now = {p.name for p in temp_files(folder)}
        if old is None:
            old = now
        seen.update(now - old)
        return len(seen) >= nth and bool(now - old)

    return trigger


def after(seconds: float) -> Callable[[float], bool]:
    """A `run_killed` trigger: true ``seconds`` after the start."""
    return lambda elapsed: elapsed >= seconds


def record(kind: str, **figures: object) -> None:
    """Append figures of a fault run to the JSONL file named by EDGE_FAULT_FIGURES (for the
    reliability report); a no-op without it."""
    target = os.environ.get("EDGE_FAULT_FIGURES")
    if target:
        import json

        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"fault": kind, **figures}) + "\n")
