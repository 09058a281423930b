"""INT8 vs FP32 ONNX Runtime latency of the default family, side by side.

    python bench/int8_vs_fp32.py [--engines-dir engines] [--family fashion]

Interleaved rounds (see edge_service/profile/compare.py) at batch 1 and 8, with one
intra-op thread and with all cores; writes the "int8_vs_fp32" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from results import write_section

from edge_service.profile.compare import compare_variants
from edge_service.repository import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    fam = args.engines_dir / args.family
    catalog = load_catalog(fam)
    acc = {v.id: v.accuracy.value for v in catalog.variants if v.accuracy}
    rows = [
        "| batch | threads | fp32 p50 ms | fp32 p99 ms | int8 p50 ms | int8 p99 ms | "
        "int8/fp32 (p50) |",
        "|---|---|---|---|---|---|---|",
    ]
    for batch in (1, 8):
        for threads in (1, 0):
            c = compare_variants(
                catalog, fam, batch=batch, threads=threads, rounds=args.rounds, runs=args.runs
            )
            rows.append(
                f"| {batch} | {threads or 'all'} | {c.p50_ms['base@fp32']:.3f} | "
                f"{c.p99_ms['base@fp32']:.3f} | {c.p50_ms['base@int8']:.3f} | "
                f"{c.p99_ms['base@int8']:.3f} | {c.ratio('base@int8', 'base@fp32'):.2f} |"
            )
            print(rows[-1])
    body = "\n".join(rows) + (
        f"\n\nAccuracy (test split, {catalog.variants[0].accuracy.examples} images): "
        + ", ".join(f"{k} {v:.4f}" for k, v in acc.items())
        + f"\n\n{args.rounds} interleaved rounds x {args.runs} timed runs each; the table "
        "shows the median over rounds of each round's p50 / p99. A ratio < 1 means INT8 is "
        "faster."
    )
    write_section("int8_vs_fp32", "INT8 vs FP32, ONNX Runtime CPU", body)


if __name__ == "__main__":
    main()
