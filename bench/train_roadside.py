"""Train the roadside pedestrian demo detector (examples/roadside) from OpenCV's vtest.avi.

    .venv/bin/python bench/train_roadside.py --minutes 25

Data: every 2nd frame of ``vtest.avi`` (Debian's opencv-doc, 795 frames of 768x576, a
static camera over a campus road); frames of the first 80% of the video train, the last
20% are held out. No human labels: pseudo-labels come from OpenCV alone:

* OpenCV's packaged HOG people detector (``HOGDescriptor_getDefaultPeopleDetector``) on the
  frame upscaled 2x (people here are 40-100 px tall, the HOG window wants ~100), then NMS;
* a foreground mask against the median background of the training frames: a HOG box
  whose centre has little foreground is dropped (static false positives), the others are
  shrunk to the foreground pixels inside them (HOG boxes are loose); person-shaped
  foreground blobs that no HOG box covers are added (HOG misses people at the edges).

Then YoloV8(num_classes=1) at yolov8n scale trains from scratch (no pretrained weights)
for ``--minutes`` on one thread, multi-scale 320..480, through the server's letterbox, and
is exported with dynamic batch / height / width to ``--out``. The held-out frames are run
through the exported ONNX in ONNX Runtime at 640 and 320 (boxes per frame, agreement with
the pseudo-labels at IoU 0.5, latency) and drawn into ``--work``/heldout_*.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from edge_service.data.letterbox import letterbox, to_tensor
from edge_service.data.video import read_frames
from edge_service.evolve.detector import YoloV8, export_detector
from edge_service.evolve.detector_train import train_detector
from edge_service.fsutil import atomic_write_text, atomic_write_with
from edge_service.runtime.detection import box_iou, decode_detections, nms

VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
LABELS_VERSION = 1
Frames = list[tuple[int, np.ndarray]]  # (index in the video, RGB)
Boxes = list[list[float]]  # x1, y1, x2, y2 per box
log = logging.getLogger("train_roadside")


def load_frames(video: Path, every: int, holdout: float) -> tuple[Frames, Frames]:
    """(index, rgb) pairs for training and for evaluation (the last ``holdout`` of the video)."""
    frames = list(read_frames(video, every=every))
    total = frames[-1][0] + 1
    cut = int(total * (1 - holdout))
    return [f for f in frames if f[0] < cut], [f for f in frames if f[0] >= cut]


def median_background(frames: Frames) -> np.ndarray:
    median: np.ndarray = np.median(np.stack([rgb for _, rgb in frames[::4]]), axis=0).astype(
        np.uint8
    )
    return median


def foreground(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    diff = cv2.absdiff(rgb, background).max(axis=2)
    mask = (diff > 30).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((7, 5), np.uint8))


def hog_people(hog: cv2.HOGDescriptor, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HOG detections (xyxy in frame pixels) and their SVM scores, after NMS."""
    big = cv2.resize(rgb, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_LINEAR)
    rects, weights = hog.detectMultiScale(big, winStride=(8, 8), padding=(8, 8), scale=1.05)
    if len(rects) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    boxes = np.asarray(rects, np.float64) / 2.0
    boxes[:, 2:] += boxes[:, :2]
    scores = np.ravel(weights).astype(np.float64)
    keep = nms(boxes, scores, 0.4)
    return boxes[keep], scores[keep]


def pseudo_labels(rgb: np.ndarray, background: np.ndarray, hog: cv2.HOGDescriptor) -> Boxes:
    """Pedestrian boxes (x1, y1, x2, y2) for one frame; see the module docstring."""
    mask = foreground(rgb, background)
    boxes: list[list[float]] = []
    for (x1, y1, x2, y2), score in zip(*hog_people(hog, rgb), strict=True):
        if score < 0.3:
            continue
        w, h = x2 - x1, y2 - y1
        cx1, cx2 = int(x1 + 0.25 * w), int(x1 + 0.75 * w)
        core = mask[int(y1 + 0.1 * h) : int(y1 + 0.9 * h), max(cx1, 0) : cx2]
        if core.size == 0 or core.mean() < 0.2:
            continue  # little motion at its centre: background clutter
        sub = mask[max(int(y1), 0) : int(y2), max(int(x1 + 0.15 * w), 0) : int(x1 + 0.85 * w)]
        ys, xs = np.nonzero(sub)
        if len(ys) and np.ptp(ys) >= 0.5 * h:
            ox, oy = max(int(x1 + 0.15 * w), 0), max(int(y1), 0)
            tight = [ox + xs.min(), oy + ys.min(), ox + xs.max() + 1, oy + ys.max() + 1]
        else:
            tight = [x1 + 0.25 * w, y1 + 0.1 * h, x2 - 0.25 * w, y2 - 0.1 * h]
        boxes.append([float(v) for v in tight])
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    for x, y, w, h, area in stats[1:count]:
        blob = np.array([[x, y, x + w, y + h]], np.float64)
        if not (30 <= h <= 200 and 1.3 <= h / max(w, 1) <= 4.5 and area >= 0.3 * w * h):
            continue
        if boxes and _covered(blob[0], np.asarray(boxes)) > 0.3:
            continue
        boxes.append([float(v) for v in blob[0]])
    if not boxes:
        return []
    arr = np.asarray(boxes)
    keep = nms(arr, (arr[:, 2] - arr[:, 0]) * (arr[:, 3] - arr[:, 1]), 0.5)
    kept: Boxes = arr[keep].round(1).tolist()
    return kept


def _covered(box: np.ndarray, others: np.ndarray) -> float:
    """The largest fraction of ``box`` that one of ``others`` covers."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    return float((ix * iy).max() / max((box[2] - box[0]) * (box[3] - box[1]), 1e-6))


def tidy(boxes: Boxes, mask: np.ndarray) -> Boxes:
    """Drop nested duplicates: of two boxes one of which lies >= 70% inside the other, keep
    the one whose pixels are more foreground (the tighter fit)."""
    arr = np.asarray(boxes, np.float64).reshape(-1, 4)
    fill = [mask[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1].mean() for x1, y1, x2, y2 in arr]
    kept: list[np.ndarray] = []
    for i in np.argsort(fill)[::-1]:
        box = arr[i]
        if kept and _nested(box, np.asarray(kept)) >= 0.7:
            continue
        kept.append(box)
    return [[float(v) for v in box] for box in kept]


def _nested(box: np.ndarray, others: np.ndarray) -> float:
    """The largest intersection of ``box`` with one of ``others``, over the smaller area."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return float((ix * iy / np.maximum(np.minimum(area, areas), 1e-6)).max())


def label_all(train: Frames, held: Frames, cache: Path) -> dict[int, Boxes]:
    """Pseudo-labels of every frame; the HOG + blob candidates are cached in ``cache``."""
    background = median_background(train)  # training frames only
    raw: dict[int, Boxes] = {}
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("version") == LABELS_VERSION:
            raw = {int(k): v for k, v in data["boxes"].items()}
    if set(raw) != {i for i, _ in train + held}:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        start = time.perf_counter()
        for n, (index, rgb) in enumerate(train + held):
            raw[index] = pseudo_labels(rgb, background, hog)
            if n % 50 == 0:
                elapsed = time.perf_counter() - start
                log.info("labelled %d/%d frames (%.0f s)", n, len(train) + len(held), elapsed)
        payload = {"version": LABELS_VERSION, "boxes": {str(k): v for k, v in raw.items()}}
        atomic_write_text(cache, json.dumps(payload))
    return {i: tidy(raw[i], foreground(rgb, background)) for i, rgb in train + held}


def draw(
    rgb: np.ndarray, boxes: Boxes, colour: tuple[int, int, int], scores: list[float] | None = None
) -> np.ndarray:
    img = np.ascontiguousarray(rgb.copy())
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), colour, 2)
        if scores is not None:
            cv2.putText(
                img,
                f"{scores[i]:.2f}",
                (int(x1), int(y1) - 3),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                colour,
                1,
            )
    return img


def save_png(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data.tobytes()))


def match(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> int:
    """True positives: greedy one-to-one matching of ``pred`` (best first) to ``truth``."""
    free = np.ones(len(truth), bool)
    hits = 0
    for box in pred:
        if not free.any():
            break
        ious = np.where(free, box_iou(box, truth), -1.0)
        j = int(ious.argmax())
        if ious[j] >= iou:
            free[j] = False
            hits += 1
    return hits


def evaluate(onnx_path: Path, held: Frames, labels: dict[int, Boxes], work: Path) -> dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    report: dict[str, Any] = {}
    for size in (640, 320):
        counts, tp, n_pred, n_true, panels = [], 0, 0, 0, []
        for k, (index, rgb) in enumerate(held):
            square, geometry = letterbox(rgb, size)
            (out,) = session.run(["output0"], {"images": to_tensor(square)})
            dets = decode_detections(out, ["person"], conf_threshold=0.25, letterbox=geometry)
            pred = np.array([d.box for d in dets]).reshape(-1, 4)
            truth = np.asarray(labels[index], np.float64).reshape(-1, 4)
            counts.append(len(dets))
            tp += match(pred, truth)
            n_pred, n_true = n_pred + len(pred), n_true + len(truth)
            if k in (2, len(held) // 3, 2 * len(held) // 3, len(held) - 3):
                img = draw(rgb, truth.tolist(), (0, 200, 255))
                panels.append(draw(img, pred.tolist(), (255, 0, 0), [d.score for d in dets]))
        x = to_tensor(letterbox(held[0][1], size)[0])
        times = []
        for _ in range(25):
            t = time.perf_counter()
            session.run(["output0"], {"images": x})
            times.append((time.perf_counter() - t) * 1e3)
        grid = np.vstack([np.hstack(panels[:2]), np.hstack(panels[2:4])])
        save_png(work / f"heldout_{size}.png", grid)
        report[str(size)] = {
            "frames": len(held),
            "boxes_per_frame_mean": float(np.mean(counts)),
            "boxes_per_frame_min_max": [int(min(counts)), int(max(counts))],
            "pseudo_labels_per_frame_mean": n_true / len(held),
            "precision_vs_pseudo_labels@0.5": tp / max(n_pred, 1),
            "recall_vs_pseudo_labels@0.5": tp / max(n_true, 1),
            "ort_latency_ms_median_1thread": float(np.median(times[5:])),
        }
        log.info("%d px: %s", size, report[str(size)])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--out", type=Path, default=Path("examples/roadside"))
    parser.add_argument("--work", type=Path, default=Path("bench/out/roadside"))
    parser.add_argument("--minutes", type=float, default=25.0, help="training wall time")
    parser.add_argument("--sizes", default="320,352,384,416,448,480")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-only", action="store_true", help="evaluate --out's ONNX only")
    parser.add_argument(
        "--init", type=Path, help="continue from these weights (a --work/roadside-yolov8n.pt)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if not args.video.exists():
        sys.exit(f"{args.video} not found: sudo apt-get install opencv-doc (or pass --video)")
    args.work.mkdir(parents=True, exist_ok=True)
    train, held = load_frames(args.video, every=2, holdout=0.2)
    log.info(
        "%d training frames, %d held-out frames (from frame %d)", len(train), len(held), held[0][0]
    )
    labels = label_all(train, held, args.work / "pseudo_labels.json")
    preview = [draw(rgb, labels[i], (0, 200, 255)) for i, rgb in train[:: len(train) // 4][:4]]
    save_png(
        args.work / "labels_preview.png",
        np.vstack([np.hstack(preview[:2]), np.hstack(preview[2:])]),
    )
    onnx_path = args.out / "roadside-yolov8n.onnx"
    summary: dict[str, Any] = {"train_frames": len(train), "heldout_frames": len(held)}
    if not args.eval_only:
        model = YoloV8(1, labels=("person",))
        if args.init is not None:
            saved = torch.load(args.init, map_location="cpu")
            model = YoloV8(**saved["config"])
            model.load_state_dict(saved["state_dict"])
            log.info("continuing from %s", args.init)
        sizes = [int(s) for s in args.sizes.split(",")]
        log.info("training %.1f min at sizes %s, batch %d", args.minutes, sizes, args.batch)

        def on_step(step: int, parts: dict[str, float]) -> None:
            if step % 25 == 0:
                log.info("step %d %s", step, {k: round(v, 4) for k, v in parts.items()})

        result = train_detector(
            model,
            [rgb for _, rgb in train],
            [np.asarray(labels[i]).reshape(-1, 4) for i, _ in train],
            sizes,
            steps=1_000_000,
            batch_size=args.batch,
            lr=args.lr,
            seed=args.seed,
            max_seconds=args.minutes * 60,
            on_step=on_step,
        )
        log.info("trained %d steps in %.0f s; final %s", result.steps, result.seconds, result.final)
        summary |= {"steps": result.steps, "seconds": result.seconds, "final": result.final}
        weights = args.work / "roadside-yolov8n.pt"
        atomic_write_with(
            weights,
            lambda tmp: torch.save(
                {"config": model.config(), "state_dict": model.state_dict()}, tmp
            ),
        )
        export_detector(model, onnx_path, size=640)
        atomic_write_text(args.out / "labels.txt", "person\n")
    summary["eval"] = evaluate(onnx_path, held, labels, args.work)
    atomic_write_text(args.work / "summary.json", json.dumps(summary, indent=2))
    log.info("done: %s", json.dumps(summary["eval"]))


if __name__ == "__main__":
    main()
