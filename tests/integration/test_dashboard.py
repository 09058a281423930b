"""The operator dashboard in a real headless Chromium (Debian's), driven by playwright.

The first test serves the real family on a replayed board trace (power modes switch, the
loop adapts), posts frames, and checks the page fills with what the server reports; it
saves a screenshot for a person to look at (also copied to bench/out/dashboard.png).
The second serves the page beside a scripted stand-in of the /v1/status + /v1/events
contract, for what the real server cannot be made to show on demand: a board with no
power rails, thermal zones or power mode, a failed switch, and a dropped stream. The third
serves a tiny detection family and checks the camera streams panel counts its detections
per class.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from support import calm_trace, detector_family, run_server

from edge_service.config import REPO_ROOT
from edge_service.server.process import free_port

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# Offline and quiet: no sandbox (containers), no GPU, no background traffic to Google.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = REPO_ROOT / "bench" / "out" / "dashboard.png"
MODES = ({"id": 0, "name": "MAXN"}, {"id": 2, "name": "MIN"})
# Bounds on waiting for the page (a headless Chromium on a machine 7x slower than this
# one, under load, renders in a few seconds), never expected speeds.
WAIT_S = 60.0
WAIT_MS = int(WAIT_S * 1000)

# Everything the first look needs: live, a power mode, an event row, points on the charts.
PAGE_FILLED = """() => {
  const points = (id) => Number(document.getElementById(id).dataset.points || 0);
  return document.getElementById("conn").dataset.state === "live"
    && ["MAXN", "MIN"].includes(document.getElementById("power-mode").textContent)
    && document.querySelectorAll("#events-body tr.event-row").length > 0
    && ["chart-latency", "chart-rps", "chart-power", "chart-temps", "chart-cpu"]
         .every((id) => points(id) > 0);
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed: apt-get install -y chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the dashboard test needs playwright: pip install playwright"
    )
    with sync_api.sync_playwright() as pw:
        # Debian's binary, never a downloaded one: the test runs offline.
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def _open_page(browser: Any, url: str) -> Iterator[tuple[Any, list[str]]]:
    """A 1440x900 page at ``url``; yields it and the problems it ran into: script errors,
    console errors and any request that left the server's origin."""
    origin = url.split("/dashboard")[0]
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    problems: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    def request(req: Any) -> None:
        if not req.url.startswith((origin, "data:")):
            problems.append(f"external request: {req.url}")

    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("console", console)
    page.on("request", request)
    try:
        response = page.goto(url)
        assert response is not None and response.status == 200, (
            f"GET {url} answered {response and response.status}: is the dashboard router "
            "included in create_app?"
        )
        yield page, problems
    finally:
        page.close()


def _trace(path: Path) -> Path:
    """Six replayed seconds at speed 4: MAXN at rest, then MIN under load (the loop moves
    to the fastest variant), then MAXN again (it moves back after the cooldown)."""
    lines = []
    for i in range(24):
        low = 8 <= i < 16
        lines.append(
            {
                "t": float(i),
                "source": "trace",
                "power_mode": MODES[low],
                "cpu_online": 1 if low else 2,
                "cpu_load": 0.95 if low else 0.2,
                "mem_available_mb": 2600.0 + 20 * i,
                "mem_total_mb": 4000.0,
                "temps_c": {"cpu": 46.0 + 0.3 * i, "gpu": 44.0 + 0.1 * i},
                "power_mw": {"VDD_IN": 2900.0 if low else 5100.0, "VDD_CPU_GPU_CV": 900.0 + i},
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


@contextmanager
def _traffic(url: str, frames: list[bytes]) -> Iterator[list[int]]:
    """Posts ``frames`` round-robin (~40/s) in a thread until the block ends; yields the
    status codes seen so far."""
    codes: list[int] = []
    stop = threading.Event()

    def post() -> None:
        with httpx.Client(base_url=url, timeout=WAIT_S) as client:
            while not stop.is_set():
                body = frames[len(codes) % len(frames)]
                codes.append(client.post("/v1/infer", content=body).status_code)
                stop.wait(0.025)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    try:
        yield codes
    finally:
        stop.set()
        thread.join(timeout=WAIT_S)


def _follows_server(page: Any, url: str, element: str, read: Any, within_s: float = WAIT_S) -> str:
    """Waits until ``element``'s text equals what ``read(status)`` picks from /v1/status
    (the server may switch between the two reads, so it reads again until they agree)."""
    deadline = time.monotonic() + within_s
    while True:
        expected = read(httpx.get(f"{url}/v1/status", timeout=WAIT_S).json())
        try:
            page.wait_for_function(
                "([id, text]) => document.getElementById(id).textContent === text",
                arg=[element, expected],
                timeout=1000,
            )
            return str(expected)
        except Exception:
            if time.monotonic() > deadline:
                raise


def _status_mode(status: dict[str, Any]) -> str:
    mode = status.get("power_mode") or (status.get("context") or {}).get("power_mode")
    return str(mode["name"])


def test_dashboard_fills_with_live_server_data_when_power_modes_switch(
    browser, engines_dir, test_split, tmp_path
):
    frames = [_png(img) for img in test_split.subset(16, seed=3).images]
    with (
        run_server(
            engines_dir,
            tmp_path / "server.log",
            EDGE_MONITOR_SOURCE="replay",
            EDGE_MONITOR_TRACE=str(_trace(tmp_path / "modes.jsonl")),
            EDGE_MONITOR_REPLAY_SPEED="4",
            EDGE_COOLDOWN_S="1",
        ) as url,
        _traffic(url, frames) as codes,
        _open_page(browser, f"{url}/dashboard") as (page, problems),
    ):
        page.wait_for_function(PAGE_FILLED, timeout=WAIT_MS)
        active = _follows_server(page, url, "active-variant", lambda s: s["active_variant"])
        mode = _follows_server(page, url, "power-mode", _status_mode)
        # 30 ticks (6 s at the test's 0.2 s period): the screenshot shows lines and switches
        page.wait_for_function(
            "() => Number(document.getElementById('chart-rps').dataset.points) >= 30",
            timeout=2 * WAIT_MS,
        )
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        rows = page.locator("#events-body tr.event-row").count()
        power = page.text_content("#power-total")
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)
    assert problems == []
    assert codes and set(codes) == {200}
    assert active.split("@")[0] in {"base", "dw-dw-dw"}
    assert mode in {"MAXN", "MIN"}
    assert rows >= 1
    assert power is not None and "mW" in power
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


# ---- a scripted stand-in of the contract: a bare board, a failed switch, a dropped stream --

BARE_CONTEXT = {
    "cpu_load": 0.4,
    "cpu_online": 4,
    "mem_available_mb": 900.0,
    "mem_total_mb": 2000.0,
    "temps_c": {},
    "power_mw": {},
    "throttled": None,
    "gpu_load": None,
    "source": "linux",
}
FAILED_SWITCH = {
    "t": 0.0,
    "from_variant": "big@fp32",
    "to_variant": "small@int8",
    "reason": "p99 over budget",
    "context": {},
    "predicted_latency_ms": 1.5,
    "observed_latency_ms": 9.0,
    "error": "engine small@int8 failed to load; rebuild it with edge-service build",
}


def _bare_board_app(drop: threading.Event) -> Any:
    """/dashboard beside a stand-in that streams ticks of a board with no rails, zones or
    power mode until ``drop`` is set (six at least), then ends the stream and answers 503
    to every reconnect. The test drops it once it has read the page: a stream of a fixed
    length could end before a slow machine's browser has drawn it."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    from edge_service.server.dashboard import router

    app = FastAPI()
    app.include_router(router)
    connects = []

    @app.get("/v1/status")
    def status() -> dict[str, Any]:
        return {
            "family": "bare",
            "device": "x86_64",
            "ready": True,
            "active_variant": "small@int8",
            "uptime_s": 12.0,
            "context": None,
            "decision": None,
            "ticks": 6,
            "source_errors": 0,
            "variants": [
                {
                    "id": "small@int8",
                    "precision": "int8",
                    "backend": "onnxruntime",
                    "accuracy": 0.91,
                    "accuracy_metric": "top1",
                    "latency_p50_ms": 1.0,
                }
            ],
            "events": [],
            "power_mode": None,
            "policy": None,
        }

    @app.get("/v1/streams")
    def streams() -> dict[str, Any]:
        gate = {"requests": 3, "errors": 0, "frames": 3, "first_seen": time.time() - 5,
                "last_seen": time.time(), "last_variant": "small@int8",
                "latency_p50_ms": 1.0, "latency_p99_ms": 2.0}  # fmt: skip
        return {"task": "classification", "streams": {"gate-cam": gate}}

    @app.get("/v1/events", response_model=None)
    def events() -> Response:
        connects.append(time.time())
        if len(connects) > 1:
            return JSONResponse({"error": "not_ready", "detail": "restarting"}, status_code=503)
        return StreamingResponse(_bare_stream(drop), media_type="text/event-stream")

    return app


async def _bare_stream(drop: threading.Event) -> AsyncIterator[str]:
    yield f"event: adaptation\ndata: {json.dumps(FAILED_SWITCH | {'t': time.time()})}\n\n"
    for i in range(int(4 * WAIT_S / 0.3)):  # bounded: the stream ends even if never dropped
        if i >= 6 and drop.is_set():
            break
        tick = {
            "t": time.time(),
            "power_mode": None,
            "active_variant": "small@int8",
            "precision": "int8",
            "context": BARE_CONTEXT,
            "latency_ms": {"p50": 1.0, "p99": 2.0, "count": 10},
            "latency_budget_ms": None,
            "requests_per_s": 5.0,
            "power_total_mw": None,
            "served_slo": {"calls": 600, "over": 2, "share_over": 0.0033, "p99_ms": 1.9,
                           "verdict": "compliant"},
        }  # fmt: skip
        yield f": ping\n\nevent: context\ndata: {json.dumps(tick)}\n\n"
        await asyncio.sleep(0.3)


@contextmanager
def _serve_in_thread(app: Any) -> Iterator[str]:
    import uvicorn

    for _ in range(3):  # the free port may be taken before uvicorn binds it: pick another
        port = free_port()
        config = uvicorn.Config(app, port=port, log_level="warning", timeout_graceful_shutdown=1)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.started:
            break
        server.should_exit = True
        thread.join(timeout=WAIT_S)
    assert server.started, f"the stand-in server did not start in {WAIT_S:.0f} s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=WAIT_S)


def test_dashboard_says_what_the_board_lacks_and_shows_errors_and_reconnects_when_bare(browser):
    drop = threading.Event()
    with (
        _serve_in_thread(_bare_board_app(drop)) as url,
        _open_page(browser, f"{url}/dashboard") as (page, problems),
    ):
        page.wait_for_selector("#conn[data-state='live']", timeout=WAIT_MS)
        page.wait_for_selector("#chart-latency:not([data-points='0'])", timeout=WAIT_MS)
        power = page.text_content("#power-total")
        zones = page.text_content("#power-sub")
        empty = {c: page.get_attribute(f"#chart-{c}", "data-empty") for c in ("power", "temps")}
        mode = page.text_content("#power-mode")
        budget_sub = page.text_content("#budget-sub")
        error = page.locator("#events-body tr.error-row .error")
        error_text = error.text_content()
        error_color = error.evaluate("e => getComputedStyle(e).color")
        page.wait_for_selector("#streams-body tr[data-stream='gate-cam']", timeout=WAIT_MS)
        accuracy_head = page.text_content("#accuracy-head")
        detections_column = page.is_visible("#streams-detections")
        drop.set()  # the stream ends now and every reconnect gets a 503
        page.wait_for_selector("#conn[data-state='reconnecting']", timeout=WAIT_MS)
    assert power == "no power rails on this board"
    assert zones is not None and "no thermal zones" in zones
    assert empty == {"power": "no power rails on this board", "temps": "no thermal zones"}
    assert mode == "not reported"
    assert budget_sub == "10 requests in window · engine calls over: 2 of 600 in 15 s (SLO kept)"
    assert error_text == FAILED_SWITCH["error"]
    assert error_color in {"rgb(220, 38, 38)", "rgb(248, 113, 113)"}  # --bad, light or dark
    assert accuracy_head == "Top-1"
    assert not detections_column  # a classification family's streams count no objects
    # the browser logs the 503s of the reconnects as console errors; nothing else may fail
    assert [p for p in problems if "503" not in p] == []


# ---- a detection family: its metric and its streams' detections per class ------------------

METRIC_HEADS = {"top1": "Top-1", "map50": "mAP@50", "agreement_map50": "Agree. mAP@50"}


def test_dashboard_shows_detections_per_class_per_stream_for_a_detection_family(browser, tmp_path):
    red, green = np.zeros((128, 128, 3), np.uint8), np.zeros((128, 128, 3), np.uint8)
    red[..., 0], green[..., 1] = 255, 255  # a person, a car (support.detector_family)
    with run_server(
        detector_family(tmp_path),
        tmp_path / "server.log",
        EDGE_FAMILY="street",
        EDGE_MONITOR_SOURCE="replay",
        EDGE_MONITOR_TRACE=str(calm_trace(tmp_path / "calm.jsonl")),
    ) as url:
        for frame in (green, green, red, green):
            r = httpx.post(f"{url}/v1/infer?stream=cam1", content=_png(frame), timeout=WAIT_S)
            assert r.status_code == 200, r.text
        status = httpx.get(f"{url}/v1/status", timeout=WAIT_S).json()
        with _open_page(browser, f"{url}/dashboard") as (page, problems):
            row = "#streams-body tr[data-stream='cam1'] td.detections"
            page.wait_for_selector(f"{row} .chip[data-label='car']", timeout=WAIT_MS)
            chips = page.locator(f"{row} .chip").all_text_contents()
            total = page.text_content(f"{row} .total")
            head = page.text_content("#accuracy-head")
            shot = tmp_path / "dashboard-detection.png"
            page.screenshot(path=str(shot), full_page=True)
    assert problems == []
    assert chips == ["car 3", "person 1"]  # most frequent first
    assert total is not None and total.startswith("4 in 4 of 4 frames")
    metrics = {v.get("accuracy_metric") for v in status["variants"]} - {None}
    assert head == (METRIC_HEADS[metrics.pop()] if metrics else "Accuracy")
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY.with_name("dashboard-detection.png"))
