"""Overload: many clients far beyond capacity against a server with a small request queue;
it must shed the excess (503 + Retry-After), keep its memory and queue bounded, and serve
again as soon as the load drops.

    edge-service build                 # engines/fashion (or --engines-dir DIR)
    python bench/overload.py [--seconds 20] [--processes 4] [--connections 16] [--queue-max 4]
    python bench/overload.py --frame-side 2048 --connections 50   # big frames: memory

``--processes`` client processes each run ``--connections`` closed-loop clients that post
Fashion-MNIST PNG frames (or, with ``--frame-side N``, raw N x N gray frames) to
POST /v1/infer back to back and ignore Retry-After (the worst clients there are), against
``edge-service serve`` with EDGE_QUEUE_MAX=``--queue-max`` (and EDGE_MAX_INFLIGHT=
``--max-inflight`` when given). A 503 comes from the engine queue or, before the body is
kept, from the cap on inference requests in the server; the report counts both.
Meanwhile the server's RSS and fds are read every 0.25 s and its queue depth polled on
/v1/status. When the load stops, one fresh client posts frames one after another: the
recovery time is from the load's stop to its first 200.

Pass criteria:
- the load is beyond capacity: some requests are refused with 503;
- every 503 carries ``Retry-After`` (whole seconds >= 1) and the JSON reason ``overloaded``;
- nothing but 200 and 503 (no transport error, no 500);
- the queue depth seen on /v1/status never passes the limit;
- RSS bounded: with the test PNGs, the median over the last third of the overload <=
  1.05x the first third's; with big frames, the peak <= the RSS before + EDGE_MAX_INFLIGHT
  x 3 x the frame's bytes (body, its join, decoded frame) + 64 MB, whatever the clients;
- recovery: the first 200 within 1 s of the load stopping, then 50 more in a row;
- the server's open fds, once the clients are gone, no more than before the load.

Writes bench/out/overload.json and the "overload" section of bench/RESULTS.md (with
``--frame-side``: "overload_big_frames"); exits 1 on a fail.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from results import write_section
from server_proc import (
    ResourceSampler,
    ServerProcess,
    percentile,
    png_frames,
    read_resources,
    wait_for_fds,
)

from edge_service.config import Settings

HERE = Path(__file__).resolve().parent
RSS_TREND_MAX = 1.05
RSS_SLACK_MB = 64.0
RECOVERY_MAX_MS = 1000.0
RECOVERY_RUN = 50


@dataclass
class Tally:
    """What one client process saw."""

    counts: dict[str, int] = field(default_factory=dict)  # HTTP status (0: transport error)
    retry_after: dict[str, int] = field(default_factory=dict)  # Retry-After value -> 503s
    bad_503: int = 0  # 503s without Retry-After >= 1 or without the "overloaded" reason
    refused_by: dict[str, int] = field(default_factory=dict)  # "queue", "inflight", "other"
    ok_ms: list[float] = field(default_factory=list)
    rejected_ms: list[float] = field(default_factory=list)

    def record(self, r: httpx.Response | None, ms: float) -> None:
        """Count one response (None: a transport error)."""
        status = str(r.status_code if r is not None else 0)
        self.counts[status] = self.counts.get(status, 0) + 1
        if r is not None and r.status_code == 200:
            self.ok_ms.append(ms)
        elif r is not None and r.status_code == 503:
            self.rejected_ms.append(ms)
            self._check_503(r)

    def _check_503(self, r: httpx.Response) -> None:
        after = r.headers.get("retry-after", "")
        self.retry_after[after] = self.retry_after.get(after, 0) + 1
        try:
            doc = r.json()
        except ValueError:
            doc = {}
        reason, detail = doc.get("error"), str(doc.get("detail", ""))
        by = "queue" if "queue limit" in detail else "inflight" if "INFLIGHT" in detail else "other"
        self.refused_by[by] = self.refused_by.get(by, 0) + 1
        if not (after.isdigit() and int(after) >= 1 and reason == "overloaded"):
            self.bad_503 += 1


@dataclass(frozen=True)
class Load:
    """What the clients post: the request path and the bodies they take turns with."""

    path: str
    frames: list[bytes]


def make_load(frame_side: int) -> Load:
    """Test-set PNGs, or (``frame_side`` > 0) random raw gray frames of that side."""
    if not frame_side:
        return Load("/v1/infer", png_frames(200))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (frame_side, frame_side), np.uint8).tobytes() for _ in "ab"]
    return Load(f"/v1/infer?width={frame_side}&height={frame_side}", frames)


async def _client(
    client: httpx.AsyncClient, load: Load, k: int, stop_at: float, tally: Tally
) -> None:
    """Post frames back to back until ``stop_at`` (time.time()), ignoring Retry-After."""
    i = k
    while time.time() < stop_at:
        start = time.perf_counter()
        try:
            r: httpx.Response | None = await client.post(
                load.path, content=load.frames[i % len(load.frames)]
            )
        except httpx.HTTPError:
            r = None
        tally.record(r, (time.perf_counter() - start) * 1e3)
        i += 1


async def _hammer(url: str, load: Load, connections: int, stop_at: float) -> Tally:
    tally = Tally()
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(
            *(_client(client, load, k, stop_at, tally) for k in range(connections))
        )
    return tally


def worker(url: str, load: Load, connections: int, ready: Queue[Any],
           go: Event, stop_at: Synchronized[float], out: Queue[Any]) -> None:  # fmt: skip
    """One client process: say ready, wait for the start, hammer, report its Tally."""
    ready.put(1)
    go.wait()
    out.put(asdict(asyncio.run(_hammer(url, load, connections, stop_at.value))))


def merge(tallies: list[dict[str, Any]]) -> Tally:
    """The client processes' tallies as one."""
    total = Tally()
    for t in tallies:
        for key in ("counts", "retry_after", "refused_by"):
            merged = collections.Counter(getattr(total, key)) + collections.Counter(t[key])
            setattr(total, key, dict(merged))
        total.bad_503 += t["bad_503"]
        total.ok_ms += t["ok_ms"]
        total.rejected_ms += t["rejected_ms"]
    return total


class QueuePoller:
    """Polls /v1/status for the queue depth in a thread; keeps the largest seen."""

    def __init__(self, url: str, period_s: float = 0.1) -> None:
        self.url, self.period_s = url, period_s
        self.depths: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-poller", daemon=True)

    def __enter__(self) -> QueuePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.wait(self.period_s):
                try:
                    self.depths.append(int(client.get("/v1/status").json()["queue_depth"]))
                except (httpx.HTTPError, ValueError, KeyError):
                    continue


def recover(url: str, load: Load, stop_at: float) -> dict[str, float]:
    """From the load's stop: post one frame at a time until the first 200 (then
    RECOVERY_RUN more); how long it took and what came back before."""
    wait = stop_at - time.time()
    if wait > 0:
        time.sleep(wait)
    refused, in_a_row, first_ok = 0, 0, float("nan")
    with httpx.Client(base_url=url, timeout=30) as client:
        while in_a_row <= RECOVERY_RUN and time.time() < stop_at + 30:
            ok = client.post(load.path, content=load.frames[0]).status_code == 200
            if ok and in_a_row == 0:
                first_ok = time.time()
            in_a_row = in_a_row + 1 if ok else 0
            refused += not ok
    return {
        "recovery_ms": round((first_ok - stop_at) * 1e3, 1),
        "refused_after_stop": refused,
        "in_a_row": in_a_row,
    }


def run_clients(
    url: str, load: Load, args: argparse.Namespace
) -> tuple[Tally, dict[str, float], list[int], tuple[float, float]]:
    """Start the client processes together, let them run, measure the recovery; also
    the queue depths seen and the overload's (monotonic) start and stop."""
    ctx = mp.get_context("spawn")  # no fork of a process that holds threads
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    stop_at = ctx.Value("d", 0.0)
    procs = [
        ctx.Process(target=worker, args=(url, load, args.connections, ready, go, stop_at, out))
        for _ in range(args.processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    with QueuePoller(url) as poller:
        start = time.monotonic()
        stop_at.value = time.time() + args.seconds
        go.set()
        recovery = recover(url, load, stop_at.value)
        tallies = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return merge(tallies), recovery, poller.depths, (start, start + args.seconds)


def rss_trend(sampler: ResourceSampler, window: tuple[float, float]) -> dict[str, float]:
    """Median RSS over the first and last thirds of the overload (monotonic window)."""
    start, stop = window
    third = (stop - start) / 3
    first = [s.rss_mb for s in sampler.between(start, start + third)]
    last = [s.rss_mb for s in sampler.between(stop - third, stop)]
    during = sampler.between(start, stop)
    return {
        "rss_first_third_mb": round(statistics.median(first), 1),
        "rss_last_third_mb": round(statistics.median(last), 1),
        "rss_peak_mb": round(max(s.rss_mb for s in during), 1),
        "fds_peak": max(s.fds for s in during),
    }


def setup(args: argparse.Namespace, load: Load) -> dict[str, Any]:
    """The run's settings, as the report names them."""
    side, frame_bytes = args.frame_side, len(load.frames[0]) if args.frame_side else 0
    return {
        "seconds": args.seconds, "clients": args.processes * args.connections,
        "processes": args.processes, "queue_max": args.queue_max,
        "max_inflight": args.max_inflight or Settings.model_fields["max_inflight"].default,
        "frame_bytes": frame_bytes,
        "frames": f"raw {side}x{side} gray frames ({frame_bytes} bytes)"
        if side else "Fashion-MNIST test PNGs",
    }  # fmt: skip


def overload(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, warm it, overload it, watch it recover; every figure."""
    load = make_load(args.frame_side)
    env = {
        "EDGE_ENGINES_DIR": str(args.engines_dir.resolve()), "EDGE_FAMILY": args.family,
        "EDGE_QUEUE_MAX": str(args.queue_max), "EDGE_MONITOR_SOURCE": "linux",
    }  # fmt: skip
    if args.max_inflight:
        env["EDGE_MAX_INFLIGHT"] = str(args.max_inflight)
    with ServerProcess(env, args.out / "overload-server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for body in load.frames * 10:  # warm: every code path taken
                client.post(load.path, content=body).raise_for_status()
        sampler = ResourceSampler(server.pid, 0.25)
        before = read_resources(sampler.proc)
        sampler.start()
        tally, recovery, depths, window = run_clients(server.url, load, args)
        fds_after = wait_for_fds(sampler.proc, before.fds)
        sampler.stop()
        after = read_resources(sampler.proc)
        measured = {
            "rss_before_mb": round(before.rss_mb, 1), "rss_after_mb": round(after.rss_mb, 1),
            "fds_before": before.fds, "fds_after": fds_after,
            "queue_depth_max": max(depths, default=0), "queue_polls": len(depths),
            "server_refused": refused_count(server.url), **rss_trend(sampler, window),
            **recovery,
        }  # fmt: skip
    return {"figures": setup(args, load) | measured, "tally": tally}


def refused_count(url: str) -> int:
    """Requests the server counted as ``overloaded`` (from /metrics)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        labels = line.partition("}")[0]
        if labels.startswith("edge_requests_total{") and 'status="overloaded"' in labels:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def rss_check(f: dict[str, Any]) -> dict[str, bool]:
    """Small frames: no RSS growth under sustained overload. Big frames (where the
    allocator takes longer to settle): the peak within what the cap allows, each request
    in the server holding its body, the body's join and its decoded frame."""
    if not f["frame_bytes"]:
        name = f"RSS last third <= {RSS_TREND_MAX:g}x first third"
        return {name: f["rss_last_third_mb"] <= RSS_TREND_MAX * f["rss_first_third_mb"]}
    bound = rss_bound_mb(f)
    name = f"RSS peak <= before + EDGE_MAX_INFLIGHT x 3 x frame + {RSS_SLACK_MB:g} MB"
    return {f"{name} ({bound:.0f} MB)": f["rss_peak_mb"] <= bound}


def rss_bound_mb(f: dict[str, Any]) -> float:
    """What the cap allows: RSS before + max_inflight x 3 x frame bytes + slack, in MB."""
    held = f["max_inflight"] * 3 * f["frame_bytes"] / 2**20
    return float(f["rss_before_mb"] + held + RSS_SLACK_MB)


def verdict(f: dict[str, Any], t: Tally) -> dict[str, bool]:
    """Each pass criterion, met or not."""
    others = {s: n for s, n in t.counts.items() if s not in ("200", "503")}
    return {
        "some requests refused with 503 (beyond capacity)": t.counts.get("503", 0) > 0,
        "every 503 has Retry-After >= 1 s and reason 'overloaded'": t.bad_503 == 0,
        "nothing but 200 and 503": not others,
        "queue depth never over the limit": f["queue_depth_max"] <= f["queue_max"],
        **rss_check(f),
        f"first 200 within {RECOVERY_MAX_MS:g} ms, then {RECOVERY_RUN} in a row": (
            f["recovery_ms"] <= RECOVERY_MAX_MS and f["in_a_row"] > RECOVERY_RUN
        ),
        "no fd growth once the clients are gone": f["fds_after"] <= f["fds_before"],
    }


def report(f: dict[str, Any], t: Tally, checks: dict[str, bool]) -> str:
    """The RESULTS.md section's body."""
    sent = sum(t.counts.values())
    ok, refused = t.counts.get("200", 0), t.counts.get("503", 0)
    lines = [
        f"Load: {f['clients']} closed-loop clients ({f['processes']} processes) posting "
        f"{f['frames']} to POST /v1/infer back to back for {f['seconds']:g} s, ignoring "
        f"Retry-After; server with EDGE_QUEUE_MAX={f['queue_max']} and EDGE_MAX_INFLIGHT="
        f"{f['max_inflight']}, on the same cores as the clients.",
        "",
        f"- requests: {sent} ({sent / f['seconds']:.0f}/s): 200 **{ok}**, 503 **{refused}** "
        f"({refused / max(sent, 1):.1%}; the server counted {f['server_refused']}), other "
        f"{ {s: n for s, n in t.counts.items() if s not in ('200', '503')} or 'none' }",
        f"- refused by: {t.refused_by or 'none'} (queue: the engine queue was full; inflight: "
        f"EDGE_MAX_INFLIGHT requests were in the server)",
        f"- Retry-After values on the 503s: {t.retry_after}; 503s without it or without the "
        f"reason: {t.bad_503}",
        f"- client latency p50 / p99: 200 {percentile(t.ok_ms, 50):.1f} / "
        f"{percentile(t.ok_ms, 99):.1f} ms; 503 {percentile(t.rejected_ms, 50):.1f} / "
        f"{percentile(t.rejected_ms, 99):.1f} ms",
        f"- queue depth on /v1/status: max {f['queue_depth_max']} of {f['queue_max']} "
        f"({f['queue_polls']} polls)",
        f"- RSS: {f['rss_before_mb']} MB before; first / last third of the overload "
        f"{f['rss_first_third_mb']} / {f['rss_last_third_mb']} MB (peak {f['rss_peak_mb']}); "
        f"{f['rss_after_mb']} MB after",
        f"- open fds: {f['fds_before']} before, peak {f['fds_peak']}, {f['fds_after']} after",
        f"- recovery: first 200 **{f['recovery_ms']} ms** after the load stopped "
        f"({f['refused_after_stop']} refused before it), then {f['in_a_row'] - 1} more in a row",
        "",
        "| criterion | met |",
        "|---|---|",
        *(f"| {name} | {'yes' if met else '**no**'} |" for name, met in checks.items()),
        "",
        f"Result: **{'PASS' if all(checks.values()) else 'FAIL'}**",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="overload duration")
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--connections", type=int, default=16, help="clients per process")
    parser.add_argument("--queue-max", type=int, default=4, help="the server's EDGE_QUEUE_MAX")
    parser.add_argument(
        "--max-inflight", type=int, default=0, help="the server's EDGE_MAX_INFLIGHT (0: default)"
    )
    parser.add_argument(
        "--frame-side", type=int, default=0, help="post raw N x N gray frames (0: test PNGs)"
    )
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = overload(args)
    figures, tally = result["figures"], result["tally"]
    checks = verdict(figures, tally)
    doc = {"figures": figures, "checks": checks, "passed": all(checks.values())}
    doc["counts"], doc["retry_after"] = tally.counts, tally.retry_after
    stem = "overload_big_frames" if args.frame_side else "overload"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    body = report(figures, tally, checks)
    if args.frame_side:
        name, title = "overload_big_frames", "Overload with big frames: memory stays bounded"
    else:
        name, title = "overload", "Overload: shedding, bounded memory and recovery"
    write_section(name, title, body)
    print(body)
    raise SystemExit(0 if doc["passed"] else 1)


if __name__ == "__main__":
    main()
