"""Adaptation under a steady HTTP load, with static baselines, on this machine's CPU.

    edge-service build && edge-service profile      # engines with per-mode profiles
    python bench/served_adaptation.py [--budget-ms 0.5] [--rate 200] [--phase-s 12]

A real server (``edge-service serve``, emulated power modes, the budget policy) takes an
open-loop load of Fashion-MNIST PNG frames over HTTP while a script runs five phases:

1. MAXN (every core);
2. the power mode switched to MIN (one core) through POST /v1/power-mode;
3. still MIN, plus a competing CPU-heavy process on every core;
4. back to MAXN, the competitor stopped;
5. the memory budget cut (PUT /v1/policy) below the served variant's memory.

The same scenario then runs with the most accurate and the fastest variant pinned (static
baselines). The SLO is the policy's latency budget on the engine time of each request (the
server reports it per response); requests in the first second of a phase are not scored.
The oracle is measured, not modelled: in each phase's conditions (cores, competitor) every
variant's p99 is measured in-process, and the oracle serves the most accurate one within
the budget (and the memory cut). Writes the "served_adaptation" section of RESULTS.md and
bench/served_adaptation.png.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image
from results import write_section
from served_oracle import measure_oracle
from served_report import report
from server_proc import CONTROL_TOKEN

from edge_service.data.fashion import load_split
from edge_service.server.process import ServerProcess

HERE = Path(__file__).resolve().parent
TOKEN = CONTROL_TOKEN


@dataclass(frozen=True)
class Phase:
    name: str
    mode: str
    hog: bool = False
    memory_cut: bool = False


PHASES = [
    Phase("MAXN", "MAXN"),
    Phase("MIN", "MIN"),
    Phase("MIN + CPU hog", "MIN", hog=True),
    Phase("MAXN again", "MAXN"),
    Phase("MAXN + memory cut", "MAXN", memory_cut=True),
]


@dataclass
class Run:
    name: str
    pin: str | None
    requests: list[tuple[float, float, int, str, float]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    contexts: list[dict] = field(default_factory=list)
    phase_t: list[float] = field(default_factory=list)
    end_t: float = 0.0
    memory_cut_mb: float | None = None


def frames(n: int = 500) -> list[tuple[bytes, int]]:
    split = load_split(
        Path(os.environ.get("EDGE_DATA_DIR", "/usr/share/datasets/fashion-mnist")), "test"
    )
    out = []
    for img, label in zip(split.images[:n], split.labels[:n], strict=True):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        out.append((buf.getvalue(), int(label)))
    return out


class Hog:
    """A CPU-heavy competitor: one busy process per core."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for _ in range(os.cpu_count() or 1):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []


def load(url: str, run: Run, data: list, rate: float, stop: threading.Event, k: int) -> None:
    """Open-loop sender ``k`` of 4: its share of ``rate`` requests a second."""
    period = 4 / rate
    with httpx.Client(base_url=url, timeout=10) as client:
        t_next = time.time() + k * period / 4
        i = k
        while not stop.is_set():
            delay = t_next - time.time()
            if delay > 0:
                time.sleep(delay)
            t_next = max(t_next + period, time.time() - period)  # no catch-up burst
            body, _ = data[i % len(data)]
            i += 4
            sent = time.time()
            try:
                r = client.post("/v1/infer", content=body)
                ok = r.status_code
                doc = r.json() if ok == 200 else {}
            except httpx.HTTPError:
                ok, doc = 0, {}
            run.requests.append(
                (sent, (time.time() - sent) * 1e3, ok, doc.get("variant", "-"),
                 doc.get("timings", {}).get("engine_ms", float("nan")))
            )  # fmt: skip


def listen(url: str, run: Run, stop: threading.Event) -> None:
    """Record adaptation events and context samples from the SSE stream."""
    with (
        httpx.Client(base_url=url, timeout=None) as client,
        client.stream("GET", "/v1/events?history=0") as r,
    ):
        kind = None
        for line in r.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                doc = json.loads(line[6:])
                doc["received"] = time.time()
                (run.events if kind == "adaptation" else run.contexts).append(doc)


# The served adaptation benches' server: the linux monitor, emulated power modes from MAXN,
# a quick loop and a short cooldown, standby engines, and the control token.
ADAPTIVE_ENV = {
    "EDGE_COOLDOWN_S": "2",
    "EDGE_MONITOR_PERIOD_S": "0.1",
    "EDGE_MONITOR_SOURCE": "linux",
    "EDGE_POWER_MODE": "0",
    "EDGE_CONTROL_TOKEN": TOKEN,
}


def start_server(args: argparse.Namespace, log: Path) -> ServerProcess:
    env = ADAPTIVE_ENV | {
        "EDGE_ENGINES_DIR": str(args.engines_dir),
        "EDGE_LATENCY_BUDGET_MS": str(args.budget_ms),
    }
    return ServerProcess(env, log, stop_timeout_s=15).start()


def scenario(args: argparse.Namespace, run: Run, data: list, memory_cut_mb: float | None) -> None:
    server = start_server(args, args.out / f"server-{run.name}.log")
    url = server.url
    auth = {"authorization": f"Bearer {TOKEN}"}
    ctl = httpx.Client(base_url=url, timeout=30, headers=auth)
    stop, hog = threading.Event(), Hog()
    if run.pin:
        ctl.post("/v1/pin", json={"variant": run.pin}).raise_for_status()
    threads = [
        threading.Thread(target=listen, args=(url, run, stop), daemon=True)
    ]  # ends with the server
    threads += [
        threading.Thread(target=load, args=(url, run, data, args.rate, stop, k)) for k in range(4)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(2.0)  # warm: the first phase starts with the load running
        for phase in PHASES:
            run.phase_t.append(time.time())
            mode = ctl.get("/v1/power-mode").json()["current"]["name"]
            if mode != phase.mode:
                ctl.post("/v1/power-mode", json={"mode": phase.mode}).raise_for_status()
            if phase.hog and not hog.procs:
                hog.start()
            if not phase.hog and hog.procs:
                hog.stop()
            if phase.memory_cut:
                run.memory_cut_mb = memory_cut_mb or cut_below_active(ctl)
                policy = ctl.get("/v1/policy").json()["policy"]
                policy["memory_budget_mb"] = run.memory_cut_mb
                ctl.put("/v1/policy", json=policy).raise_for_status()
            time.sleep(args.phase_s)
        run.end_t = time.time()
    finally:
        stop.set()
        hog.stop()
        for t in threads[1:]:
            t.join(15)
        ctl.close()
        server.stop()


def cut_below_active(ctl: httpx.Client) -> float:
    """A memory budget just under what the served variant needs in MAXN."""
    doc = ctl.get("/v1/variants").json()
    active = next(v for v in doc["variants"] if v["id"] == doc["active_variant"])
    mems = [p["memory_mb"] for modes in active["profiles"].values()
            for m, p in modes.items() if m == "MAXN" and p.get("memory_mb")]  # fmt: skip
    return round(0.97 * max(mems), 3) if mems else 2.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--budget-ms", type=float, default=0.5)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--phase-s", type=float, default=12.0)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    catalog = json.loads((args.engines_dir / args.family / "catalog.json").read_text())
    acc = {v["id"]: v["accuracy"]["value"] for v in catalog["variants"]}
    largest = max(acc, key=lambda v: (acc[v], v.endswith("fp32")))
    smallest = min(acc, key=lambda v: catalog_p50(catalog, v))
    data = frames()
    runs = [Run("adaptive", None), Run("static-largest", largest), Run("static-smallest", smallest)]
    cut = None
    for run in runs:
        print(f"running {run.name} ({args.phase_s * len(PHASES):.0f} s)...", flush=True)
        scenario(args, run, data, cut)
        cut = runs[0].memory_cut_mb
    print("measuring the oracle in each phase's conditions...", flush=True)
    oracle = measure_oracle(args.engines_dir / args.family, catalog, PHASES, args.budget_ms, cut)
    body = report(
        runs, PHASES, acc, oracle, args.budget_ms, args.rate, HERE / "served_adaptation.png"
    )
    write_section("served_adaptation", "Served adaptation under a scripted scenario", body)
    (args.out / "served_adaptation.json").write_text(
        json.dumps([r.__dict__ for r in runs], default=str)
    )
    print(body)


def catalog_p50(catalog: dict, vid: str) -> float:
    v = next(x for x in catalog["variants"] if x["id"] == vid)
    lat = [p["latency"]["1"]["p50_ms"] for modes in v["profiles"].values() for p in modes.values()
           if "1" in p["latency"]]  # fmt: skip
    return min(lat) if lat else float("inf")


if __name__ == "__main__":
    main()
