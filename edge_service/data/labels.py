"""Ground-truth boxes for detection data sets: YOLO txt files and COCO JSON.

Both readers give :class:`LabelBox` in pixels of the image, ``(x1, y1, x2, y2)``, with the
class as an index into the family's label list. Malformed files raise
:class:`~edge_service.errors.DataError` naming the file (and line) and what is wrong.
Image sizes come from the file header (PIL, no decoding) as stored, without EXIF
rotation, which is how the service reads frames too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from edge_service.errors import DataError

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LabelBox:
    """One labelled object: class index and ``(x1, y1, x2, y2)`` box in image pixels."""

    index: int
    box: Box


def read_yolo_txt(txt: Path, width: int, height: int, num_classes: int) -> list[LabelBox]:
    """Boxes of a YOLO label file for an image of ``width`` x ``height`` pixels.

    Each non-blank line is ``class cx cy w h``, the four coordinates normalised to 0..1.
    An empty file means an image with no objects.
    """
    try:
        text = txt.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read YOLO labels {txt}: {exc}") from exc
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            boxes.append(_yolo_line(line, f"{txt}:{number}", width, height, num_classes))
    return boxes


def _yolo_line(line: str, where: str, width: int, height: int, num_classes: int) -> LabelBox:
    fields = line.split()
    if len(fields) != 5:
        raise DataError(
            f"{where}: expected 5 numbers (class cx cy w h), found {len(fields)}: {line.strip()!r}"
        )
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise DataError(f"{where}: not a number in {line.strip()!r}") from None
    cls, cx, cy, w, h = values
    if not cls.is_integer():
        raise DataError(f"{where}: class {fields[0]!r} is not a whole number")
    if not 0 <= cls < num_classes:
        raise DataError(f"{where}: class {int(cls)} out of range for {num_classes} labels")
    if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
        raise DataError(
            f"{where}: cx cy w h must be normalised to 0..1, found {' '.join(fields[1:])}"
        )
    return LabelBox(
        int(cls),
        ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height),
    )


def yolo_txt_for(image: Path) -> Path | None:
    """The YOLO label file of ``image``: ``<stem>.txt`` beside it, else the Ultralytics
    layout ``.../images/<name>`` -> ``.../labels/<stem>.txt``; None when neither exists."""
    beside = image.with_suffix(".txt")
    if beside.is_file():
        return beside
    parts = image.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            labels = Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
            return labels if labels.is_file() else None
    return None


def image_size(image: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file, from its header."""
    try:
        with Image.open(image) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read the size of image {image}: {exc}") from exc
    return int(width), int(height)


def yolo_labels_for(images: list[Path], num_classes: int) -> dict[Path, list[LabelBox]] | None:
    """YOLO labels of each image (see :func:`yolo_txt_for`), or None if none has a file.

    Once any image has a label file, an image without one has no objects.
    """
    found = {image: yolo_txt_for(image) for image in images}
    if all(txt is None for txt in found.values()):
        return None
    out: dict[Path, list[LabelBox]] = {}
    for image, txt in found.items():
        if txt is None:
            out[image] = []
        else:
            width, height = image_size(image)
            out[image] = read_yolo_txt(txt, width, height, num_classes)
    return out


def read_coco_json(path: Path, images: list[Path], labels: list[str]) -> dict[Path, list[LabelBox]]:
    """Boxes of ``images`` from a COCO detection file, classes mapped to ``labels`` by name.

    Images are matched by base name to ``images[].file_name``. An image listed in the file
    with no annotations has no objects; an image not listed is left out of the result (and
    when none is listed, that is an error). Crowd annotations (``iscrowd: 1``) are skipped.
    An annotation on a wanted image whose category name is not in ``labels`` is an error.
    """
    doc = _load_json(path)
    by_name: dict[str, Path] = {}
    for image in images:
        if image.name in by_name:
            raise DataError(f"two images are named {image.name}; COCO matches them by name")
        by_name[image.name] = image
    ids: dict[Any, Path] = {}
    for entry in _records(doc, "images", path):
        name = Path(str(entry.get("file_name", ""))).name
        if name in by_name:
            ids[entry.get("id")] = by_name[name]
    if images and not ids:
        raise DataError(
            f"{path}: none of the {len(images)} images is listed in its images[] "
            f"(e.g. {images[0].name}); is this the right COCO file?"
        )
    categories = {c.get("id"): str(c.get("name", "")) for c in _records(doc, "categories", path)}
    index = {name: i for i, name in enumerate(labels)}
    out: dict[Path, list[LabelBox]] = {image: [] for image in ids.values()}
    for n, ann in enumerate(_records(doc, "annotations", path)):
        target = ids.get(ann.get("image_id"))
        if target is None or ann.get("iscrowd", 0):
            continue
        where = f"{path}: annotations[{n}]"
        if ann.get("category_id") not in categories:
            raise DataError(
                f"{where} has category_id {ann.get('category_id')!r}, not in categories"
            )
        name = categories[ann.get("category_id")]
        if name not in index:
            raise DataError(f"{where} has category {name!r}, not one of the labels {labels}")
        out[target].append(LabelBox(index[name], _coco_box(ann.get("bbox"), where)))
    return out


def _load_json(path: Path) -> Mapping[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read COCO file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{path} is not a COCO detection file: the top level is not an object")
    return doc


def _records(doc: Mapping[str, Any], key: str, path: Path) -> list[Mapping[str, Any]]:
    records = doc.get(key, [])
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: {key!r} must be a list of objects")
    return records


def _coco_box(bbox: object, where: str) -> Box:
    if not (isinstance(bbox, list) and len(bbox) == 4):
        raise DataError(f"{where}: bbox must be [x, y, width, height], found {bbox!r}")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"{where}: bbox holds a non-number: {bbox!r}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise DataError(f"{where}: bbox {bbox!r} must be finite with width, height >= 0")
    return (x, y, x + w, y + h)
