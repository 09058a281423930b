"""What the HTTP service adds to an engine call: `/v1/infer` overhead and throughput.

A real ``edge-service serve`` (`server_proc.ServerProcess`) serves the embedded family with
one variant pinned (default ``base@fp32``, so the engine does the same work in every run);
closed-loop clients post Fashion-MNIST PNG frames, one at a time each, for ``--seconds`` at
each concurrency. Reported per concurrency:

- throughput: responses a second (all 200);
- client latency p50 / p99;
- server overhead p50: the response's ``total_ms`` minus ``engine_ms`` (decode, resize,
  queue wait, encode; the engine call excluded), so a change to the service's wiring shows
  even when the engine's time varies.

Run it before and after a change to the server's structure, on the same machine:

    python bench/http_overhead.py --label before
    python bench/http_overhead.py --label after

Each run adds its rows to bench/out/http_overhead.json; the RESULTS.md section shows every
label measured on this device side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import threading
import time
from pathlib import Path

import httpx
from results import write_section
from server_proc import CONTROL_TOKEN, ServerProcess, percentile, png_frames

from edge_service.device import current

HERE = Path(__file__).resolve().parent


def closed_loop(url: str, frames: list[bytes], clients: int, seconds: float) -> dict:
    """``clients`` threads posting frames back to back for ``seconds``."""
    lat: list[float] = []
    overhead: list[float] = []
    failed = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        nonlocal failed
        mine_lat, mine_ovh, mine_failed, i = [], [], 0, k
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.perf_counter() < stop_at:
                body = frames[i % len(frames)]
                i += clients
                sent = time.perf_counter()
                r = http.post("/v1/infer", content=body)
                took = (time.perf_counter() - sent) * 1e3
                if r.status_code != 200:
                    mine_failed += 1
                    continue
                timings = r.json()["timings"]
                mine_lat.append(took)
                mine_ovh.append(timings["total_ms"] - timings["engine_ms"])
        with lock:
            lat.extend(mine_lat)
            overhead.extend(mine_ovh)
            failed += mine_failed

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {
        "clients": clients,
        "responses": len(lat),
        "failed": failed,
        "throughput_rps": len(lat) / elapsed,
        "latency_p50_ms": percentile(lat, 50),
        "latency_p99_ms": percentile(lat, 99),
        "overhead_p50_ms": percentile(overhead, 50),
    }


def measure(args: argparse.Namespace, frames: list[bytes]) -> list[dict]:
    env = {
        "EDGE_ENGINES_DIR": str(args.engines_dir),
        "EDGE_CONTROL_TOKEN": CONTROL_TOKEN,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with ServerProcess(env, args.out / f"http-overhead-{args.label}.log") as server:
        ctl = httpx.Client(
            base_url=server.url, timeout=30, headers={"authorization": f"Bearer {CONTROL_TOKEN}"}
        )
        ctl.post("/v1/pin", json={"variant": args.variant}).raise_for_status()
        closed_loop(server.url, frames, 1, 2.0)  # warm: caches, allocator, connections
        rows = []
        for clients in args.clients:
            row = closed_loop(server.url, frames, clients, args.seconds)
            print(json.dumps(row), flush=True)
            rows.append(row)
        ctl.close()
    return rows


def report(doc: dict, device: str) -> str:
    lines = [
        "Closed loop, Fashion-MNIST PNG frames, one variant pinned; server overhead = the "
        "response's `total_ms` - `engine_ms`. Every label measured on this device:",
        "",
        "| label | date | variant | clients | throughput | latency p50 | latency p99 "
        "| server overhead p50 | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in doc["runs"]:
        if run["device"] != device:
            continue
        for row in run["rows"]:
            lines.append(
                f"| {run['label']} | {run['date']} | {run['variant']} | {row['clients']} "
                f"| {row['throughput_rps']:.0f}/s | {row['latency_p50_ms']:.2f} ms "
                f"| {row['latency_p99_ms']:.2f} ms | {row['overhead_p50_ms']:.3f} ms "
                f"| {row['failed']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="e.g. before / after")
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--variant", default="base@fp32")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()

    frames = png_frames(500)
    rows = measure(args, frames)
    device = current().id
    path = args.out / "http_overhead.json"
    doc = json.loads(path.read_text()) if path.exists() else {"runs": []}
    doc["runs"].append(
        {
            "label": args.label,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": device,
            "variant": args.variant,
            "python": platform.python_version(),
            "rows": rows,
        }
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    write_section(f"http_overhead {device}", f"HTTP overhead: {device}", report(doc, device))
    print(f"wrote {path} and bench/RESULTS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
