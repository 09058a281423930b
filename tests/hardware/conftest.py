"""Hardware tier: runs on a Jetson (L4T), skipped cleanly everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

IS_JETSON = Path("/etc/nv_tegra_release").exists()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs a Jetson board (no /etc/nv_tegra_release here)")
    for item in items:
        if "tests/hardware" in str(item.fspath):
            item.add_marker(pytest.mark.hardware)
            if not IS_JETSON:
                item.add_marker(skip)
