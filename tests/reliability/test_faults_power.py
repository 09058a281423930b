"""Fault: the board's ``nvpmodel`` command fails when the operator switches the power mode.

The server runs as on a Jetson: an nvpmodel configuration (``EDGE_NVPMODEL_CONF``) and an
``nvpmodel`` executable on PATH. Here that executable is a small script that behaves as
NVIDIA's does (``-q`` prints the mode, ``-m N`` switches), except that switching to mode 2
fails the way nvpmodel fails without root. Every call is a real subprocess.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from fault_support import background_traffic, http_sender, record, serve, wait_for

pytestmark = pytest.mark.integration

CONF = """\
< PARAM TYPE=FILE NAME=CPU_ONLINE >
< POWER_MODEL ID=0 NAME=MAXN >
< POWER_MODEL ID=1 NAME=15W >
< POWER_MODEL ID=2 NAME=7W >
< PM_CONFIG DEFAULT=0 >
"""

NVPMODEL = """\
#!/bin/sh
# nvpmodel as NVIDIA's behaves, with the mode kept beside this script; mode 2 fails
state="$(dirname "$0")/mode"
case "$1" in
  -q)
    mode=$(cat "$state" 2>/dev/null || echo 0)
    case "$mode" in 0) name=MAXN;; 1) name=15W;; *) name=7W;; esac
    echo "NVPM WARN: fan mode is not set!"
    echo "NV Power Mode: $name"
    echo "$mode"
    ;;
  -m)
    if [ "$2" = 2 ]; then
      echo "NVPM ERROR: Error opening /sys/devices/system/cpu/cpu3/online: 13" >&2
      exit 255
    fi
    echo "$2" > "$state"
    ;;
  *) exit 2;;
esac
"""


@pytest.fixture
def jetson_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a server that finds nvpmodel (a script here) and its config."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvpmodel"
    script.write_text(NVPMODEL)
    script.chmod(0o755)
    conf = tmp_path / "nvpmodel.conf"
    conf.write_text(CONF)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "EDGE_NVPMODEL_CONF": str(conf)}


def _follow(url: str, out: list[dict[str, Any]], opened: threading.Event) -> None:
    """Collect the ``adaptation`` events of the SSE stream until the server goes away."""
    try:
        with httpx.stream("GET", f"{url}/v1/events?history=0", timeout=None) as r:
            opened.set()
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind == "adaptation":
                    out.append(json.loads(line.removeprefix("data: ")))
    except httpx.HTTPError:
        pass


def _power(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "power_mode"]


def test_power_mode_switch_gets_502_and_an_event_and_serving_continues_when_nvpmodel_fails(
    engines_dir: Path, tmp_path: Path, jetson_env: dict[str, str]
) -> None:
    streamed: list[dict[str, Any]] = []
    opened = threading.Event()
    with serve(engines_dir, tmp_path / "server.log", **jetson_env) as served:
        client = httpx.Client(base_url=served.url, timeout=60)
        reader = threading.Thread(target=_follow, args=(served.url, streamed, opened))
        reader.start()
        assert opened.wait(60)
        with background_traffic(http_sender(served.url)) as traffic:
            before = client.get("/v1/power-mode").json()
            failed = client.post("/v1/power-mode", json={"mode": 2})
            after_failure = client.get("/v1/power-mode").json()
            switched = client.post("/v1/power-mode", json={"mode": "15W"})
            # the loop's own switches stream too (a linux monitor on a busy machine)
            wait_for(lambda: len(_power(streamed)) >= 2, what="two power mode events streamed")
            wait_for(lambda: traffic.ok >= 50, what="50 frames served")
        status = client.get("/v1/status?events=1000").json()  # every event kept
        assert served.sigterm() == 0
        reader.join(60)
    record("nvpmodel-fails", requests=traffic.sent, failed=len(traffic.failed), faults=1)
    assert before["emulated"] is False and before["current"] == {"id": 0, "name": "MAXN"}
    assert failed.status_code == 502
    error = failed.json()
    assert error["error"] == "host_command_failed"
    assert "nvpmodel -m 2 exited with 255" in error["detail"]
    assert "Error opening /sys/devices/system/cpu/cpu3/online" in error["detail"]
    assert after_failure["current"] == {"id": 0, "name": "MAXN"}  # nothing changed
    assert switched.status_code == 200, switched.text
    assert switched.json()["current"] == {"id": 1, "name": "15W"}
    power = _power(streamed)
    assert [e["reason"] for e in power] == [
        "power mode -> 2 failed; nothing changed",
        "power mode MAXN -> 15W",
    ]
    assert "exited with 255" in power[0]["error"] and power[1]["error"] is None
    assert [e["reason"] for e in _power(status["events"])] == [e["reason"] for e in power]
    assert traffic.failed == [], traffic.failed[:3]
