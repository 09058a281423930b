"""Score a detection family's variants on the user's frames, with labels or without.

* **With labels** (YOLO txt beside the frames, ``frames/x.jpg`` + ``frames/x.txt`` or
  ``images/`` + ``labels/``, or a COCO JSON): each variant's mAP@0.5, with mAP@0.5:0.95
  beside it. The catalog's metric is ``map50``.
* **Without labels:** the family's reference (its largest input at FP32) answers on every
  frame; its detections scoring at least ``REFERENCE_MIN_SCORE`` become the ground truth,
  and each variant gets the mAP@0.5 of its own detections against them. The catalog's
  metric is ``agreement_map50``: how closely the variant reproduces the reference, not
  how right either is. The reference scores 1.0 by construction.

Every variant runs as served: the frame decoded as RGB, letterboxed to its own input
size, its output decoded with class-aware NMS and mapped back to the frame's pixels. The
detections scored keep every box above ``EVAL_MIN_SCORE`` (up to ``EVAL_MAX_DETECTIONS``),
as mAP evaluations do, so the ranking does not hinge on one threshold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_service.compile.calibration import calibration_hash, calibration_images
from edge_service.data.labels import LabelBox, read_coco_json, yolo_labels_for, yolo_txt_for
from edge_service.errors import BuildError
from edge_service.profile.detection_metrics import (
    GroundTruth,
    score_against_labels,
    score_against_reference,
)
from edge_service.repository import Accuracy, Catalog, Variant, verified_artifact_path
from edge_service.runtime.detection import Detection, decode_detections
from edge_service.runtime.ort_engine import OrtEngine

REFERENCE_MIN_SCORE = 0.25  # the reference's boxes that count as ground truth
EVAL_MIN_SCORE = 0.001
EVAL_MAX_DETECTIONS = 300


@dataclass(frozen=True)
class EvalSet:
    """The frames that score a detection family, and where their labels are (if any)."""

    folder: Path
    limit: int = 0  # 0: every frame
    coco_json: Path | None = None

    def files(self) -> list[Path]:
        try:
            files = calibration_images(self.folder)
        except BuildError as exc:
            raise BuildError(
                f"evaluation frames: {exc.message}; pass --eval-images DIR with JPEG/PNG "
                "frames like the ones you will serve (edge-service frames VIDEO --out DIR)"
            ) from exc
        return files[: self.limit] if self.limit else files

    def truths(
        self, labels: list[str], files: list[Path] | None = None
    ) -> dict[Path, list[GroundTruth]] | None:
        """Ground truth per frame of ``files`` (default: `files()`) from the COCO JSON,
        else YOLO txt; None without labels."""
        files = self.files() if files is None else files
        boxes: dict[Path, list[LabelBox]] | None
        if self.coco_json is not None:
            boxes = read_coco_json(self.coco_json, files, labels)
        else:
            boxes = yolo_labels_for(files, len(labels))
        if boxes is None:
            return None
        return {
            f: [GroundTruth(b.index, b.box, labels[b.index]) for b in boxes.get(f, [])]
            for f in files
        }

    def key(self) -> str:
        """Hash of the frames and label files: a new one rescores the family."""
        files = self.files()
        labels = [t for t in map(yolo_txt_for, files) if t is not None]
        if self.coco_json is not None:
            labels.append(self.coco_json)
        digest = hashlib.sha256(calibration_hash(files).encode())
        for path in labels:
            if path.is_file():
                digest.update(path.name.encode() + path.read_bytes())
        return digest.hexdigest()


def reference_of(catalog: Catalog) -> Variant:
    """The family's reference: the FP32 variant at the largest input (ties: the biggest
    file, i.e. the bigger network)."""
    fp32 = [v for v in catalog.variants if v.precision == "fp32" and v.backend == "onnxruntime"]
    if not fp32:
        raise BuildError("agreement needs an FP32 variant as the reference: build with fp32")
    return max(fp32, key=lambda v: (v.variant_spec.input_size, v.artifact.bytes))


def detect_frames(
    catalog: Catalog, family_dir: Path, variant: Variant, files: list[Path], threads: int
) -> list[list[Detection]]:
    """``variant``'s detections on each frame, in the frame's pixels, as served."""
    prep = catalog.input.preprocess(variant.variant_spec.input_size)
    path = verified_artifact_path(family_dir, variant.artifact)
    out = []
    with OrtEngine(path, variant_id=variant.id, precision=variant.precision, threads=threads) as e:
        for frame in files:
            batch, geometry = prep.to_batch(prep.decode(frame.read_bytes()))
            raw = np.asarray(e.infer(batch))
            out.append(
                decode_detections(
                    raw[:1],
                    catalog.labels,
                    conf_threshold=EVAL_MIN_SCORE,
                    max_detections=EVAL_MAX_DETECTIONS,
                    letterbox=geometry,
                )
            )
    return out


def score_family(
    catalog: Catalog,
    family_dir: Path,
    eval_set: EvalSet,
    threads: int = 0,
    progress: Callable[[str], None] = print,
) -> Catalog:
    """The catalog with every ONNX Runtime variant's accuracy (or agreement) filled in."""
    files = eval_set.files()
    truths = eval_set.truths(catalog.labels, files)
    split = f"{eval_set.folder.name} ({len(files)} frames)"
    found: dict[str, list[list[Detection]]] = {}
    for v in catalog.variants:
        if v.backend == "onnxruntime":
            progress(f"scoring {v.id} on {len(files)} frames")
            found[v.id] = detect_frames(catalog, family_dir, v, files, threads)
    if truths is not None:
        gt = [truths[f] for f in files]
        scores = {vid: score_against_labels(dets, gt) for vid, dets in found.items()}
        how: dict[str, object] = {"labels": "coco" if eval_set.coco_json else "yolo"}
    else:
        ref = reference_of(catalog)
        scores = {
            vid: score_against_reference(dets, found[ref.id], REFERENCE_MIN_SCORE)
            for vid, dets in found.items()
        }
        how = {"reference": ref.id, "reference_min_score": REFERENCE_MIN_SCORE}
    variants = []
    for v in catalog.variants:
        score = scores.get(v.id)
        if score is not None:
            accuracy = Accuracy(
                metric=score.metric,
                value=round(score.value, 6),
                examples=len(files),
                split=split,
                map50_95=None if score.map50_95 is None else round(score.map50_95, 6),
            )
            v = v.model_copy(update={"accuracy": accuracy})
        variants.append(v)
    evaluation = {"frames": len(files), "min_score": EVAL_MIN_SCORE, **how}
    build = {**catalog.build, "evaluation": json.loads(json.dumps(evaluation))}
    return catalog.model_copy(update={"variants": variants, "build": build})
