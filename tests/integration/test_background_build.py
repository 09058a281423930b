"""`edge-service serve --build` on an empty engine repository: it answers as soon as the
first engine is built, keeps answering while the rest of the family builds and profiles in
the background, takes each engine as it lands, and stops its build when it stops."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from support import READY_TIMEOUT_S, run_server

from edge_service.device import current
from edge_service.repository import load_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FRAME = next((Path(__file__).parents[2] / "calibration" / "fashion").glob("c9_*.png"))
SMALL = "--only base --only dw-dw-dw --eval-limit 300 --calibration-method minmax"
GROW_TIMEOUT_S = 1200.0  # a bound on the wait, not an expectation: ~1 min here


def _status(url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(f"{url}/v1/status", timeout=60).json()  # type: ignore[no-any-return]


def _finished(build: dict) -> bool:  # type: ignore[type-arg]
    """The background build has ended and says so in its progress too (the server names
    the phase a moment before it writes the progress file)."""
    stage = (build.get("progress") or {}).get("stage")
    return build["background"] in ("done", "failed") and stage in ("complete", "failed")


def test_serve_build_answers_on_the_first_engine_then_grows_the_family_without_a_failure(
    tmp_path: Path, fashion_dir: Path
) -> None:
    engines = tmp_path / "engines"
    env = {"EDGE_BUILD_ARGS": SMALL, "EDGE_CATALOG_POLL_S": "0.2"}
    with run_server(engines, tmp_path / "server.log", ["--build"], **env) as url:
        first = _status(url)
        assert first["ready"] and "base@fp32" in {v["id"] for v in first["variants"]}
        served, answers = set(), 0
        deadline = time.monotonic() + GROW_TIMEOUT_S
        while time.monotonic() < deadline:
            r = httpx.post(
                f"{url}/v1/infer",
                content=FRAME.read_bytes(),
                headers={"content-type": "image/png"},
                timeout=60,
            )
            assert r.status_code == 200, r.text  # never a failed request while it grows
            served.add(r.json()["variant"])
            answers += 1
            if _finished(_status(url)["build"]):
                break
            time.sleep(0.1)
        final = _status(url)
    build = final["build"]
    assert build["background"] == "done", build
    assert build["complete"] and build["progress"]["stage"] == "complete"
    assert build["catalog_device"] == current().id and not build["foreign"]
    ids = {v["id"] for v in final["variants"]}
    assert ids == {"base@fp32", "base@int8", "dw-dw-dw@fp32", "dw-dw-dw@int8"}
    grew = [e for e in final["events"] if e.get("kind") == "catalog"]
    assert grew, "every new catalog is an event"
    assert answers > 0 and served <= ids
    catalog = load_catalog(engines / "fashion")
    for v in catalog.variants:  # profiled here in every emulated power mode
        assert set(v.profiles[current().id]) >= {"MAXN", "HALF", "MIN"}
    # a second start serves the whole family at once, standby engines preloaded
    with run_server(engines, tmp_path / "again.log", ["--build"], **env) as url:
        again = _status(url)
        assert again["ready"] and {v["id"] for v in again["variants"]} == ids
        assert again["build"]["complete"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stopping_the_server_stops_its_background_build_and_keeps_a_valid_catalog(
    tmp_path: Path, fashion_dir: Path
) -> None:
    engines = tmp_path / "engines"
    env = {"EDGE_BUILD_ARGS": "--eval-limit 300"}  # the whole front: minutes of work
    with run_server(engines, tmp_path / "server.log", ["--build"], **env) as url:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pid = None
        while time.monotonic() < deadline:
            progress = _status(url)["build"]["progress"] or {}
            if progress.get("stage") in ("fit", "networks") and progress.get("pid"):
                pid = int(progress["pid"])
                break
            time.sleep(0.2)
        assert pid is not None and _alive(pid)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the build outlived the server"
    catalog = load_catalog(engines / "fashion")  # what landed is whole and valid
    assert catalog.build["complete"] is False and "base@fp32" in {v.id for v in catalog.variants}
