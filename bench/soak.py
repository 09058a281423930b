"""A bounded soak: steady open-loop load on a real server while the served variant is
switched every ``--switch-s`` seconds; checks errors, memory, file descriptors and p99.

    edge-service build                 # engines/fashion (or --engines-dir DIR)
    python bench/soak.py [--minutes 10] [--rate 100] [--switch-s 30] [--window-s 30]

The server (``edge-service serve``, the linux monitor, a control token) takes PNG frames
of the Fashion-MNIST test set on POST /v1/infer at a fixed rate: request i is due at
t0 + i/rate whatever happened to the ones before (open loop), and its latency counts from
that due time, so a stalled server cannot hide its backlog. The first ``--warmup-s``
seconds are a warm-up: POST /v1/pin pins every variant of the catalog once, evenly spread,
so every engine (and its standby neighbours, EDGE_PRELOAD_MEMORY_MB) has been loaded and
its memory allocated at least once before anything is scored. After it, the next variant
(cycling) is pinned every ``--switch-s`` seconds; the pin is removed at the end. The
server's RSS, open fds and threads are read every ``--sample-s`` seconds (psutil).

Pass criteria (after the warm-up):
- no request answered with anything but 200 (and no transport error);
- RSS growth < 5%: the median RSS over the last window vs over the first window after the
  warm-up;
- no fd growth: the server's open fds once the client has closed its connections are no
  more than before the load started;
- stable p99: every window's client p99 (after the warm-up) <= 2x the median window p99.

Writes bench/out/soak.json and the "soak" section of bench/RESULTS.md; exits 1 on a fail.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from results import write_section
from server_proc import (
    CONTROL_TOKEN,
    ResourceSample,
    ResourceSampler,
    ServerProcess,
    percentile,
    png_frames,
    read_resources,
    wait_for_fds,
)

HERE = Path(__file__).resolve().parent
RSS_GROWTH_MAX_PCT = 5.0
P99_SPREAD_MAX = 2.0


class Request(NamedTuple):
    """One request of the load: when it was due, its latency from then, its outcome.
    (A tuple of plain values: the garbage collector stops tracking it, so tens of
    thousands of them do not lengthen the client's own GC pauses.)"""

    due: float  # seconds since t0
    latency_ms: float
    status: int  # HTTP status; 0 for a transport error or an unreadable 200
    variant: str
    server_ms: float  # the server's own time (timings.total_ms), NaN unless 200


@dataclass(frozen=True)
class Switch:
    """One POST /v1/pin."""

    t: float  # seconds since t0
    variant: str | None
    status: int
    ms: float


async def _one(client: httpx.AsyncClient, body: bytes, due: float, t0: float) -> Request:
    """Send one frame; its latency counts from its due time."""
    variant, server_ms = "-", float("nan")
    try:
        r = await client.post("/v1/infer", content=body, headers={"content-type": "image/png"})
        status = r.status_code
        if status == 200:
            doc = r.json()
            variant, server_ms = doc["variant"], float(doc["timings"]["total_ms"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        status = 0
    latency_ms = (time.monotonic() - t0 - due) * 1e3
    return Request(due, latency_ms, status, variant, server_ms)


async def open_loop(
    client: httpx.AsyncClient, frames: list[bytes], rate: float, seconds: float, t0: float
) -> list[Request]:
    """Request i due at t0 + i/rate, sent then whether or not earlier ones came back."""
    done: list[Request] = []
    pending: set[asyncio.Task[Request]] = set()

    def finished(task: asyncio.Task[Request]) -> None:
        pending.discard(task)
        done.append(task.result())

    for i in range(int(seconds * rate)):
        due = i / rate
        delay = t0 + due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one(client, frames[i % len(frames)], due, t0))
        pending.add(task)
        task.add_done_callback(finished)
    await asyncio.gather(*pending)
    return sorted(done)


async def pin(ctl: httpx.AsyncClient, variant: str | None, t0: float) -> Switch:
    """Pin ``variant`` in every power mode (None unpins)."""
    start = time.monotonic()
    r = await ctl.post("/v1/pin", json={"variant": variant, "power_mode": "*"})
    return Switch(start - t0, variant, r.status_code, (time.monotonic() - start) * 1e3)


def pin_schedule(
    variants: list[str], warmup_s: float, every_s: float, seconds: float
) -> list[tuple[float, str]]:
    """When to pin what: every variant once, evenly spread over the warm-up (so each engine
    has been loaded once before anything is scored), then the next one every ``every_s``."""
    times = [warmup_s * k / len(variants) for k in range(len(variants))] if warmup_s else []
    t = warmup_s
    while t < seconds:
        times.append(t)
        t += every_s
    return [(t, variants[k % len(variants)]) for k, t in enumerate(times)]


async def switcher(
    ctl: httpx.AsyncClient, schedule: list[tuple[float, str]], t0: float
) -> list[Switch]:
    """Pin each variant of ``schedule`` at its time (seconds after t0)."""
    switches = []
    for at, variant in schedule:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        switches.append(await pin(ctl, variant, t0))
    return switches


async def drive(
    url: str, frames: list[bytes], variants: list[str], args: argparse.Namespace, t0: float
) -> tuple[list[Request], list[Switch]]:
    """The load and the switches, side by side; the pin removed at the end."""
    limits = httpx.Limits(max_connections=args.connections)
    auth = {"authorization": f"Bearer {CONTROL_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client,
        httpx.AsyncClient(base_url=url, timeout=60, headers=auth) as ctl,
    ):
        seconds = args.minutes * 60
        requests, switches = await asyncio.gather(
            open_loop(client, frames, args.rate, seconds, t0),
            switcher(ctl, pin_schedule(variants, args.warmup_s, args.switch_s, seconds), t0),
        )
        switches.append(await pin(ctl, None, t0))
    return requests, switches


@dataclass(frozen=True)
class Window:
    """The requests due in one window of the run."""

    start_s: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_p99_ms: float  # the server's own time: tells its stalls from the client's


def windows(requests: list[Request], window_s: float, seconds: float) -> list[Window]:
    """Client latency per window of ``window_s`` seconds (by due time)."""
    out = []
    start = 0.0
    while start < seconds - 1e-9:
        inside = [r for r in requests if start <= r.due < start + window_s]
        lat = [r.latency_ms for r in inside]
        server = [r.server_ms for r in inside if r.status == 200]
        out.append(
            Window(
                start,
                len(inside),
                sum(r.status != 200 for r in inside),
                round(percentile(lat, 50), 3),
                round(percentile(lat, 99), 3),
                round(max(lat, default=float("nan")), 3),
                round(percentile(server, 99), 3),
            )
        )
        start += window_s
    return out


def median_of(samples: list[ResourceSample], field: str) -> float:
    """The median of one field over some readings (NaN for none)."""
    values = [float(getattr(s, field)) for s in samples]
    return statistics.median(values) if values else float("nan")


def resources(sampler: ResourceSampler, t0: float, args: argparse.Namespace) -> dict[str, float]:
    """RSS and fds over the first window after the warm-up and over the last window."""
    seconds = args.minutes * 60
    first = sampler.between(t0 + args.warmup_s, t0 + args.warmup_s + args.window_s)
    last = sampler.between(t0 + seconds - args.window_s, t0 + seconds)
    start_mb, end_mb = median_of(first, "rss_mb"), median_of(last, "rss_mb")
    return {
        "rss_start_mb": round(start_mb, 1),
        "rss_end_mb": round(end_mb, 1),
        "rss_growth_pct": round((end_mb - start_mb) / start_mb * 100, 2),
        "rss_max_mb": round(max(s.rss_mb for s in sampler.samples), 1),
        "rss_idle_before_mb": round(sampler.samples[0].rss_mb, 1),
        "fds_load_start": median_of(first, "fds"),
        "fds_load_end": median_of(last, "fds"),
        "threads_start": median_of(first, "threads"),
        "threads_end": median_of(last, "threads"),
    }


def verdict(summary: dict[str, Any], scored: list[Window]) -> dict[str, bool]:
    """Each pass criterion, met or not."""
    p99s = [w.p99_ms for w in scored]
    median_p99 = statistics.median(p99s) if p99s else float("nan")
    return {
        "zero errors": summary["errors"] == 0,
        f"RSS growth < {RSS_GROWTH_MAX_PCT:g}%": summary["rss_growth_pct"] < RSS_GROWTH_MAX_PCT,
        "no fd growth": summary["fds_idle_after"] <= summary["fds_idle_before"],
        f"max window p99 <= {P99_SPREAD_MAX:g}x median": bool(p99s)
        and max(p99s) <= P99_SPREAD_MAX * median_p99,
    }


def report(summary: dict[str, Any], wins: list[Window], checks: dict[str, bool]) -> str:
    """The RESULTS.md section's body."""
    s = summary
    lines = [
        f"Load: {s['rate']:g} PNG frames/s open-loop on POST /v1/infer for {s['seconds']:g} s "
        f"(latency from each request's due time). Warm-up {s['warmup_s']:g} s, in which "
        f"each of the {s['variants']} variants is pinned once (POST /v1/pin); then the next "
        f"one every {s['switch_s']:g} s. Server resources read every {s['sample_s']:g} s.",
        "",
        f"- requests: sent {s['sent']}, served (200) {s['served']}, errors {s['errors']} "
        f"(server counted {s['server_ok']} ok); pins {s['pins']} ({s['pins_scored']} after "
        f"the warm-up, unpin included), failed {s['pin_failures']}",
        f"- RSS: {s['rss_start_mb']} MB after the warm-up -> {s['rss_end_mb']} MB at the end "
        f"(**{s['rss_growth_pct']:+.2f}%**), max {s['rss_max_mb']} MB; "
        f"{s['rss_idle_before_mb']} MB before the load",
        f"- open fds: {s['fds_idle_before']} idle before -> {s['fds_idle_after']} idle after "
        f"(under load {s['fds_load_start']:g} -> {s['fds_load_end']:g}); threads "
        f"{s['threads_start']:g} -> {s['threads_end']:g}",
        f"- window p99 (after the warm-up): median {s['p99_median_ms']} ms, max "
        f"{s['p99_max_ms']} ms ({s['p99_spread']:.2f}x), min {s['p99_min_ms']} ms",
        f"- machine load average (1 min) at the start / end: {s['loadavg_start']:.2f} / "
        f"{s['loadavg_end']:.2f} on {os.cpu_count()} cores (the client shares them)",
        "",
        "| window start s | requests | errors | client p50 ms | client p99 ms | client max ms "
        "| server p99 ms |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {w.start_s:g} | {w.requests} | {w.errors} | {w.p50_ms} | {w.p99_ms} "
            f"| {w.max_ms} | {w.server_p99_ms} |"
            for w in wins
        ),
        "",
        "| criterion | met |",
        "|---|---|",
        *(f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in checks.items()),
        "",
        f"Result: **{'PASS' if all(checks.values()) else 'FAIL'}**",
    ]
    return "\n".join(lines)


def server_ok_count(url: str) -> int:
    """Requests the server itself counted as ``ok`` on /v1/infer (from /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        labels = line.partition("}")[0]
        if labels.startswith("edge_requests_total{") and 'status="ok"' in labels:
            total += float(line.rsplit(" ", 1)[1]) if 'endpoint="v1_infer"' in labels else 0
    return int(total)


def summarise(
    args: argparse.Namespace,
    requests: list[Request],
    switches: list[Switch],
    res: dict[str, float],
    fds: tuple[int, int],
    variants: int,
    server_ok: int,
) -> tuple[dict[str, Any], list[Window], dict[str, bool]]:
    """The figures, the windows and the verdict of one run."""
    seconds = args.minutes * 60
    wins = windows(requests, args.window_s, seconds)
    scored = [w for w in wins if w.start_s >= args.warmup_s] or wins
    p99s = [w.p99_ms for w in scored]
    summary: dict[str, Any] = {
        "rate": args.rate, "seconds": seconds, "switch_s": args.switch_s,
        "warmup_s": args.warmup_s, "window_s": args.window_s, "sample_s": args.sample_s,
        "variants": variants, "sent": len(requests),
        "served": sum(r.status == 200 for r in requests),
        "errors": sum(r.status != 200 for r in requests), "server_ok": server_ok,
        "pins": len(switches), "pin_failures": sum(s.status != 200 for s in switches),
        "pins_scored": sum(s.t >= args.warmup_s for s in switches),
        "fds_idle_before": fds[0], "fds_idle_after": fds[1],
        "p99_median_ms": round(statistics.median(p99s), 3), "p99_max_ms": max(p99s),
        "p99_min_ms": min(p99s), "p99_spread": max(p99s) / statistics.median(p99s),
        **res,
    }  # fmt: skip
    return summary, wins, verdict(summary, scored)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, soak it, stop it; every figure of the run."""
    frames = png_frames(500)
    gc.freeze()  # what the client set up stays out of its own GC's scans (and pauses)
    env = {
        "EDGE_ENGINES_DIR": str(args.engines_dir.resolve()), "EDGE_FAMILY": args.family,
        "EDGE_CONTROL_TOKEN": CONTROL_TOKEN, "EDGE_MONITOR_SOURCE": "linux",
    }  # fmt: skip
    with ServerProcess(env, args.out / "soak-server.log") as server:
        doc = httpx.get(f"{server.url}/v1/variants", timeout=30).json()
        variants = [v["id"] for v in doc["variants"]]
        sampler = ResourceSampler(server.pid, args.sample_s)
        fds_before = read_resources(sampler.proc).fds
        sampler.start()
        t0 = time.monotonic() + 0.5
        load = [os.getloadavg()[0]]
        requests, switches = asyncio.run(drive(server.url, frames, variants, args, t0))
        load.append(os.getloadavg()[0])
        fds_after = wait_for_fds(sampler.proc, fds_before)
        sampler.stop()
        res = resources(sampler, t0, args)
        server_ok = server_ok_count(server.url)
    summary, wins, checks = summarise(
        args, requests, switches, res, (fds_before, fds_after), len(variants), server_ok
    )
    summary["loadavg_start"], summary["loadavg_end"] = load
    return {
        "summary": summary,
        "checks": checks,
        "passed": all(checks.values()),
        "windows": [asdict(w) for w in wins],
        "slowest": [r._asdict() for r in sorted(requests, key=lambda r: -r.latency_ms)[:50]],
        "switches": [asdict(s) for s in switches],
        "samples": [asdict(s) | {"t": round(s.t - t0, 2)} for s in sampler.samples],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--switch-s", type=float, default=30.0, help="seconds between pins")
    parser.add_argument("--window-s", type=float, default=30.0, help="p99 window")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="not scored for RSS/p99")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS/fd sampling period")
    parser.add_argument("--connections", type=int, default=64, help="client connection pool")
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    if args.warmup_s + args.window_s > args.minutes * 60:
        parser.error("--minutes must leave at least one window after the warm-up")
    return args


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1))
    body = report(
        result["summary"],
        [Window(**w) for w in result["windows"]],
        result["checks"],
    )
    write_section("soak", "Soak: steady load with variant switches", body)
    print(body)
    raise SystemExit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
