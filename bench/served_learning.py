"""The learning adaptation loop under several served scenarios, against an oracle measured
by pinning, side by side with the simulator.

    edge-service build && edge-service profile      # engines with per-mode profiles
    python bench/served_learning.py [--reps 3] [--seed 7] [--scale 1.0]
    # any family, e.g. the roadside detector on street frames (docs/detection.md):
    python bench/served_learning.py --family roadside --frames frames/ --rate-scale 0.1

Each scenario is a script of phases (emulated power mode, a CPU-heavy competitor or not,
duration) run against a real server (``edge-service serve``, the budget policy with
learning and shadow runs) under an open-loop load of Fashion-MNIST PNG frames over HTTP.
Budgets are set relative to this machine's own base latency (base@fp32, batch 1, one
thread, measured here first), so the figures mean the same on a fast and a slow machine.
Three scripted scenarios differ in phase order, durations, load and budget; a fourth is
drawn from ``--seed``.

The oracle is measured by pinning: in each phase's conditions (mode, competitor) every
servable variant is pinned in a real server under the same load, and the oracle is the
most accurate one with at most 1% of its requests over that scenario's budget. The SLO is
the engine time of each request (reported per response) against the budget; a phase's
first second is not scored.

The simulator replays the contexts the server recorded (its SSE stream) through the same
policy on the profiles alone, so its error against the served run is known.

Writes the "served_learning" section of bench/RESULTS.md, bench/served_learning.png and
the raw runs to bench/out/served_learning.json.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from learning_report import report
from results import write_section
from served_adaptation import ADAPTIVE_ENV, TOKEN, Hog, frames, listen, load
from server_proc import ServerProcess

from edge_service.runtime.loader import open_engine

HERE = Path(__file__).resolve().parent
SETTLE_S = 1.0
SWEEP_S = 8.0  # per variant and condition, for the oracle (240-480 requests: 1% is 2-5)


@dataclass(frozen=True)
class Phase:
    mode: str
    hog: bool
    seconds: float

    @property
    def name(self) -> str:
        return self.mode + (" + CPU hog" if self.hog else "")

    @property
    def condition(self) -> tuple[str, bool]:
        return self.mode, self.hog


@dataclass(frozen=True)
class Scenario:
    name: str
    phases: tuple[Phase, ...]
    rate: float  # requests per second
    budget_x: float  # the budget in multiples of the machine's base latency


SCENARIOS = (
    Scenario(
        "modes down and up",
        (Phase("MAXN", False, 15), Phase("HALF", False, 15), Phase("MIN", False, 15),
         Phase("MAXN", False, 15)),
        rate=40, budget_x=1.5,
    ),
    Scenario(
        "competitor comes and goes",
        (Phase("MAXN", False, 12), Phase("MAXN", True, 15), Phase("MAXN", False, 12),
         Phase("MIN", True, 15), Phase("MIN", False, 12)),
        rate=60, budget_x=1.3,
    ),
    Scenario(
        "quick flips",
        (Phase("MIN", False, 8), Phase("MAXN", False, 8), Phase("HALF", False, 8),
         Phase("MIN", True, 8), Phase("MAXN", False, 8), Phase("MIN", False, 8)),
        rate=30, budget_x=2.0,
    ),
)  # fmt: skip


def random_scenario(seed: int) -> Scenario:
    """Six phases of random mode, competitor (one in three) and length, a random load and
    budget, all from ``seed``."""
    rng = random.Random(seed)
    phases = tuple(
        Phase(rng.choice(["MAXN", "HALF", "MIN"]), rng.random() < 1 / 3, rng.randint(8, 14))
        for _ in range(6)
    )
    return Scenario(
        f"random (seed {seed})", phases, rate=rng.choice([20, 30, 40, 50, 60]),
        budget_x=round(rng.uniform(1.2, 2.0), 2),
    )  # fmt: skip


@dataclass
class Run:
    scenario: str
    rep: int
    budget_ms: float
    requests: list[tuple[float, float, int, str, float]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    contexts: list[dict] = field(default_factory=list)
    phase_t: list[float] = field(default_factory=list)
    end_t: float = 0.0


def reference_id(family_dir: Path) -> str:
    """base@fp32 where there is one, else the family's reference (a detector family's
    largest-input FP32 variant, `compile.byo_eval.reference_of`)."""
    from edge_service.compile.byo_eval import reference_of
    from edge_service.repository import load_catalog

    catalog = load_catalog(family_dir)
    ids = {v.id for v in catalog.variants}
    return "base@fp32" if "base@fp32" in ids else reference_of(catalog).id


def base_latency_ms(family_dir: Path, catalog: dict) -> float:
    """The reference's p50 at batch 1 on one thread, calls spaced like a served stream."""
    from edge_service.repository import load_catalog

    variant = load_catalog(family_dir).variant(reference_id(family_dir))
    engine = open_engine(variant, family_dir, 1)
    size = variant.variant_spec.input_size
    channels = int(catalog["input"]["shape"][1])
    x = np.random.default_rng(0).standard_normal((1, channels, size, size)).astype(np.float32)
    try:
        for _ in range(50):
            engine.infer(x)
        times = []
        for _ in range(400):
            time.sleep(0.002)
            t = time.perf_counter()
            engine.infer(x)
            times.append((time.perf_counter() - t) * 1e3)
    finally:
        engine.close()
    return float(np.median(times))


class Server:
    """``edge-service serve`` (`server_proc.ServerProcess`) on the linux monitor with
    emulated power modes, and a control client."""

    def __init__(self, log: Path, engines_dir: Path, **env: str) -> None:
        settings = {
            **ADAPTIVE_ENV,
            "EDGE_ENGINES_DIR": str(engines_dir),
            # one request per engine call: the engine time a request reports is then the
            # batch-1 latency the policy budgets and predicts (a batch's time is not)
            "EDGE_BATCH_MAX_SIZE": "1",
            **env,
        }
        self._proc = ServerProcess(settings, log).__enter__()
        self.url = self._proc.url
        self.ctl = httpx.Client(
            base_url=self.url, timeout=30, headers={"authorization": f"Bearer {TOKEN}"}
        )

    def mode(self, name: str) -> None:
        if self.ctl.get("/v1/power-mode").json()["current"]["name"] != name:
            self.ctl.post("/v1/power-mode", json={"mode": name}).raise_for_status()

    def stop(self) -> None:
        self.ctl.close()
        self._proc.stop()


class Load:
    """Four open-loop senders at ``rate`` requests a second, recording into ``run``."""

    def __init__(self, url: str, run: Any, data: list, rate: float, sse: bool = False) -> None:
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=load, args=(url, run, data, rate, self.stop_event, k))
            for k in range(4)
        ]
        if sse:
            self.threads.append(
                threading.Thread(target=listen, args=(url, run, self.stop_event), daemon=True)
            )
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            if not t.daemon:
                t.join(15)


def adaptive(args: argparse.Namespace, sc: Scenario, rep: int, budget: float, data: list) -> Run:
    """One scripted run of ``sc`` against a fresh server (nothing learned yet)."""
    run = Run(sc.name, rep, budget)
    log = args.out / f"learning-{len(sc.phases)}-{rep}.log"
    server = Server(
        log, args.engines_dir, EDGE_LATENCY_BUDGET_MS=f"{budget:.4f}", EDGE_FAMILY=args.family
    )
    hog = Hog()
    traffic = Load(server.url, run, data, sc.rate, sse=True)
    try:
        time.sleep(3.0)  # warm, in MAXN: the first phase starts with the load running
        for phase in sc.phases:
            run.phase_t.append(time.time())
            server.mode(phase.mode)
            if phase.hog and not hog.procs:
                hog.start()
            if not phase.hog and hog.procs:
                hog.stop()
            time.sleep(phase.seconds * args.scale)
        run.end_t = time.time()
    finally:
        traffic.stop()
        hog.stop()
        server.stop()
    return run


@dataclass
class Sweep:
    """Engine times of every variant pinned in one condition."""

    times: dict[str, list[float]] = field(default_factory=dict)
    requests: list[tuple[float, float, int, str, float]] = field(default_factory=list)


def oracle_sweep(
    args: argparse.Namespace, conditions: Sequence[tuple[str, bool, float]], variants: list[str],
    data: list,
) -> dict[tuple[str, bool, float], Sweep]:  # fmt: skip
    """Pin every variant in every condition (mode, competitor, load: a scenario's rate,
    since the load itself slows the engine calls) under load; keep its engine times."""
    out: dict[tuple[str, bool, float], Sweep] = {}
    server = Server(args.out / "learning-oracle.log", args.engines_dir, EDGE_FAMILY=args.family)
    try:
        for mode, hogged, rate in conditions:
            server.mode(mode)
            hog = Hog()
            if hogged:
                hog.start()
            sweep = out[(mode, hogged, rate)] = Sweep()
            traffic = Load(server.url, sweep, data, rate)
            try:
                for vid in variants:
                    server.ctl.post("/v1/pin", json={"variant": vid}).raise_for_status()
                    start = time.time()
                    time.sleep(SWEEP_S * max(args.scale, 0.5))
                    sweep.times[vid] = [
                        r[4] for r in sweep.requests
                        if r[0] >= start + 0.5 and r[2] == 200 and r[3] == vid
                    ]  # fmt: skip
            finally:
                traffic.stop()
                hog.stop()
            print(f"  oracle sweep {mode}{' + hog' if hogged else ''} {rate:g}/s: done", flush=True)
    finally:
        server.stop()
    return out


def oracle_pick(sweep: Sweep, acc: dict[str, float], budget: float) -> tuple[str, float]:
    """The most accurate pinned variant with <= 1% of requests over ``budget``."""
    over = {v: float(np.mean(np.array(t) > budget)) for v, t in sweep.times.items() if t}
    ok = [v for v, o in over.items() if o <= 0.01]
    pick = max(ok, key=lambda v: acc[v]) if ok else min(over, key=over.__getitem__)
    return pick, over[pick]


def save_raw(path: Path, base: float, runs: list[Run], sweeps: dict) -> None:
    """Every request, event, context and sweep time, to report again with --from-json."""
    doc = {
        "base_ms": base,
        "runs": [r.__dict__ for r in runs],
        "sweeps": {
            "|".join(map(str, (m, int(h), *r))): s.times for (m, h, *r), s in sweeps.items()
        },
    }
    path.write_text(json.dumps(doc, default=str))


def load_raw(path: Path) -> tuple[float, list[Run], dict[tuple[Any, ...], Sweep]]:
    """What `save_raw` wrote: the base latency, the runs and the oracle sweeps."""
    doc = json.loads(path.read_text())
    runs = [Run(**r) for r in doc["runs"]]
    sweeps = {}
    for key, times in doc["sweeps"].items():
        mode, hog, *rate = key.split("|")  # older runs: one load for every scenario
        sweeps[(mode, hog in ("1", "True"), *map(float, rate))] = Sweep(times=times)
    return doc["base_ms"], runs, sweeps


def folder_frames(folder: Path, n: int = 200) -> list[tuple[bytes, int]]:
    """The first ``n`` JPEG/PNG files of ``folder`` as posted bodies (no labels)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [(p.read_bytes(), -1) for p in files[:n]]


def fastest_by_profile(catalog: dict, servable: list[str]) -> str:
    """Static-smallest: the servable variant with the lowest profiled batch-1 p50."""

    def p50(vid: str) -> float:
        v = next(x for x in catalog["variants"] if x["id"] == vid)
        lat = [p["latency"]["1"]["p50_ms"] for modes in v["profiles"].values()
               for p in modes.values() if "1" in p["latency"]]  # fmt: skip
        return min(lat) if lat else float("inf")

    return min(servable, key=p50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="phase length factor")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--frames", type=Path, help="JPEG/PNG frames to post (default Fashion)")
    parser.add_argument(
        "--rate-scale", type=float, default=1.0, help="load factor (a detector: e.g. 0.1)"
    )
    parser.add_argument(
        "--from-json", action="store_true", help="report again from OUT/served_learning.json"
    )
    parser.add_argument("--only", help="run the scenarios whose name contains this (a check)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    family_dir = args.engines_dir / args.family
    catalog = json.loads((family_dir / "catalog.json").read_text())
    from edge_service.repository import load_catalog

    acc = {  # the catalog's reader: an older catalog's {"top1": x} reads too
        v.id: v.accuracy.value for v in load_catalog(family_dir).variants if v.accuracy
    }
    servable = [v["id"] for v in catalog["variants"] if v.get("status", "servable") == "servable"]
    tag = "served_learning" + ("" if args.family == "fashion" else f"_{args.family}")
    raw = args.out / f"{tag}.json"
    base = load_raw(raw)[0] if args.from_json else base_latency_ms(family_dir, catalog)
    smallest = fastest_by_profile(catalog, servable)
    print(f"{reference_id(family_dir)} p50 here: {base:.4f} ms", flush=True)
    scenarios = [
        replace(sc, rate=sc.rate * args.rate_scale)
        for sc in (*SCENARIOS, random_scenario(args.seed))
        if args.only is None or args.only in sc.name
    ]
    data = folder_frames(args.frames) if args.frames else frames()
    conditions = sorted({(*p.condition, sc.rate) for sc in scenarios for p in sc.phases})
    if not args.from_json:
        print(f"oracle: {len(servable)} variants x {len(conditions)} conditions", flush=True)
        sweeps = oracle_sweep(args, conditions, servable, data)
    if args.from_json:
        _, runs, sweeps = load_raw(raw)
    else:
        runs = []
        for rep in range(1, args.reps + 1):
            for sc in scenarios:
                budget = sc.budget_x * base
                print(f"rep {rep}: {sc.name} (budget {budget:.3f} ms)...", flush=True)
                runs.append(adaptive(args, sc, rep, budget, data))
        save_raw(raw, base, runs, sweeps)  # before the report: a report bug loses nothing
    body = report(
        runs, scenarios, sweeps, acc, servable, smallest, base, family_dir,
        HERE / f"{tag}.png", oracle_pick, SETTLE_S,
    )  # fmt: skip
    title = "Learning adaptation: served scenarios vs oracle"
    write_section(tag, title if tag == "served_learning" else f"{title} ({args.family})", body)
    print(body)


if __name__ == "__main__":
    main()
