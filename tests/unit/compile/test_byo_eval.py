"""The frames and labels that score a detection family: where labels come from, what
changes the build key, and what a bad folder says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_service.compile.byo_eval import EvalSet
from edge_service.errors import BuildError

LABELS = ["person", "car"]


def _frames(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"f{i}.jpg"
        Image.fromarray(np.zeros((50, 100, 3), np.uint8)).save(path)
        out.append(path)
    return out


def test_without_labels_there_is_no_ground_truth_and_agreement_is_scored(tmp_path: Path) -> None:
    _frames(tmp_path / "frames")
    assert EvalSet(tmp_path / "frames").truths(LABELS) is None


def test_yolo_txt_beside_frames_become_pixel_boxes_and_change_the_key(tmp_path: Path) -> None:
    f0, f1 = _frames(tmp_path / "frames")
    evals = EvalSet(tmp_path / "frames")
    before = evals.key()
    f0.with_suffix(".txt").write_text("1 0.5 0.5 0.2 0.4\n")
    truths = evals.truths(LABELS)
    assert truths is not None and truths[f1] == []  # no txt beside it: nothing there
    [car] = truths[f0]
    assert (car.index, car.label) == (1, "car")
    assert car.box == pytest.approx((40.0, 15.0, 60.0, 35.0))
    assert evals.key() != before


def test_coco_json_labels_map_categories_by_name(tmp_path: Path) -> None:
    f0, f1 = _frames(tmp_path / "frames")
    coco = tmp_path / "labels.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "f0.jpg"}, {"id": 8, "file_name": "f1.jpg"}],
                "categories": [{"id": 3, "name": "car"}],
                "annotations": [{"image_id": 8, "category_id": 3, "bbox": [10, 5, 20, 10]}],
            }
        )
    )
    truths = EvalSet(tmp_path / "frames", coco_json=coco).truths(LABELS)
    assert truths is not None and truths[f0] == []
    [car] = truths[f1]
    assert car.index == 1 and car.box == pytest.approx((10.0, 5.0, 30.0, 15.0))


def test_limit_takes_the_first_frames_and_an_empty_folder_says_what_to_pass(
    tmp_path: Path,
) -> None:
    _frames(tmp_path / "frames", 3)
    assert [p.name for p in EvalSet(tmp_path / "frames", limit=2).files()] == ["f0.jpg", "f1.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match=r"pass --eval-images DIR"):
        EvalSet(tmp_path / "empty").files()
