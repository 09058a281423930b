"""A real uvicorn server in a subprocess, serving engines built from the committed weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import hold_still, run_server


@pytest.fixture(scope="session")
def server(engines_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The default server (the linux monitor reads this machine), pinned to the most
    accurate variant: on a busy machine the pressure rule would otherwise move it to the
    fastest between two requests, and the accuracy checks would grade whichever it was."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with run_server(engines_dir, log) as url:
        hold_still(url)
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c
