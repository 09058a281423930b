"""Fixtures for the monitor tests: Jetson board trees built in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from jetson_boards import build_tree


@pytest.fixture
def board_tree(tmp_path: Path) -> Callable[[str], Path]:
    """Build a board's sysfs / procfs tree (see jetson_boards.py) and return its root."""

    def build(board: str) -> Path:
        return build_tree(board, tmp_path / board)

    return build
