"""Frame extraction: a real MJPG video written by OpenCV, decoded back frame by frame."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")

from edge_service.data.video import extract_frames, frame_count, read_frames  # noqa: E402
from edge_service.errors import BadInputError  # noqa: E402

FRAMES = 12
W, H = 96, 64


def _colour(i: int) -> tuple[int, int, int]:
    """A distinct RGB colour per frame, far enough apart to survive JPEG compression."""
    return (20 * i % 256, 255 - 20 * i % 256, 40 + 15 * i % 200)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG AVI"
    for i in range(FRAMES):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[:] = _colour(i)
        rgb[: H // 2, : W // 2] = (255, 0, 0)  # a pure red corner: checks the channel order
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return np.asarray(img, dtype=np.int16)


def test_extract_writes_every_frame_in_rgb(video: Path, tmp_path: Path) -> None:
    paths = extract_frames(video, tmp_path)
    assert [p.name for p in paths] == [f"frame_{i:06d}.png" for i in range(FRAMES)]
    assert sorted(tmp_path.iterdir()) == paths  # no temp files left behind
    for i, path in enumerate(paths):
        pixels = _rgb(path)
        assert pixels.shape == (H, W, 3)
        red = pixels[4 : H // 2 - 4, 4 : W // 2 - 4].reshape(-1, 3).mean(axis=0)
        assert np.abs(red - (255, 0, 0)).max() < 20
        rest = pixels[H // 2 + 4 :, W // 2 + 4 :].reshape(-1, 3).mean(axis=0)
        assert np.abs(rest - _colour(i)).max() < 20, f"frame {i}: {rest} vs {_colour(i)}"


def test_every_limit_and_start_select_frames(video: Path, tmp_path: Path) -> None:
    names = [p.name for p in extract_frames(video, tmp_path / "a", every=3)]
    assert names == ["frame_000000.png", "frame_000003.png", "frame_000006.png", "frame_000009.png"]
    names = [p.name for p in extract_frames(video, tmp_path / "b", every=2, limit=2, start=5)]
    assert names == ["frame_000005.png", "frame_000007.png"]
    assert [i for i, _ in read_frames(video, start=10)] == [10, 11]


def test_jpg_format(video: Path, tmp_path: Path) -> None:
    paths = extract_frames(video, tmp_path, limit=1, fmt="jpg")
    assert [p.name for p in paths] == ["frame_000000.jpg"]
    with Image.open(paths[0]) as img:
        assert img.format == "JPEG"


def test_frame_count(video: Path) -> None:
    assert frame_count(video) == FRAMES


def test_unreadable_video_says_what_to_do(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(BadInputError, match=r"cannot open|decoded no frame"):
        extract_frames(junk, tmp_path / "out")
    with pytest.raises(BadInputError, match="does not exist"):
        extract_frames(tmp_path / "missing.avi", tmp_path / "out")


def test_bad_selection_is_rejected(video: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="every must be >= 1"):
        extract_frames(video, tmp_path, every=0)
    with pytest.raises(BadInputError, match="lower --start"):
        extract_frames(video, tmp_path, start=FRAMES)
    with pytest.raises(BadInputError, match="png, jpg"):
        extract_frames(video, tmp_path, fmt="gif")  # type: ignore[arg-type]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_service", "frames", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_writes_frames_and_reports_json(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    done = _cli(str(video), "--out", str(out), "--every", "4", "--format", "jpg", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["count"] == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "frame_000000.jpg",
        "frame_000004.jpg",
        "frame_000008.jpg",
    ]


def test_cli_fails_clearly_on_unreadable_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 4096)
    done = _cli(str(junk), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert "MP4" in done.stderr
