"""The build's progress file: written whole, read back, never an error when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_service.buildstate import BuildProgress, progress_path, read_progress, write_progress


def test_progress_round_trips_through_the_file_when_written(tmp_path: Path) -> None:
    state = BuildProgress(stage="networks", done=3, total=12, current="dw-dw-dw", device="d1")
    write_progress(tmp_path, state)
    back = read_progress(tmp_path)
    assert back is not None
    assert (back.stage, back.done, back.total, back.current, back.device) == (
        "networks", 3, 12, "dw-dw-dw", "d1",
    )  # fmt: skip


@pytest.mark.parametrize("text", ["", "{not json", '{"stage": "bogus"}', '["list"]'])
def test_progress_reads_as_none_when_the_file_is_unreadable(tmp_path: Path, text: str) -> None:
    progress_path(tmp_path).write_text(text)
    assert read_progress(tmp_path) is None


def test_progress_reads_as_none_when_no_build_wrote_one(tmp_path: Path) -> None:
    assert read_progress(tmp_path) is None


def test_fraction_grows_through_the_stages_and_is_one_when_finished() -> None:
    steps = [
        BuildProgress(stage="first", done=0, total=1),
        BuildProgress(stage="first", done=1, total=1),
        BuildProgress(stage="fit", done=1, total=1),
        BuildProgress(stage="networks", done=6, total=12),
        BuildProgress(stage="networks", done=12, total=12),
        BuildProgress(stage="profile", done=1, total=2),
        BuildProgress(stage="complete"),
    ]
    fractions = [s.fraction for s in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert BuildProgress(stage="failed").finished and not steps[3].finished


def test_step_keeps_what_is_not_changed_and_moves_updated_at() -> None:
    state = BuildProgress(stage="networks", done=1, total=4, updated_at=0.0)
    later = state.step(done=2)
    assert (later.stage, later.done, later.total) == ("networks", 2, 4)
    assert later.updated_at > 0.0
