"""A roadside family from one dynamic-shape YOLOv8 file, on real street frames.

    python bench/roadside_family.py [--onnx examples/roadside/roadside-yolov8n.onnx]
        [--sizes 640,512,416,352,320] [--seconds 15]

1. Frames from Debian opencv-doc's vtest.avi (pedestrians), decoded by OpenCV through
   ``edge-service frames``: calibration frames from the first 80% of the video, evaluation
   frames from the last 20% (the part the demo detector was not trained on).
2. ``edge-service build --from-onnx ... --input-size SIZES``: one network per size, FP32
   and INT8, scored by agreement with the reference (the largest size at FP32) on the
   evaluation frames, gated.
3. Per variant: status, agreement mAP@0.5, profiled batch-1 p50, speedup over the
   reference; the fastest servable variant within 5 points of the reference's agreement.
4. Frames per second served by ``edge-service serve`` over HTTP (JPEG frames, closed loop,
   one variant pinned) at 1 and 4 clients, for the reference and that fastest variant.
5. One evaluation frame with the boxes `/v1/infer` answered drawn on it
   (docs/roadside_boxes.jpg).

Writes the "roadside_family" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import httpx
from http_overhead import closed_loop
from PIL import Image, ImageDraw
from results import write_section
from server_proc import CONTROL_TOKEN, ServerProcess

from edge_service.repository import Catalog, Variant, load_catalog

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
FAMILY = "roadside"
CLI = [sys.executable, "-m", "edge_service"]


def run(*args: str) -> str:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"edge-service {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def extract(video: Path, work: Path) -> tuple[Path, Path]:
    """Calibration frames (first 80%) and evaluation frames (last 20%), as JPEG."""
    calib, evals = work / "calibration", work / "evaluation"
    if not calib.is_dir():
        run("frames", str(video), "--out", str(calib), "--every", "10", "--limit", "64",
            "--format", "jpg")  # fmt: skip
    if not evals.is_dir():
        run("frames", str(video), "--out", str(evals), "--start", "640", "--every", "3",
            "--limit", "50", "--format", "jpg")  # fmt: skip
    return calib, evals


def build(args: argparse.Namespace, calib: Path, evals: Path) -> Catalog:
    labels = args.onnx.parent / "labels.txt"
    run(
        "build", "--from-onnx", str(args.onnx), "--family", FAMILY, "--task", "detection",
        "--labels", str(labels), "--input-size", args.sizes, "--calibration-images",
        str(calib), "--eval-images", str(evals), "--engines-dir", str(args.engines_dir),
    )  # fmt: skip
    return load_catalog(args.engines_dir / FAMILY)


def p50(v: Variant, device: str) -> float:
    profile = v.profile_for(device, "default")
    ms = profile.latency_ms(1) if profile else None
    return ms if ms is not None else float("inf")


def fastest_close(catalog: Catalog, device: str, ref: Variant, points: float) -> Variant:
    """The fastest servable variant whose agreement is within ``points`` of the reference."""
    assert ref.accuracy is not None
    floor = ref.accuracy.value - points / 100
    close = [
        v for v in catalog.variants if v.servable and v.accuracy and v.accuracy.value >= floor
    ]
    return min(close, key=lambda v: p50(v, device))


def served_fps(args: argparse.Namespace, ids: list[str], frames: list[bytes]) -> dict:
    env = {
        "EDGE_ENGINES_DIR": str(args.engines_dir),
        "EDGE_FAMILY": FAMILY,
        "EDGE_CONTROL_TOKEN": CONTROL_TOKEN,
        "EDGE_MAX_BODY_BYTES": str(4 << 20),
    }
    out: dict[str, dict[int, dict]] = {}
    with ServerProcess(env, args.out / "roadside-serve.log") as server:
        ctl = httpx.Client(
            base_url=server.url, timeout=60, headers={"authorization": f"Bearer {CONTROL_TOKEN}"}
        )
        for vid in ids:
            ctl.post("/v1/pin", json={"variant": vid}).raise_for_status()
            closed_loop(server.url, frames, 1, 2.0)  # warm
            out[vid] = {c: closed_loop(server.url, frames, c, args.seconds) for c in (1, 4)}
            print(vid, json.dumps(out[vid]), flush=True)
        ctl.post("/v1/pin", json={"variant": ids[0]}).raise_for_status()
        draw_boxes(server.url, frames[len(frames) // 2], ROOT / "docs" / "roadside_boxes.jpg")
        ctl.close()
    return out


def draw_boxes(url: str, frame: bytes, path: Path) -> None:
    """Post ``frame`` to /v1/infer and draw the answered boxes on it."""
    import io

    body = httpx.post(f"{url}/v1/infer", content=frame, timeout=60).json()
    img = Image.open(io.BytesIO(frame)).convert("RGB")
    pen = ImageDraw.Draw(img)
    for d in body["detections"]:
        pen.rectangle(d["box"], outline=(255, 40, 40), width=2)
        pen.text((d["box"][0] + 2, d["box"][1] + 1), f"{d['label']} {d['score']:.2f}",
                 fill=(255, 255, 0))  # fmt: skip
    pen.text((6, 6), f"{body['variant']}: {len(body['detections'])} detections",
             fill=(255, 255, 255))  # fmt: skip
    img.save(path, "JPEG", quality=85)
    print(f"wrote {path} ({len(body['detections'])} boxes from {body['variant']})")


def report(catalog: Catalog, device: str, ref: Variant, best: Variant, fps: dict) -> str:
    lines = [
        f"Source: `{catalog.build['networks']['files'][0]}` (dynamic batch, height and width), "
        f"sizes {catalog.build['networks']['input_sizes']}; agreement = mAP@0.5 against "
        f"`{ref.id}` on {catalog.build['evaluation']['frames']} held-out vtest.avi frames "
        "(reference boxes scoring >= 0.25). p50: the build's profile, batch 1.",
        "",
        "| variant | status | agreement mAP@0.5 | p50 | speedup vs reference |",
        "|---|---|---|---|---|",
    ]
    base = p50(ref, device)
    for v in sorted(catalog.variants, key=lambda v: p50(v, device), reverse=True):
        agreement = f"{v.accuracy.value:.3f}" if v.accuracy else "-"
        why = f" ({v.status_reason})" if v.status_reason and not v.servable else ""
        lines.append(
            f"| `{v.id}` | {v.status}{why} | {agreement} | {p50(v, device):.1f} ms "
            f"| {base / p50(v, device):.2f}x |"
        )
    servable = [v.id for v in catalog.variants if v.servable]
    assert best.accuracy is not None and ref.accuracy is not None
    lines += [
        "",
        f"**{len(servable)} servable variants** (target: at least 4). Fastest within 5 points "
        f"of the reference's agreement: `{best.id}`, agreement {best.accuracy.value:.3f} vs "
        f"{ref.accuracy.value:.3f}, **{base / p50(best, device):.2f}x faster** (target: 3x).",
        "",
        "Served over HTTP (JPEG 768x576 frames, closed loop, variant pinned):",
        "",
        "| variant | clients | frames/s | latency p50 | latency p99 | failed |",
        "|---|---|---|---|---|---|",
    ]
    for vid, by_c in fps.items():
        for c, row in by_c.items():
            lines.append(
                f"| `{vid}` | {c} | {row['throughput_rps']:.1f} | {row['latency_p50_ms']:.1f} ms "
                f"| {row['latency_p99_ms']:.1f} ms | {row['failed']} |"
            )
    lines += ["", "A held-out frame with the boxes `/v1/infer` answered: docs/roadside_boxes.jpg."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--onnx", type=Path, default=ROOT / "examples" / "roadside" / "roadside-yolov8n.onnx"
    )
    parser.add_argument("--sizes", default="640,512,416,352,320")
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--engines-dir", type=Path, default=HERE / "out" / "roadside" / "engines")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    calib, evals = extract(args.video, args.out / "roadside")
    catalog = build(args, calib, evals)
    device = catalog.build["device"]["id"]
    ref = next(v for v in catalog.variants if v.id == catalog.build["evaluation"]["reference"])
    best = fastest_close(catalog, device, ref, 5.0)
    frames = [p.read_bytes() for p in sorted(evals.glob("*.jpg"))]
    fps = served_fps(args, [ref.id, best.id], frames)
    body = report(catalog, device, ref, best, fps)
    title = "Roadside detector family: one dynamic-shape YOLOv8 file"
    write_section(FAMILY + "_family", title, body)
    print(body)


if __name__ == "__main__":
    main()
