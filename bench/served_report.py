"""Tables and the timeline plot of the served adaptation benchmark."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

SETTLE_S = 1.0  # requests in a phase's first second are not scored


def _phase_requests(run: Any, i: int, settle: bool) -> list[tuple]:
    start = run.phase_t[i] + (SETTLE_S if settle else 0.0)
    end = run.phase_t[i + 1] if i + 1 < len(run.phase_t) else run.end_t
    return [r for r in run.requests if start <= r[0] < end]


def _stats(reqs: list[tuple], acc: dict[str, float], budget: float) -> dict[str, Any]:
    ok = [r for r in reqs if r[2] == 200]
    engine = np.array([r[4] for r in ok if not math.isnan(r[4])])
    client = np.array([r[1] for r in ok])
    return {
        "n": len(reqs),
        "failed": len(reqs) - len(ok),
        "engine_p99": float(np.percentile(engine, 99)) if len(engine) else float("nan"),
        "client_p99": float(np.percentile(client, 99)) if len(client) else float("nan"),
        "violations": float((engine > budget).mean() * 100) if len(engine) else float("nan"),
        "accuracy": float(np.mean([acc.get(r[3], 0.0) for r in ok])) if ok else float("nan"),
        "variants": sorted({r[3] for r in ok}),
    }


def reactions(run: Any, phases: Sequence[Any]) -> list[str]:
    """Per phase change: trigger -> first response from the engine the policy switched to."""
    rows = []
    for i in range(1, len(phases)):
        t0 = run.phase_t[i]
        end = run.phase_t[i + 1] if i + 1 < len(run.phase_t) else run.end_t
        events = [e for e in run.events if t0 - 0.05 <= e["t"] < end and not e.get("error")]
        if not events:
            rows.append(f"| {phases[i].name} | no switch needed | - | - |")
            continue
        first = events[0]
        served = [r[0] for r in run.requests if r[0] >= first["t"] and r[3] == first["to_variant"]]
        react = (served[0] - t0) * 1e3 if served else float("nan")
        swaps = ", ".join(
            f"{e['swap_ms']:.2f} ms{' (preloaded)' if e.get('preloaded') else ' (loaded)'}"
            for e in events
            if e.get("swap_ms") is not None
        )
        rows.append(
            f"| {phases[i].name} | {first['from_variant']} -> {first['to_variant']} "
            f"({len(events)} switch{'es' if len(events) > 1 else ''}) | {react:.0f} ms | {swaps} |"
        )
    return rows


def report(
    runs: Sequence[Any],
    phases: Sequence[Any],
    acc: dict[str, float],
    oracle: list[dict[str, Any]],
    budget: float,
    rate: float,
    plot: Path,
) -> str:
    lines = [
        f"Budget: engine p99 <= {budget} ms per request (the policy's latency budget); "
        f"load: {rate:.0f} PNG frames/s open-loop over HTTP from 4 client threads on the "
        f"same 2 cores; phases of {runs[0].phase_t[1] - runs[0].phase_t[0]:.0f} s, the first "
        f"{SETTLE_S:.0f} s of each not scored. Memory cut: {runs[0].memory_cut_mb} MB. "
        "Accuracy is the served variant's catalog top-1 (held-out split), averaged over "
        "requests.",
        "",
        "| phase | run | requests | failed | engine p99 ms | client p99 ms | over budget | "
        "served accuracy | variants |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    totals = {r.name: [0, 0] for r in runs}
    for i, phase in enumerate(phases):
        for run in runs:
            s = _stats(_phase_requests(run, i, settle=True), acc, budget)
            everything = _stats(_phase_requests(run, i, settle=False), acc, budget)
            totals[run.name][0] += everything["n"]
            totals[run.name][1] += everything["failed"]
            shown = ", ".join(s["variants"][:3]) + (" ..." if len(s["variants"]) > 3 else "")
            lines.append(
                f"| {phase.name} | {run.name} | {s['n']} | {everything['failed']} | "
                f"{s['engine_p99']:.3f} | {s['client_p99']:.2f} | {s['violations']:.1f}% | "
                f"{s['accuracy']:.4f} | {shown} |"
            )
        o = oracle[i]
        lines.append(
            f"| {phase.name} | oracle (measured) | - | - | {o['p99_ms']:.3f} | - | - | "
            f"{o['accuracy']:.4f} | {o['variant']} |"
        )
    lines += ["", "Failed requests over the whole run (every phase, unscored seconds included): "
              + ", ".join(f"{k} {v[1]} of {v[0]}" for k, v in totals.items()), ""]  # fmt: skip
    lines += [
        "Adaptive run, per phase change: reaction = from the trigger to the first response "
        "served by the engine the policy switched to; swap = the pool's swap time.",
        "",
        "| phase change | switch | reaction | swap |",
        "|---|---|---|---|",
        *reactions(runs[0], phases),
        "",
        f"![timeline]({plot.name})",
    ]
    timeline(runs, phases, acc, budget, plot)
    return "\n".join(lines)


def timeline(runs: Sequence[Any], phases: Sequence[Any], acc: dict[str, float], budget: float,
             path: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = runs[0]
    t0 = run.phase_t[0]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1.4]})  # fmt: skip
    ok = [r for r in run.requests if r[2] == 200 and r[0] >= t0 - 1]
    variants = sorted({r[3] for r in ok}, key=lambda v: -acc.get(v, 0))
    colors = plt.get_cmap("tab10")
    for k, v in enumerate(variants):
        pts = [(r[0] - t0, r[4]) for r in ok if r[3] == v]
        axes[0].scatter(*zip(*pts, strict=True), s=3, color=colors(k % 10),
                        label=f"{v} ({acc.get(v, 0):.3f})")  # fmt: skip
    axes[0].axhline(budget, color="red", lw=1.2, ls="--", label=f"budget {budget} ms")
    axes[0].set_ylabel("engine ms / request")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, loc="upper left", markerscale=3, ncol=2)
    axes[0].set_title("adaptive run: engine time of each request, by the variant that served it")
    for other in runs:
        pts = sorted((r[0] - other.phase_t[0], acc.get(r[3], np.nan)) for r in other.requests
                     if r[2] == 200)  # fmt: skip
        if pts:
            axes[1].plot(*zip(*pts, strict=True), lw=1, label=other.name, drawstyle="steps-post")
    axes[1].set_ylabel("served top-1")
    axes[1].legend(fontsize=7, loc="lower left")
    ctx = [(c["t"] - t0, c["context"]["cpu_load"], c["context"]["cpu_online"],
            (c.get("power_mode") or {}).get("name")) for c in run.contexts]  # fmt: skip
    if ctx:
        axes[2].plot([c[0] for c in ctx], [c[1] for c in ctx], lw=1, label="CPU load")
    axes[2].set_ylabel("CPU load")
    axes[2].set_ylim(0, 1.05)
    axes[2].set_xlabel("seconds")
    for ax in axes:
        for i, phase in enumerate(phases):
            start = run.phase_t[i] - t0
            ax.axvline(start, color="grey", lw=0.8)
            if ax is axes[2]:
                ax.text(start + 0.2, 0.9, phase.name, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
