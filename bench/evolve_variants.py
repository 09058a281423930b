"""Accuracy and latency of every kept (evolved) variant vs the original base model.

    python bench/evolve_variants.py [--engines-dir engines] [--family fashion]

Needs the evolved family built (`edge-service build`, which builds every kept variant of
models/fashion/evolved.pt). The original base model (models/fashion/base.pt, before the
joint fine-tune) is built into a temp folder and measured in the same interleaved rounds
(ONNX Runtime, batch 1, one intra-op thread, so that ratios reflect compute, not
threading). Every network is built at both precisions; the variants the precision-aware
search kept (network + precision, from evolved.pt) are marked, and the front targets (gaps,
most accurate) are checked on them. Writes the "evolve_variants" section of
bench/RESULTS.md, with the issue's targets checked.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

from results import write_section

from edge_service.compile.family import build_family
from edge_service.compile.ort_builder import BuildRequest
from edge_service.config import REPO_ROOT, Settings
from edge_service.data.fashion import load_split
from edge_service.evolve.supernet import FORMAT
from edge_service.evolve.train import load_payload
from edge_service.profile.compare import compare_engines
from edge_service.repository import load_catalog, verified_artifact_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--family", default="fashion")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    fam = args.engines_dir / args.family
    catalog = load_catalog(fam)
    payload = load_payload(REPO_ROOT / "models" / args.family / "evolved.pt", FORMAT)
    kept_ids = {k["id"] for k in payload["meta"]["kept"]}
    tmpdir = tempfile.TemporaryDirectory()  # the base engines live until the end
    tmp = tmpdir.name
    base_dir = Path(tmp) / args.family
    build_family(
        BuildRequest(
            family_dir=base_dir,
            weights=REPO_ROOT / "models" / args.family / "base.pt",
            calibration_dir=REPO_ROOT / "calibration" / args.family,
            test_split=load_split(Settings().data_dir, "test"),
            evolved=None,
            profile_runs=10,
        ),
        progress=lambda _: None,
    )
    base_cat = load_catalog(base_dir)
    items = [
        (f"original {v.id}", verified_artifact_path(base_dir, v.artifact), v.precision)
        for v in base_cat.variants
    ]
    items += [
        (v.id, verified_artifact_path(fam, v.artifact), v.precision) for v in catalog.variants
    ]
    cmp = compare_engines(items, batch=1, threads=1, rounds=args.rounds, runs=args.runs)
    acc = {f"original {v.id}": v.accuracy.value for v in base_cat.variants if v.accuracy}
    acc |= {v.id: v.accuracy.value for v in catalog.variants if v.accuracy}
    ref = "original base@fp32"
    lines = [
        "| variant | kept by the search | test top-1 | vs base (pts) | p50 ms | p99 ms "
        "| speed-up vs base fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _, _ in items:
        mark = "**kept**" if name in kept_ids else ""
        lines.append(
            f"| {name} | {mark} | {acc[name]:.4f} | {(acc[name] - acc[ref]) * 100:+.2f} | "
            f"{cmp.p50_ms[name]:.4f} | {cmp.p99_ms[name]:.4f} | "
            f"{cmp.p50_ms[ref] / cmp.p50_ms[name]:.2f}x |"
        )
    fp32 = sorted(
        (v for v in catalog.variants if v.precision == "fp32"), key=lambda v: cmp.p50_ms[v.id]
    )
    fastest = fp32[0]
    fastest_int8 = min(
        (v for v in catalog.variants if v.precision == "int8"), key=lambda v: cmp.p50_ms[v.id]
    )
    kept = sorted((v for v in catalog.variants if v.id in kept_ids), key=lambda v: cmp.p50_ms[v.id])
    best = max(kept, key=lambda v: acc[v.id])
    gaps = [cmp.p50_ms[b.id] / cmp.p50_ms[a.id] for a, b in itertools.pairwise(kept)]
    checks = [
        (
            "fastest kept FP32 >= 3x faster than base FP32",
            f"{fastest.id}: {cmp.p50_ms[ref] / cmp.p50_ms[fastest.id]:.2f}x",
            cmp.p50_ms[ref] / cmp.p50_ms[fastest.id] >= 3,
        ),
        (
            "... with <= 4 points accuracy loss",
            f"{(acc[ref] - acc[fastest.id]) * 100:.2f} pts",
            acc[ref] - acc[fastest.id] <= 0.04,
        ),
        (
            "fastest kept INT8 >= 6x faster than base FP32",
            f"{fastest_int8.id}: {cmp.p50_ms[ref] / cmp.p50_ms[fastest_int8.id]:.2f}x",
            cmp.p50_ms[ref] / cmp.p50_ms[fastest_int8.id] >= 6,
        ),
        (
            "adjacent kept variants (the searched front, both precisions) within 1.6x latency",
            f"largest gap {max(gaps):.2f}x",
            max(gaps) <= 1.6,
        ),
        (
            "most accurate kept within 0.5 point of base",
            f"{best.id}: {(acc[best.id] - acc[ref]) * 100:+.2f} pts",
            acc[ref] - acc[best.id] <= 0.005,
        ),
    ]
    sub = [i for i in items if i[0] in {ref, fastest.id, fastest_int8.id}]
    b8 = compare_engines(sub, batch=8, threads=1, rounds=args.rounds, runs=args.runs // 3)
    checks.append(
        (
            "(same, at batch 8) fastest kept INT8 vs base FP32",
            f"{fastest_int8.id}: {b8.p50_ms[ref] / b8.p50_ms[fastest_int8.id]:.2f}x "
            f"(FP32 {b8.p50_ms[ref] / b8.p50_ms[fastest.id]:.2f}x)",
            b8.p50_ms[ref] / b8.p50_ms[fastest_int8.id] >= 6,
        )
    )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in checks]
    body = "\n".join(lines) + (
        f"\n\nTop-1 on all {base_cat.variants[0].accuracy.examples} test images; latency "
        f"median over {args.rounds} interleaved rounds x {args.runs} runs of each round's "
        "p50/p99, batch 1, 1 intra-op thread, ONNX Runtime CPU."
    )
    print(body)
    write_section("evolve_variants", "Evolved variants vs the base", body)
    tmpdir.cleanup()


if __name__ == "__main__":
    main()
