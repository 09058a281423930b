"""The deploy tests read settings as the service would: without this shell's EDGE_ vars."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_edge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EDGE_"):
            monkeypatch.delenv(name)
