"""KServe v2 outputs of a detection family: the decoded boxes, as tensors a Triton client
reads like those of TensorRT's EfficientNMS plugin.

Besides the detector's raw head output (whose anchor count depends on the input size of
the variant that ran), a detection family declares four outputs, decoded with class-aware
NMS as `/v1/infer` decodes them, at most ``MAX_DETECTIONS`` per frame, best first and
zero-padded:

* ``num_detections`` INT32 ``[N, 1]``: how many rows of the others are real;
* ``detection_boxes`` FP32 ``[N, MAX_DETECTIONS, 4]``: ``x1, y1, x2, y2`` in the posted
  image's pixels for image inputs (BYTES or UINT8), in the input tensor's pixels for FP32;
* ``detection_scores`` FP32 ``[N, MAX_DETECTIONS]``;
* ``detection_classes`` INT32 ``[N, MAX_DETECTIONS]``: indices into the family's labels.
"""

from __future__ import annotations

import numpy as np

from edge_service.data.letterbox import Letterbox
from edge_service.errors import ConflictError
from edge_service.runtime.batcher import BatchResult
from edge_service.runtime.detection import decode_detections
from edge_service.server.frames import MAX_DETECTIONS
from edge_service.server.inference import output_rows
from edge_service.server.v2codec import OutTensor

DETECTION_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


# name, datatype, shape (N = -1)
DECODED: tuple[tuple[str, str, list[int]], ...] = (
    ("num_detections", "INT32", [-1, 1]),
    ("detection_boxes", "FP32", [-1, MAX_DETECTIONS, 4]),
    ("detection_scores", "FP32", [-1, MAX_DETECTIONS]),
    ("detection_classes", "INT32", [-1, MAX_DETECTIONS]),
)


def raw_output(results: list[BatchResult]) -> np.ndarray:
    """The outputs of every chunk as one tensor; refused when the chunks ran on variants
    whose outputs differ in shape (detectors at different input sizes)."""
    if len(results) == 1:
        return results[0].output
    if len({r.output.shape[1:] for r in results}) > 1:
        ran = sorted({r.variant_id for r in results})
        raise ConflictError(
            f"this batch ran on variants {ran}, whose raw outputs differ in shape; ask for "
            f"the decoded outputs {list(DETECTION_OUTPUTS)}, pin a version "
            "(/v2/models/<model>/versions/<variant>/infer) or send fewer frames"
        )
    return np.concatenate([r.output for r in results])


def detection_tensors(
    results: list[BatchResult],
    labels: list[str],
    geometry: list[Letterbox | None],
    wanted: list[tuple[str, bool]],
) -> list[OutTensor]:
    """The ``wanted`` (name, binary) decoded outputs for every row of ``results``."""
    rows = output_rows(results)
    k = MAX_DETECTIONS
    count = np.zeros((len(rows), 1), np.int32)
    boxes = np.zeros((len(rows), k, 4), np.float32)
    scores = np.zeros((len(rows), k), np.float32)
    classes = np.zeros((len(rows), k), np.int32)
    for i, row in enumerate(rows):
        geo = geometry[i] if i < len(geometry) else None
        found = decode_detections(row, labels, max_detections=k, letterbox=geo)
        count[i, 0] = len(found)
        for j, d in enumerate(found):
            boxes[i, j], scores[i, j], classes[i, j] = d.box, d.score, d.index
    arrays = {
        "num_detections": count,
        "detection_boxes": boxes,
        "detection_scores": scores,
        "detection_classes": classes,
    }
    out = []
    for name, binary in wanted:
        arr = arrays[name]
        dtype = "INT32" if arr.dtype == np.int32 else "FP32"
        out.append(OutTensor(name, dtype, list(arr.shape), array=arr, binary=binary))
    return out
