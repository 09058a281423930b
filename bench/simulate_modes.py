"""The budget policy vs static baselines on a scripted power-mode trace, from real profiles.

    edge-service profile            # per-mode profiles of the built family (emulated modes)
    python bench/simulate_modes.py [--budget 0.15]

The trace: 30 s MAXN (2 cores), 30 s MIN (1 core), 30 s HALF, 30 s MAXN, one context a
second. Each strategy's choice is scored on its predicted p99 in that mode (no inference):
see edge_service/sim/replay.py. Writes the "simulate_modes" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from results import write_section

from edge_service.control.limits import Policy
from edge_service.control.predictor import Predictor
from edge_service.hostinfo import device_id
from edge_service.monitor.context import Context, PowerMode
from edge_service.repository import load_catalog
from edge_service.sim.replay import simulate
from edge_service.sim.report import notes

PHASES = [("MAXN", 0, 2), ("MIN", 2, 1), ("HALF", 1, 1), ("MAXN", 0, 2)]


def trace(seconds: int = 30) -> list[Context]:
    out = []
    for p, (name, mode_id, cores) in enumerate(PHASES):
        for s in range(seconds):
            out.append(
                Context(
                    t=float(p * seconds + s),
                    source="script",
                    cpu_online=cores,
                    cpu_load=0.3,
                    mem_available_mb=3000,
                    mem_total_mb=4000,
                    power_mode=PowerMode(mode_id, name),
                )
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--budget", type=float, default=0.15, help="p99 budget, ms")
    args = parser.parse_args()
    catalog = load_catalog(args.engines_dir / args.family)
    policy = Policy(latency_budget_ms=args.budget, cooldown_s=5.0)
    report = simulate(trace(), Predictor(catalog, device_id()), policy, catalog=catalog)
    rows = [
        "| strategy | SLO violations | mean top-1 | energy mJ/inference | switches "
        "| unpredictable |",
        "|---|---|---|---|---|---|",
    ]
    rows += ["| " + " | ".join(r.cells("estimated")) + " |" for r in report.strategies]
    body = "\n".join(rows) + (
        f"\n\nTrace: {' -> '.join(p[0] for p in PHASES)}, 30 contexts each; p99 budget "
        f"{args.budget} ms; profiles measured by `edge-service profile` in the emulated modes "
        "(MAXN = 2 cores, HALF and MIN = 1 core on this 2-core VM). Simulation on profiles "
        "only: the served-HTTP benchmark comes with the operator API."
    )
    body += "".join(f"\n\n{line}" for line in notes(report))
    print(body)
    write_section(
        "simulate_modes", "Policy vs baselines on a power-mode trace (simulated)", body
    )


if __name__ == "__main__":
    main()
