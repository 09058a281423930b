"""YOLO txt and COCO JSON label readers: pixels out, clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from edge_service.data.labels import (
    LabelBox,
    read_coco_json,
    read_yolo_txt,
    yolo_labels_for,
    yolo_txt_for,
)
from edge_service.errors import DataError


def _image(path: Path, size: tuple[int, int] = (100, 50)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


def _txt(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_read_yolo_txt_converts_normalised_centre_boxes_to_pixels(tmp_path: Path) -> None:
    txt = _txt(tmp_path / "a.txt", "0 0.5 0.5 0.2 0.4\n\n2 0.1 0.9 0.2 0.2\n")
    boxes = read_yolo_txt(txt, 100, 50, 3)
    assert [b.index for b in boxes] == [0, 2]
    assert boxes[0].box == pytest.approx((40.0, 15.0, 60.0, 35.0))
    assert boxes[1].box == pytest.approx((0.0, 40.0, 20.0, 50.0))


def test_read_yolo_txt_reads_empty_file_as_no_objects(tmp_path: Path) -> None:
    assert read_yolo_txt(_txt(tmp_path / "a.txt", ""), 10, 10, 1) == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("7 0.5 0.5 0.1 0.1", "class 7 out of range for 3 labels"),
        ("-1 0.5 0.5 0.1 0.1", "class -1 out of range"),
        ("0 0.5 0.5 0.1", "expected 5 numbers"),
        ("0 0.5 0.5 0.1 0.1 0.3 0.3", "expected 5 numbers"),
        ("0 0.5 x 0.1 0.1", "not a number"),
        ("1.5 0.5 0.5 0.1 0.1", "not a whole number"),
        ("0 0.5 0.5 1.5 0.1", "normalised to 0..1"),
        ("0 320 240 50 60", "normalised to 0..1"),
    ],
)
def test_read_yolo_txt_names_file_and_line_of_bad_line(
    tmp_path: Path, line: str, message: str
) -> None:
    txt = _txt(tmp_path / "bad.txt", f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DataError, match=message) as err:
        read_yolo_txt(txt, 10, 10, 3)
    assert f"{txt}:2" in str(err.value)


def test_yolo_labels_for_reads_txt_beside_image_and_ultralytics_layout(tmp_path: Path) -> None:
    beside = _image(tmp_path / "flat" / "a.jpg")
    _txt(tmp_path / "flat" / "a.txt", "1 0.5 0.5 1 1\n")
    ultra = _image(tmp_path / "ds" / "images" / "val" / "b.png", (20, 10))
    _txt(tmp_path / "ds" / "labels" / "val" / "b.txt", "0 0.5 0.5 0.5 0.5\n")
    unlabelled = _image(tmp_path / "flat" / "c.jpg")
    labels = yolo_labels_for([beside, ultra, unlabelled], 2)
    assert labels == {
        beside: [LabelBox(1, (0.0, 0.0, 100.0, 50.0))],
        ultra: [LabelBox(0, (5.0, 2.5, 15.0, 7.5))],
        unlabelled: [],
    }


def test_yolo_labels_for_is_none_when_no_image_has_a_txt(tmp_path: Path) -> None:
    images = [_image(tmp_path / "images" / "a.jpg"), _image(tmp_path / "b.jpg")]
    assert yolo_labels_for(images, 3) is None
    assert yolo_txt_for(images[0]) is None


def test_yolo_labels_for_prefers_txt_beside_image(tmp_path: Path) -> None:
    image = _image(tmp_path / "images" / "a.jpg")
    beside = _txt(tmp_path / "images" / "a.txt", "")
    _txt(tmp_path / "labels" / "a.txt", "0 0.5 0.5 1 1\n")
    assert yolo_txt_for(image) == beside


def test_yolo_labels_for_says_which_image_cannot_be_opened(tmp_path: Path) -> None:
    image = _txt(tmp_path / "a.jpg", "not an image")
    _txt(tmp_path / "a.txt", "0 0.5 0.5 1 1\n")
    with pytest.raises(DataError, match=r"a\.jpg"):
        yolo_labels_for([image], 1)


def _coco(
    tmp_path: Path,
    annotations: list[dict[str, object]],
    images: list[dict[str, object]] | None = None,
) -> Path:
    doc = {
        "images": images or [{"id": 1, "file_name": "val/a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": annotations,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_read_coco_json_maps_categories_by_name_and_xywh_to_xyxy(tmp_path: Path) -> None:
    path = _coco(
        tmp_path,
        [
            {"image_id": 1, "category_id": 18, "bbox": [10, 20, 30, 40]},
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]},
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 99, 99], "iscrowd": 1},
        ],
    )
    a, b = tmp_path / "imgs" / "a.jpg", tmp_path / "imgs" / "b.jpg"
    labels = read_coco_json(path, [a, b], ["person", "cat", "dog"])
    assert labels == {
        a: [LabelBox(2, (10.0, 20.0, 40.0, 60.0)), LabelBox(0, (0.0, 0.0, 5.0, 5.0))],
        b: [],
    }


def test_read_coco_json_refuses_unknown_category_listing_known_labels(tmp_path: Path) -> None:
    path = _coco(tmp_path, [{"image_id": 2, "category_id": 18, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(DataError, match=r"'dog', not one of the labels \['person', 'cat'\]"):
        read_coco_json(path, [tmp_path / "b.jpg"], ["person", "cat"])


def test_read_coco_json_ignores_annotations_of_images_not_asked_for(tmp_path: Path) -> None:
    path = _coco(tmp_path, [{"image_id": 1, "category_id": 18, "bbox": [0, 0, 1, 1]}])
    b, other = tmp_path / "b.jpg", tmp_path / "z.jpg"
    assert read_coco_json(path, [b, other], ["person"]) == {b: []}


def test_read_coco_json_refuses_file_that_lists_none_of_the_images(tmp_path: Path) -> None:
    path = _coco(tmp_path, [])
    with pytest.raises(DataError, match="none of the 1 images"):
        read_coco_json(path, [tmp_path / "z.jpg"], ["person"])


@pytest.mark.parametrize(
    ("ann", "message"),
    [
        ({"image_id": 2, "category_id": 5, "bbox": [0, 0, 1, 1]}, "category_id 5"),
        ({"image_id": 2, "category_id": 1, "bbox": [0, 0, 1]}, "bbox must be"),
        ({"image_id": 2, "category_id": 1, "bbox": [0, 0, -1, 1]}, "width, height >= 0"),
        ({"image_id": 2, "category_id": 1, "bbox": [0, "a", 1, 1]}, "non-number"),
    ],
)
def test_read_coco_json_names_the_bad_annotation(
    tmp_path: Path, ann: dict[str, object], message: str
) -> None:
    path = _coco(tmp_path, [ann])
    with pytest.raises(DataError, match=message) as err:
        read_coco_json(path, [tmp_path / "b.jpg"], ["person"])
    assert "annotations[0]" in str(err.value)


def test_read_coco_json_refuses_invalid_json(tmp_path: Path) -> None:
    path = _txt(tmp_path / "x.json", "{nope")
    with pytest.raises(DataError, match="not valid JSON"):
        read_coco_json(path, [], ["person"])
