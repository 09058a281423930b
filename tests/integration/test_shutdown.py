"""A server stops promptly on SIGTERM even with live event streams (dashboards) open."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from support import run_server

pytestmark = pytest.mark.integration


def test_sigterm_stops_the_server_within_seconds_with_an_event_stream_open(
    engines_dir: Path, tmp_path: Path
) -> None:
    opened = threading.Event()

    def follow(url: str) -> None:
        try:
            with httpx.stream("GET", f"{url}/v1/events", timeout=None) as r:
                opened.set()
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass  # the server went away: what this test waits for

    server = run_server(engines_dir, tmp_path / "server.log")
    url = server.__enter__()
    reader = threading.Thread(target=follow, args=(url,), daemon=True)
    reader.start()
    assert opened.wait(10)
    started = time.monotonic()
    server.__exit__(None, None, None)  # SIGTERM, then waits (kills after 15 s)
    assert time.monotonic() - started < 10
    reader.join(5)
    assert not reader.is_alive()
