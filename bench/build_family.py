"""Building the default family: wall time, INT8-vs-FP32 accuracy of every kept variant, and
the base variant's INT8/FP32 ONNX Runtime speed-up at batch 1 and 8.

    python bench/build_family.py

Builds from scratch into a temp engine repository with a cold calibration cache (what
`make run` does on a fresh machine), then measures. Writes the "build_family" section of
bench/RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import write_section

from edge_service.profile.compare import compare_engines
from edge_service.repository import load_catalog, verified_artifact_path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engines = Path(tmp) / "engines"
        env_cache = Path(tmp) / "cache"
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_service",
                "build",
                "--engines-dir",
                str(engines),
                "--backend",
                "onnxruntime",
            ],
            check=True,
            env={"EDGE_CALIBRATION_CACHE": str(env_cache), "PATH": "/usr/bin:/bin"},
        )
        seconds = time.perf_counter() - started
        fam = engines / "fashion"
        catalog = load_catalog(fam)
        acc = {v.id: v.accuracy.value for v in catalog.variants if v.accuracy}
        rows = [
            "| variant | FP32 top-1 | INT8 top-1 | drop (pts) | calibration | drops tried |",
            "|---|---|---|---|---|---|",
        ]
        for v in catalog.variants:
            if v.precision != "int8" or v.calibration is None:
                continue
            fp32 = acc[v.id.replace("@int8", "@fp32")]
            tried = ", ".join(
                f"{k} {x * 100:+.2f}" for k, x in v.calibration.drop_by_method.items()
            )
            rows.append(
                f"| {v.variant_spec.family_key} | {fp32:.4f} | {acc[v.id]:.4f} | "
                f"{(fp32 - acc[v.id]) * 100:+.2f} | {v.calibration.method} | {tried} |"
            )
        items = [
            (v.id, verified_artifact_path(fam, v.artifact), v.precision)
            for v in catalog.variants
            if v.variant_spec.family_key == "base"
        ]
        speed = []
        for batch in (1, 8):
            c = compare_engines(items, batch=batch, threads=1, rounds=5, runs=200)
            speed.append(
                f"| {batch} | {c.p50_ms['base@fp32']:.4f} | {c.p50_ms['base@int8']:.4f} "
                f"| {c.p50_ms['base@fp32'] / c.p50_ms['base@int8']:.2f}x |"
            )
    body = (
        f"- build of all {len(catalog.variants) // 2} kept networks x (FP32, INT8), from scratch "
        f"(export, 3 calibration methods each, accuracy on 10k test images, latency): "
        f"**{seconds:.0f} s**\n\n"
        + "\n".join(rows)
        + "\n\nINT8 drops are on the 10,000 test images; the method was chosen on 2,000 held-out "
        "training images (the 'drops tried' column, in points; negative = INT8 better).\n\n"
        "| batch | base FP32 p50 ms | base INT8 p50 ms | INT8 speed-up |\n|---|---|---|---|\n"
        + "\n".join(speed)
        + "\n\nONNX Runtime CPU, 1 intra-op thread, 5 interleaved rounds x 200 runs."
    )
    print(body)
    write_section("build_family", "Building the default family", body)


if __name__ == "__main__":
    main()
