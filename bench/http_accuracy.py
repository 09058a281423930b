"""Accuracy and latency as a client sees them: post every Fashion-MNIST test image as a
PNG to a running server's /v1/infer.

    make run &   # or: edge-service serve
    python bench/http_accuracy.py [--url http://127.0.0.1:8080] [--limit 0]

Writes the "http_accuracy" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import io
import time

import httpx
import numpy as np
from PIL import Image
from results import write_section

from edge_service.config import Settings
from edge_service.data.fashion import LABELS, load_split


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--limit", type=int, default=0, help="0 = all 10,000")
    args = parser.parse_args()
    split = load_split(Settings().data_dir, "test")
    if args.limit:
        split = split.subset(args.limit)
    correct, total_ms, engine_ms = 0, [], []
    variants: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=args.url, timeout=10) as client:
        for img, label in zip(split.images, split.labels, strict=True):
            start = time.perf_counter()
            r = client.post("/v1/infer", content=_png(img), headers={"content-type": "image/png"})
            total_ms.append((time.perf_counter() - start) * 1e3)
            r.raise_for_status()
            body = r.json()
            correct += body["predictions"][0]["label"] == LABELS[label]
            engine_ms.append(body["timings"]["engine_ms"])
            variants[body["variant"]] += 1
    acc = correct / len(split)
    body = (
        f"- images: {len(split)} test PNGs, one request each, sequential\n"
        f"- top-1 over HTTP: **{acc:.4f}** ({correct}/{len(split)})\n"
        f"- served by: {dict(variants)}\n"
        f"- client round trip p50 / p99: {np.percentile(total_ms, 50):.2f} / "
        f"{np.percentile(total_ms, 99):.2f} ms; engine p50 {np.percentile(engine_ms, 50):.3f} ms"
    )
    print(body)
    write_section("http_accuracy", "Fashion-MNIST test set over HTTP", body)


if __name__ == "__main__":
    main()
