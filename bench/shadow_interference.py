"""Do shadow runs slow the served engine? Served engine times with and without a shadow run
going on, by intra-op thread count.

    python bench/shadow_interference.py [--seconds 12]

The real `MicroBatcher` and `EnginePool` over the built ONNX Runtime engines, without
HTTP: a served stream of single-frame calls of ``--served`` (Poisson arrivals, 50/s), and
a prober that keeps measuring ``--probe`` through `MicroBatcher.shadow` (26 calls spaced
15 ms, as the server's shadow runs are), once at each thread count. Each configuration
runs in its own process, so each starts from a fresh ONNX Runtime. Reported: the served
calls' p50, p99 and share over ``--budget-ms``, alone and while probing, and the probe's
own p50.

This is what `edge_service.control.factory.shadow_runs_are_safe` is decided on. Writes
the "shadow_interference" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from results import write_section

HERE = Path(__file__).resolve().parent


def run_one(args: argparse.Namespace) -> dict:
    """One configuration, in this process: served alone, then served while probing."""
    from edge_service.repository import load_catalog
    from edge_service.runtime.batcher import MicroBatcher
    from edge_service.runtime.loader import open_engine
    from edge_service.runtime.pool import EnginePool

    family = args.engines_dir / args.family
    catalog = load_catalog(family)
    pool = EnginePool(lambda vid: open_engine(catalog.variant(vid), family, args.threads))
    pool.activate(args.served)
    pool.preload([args.probe])
    batcher = MicroBatcher(pool, max_batch=1)
    rng = np.random.default_rng(0)
    x = {
        v: rng.standard_normal((1, 1, s, s)).astype(np.float32)
        for v in (args.served, args.probe)
        for s in [catalog.variant(v).variant_spec.input_size]
    }

    def serve() -> np.ndarray:
        times, end, arrivals = [], time.time() + args.seconds, np.random.default_rng(1)
        while time.time() < end:
            time.sleep(arrivals.exponential(1 / 50))
            times.append(batcher.submit(lambda vid: x[vid], 1).result().engine_ms)
        return np.array(times)

    out: dict = {"threads": args.threads}
    try:
        for probing in (False, True):
            stop, probe_ms = threading.Event(), []

            def prober(stop: threading.Event = stop, probe_ms: list = probe_ms) -> None:
                while not stop.is_set():
                    probe_ms.extend(batcher.shadow(args.probe, x[args.probe], 26, gap_s=0.015))
                    time.sleep(0.05)

            thread = threading.Thread(target=prober, daemon=True)
            if probing:
                thread.start()
            t = serve()
            stop.set()
            if probing:
                thread.join()
            out["probing" if probing else "alone"] = {
                "calls": len(t),
                "p50_ms": float(np.median(t)),
                "p99_ms": float(np.percentile(t, 99)),
                "over_pct": float(np.mean(t > args.budget_ms) * 100),
                "probe_p50_ms": float(np.median(probe_ms)) if probe_ms else None,
            }
    finally:
        batcher.close()
        pool.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--served", default="p50-p50-lr25@int8")
    parser.add_argument("--probe", default="base@int8")
    parser.add_argument("--budget-ms", type=float, default=1.25)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.threads = args.threads[0]
        print(json.dumps(run_one(args)))
        return
    rows = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--one", "--threads", str(threads)]
        cmd += ["--engines-dir", str(args.engines_dir), "--family", args.family]
        cmd += ["--served", args.served, "--probe", args.probe]
        cmd += ["--budget-ms", str(args.budget_ms), "--seconds", str(args.seconds)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    lines = [
        f"Served `{args.served}` (single frames, 50/s) while `{args.probe}` is measured by "
        f"shadow runs (26 calls 15 ms apart, again and again), against the served calls "
        f"alone; budget {args.budget_ms} ms.",
        "",
        "| threads per engine | served | calls | p50 | p99 | over budget | probe p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for key in ("alone", "probing"):
            r = row[key]
            probe = f"{r['probe_p50_ms']:.3f} ms" if r["probe_p50_ms"] else "-"
            lines.append(
                f"| {row['threads']} | {key} | {r['calls']} | {r['p50_ms']:.3f} ms "
                f"| {r['p99_ms']:.3f} ms | {r['over_pct']:.2f}% | {probe} |"
            )
    write_section("shadow_interference", "Shadow runs and the served engine", "\n".join(lines))


if __name__ == "__main__":
    main()
