"""`edge-service serve` runs every serving thread at EDGE_SERVE_NICE (a real server)."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image
from support import MAX_BODY, start_server

from edge_service.runtime.idle_loader import IDLE_NICE

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def _thread_nice(pid: int, tid: int) -> int:
    """A thread's nice value, from /proc (field 19 of its stat line)."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_every_serving_thread_runs_at_the_configured_priority(
    engines_dir: Path, tmp_path: Path
) -> None:
    # a lower priority than this one: any process may take it, root or not
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 2)
    env = {"EDGE_SERVE_NICE": str(target), "EDGE_MAX_BODY_BYTES": str(MAX_BODY)}
    server = start_server(engines_dir, tmp_path / "server.log", env=env)
    try:
        r = httpx.post(f"{server.url}/v1/infer", content=_png(), timeout=60)
        assert r.status_code == 200, r.text
        pid = server.pid
        nice = {t.id: _thread_nice(pid, t.id) for t in psutil.Process(pid).threads()}
    finally:
        server.stop()
    assert nice[pid] == target
    assert set(nice.values()) <= {target, IDLE_NICE}, nice  # the idle loader lowers its own
    assert "serving at nice" in (tmp_path / "server.log").read_text()
