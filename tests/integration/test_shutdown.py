"""A server stops promptly on SIGTERM even with live event streams (dashboards) open."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest
from support import STOP_TIMEOUT_S, run_server

pytestmark = pytest.mark.integration
# Far longer than run_server waits before it kills the server: a stop that waited for the
# open stream (uvicorn's graceful shutdown, up to the drain timeout) ends in the kill and
# never logs its clean stop. No wall-clock figure is asserted.
DRAIN_S = 10 * STOP_TIMEOUT_S


def test_sigterm_stops_the_server_without_waiting_out_an_open_event_stream(
    engines_dir: Path, tmp_path: Path
) -> None:
    opened = threading.Event()
    log = tmp_path / "server.log"

    def follow(url: str) -> None:
        try:
            with httpx.stream("GET", f"{url}/v1/events", timeout=None) as r:
                opened.set()
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass  # the server went away: what this test waits for

    server = run_server(engines_dir, log, EDGE_DRAIN_TIMEOUT_S=str(DRAIN_S))
    url = server.__enter__()
    reader = threading.Thread(target=follow, args=(url,), daemon=True)
    reader.start()
    assert opened.wait(60)
    server.__exit__(None, None, None)  # SIGTERM, then waits (kills after STOP_TIMEOUT_S)
    reader.join(30)
    assert not reader.is_alive()
    stopped = re.sub(r"\s+", "", log.read_text(errors="replace"))  # the console wraps lines
    assert "stoppedbySIGTERM" in stopped, "the server did not stop by itself: it was killed"
