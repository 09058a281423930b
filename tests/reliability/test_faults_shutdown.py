"""Fault: SIGTERM (a deploy, a reboot, ``docker stop``) while inference requests are in
flight: the server stops accepting, every request it had accepted completes with 200,
and the process exits with status 0 (how long the drain took is recorded, not asserted:
it depends on the machine)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fault_support import family_catalog, record, serve
from PIL import Image

pytestmark = pytest.mark.integration

REQUESTS = 20
SIDE = 2048  # a 4 MB camera still: decoding and resizing it keeps each request ~50 ms busy
# Bounds on waits, not expected speeds: a machine 7x slower than this one, under load,
# still drains the 20 requests well within them. The drain timeout is as long, so that
# the server is not made to cut an accepted request short on a slow machine.
WAIT_S = 300.0


def _refuses_connections(url: str, timeout_s: float) -> bool:
    """Poll until a new connection is refused (the listening socket is closed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v2/health/live", timeout=5)
        except httpx.ConnectError:
            return True
        except httpx.TransportError:
            pass  # accepted but slow to answer: still listening, or just closing
        time.sleep(0.05)
    return False


def _still() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (SIDE, SIDE), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_accepted_requests_complete_and_exit_status_is_0_when_sigterm_arrives_mid_flight(
    engines_dir: Path, tmp_path: Path
) -> None:
    catalog = family_catalog(engines_dir)
    fp32 = [v for v in catalog.variants if v.precision == "fp32"]
    slowest = max(fp32, key=lambda v: v.artifact.bytes).id
    frame = _still()
    results: list[object] = [None] * REQUESTS
    sent = [threading.Event() for _ in range(REQUESTS)]
    go = threading.Barrier(REQUESTS + 1)

    def body(i: int) -> Iterator[bytes]:
        for at in range(0, len(frame), 1 << 20):
            yield frame[at : at + (1 << 20)]
        sent[i].set()  # every byte handed to the socket: the request is the server's now

    def post(i: int, url: str) -> None:
        headers = {"content-type": "image/png", "content-length": str(len(frame))}
        with httpx.Client(base_url=url, timeout=WAIT_S) as client:  # a connection each
            client.get("/v2/health/live")  # connected and accepted before the race starts
            go.wait()
            try:
                r = client.post(f"/v1/infer?variant={slowest}", content=body(i), headers=headers)
                results[i] = r.status_code
            except httpx.HTTPError as exc:
                results[i] = repr(exc)

    log = tmp_path / "server.log"
    with serve(engines_dir, log, EDGE_DRAIN_TIMEOUT_S=str(WAIT_S)) as served:
        clients = [threading.Thread(target=post, args=(i, served.url)) for i in range(REQUESTS)]
        for t in clients:
            t.start()
        go.wait()
        assert all(e.wait(WAIT_S) for e in sent)
        time.sleep(0.1)  # the server reads them
        in_flight = sum(r is None for r in results)
        stopped_at = time.monotonic()
        served.proc.terminate()  # SIGTERM
        refused = _refuses_connections(served.url, WAIT_S)  # no longer accepting
        status = served.proc.wait(WAIT_S)
        stop_s = time.monotonic() - stopped_at
        for t in clients:
            t.join(WAIT_S)
    ok = results.count(200)
    record("sigterm", requests=REQUESTS, in_flight=in_flight, ok=ok, stop_s=round(stop_s, 2))
    assert in_flight > REQUESTS // 2, "SIGTERM came after most requests had finished"
    assert refused, "the server still accepted connections after SIGTERM"
    assert results == [200] * REQUESTS
    assert status == 0, log.read_text()[-3000:]
