"""The serving process's CPU priority (`edge_service.server.priority`)."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys

import pytest

from edge_service.config import Settings
from edge_service.server import priority
from edge_service.server.priority import set_serving_priority

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def test_serving_nice_defaults_to_a_raised_priority_within_range() -> None:
    assert Settings().serve_nice == -10
    with pytest.raises(ValueError, match="serve_nice"):
        Settings(serve_nice=-21)


def test_the_priority_in_force_is_kept_without_a_call() -> None:
    now = os.getpriority(os.PRIO_PROCESS, 0)
    assert set_serving_priority(now) == f"serving at nice {now}"


def test_a_priority_not_permitted_changes_nothing_and_says_how_to_allow_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_args: int) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    now = os.getpriority(os.PRIO_PROCESS, 0)
    monkeypatch.setattr(priority.os, "setpriority", refuse)
    with caplog.at_level(logging.WARNING, logger=priority.__name__):
        said = set_serving_priority(now - 5)
    assert said == f"serving at nice {now} (nice {now - 5} not permitted)"
    assert os.getpriority(os.PRIO_PROCESS, 0) == now
    assert "CAP_SYS_NICE" in caplog.text and f"--ulimit nice={20 - (now - 5)}" in caplog.text


def test_threads_started_after_it_take_the_serving_priority() -> None:
    """In a child process (a nice value cannot be taken back without privileges): a lower
    priority, which any process may take, holds for the threads it starts after."""
    code = """
import json, os, threading
from edge_service.server.priority import set_serving_priority
start = os.getpriority(os.PRIO_PROCESS, 0)
target = min(19, start + 3)
said = set_serving_priority(target)
seen = []
mine = lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
t = threading.Thread(target=mine)
t.start(); t.join()
print(json.dumps({"target": target, "said": said, "thread": seen[0]}))
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    got = json.loads(out.stdout)
    assert got["thread"] == got["target"]
    assert got["said"].startswith(f"serving at nice {got['target']}")
